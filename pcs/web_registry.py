"""A registry on a ``pcs-registry`` server, reached over HTTP.

Example::

    registry = WebRegistry("http://127.0.0.1:8765", token=resolve_token(None, "~/.pcs-token"))
    registry.add_component_spec({"identifier": "agent==1.0", "class_name": "Agent"})
    Component.from_registry(registry, "agent==1.0")

Reads need no token; writes send ``Authorization: Bearer TOKEN`` (default:
the ``PCS_REGISTRY_TOKEN`` environment variable). Tokens are stripped of
surrounding whitespace, so one read from a file with a final newline works.

Credentials in the URL (``https://user:secret@host``) are used for reads (an
authenticating proxy) but never shown: :attr:`WebRegistry.url`, messages and
cache paths use the redacted form ``https://***@host``.

Downloaded artifacts live in the ``web_registry`` cache, one entry per server
and run (``<server key>-<run id>``), locked "in use" while they are written.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests

from pcs import errors
from pcs._archive import check_run_id, safe_extract_tar, sweep_stale_temp, write_tar_gz
from pcs._config import cache_dir
from pcs.cache import in_use, remove
from pcs.errors import (
    ArgumentError,
    BundleError,
    CacheInUseError,
    RegistryAuthError,
    RegistryConflictError,
    RegistryError,
    RegistryServerError,
)
from pcs.progress import ProgressCallback
from pcs.registry import SECTIONS, Registry

__all__ = [
    "WebRegistry",
    "TOKEN_ENV",
    "DEFAULT_CONNECT_TIMEOUT",
    "ProgressCallback",
    "resolve_token",
    "normalize_token",
    "redact_url",
]

TOKEN_ENV = "PCS_REGISTRY_TOKEN"
DEFAULT_CONNECT_TIMEOUT = 10.0
# progress(description, done_bytes, total_bytes_or_None); see the shared protocols
_API = "/api/v1"
_DOWNLOAD_CHUNK = 64 * 1024
_PROGRESS_STEP = 256 * 1024
_MAX_TOKEN_FILE_BYTES = 64 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# -- tokens and URLs -------------------------------------------------------------------


def normalize_token(token: str | None, source: str = "The registry token") -> str | None:
    """``token`` without surrounding whitespace; None when it is None or blank.

    Args:
        token: the token as given.
        source: where it came from, for the error message (never the token itself).

    Raises:
        ArgumentError: whitespace aside, it holds a line break or another
            control character, which no HTTP header can carry.
    """
    if token is None:
        return None
    token = token.strip()
    if _CONTROL.search(token):
        raise ArgumentError(
            f"{source} holds a line break or another control character inside it, which "
            "an HTTP header cannot carry. Use a token of printable characters on one line."
        )
    return token or None


def resolve_token(
    token: str | None = None, token_file: str | os.PathLike[str] | None = None
) -> str | None:
    """The registry token from ``token_file``, else ``token``, else ``$PCS_REGISTRY_TOKEN``.

    Surrounding whitespace is stripped everywhere; a blank ``token`` or
    environment variable counts as not given. Prefer a file or the
    environment to ``token`` from a command line, which other users see in ``ps``.

    Args:
        token: a token given directly (``--token``).
        token_file: a file holding the token (``--token-file``); it must not be empty.

    Returns:
        The token, or None when no source gives one.

    Raises:
        ArgumentError: the file cannot be read, is empty, is not a small UTF-8
            text file, or a token holds a control character inside it.
    """
    if token_file is not None:
        path = Path(token_file).expanduser()
        try:
            with open(path, "rb") as fh:
                data = fh.read(_MAX_TOKEN_FILE_BYTES + 1)
        except OSError as exc:
            raise ArgumentError(
                f"Cannot read the registry token file {path}: {exc.strerror or exc}. Check "
                "the path and that you may read it (a token file should be readable by you "
                "alone: chmod 600)."
            ) from None
        if len(data) > _MAX_TOKEN_FILE_BYTES:
            raise ArgumentError(
                f"The registry token file {path} is larger than {_MAX_TOKEN_FILE_BYTES} "
                "bytes, so it is not a token file. Give the file that holds only the token."
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ArgumentError(
                f"The registry token file {path} is not UTF-8 text. Give the file that "
                "holds only the token."
            ) from None
        found = normalize_token(text, f"The registry token file {path}")
        if found is None:
            raise ArgumentError(
                f"The registry token file {path} is empty (or only whitespace). Write the "
                "server's token into it, or leave out --token-file."
            )
        return found
    return normalize_token(token, "The registry token given") or normalize_token(
        os.environ.get(TOKEN_ENV), f"${TOKEN_ENV}"
    )


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@`` (and a query by ``***``).

    Safe to show or log: the query goes too, since it may hold an API key.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"\?.*", "?***", re.sub(r"(://)[^/?#]*@", r"\1***@", url), flags=re.S)
    if "@" in parts.netloc:
        parts = parts._replace(netloc=f"***@{parts.netloc.rpartition('@')[2]}")
    if parts.query:
        parts = parts._replace(query="***")
    return urlunsplit(parts)


class _BearerAuth(requests.auth.AuthBase):
    """Sets the bearer header; as ``auth=`` it wins over URL credentials and ~/.netrc."""

    def __init__(self, token: str) -> None:
        self._header = b"Bearer " + token.encode("utf-8")

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header  # type: ignore[assignment]
        return request


# -- the registry ------------------------------------------------------------------------


class WebRegistry(Registry):
    """A :class:`~pcs.registry.Registry` whose specs and artifacts live on a registry server.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8765``; the API root
            (``http://127.0.0.1:8765/api/v1``, AgentOS's form) works too.
        token: bearer token for writes (stripped); defaults to ``$PCS_REGISTRY_TOKEN``.
        timeout: seconds to wait for an answer once connected.
        connect_timeout: seconds to wait for the connection itself, so an
            unreachable server fails fast.

    Raises:
        RegistryError: ``url`` is not an http(s) URL without query or fragment.
        ArgumentError: the token holds a control character.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 300.0,
                 connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
        shown = redact_url(url)
        try:
            parts = urlsplit(url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            valid = False
        if not valid:
            raise RegistryError(
                f"{shown!r} is not a registry server URL. Give an http:// or https:// URL, "
                "e.g. http://127.0.0.1:8765."
            )
        if parts.query or parts.fragment:
            raise RegistryError(
                f"The registry URL {shown!r} has a query ('?...') or fragment ('#...'); give "
                "the server's base URL only, e.g. http://127.0.0.1:8765."
            )
        base = url.rstrip("/")
        if base.endswith(_API):
            # AgentOS's WebRegistry took the API root (``http://host:port/api/v1``)
            base = base[: -len(_API)].rstrip("/")
        self._base = base  # with credentials: only ever handed to requests
        self.url = redact_url(self._base)
        userinfo = parts.netloc.rpartition("@")[0]
        self._secrets = sorted(
            {s for s in (userinfo, unquote(userinfo), parts.password or "") if len(s) >= 3},
            key=len, reverse=True,
        )
        self._token = (normalize_token(token, "The token= given to WebRegistry")
                       if token is not None else resolve_token())
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._session = requests.Session()

    def __repr__(self) -> str:
        return f"WebRegistry({self.url!r})"

    # -- Registry primitives -------------------------------------------------------

    def _get(self, section: str, identifier: str) -> dict[str, Any] | None:
        response = self._request("GET", self._spec_path(section, identifier))
        if _is_not_found(response):
            return None
        self._raise_for_status(response, f"read {section} spec {identifier!r}")
        body = self._json(response)
        if not isinstance(body, dict):
            raise BundleError(
                f"The registry at {self.url} sent a JSON {type(body).__name__} for "
                f"{section} spec {identifier!r}; a spec must be a JSON object. Is the URL "
                "a pcs registry server?"
            )
        return body

    def _put(self, section: str, identifier: str, body: dict[str, Any], overwrite: bool) -> None:
        # Registry.add_spec checked for a conflict with what it read; the server checks
        # again, so a spec another client wrote in between is refused with 409
        response = self._request(
            "PUT", self._spec_path(section, identifier),
            params={"force": "true" if overwrite else "false"},
            json=body, auth=self._bearer(),
        )
        self._raise_for_status(response, f"store {section} spec {identifier!r}", write=True)

    def identifiers(self, section: str) -> list[str]:
        _check_section(section)
        response = self._request("GET", f"{_API}/{section}")
        self._raise_for_status(response, f"list the {section} section")
        data = self._json(response)
        ids = data.get("identifiers") if isinstance(data, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise BundleError(
                f"The registry at {self.url} answered the {section} listing without a list "
                "of string 'identifiers'. Is the URL a pcs registry server?"
            )
        return ids

    def add_run_artifacts(self, run_id: str, local_dir: Path,
                          progress: ProgressCallback | None = None) -> None:
        """Upload a run's artifact folder (as ``.tar.gz``), replacing what the server held.

        Args:
            run_id: the run whose artifacts these are.
            local_dir: the folder to upload.
            progress: called as ``progress(description, bytes_sent, total_bytes)``.
        """
        check_run_id(run_id)
        auth = self._bearer()  # before packing: no token, no work
        # anonymous on Linux (O_TMPFILE): nothing to leave behind, even when killed
        with tempfile.TemporaryFile(prefix=f"pcs-{os.getpid()}-upload-") as archive:
            write_tar_gz(local_dir, archive)
            total = archive.tell()
            archive.seek(0)
            body = _ProgressReader(
                archive, total, f"uploading artifacts of run {run_id}", progress
            )
            response = self._request(
                "PUT", f"{_API}/runs/{run_id}/artifacts", data=body, auth=auth,
                headers={"Content-Type": "application/gzip"},
            )
        self._raise_for_status(response, f"store the artifacts of run {run_id!r}", write=True)

    def run_artifacts_dir(self, run_id: str,
                          progress: ProgressCallback | None = None) -> Path | None:
        """Download a run's artifacts into the pcs cache; None when the server has none.

        Each call downloads afresh and replaces the previous copy, since the
        server's copy may have been replaced meanwhile. Leftovers of pulls that
        were killed are swept first.

        Args:
            run_id: the run whose artifacts to fetch.
            progress: called as ``progress(description, bytes_received, total_or_None)``.

        Returns:
            The cache entry holding the artifacts, or None.
        """
        check_run_id(run_id)
        cache = cache_dir("web_registry")
        sweep_stale_temp(cache)
        response = self._request("GET", f"{_API}/runs/{run_id}/artifacts", stream=True)
        with response:
            if _is_not_found(response):
                return None
            self._raise_for_status(response, f"read the artifacts of run {run_id!r}")
            length = response.headers.get("content-length", "")
            total = int(length) if length.isdecimal() else None
            report = _Reporter(f"downloading artifacts of run {run_id}", total, progress)
            with tempfile.TemporaryFile(dir=cache, prefix=f"pcs-{os.getpid()}-download-") as archive:
                try:
                    for chunk in response.iter_content(_DOWNLOAD_CHUNK):
                        archive.write(chunk)
                        report.advance(len(chunk))
                except requests.RequestException as exc:
                    raise RegistryServerError(
                        f"The download of run {run_id!r}'s artifacts from {self.url} broke "
                        f"off ({type(exc).__name__}: {self._scrub(str(exc))}). Try again."
                    ) from None
                report.finish()
                archive.seek(0)
                dest = cache / self._entry_name(run_id)
                with in_use(dest):
                    return safe_extract_tar(archive, dest, replace=True)

    # -- extras --------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The server's health answer, e.g. ``{"status": "ok", "writes": true}``."""
        response = self._request("GET", f"{_API}/health")
        self._raise_for_status(response, "check its health")
        data = self._json(response)
        if not isinstance(data, dict):
            raise BundleError(f"The registry at {self.url} answered /health without a JSON object.")
        return data

    def close(self) -> None:
        """Close the HTTP connections this registry keeps open."""
        self._session.close()

    def clear_cache(self) -> None:
        """Remove the artifact folders this registry downloaded.

        Raises:
            CacheInUseError: another process is using some of them; the rest are removed.
        """
        cache = cache_dir("web_registry")
        key = self._url_key()
        shutil.rmtree(cache / key, ignore_errors=True)  # the layout before entries had locks
        busy = []
        for entry in sorted(cache.glob(f"{key}-*")):
            try:
                remove(entry)
            except CacheInUseError:
                busy.append(entry.name)
        if busy:
            raise CacheInUseError(
                f"Kept {len(busy)} downloaded artifact folder(s) of {self.url} that another "
                f"pcs process is using ({', '.join(busy[:3])}). Run clear_cache() again "
                "once it has finished."
            )

    # -- HTTP ----------------------------------------------------------------------

    def _url_key(self) -> str:
        return hashlib.sha256(self.url.encode()).hexdigest()[:16]

    def _entry_name(self, run_id: str) -> str:
        return f"{self._url_key()}-{run_id}"

    def _spec_path(self, section: str, identifier: str) -> str:
        _check_section(section)
        # identifiers hold '==', '/', spaces...: encode every reserved character
        return f"{_API}/{section}/{quote(identifier, safe='')}"

    def _bearer(self) -> _BearerAuth:
        if not self._token:
            raise RegistryAuthError(
                f"Cannot write to the registry at {self.url}: no token given. Pass "
                f"--token-file PATH (CLI), token= to WebRegistry, or set {TOKEN_ENV} to the "
                "server's token."
            )
        return _BearerAuth(self._token)

    def _scrub(self, text: str) -> str:
        """``text`` without the URL's credentials."""
        text = text.replace(self._base, self.url)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self._base}{path}"
        try:
            return self._session.request(
                method, url, timeout=(self.connect_timeout, self.timeout), **kwargs
            )
        except requests.ConnectTimeout:
            raise RegistryServerError(
                f"Cannot reach the registry at {self.url}: no connection within "
                f"{self.connect_timeout}s. Check the URL, the network, and that the server "
                "is running; pass connect_timeout= to WebRegistry to wait longer."
            ) from None
        except requests.ConnectionError as exc:
            upload = (
                "; an upload the server refused half-way (too large, or a wrong token) also "
                "ends like this" if method in ("PUT", "POST") else ""
            )
            raise RegistryServerError(
                f"Cannot reach the registry at {self.url} ({type(exc).__name__}): nothing "
                "answered, or the connection broke off. Check the URL and that the server "
                f"is running (start one with `pcs-registry serve`){upload}."
            ) from None
        except requests.Timeout:
            raise RegistryServerError(
                f"The registry at {self.url} did not answer {method} {path} within "
                f"{self.timeout}s. Check the server, or pass a larger timeout= to WebRegistry."
            ) from None
        except requests.RequestException as exc:
            raise RegistryServerError(
                f"The request {method} {self.url}{path} failed: {type(exc).__name__}: "
                f"{self._scrub(str(exc))}."
            ) from None

    def _json(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except (ValueError, RecursionError):
            raise BundleError(
                f"The registry at {self.url} answered {response.request.method} "
                f"{self._scrub(str(response.url))} with something that is not JSON, or "
                f"JSON nested too deep ({response.text[:100]!r}). Is the URL a pcs "
                "registry server?"
            ) from None

    def _raise_for_status(self, response: requests.Response, action: str,
                          write: bool = False) -> None:
        if response.status_code < 400:
            return
        name, message = _error_of(response)
        message = self._scrub(message)
        if response.status_code in (401, 403):
            raise RegistryAuthError(
                f"The registry at {self.url} refused the write ({action}): no or invalid "
                f"token. Set {TOKEN_ENV}, pass --token-file PATH (CLI) or token= (WebRegistry). The server said: "
                f"{message}"
            )
        if response.status_code == 409:
            raise RegistryConflictError(f"The registry at {self.url} refused to {action}: {message}")
        error_class = getattr(errors, name, None) if name else None
        if not (isinstance(error_class, type) and issubclass(error_class, RegistryError)):
            error_class = RegistryServerError
        raise error_class(
            f"The registry at {self.url} could not {action} (HTTP {response.status_code}): "
            f"{message}"
        )


# -- helpers -------------------------------------------------------------------------------


class _Reporter:
    """Calls a progress callback as bytes advance, at most every 256 KiB."""

    def __init__(self, description: str, total: int | None,
                 progress: ProgressCallback | None) -> None:
        self.description = description
        self.total = total
        self.done = 0
        self._progress = progress
        self._reported = -1
        self._report()

    def advance(self, count: int) -> None:
        self.done += count
        if self.done - self._reported >= _PROGRESS_STEP:
            self._report()

    def finish(self) -> None:
        if self.done != self._reported:
            self._report()

    def _report(self) -> None:
        if self._progress is not None:
            self._progress(self.description, self.done, self.total)
        self._reported = self.done


class _ProgressReader:
    """A binary file that reports the bytes read from it (what requests sends)."""

    def __init__(self, raw: IO[bytes], total: int, description: str,
                 progress: ProgressCallback | None) -> None:
        self._raw = raw
        self._total = total
        self._reporter = _Reporter(description, total, progress)

    def __len__(self) -> int:  # lets requests send a Content-Length
        return self._total

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        # a retry rewinds the file: count each byte once, so done never goes back
        position = self._raw.tell()
        if position > self._reporter.done:
            self._reporter.advance(position - self._reporter.done)
        if not data:
            self._reporter.finish()
        return data

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)


def _error_of(response: requests.Response) -> tuple[str | None, str]:
    """The server's ``(error name, message)``, tolerating non-JSON error pages."""
    try:
        data = response.json()
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        name = data.get("error")
        return (name if isinstance(name, str) else None), data["message"]
    return None, (response.text[:200] or response.reason or "no explanation given")


def _is_not_found(response: requests.Response) -> bool:
    """True for the registry's own 'no such spec' answer.

    Any other 404 means the URL is not a registry API (another server, a wrong
    path prefix) and must not pass for a missing spec.
    """
    return response.status_code == 404 and _error_of(response)[0] == "SpecNotFoundError"


def _check_section(section: str) -> None:
    if section not in SECTIONS:
        raise RegistryError(f"Unknown registry section {section!r}; known: {', '.join(SECTIONS)}.")
