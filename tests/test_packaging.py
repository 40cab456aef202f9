"""Packaging: one version string, the build switches of ``setup.py``, what the sdist and the wheel
carry, and the run-folder lock where ``fcntl`` is missing (Windows)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import IO

import pytest

import alkernels

ROOT = Path(__file__).resolve().parents[1]
DIST = ROOT / "dist"
#: Set by .ci/wheel_check.sh right after `make wheel`: only then do the artefact checks run (a
#: dist/ left from an older tree would fail them), and a missing artefact is a failure.
DIST_CHECK = os.environ.get("ALKERNELS_DIST_CHECK") == "1"


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# -- metadata ------------------------------------------------------------------------------------
def test_the_version_is_written_once_and_cited_and_logged() -> None:
    from alkernels._version import __version__

    project = _pyproject()
    assert alkernels.__version__ == __version__
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "alkernels._version.__version__"}
    cited = re.search(r"^version: (\S+)$", (ROOT / "CITATION.cff").read_text(), re.M)
    assert cited is not None and cited.group(1) == __version__
    headings = [line for line in (ROOT / "CHANGELOG.md").read_text().splitlines() if line.startswith("## ")]
    assert any(__version__ in line for line in headings), headings


def test_the_isolated_build_needs_only_setuptools_and_pybind11() -> None:
    requires = _pyproject()["build-system"]["requires"]
    assert sorted(re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0] for req in requires) == ["pybind11", "setuptools"]


# -- setup.py ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup_py() -> ModuleType:
    """``setup.py`` as a module: its helpers, without running ``setup()``."""
    pytest.importorskip("pybind11", reason="setup.py needs pybind11, a build requirement")
    spec = importlib.util.spec_from_file_location("alkernels_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("value", "required"), [(None, False), ("", False), ("0", False), ("no", False), ("1", True), (" TRUE ", True)]
)
def test_require_extension_switch(setup_py: ModuleType, value: str | None, required: bool) -> None:
    environ = {} if value is None else {"ALKERNELS_REQUIRE_EXTENSION": value}
    assert setup_py.extension_required(environ) is required


def test_require_extension_switch_refuses_other_values(setup_py: ModuleType) -> None:
    with pytest.raises(SystemExit, match="ALKERNELS_REQUIRE_EXTENSION='maybe'"):
        setup_py.extension_required({"ALKERNELS_REQUIRE_EXTENSION": "maybe"})


@pytest.mark.parametrize(("compiler_type", "family"), [("unix", "gcc"), ("mingw32", "gcc"), ("msvc", "msvc")])
def test_compiler_flags_follow_the_compiler(
    setup_py: ModuleType, monkeypatch: pytest.MonkeyPatch, compiler_type: str, family: str
) -> None:
    from setuptools import Extension

    built: list[list[Extension]] = []
    monkeypatch.setattr(setup_py.build_ext, "build_extensions", lambda self: built.append(self.extensions))
    command = setup_py.BuildExt.__new__(setup_py.BuildExt)
    command.compiler = SimpleNamespace(compiler_type=compiler_type)
    command.extensions = [Extension("alkernels._C", ["module.cpp"])]
    command.build_extensions()
    [[extension]] = built
    assert extension.extra_compile_args == setup_py.COMPILE_ARGS[family]
    assert extension.extra_link_args == setup_py.LINK_ARGS[family]


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler")
@pytest.mark.parametrize("required", [False, True])
def test_a_failed_extension_build_warns_or_fails(setup_py: ModuleType, tmp_path: Path, required: bool) -> None:
    """The real ``setup.py`` on a project whose one C++ file does not compile: a warning and a
    successful build by default, an error with ``ALKERNELS_REQUIRE_EXTENSION=1``."""
    shutil.copy(ROOT / "setup.py", tmp_path / "setup.py")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "alk-build-probe"\nversion = "0"\n\n[tool.setuptools]\npackages = []\n'
    )
    (tmp_path / "csrc").mkdir()
    (tmp_path / "csrc" / "broken.cpp").write_text('#error "deliberately broken source"\n')
    out = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", "lib", "--build-temp", "tmp"],
        cwd=tmp_path,
        env={**os.environ, "ALKERNELS_REQUIRE_EXTENSION": "1" if required else "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = out.stdout + out.stderr
    assert "deliberately broken source" in log, log  # the compiler ran, and failed
    if required:
        assert out.returncode != 0, log
    else:
        assert out.returncode == 0 and 'building extension "alkernels._C" failed' in log, log


# -- the artefacts (make wheel) ------------------------------------------------------------------
def _artefact(pattern: str) -> Path:
    if not DIST_CHECK:
        pytest.skip("checks dist/ right after make wheel: make wheel-check runs it (ALKERNELS_DIST_CHECK=1)")
    found = sorted(DIST.glob(pattern))
    assert len(found) == 1, f"{len(found)} files match dist/{pattern}, not one"
    assert found[0].name.startswith(f"alkernels-{alkernels.__version__}"), found[0].name
    return found[0]


def test_the_wheel_carries_the_extension_license_citation_and_marker() -> None:
    names = set(zipfile.ZipFile(_artefact("alkernels-*-manylinux_*.whl")).namelist())
    info = f"alkernels-{alkernels.__version__}.dist-info"
    assert {f"{info}/licenses/LICENSE", f"{info}/licenses/CITATION.cff", "alkernels/py.typed"} <= names
    assert any(re.fullmatch(r"alkernels/_C\.[^/]+\.so", name) for name in names), sorted(names)
    # the kernels use the OpenMP runtime torch loads: auditwheel must not graft a second one
    assert not any("libgomp" in name for name in names)


def test_the_sdist_builds_the_package_and_leaves_the_tests_out() -> None:
    with tarfile.open(_artefact("alkernels-*.tar.gz")) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    sources = {str(p.relative_to(ROOT)) for ext in ("cpp", "h", "inc") for p in ROOT.glob(f"csrc/**/*.{ext}")}
    sources |= {str(p.relative_to(ROOT)) for p in ROOT.glob("python/*.cpp")}
    assert {"LICENSE", "CITATION.cff", "setup.py", "pyproject.toml", "alkernels/py.typed"} | sources <= names
    assert not any(name.startswith("tests/") for name in names)


# -- portability -----------------------------------------------------------------------------------
NO_FCNTL = textwrap.dedent(
    """
    # fcntl hidden as on Windows, and a stand-in msvcrt on POSIX record locks: held per process
    # and per byte range, so the library must lock and unlock the same region. torch and
    # subprocess come first: subprocess takes any importable msvcrt for a sign of Windows.
    import errno, fcntl as posix, os, subprocess, sys, types
    import torch

    def locking(fd, mode, nbytes):
        start = os.lseek(fd, 0, os.SEEK_CUR)
        if mode == msvcrt.LK_UNLCK:
            posix.lockf(fd, posix.LOCK_UN, nbytes, start)
            return
        try:
            posix.lockf(fd, posix.LOCK_EX | posix.LOCK_NB, nbytes, start)
        except OSError:
            raise PermissionError(errno.EACCES, "Permission denied") from None

    msvcrt = types.ModuleType("msvcrt")
    msvcrt.LK_UNLCK, msvcrt.LK_NBLCK, msvcrt.locking = 0, 2, locking
    sys.modules["fcntl"], sys.modules["msvcrt"] = None, msvcrt

    from pathlib import Path
    from alkernels import _locking
    from alkernels.loop.rundir import RunDirectory, RunInUseError, file_lock

    assert _locking.fcntl is None
    folder = Path(sys.argv[2])
    if sys.argv[1] == "hold":
        with RunDirectory(folder).lock():
            print("held", flush=True)
            sys.stdin.readline()
    else:
        for _ in range(2):  # once while the other process holds the folder, once after
            try:
                with RunDirectory(folder).lock(), file_lock(folder / "cache.lock"):
                    print("acquired", flush=True)
            except RunInUseError as err:
                print(f"in use: {err}", flush=True)
            sys.stdin.readline()
    """
)


def test_the_run_folder_lock_works_without_fcntl(tmp_path: Path) -> None:
    processes: list[subprocess.Popen[str]] = []

    def start(role: str) -> tuple[subprocess.Popen[str], IO[str], IO[str]]:
        process = subprocess.Popen(
            [sys.executable, "-c", NO_FCNTL, role, str(tmp_path / "run")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        assert process.stdin is not None and process.stdout is not None
        return process, process.stdin, process.stdout

    try:
        holder, _, held = start("hold")
        assert held.readline() == "held\n"
        other, answer, said = start("try")
        first = said.readline()
        assert first.startswith("in use:") and f"process {holder.pid}" in first, first
        holder.communicate("\n", timeout=60)
        answer.write("\n")
        answer.flush()
        assert said.readline() == "acquired\n"
        other.communicate("\n", timeout=60)
        assert holder.returncode == 0 and other.returncode == 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
