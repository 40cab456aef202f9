"""mypy sees alkernels' own annotations from a user's file, as an installed package (PEP 561:
``py.typed``), not ``Any``."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

import alkernels

pytest.importorskip("mypy", reason="mypy is not installed (the test extra has it)")

USER_FILE = textwrap.dedent(
    """
    from alkernels import acquisition as acq
    from alkernels.loop import ActiveLearningLoop

    reveal_type(acq.score_all)
    reveal_type(acq.select)
    reveal_type(ActiveLearningLoop)
    """
)


def _installed_view(tmp_path: Path) -> Path:
    """A bare venv whose site-packages reach this interpreter's packages and the folder holding
    ``alkernels`` through a ``.pth`` file: mypy treats both as installed packages, so it reads
    alkernels only because of its ``py.typed`` (an editable install's import hook is invisible to
    mypy, and MYPYPATH would skip the marker check). Returns the venv's python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True, timeout=60)
    python = tmp_path / "venv" / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    paths = dict.fromkeys(
        [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(Path(alkernels.__file__).parents[1])]
    )
    (Path(site) / "alkernels-under-test.pth").write_text("\n".join(paths) + "\n")
    return python


def test_mypy_reveals_the_annotated_signatures(tmp_path: Path) -> None:
    user = tmp_path / "user.py"
    user.write_text(USER_FILE)
    python = _installed_view(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent"]
        + ["--cache-dir", str(tmp_path / ".mypy_cache"), "--python-executable", str(python), str(user)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    revealed = [line.split("Revealed type is ", 1)[1] for line in out.stdout.splitlines() if "Revealed type" in line]
    assert out.returncode == 0 and len(revealed) == 3, out.stdout + out.stderr
    score_all, select, loop = revealed
    tensor = "torch._tensor.Tensor"
    assert score_all.startswith(f'"def (logits: {tensor}') and f"-> dict[str, {tensor}]" in score_all
    assert "k: int" in select and f"-> tuple[{tensor}, {tensor}]" in select
    assert "-> alkernels.loop.loop.ActiveLearningLoop" in loop
