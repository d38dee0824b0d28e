"""The daemon's tables as the services fill them: every message type has exactly one handler (no runtime)."""

from __future__ import annotations

from pathlib import Path

import pytest
from remotecell_runtime import services
from remotecell_runtime.pools import Peer
from remotecell_runtime.protocol.framing import Frame
from remotecell_runtime.protocol.message import Message, message
from remotecell_runtime.protocol.messages.session import PingMsg

CLIENT_TYPES = {
    "hello", "ping", "status", "shutdown", "app_create", "app_stop", "app_logs", "fn_register", "fn_lookup", "call",
    "calls", "fn_autoscaler", "fn_variant", "debug", "cache_clear",
    "cancel", "lease_return", "spawn", "call_get", "call_status", "call_cancel", "call_logs", "calls_recent",
    "volume_open", "volume_ephemeral", "volume_list", "volume_delete", "volume_ls", "volume_read",
    "volume_stage", "volume_put", "volume_abort", "volume_rm", "volume_copy", "kv_open", "kv_delete", "kv_cancel",
    "kv_list", "dict_get", "dict_put", "dict_pop", "dict_len", "dict_clear", "dict_scan", "queue_put", "queue_get",
    "queue_peek", "queue_len", "queue_clear",
    "schedule_list", "schedule_get", "schedule_pause", "schedule_resume", "schedule_run", "blob_has", "blob_put",
    "image_build", "image_list", "image_prune", "sandbox_create", "sandbox_exec", "sandbox_read", "sandbox_write",
    "sandbox_wait", "sandbox_resize",
    "sandbox_terminate", "sandbox_get", "sandbox_list",
}
CONTAINER_TYPES = {"hello", "ready", "load_failed", "output", "item", "result", "results", "released", "lease_used",
                   "web_out", "debug_out", "debug_held"}


class Host:
    runtime_id = "test"
    reading = False
    endpoints: list[str] = []

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def live_sessions(self) -> set[str]:
        return set()

    def send_peer(self, peer: Peer, frames: list[Frame]) -> None:
        raise AssertionError("nothing is sent while the tables are built")

    def send_container(self, cid: str, frames: list[Frame]) -> None:
        raise AssertionError("nothing is sent while the tables are built")

    def stop(self) -> None:
        raise AssertionError("nothing stops")


def test_every_message_type_has_one_handler(tmp_path):
    built = services.build(Host(tmp_path), f"ipc://{tmp_path}/c.sock", "rc-test", {}, 60.0, orphan_grace_s=1.0)
    try:
        assert set(built.handlers()) == CLIENT_TYPES
        assert set(built.container_handlers()) == CONTAINER_TYPES
    finally:
        built.close()


def test_two_handlers_for_one_type_fail_at_start():
    @message("ping")
    class OtherPingMsg(Message):
        pass

    with pytest.raises(RuntimeError, match=r"'ping' has two handlers \(PingMsg, OtherPingMsg\)"):
        services._merged([{PingMsg: 1}, {OtherPingMsg: 2}])


def test_each_handler_is_keyed_by_its_message_class(tmp_path):
    built = services.build(Host(tmp_path), f"ipc://{tmp_path}/c.sock", "rc-test", {}, 60.0, orphan_grace_s=1.0)
    try:
        for type_name, (cls, _) in {**built.handlers(), **built.container_handlers()}.items():
            assert issubclass(cls, Message) and cls.TYPE == type_name
    finally:
        built.close()
