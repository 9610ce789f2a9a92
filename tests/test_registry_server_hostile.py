"""Malformed and hostile requests get a 4xx JSON answer, never a 500, on SQLite and PostgreSQL.

Every case is sent to a real server process (the session's shared ones);
whatever the request holds (NUL bytes, invalid UTF-8, JSON nested too deep or
too large, bad identifiers, wrong content types, broken HTTP), the answer is
``{"error": class name, "message": ...}`` with a 4xx status, nothing is
stored, no temporary file stays behind, and the server log shows no traceback.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from _registry_server import TOKEN, postgres_database, shared_registry_server

from pcs.errors import RegistryError, RegistryServerError
from pcs.web_registry import WebRegistry
from registry.app import MAX_SPEC_BYTES, MAX_SPEC_CONTAINERS, MAX_SPEC_DEPTH
from registry.store import SpecStore

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request, tmp_path_factory) -> tuple[str, Path]:
    """(base URL, folder) of the shared server on each database backend."""
    return shared_registry_server(tmp_path_factory, request.param)


class Answer:
    """A status, headers and body, from requests or from a raw socket."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def via_requests(response: requests.Response) -> Answer:
    return Answer(response.status_code, dict(response.headers), response.content)


def raw_request(url: str, data: bytes) -> Answer:
    """Send ``data`` as is on a new connection; read the answer until the server closes."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may answer and close before reading everything
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return Answer(int(lines[0].split()[1]), headers, body)


def fresh(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def nested(depth: int) -> bytes:
    """A JSON object holding ``depth`` objects in all (itself included)."""
    return b'{"a":' * depth + b"1" + b"}" * depth


def put_body(body: bytes, headers: dict[str, str] | None = None) -> Callable[[str], Answer]:
    def send(url: str) -> Answer:
        return via_requests(requests.put(
            f"{url}/api/v1/components/{fresh('body')}", data=body,
            headers=JSON if headers is None else headers, timeout=60,
        ))
    return send


def get(path: str) -> Callable[[str], Answer]:
    return lambda url: via_requests(requests.get(f"{url}{path}", timeout=30))


def put(path: str, **kwargs: Any) -> Callable[[str], Answer]:
    kwargs.setdefault("json", {"v": 1})
    kwargs.setdefault("headers", AUTH)
    return lambda url: via_requests(requests.put(f"{url}{path}", timeout=30, **kwargs))


def raw(data: bytes) -> Callable[[str], Answer]:
    return lambda url: raw_request(url, data)


def chunked_garbage(url: str) -> Answer:
    """An artifact upload whose chunked body breaks the HTTP framing half-way."""
    head = (f"PUT /api/v1/runs/{uuid.uuid4().hex}/artifacts HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/gzip\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    return raw_request(url, head + b"10\r\n" + b"\x1f\x8b" * 8 + b"\r\nzz\r\n\r\n")


DEEP = 100_000
CASES: dict[str, tuple[Callable[[str], Answer], int, str]] = {
    # NUL bytes and invalid UTF-8 in the path or query
    "nul_in_identifier_get": (get("/api/v1/components/a%00b"), 400, "ArgumentError"),
    "nul_in_identifier_put": (put("/api/v1/components/a%00b"), 400, "ArgumentError"),
    "nul_in_section": (get("/api/v1/comp%00onents"), 400, "ArgumentError"),
    "nul_in_run_id_get": (get("/api/v1/runs/ab%00cd/artifacts"), 400, "ArgumentError"),
    "nul_in_run_id_put": (put("/api/v1/runs/ab%00cd/artifacts", data=b"x", json=None),
                          400, "ArgumentError"),
    "invalid_utf8_identifier_get": (get("/api/v1/components/%FF%FE"), 400, "ArgumentError"),
    "invalid_utf8_identifier_put": (put("/api/v1/components/%FF%FE"), 400, "ArgumentError"),
    "encoded_surrogate_identifier": (put("/api/v1/components/%ED%A0%80"), 400, "ArgumentError"),
    "invalid_utf8_query": (put("/api/v1/components/q?force=%FF"), 400, "ArgumentError"),
    "nul_in_query": (put("/api/v1/components/q?force=%00"), 400, "ArgumentError"),
    "not_a_boolean": (put("/api/v1/components/q?force=maybe"), 400, "ArgumentError"),
    # bad identifiers and run ids
    "control_char_identifier": (put("/api/v1/components/a%01b"), 400, "RegistryError"),
    "delete_char_identifier": (get("/api/v1/components/a%7Fb"), 400, "RegistryError"),
    "too_long_identifier_put": (put("/api/v1/components/" + "x" * 1025), 400, "RegistryError"),
    "too_long_identifier_get": (get("/api/v1/components/" + "x" * 5000), 400, "RegistryError"),
    "empty_identifier": (put("/api/v1/components/"), 400, "RegistryError"),
    "run_id_with_dots": (get("/api/v1/runs/..%2F..%2Fetc/artifacts"), 400, "BundleError"),
    "empty_run_id": (put("/api/v1/runs//artifacts", data=b"x", json=None), 400, "BundleError"),
    "run_spec_with_a_bad_run_id": (put("/api/v1/runs/a%20b"), 400, "BundleError"),
    # spec bodies
    "nul_escape_in_value": (put_body(b'{"a": "x\\u0000y"}'), 400, "UnserializableArgumentError"),
    "nul_escape_in_key": (put_body(b'{"a\\u0000": 1}'), 400, "UnserializableArgumentError"),
    "nul_byte_in_body": (put_body(b'{"a": "x\x00y"}'), 400, "RegistryError"),
    "lone_surrogate": (put_body(b'{"a": "\\ud800"}'), 400, "UnserializableArgumentError"),
    "invalid_utf8_body": (put_body(b'{"a": "\xff\xfe"}'), 400, "RegistryError"),
    "latin1_body": (put_body('{"a": "caf\xe9"}'.encode("latin-1")), 400, "RegistryError"),
    "deep_arrays": (put_body(b"[" * DEEP + b"]" * DEEP), 413, "InputLimitError"),
    "deep_objects": (put_body(b'{"a":' * DEEP + b"1" + b"}" * DEEP), 413, "InputLimitError"),
    "one_level_too_deep": (put_body(nested(MAX_SPEC_DEPTH + 1)), 413, "InputLimitError"),
    "too_many_containers": (put_body(b"[" + b"[]," * MAX_SPEC_CONTAINERS + b"[]]"),
                            413, "InputLimitError"),
    "too_large_declared": (put_body(b" " * (MAX_SPEC_BYTES + 1)), 413, "UploadTooLargeError"),
    # a generator body goes out chunked, without Content-Length: the server counts
    "too_large_chunked": (lambda url: put_body(iter([b" " * (1 << 20)] * 17))(url),  # type: ignore[arg-type]
                          413, "UploadTooLargeError"),
    "huge_integer": (put_body(b'{"a": ' + b"9" * 5000 + b"}"), 400, "RegistryError"),
    "overflowing_float": (put_body(b'{"a": 1e400}'), 400, "UnserializableArgumentError"),
    "nan": (put_body(b'{"a": NaN}'), 400, "RegistryError"),
    "not_an_object": (put_body(b"[1, 2]"), 400, "RegistryError"),
    "empty_body": (put_body(b""), 400, "RegistryError"),
    "truncated_json": (put_body(b'{"a": [1, 2'), 400, "RegistryError"),
    # content types and encodings
    "form_content_type": (put_body(b"a=b", {**AUTH, "Content-Type":
                                            "application/x-www-form-urlencoded"}),
                          415, "ArgumentError"),
    "text_content_type": (put_body(b"{}", {**AUTH, "Content-Type": "text/plain"}),
                          415, "ArgumentError"),
    "latin1_charset": (put_body(b"{}", {**AUTH, "Content-Type":
                                        "application/json; charset=latin-1"}),
                       415, "ArgumentError"),
    "gzip_encoded_spec": (put_body(b"{}", {**JSON, "Content-Encoding": "gzip"}),
                          415, "ArgumentError"),
    "json_sent_as_artifacts": (put(f"/api/v1/runs/{uuid.uuid4().hex}/artifacts"),
                               415, "ArgumentError"),
    # routes and methods
    "unknown_method": (lambda url: via_requests(requests.delete(
        f"{url}/api/v1/components/x", headers=AUTH, timeout=30)), 405, "HTTPError"),
    "unknown_path": (get("/api/v2/components"), 404, "HTTPError"),
    # broken HTTP, refused by the parser before the app sees it
    "raw_invalid_utf8_path": (raw(b"GET /api/v1/components/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n"),
                              400, "ArgumentError"),
    "raw_nul_in_path": (raw(b"GET /api/v1/components/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n"),
                        400, "ArgumentError"),
    "raw_nul_in_header": (raw(b"PUT /api/v1/components/a HTTP/1.1\r\nHost: x\r\n"
                              b"Authorization: Bearer se\x00cret\r\nContent-Length: 2\r\n\r\n{}"),
                          400, "ArgumentError"),
    "raw_negative_length": (raw(b"PUT /api/v1/components/a HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Length: -1\r\n\r\n"), 400, "ArgumentError"),
    "raw_two_lengths": (raw(b"PUT /api/v1/components/a HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}"),
                        400, "ArgumentError"),
    "raw_garbage": (raw(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64),
                    400, "ArgumentError"),
    "raw_broken_chunked_upload": (chunked_garbage, 400, "ArgumentError"),
}


def leftovers(folder: Path, wait: float = 5.0) -> list[str]:
    """The temps in the artifacts folder, once the server had ``wait`` s to remove them.

    A request cut off by the HTTP parser is answered before its handler sees
    the disconnect and removes its spool, so removal may lag the answer.
    """
    deadline = time.monotonic() + wait
    while True:
        found = [p.name for p in (folder / "artifacts").iterdir() if p.name.startswith(".")]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_request_is_a_4xx_json_answer(server, case):
    url, folder = server
    send, status, error = CASES[case]

    answer = send(url)

    assert answer.status == status, answer.body[:300]
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) == {"error", "message"}
    assert body["error"] == error
    assert len(body["message"]) > 40  # says what, why and how to fix
    assert leftovers(folder) == []
    assert requests.get(f"{url}/api/v1/health", timeout=10).status_code == 200


def test_refused_specs_are_not_stored(server):
    url, _ = server
    identifier = fresh("refused")
    for body in (b'{"a": "\\u0000"}', b'{"a": "\\udfff"}', nested(MAX_SPEC_DEPTH + 1)):
        answer = requests.put(f"{url}/api/v1/components/{identifier}", data=body, headers=JSON,
                              timeout=30)
        assert 400 <= answer.status_code < 500
    assert requests.get(f"{url}/api/v1/components/{identifier}", timeout=10).status_code == 404
    assert identifier not in WebRegistry(url).identifiers("components")


def test_the_deepest_accepted_spec_round_trips(server):
    """The depth limit is exact: MAX_SPEC_DEPTH levels are stored and read back."""
    url, _ = server
    identifier = fresh("deep")
    spec = {"identifier": identifier, **json.loads(nested(MAX_SPEC_DEPTH))}
    registry = WebRegistry(url, token=TOKEN)

    registry.add_component_spec(spec)

    assert registry.get_component_spec(identifier) == spec


def test_unusual_but_valid_text_is_stored_exactly(server):
    """Non-ASCII, astral and printable odd characters pass; only what cannot be stored is refused."""
    url, _ = server
    registry = WebRegistry(url, token=TOKEN)
    identifier = f"ünï/cödé 🙂 ==1.0 {fresh()}"
    spec = {"identifier": identifier, "text": "tab\there, line\nbreak, emoji 🙂, é, \u2028",
            "escaped": "\\u0000 is only text here"}
    registry.add_component_spec(spec)
    assert registry.get_component_spec(identifier) == spec


def test_no_request_made_the_server_fail(server):
    """Nothing above reached the server's generic error handler (it logs a traceback)."""
    _, folder = server
    log = (folder / "server.log").read_text()
    assert "Traceback" not in log
    assert "Exception in ASGI application" not in log


# -- the store on its own refuses what its database cannot hold ------------------------------


@pytest.mark.postgres
def test_store_turns_driver_refusals_into_registry_errors():
    store = SpecStore(postgres_database())
    try:
        with pytest.raises(RegistryError, match="NUL"):
            store.get("components", "a\x00b")
        with pytest.raises(RegistryError, match="NUL"):
            store.put("components", "a\x00b", {}, force=False)
        # the store does not check sections (the app does): PostgreSQL's driver
        # refuses the NUL, and that is the caller's error, not a database failure
        with pytest.raises(RegistryError, match="cannot hold a value") as caught:
            store.put("comp\x00onents", "x", {}, force=False)
        assert not isinstance(caught.value, RegistryServerError)
        assert store.identifiers("components") == []
    finally:
        store.close()
