"""Every code block of README.md and docs/*.md runs as written, at the small sizes it shows.

- ``python`` blocks of one file run in order, in one namespace, in a fresh interpreter whose
  working directory is a new empty folder (``HOME`` and ``ALKERNELS_CACHE`` point into it too).
  A traceback names the Markdown file and its line; a ``DeprecationWarning`` caused by a block is
  an error.
- ``bash`` blocks are read command by command. ``alkernels data ...`` runs there, in its place
  among the Python blocks (it writes the small files they read). Every other ``alkernels`` command
  (also inside ``torchrun``, ``ssh`` or ``sbatch --wrap``) is a training job or a study: it must
  parse with the real argument parser, and is not run. ``make`` targets must exist in the
  Makefile; ``pip install`` lines must name existing extras, the pinned torch and this version;
  scripts and modules run with ``python`` must exist.
- ``text`` blocks are formulas and pseudo-code, not run. A block without a language fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import metadata
from importlib.util import find_spec
from pathlib import Path

import pytest

import alkernels

ROOT = Path(__file__).resolve().parents[1]
FILES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
LANGUAGES = ("python", "bash", "text")
#: ``alkernels`` sub-commands that run (cheap, and they make the inputs of later blocks).
EXECUTED = ("data",)
SEPARATORS = {";", "&", "&&", "|", "||", "do"}
SHELL_WORDS = {"for", "done"}

pytestmark = pytest.mark.timeout(300)
# The blocks use the data, gp, baal, modal and skactiveml extras (a core-only install skips).
for _module in ("ase", "gpytorch", "baal", "modAL", "skactiveml"):
    pytest.importorskip(_module)


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # of the block's first code line in its file

    def commands(self) -> Iterator[tuple[int, list[str]]]:
        """The block's simple commands as (line, words): continuation lines joined, comments
        dropped, and split at ``;``, ``&``, ``|``, ``do`` and the like."""
        text, start = "", self.line
        for number, raw in enumerate(self.code.splitlines(), self.line):
            text, start = (text + " " + raw.rstrip("\\"), start) if text else (raw.rstrip("\\"), number)
            if raw.endswith("\\"):
                continue
            lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            words: list[str] = []
            for word in [*lexer, ";"]:
                if word in SEPARATORS:
                    if words and words[0] not in SHELL_WORDS:
                        yield start, words
                    words = []
                else:
                    words.append(word)
            text = ""


def blocks(name: str) -> list[Block]:
    """The fenced code blocks of ``name`` (relative to the repository), in order."""
    lines = (ROOT / name).read_text().splitlines()
    found, opened = [], None
    for number, line in enumerate(lines, 1):
        if not line.startswith("```"):
            continue
        if opened is None:
            opened = (line[3:].strip(), number)
        else:
            language, first = opened
            found.append(Block(language, "\n".join(lines[first : number - 1]), first + 1))
            opened = None
    assert opened is None, f"{name}: the block opened on line {opened[1]} is never closed"
    return found


def alkernels_args(words: list[str]) -> list[str] | None:
    """The arguments of the ``alkernels`` command in ``words`` (directly, as ``-m alkernels``,
    after ``ssh HOST`` or inside ``sbatch --wrap "..."``), or None if there is none."""
    for k, word in enumerate(words):
        if word == "alkernels" and (k == 0 or words[k - 1] == "-m" or words[0] == "ssh"):
            return words[k + 1 :]
        if word.startswith("alkernels ") and k > 0 and words[k - 1] == "--wrap":
            return shlex.split(word)[1:]
    return None


def check_parses(args: list[str]) -> None:
    """``alkernels ARGS`` is accepted by the command's argument parser (nothing runs)."""
    from alkernels.cli import build_parser

    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(args)
        except SystemExit as stop:
            assert stop.code == 0, f"alkernels {shlex.join(args)}: {errors.getvalue().strip()}"


def check_pip(words: list[str]) -> None:
    """``pip install ...``: the pinned torch, existing extras, and this version of alkernels."""
    extras = set(metadata("alkernels").get_all("Provides-Extra") or ())
    pins = (ROOT / "requirements-dev.txt").read_text()
    requirement = re.compile(
        r"(\.|alkernels|dist/alkernels-(?P<wheel>[^-]+)-\*\.whl)(\[(?P<extras>[^]]+)])?(==(?P<v>.+))?"
    )
    assert words[:2] == ["pip", "install"], words
    options = {"--index-url", "--find-links"}
    k = 2
    while k < len(words):
        word = words[k]
        if word in options:
            k += 2
            continue
        k += 1
        if word == "-e":
            continue
        if word.startswith("torch=="):
            assert f"\n{word}\n" in f"\n{pins}", f"{word} is not the pin in requirements-dev.txt"
            continue
        match = requirement.fullmatch(word)
        assert match, f"pip install: unexpected requirement {word!r}"
        for version in (match["wheel"], match["v"]):
            assert version in (None, alkernels.__version__), f"{word}: the version is {alkernels.__version__}"
        unknown = set((match["extras"] or "").split(",")) - extras - {""}
        assert not unknown, f"{word}: no such extra {sorted(unknown)}"


def check_command(name: str, line: int, words: list[str]) -> list[str] | None:
    """Check one shell command; return the ``alkernels`` arguments to run, if it is to run."""
    where = f"{name}:{line}: {shlex.join(words)}"
    args = alkernels_args(words)
    if args is not None:
        check_parses(args)
        return args if args and args[0] in EXECUTED else None
    program = Path(words[0]).name
    if program == "make":
        makefile = (ROOT / "Makefile").read_text()
        for target in words[1:]:
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"{where}: no make target {target!r}"
    elif program == "pip":
        check_pip(words)
    elif program.startswith("python"):
        if words[1] == "-m":
            assert find_spec(words[2]), f"{where}: no module {words[2]}"
            paths = [w for w in words[3:] if not w.startswith("-") and "/" in w]
        else:
            paths = [words[1]]
        missing = [p for p in paths if not (ROOT / p).exists()]
        assert not missing, f"{where}: {missing} not in the repository"
    else:
        raise AssertionError(f"{where}: no rule for {words[0]!r}; add one to this test")
    return None


def test_every_block_names_its_language() -> None:
    unnamed = [f"{name}:{b.line - 1}" for name in FILES for b in blocks(name) if b.language not in LANGUAGES]
    assert not unnamed, f"label these blocks python, bash or text: {unnamed}"


@pytest.mark.parametrize("name", FILES)
def test_shell_commands_are_valid(name: str) -> None:
    for block in blocks(name):
        if block.language == "bash":
            for line, words in block.commands():
                check_command(name, line, words)


_RUNNER = """
import json, subprocess, sys, warnings

warnings.filterwarnings("error", category=DeprecationWarning, module="__main__")
namespace = {"__name__": "__main__"}
for step in json.loads(sys.argv[1]):
    print(f"--- {step['where']}", flush=True)
    if step["python"] is None:
        subprocess.run([sys.executable, "-m", "alkernels", *step["args"]], check=True)
    else:
        exec(compile(step["python"], step["file"], "exec"), namespace)
"""


@pytest.mark.parametrize("name", [n for n in FILES if any(b.language == "python" for b in blocks(n))])
def test_python_blocks_run_as_written(name: str, tmp_path: Path) -> None:
    steps = []
    for block in blocks(name):
        if block.language == "python":
            padded = "\n" * (block.line - 1) + block.code  # tracebacks give the line in the file
            steps.append({"where": f"{name}:{block.line}", "file": str(ROOT / name), "python": padded})
        elif block.language == "bash":
            for line, words in block.commands():
                args = check_command(name, line, words)
                if args is not None:
                    steps.append({"where": f"{name}:{line}", "python": None, "args": args})
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "HOME": str(tmp_path / "home"), "ALKERNELS_CACHE": str(tmp_path / "cache")}
    env.update(TQDM_DISABLE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1")  # one core each: xdist runs two
    done = subprocess.run(
        [sys.executable, "-c", _RUNNER, json.dumps(steps)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"{name}: a block failed\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
