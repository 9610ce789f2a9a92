"""Progress: byte counts reach the callback, and rich bars go to stderr only."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pcs._archive import safe_extract_tar, write_tar_gz
from pcs.progress import (
    CountingReader,
    CountingWriter,
    Reporter,
    copy_file,
    iter_counted,
    reporter,
    rich_progress,
    tree_bytes,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


class Calls:
    """A progress callback that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int | None]] = []

    def __call__(self, description: str, done: int, total: int | None) -> None:
        self.calls.append((description, done, total))

    @property
    def dones(self) -> list[int]:
        return [done for _, done, _ in self.calls]


def assert_monotonic_to(calls: Calls, total: int) -> None:
    dones = calls.dones
    assert dones == sorted(dones), dones
    states = [(done, total) for _, done, total in calls.calls]
    assert all(a != b for a, b in zip(states[:-1], states[1:], strict=True)), "the same state was sent twice"
    assert dones[-1] == total
    assert calls.calls[-1][2] == total


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 123))
    return path


# -- reporter and copying ----------------------------------------------------------------


def test_copy_file_reports_monotonic_bytes_ending_at_the_total(data_file, tmp_path):
    calls = Calls()
    dst = tmp_path / "out" / "copy.bin"
    dst.parent.mkdir()
    rep = Reporter(calls, "copying", min_interval=0)
    copied = copy_file(data_file, dst, rep, chunk_size=256 * 1024)
    size = data_file.stat().st_size
    assert copied == size
    assert dst.read_bytes() == data_file.read_bytes()
    assert_monotonic_to(calls, size)
    assert calls.calls[0][1] == 0 and len(calls.calls) >= 10  # starts at 0, one call per chunk
    assert {total for _, _, total in calls.calls} == {size}
    assert os.listdir(dst.parent) == ["copy.bin"]  # no temp file left


def test_reporter_throttles_but_always_sends_the_end(data_file, tmp_path):
    calls = Calls()
    with reporter(calls, "copying") as rep:
        copy_file(data_file, tmp_path / "copy.bin", rep, chunk_size=4096)
    # 770 chunks in well under the throttle's interval: few calls, ending at the total
    assert len(calls.calls) < 100
    assert_monotonic_to(calls, data_file.stat().st_size)


def test_copy_file_that_fails_leaves_nothing(data_file, tmp_path):
    def broken(description: str, done: int, total: int | None) -> None:
        if done > 1024 * 1024:
            raise KeyboardInterrupt

    dst = tmp_path / "out"
    dst.mkdir()
    with pytest.raises(KeyboardInterrupt):
        copy_file(data_file, dst / "copy.bin", Reporter(broken, "copying", min_interval=0),
                  chunk_size=65536)
    assert os.listdir(dst) == []


def test_reporter_keeps_counts_monotonic_and_grows_the_total():
    calls = Calls()
    rep = Reporter(calls, "work", total=10, min_interval=0)
    rep.update(4)
    rep.update(2)  # going back is ignored
    rep.advance(-3)
    rep.advance(3)
    rep.advance(5)  # past the announced total
    rep.finish()
    assert calls.calls == [("work", 4, 10), ("work", 7, 10), ("work", 12, 12)]


def test_reporter_without_callback_does_nothing():
    rep = reporter(None, "nothing", total=5, unit="steps")
    with rep:
        rep.advance(3)
    assert rep.done == 3


def test_tree_bytes_counts_files_once_and_ignores_links(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one").write_bytes(b"x" * 100)
    (tmp_path / "a" / "b" / "two").write_bytes(b"y" * 2000)
    os.link(tmp_path / "a" / "one", tmp_path / "a" / "b" / "hard")
    os.symlink(tmp_path / "a" / "b" / "two", tmp_path / "a" / "soft")
    assert tree_bytes(tmp_path / "a") == 2100
    assert tree_bytes(tmp_path / "a" / "one") == 100
    assert tree_bytes(tmp_path / "missing") == 0


def test_counting_through_tar_writing_and_reading(tmp_path):
    folder = tmp_path / "artifacts"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.bin").write_bytes(os.urandom(200_000))
    (folder / "sub" / "notes.txt").write_text("hello\n" * 1000)
    archive = tmp_path / "a.tar.gz"

    written = Calls()
    with open(archive, "wb") as raw, reporter(written, "packing") as rep:
        write_tar_gz(folder, CountingWriter(raw, rep))
    # the archive's size is unknown while writing: counts grow, total stays None
    assert written.dones == sorted(written.dones)
    assert written.calls[-1] == ("packing", archive.stat().st_size, None)

    read = Calls()
    with open(archive, "rb") as raw, reporter(read, "unpacking", archive.stat().st_size) as rep:
        safe_extract_tar(CountingReader(raw, rep), tmp_path / "restored")
    assert_monotonic_to(read, archive.stat().st_size)
    assert (tmp_path / "restored" / "model.bin").read_bytes() == (folder / "model.bin").read_bytes()


# -- HTTP ---------------------------------------------------------------------------------


class _Store(BaseHTTPRequestHandler):
    body = b""
    headers_seen: dict[str, str] = {}

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        type(self).headers_seen = dict(self.headers)
        length = int(self.headers.get("Content-Length", "0"))
        type(self).body = self.rfile.read(length)
        self.send_response(204)
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_store():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Store)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_upload_and_download_report_bytes(http_store, data_file):
    import requests

    size = data_file.stat().st_size
    up = Calls()
    with open(data_file, "rb") as fh, reporter(up, "uploading", size) as rep:
        response = requests.put(f"{http_store}/blob", data=CountingReader(fh, rep), timeout=30)
    assert response.status_code == 204
    assert _Store.body == data_file.read_bytes()
    # requests still saw the length through the wrapper: no chunked upload
    assert _Store.headers_seen.get("Content-Length") == str(size)
    assert "Transfer-Encoding" not in _Store.headers_seen
    assert_monotonic_to(up, size)

    down = Calls()
    with requests.get(f"{http_store}/blob", stream=True, timeout=30) as response:
        total = int(response.headers["Content-Length"])
        with reporter(down, "downloading", total) as rep:
            received = b"".join(iter_counted(response.iter_content(65536), rep))
    assert received == data_file.read_bytes()
    assert_monotonic_to(down, size)


# -- rich bars -------------------------------------------------------------------------------

_CHILD = """
import sys
from pcs.progress import copy_file, reporter, rich_progress
enabled = {"auto": None, "force": True, "off": False}[sys.argv[1]]
with rich_progress(enabled) as progress:
    print('{"ok": true}', flush=True)
    with reporter(progress, "copying data") as rep:
        copy_file(sys.argv[2], sys.argv[3], rep, chunk_size=65536)
    with reporter(progress, "building env", total=3, unit="steps") as rep:
        for _ in range(3):
            rep.advance(1)
print("done", flush=True)
"""


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"}}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["TERM"] = "xterm-256color"
    return env


def test_rich_bar_draws_on_a_terminal_stderr_and_never_on_stdout(data_file, tmp_path):
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD, "auto", str(data_file), str(tmp_path / "copy.bin")],
        stdout=subprocess.PIPE, stderr=secondary, stdin=subprocess.DEVNULL, env=_child_env(),
    )
    os.close(secondary)
    drawn = b""
    deadline = time.time() + 60
    while time.time() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            drawn += chunk
        elif process.poll() is not None:
            break
    os.close(primary)
    stdout = process.stdout.read().decode()  # type: ignore[union-attr]
    process.stdout.close()  # type: ignore[union-attr]
    assert process.wait(timeout=30) == 0, drawn.decode(errors="replace")
    text = drawn.decode(errors="replace")
    assert "copying data" in text and "building env" in text
    assert "3.1 MB" in text  # sizes by bytes
    assert "3/3 steps" in text
    assert "\x1b[" in text  # drawn with terminal control codes
    assert stdout == '{"ok": true}\ndone\n'


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_rich_bar_draws_nothing_when_stderr_is_not_a_terminal(mode, data_file, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(data_file), str(tmp_path / "copy.bin")],
        capture_output=True, text=True, env=_child_env(), timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == '{"ok": true}\ndone\n'


def test_forced_rich_bar_draws_when_stderr_is_not_a_terminal(data_file, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, "force", str(data_file), str(tmp_path / "copy.bin")],
        capture_output=True, text=True, env=_child_env(), timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "copying data" in result.stderr and "3/3 steps" in result.stderr
    assert result.stdout == '{"ok": true}\ndone\n'


def test_rich_callback_keeps_one_bar_per_description(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with rich_progress(enabled=True) as progress:
        for i in range(6):
            progress(f"file {i}", 10, 10)
        progress("pulling", 5, None)
        progress("pulling", 2, None)  # a new operation under the same description
        bars = progress._progress  # type: ignore[attr-defined]
        descriptions = [task.description for task in bars.tasks]
    # finished bars beyond the last three are dropped; "pulling" restarted at 2
    assert descriptions == ["file 3", "file 4", "file 5", "pulling"]
    assert bars.tasks[-1].completed == 2
    assert "pulling" in stream.getvalue()
