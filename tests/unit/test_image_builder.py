"""rc.Image, Modal's builder, on the client: each method's step, immutability, files read and tarred, the errors."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import tarfile
import textwrap
from pathlib import Path

import cloudpickle
import pytest
import remotecell as rc
from remotecell.exceptions import InvalidError
from remotecell.file_pattern_matcher import NON_PYTHON_FILES, FilePatternMatcher
from remotecell_runtime.protocol.image_spec import IN_CONTAINER_ENV, ImageSpec

Image = rc.Image


def spec_of(image: rc.Image) -> ImageSpec:
    return image.materialize()[0]


def steps_of(image: rc.Image) -> list[dict]:
    return [s.fields() for s in spec_of(image).steps]


def names_in(blob: bytes) -> list[str]:
    return tarfile.open(fileobj=io.BytesIO(blob)).getnames()


def only_blob(image: rc.Image) -> bytes:
    blobs = image.materialize()[1]
    assert len(blobs) == 1
    return next(iter(blobs.values()))


def test_each_method_returns_a_new_image_and_leaves_its_own_alone():
    base = Image.debian_slim()
    one = base.pip_install("a")
    two = base.apt_install("git")
    assert steps_of(base) == []
    assert steps_of(one) == [{"kind": "pip", "packages": ["a"]}]
    assert steps_of(two) == [{"kind": "apt", "packages": ["git"]}]
    assert steps_of(one.env({"A": "1"})) == [{"kind": "pip", "packages": ["a"]}, {"kind": "env", "env": {"A": "1"}}]
    assert steps_of(one) == [{"kind": "pip", "packages": ["a"]}]


@pytest.mark.parametrize(("build", "step"), [
    (lambda i: i.pip_install("b", "a", index_url="https://i/simple", extra_index_url="https://x/simple",
                             find_links="/wheels", pre=True, extra_options="--no-build-isolation"),
     {"kind": "pip", "packages": ["a", "b"], "index_url": "https://i/simple", "extra_index_url": "https://x/simple",
      "find_links": "/wheels", "pre": True, "extra_options": "--no-build-isolation"}),
    (lambda i: i.uv_pip_install("torch==2.7.1", "numpy"), {"kind": "uv_pip", "packages": ["numpy", "torch==2.7.1"]}),
    (lambda i: i.apt_install("git", "curl=7.88.1-10"), {"kind": "apt", "packages": ["git", "curl=7.88.1-10"]}),
    (lambda i: i.run_commands("echo 1", ["echo 2", "echo 3"]),
     {"kind": "run", "commands": ["echo 1", "echo 2", "echo 3"]}),
    (lambda i: i.env({"HF_HOME": "/cache"}), {"kind": "env", "env": {"HF_HOME": "/cache"}}),
    (lambda i: i.workdir("/app"), {"kind": "workdir", "path": "/app"}),
])
def test_each_method_adds_its_step(build, step):
    assert steps_of(build(Image.debian_slim())) == [step]


def test_bases_and_the_default_image():
    assert spec_of(Image.debian_slim(python_version="3.11")).base_fields()["python_version"] == "3.11"
    registry = spec_of(Image.from_registry("nvidia/cuda:12.4.1-runtime-ubuntu22.04", add_python="3.12"))
    assert (registry.base, registry.registry_tag, registry.add_python) == (
        "registry", "nvidia/cuda:12.4.1-runtime-ubuntu22.04", "3.12")
    assert spec_of(Image.debian_slim()) == ImageSpec()  # the default: sends no option
    assert spec_of(Image.debian_slim().pip_install()) == ImageSpec()  # nothing to install: the same image


def test_packages_may_be_nested_lists_and_python_packages_is_a_pip_step():
    nested = Image.debian_slim().pip_install(["numpy", "scipy"], "pandas", ["torch"])
    assert steps_of(nested) == [{"kind": "pip", "packages": ["numpy", "pandas", "scipy", "torch"]}]
    assert spec_of(Image(python_packages=["tabulate", "rich"])) == spec_of(
        Image.debian_slim().pip_install("tabulate", "rich"))
    with pytest.raises(InvalidError, match="must be strings or lists of strings, got 3"):
        Image.debian_slim().pip_install("a", 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(("build", "says"), [
    (lambda: Image.debian_slim().pip_install("--index-url=https://x"), "'--index-url=https://x' is not a requirement"),
    (lambda: Image.debian_slim().uv_pip_install("numpy", "-e ."), "pip options are not accepted"),
    (lambda: Image(python_packages=["--pre"]), "pip options are not accepted"),
    (lambda: Image(python_packages="tabulate"), "give a list of requirement specifiers"),
    (lambda: Image.debian_slim().apt_install("-y"), "'-y' is not a Debian package name"),
    (lambda: Image.debian_slim(python_version=3.11), "give a Python version as a string"),  # type: ignore[arg-type]
    (lambda: Image.debian_slim(python_version="three"), "python_version='three'"),
    (lambda: Image.from_registry("python 3"), "from_registry('python 3')"),
    (lambda: Image.debian_slim().env({"A": 1}), "Invalid keys: ['A']"),  # type: ignore[dict-item]
    (lambda: Image.debian_slim().workdir("app"), "workdir('app'): give an absolute path"),
    (lambda: Image.debian_slim().run_commands(""), "holds an empty command"),
    (lambda: Image.debian_slim().add_local_file("/no/such/file.txt", "/data/f.txt"), "'/no/such/file.txt' does not"),
    (lambda: Image.debian_slim().add_local_dir("/no/such/dir", "/data"), "'/no/such/dir' does not exist"),
    (lambda: Image.debian_slim().add_local_dir(".", "data"), "remote_path 'data' must be an absolute path"),
    (lambda: Image.debian_slim().add_local_python_source("no_such_module_xyz"), "'no_such_module_xyz' was not found"),
    (lambda: Image.debian_slim().add_local_python_source("sys"), "module 'sys' has no Python source file"),
    (lambda: Image.debian_slim().run_function(lambda: 1), "does not support lambda functions"),
    (lambda: Image.debian_slim().run_function(print, secrets=[rc.Secret.from_dict({"K": "v"})]),
     "give named secrets"),
    (lambda: rc.App("x", image="python:3.11"), "must be an rc.Image"),  # type: ignore[arg-type]
    (lambda: rc.App("x").function(image="python:3.11")(lambda: None), "must be an rc.Image"),
])
def test_bad_values_are_refused_by_name(build, says):
    with pytest.raises(InvalidError) as info:
        build()
    assert says in str(info.value)


def test_a_build_step_after_files_put_in_place_at_start_is_refused_as_modal_does(tmp_path):
    (tmp_path / "data.json").write_text("{}")
    mounted = Image.debian_slim().add_local_file(tmp_path / "data.json", "/root/data.json")
    for step in (lambda i: i.run_commands("ls"), lambda i: i.pip_install("a"), lambda i: i.env({"A": "1"}),
                 lambda i: i.add_local_file(tmp_path / "data.json", "/x/", copy=True)):
        with pytest.raises(InvalidError, match="set `copy=True` to copy the files"):
            step(mounted)
    assert mounted.add_local_dir(tmp_path, "/more").materialize()  # more files put in place at start: fine
    copied = Image.debian_slim().add_local_file(tmp_path / "data.json", "/root/data.json", copy=True)
    assert [s["kind"] for s in steps_of(copied.run_commands("ls"))] == ["files", "run"]
    assert spec_of(copied).steps[0].copy and not spec_of(mounted).steps[0].copy


def test_add_local_file_and_dir_tar_names_relative_to_their_folder(tmp_path):
    (tmp_path / "src" / "sub").mkdir(parents=True)
    for name in ("a.txt", "sub/b.txt", "sub/c.log"):
        (tmp_path / "src" / name).write_text(name)
    one = Image.debian_slim().add_local_file(tmp_path / "src" / "a.txt", "/data/renamed.txt")
    assert steps_of(one)[0]["path"] == "/data" and names_in(only_blob(one)) == ["renamed.txt"]
    kept = Image.debian_slim().add_local_file(tmp_path / "src" / "a.txt", "/data/")
    assert names_in(only_blob(kept)) == ["a.txt"]
    tree = Image.debian_slim().add_local_dir(tmp_path / "src", "/srv/app", ignore=["**/*.log"])
    assert steps_of(tree)[0]["path"] == "/srv/app"
    assert names_in(only_blob(tree)) == ["a.txt", "sub/b.txt"]
    by_callable = Image.debian_slim().add_local_dir(tmp_path / "src", "/srv", ignore=lambda p: p.parts[0] == "sub")
    assert names_in(only_blob(by_callable)) == ["a.txt"]


@pytest.mark.parametrize(("patterns", "path", "ignored"), [
    (["*.py"], "a.py", True),
    (["*.py"], "pkg/a.py", False),  # '*' stays in one segment
    (["**/*.py"], "pkg/deep/a.py", True),
    (["**/*.py"], "a.py", True),
    ([".venv"], ".venv/lib/x.py", True),  # a matched folder takes its files
    (["data/**"], "data/x/y.bin", True),
    (["data/**", "!data/keep.csv"], "data/keep.csv", False),
    (["data/**", "!data/keep.csv"], "data/other.csv", True),
    (["a?c"], "abc", True),
    (["[ab].txt"], "b.txt", True),
    ([], "anything", False),
])
def test_ignore_patterns_follow_dockerignore(patterns, path, ignored):
    assert FilePatternMatcher(*patterns)(Path(path)) is ignored


def test_pattern_matchers_invert_and_read_files(tmp_path):
    assert (~FilePatternMatcher("**/*.py"))(Path("x.txt")) and not NON_PYTHON_FILES(Path("pkg/x.py"))
    ignore_file = tmp_path / ".ignore"
    ignore_file.write_text("# comment\n*.log\n\n!keep.log\n")
    matcher = FilePatternMatcher.from_file(ignore_file)
    assert matcher(Path("a.log")) and not matcher(Path("keep.log")) and not matcher(Path("a.txt"))


def test_the_same_files_give_the_same_digest_wherever_and_whenever(tmp_path):
    def tree(root: Path, mtime: float) -> Path:
        for name, text in (("b.txt", "bee"), ("a/c.txt", "sea")):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
            os.utime(root / name, (mtime, mtime))
        return root

    one = only_blob(Image.debian_slim().add_local_dir(tree(tmp_path / "one", 1_000_000), "/d"))
    two = only_blob(Image.debian_slim().add_local_dir(tree(tmp_path / "two", 2_000_000), "/d"))
    assert one == two
    infos = tarfile.open(fileobj=io.BytesIO(one)).getmembers()
    assert [(i.name, i.mtime, i.uid, i.uname, i.mode) for i in infos] == [
        ("a/c.txt", 0, 0, "", 0o644), ("b.txt", 0, 0, "", 0o644)]
    (tmp_path / "two" / "b.txt").chmod(0o755)
    assert only_blob(Image.debian_slim().add_local_dir(tmp_path / "two", "/d")) != one  # the executable bit counts
    (tmp_path / "one" / "b.txt").write_text("changed")
    changed = Image.debian_slim().add_local_dir(tmp_path / "one", "/d")
    assert only_blob(changed) != one
    assert spec_of(changed).steps[0].digest != spec_of(Image.debian_slim().add_local_dir(tmp_path / "two", "/d")) \
        .steps[0].digest


def test_files_are_read_when_the_image_is_published_not_when_the_method_is_called(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    image = Image.debian_slim().add_local_dir(tmp_path, "/d")
    (tmp_path / "b.txt").write_text("two")
    assert names_in(only_blob(image)) == ["a.txt", "b.txt"]


@pytest.fixture
def local_modules(tmp_path, monkeypatch):
    pkg = tmp_path / "h3pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / ".hidden").mkdir()
    (pkg / "__pycache__").mkdir()
    for name in ("__init__.py", "sub/__init__.py", "sub/m.py", "data.json", ".hidden/x.py", "__pycache__/m.pyc"):
        (pkg / name).write_text("")
    (tmp_path / "h3single.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("h3pkg", "h3pkg.sub", "h3single"):
        sys.modules.pop(name, None)


def test_add_local_python_source_finds_packages_and_modules_here(local_modules):
    image = Image.debian_slim().add_local_python_source("h3pkg", "h3single")
    assert steps_of(image)[0]["path"] == "/root"
    assert names_in(only_blob(image)) == ["h3pkg/__init__.py", "h3pkg/sub/__init__.py", "h3pkg/sub/m.py",
                                          "h3single.py"]
    everything = Image.debian_slim().add_local_python_source("h3pkg", ignore=[])
    assert "h3pkg/data.json" in names_in(only_blob(everything))
    assert not any(".hidden" in n or "__pycache__" in n for n in names_in(only_blob(everything)))
    submodule = Image.debian_slim().add_local_python_source("h3pkg.sub.m")
    assert names_in(only_blob(submodule)) == ["h3pkg/sub/m.py"]


def test_requirements_files_are_read_here(tmp_path):
    (tmp_path / "base.txt").write_text("rich>=13\n")
    (tmp_path / "requirements.txt").write_text(textwrap.dedent("""\
        # pinned
        tabulate==0.9.0  # inline comment
        -r base.txt
        --extra-index-url https://extra.example/simple
        --pre
        requests \\
            >=2.31 ; python_version >= "3.8"
    """))
    image = Image.debian_slim().pip_install_from_requirements(str(tmp_path / "requirements.txt"))
    assert steps_of(image) == [{"kind": "pip", "pre": True, "extra_index_url": "https://extra.example/simple",
                                "packages": ['requests >=2.31 ; python_version >= "3.8"', "rich>=13",
                                             "tabulate==0.9.0"]}]
    uv = Image.debian_slim().uv_pip_install("numpy", requirements=[str(tmp_path / "base.txt")])
    assert steps_of(uv) == [{"kind": "uv_pip", "packages": ["numpy", "rich>=13"]}]
    (tmp_path / "hashed.txt").write_text("a==1\n--hash=sha256:abc\n")
    with pytest.raises(InvalidError, match=r"hashed.txt, line 2: '--hash=sha256:abc' is not supported here"):
        Image.debian_slim().pip_install_from_requirements(str(tmp_path / "hashed.txt"))
    with pytest.raises(InvalidError, match="does not exist"):
        Image.debian_slim().pip_install_from_requirements(str(tmp_path / "missing.txt"))


def test_pyproject_dependencies_and_optional_groups_are_read_here(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(textwrap.dedent("""\
        [project]
        name = "demo"
        dependencies = ["httpx>=0.27", "pydantic"]
        [project.optional-dependencies]
        test = ["pytest"]
        docs = ["sphinx"]
    """))
    assert steps_of(Image.debian_slim().pip_install_from_pyproject(str(pyproject), optional_dependencies=["test"])) \
        == [{"kind": "pip", "packages": ["httpx>=0.27", "pydantic", "pytest"]}]
    with pytest.raises(InvalidError, match=r"no optional dependency group 'gpu'.*it has \['docs', 'test'\]"):
        Image.debian_slim().pip_install_from_pyproject(str(pyproject), optional_dependencies=["gpu"])
    (tmp_path / "poetry.toml").write_text("[tool.poetry.dependencies]\npython = '^3.11'\n")
    with pytest.raises(InvalidError, match=r"no \[project\] dependencies"):
        Image.debian_slim().pip_install_from_pyproject(str(tmp_path / "poetry.toml"))


def build_step():
    Path("/model.bin").write_text("parameters")


def test_run_function_pickles_its_function_into_a_blob():
    image = Image.debian_slim().run_function(build_step, secrets=[rc.Secret.from_name("hf")],
                                             volumes={"/cache": rc.Volume.from_name("cache")})
    (step,) = spec_of(image).steps
    assert (step.kind, step.secrets, step.volumes) == ("function", ["hf"], {"/cache": "cache"})
    body = only_blob(image)
    assert pickle.loads(body).__name__ == "build_step"
    assert step.digest == hashlib.sha256(body).hexdigest()


def test_imports_swallows_a_failed_import_here_and_raises_it_in_a_container(monkeypatch):
    image = Image.debian_slim().pip_install("no-such-package-xyz")
    with image.imports():
        import no_such_package_xyz
    with pytest.warns(UserWarning, match="non-ImportError exception"), image.imports():
        raise RuntimeError("boom")
    monkeypatch.setenv(IN_CONTAINER_ENV, "1")
    with pytest.raises(ImportError), image.imports():
        import no_such_package_xyz  # noqa: F401


def test_in_a_container_local_steps_are_recorded_without_reading_local_files(monkeypatch):
    monkeypatch.setenv(IN_CONTAINER_ENV, "1")
    image = Image.debian_slim().add_local_dir("/only/on/the/client", "/data").add_local_python_source("not_here")
    with pytest.raises(InvalidError, match="made in a container"):
        image.materialize()
    with pytest.raises(InvalidError, match="set `copy=True`"):
        image.run_commands("ls")  # the order rule still holds


def test_an_image_pickles_without_what_this_process_published(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    image = Image.debian_slim().pip_install("a").add_local_dir(tmp_path, "/d")
    image._published = (("runtime", "app"), {"steps": []})
    copy = cloudpickle.loads(cloudpickle.dumps(image))
    assert copy._published is None and spec_of(copy) == spec_of(image)


def test_app_image_is_the_default_and_definitions_override_it():
    app_image = Image.debian_slim().pip_install("a")
    own = Image.debian_slim().pip_install("b")
    app = rc.App("images", image=app_image)

    @app.function()
    def default() -> None: ...

    @app.function(image=own)
    def overridden() -> None: ...

    @app.cls(image=own)
    class Model:
        @rc.method()
        def predict(self) -> None: ...

    @app.cls()
    class Plain:
        @rc.method()
        def predict(self) -> None: ...

    assert default.registration.image is app_image and overridden.registration.image is own
    assert Model().registration.image is own and Plain().registration.image is app_image
    assert rc.App("none").function()(lambda: None).registration.image is None
