"""``remotecell shell FILE.py::NAME``: a shell, or one command (``--cmd``), in a container of that function's
image, with its env, secrets, volumes and working directory, through the CLI as a user types it."""

from __future__ import annotations

import secrets
import subprocess
import sys

import pytest
import remotecell as rc

APP = '''
import remotecell as rc

image = rc.Image.debian_slim().env({{"IMAGE_VAR": "from-image"}}).workdir("/srv/work")
app = rc.App("{name}")

@app.function(image=image, env={{"FN_VAR": "from-function"}}, secrets=[rc.Secret.from_dict({{"TOKEN": "s3cret"}})],
              volumes={{"/data": rc.Volume.from_name("{volume}", create_if_missing=True)}})
def job():
    return "ran"

@app.function()
def other():
    pass
'''

PROBE = ("python3 -c \"import os, sys; print('PROBE', os.environ['IMAGE_VAR'], os.environ['FN_VAR'], "
         "os.environ['TOKEN'], os.getcwd(), open('/data/note.txt').read().strip(), sys.prefix, sep='|')\"")


def remotecell(*args: str, stdin: str | None = None, timeout_s: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "remotecell", *args], capture_output=True, text=True,
                          timeout=timeout_s, input=stdin if stdin is not None else "")


@pytest.fixture
def app_file(sandboxed, tmp_path):
    volume = f"shell-{secrets.token_hex(3)}"
    with rc.Volume.from_name(volume, create_if_missing=True).batch_upload() as up:
        up.put_file(__import__("io").BytesIO(b"on the volume\n"), "/note.txt")
    path = tmp_path / "shell_app.py"
    path.write_text(APP.format(name=f"shell-{secrets.token_hex(3)}", volume=volume))
    yield path
    rc.Volume.objects.delete(volume)


def test_shell_cmd_runs_one_command_in_a_container_of_the_function_s_image(app_file):
    out = remotecell("shell", f"{app_file}::job", "--cmd", PROBE)
    assert out.returncode == 0, out.stderr
    line = next(line for line in out.stdout.splitlines() if line.startswith("PROBE"))
    _, image_var, fn_var, token, cwd, note, prefix = line.split("|")
    assert (image_var, fn_var, token, cwd, note) == ("from-image", "from-function", "s3cret", "/srv/work",
                                                     "on the volume")
    assert prefix != sys.prefix  # the image's own environment, not this client's
    failed = remotecell("shell", f"{app_file}::job", "--cmd", "echo to-stderr >&2; exit 7")
    assert failed.returncode == 7 and "to-stderr" in failed.stderr


def test_shell_is_interactive_its_input_forwarded_and_its_exit_code_the_shell_s(app_file):
    out = remotecell("shell", f"{app_file}::job", stdin="echo in-shell-$((6 * 7)) $PWD\nexit 5\n")
    assert out.returncode == 5, out.stderr
    assert "in-shell-42 /srv/work" in out.stdout


def test_shell_names_what_a_file_has_when_the_name_is_missing_or_wrong(app_file):
    out = remotecell("shell", str(app_file), "--cmd", "true")
    assert out.returncode == 1 and "name one as" in out.stderr and "job, other" in out.stderr
    out = remotecell("shell", f"{app_file}::nope", "--cmd", "true")
    assert out.returncode == 1 and "no function or class 'nope'" in out.stderr


def test_shell_of_a_function_without_an_image_has_the_runtime_s_python_as_python(app_file):
    out = remotecell("shell", f"{app_file}::other", "--cmd", "python -c 'print(40 + 2)'")  # `python`: the runtime's own
    assert out.returncode == 0 and out.stdout.strip().endswith("42"), out.stderr


def test_remotecell_shell_is_listed_in_the_help():
    assert "remotecell shell [-m] FILE.py[::NAME] [--cmd CMD]" in remotecell("--help").stdout
