"""Data files a run reads are recorded by content (issue 17, point 4).

Reads are seen at the OS level on Linux (inotify), so SQLite, NumPy's C
readers and child processes count; a small file is kept with the record so a
rerun of the recorded code has it; a larger one keeps the run ``local``; a
changed file is named as the cause; a missing one is a one-line error.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli

from pcs import Component, LocalRepo, Run
from pcs.errors import NotReproducibleError
from pcs.record.reads import FileReads, describe

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="OS-level read watching (inotify) exists on Linux only; elsewhere only Python's opens are seen",
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@linux_only
def test_reads_by_c_code_and_child_processes_are_seen_and_own_outputs_are_not(tmp_path):
    import numpy as np

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / ".git").mkdir()
    (project / ".git" / "HEAD").write_text("ref: main\n")
    with sqlite3.connect(project / "data" / "table.db") as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (7)")
    conn.close()
    np.arange(5, dtype="float64").tofile(project / "data" / "array.bin")
    np.save(project / "weights.npy", np.ones(3))
    (project / "notes.txt").write_text("read by cat")
    (project / "unread.txt").write_text("nobody opens me")
    time.sleep(0.05)  # the watch starts after every input was written

    with FileReads([project]) as reads:
        c = sqlite3.connect(str(project / "data" / "table.db"))  # SQLite's own C open()
        assert c.execute("SELECT x FROM t").fetchall() == [(7,)]
        c.close()
        assert np.fromfile(str(project / "data" / "array.bin")).sum() == 10.0
        assert np.load(project / "weights.npy").sum() == 3.0
        out = subprocess.run(["cat", "notes.txt"], cwd=project, capture_output=True, text=True)
        assert out.stdout == "read by cat"
        subprocess.run(["cat", ".git/HEAD"], cwd=project, capture_output=True, check=True)
        # a file the run writes and reads back is its output, also when a child writes it
        subprocess.run(["sh", "-c", "echo out > made.txt; cat made.txt"], cwd=project, check=True,
                       capture_output=True)
        (project / "mine.json").write_text("{}")
        json.loads((project / "mine.json").read_text())

    assert reads.method == "inotify + audit hook"
    assert reads.files() == ["data/array.bin", "data/table.db", "notes.txt", "weights.npy"]
    described = {f.path: f for f in describe(reads.located(), limit=100)}
    assert described["notes.txt"].sha256 == sha(b"read by cat") and described["notes.txt"].size == 11
    assert described["notes.txt"].snapshot and not described["data/table.db"].snapshot  # 8 KiB > 100


@linux_only
def test_a_watch_reports_reads_up_to_its_end_and_then_lets_go_of_its_descriptors(tmp_path):
    """The watch's thread closes the inotify descriptor after the run (closing it waits on the
    kernel), never before it has handed over the last events; many runs leave nothing open."""
    import threading

    (tmp_path / "data.txt").write_text("x")
    time.sleep(0.05)
    before = set(os.listdir("/proc/self/fd"))
    for i in range(30):
        with FileReads([tmp_path]) as reads:  # only inotify sees a child's read
            subprocess.run(["cat", "data.txt"], cwd=tmp_path, check=True, capture_output=True)
        assert reads.files() == ["data.txt"], i
        assert not reads.overflowed
    deadline = time.monotonic() + 30
    while any(t.name == "pcs-inotify" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "pcs-inotify" for t in threading.enumerate())
    assert set(os.listdir("/proc/self/fd")) <= before


COMPONENT = """\
import json
import subprocess
from pathlib import Path


class C:
    def go(self):
        here = Path(__file__).parent
        config = json.loads((here / "config.json").read_text())
        # a large table read by a child process, as a tool written in C would
        rows = subprocess.run(["wc", "-l", str(here / "table.csv")], capture_output=True,
                              text=True, check=True).stdout.split()[0]
        return {"scale": config["scale"], "rows": int(rows)}
"""


def project_with_data(folder: Path) -> Component:
    folder.mkdir(parents=True)
    (folder / "comp.py").write_text(COMPONENT)
    (folder / "config.json").write_text('{"scale": 1}')
    (folder / "table.csv").write_text("x\n" * 600)  # 1200 bytes: over the limit set below
    (folder / "components.yaml").write_text(
        "repos: {here: {type: local, path: .}}\n"
        "components: {c: {repo: here, file_path: comp.py, class_name: C, instantiate: true}}\n"
    )
    time.sleep(0.05)
    return Component.from_repo(LocalRepo("here", folder), "c", "comp.py", "C", instantiate=True)


@linux_only
def test_data_read_next_to_the_code_is_recorded_kept_or_named_and_changes_are_causes(tmp_path, monkeypatch):
    monkeypatch.setenv("PCS_DATA_SNAPSHOT_MAX_BYTES", "1000")
    folder = tmp_path / "project"
    component = project_with_data(folder)
    run = Run.from_existing_run_id(component.run_with_arg_set("go", {}, seed=1).identifier)
    assert run.return_value == {"scale": 1, "rows": 600}

    inputs = run._read_yaml("pcs/inputs.yaml")
    assert inputs["data"] == {"c": {
        "config.json": {"sha256": sha(b'{"scale": 1}'), "size": 12, "snapshot": True},
        "table.csv": {"sha256": sha(b"x\n" * 600), "size": 1200, "snapshot": False},
    }}
    kept = sha(b'{"scale": 1}')
    assert run.artifact_paths("pcs/data") == [f"pcs/data/{kept}"]
    # the small file is kept; only the large one keeps the run from being portable
    assert run.grade == "local"
    (reason,) = run.grade_reasons
    assert "(table.csv)" in reason and "config.json" not in reason

    # config.json edited: the recorded code reruns on the recorded config
    (folder / "config.json").write_text('{"scale": 2}')
    again = run.rerun(verify=True)
    assert again.verification.verdict == "reproduced"
    assert again.return_value == {"scale": 1, "rows": 600}

    # the current code reads today's config: the divergence names the file
    current = run.rerun(verify=True, code="current")
    assert current.verification.verdict == "diverged"
    old, new = sha(b'{"scale": 1}')[:4], sha(b'{"scale": 2}')[:4]
    assert current.verification.causes == [f"data: config.json changed (sha {old} \u2192 {new})"]

    # the large file, named when the grade was lowered, changed: named again as the cause
    (folder / "table.csv").write_text("x\n" * 601)
    changed = run.rerun(verify=True)
    assert changed.verification.verdict == "diverged"
    old, new = sha(b"x\n" * 600)[:4], sha(b"x\n" * 601)[:4]
    assert changed.verification.causes == [f"data: table.csv changed (sha {old} \u2192 {new})"]

    # gone: refused before any run is made, in one line
    (folder / "table.csv").unlink()
    before = len(run.reruns)
    with pytest.raises(NotReproducibleError) as caught:
        run.rerun()
    message = str(caught.value)
    assert "\n" not in message and "table.csv" in message and str(folder / "table.csv") in message
    assert len(run.reruns) == before


@linux_only
def test_cli_names_a_changed_config_and_refuses_a_missing_file_in_one_line(tmp_path):
    folder = tmp_path / "project"
    project_with_data(folder)
    env = {"PCS_DATA_SNAPSHOT_MAX_BYTES": "1000"}
    run_id = run_cli("run", "c", "-e", "go", "--seed", "1", cwd=folder, env=env).stdout.split()[-1]
    (folder / "config.json").write_text('{"scale": 3}')
    diverged = run_cli("rerun", run_id, "--verify", "--code", "current", cwd=folder, env=env,
                       check=False)
    assert diverged.returncode == 1, diverged.stderr
    old, new = sha(b'{"scale": 1}')[:4], sha(b'{"scale": 3}')[:4]
    assert f"data: config.json changed (sha {old} \u2192 {new})" in diverged.stdout

    (folder / "table.csv").unlink()
    missing = run_cli("rerun", run_id, "--verify", cwd=folder, env=env, check=False)
    assert missing.returncode == 4
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and "table.csv" in lines[0] and "Traceback" not in missing.stderr


def test_the_snapshot_limit_must_be_a_number(monkeypatch):
    from pcs.errors import ArgumentError
    from pcs.record.reads import snapshot_limit

    monkeypatch.setenv("PCS_DATA_SNAPSHOT_MAX_BYTES", "1 MiB")
    with pytest.raises(ArgumentError, match="PCS_DATA_SNAPSHOT_MAX_BYTES"):
        snapshot_limit()
    monkeypatch.setenv("PCS_DATA_SNAPSHOT_MAX_BYTES", "0")
    assert snapshot_limit() == 0
    monkeypatch.delenv("PCS_DATA_SNAPSHOT_MAX_BYTES")
    assert snapshot_limit() == 1024 * 1024
    assert os.environ.get("PCS_DATA_SNAPSHOT_MAX_BYTES") is None


RELATIVE_READER = """\
from pathlib import Path

HEADER = (Path(__file__).parent / "header.txt").read_text()  # read when the module loads


class C:
    def go(self):
        with open("rows.txt") as f:  # relative to the working folder, not to this file
            return HEADER + f.read()
"""


@linux_only
def test_a_rerun_of_recorded_code_sees_reads_relative_to_the_working_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "comp.py").write_text(RELATIVE_READER)
    (folder / "rows.txt").write_text("abc")
    (folder / "header.txt").write_text("# ")
    time.sleep(0.05)
    monkeypatch.chdir(folder)
    component = Component.from_repo(LocalRepo("here", folder), "c", "comp.py", "C", instantiate=True)
    run = Run.from_existing_run_id(component.run_with_arg_set("go", {}, seed=1).identifier)
    assert list(run._read_yaml("pcs/inputs.yaml")["data"]["c"]) == ["header.txt", "rows.txt"]

    same = run.rerun(verify=True)
    assert same.verification.verdict == "reproduced"
    assert same.verification.causes == []  # the rerun read the same file: no false cause
    (folder / "rows.txt").write_text("abcd")
    changed = run.rerun(verify=True)
    assert changed.verification.verdict == "diverged"
    assert [c.split(" (")[0] for c in changed.verification.causes] == ["data: rows.txt changed"]
    # read at load by the current code: an edited header is named too
    (folder / "header.txt").write_text("## ")
    current = run.rerun(verify=True, code="current")
    assert [c.split(" (")[0] for c in current.verification.causes] == [
        "data: header.txt changed", "data: rows.txt changed"]
