"""Every error pcs raises on purpose.

All of them derive from :class:`PcsError`, so ``except pcs.PcsError`` catches
anything pcs refuses to do. Each message says what went wrong, why, and what
to do about it. ``exit_code`` is what the ``pcs`` CLI exits with when the
error reaches it; the registry server maps ``http_status`` to its response.

::

    PcsError
    ├── RunNotFoundError            an id that no tracking store or registry knows
    ├── NotReproducibleError        a run without a RunCommand, or a record too thin to rerun
    ├── ReproducibilityError        a strict verified rerun that diverged
    ├── ArgumentError               bad user input (CLI values, argument sets)
    │   └── UnserializableArgumentError   a value pcs cannot record
    ├── ComponentError              a component that cannot be loaded or run
    │   ├── ComponentFileNotFoundError
    │   ├── EntryPointNotFoundError
    │   └── DependencyError         a cycle or a missing dependency
    ├── RepoError                   a repo that cannot be read at a version
    │   └── DirtyRepoError          uncommitted changes where a commit is required
    ├── RegistryError               a registry or bundle that cannot be used
    │   ├── SpecNotFoundError
    │   ├── RegistryConflictError   a different spec under the same identifier
    │   ├── FormatVersionError      written by a newer pcs
    │   ├── BundleError             malformed, truncated or unsafe bundle
    │   │   └── UploadTooLargeError a body larger than the registry server accepts
    │   └── RegistryServerError     the registry server refused or failed
    │       └── RegistryAuthError   a write without a valid token
    └── EnvironmentBuildError       a recorded environment that cannot be rebuilt
"""

from __future__ import annotations

__all__ = [
    "PcsError",
    "RunNotFoundError",
    "NotReproducibleError",
    "ReproducibilityError",
    "ArgumentError",
    "UnserializableArgumentError",
    "ComponentError",
    "ComponentFileNotFoundError",
    "EntryPointNotFoundError",
    "DependencyError",
    "RepoError",
    "DirtyRepoError",
    "RegistryError",
    "SpecNotFoundError",
    "RegistryConflictError",
    "FormatVersionError",
    "BundleError",
    "UploadTooLargeError",
    "RegistryServerError",
    "RegistryAuthError",
    "EnvironmentBuildError",
]


class PcsError(Exception):
    """Root of every error pcs raises on purpose."""

    exit_code = 1
    http_status = 400


class RunNotFoundError(PcsError):
    """No tracking store or registry holds a run with this id."""

    exit_code = 3
    http_status = 404


class NotReproducibleError(PcsError):
    """The run's record is not enough to execute it again."""

    exit_code = 4


class ReproducibilityError(PcsError):
    """A strict verified rerun produced a different result."""

    exit_code = 5

    def __init__(self, message: str, verification: object = None) -> None:
        super().__init__(message)
        self.verification = verification


class ArgumentError(PcsError):
    """Bad input given by the user."""

    exit_code = 2


class UnserializableArgumentError(ArgumentError):
    """A value that cannot be recorded faithfully in YAML/JSON."""


class ComponentError(PcsError):
    """A component that cannot be loaded or run."""


class ComponentFileNotFoundError(ComponentError):
    """The source file of a component does not exist."""


class EntryPointNotFoundError(ComponentError):
    """The component has no callable with the requested name."""


class DependencyError(ComponentError):
    """A dependency cycle, or a dependency that cannot be found."""


class RepoError(PcsError):
    """A repo that cannot be read at the requested version."""


class DirtyRepoError(RepoError):
    """A file has uncommitted changes where a commit is required."""


class RegistryError(PcsError):
    """A registry, a spec or a bundle that cannot be used."""


class SpecNotFoundError(RegistryError):
    """The registry has no spec with this identifier."""

    http_status = 404


class RegistryConflictError(RegistryError):
    """A different spec is already stored under the same identifier."""

    http_status = 409


class FormatVersionError(RegistryError):
    """A file written by a newer pcs than this one."""


class BundleError(RegistryError):
    """A bundle or server response that is malformed, truncated or unsafe."""


class UploadTooLargeError(BundleError):
    """A request body larger than the registry server accepts."""

    http_status = 413


class RegistryServerError(RegistryError):
    """The registry server refused a request or failed to answer."""

    http_status = 502


class RegistryAuthError(RegistryServerError):
    """A write to the registry server without a valid bearer token."""

    http_status = 401


class EnvironmentBuildError(PcsError):
    """A recorded environment cannot be rebuilt on this machine."""
