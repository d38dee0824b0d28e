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


def _remotecell_secret(runtime, *args: str) -> subprocess.CompletedProcess:
    """``python -m remotecell secret ARGS`` as a user types it (the state folder named, as on the runtime host)."""
    return subprocess.run([sys.executable, "-m", "remotecell", "secret", *args, "--state-dir",
                           str(runtime.state_dir)], capture_output=True, text=True, timeout=60)


def test_required_keys_fail_clearly_when_the_secret_lacks_one(app, runtime):
    assert _remotecell_secret(runtime, "create", "partial", "HAVE=1", "--force").returncode == 0

    @app.function(secrets=[rc.Secret.from_name("partial", required_keys=["HAVE", "WANT_A", "WANT_B"])])
    def read():
        return os.environ["HAVE"]

    with pytest.raises(exceptions.InvalidError,
                       match=r"secret 'partial' lacks the required key\(s\) WANT_A, WANT_B \(it has: HAVE\)"):
        read.remote()

    @app.function(secrets=[rc.Secret.from_name("partial", required_keys=["HAVE"])])
    def read_ok():
        return os.environ["HAVE"]

    assert read_ok.remote() == "1"
    with pytest.raises(exceptions.InvalidError, match="give a list of variable names"):
        rc.Secret.from_name("partial", required_keys="HAVE")


def test_from_dotenv_finds_the_file_above_and_sends_its_variables(app, tmp_path):
    (tmp_path / ".env").write_text("# settings\nexport TOKEN='t0 ${X}'\nGREETING=\"hi\\nthere\"\nPATHS=${TOKEN}/x\n")
    (tmp_path / ".env-dev").write_text("MODE=dev\n")
    nested = tmp_path / "src" / "pkg"
    nested.mkdir(parents=True)
    script = nested / "job.py"
    script.write_text("")
    secret = rc.Secret.from_dotenv(script)  # as Modal's from_dotenv(__file__): the nearest .env above
    assert sorted(secret.values) == ["GREETING", "PATHS", "TOKEN"] and "t0" not in repr(secret)

    @app.function(secrets=[secret, rc.Secret.from_dotenv(nested, filename=".env-dev")])
    def read(*names):
        return [os.environ.get(n) for n in names]

    assert read.remote("TOKEN", "GREETING", "PATHS", "MODE") == ["t0 ${X}", "hi\nthere", "t0 ${X}/x", "dev"]
    assert rc.Secret.from_dotenv(tmp_path / "src", filename="none.env").values == {}  # none found: none, as Modal
    (tmp_path / "bad.env").write_text("OK=1\nthis is not an assignment\n")
    with pytest.raises(exceptions.InvalidError, match=r"bad.env, line 2: 'this is not an assignment' is not KEY=VALUE"):
        rc.Secret.from_dotenv(tmp_path, filename="bad.env")


def test_secret_cli_create_from_files_list_and_delete(runtime, tmp_path):
    (tmp_path / "vars.env").write_text("FROM_DOTENV=1\nSHARED=dotenv\n")
    (tmp_path / "vars.json").write_text('{"FROM_JSON": "2", "SHARED": "json"}')
    made = _remotecell_secret(runtime, "create", "from-files", "EXTRA=3", "--from-dotenv", str(tmp_path / "vars.env"),
                              "--from-json", str(tmp_path / "vars.json"), "--force")
    assert made.returncode == 0, made.stderr
    import json

    values = json.loads((runtime.state_dir / "secrets" / "from-files.json").read_text())
    assert values == {"FROM_DOTENV": "1", "SHARED": "json", "FROM_JSON": "2", "EXTRA": "3"}
    listed = _remotecell_secret(runtime, "list", "--json")
    assert "from-files" in [s["name"] for s in json.loads(listed.stdout)]
    assert _remotecell_secret(runtime, "delete", "from-files", "--yes").returncode == 0
    assert "from-files" not in _remotecell_secret(runtime, "list").stdout.split()
    nothing = _remotecell_secret(runtime, "create", "empty")
    assert nothing.returncode == 2 and "give at least one KEY=VALUE (or --from-dotenv PATH" in nothing.stderr
    gone = _remotecell_secret(runtime, "create", "x", "--from-dotenv", str(tmp_path / "missing.env"))
    assert gone.returncode == 2 and "missing.env" in gone.stderr


def test_an_apps_secrets_and_volumes_are_every_definitions_defaults(runtime):
    shared = rc.Volume.from_name("app-defaults-shared", create_if_missing=True)
    own = rc.Volume.from_name("app-defaults-own", create_if_missing=True)
    app = rc.App("app-defaults", secrets=[rc.Secret.from_dict({"WHO": "app", "LEVEL": "app"})],
                 volumes={"/data": shared}, include_source=True)

    @app.function()
    def plain():
        with open("/data/mark", "w") as f:
            f.write("app volume")
        return os.environ["WHO"], os.environ["LEVEL"], open("/data/mark").read()

    @app.function(secrets=[rc.Secret.from_dict({"LEVEL": "function"})], volumes={"/data": own})
    def overriding():
        return os.environ["WHO"], os.environ["LEVEL"], os.path.exists("/data/mark")

    @app.cls()
    class Reader:
        @rc.method()
        def who(self):
            return os.environ["WHO"], open("/data/mark").read()

    with app.run():
        assert plain.remote() == ("app", "app", "app volume")
        assert overriding.remote() == ("app", "function", False)  # its own secret after the app's, its own volume
        assert Reader().who.remote() == ("app", "app volume")
    with pytest.raises(exceptions.InvalidError, match="secrets=.* must be a list of rc.Secret"):
        rc.App("bad-defaults", secrets=["TOKEN"])
