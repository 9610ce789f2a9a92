"""Every shell and Python snippet of README.md and examples/*/README.md runs, as a user would.

How a README is read (the conventions its authors follow):

- a ```python block is a self-contained script: it is saved as a file and run
  in a fresh interpreter;
- a ```bash block is a self-contained shell script (``bash -euo pipefail``);
- a ```console block is a transcript: each line starting with ``$ `` is a command
  (run in order, in one shell for the block), and the lines after it, if any,
  are what it prints on stdout. Printed output is compared after run ids,
  other long hex digests and times are replaced by placeholders; a line
  ``...`` stands for any number of lines. Every command must succeed unless the
  transcript shows its exit code (``$ echo $?`` after it); a ```text block shows
  output and is not run;
- ``<!-- not run: REASON -->`` right before a block leaves it out (installing
  pcs, running this very test suite); every such block must give a reason.

The blocks of a README run in order in one temporary folder, with a copy of
``examples/`` in it (the READMEs say "from the repository root"), no
``MLFLOW_TRACKING_URI`` (MLflow's default store in that folder, as for a new
user), its own ``PCS_HOME`` and a free port in ``$PORT`` for servers. The main
README is read in parts that a user can start with (``PARTS``): each begins in
a new folder, as a reader who jumps to that section, so none leans on what an
earlier one left behind, and the parts run side by side.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO_ROOT, free_port

READMES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "examples").glob("*/README.md"))]
_FENCE = re.compile(r"^```(\w*)\s*$")
_NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")
_LANGUAGES = {"python", "bash", "console"}


@dataclass
class Block:
    language: str
    code: str
    line: int
    not_run: str | None


def blocks(readme: Path) -> list[Block]:
    """The fenced code blocks of ``readme``, with the not-run reason written before each."""
    out: list[Block] = []
    lines = readme.read_text(encoding="utf-8").splitlines()
    i = 0
    pending: str | None = None
    while i < len(lines):
        marker = _NOT_RUN.search(lines[i])
        if marker:
            pending = marker.group(1)
        fence = _FENCE.match(lines[i])
        if fence and fence.group(1):
            start = i + 1
            j = start
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            out.append(Block(fence.group(1), "\n".join(lines[start:j]) + "\n", start, pending))
            pending = None
            i = j + 1
            continue
        if lines[i].strip() and not marker:
            pending = None if not lines[i].startswith("<!--") else pending
        i += 1
    return out


def normalize(text: str) -> list[str]:
    text = re.sub(r"\b[0-9a-f]{32}\b", "<run id>", text)
    text = re.sub(r"\b[0-9a-f]{7,64}\b", "<hex>", text)
    text = re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d", "<time>", text)
    text = re.sub(r"\b\d+(\.\d+)? ?s\b", "<seconds>", text)
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def matches(expected: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` fits ``expected``, where a ``...`` line matches any run of lines."""
    if not expected:
        return not actual
    head = expected[0]
    if head == "...":
        return any(matches(expected[1:], actual[k:]) for k in range(len(actual) + 1))
    return bool(actual) and actual[0] == head and matches(expected[1:], actual[1:])


def transcript(code: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """A bash script running the commands of a console block, and each one's expected output."""
    steps: list[tuple[str, list[str]]] = []
    continued = False
    for raw in code.splitlines():
        if continued and steps:  # a command that goes on after a trailing backslash
            steps[-1] = (steps[-1][0] + "\n" + raw, steps[-1][1])
        elif raw.startswith("$ "):
            steps.append((raw[2:], []))
        elif steps:
            steps[-1][1].append(raw)
        continued = bool(steps) and not steps[-1][1] and raw.rstrip().endswith("\\")
    script = []
    for index, (command, _) in enumerate(steps):
        script.append(f"echo '@@pcs-readme-step {index}@@'")
        script.append(command)
        shows_status = index + 1 < len(steps) and steps[index + 1][0].strip() == "echo $?"
        if not shows_status and command.strip() != "echo $?":
            script.append(f"__s=$?; [ $__s -eq 0 ] || {{ echo 'step {index} exited '$__s >&2; exit $__s; }}")
    return "\n".join(script) + "\n", steps


def _environment(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))}
    env.update(
        PCS_HOME=str(folder / ".pcs_home"),
        PORT=str(free_port()),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        COLUMNS="200",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    return env


def run_block(block: Block, folder: Path, env: dict[str, str]) -> None:
    where = f"{block.language} block at line {block.line}"
    if block.language == "python":
        script = folder / f".snippet_{block.line}.py"  # a script, as a user saves one
        script.write_text(block.code, encoding="utf-8")
        try:
            result = subprocess.run([sys.executable, str(script)], cwd=folder, env=env,
                                    capture_output=True, text=True, timeout=600)
        finally:
            script.unlink()
        assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"
        return
    if block.language == "bash":
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=folder,
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"
        return
    script, steps = transcript(block.code)
    result = subprocess.run(["bash", "-uo", "pipefail", "-c", script], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=600)
    outputs = re.split(r"^@@pcs-readme-step \d+@@\n", result.stdout, flags=re.M)[1:]
    assert len(outputs) == len(steps), f"{where} stopped early:\n{result.stdout}\n{result.stderr}"
    for (command, expected), actual in zip(steps, outputs, strict=True):
        if not expected:
            continue  # the README shows no output for this command
        want, got = normalize("\n".join(expected)), normalize(actual)
        assert matches(want, got), (
            f"{where}: `{command}` printed\n" + "\n".join(got) + "\nbut the README shows\n"
            + "\n".join(want) + f"\n(stderr: {result.stderr[-2000:]})"
        )


# Sections of README.md where a part begins (a reader can start there with a new folder).
PARTS = ["## Python", "## Command line", "## Verified reruns", "## Sweeps",
         "## When things go wrong", "## Registries"]


def parts(readme: Path) -> list[tuple[str, int, int]]:
    """``(name, first line, line after the last)`` of each part of ``readme``."""
    if readme != REPO_ROOT / "README.md":
        return [("whole", 0, sys.maxsize)]
    lines = readme.read_text(encoding="utf-8").splitlines()
    starts = []
    for heading in PARTS:
        found = [n for n, line in enumerate(lines, 1) if line.strip() == heading]
        assert len(found) == 1, f"README.md should have one {heading!r} section (PARTS)"
        starts.append(found[0])
    assert starts == sorted(starts), "PARTS should follow the README's order"
    bounds = [0, *starts, sys.maxsize]
    names = ["start", *(h.lstrip("# ").lower().replace(" ", "-") for h in PARTS)]
    return [(name, bounds[i], bounds[i + 1]) for i, name in enumerate(names)]


_CASES = [(readme, *part) for readme in READMES for part in parts(readme)]


@pytest.mark.parametrize(
    ("readme", "part", "first", "end"), _CASES,
    ids=[f"{r.relative_to(REPO_ROOT)}:{p}" for r, p, _, _ in _CASES],
)
def test_every_snippet_of_the_readme_runs(readme, part, first, end, tmp_path):
    folder = tmp_path / "user"
    folder.mkdir()
    shutil.copytree(REPO_ROOT / "examples", folder / "examples",
                    ignore=shutil.ignore_patterns("__pycache__", "mlflow.db", "mlruns"))
    env = _environment(folder)
    found = [b for b in blocks(readme) if b.language in _LANGUAGES and first <= b.line < end]
    assert found, f"{readme}, part {part!r}, has no snippets"
    for block in found:
        if block.not_run is not None:
            continue
        run_block(block, folder, env)


def test_blocks_left_out_say_why_and_are_few():
    left_out = [(r.name, b.line, b.not_run) for r in READMES for b in blocks(r)
                if b.not_run is not None and b.language in _LANGUAGES]
    assert all(reason.strip() for _, _, reason in left_out)
    # installing pcs and running this suite cannot run inside it; nothing else is exempt
    assert len(left_out) <= 3, left_out


def test_the_transcript_matcher():
    assert matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert matches(["..."], [])
    assert not matches(["a", "d"], ["a", "b", "d"])
    assert normalize("run 0123456789abcdef0123456789abcdef took 1.5 s") == ["run <run id> took <seconds>"]
