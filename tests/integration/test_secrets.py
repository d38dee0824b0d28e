"""Secrets: environment variables for a function's containers, given in code or stored on the runtime host."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import remotecell as rc
from remotecell import exceptions


def _secret_cli(runtime, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "remotecell.cli", "secret", *args, "--state-dir",
                           str(runtime.state_dir)], capture_output=True, text=True, timeout=60)


def test_secrets_from_dict_and_env_reach_the_container(app):
    @app.function(env={"MODE": "from-env", "KEEP": "1"},
                  secrets=[rc.Secret.from_dict({"MODE": "first", "TOKEN": "t0"}),
                           rc.Secret.from_dict({"MODE": "second"})])
    def read(*names):
        return [os.environ.get(n) for n in names]

    assert read.remote("MODE", "TOKEN", "KEEP") == ["second", "t0", "1"]  # later secrets win, over env=


def test_named_secret_created_on_the_runtime_host(app, runtime):
    made = _secret_cli(runtime, "create", "api-keys", "API_KEY=s3cr=t", "REGION=eu")
    assert made.returncode == 0, made.stderr
    path = runtime.state_dir / "secrets" / "api-keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "s3cr=t" not in made.stdout  # values are never printed

    @app.function(secrets=[rc.Secret.from_name("api-keys")])
    def read(name):
        return os.environ.get(name)

    assert read.remote("API_KEY") == "s3cr=t" and read.remote("REGION") == "eu"
    listed = _secret_cli(runtime, "list")
    assert "api-keys" in listed.stdout.split()
    again = _secret_cli(runtime, "create", "api-keys", "API_KEY=x")
    assert again.returncode == 2 and "--force" in again.stderr
    assert _secret_cli(runtime, "delete", "api-keys").returncode == 0
    assert not path.exists()


def test_a_missing_named_secret_fails_the_call_with_a_hint(app):
    @app.function(secrets=[rc.Secret.from_name("nobody-made-this")])
    def read():
        return 1

    with pytest.raises(exceptions.NotFoundError, match="remotecell secret create nobody-made-this"):
        read.remote()


def test_a_secret_file_others_can_read_is_refused(app, runtime):
    assert _secret_cli(runtime, "create", "loose", "A=1").returncode == 0
    path = runtime.state_dir / "secrets" / "loose.json"
    path.chmod(0o644)

    @app.function(secrets=[rc.Secret.from_name("loose")])
    def read():
        return 1

    with pytest.raises(exceptions.InvalidError, match="chmod 600"):
        read.remote()
    path.unlink()


def test_secret_values_are_checked_where_they_are_given(monkeypatch):
    with pytest.raises(exceptions.InvalidError, match="'1BAD' is not an environment variable name"):
        rc.Secret.from_dict({"1BAD": "x"})
    with pytest.raises(exceptions.InvalidError, match="value of PORT is of type int"):
        rc.Secret.from_dict({"PORT": 8080})
    with pytest.raises(exceptions.InvalidError, match="a secret name is 1 to 64"):
        rc.Secret.from_name("../etc")
    with pytest.raises(exceptions.InvalidError, match="must be a list of rc.Secret"):
        rc.App("x").function(secrets={"A": "b"})(lambda: None)
    monkeypatch.setenv("RC_TEST_SECRET", "here")
    assert rc.Secret.from_local_environ(["RC_TEST_SECRET"]).values == {"RC_TEST_SECRET": "here"}
    with pytest.raises(exceptions.InvalidError, match="RC_TEST_MISSING"):
        rc.Secret.from_local_environ(["RC_TEST_MISSING"])
    assert "here" not in repr(rc.Secret.from_dict({"RC_TEST_SECRET": "here"}))


def test_secret_cli_refuses_bad_input(runtime):
    bad = _secret_cli(runtime, "create", "ok-name", "not an assignment")
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr
    assert _secret_cli(runtime, "delete", "never-made").returncode == 2
