"""A registry on a ``pcs-registry`` server, reached over HTTP.

Example::

    registry = WebRegistry("http://127.0.0.1:8765", token="secret")
    registry.add_component_spec({"identifier": "agent==1.0", "class_name": "Agent"})
    Component.from_registry(registry, "agent==1.0")

Reads need no token; writes send ``Authorization: Bearer TOKEN`` (default:
the ``PCS_REGISTRY_TOKEN`` environment variable).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from pcs import errors
from pcs._archive import check_run_id, safe_extract_tar, write_tar_gz
from pcs._config import cache_dir
from pcs.errors import (
    BundleError,
    RegistryAuthError,
    RegistryConflictError,
    RegistryError,
    RegistryServerError,
)
from pcs.registry import SECTIONS, Registry

__all__ = ["WebRegistry", "TOKEN_ENV"]

TOKEN_ENV = "PCS_REGISTRY_TOKEN"
_API = "/api/v1"
_CHUNK = 1 << 20


class WebRegistry(Registry):
    """A :class:`~pcs.registry.Registry` whose specs and artifacts live on a registry server.

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8765``.
        token: bearer token for writes; defaults to ``$PCS_REGISTRY_TOKEN``.
        timeout: seconds to wait for the server to connect and to answer.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 300.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise RegistryError(
                f"{url!r} is not a registry server URL. Give an http:// or https:// URL, "
                "e.g. http://127.0.0.1:8765."
            )
        self.url = url.rstrip("/")
        self._token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout
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
            json=body, headers=self._auth_headers(),
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

    def add_run_artifacts(self, run_id: str, local_dir: Path) -> None:
        """Upload a run's artifact folder (as ``.tar.gz``), replacing what the server held."""
        check_run_id(run_id)
        headers = {**self._auth_headers(), "Content-Type": "application/gzip"}
        with tempfile.TemporaryFile() as archive:
            write_tar_gz(local_dir, archive)
            archive.seek(0)
            response = self._request(
                "PUT", f"{_API}/runs/{run_id}/artifacts", data=archive, headers=headers
            )
        self._raise_for_status(response, f"store the artifacts of run {run_id!r}", write=True)

    def run_artifacts_dir(self, run_id: str) -> Path | None:
        """Download a run's artifacts into the pcs cache; None when the server has none.

        Each call downloads afresh and replaces the previous copy, since the
        server's copy may have been replaced meanwhile.
        """
        check_run_id(run_id)
        response = self._request("GET", f"{_API}/runs/{run_id}/artifacts", stream=True)
        with response:
            if _is_not_found(response):
                return None
            self._raise_for_status(response, f"read the artifacts of run {run_id!r}")
            url_key = hashlib.sha256(self.url.encode()).hexdigest()[:16]
            dest = cache_dir("web_registry") / url_key / run_id
            with tempfile.TemporaryFile() as archive:
                try:
                    for chunk in response.iter_content(_CHUNK):
                        archive.write(chunk)
                except requests.RequestException as exc:
                    raise RegistryServerError(
                        f"The download of run {run_id!r}'s artifacts from {self.url} broke "
                        f"off ({type(exc).__name__}: {exc}). Try again."
                    ) from None
                archive.seek(0)
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
        """Remove the artifact folders this registry downloaded."""
        url_key = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        shutil.rmtree(cache_dir("web_registry") / url_key, ignore_errors=True)

    # -- HTTP ----------------------------------------------------------------------

    def _spec_path(self, section: str, identifier: str) -> str:
        _check_section(section)
        # identifiers hold '==', '/', spaces...: encode every reserved character
        return f"{_API}/{section}/{quote(identifier, safe='')}"

    def _auth_headers(self) -> dict[str, str]:
        if not self._token:
            raise RegistryAuthError(
                f"Cannot write to the registry at {self.url}: no token given. Pass "
                f"token= to WebRegistry or set {TOKEN_ENV} to the server's token."
            )
        return {"Authorization": f"Bearer {self._token}"}

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.url}{path}"
        try:
            return self._session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.ConnectionError as exc:
            raise RegistryServerError(
                f"Cannot reach the registry at {self.url} ({type(exc).__name__}): nothing "
                "answered, or the connection broke off. Check the URL and that the server "
                "is running (start one with `pcs-registry serve`); an upload the server "
                "refused half-way (too large, or a wrong token) also ends like this."
            ) from None
        except requests.Timeout:
            raise RegistryServerError(
                f"The registry at {self.url} did not answer {method} {path} within "
                f"{self.timeout}s. Check the server, or pass a larger timeout= to WebRegistry."
            ) from None
        except requests.RequestException as exc:
            raise RegistryServerError(
                f"The request {method} {url} failed: {type(exc).__name__}: {exc}."
            ) from None

    def _json(self, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise BundleError(
                f"The registry at {self.url} answered {response.request.method} "
                f"{response.url} with something that is not JSON "
                f"({response.text[:100]!r}). Is the URL a pcs registry server?"
            ) from None

    def _raise_for_status(self, response: requests.Response, action: str,
                          write: bool = False) -> None:
        if response.status_code < 400:
            return
        name, message = _error_of(response)
        if response.status_code in (401, 403):
            raise RegistryAuthError(
                f"The registry at {self.url} refused the write ({action}): no or invalid "
                f"token. Pass token= to WebRegistry or set {TOKEN_ENV}. The server said: "
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


def _error_of(response: requests.Response) -> tuple[str | None, str]:
    """The server's ``(error name, message)``, tolerating non-JSON error pages."""
    try:
        data = response.json()
    except ValueError:
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
