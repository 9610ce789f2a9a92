"""The registry server's HTTP API (FastAPI).

Every route lives under ``/api/v1``::

    GET  /api/v1/health                        {"status": "ok", "writes": bool}
    GET  /api/v1/{section}                     {"identifiers": [...]}
    GET  /api/v1/{section}/{identifier}        the spec body (404 when missing)
    PUT  /api/v1/{section}/{identifier}?force= store a JSON body (409 if different)
    PUT  /api/v1/runs/{run_id}/artifacts       upload a run's artifacts (.tar.gz)
    GET  /api/v1/runs/{run_id}/artifacts       download them (.tar.gz)

Sections are :data:`pcs.registry.SECTIONS`. Identifiers may hold any
character (``agent==1.0``, ``/``): clients percent-encode them. Reads are
open; writes need ``Authorization: Bearer TOKEN`` and are refused entirely
when the server has no token. Every error answers
``{"error": class name, "message": what, why and how to fix}`` with the
status on the :mod:`pcs.errors` class.
"""

from __future__ import annotations

import hmac
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pcs._archive import check_run_id, safe_extract_tar, write_tar_gz
from pcs.errors import (
    BundleError,
    PcsError,
    RegistryAuthError,
    RegistryError,
    SpecNotFoundError,
    UploadTooLargeError,
)
from pcs.registry import SECTIONS
from registry.store import MAX_IDENTIFIER_LENGTH, SpecStore

__all__ = [
    "create_app",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "MAX_SPEC_BYTES",
    "API_PREFIX",
]

API_PREFIX = "/api/v1"
DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024**3
MAX_SPEC_BYTES = 16 * 1024**2
# an archive may unpack to this many times its compressed size limit
_UNPACK_FACTOR = 4
_UPLOAD_ADVICE = (
    "Upload fewer artifacts, or restart the server with a larger --max-upload-mb."
)


def create_app(
    db_url: str,
    artifacts_dir: str | os.PathLike[str],
    token: str | None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
) -> FastAPI:
    """The registry server as an ASGI app.

    Args:
        db_url: SQLAlchemy URL of the spec database (created if missing).
        artifacts_dir: folder that holds one sub-folder of artifacts per run.
        token: the bearer token writes must carry; ``None`` or ``""`` refuses
            every write.
        max_upload_bytes: largest artifact upload accepted (413 above it).
    """
    store = SpecStore(db_url)
    artifacts = Path(artifacts_dir).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    app = FastAPI(title="pcs registry", docs_url=f"{API_PREFIX}/docs",
                  openapi_url=f"{API_PREFIX}/openapi.json", redoc_url=None)
    app.state.store = store
    app.state.artifacts_dir = artifacts
    app.state.writable = bool(token)

    def require_token(request: Request) -> None:
        if not token:
            raise RegistryAuthError(
                "This registry server was started without a token, so it refuses every "
                "write; reads are open. Restart it with --token or PCS_REGISTRY_TOKEN set "
                "to accept writes."
            )
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise RegistryAuthError(
                "This write carries no token: the registry accepts writes only with an "
                "'Authorization: Bearer TOKEN' header. Send the server's token."
            )
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise RegistryAuthError(
                "This write carries a wrong token, so the registry refused it. Send the "
                "token the server was started with."
            )

    # -- errors: every refusal answers {"error": ..., "message": ...} ---------------

    @app.exception_handler(PcsError)
    async def pcs_error(request: Request, exc: PcsError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        return _error(exc.http_status, type(exc).__name__, str(exc), headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code in (404, 405):
            message = (
                f"{request.method} {request.url.path} is not part of the registry API "
                f"({exc.detail}). The API lives under {API_PREFIX}: /health, /{{section}}, "
                "/{section}/{identifier}, /runs/{run_id}/artifacts."
            )
        return _error(exc.status_code, "HTTPError", message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return _error(400, "ArgumentError", f"Invalid request: {problems}.")

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
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise BundleError(f"Content-Length {declared!r} is not a number of bytes.")
            _check_size(int(declared), max_upload_bytes, "The artifact upload", _UPLOAD_ADVICE)
        with tempfile.TemporaryFile(dir=artifacts, prefix=".upload-") as spool:
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                _check_size(size, max_upload_bytes, "The artifact upload", _UPLOAD_ADVICE)
                spool.write(chunk)  # a local disk write; fast enough to do inline
            spool.seek(0)
            await run_in_threadpool(
                safe_extract_tar, spool, artifacts / run_id,
                replace=True, max_size=_UNPACK_FACTOR * max_upload_bytes,
            )
        return {"run_id": run_id, "bytes": size}

    @app.get(f"{API_PREFIX}/runs/{{run_id:path}}/artifacts")
    def get_artifacts(run_id: str) -> FileResponse:
        check_run_id(run_id)
        folder = artifacts / run_id
        if not folder.is_dir():
            raise SpecNotFoundError(
                f"The registry holds no artifacts for run {run_id!r}. Upload them first "
                f"(PUT {API_PREFIX}/runs/{run_id}/artifacts, or Registry.add_run_artifacts)."
            )
        fd, name = tempfile.mkstemp(prefix="pcs-registry-", suffix=".tar.gz")
        try:
            with os.fdopen(fd, "wb") as fh:
                write_tar_gz(folder, fh)
        except BaseException:
            os.unlink(name)
            raise
        return FileResponse(name, media_type="application/gzip",
                            filename=f"{run_id}.tar.gz", background=BackgroundTask(os.unlink, name))

    @app.get(f"{API_PREFIX}/{{section}}")
    def list_identifiers(section: str) -> dict[str, list[str]]:
        _check_section(section)
        return {"identifiers": store.identifiers(section)}

    @app.get(f"{API_PREFIX}/{{section}}/{{identifier:path}}")
    def get_spec(section: str, identifier: str) -> dict[str, Any]:
        _check_section(section)
        body = store.get(section, identifier)
        if body is None:
            raise SpecNotFoundError(
                f"The registry has no {section} spec {identifier!r}. Check the identifier "
                f"(GET {API_PREFIX}/{section} lists them), or publish the spec first."
            )
        return body

    @app.put(f"{API_PREFIX}/{{section}}/{{identifier:path}}")
    async def put_spec(
        section: str, identifier: str, request: Request, force: bool = False
    ) -> JSONResponse:
        require_token(request)
        _check_section(section)
        _check_identifier(identifier)
        body = await _read_json_object(request)
        result = await run_in_threadpool(store.put, section, identifier, body, force)
        return JSONResponse(
            {"section": section, "identifier": identifier, "result": result},
            status_code=201 if result == "created" else 200,
        )

    return app


def _error(status: int, name: str, message: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": name, "message": message}, status_code=status, headers=headers)


def _check_section(section: str) -> None:
    if section not in SECTIONS:
        raise SpecNotFoundError(
            f"Unknown registry section {section!r}. This registry holds: "
            f"{', '.join(SECTIONS)}; use one of them in the URL."
        )


def _check_identifier(identifier: str) -> None:
    if not identifier or len(identifier) > MAX_IDENTIFIER_LENGTH:
        raise RegistryError(
            f"A spec identifier must be 1 to {MAX_IDENTIFIER_LENGTH} characters long; got "
            f"{len(identifier)}. Use a shorter identifier."
        )


def _check_size(size: int, limit: int, what: str, advice: str) -> None:
    if size > limit:
        raise UploadTooLargeError(
            f"{what} is larger than {limit} bytes, the most this server accepts. {advice}"
        )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number, and a spec cannot record it exactly")


async def _read_json_object(request: Request) -> dict[str, Any]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        _check_size(size, MAX_SPEC_BYTES, "The spec",
                    "Keep large data in run artifacts, not in specs.")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(
            f"The request body is not valid JSON ({exc}). Send the spec body as a JSON "
            "object with Content-Type: application/json."
        ) from None
    if not isinstance(body, dict):
        raise RegistryError(
            f"The request body is a JSON {type(body).__name__}; a spec body must be a JSON "
            "object (its fields, without the identifier)."
        )
    return body
