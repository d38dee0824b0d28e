"""The runtime's SQLite helpers (runtime/storage.py) on a temporary file: packed frames, the background checkpoint."""

from __future__ import annotations

from conftest import wait_for
from remotecell_runtime.storage import Checkpointer, open_db, pack, unpack


def test_frames_pack_into_one_blob_and_back():
    frames = [b"", b"header", memoryview(b"x" * 1000)]
    assert [bytes(f) for f in unpack(pack(frames))] == [b"", b"header", b"x" * 1000]


def test_the_checkpointer_copies_committed_pages_into_the_database_file(tmp_path):
    path = tmp_path / "store.db"
    db = open_db(path, "CREATE TABLE IF NOT EXISTS t (v BLOB);")
    checkpointer = Checkpointer(db, path, every_s=0.01, backstop_pages=1_000_000)  # the writer never checkpoints
    try:
        before = path.stat().st_size
        for _ in range(50):
            db.execute("INSERT INTO t VALUES (?)", (b"x" * 4000,))  # a commit each (autocommit)
        checkpointer.wake()
        wait_for(lambda: path.stat().st_size > before + 50 * 4000, what="the WAL's pages in the database file")
    finally:
        checkpointer.stop()
        db.close()
    assert not checkpointer._thread.is_alive()
