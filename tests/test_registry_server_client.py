"""WebRegistry against real servers: credentials in URLs, timeouts, progress, hostile answers."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from _registry_server import TOKEN, shared_registry_server
from conftest import free_port

from pcs.errors import BundleError, RegistryError, RegistryServerError
from pcs.web_registry import DEFAULT_CONNECT_TIMEOUT, WebRegistry, redact_url

PASSWORD = "pa55-w0rd-never-shown"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> tuple[str, Path]:
    return shared_registry_server(tmp_path_factory)


@pytest.fixture
def url(server) -> str:
    return server[0]


def with_credentials(url: str, user: str = "alice") -> str:
    return url.replace("http://", f"http://{user}:{PASSWORD}@")


def files_under(root: Path) -> str:
    return "\n".join(str(p) for p in root.rglob("*"))


# -- credentials in the URL ---------------------------------------------------------------------


def test_redact_url():
    assert redact_url("https://u:p@host:8/x") == "https://***@host:8/x"
    assert redact_url("https://token@host") == "https://***@host"
    assert redact_url("http://127.0.0.1:8765") == "http://127.0.0.1:8765"
    assert redact_url("http://u:p@[::1") == "http://***@[::1"  # unparsable, still redacted


def test_credentials_in_the_url_are_used_but_never_shown(url, tmp_path):
    registry = WebRegistry(with_credentials(url), token=TOKEN)
    redacted = url.replace("http://", "http://***@")

    assert registry.url == redacted
    assert PASSWORD not in repr(registry) and "alice" not in repr(registry)
    # reads and writes work: the bearer token wins over the URL's basic credentials
    identifier = f"agent-{uuid.uuid4().hex[:8]}"
    registry.add_component_spec({"identifier": identifier})
    assert identifier in registry.identifiers("components")

    run_id = uuid.uuid4().hex
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "a.txt").write_text("a")
    registry.add_run_artifacts(run_id, tmp_path / "run")
    folder = registry.run_artifacts_dir(run_id)
    assert folder is not None and PASSWORD not in str(folder)
    assert folder.name == f"{hashlib.sha256(redacted.encode()).hexdigest()[:16]}-{run_id}"
    # other credentials for the same server share the cache entry
    assert WebRegistry(with_credentials(url, "bob")).run_artifacts_dir(run_id) == folder
    assert PASSWORD not in files_under(Path(os.environ["PCS_HOME"]))


@pytest.mark.parametrize("case", ["not_the_api", "unreachable", "bad_port", "query"])
def test_errors_never_show_the_credentials(url, case):
    target = {
        "not_the_api": with_credentials(url) + "/not-the-api",
        "unreachable": with_credentials(f"http://127.0.0.1:{free_port()}"),
        "bad_port": f"http://alice:{PASSWORD}@127.0.0.1:99999",
        "query": with_credentials(url) + f"?key={PASSWORD}",
    }[case]
    with pytest.raises(RegistryError) as caught:
        WebRegistry(target).has_spec("components", "agent")
    message = str(caught.value)
    assert PASSWORD not in message and "alice" not in message
    assert "***@" in message


# -- timeouts -----------------------------------------------------------------------------------


@pytest.fixture
def unaccepting_port() -> Iterator[int]:
    """A port whose listen queue is full: connecting hangs, as to a host that drops packets."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    time.sleep(0.1)
    yield port
    for s in [*fillers, listener]:
        s.close()


def test_an_unreachable_server_fails_fast_on_the_connect_timeout(unaccepting_port):
    registry = WebRegistry(f"http://127.0.0.1:{unaccepting_port}", connect_timeout=0.5)
    assert registry.timeout == 300.0  # waiting for an answer is another matter
    started = time.monotonic()
    with pytest.raises(RegistryServerError, match=r"no connection within 0.5s"):
        registry.identifiers("components")
    assert time.monotonic() - started < 5
    assert WebRegistry("http://127.0.0.1:1").connect_timeout == DEFAULT_CONNECT_TIMEOUT == 10.0


def test_a_silent_server_fails_on_the_read_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True)
    accepting.start()
    try:
        registry = WebRegistry(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5)
        with pytest.raises(RegistryServerError, match=r"did not answer .* within 0.5s"):
            registry.identifiers("components")
    finally:
        accepting.join(5)
        for s in [*held, listener]:
            s.close()


# -- progress -----------------------------------------------------------------------------------


def test_upload_and_download_report_progress(url, tmp_path):
    source = tmp_path / "run"
    source.mkdir()
    (source / "blob.bin").write_bytes(os.urandom(1_500_000))  # incompressible: several steps
    run_id = uuid.uuid4().hex
    registry = WebRegistry(url, token=TOKEN)
    sent: list[tuple[str, int, int | None]] = []
    received: list[tuple[str, int, int | None]] = []

    registry.add_run_artifacts(run_id, source, progress=lambda *call: sent.append(call))
    folder = registry.run_artifacts_dir(run_id, progress=lambda *call: received.append(call))

    assert folder is not None and (folder / "blob.bin").stat().st_size == 1_500_000
    for calls, verb in ((sent, "uploading"), (received, "downloading")):
        assert len(calls) >= 4
        assert {description for description, _, _ in calls} == {f"{verb} artifacts of run {run_id}"}
        done = [d for _, d, _ in calls]
        assert done[0] == 0 and done == sorted(done)
        total = calls[-1][2]
        assert total is not None and total > 1_500_000
        assert {t for _, _, t in calls} == {total}
        assert done[-1] == total


# -- hostile answers ----------------------------------------------------------------------------


def test_json_nested_too_deep_in_an_answer_is_a_bundle_error(tmp_path):
    """A server (here a plain file server) answering a spec read with 100k-deep JSON."""
    (tmp_path / "api" / "v1" / "components").mkdir(parents=True)
    (tmp_path / "api" / "v1" / "components" / "agent").write_text("[" * 100_000 + "]" * 100_000)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        registry = WebRegistry(f"http://127.0.0.1:{httpd.server_address[1]}")
        with pytest.raises(BundleError, match="nested too deep"):
            registry.get_component_spec("agent")
    finally:
        httpd.shutdown()
        httpd.server_close()
