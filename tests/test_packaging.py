"""The package: `pip install .` gives every module of minifope, the `minifope` command and the
extras, with the version written once; the lessons import the installed minifope.

The wheel is built once, offline, with this environment's setuptools (no build isolation),
from a copy of the clone in a temporary folder, so no build/ or *.egg-info lands in the clone;
it is installed with `pip install --target`, and run from an empty folder.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import minifope

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
NOT_IN_A_BUILD = shutil.ignore_patterns(".git", ".venv", "runs", "build", "dist", "*.egg-info",
                                        "__pycache__", ".pytest_cache", ".ipynb_checkpoints")


def run(command, **kwargs):
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=120, **kwargs)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    clone = tmp_path_factory.mktemp("clone") / "minifope"
    shutil.copytree(ROOT, clone, ignore=NOT_IN_A_BUILD)
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", out, clone])
    (path,) = out.glob("minifope-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """The folder `pip install --target` filled: minifope/, its dist-info and bin/minifope."""
    target = tmp_path_factory.mktemp("site")
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", target, wheel])
    return target


@pytest.fixture
def elsewhere(tmp_path, installed):
    """An empty working folder and an environment that sees the installed copy, not the clone."""
    return dict(cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(installed)})


def metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(z.read(name).decode())


def test_the_wheel_holds_every_module_of_minifope_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"minifope", f"minifope-{minifope.__version__}.dist-info"}
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "minifope").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert {n for n in names if n.endswith(".py")} == modules
    assert {"minifope/torch/__init__.py", "minifope/exercises/__init__.py"} <= set(names)


def test_the_installed_package_imports_from_another_folder(installed, elsewhere):
    script = "import minifope; print(minifope.__version__); print(minifope.__file__)"
    done = run([sys.executable, "-c", script], **elsewhere)
    version, file = done.stdout.split()
    assert version == minifope.__version__
    assert Path(file).parent == installed / "minifope"


def test_the_minifope_command_runs_the_cli_and_returns_its_exit_status(installed, elsewhere):
    command = installed / "bin" / "minifope"
    usage = run([command, "--help"], **elsewhere).stdout
    for sub in ("train", "sample", "experiment", "demo", "gradcheck", "bench"):
        assert sub in usage
    # a user's mistake: one line on stderr and exit status 2, passed on by the script
    done = subprocess.run([command, "sample", "--ckpt", "no-such-run"], capture_output=True, text=True,
                          timeout=120, **elsewhere)
    assert done.returncode == 2 and done.stderr.startswith("error: "), done.stderr


def test_the_version_is_written_once_in_minifope_init(wheel):
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "minifope.__version__"}
    assert metadata(wheel)["Version"] == minifope.__version__


def test_the_torch_extra_accepts_the_torch_that_ci_pins(wheel):
    meta = metadata(wheel)
    assert {"torch", "lessons", "test"} <= set(meta.get_all("Provides-Extra"))
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    (torch,) = [r for r in requires if r.name == "torch"]
    assert torch.marker.evaluate({"extra": "torch"}) and not torch.marker.evaluate({"extra": ""})
    pins = re.findall(r"^torch==(\S+)", (ROOT / "requirements-torch.txt").read_text(), re.M)
    assert pins and all(torch.specifier.contains(v) for v in pins), (str(torch.specifier), pins)


CLONE = re.compile(r"-e \.\[([\w,]+)\]")  # a requirements line that installs this clone with extras


def requirement_lines(name):
    lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
    return [line for line in lines if line]


def test_requirements_txt_installs_this_clone_and_lists_no_dependency_of_its_own():
    lines = requirement_lines("requirements.txt")
    assert lines and all(CLONE.fullmatch(line) for line in lines), lines
    extras = {extra for line in lines for extra in CLONE.fullmatch(line).group(1).split(",")}
    assert {"lessons", "test"} <= extras


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-torch.txt"])
def test_requirements_name_only_extras_the_package_declares(name):
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"]
    named = {extra for line in requirement_lines(name) if (m := CLONE.fullmatch(line))
             for extra in m.group(1).split(",")}
    assert named and named <= set(declared), named


NOTEBOOKS = sorted(LESSONS.glob("[0-9][0-9]_*.ipynb")) + sorted(LESSONS.glob("solutions/[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(LESSONS).as_posix())
def test_lesson_imports_the_installed_minifope_without_a_path_search(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "sys.path" not in code and "PYTHONPATH" not in code
    assert "import minifope" in code or "from minifope" in code
