"""Caches under PCS_HOME: sizes, in-use locks held by real processes, safe cleaning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest

from pcs.cache import (
    CACHE_KINDS,
    clean,
    in_use,
    list_caches,
    parse_duration,
    remove,
    sweep_leftovers,
)
from pcs.errors import ArgumentError, CacheInUseError

REPO_ROOT = Path(__file__).resolve().parent.parent
DAY = 86400


@pytest.fixture
def home() -> Path:
    return Path(os.environ["PCS_HOME"])


@pytest.fixture(autouse=True)
def temp_dir(tmp_path, monkeypatch) -> Path:
    """A private system temp folder, so clean() never sweeps the machine's real one."""
    folder = tmp_path / "system_tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def make_entry(home: Path, kind: str, name: str, files: dict[str, int], age: float = 0) -> Path:
    """An entry folder holding files of the given sizes, last used ``age`` seconds ago."""
    entry = home / kind / name
    for relative, size in files.items():
        path = entry / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    entry.mkdir(parents=True, exist_ok=True)
    if age:
        when = time.time() - age
        os.utime(entry, (when, when))
    return entry


def age_path(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


_HOLDER = """
import sys
from pcs.cache import in_use
with in_use(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


def hold(path: Path) -> subprocess.Popen:
    """A real process that holds ``path`` in use until its stdin closes."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "held\n"
    return process


def release(process: subprocess.Popen) -> None:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    assert process.wait(timeout=30) == 0
    process.stdout.close()


# -- listing -------------------------------------------------------------------------------


def test_list_caches_reports_entries_and_sizes(home):
    make_entry(home, "venvs", "fp1", {"bin/python": 100, "lib/site/mod.py": 2000})
    make_entry(home, "venvs", "fp2", {"a": 7})
    make_entry(home, "git", "abc", {"HEAD": 50, "objects/pack/p.pack": 4096})
    summaries = {summary.kind: summary for summary in list_caches()}
    assert list(summaries) == list(CACHE_KINDS)
    venvs = summaries["venvs"]
    assert venvs.path == home / "venvs"
    assert [(e.name, e.size_bytes, e.in_use) for e in venvs.entries] == [
        ("fp1", 2100, False), ("fp2", 7, False)
    ]
    assert venvs.size_bytes == 2107
    assert summaries["git"].size_bytes == 4146
    assert summaries["web_registry"].entries == [] and summaries["web_registry"].size_bytes == 0
    # listing creates nothing: no folders for empty caches, no lock files
    assert not (home / "web_registry").exists()
    assert sorted(os.listdir(home / "venvs")) == ["fp1", "fp2"]
    json.dumps([summary.to_dict() for summary in list_caches()])


def test_list_caches_tolerates_odd_files(home):
    home.mkdir(parents=True)
    (home / "exports").write_text("a file where a folder belongs")
    sources = home / "sources"
    make_entry(home, "sources", "snap", {"a.py": 10})
    (sources / "README").write_text("stray")  # 5 bytes
    os.symlink(home / "elsewhere", sources / "dangling")
    (sources / ".snap2.deleting-1-abc").mkdir()
    (sources / ".snap2.deleting-1-abc" / "f").write_bytes(b"y" * 30)
    summaries = {summary.kind: summary for summary in list_caches()}
    assert summaries["exports"].entries == []
    assert [entry.name for entry in summaries["sources"].entries] == ["snap"]
    assert summaries["sources"].size_bytes == 10
    assert summaries["sources"].other_bytes == 35


def test_last_used_is_the_newest_of_entry_and_lock_file(home):
    entry = make_entry(home, "venvs", "fp", {"a": 1}, age=10 * DAY)
    lock = home / "venvs" / "fp.lock"
    lock.touch()
    age_path(lock, 3 * DAY)
    (listed,) = list_caches(["venvs"])[0].entries
    assert abs(time.time() - listed.last_used.timestamp() - 3 * DAY) < 5
    with in_use(entry):
        pass
    (listed,) = list_caches(["venvs"])[0].entries
    assert time.time() - listed.last_used.timestamp() < 5  # taking it touched the lock file


def test_unknown_cache_is_refused():
    with pytest.raises(ArgumentError, match="venvs"):
        list_caches(["nope"])
    with pytest.raises(ArgumentError, match="The caches are"):
        clean(kinds=["venv"])
    with pytest.raises(ArgumentError, match="negative"):
        clean(older_than=timedelta(seconds=-1))


# -- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [("30s", 30), ("30m", 1800), ("2h", 7200), ("1d", DAY), ("1w", 7 * DAY), (" 1.5H ", 5400),
     ("0s", 0)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "d", "-1d", "1y", "1d2h", "one day"])
def test_parse_duration_refuses_other_forms(text):
    with pytest.raises(ArgumentError) as info:
        parse_duration(text)
    assert "'30m', '2h', '7d'" in str(info.value) and repr(text) in str(info.value)


def test_parse_duration_refuses_durations_too_long_to_count():
    with pytest.raises(ArgumentError, match="too long"):
        parse_duration("99999999999999w")


# -- cleaning ----------------------------------------------------------------------------------


def test_clean_skips_an_entry_another_process_uses_then_removes_it(home):
    busy = make_entry(home, "venvs", "busy", {"bin/python": 300})
    idle = make_entry(home, "venvs", "idle", {"bin/python": 200})
    holder = hold(busy)
    try:
        (listed_busy, listed_idle) = list_caches(["venvs"])[0].entries
        assert listed_busy.in_use and not listed_idle.in_use
        result = clean()
        assert [entry.path for entry in result.skipped_in_use] == [busy]
        assert [entry.path for entry in result.removed] == [idle]
        assert result.freed_bytes == 200
        assert (busy / "bin" / "python").read_bytes() == b"x" * 300  # untouched
        assert not idle.exists() and not (home / "venvs" / "idle.lock").exists()
        with pytest.raises(CacheInUseError, match="uses it"):
            remove(busy)
    finally:
        release(holder)
    result = clean()
    assert [entry.path for entry in result.removed] == [busy]
    assert result.skipped_in_use == [] and result.freed_bytes == 300
    assert os.listdir(home / "venvs") == []  # no lock file, no .deleting leftover


def test_clean_older_than_removes_only_entries_unused_that_long(home):
    old = make_entry(home, "git", "old", {"HEAD": 11}, age=10 * DAY)
    recent = make_entry(home, "git", "recent", {"HEAD": 13}, age=3600)
    used = make_entry(home, "git", "used", {"HEAD": 17}, age=10 * DAY)
    (home / "git" / "used.lock").touch()  # its user took it a moment ago
    result = clean(older_than=parse_duration("2d"))
    assert [entry.path for entry in result.removed] == [old]
    assert result.freed_bytes == 11
    assert recent.exists() and used.exists() and not old.exists()
    # the lock file the cleaner made for "recent" did not make it look used now
    (listed_recent, _) = list_caches(["git"])[0].entries
    assert time.time() - listed_recent.last_used.timestamp() > 3000
    result = clean(older_than=parse_duration("30m"))
    assert [entry.path for entry in result.removed] == [recent]


def test_dry_run_removes_nothing(home):
    make_entry(home, "venvs", "a", {"x": 1000})
    make_entry(home, "web_registry", "b", {"run/y": 24})
    leftover = home / "venvs" / f".c.deleting-{dead_pid()}-0abc"
    leftover.mkdir()
    (leftover / "z").write_bytes(b"z" * 5)
    age_path(leftover, 60)
    before = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    result = clean(dry_run=True)
    assert result.dry_run
    assert sorted(entry.name for entry in result.removed) == ["a", "b"]
    assert result.leftovers == [leftover]
    assert result.freed_bytes == 1029
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == before  # not even locks
    json.dumps(result.to_dict())


def test_clean_sweeps_leftovers_of_dead_processes_only(home):
    gone = dead_pid()
    root = home / "venvs"
    make_entry(home, "venvs", "keep", {"a": 1})
    leftovers = [
        root / f".fp.deleting-{gone}-1a2b",   # an interrupted removal
        root / f"pcs-{gone}-build-x1y2",      # a temp folder of a dead process
        root / f".fp.pcs-{gone}-copy-9f9f",   # a temp file next to a target
    ]
    leftovers[0].mkdir()
    (leftovers[0] / "f").write_bytes(b"1" * 8)
    leftovers[1].mkdir()
    leftovers[2].write_bytes(b"2" * 4)
    kept = [
        root / f"pcs-{os.getpid()}-build-live",  # its process is alive
        root / ".fp.abc123",                     # not pid-marked: not ours to judge
        root / f".orphan.deleting-{os.getpid()}-0000",  # ours, but swept only when old enough
    ]
    kept[0].mkdir()
    kept[1].mkdir()
    for path in [*leftovers, *kept[:2]]:
        age_path(path, 60)
    kept[2].mkdir()
    result = clean(kinds=["venvs"], older_than=parse_duration("1d"))
    assert sorted(result.leftovers) == sorted(leftovers)
    assert result.freed_bytes == 12 and result.removed == []
    assert all(not os.path.lexists(path) for path in leftovers)
    assert all(path.exists() for path in kept) and (root / "keep").exists()
    assert sweep_leftovers(root) == []


def test_clean_of_every_cache_sweeps_dead_temp_files_from_the_temp_folder(temp_dir):
    gone = dead_pid()
    dead = temp_dir / f"pcs-{gone}-import-abcd"
    dead.mkdir()
    alive = temp_dir / f"pcs-{os.getpid()}-import-efgh"
    alive.mkdir()
    unrelated = temp_dir / f"other-{gone}-x"
    unrelated.mkdir()
    for path in (dead, alive, unrelated):
        age_path(path, 60)
    assert clean(kinds=["venvs"]).leftovers == []  # only a full clean looks there
    assert clean().leftovers == [dead]
    assert not dead.exists() and alive.exists() and unrelated.exists()


def test_clean_removes_orphan_lock_files_nobody_holds(home):
    root = home / "sources"
    root.mkdir(parents=True)
    (root / "gone.lock").touch()
    result = clean(kinds=["sources"])
    assert result.removed == [] and os.listdir(root) == []


def test_in_use_inside_an_entry_holds_the_whole_entry(home):
    server = make_entry(home, "web_registry", "a1b2", {"run1/model.bin": 64})
    with in_use(server / "run1") as entry:
        assert entry == server
        assert (home / "web_registry" / "a1b2.lock").exists()
        result = clean()
        assert [e.path for e in result.skipped_in_use] == [server]
    assert remove(server) is True
    assert remove(server) is False
    assert os.listdir(home / "web_registry") == []


_WORKER = """
import os, sys, time
from pathlib import Path
from pcs.cache import in_use
entry, deadline, used = Path(sys.argv[1]), time.time() + float(sys.argv[2]), 0
while time.time() < deadline:
    with in_use(entry):
        entry.mkdir(exist_ok=True)
        inode = entry.stat().st_ino
        mine = entry / f"data-{os.getpid()}"
        mine.write_text("ok")
        time.sleep(0.003)
        if entry.stat().st_ino != inode or mine.read_text() != "ok":
            sys.exit("the entry changed while held")
    used += 1
print(used)
"""


def test_holders_never_lose_an_entry_to_a_concurrent_cleaner(home):
    entry = home / "venvs" / "shared"
    entry.parent.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(entry), "1.5"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    removed = skipped = 0
    while any(worker.poll() is None for worker in workers):
        result = clean(kinds=["venvs"])
        removed += len(result.removed)
        skipped += len(result.skipped_in_use)
        time.sleep(0.001)
    for worker in workers:
        out, err = worker.communicate()
        assert worker.returncode == 0, err
        assert int(out) > 10
    assert removed > 0 and skipped > 0  # both races happened
    assert [p.name for p in (home / "venvs").iterdir() if ".deleting-" in p.name] == []
