"""``remotecell image list|prune`` on a runtime of its own: the layers of images unused that long go, those of
images in use stay, and a pruned image builds again when asked for."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import remotecell as rc
from conftest import Runtime, cli, own_runtime
from remotecell_runtime.images import runtime_code


@pytest.fixture(scope="module")
def prune_runtime(new_home) -> Iterator[Runtime]:
    with own_runtime(new_home("prune-home")) as rt:
        yield rt


def _app(name: str, image: rc.Image) -> tuple[rc.App, rc.Function]:
    app = rc.App(name, image=image)

    @app.function(serialized=True)
    def version() -> str:
        import importlib.util

        return " ".join(name for name in ("six", "idna") if importlib.util.find_spec(name))

    return app, version


def _cli_json(*args: str) -> object:
    done = cli("image", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_prune_removes_the_layers_of_unused_images_and_keeps_live_ones(prune_runtime, capsys):
    layers = prune_runtime.state_dir / "images" / "layers"
    old_app, old_fn = _app("prune-old", rc.Image.debian_slim().uv_pip_install("six==1.17.0"))
    with old_app.run():
        assert old_fn.remote() == "six"
    live_image = rc.Image.debian_slim().uv_pip_install("idna")
    live_app, live_fn = _app("prune-live", live_image)
    with live_app.run():
        assert live_fn.remote() == "idna"
        listed = _cli_json("list")
        assert isinstance(listed, list) and len(listed) == 2, listed
        assert sorted(row["live"] for row in listed) == [False, True], listed
        assert any("uv pip install six==1.17.0" in row["description"] for row in listed), listed
        before = {p.name for p in layers.iterdir()}
        dry = _cli_json("prune", "--older-than", "0s", "--dry-run")
        assert isinstance(dry, dict) and len(dry["images"]) == 1 and dry["layers"] == 1, dry
        assert {p.name for p in layers.iterdir()} == before  # a dry run removes nothing
        done = cli("image", "prune", "--older-than", "0s")
        assert done.returncode == 0 and "removed 1 images not used for 0s (1 layers" in done.stdout, done.stdout
        after = {p.name for p in layers.iterdir()}
        assert len(before - after) == 1 and after < before
        base = rc.Image.debian_slim().materialize()[0].layer_keys(runtime_code.salt())[0]
        assert base in after  # shared with the live image: kept
        assert live_fn.remote() == "idna"  # the live image still runs
    capsys.readouterr()
    with old_app.run():
        assert "Built image" in capsys.readouterr().out  # pruned: built again when asked for
        assert old_fn.remote() == "six"
    assert cli("image", "prune", "--older-than", "soon").returncode != 0
