"""Issue 21.8: the registry server survives clients that hang up, and one identifier is one spec.

A real ``pcs-registry serve`` process on 127.0.0.1; clients are raw sockets
that send half a request and close, and the real ``WebRegistry`` client.
"""

from __future__ import annotations

import socket
import time
import unicodedata
import uuid

import pytest
import requests
from _registry_server import TOKEN, start_registry_server, stop_process

from pcs.errors import RegistryError
from pcs.web_registry import WebRegistry


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry")
    url, process = start_registry_server(folder, token=TOKEN)
    yield url, folder / "server.log"
    stop_process(process)


def _half_request(url: str, method: str, path: str, content_type: str, declared: int,
                  sent: bytes) -> None:
    """Send the headers and part of a body, then hang up."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {declared}\r\n\r\n"
        )
        sock.sendall(head.encode() + sent)
        time.sleep(0.3)  # the server is reading the body when the client goes


def _log_is_clean(log_path, before: int) -> str:
    text = log_path.read_text(errors="replace")[before:]
    assert "Exception in ASGI application" not in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    return text


def test_a_client_that_hangs_up_mid_upload_leaves_no_traceback_on_any_route(server):
    url, log_path = server
    before = len(log_path.read_text(errors="replace"))
    run_id = uuid.uuid4().hex
    half_json = b'{"class_name": "Agent", "padding": "' + b"x" * 500
    for section in ("components", "repos", "run_commands", "argument_sets", "runs"):
        identifier = run_id if section == "runs" else f"half-{uuid.uuid4().hex[:8]}"
        _half_request(url, "PUT", f"/api/v1/{section}/{identifier}", "application/json",
                      5000, half_json)
    _half_request(url, "PUT", f"/api/v1/runs/{run_id}/artifacts", "application/gzip",
                  10_000_000, b"\x1f\x8b" + b"\0" * 4096)
    # reads: the client sends the request and goes before the answer
    for path in ("/api/v1/components", f"/api/v1/components/x-{run_id}", "/api/v1/health",
                 f"/api/v1/runs/{run_id}/artifacts"):
        _half_request(url, "GET", path, "application/json", 0, b"")
    # the server still answers, stored nothing half-written, and its log has no traceback
    assert requests.get(f"{url}/api/v1/health", timeout=30).json()["status"] == "ok"
    registry = WebRegistry(url)
    assert not [i for i in registry.identifiers("components") if i.startswith("half-")]
    assert run_id not in registry.identifiers("runs")
    time.sleep(0.5)  # let the server write whatever it logs about the hang-ups
    _log_is_clean(log_path, before)


def test_identifiers_that_look_the_same_are_one_spec(server):
    url, _ = server
    registry = WebRegistry(url, token=TOKEN)
    suffix = uuid.uuid4().hex[:6]
    composed = unicodedata.normalize("NFC", f"café-{suffix}")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    registry.add_component_spec({"identifier": decomposed, "class_name": "Cafe"})
    assert registry.get_component_spec(composed)["class_name"] == "Cafe"
    assert registry.get_component_spec(decomposed)["class_name"] == "Cafe"
    listed = [i for i in registry.identifiers("components") if i.endswith(suffix)]
    assert listed == [composed]


@pytest.mark.parametrize(("identifier", "says"), [
    ("\uff21gent", "FULLWIDTH LATIN CAPITAL LETTER A"),  # fullwidth Ａgent
    ("p\u0430ypal", "mixes letters of several scripts"),  # a Cyrillic а among Latin letters
    ("\ufb01le", "LATIN SMALL LIGATURE FI"),
])
def test_confusable_identifiers_are_refused_with_a_clear_error(server, identifier, says):
    url, _ = server
    registry = WebRegistry(url, token=TOKEN)
    with pytest.raises(RegistryError, match=says):
        registry.add_component_spec({"identifier": f"{identifier}-{uuid.uuid4().hex[:6]}",
                                     "class_name": "Agent"})
    answer = requests.put(f"{url}/api/v1/components/{identifier}", json={"class_name": "A"},
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert answer.status_code == 400
    assert says in answer.json()["message"]
