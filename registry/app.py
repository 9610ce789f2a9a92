"""The registry server's HTTP API (FastAPI).

Every route lives under ``/api/v1``::

    GET  /api/v1/health                        {"status": "ok", "writes": bool}
    GET  /api/v1/{section}                     {"identifiers": [...]}
    GET  /api/v1/{section}/{identifier}        the spec body (404 when missing)
    PUT  /api/v1/{section}/{identifier}?force= store a JSON body (409 if different)
    PUT  /api/v1/runs/{run_id}/artifacts       upload a run's artifacts (.tar.gz)
    GET  /api/v1/runs/{run_id}/artifacts       download them (.tar.gz)

Sections are :data:`pcs.registry.SECTIONS`. Identifiers may hold any
printable character (``agent==1.0``, ``/``): clients percent-encode them.
Reads are open; writes need ``Authorization: Bearer TOKEN`` and are refused
entirely when the server has no token.

The server treats every request as hostile. Whatever is wrong with one (a NUL
byte or invalid UTF-8 in its path, query or body, JSON nested too deep or too
large, a bad identifier or run id, a wrong content type) is answered with a
4xx status and ``{"error": class name, "message": what, why and how to fix}``,
the status taken from the :mod:`pcs.errors` class. A 5xx answer means the
server itself failed (its database or disk).

Uploads are spooled and unpacked under pid-marked temporary names in the
artifacts folder (``.pcs-<pid>-upload-…``, ``.<run id>.pcs-<pid>-extract-…``);
a failed or cancelled request removes its own, shutdown removes what is left,
and :func:`create_app` sweeps what a killed server left behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from pcs._archive import check_run_id, safe_extract_tar, sweep_stale_temp, temp_name, write_tar_gz
from pcs._limits import MAX_DOCUMENT_DEPTH
from pcs.errors import (
    ArgumentError,
    BundleError,
    InputLimitError,
    PcsError,
    RegistryAuthError,
    RegistryError,
    RegistryServerError,
    SpecNotFoundError,
    UnserializableArgumentError,
    UploadTooLargeError,
)
from pcs.registry import SECTIONS
from pcs.web_registry import normalize_token
from registry.store import SpecStore, check_identifier

log = logging.getLogger("pcs.registry")

__all__ = [
    "create_app",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "MAX_SPEC_BYTES",
    "MAX_SPEC_DEPTH",
    "MAX_SPEC_CONTAINERS",
    "API_PREFIX",
]

API_PREFIX = "/api/v1"
DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024**3
MAX_SPEC_BYTES = 16 * 1024**2
# deep enough for any spec pcs writes (argument sets nest user data a few levels
# below the spec), shallow enough that no recursive code on the way can overflow
MAX_SPEC_DEPTH = MAX_DOCUMENT_DEPTH  # what pcs records (pcs._limits), so a stored spec reads back
# each JSON array or object costs ~60-200 bytes of memory once parsed; a 16 MiB
# body of '[],' would otherwise become several hundred MB
MAX_SPEC_CONTAINERS = 1_000_000
# an archive may unpack to this many times its compressed size limit
_UNPACK_FACTOR = 4
_CHUNK = 1 << 20
_UPLOAD_ADVICE = (
    "Upload fewer artifacts, or restart the server with a larger --max-upload-mb."
)
# '*+json': any structured JSON type, e.g. application/merge-patch+json
_JSON_TYPES = ("application/json", "*+json")
_ARCHIVE_TYPES = ("application/gzip", "application/x-gzip", "application/octet-stream")
# seconds the shutdown waits for cancelled uploads to remove their temps
_CLEANUP_WAIT = 10.0


def create_app(
    db_url: str,
    artifacts_dir: str | os.PathLike[str],
    token: str | None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
) -> FastAPI:
    """The registry server as an ASGI app.

    Creating it sweeps the temporary files that a killed server left in
    ``artifacts_dir`` (their names carry a pid; see :mod:`pcs._archive`), so
    run at most one app per artifacts folder in a process.

    Args:
        db_url: SQLAlchemy URL of the spec database (created if missing).
        artifacts_dir: folder that holds one sub-folder of artifacts per run.
        token: the bearer token writes must carry, surrounding whitespace
            ignored; ``None`` or blank refuses every write.
        max_upload_bytes: largest artifact upload accepted (413 above it).

    Returns:
        The app; ``app.state`` holds ``store``, ``artifacts_dir``, ``writable``,
        ``swept`` (the leftovers removed at creation) and ``stopping``, a
        ``threading.Event`` that makes uploads in progress give up (503) and
        remove their temporary files; the app sets it on shutdown at the latest.

    Raises:
        ArgumentError: the token holds a line break or another control character.
        RegistryError: the database URL or the artifacts folder is unusable.
    """
    token = normalize_token(token, "The registry server's token")
    expected = token.encode("utf-8") if token else None
    store = SpecStore(db_url)
    artifacts = Path(artifacts_dir).resolve()
    try:
        artifacts.mkdir(parents=True, exist_ok=True)
        swept = sweep_stale_temp(artifacts, include_own=True)
    except OSError as exc:
        store.close()
        raise RegistryError(
            f"Cannot use the artifacts folder {artifacts}: {exc.strerror or exc}. Give a "
            "folder this server may create, read and write (--artifacts)."
        ) from None
    stopping = threading.Event()
    jobs = _Jobs()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # requests still running were cancelled by now; unpacking threads see
        # 'stopping' and give up, then every request removes its own temps
        stopping.set()
        deadline = time.monotonic() + _CLEANUP_WAIT
        while jobs.active and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        sweep_stale_temp(artifacts, include_own=True)
        store.close()

    app = FastAPI(title="pcs registry", docs_url=f"{API_PREFIX}/docs",
                  openapi_url=f"{API_PREFIX}/openapi.json", redoc_url=None, lifespan=lifespan)
    app.add_middleware(_RequestGuard)
    app.state.store = store
    app.state.artifacts_dir = artifacts
    app.state.writable = bool(token)
    app.state.swept = swept
    # set when requests in progress must give up (the end of a graceful shutdown)
    app.state.stopping = stopping

    def require_token(request: Request) -> None:
        if expected is None:
            raise RegistryAuthError(
                "This registry server was started without a token, so it refuses every "
                "write; reads are open. Restart it with PCS_REGISTRY_TOKEN or --token-file "
                "set to accept writes."
            )
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise RegistryAuthError(
                "This write carries no token: the registry accepts writes only with an "
                "'Authorization: Bearer TOKEN' header. Send the server's token."
            )
        # headers arrive as latin-1 text: encoding back gives the bytes that were sent
        if not _token_matches(given.strip().encode("latin-1"), expected):
            raise RegistryAuthError(
                "This write carries a wrong token, so the registry refused it. Send the "
                "token the server was started with."
            )

    # -- errors: every refusal answers {"error": ..., "message": ...} ---------------

    @app.exception_handler(PcsError)
    async def pcs_error(request: Request, exc: PcsError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        return _error(exc.http_status, type(exc).__name__, str(exc), headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = str(exc.detail)
        if exc.status_code in (404, 405):
            message = (
                f"{request.method} {request.url.path} is not part of the registry API "
                f"({exc.detail}). The API lives under {API_PREFIX}: /health, /{{section}}, "
                "/{section}/{identifier}, /runs/{run_id}/artifacts."
            )
        return _error(exc.status_code, "HTTPError", message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return _error(400, "ArgumentError", f"Invalid request: {problems}.")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        # a bug or a broken disk, never the client's input: the log has the traceback
        return _error(
            500, "RegistryServerError",
            f"The registry server failed on {request.method} {request.url.path} "
            f"({type(exc).__name__}). This is a fault of the server, not of the request; "
            "its log has the details. Retry later, or tell the server's operator.",
        )

    # -- routes --------------------------------------------------------------------
    # The artifact routes come first: '/runs/x/artifacts' must not be read as the
    # run spec 'x/artifacts'. They take the run id as a path so that a run id with
    # a '/' is refused with a clear 400 instead of silently routed elsewhere.

    @app.get(f"{API_PREFIX}/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "writes": bool(token), "sections": list(SECTIONS)}

    @app.put(f"{API_PREFIX}/runs/{{run_id:path}}/artifacts", status_code=201)
    async def put_artifacts(run_id: str, request: Request) -> dict[str, Any]:
        require_token(request)
        check_run_id(run_id)
        _check_content_type(request, _ARCHIVE_TYPES, "a .tar.gz archive", "application/gzip")
        _check_declared_size(request, max_upload_bytes, "The artifact upload", _UPLOAD_ADVICE)
        spool_path = artifacts / temp_name("upload")
        size = 0
        with jobs:
            try:
                with open(spool_path, "xb") as spool:
                    async for chunk in request.stream():
                        if stopping.is_set():
                            _raise_stopping()
                        size += len(chunk)
                        _check_size(size, max_upload_bytes, "The artifact upload", _UPLOAD_ADVICE)
                        spool.write(chunk)  # a local disk write; fast enough to do inline
                with open(spool_path, "rb") as archive:
                    await run_in_threadpool(
                        safe_extract_tar, _StoppableReader(archive, stopping), artifacts / run_id,
                        replace=True, max_size=_UNPACK_FACTOR * max_upload_bytes,
                    )
            except ClientDisconnect:
                # nobody reads this answer; it keeps the log free of a traceback
                raise BundleError(
                    f"The upload of run {run_id!r}'s artifacts broke off after {size} bytes."
                ) from None
            except OSError as exc:
                raise _disk_error(f"store the artifacts of run {run_id!r}", exc) from None
            finally:
                spool_path.unlink(missing_ok=True)
        return {"run_id": run_id, "bytes": size}

    @app.get(f"{API_PREFIX}/runs/{{run_id:path}}/artifacts")
    def get_artifacts(run_id: str) -> Response:
        check_run_id(run_id)
        folder = artifacts / run_id
        if not folder.is_dir():
            raise SpecNotFoundError(
                f"The registry holds no artifacts for run {run_id!r}. Upload them first "
                f"(PUT {API_PREFIX}/runs/{run_id}/artifacts, or Registry.add_run_artifacts)."
            )
        # an anonymous file (O_TMPFILE on Linux): nothing to leave behind, even on SIGKILL
        spool = tempfile.TemporaryFile(dir=artifacts, prefix=f".pcs-{os.getpid()}-download-")
        try:
            write_tar_gz(folder, spool)
            size = spool.tell()
            spool.seek(0)
        except FileNotFoundError:
            spool.close()
            raise _with_status(RegistryServerError(
                f"The artifacts of run {run_id!r} were replaced by an upload while the "
                "registry packed them. Download them again."
            ), 503) from None
        except OSError as exc:
            spool.close()
            raise _disk_error(f"pack the artifacts of run {run_id!r}", exc) from None
        except BaseException:
            spool.close()
            raise
        return StreamingResponse(
            _chunks_then_close(spool), media_type="application/gzip",
            headers={"Content-Length": str(size),
                     "Content-Disposition": f'attachment; filename="{run_id}.tar.gz"'},
        )

    @app.get(f"{API_PREFIX}/{{section}}")
    def list_identifiers(section: str) -> dict[str, list[str]]:
        _check_section(section)
        return {"identifiers": store.identifiers(section)}

    @app.get(f"{API_PREFIX}/{{section}}/{{identifier:path}}")
    def get_spec(section: str, identifier: str) -> Response:
        _check_section(section)
        text = store.get_json(section, identifier)
        if text is None:
            raise SpecNotFoundError(
                f"The registry has no {section} spec {identifier!r}. Check the identifier "
                f"(GET {API_PREFIX}/{section} lists them), or publish the spec first."
            )
        # the stored canonical JSON as is: no parsing and re-encoding per read
        return Response(text.encode("utf-8"), media_type="application/json")

    @app.put(f"{API_PREFIX}/{{section}}/{{identifier:path}}")
    async def put_spec(
        section: str, identifier: str, request: Request, force: bool = False
    ) -> JSONResponse:
        require_token(request)
        _check_section(section)
        identifier = check_identifier(identifier)  # NFC: identifiers that look alike are one
        if section == "runs":
            check_run_id(identifier)  # a run spec's artifacts live under its identifier
        body = await _read_json_object(request)
        result = await run_in_threadpool(store.put, section, identifier, body, force)
        return JSONResponse(
            {"section": section, "identifier": identifier, "result": result},
            status_code=201 if result == "created" else 200,
        )

    return app


def _token_matches(given: bytes, expected: bytes) -> bool:
    """Compare tokens in constant time, without revealing the expected length.

    Both sides are hashed first, so the comparison always runs over 32 bytes
    whatever was sent; ``hmac.compare_digest`` then takes as long for a token
    wrong in its first byte as for one wrong in its last.
    """
    return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected).digest())


# -- request checks ------------------------------------------------------------------


class _RequestGuard:
    """Refuse requests whose path or query is not valid UTF-8 or holds a NUL byte.

    Runs before routing: the server would otherwise decode such a path with
    replacement characters and act on an identifier nobody sent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = _request_problem(scope)
            if problem is not None:
                await _error(400, "ArgumentError", problem)(scope, receive, send)
                return
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            # the client hung up mid-request, on any route: nobody is left to answer, and it
            # is no fault of the server, so one line in the log instead of a traceback
            log.info("pcs registry: the client hung up during %s %s; nothing was stored.",
                     scope.get("method"), scope.get("path"))


def _request_problem(scope: Scope) -> str | None:
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    parts = (("path", unquote_to_bytes(raw_path)),
             ("query", unquote_to_bytes(scope.get("query_string", b"").replace(b"+", b" "))))
    for where, data in parts:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return (
                f"The request {where} is not valid UTF-8 (byte {data[exc.start]:#04x} at "
                f"{exc.start}). Percent-encode identifiers as UTF-8 (quote(identifier, "
                "safe='') in Python)."
            )
        if "\x00" in text:
            return (
                f"The request {where} holds a NUL byte (%00), which no identifier or "
                "option may contain. Remove it."
            )
    return None


def _check_content_type(request: Request, accepted: tuple[str, ...], what: str,
                        send_as: str) -> None:
    """Refuse a body declared as something else than ``accepted`` (415)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise _with_status(ArgumentError(
            f"The request body is sent with Content-Encoding {encoding!r}, which this "
            f"server does not decode. Send {what} as is, without Content-Encoding."
        ), 415)
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media_type, *params = (part.strip().lower() for part in declared.split(";"))
    charsets = [p.partition("=")[2].strip('"') for p in params if p.startswith("charset=")]
    known = any(
        media_type.endswith(a[1:]) if a.startswith("*") else media_type == a for a in accepted
    )
    if known and all(c in ("utf-8", "utf8") for c in charsets):
        return
    raise _with_status(ArgumentError(
        f"The request body is declared as {declared[:100]!r}, but this route takes {what}. "
        f"Send it with Content-Type: {send_as}."
    ), 415)


def _check_declared_size(request: Request, limit: int, what: str, advice: str) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdecimal():  # the HTTP parser checked it
        _check_size(int(declared), limit, what, advice)


def _check_size(size: int, limit: int, what: str, advice: str) -> None:
    if size > limit:
        raise UploadTooLargeError(
            f"{what} is larger than {limit} bytes, the most this server accepts. {advice}"
        )


def _check_section(section: str) -> None:
    if section not in SECTIONS:
        raise SpecNotFoundError(
            f"Unknown registry section {section[:100]!r}. This registry holds: "
            f"{', '.join(SECTIONS)}; use one of them in the URL."
        )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number, and a spec cannot record it exactly")


async def _read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, within the limits a spec must keep."""
    _check_content_type(request, _JSON_TYPES, "a JSON object", "application/json")
    advice = "Keep large data in run artifacts, not in specs."
    _check_declared_size(request, MAX_SPEC_BYTES, "The spec", advice)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            _check_size(size, MAX_SPEC_BYTES, "The spec", advice)
            chunks.append(chunk)
    except ClientDisconnect:
        # nobody reads this answer; it keeps the log free of a traceback
        raise RegistryError(f"The spec upload broke off after {size} bytes.") from None
    raw = b"".join(chunks)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryError(
            f"The request body is not valid UTF-8 (byte {raw[exc.start]:#04x} at "
            f"{exc.start}). Send the spec as UTF-8 encoded JSON."
        ) from None
    # an upper bound (brackets inside strings count too), checked before parsing
    if text.count("[") + text.count("{") > MAX_SPEC_CONTAINERS:
        raise InputLimitError(
            f"The spec holds more than {MAX_SPEC_CONTAINERS} JSON arrays and objects, "
            f"the most this server accepts. {advice}"
        )
    try:
        body = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        _raise_too_deep()
    except ValueError as exc:
        raise RegistryError(
            f"The request body is not valid JSON ({exc}). Send the spec body as a JSON "
            "object with Content-Type: application/json."
        ) from None
    if not isinstance(body, dict):
        raise RegistryError(
            f"The request body is a JSON {type(body).__name__}; a spec body must be a JSON "
            "object (its fields, without the identifier)."
        )
    _check_json_values(body)
    return body


def _raise_too_deep() -> NoReturn:
    raise InputLimitError(
        f"The spec nests arrays and objects more than {MAX_SPEC_DEPTH} levels deep, the "
        "most this server accepts. Flatten the data, or keep it in run artifacts."
    )


_NOT_UTF8 = re.compile(r"[\ud800-\udfff]")


def _check_json_values(body: dict[str, Any]) -> None:
    """Refuse too deep nesting, NUL characters and lone surrogates, without recursion."""
    # (value, how many arrays and objects hold it); the body itself is level 1
    stack: list[tuple[Any, int]] = [(body, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)) and depth >= MAX_SPEC_DEPTH:
            _raise_too_deep()
        if isinstance(value, dict):
            for key, item in value.items():
                _check_string(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            _check_string(value)


def _check_string(text: str) -> None:
    if "\x00" in text:
        raise UnserializableArgumentError(
            f"The spec holds a string with a NUL character (\\u0000): {text[:60]!r}. "
            "Specs cannot store NUL (PostgreSQL text cannot hold it); remove it, or "
            "keep binary data in run artifacts."
        )
    if not text.isascii() and _NOT_UTF8.search(text):
        raise UnserializableArgumentError(
            f"The spec holds a string with an unpaired surrogate (a lone \\ud800-\\udfff "
            f"escape): {text[:60]!r}. It is not valid Unicode text; encode the data as "
            "proper UTF-8 text."
        )


# -- helpers -------------------------------------------------------------------------


class _Jobs:
    """How many uploads are running, so shutdown can wait for their cleanup."""

    def __init__(self) -> None:
        self.active = 0

    def __enter__(self) -> None:
        self.active += 1

    def __exit__(self, *exc: object) -> None:
        self.active -= 1


class _StoppableReader:
    """A file object whose reads fail once the server is shutting down.

    Unpacking runs in a worker thread that cancellation cannot interrupt; this
    is how it learns to give up (and remove its staging folder) on SIGTERM.
    """

    def __init__(self, raw: IO[bytes], stopping: threading.Event) -> None:
        self._raw = raw
        self._stopping = stopping

    def read(self, size: int = -1) -> bytes:
        if self._stopping.is_set():
            _raise_stopping()
        return self._raw.read(size)


def _raise_stopping() -> NoReturn:
    raise _with_status(RegistryServerError(
        "The registry server is shutting down, so it gave up storing this upload. "
        "Upload the artifacts again once the server is back."
    ), 503)


def _chunks_then_close(fh: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := fh.read(_CHUNK):
            yield chunk
    finally:
        fh.close()


def _with_status(exc: PcsError, status: int) -> PcsError:
    """``exc`` answered with ``status`` instead of its class's HTTP status."""
    exc.http_status = status
    return exc


def _disk_error(action: str, exc: OSError) -> PcsError:
    full = getattr(exc, "errno", None) in (28, 122)  # ENOSPC, EDQUOT
    return _with_status(RegistryServerError(
        f"The registry server could not {action}: its artifacts folder failed "
        f"({type(exc).__name__}: {exc.strerror or exc}). "
        + ("The disk is full; " if full else "")
        + "tell the server's operator, then retry."
    ), 507 if full else 500)


def _error(status: int, name: str, message: str,
           headers: dict[str, str] | None = None) -> Response:
    # ASCII-only JSON: a message quoting odd input must never fail to encode
    content = json.dumps({"error": name, "message": message}).encode("ascii")
    return Response(content, status_code=status, headers=headers, media_type="application/json")
