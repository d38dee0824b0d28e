"""``pip`` in a build step as ``uv pip`` on the image's venv: what each pip command line becomes."""

from __future__ import annotations

import pytest
from remotecell_runtime.container.build_pip import Refused, uv_command

PINS = ["--constraint", "/pins.txt"]


def test_an_install_gets_the_pins_and_loses_the_options_that_change_nothing():
    args = ["install", "--no-cache-dir", "--progress-bar", "off", "--root-user-action=ignore", "--pre", "-q", "six"]
    assert uv_command(args, "/v/bin/python", PINS) == ["pip", "install", "--python", "/v/bin/python", *PINS,
                                                       "--prerelease=allow", "-q", "six"]


def test_other_commands_name_the_venv_and_get_no_pins():
    assert uv_command(["uninstall", "-y", "six"], "/v/bin/python", PINS) == [
        "pip", "uninstall", "--python", "/v/bin/python", "six"]
    assert uv_command(["freeze"], "/v/bin/python", PINS) == ["pip", "freeze", "--python", "/v/bin/python"]
    assert uv_command([], "/v/bin/python", PINS) == ["--version"]


@pytest.mark.parametrize(("args", "said"), [
    (["download", "six"], "pip download: in an image build `pip` is `uv pip`"),
    (["install", "--user", "six"], "pip --user: an image build installs into the image's venv only"),
])
def test_what_it_cannot_do_is_refused_with_what_to_do(args, said):
    with pytest.raises(Refused, match=said.replace("`", ".").replace("(", ".")):
        uv_command(args, "/v/bin/python", PINS)
