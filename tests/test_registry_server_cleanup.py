"""No temporary file outlives a failed, cancelled or killed transfer, on the server or the client.

Servers here are real processes stopped with real signals: SIGTERM must
remove every temp of the requests it cut short, and after a SIGKILL the next
start must sweep what the killed process left. A pull killed while unpacking
leaves its staging folder in ``$PCS_HOME/web_registry``; the next download
sweeps it.
"""

from __future__ import annotations

import fcntl
import functools
import http.server
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from _registry_server import TOKEN, shared_registry_server, start_registry_server, stop_process
from conftest import REPO_ROOT

from pcs._archive import make_tar_gz, sweep_stale_temp, temp_name, temp_name_pid
from pcs.errors import BundleError, CacheInUseError
from pcs.web_registry import WebRegistry

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/gzip"}


@pytest.fixture(scope="module")
def many_files_archive(tmp_path_factory) -> bytes:
    """A small .tar.gz of 2000 files: slow enough to unpack to catch it half-way."""
    root = tmp_path_factory.mktemp("many_files")
    for i in range(2000):
        (root / f"f{i:04d}.txt").write_bytes(b"x" * 100)
    return make_tar_gz(root)


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if temp_name_pid(p.name) is not None)


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.002):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"nothing matched within {timeout}s")


class SlowUpload:
    """An artifact upload that keeps sending 256 KiB chunks until stopped (in a thread)."""

    def __init__(self, url: str, run_id: str) -> None:
        self.stop = threading.Event()
        self.result: requests.Response | Exception | None = None
        self._thread = threading.Thread(target=self._send, args=(url, run_id), daemon=True)
        self._thread.start()

    def _chunks(self) -> Iterator[bytes]:
        while not self.stop.is_set():
            yield os.urandom(256 * 1024)
            time.sleep(0.02)

    def _send(self, url: str, run_id: str) -> None:
        try:
            self.result = requests.put(f"{url}/api/v1/runs/{run_id}/artifacts",
                                       data=self._chunks(), headers=AUTH, timeout=60)
        except requests.RequestException as exc:
            self.result = exc

    def finish(self) -> requests.Response | Exception | None:
        self.stop.set()
        self._thread.join(30)
        return self.result


class RepeatedUpload:
    """Uploads one archive again and again (in a thread), so a moment of unpacking can be caught."""

    def __init__(self, url: str, run_id: str, data: bytes) -> None:
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._send, args=(url, run_id, data), daemon=True)
        self._thread.start()

    def _send(self, url: str, run_id: str, data: bytes) -> None:
        while not self.stop.is_set():
            try:
                requests.put(f"{url}/api/v1/runs/{run_id}/artifacts", data=data, headers=AUTH,
                             timeout=60)
            except requests.RequestException:
                return

    def finish(self) -> None:
        self.stop.set()
        self._thread.join(30)


def unpacking(artifacts: Path, run_id: str) -> list[Path]:
    return [p for p in artifacts.glob(f".{run_id}.pcs-*-extract-*") if p.is_dir()]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- the server -------------------------------------------------------------------------------


def test_sigkilled_server_leaves_temps_that_the_next_start_sweeps(tmp_path, many_files_archive):
    folder = tmp_path / "server"
    artifacts = folder / "artifacts"
    alive = artifacts / temp_name("upload")
    url, process = start_registry_server(folder)
    try:
        # killed in the middle of a large upload: its spool file stays behind
        upload = SlowUpload(url, "bigrun")
        wait_for(lambda: [p for p in artifacts.glob(".pcs-*-upload-*") if p.stat().st_size > 1 << 20])
        process.kill()
        process.wait()
        upload.finish()
        assert [temp_name_pid(name) for name in temps(artifacts)] == [process.pid]

        # restarted, then killed while unpacking: its staging folder stays behind
        url, process = start_registry_server(folder)
        assert temps(artifacts) == []
        assert not (artifacts / "bigrun").exists()
        uploads = RepeatedUpload(url, "manyrun", many_files_archive)
        wait_for(lambda: unpacking(artifacts, "manyrun"))
        process.kill()
        process.wait()
        uploads.finish()
        assert unpacking(artifacts, "manyrun")

        # a temp of a live process (this one) is not the server's to sweep
        alive.write_bytes(b"in use")
        stale = artifacts / f".pcs-{dead_pid()}-upload-{uuid.uuid4().hex}"
        stale.write_bytes(b"left behind")

        url, process = start_registry_server(folder)
        assert temps(artifacts) == [alive.name]
        swept = re.findall(r"removed (\d+) temporary file\(s\) left by a server that was killed",
                           (folder / "server.log").read_text())
        assert len(swept) == 2 and int(swept[1]) >= 2  # each restart swept (staging + stale)
        # the server works on: the run's artifacts can be uploaded again
        assert requests.put(f"{url}/api/v1/runs/manyrun/artifacts", data=many_files_archive,
                            headers=AUTH, timeout=60).status_code == 201
        assert len(list((artifacts / "manyrun").iterdir())) == 2000
    finally:
        stop_process(process)
        alive.unlink(missing_ok=True)
    assert temps(artifacts) == []


def test_sigterm_cuts_a_running_upload_short_and_removes_its_spool(tmp_path):
    folder = tmp_path / "server"
    artifacts = folder / "artifacts"
    url, process = start_registry_server(folder, extra_args=["--shutdown-timeout", "1"])
    try:
        upload = SlowUpload(url, "bigrun")
        wait_for(lambda: [p for p in artifacts.glob(".pcs-*-upload-*") if p.stat().st_size > 1 << 20])
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        stopped_after = time.monotonic() - started
        answer = upload.finish()
    finally:
        stop_process(process)

    assert stopped_after < 10  # 1 s of grace, then the upload gives up
    assert temps(artifacts) == []
    assert not (artifacts / "bigrun").exists()
    if isinstance(answer, requests.Response):  # it may also have seen the connection close
        assert answer.status_code == 503
        assert answer.json()["error"] == "RegistryServerError"
    log = (folder / "server.log").read_text()
    assert "Traceback" not in log


def test_sigterm_while_unpacking_removes_the_staging_folder(tmp_path, many_files_archive):
    folder = tmp_path / "server"
    artifacts = folder / "artifacts"
    url, process = start_registry_server(folder, extra_args=["--shutdown-timeout", "0"])
    try:
        uploads = RepeatedUpload(url, "manyrun", many_files_archive)
        wait_for(lambda: unpacking(artifacts, "manyrun"))
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        uploads.finish()
    finally:
        stop_process(process)

    assert temps(artifacts) == []
    # the run folder is the last complete upload, if any: never a half-unpacked one
    run = artifacts / "manyrun"
    assert not run.exists() or len(list(run.iterdir())) == 2000


# -- the client -------------------------------------------------------------------------------

PULL_AND_DIE = """
import os, signal, sys, threading, time
from pathlib import Path
from pcs.web_registry import WebRegistry

cache = Path(os.environ["PCS_HOME"]) / "web_registry"

def kill_when_unpacking():
    while True:
        if cache.is_dir() and any("-extract-" in p.name for p in cache.iterdir()):
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.001)

threading.Thread(target=kill_when_unpacking, daemon=True).start()
WebRegistry(sys.argv[1]).run_artifacts_dir(sys.argv[2])
print("finished unpacking before the kill")
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> tuple[str, Path]:
    return shared_registry_server(tmp_path_factory)


def test_a_killed_pull_leaves_a_staging_folder_that_the_next_download_sweeps(
        server, tmp_path, many_files_archive):
    url, _ = server
    run_id = uuid.uuid4().hex
    assert requests.put(f"{url}/api/v1/runs/{run_id}/artifacts", data=many_files_archive,
                        headers=AUTH, timeout=60).status_code == 201
    cache = Path(os.environ["PCS_HOME"]) / "web_registry"
    script = tmp_path / "pull_and_die.py"
    script.write_text(textwrap.dedent(PULL_AND_DIE))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    for _ in range(5):  # the pull may, rarely, finish unpacking before its own watcher sees it
        pull = subprocess.Popen([sys.executable, str(script), url, run_id], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, stderr = pull.communicate(timeout=120)
        if pull.returncode == -signal.SIGKILL:
            break
    assert pull.returncode == -signal.SIGKILL, stderr
    left = temps(cache)
    assert left and {temp_name_pid(name) for name in left} == {pull.pid}

    folder = WebRegistry(url).run_artifacts_dir(run_id)

    assert folder is not None and len(list(folder.iterdir())) == 2000
    assert temps(cache) == []


def test_the_cache_entry_is_locked_in_use_while_it_is_written(server, tmp_path):
    url, _ = server
    run_id = uuid.uuid4().hex
    source = tmp_path / "run"
    source.mkdir()
    (source / "a.txt").write_text("a")
    registry = WebRegistry(url, token=TOKEN)
    registry.add_run_artifacts(run_id, source)
    entry = registry.run_artifacts_dir(run_id)
    assert entry is not None and entry.parent.name == "web_registry"
    lock = entry.with_name(f"{entry.name}.lock")
    assert lock.is_file()

    done = threading.Event()
    with open(lock, "a") as cleaner:  # a cache cleaner holds the entry: writing it must wait
        fcntl.flock(cleaner, fcntl.LOCK_EX)
        thread = threading.Thread(target=lambda: (registry.run_artifacts_dir(run_id), done.set()))
        thread.start()
        assert not done.wait(1.0)
        fcntl.flock(cleaner, fcntl.LOCK_UN)
    assert done.wait(30)
    thread.join()
    assert (entry / "a.txt").read_text() == "a"


def test_a_failed_download_leaves_nothing_in_the_cache(tmp_path):
    """A server (here a plain file server) sending a truncated archive: BundleError, no temps."""
    data = make_tar_gz(_folder_with_files(tmp_path / "run", 50))
    run_id = uuid.uuid4().hex
    served = tmp_path / "served" / "api" / "v1" / "runs" / run_id
    served.mkdir(parents=True)
    (served / "artifacts").write_bytes(data[: len(data) // 2])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(tmp_path / "served"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        registry = WebRegistry(f"http://127.0.0.1:{httpd.server_address[1]}")
        with pytest.raises(BundleError, match="truncated"):
            registry.run_artifacts_dir(run_id)
    finally:
        httpd.shutdown()
        httpd.server_close()
    cache = Path(os.environ["PCS_HOME"]) / "web_registry"
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == []


def test_clear_cache_skips_entries_in_use(server, tmp_path):
    url, _ = server
    registry = WebRegistry(url, token=TOKEN)
    entries = []
    for _ in range(2):
        run_id = uuid.uuid4().hex
        registry.add_run_artifacts(run_id, _folder_with_files(tmp_path / run_id, 1))
        entries.append(registry.run_artifacts_dir(run_id))
    busy, free = entries
    with open(busy.with_name(f"{busy.name}.lock"), "a") as user:
        fcntl.flock(user, fcntl.LOCK_SH)
        with pytest.raises(CacheInUseError, match="another pcs process is using"):
            registry.clear_cache()
    assert busy.is_dir() and not free.exists()
    registry.clear_cache()
    assert not busy.exists()
    assert not [p for p in busy.parent.iterdir() if ".deleting-" in p.name]


# -- the temp helpers themselves --------------------------------------------------------------


def test_temp_names_carry_the_pid_and_only_dead_pids_are_swept(tmp_path):
    folder = tmp_path / "sweep"
    folder.mkdir()
    mine = temp_name("upload")
    next_to = temp_name("extract", "abc123")
    assert mine.startswith(f".pcs-{os.getpid()}-upload-")
    assert next_to.startswith(f".abc123.pcs-{os.getpid()}-extract-")
    assert temp_name_pid(mine) == temp_name_pid(next_to) == os.getpid()
    for name in ("abc123", "pcs-12-upload-abcdef12", ".lock", "x.lock", ".abc.deleting-12"):
        assert temp_name_pid(name) is None  # run folders, cache entries, locks: never swept
    assert len(temp_name("extract", "x" * 300)) < 255

    gone = dead_pid()
    for name in (mine, next_to, f".pcs-{gone}-upload-{uuid.uuid4().hex}",
                 f".run.pcs-{gone}-extract-{uuid.uuid4().hex}", "pcs-1-upload-abcdef12", "run"):
        (folder / name).mkdir()
    (folder / f".run.pcs-{gone}-extract-{uuid.uuid4().hex}" / "half").mkdir(parents=True)

    removed = sweep_stale_temp(folder)

    assert len(removed) == 3
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [mine, next_to, "pcs-1-upload-abcdef12", "run"])
    assert len(sweep_stale_temp(folder, include_own=True)) == 2
    assert sweep_stale_temp(folder / "missing") == []

    # in the system temp folder names need no dot; tempfile's own suffixes count as random
    assert temp_name("import", hidden=False).startswith(f"pcs-{os.getpid()}-import-")
    plain = tempfile.mkdtemp(prefix=f"pcs-{gone}-import-", dir=folder)
    assert temp_name_pid(Path(plain).name) is None
    assert temp_name_pid(Path(plain).name, hidden_only=False) == gone
    assert sweep_stale_temp(folder, hidden_only=False) == [Path(plain)]
    assert sorted(p.name for p in folder.iterdir()) == ["pcs-1-upload-abcdef12", "run"]  # pid 1 lives


def _folder_with_files(root: Path, count: int) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"f{i}.txt").write_text(str(i))
    return root
