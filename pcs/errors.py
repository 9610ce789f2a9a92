"""Every error pcs raises on purpose, and the exit codes of the ``pcs`` CLI.

All of them derive from :class:`PcsError`, so ``except pcs.PcsError`` catches
anything pcs refuses to do. Each message says what went wrong, why, and what
to do about it. ``exit_code`` is what the ``pcs`` CLI exits with when the
error reaches it; the registry server maps ``http_status`` to its response.

::

    PcsError
    ├── RunNotFoundError            an id that no tracking store or registry knows
    ├── NotReproducibleError        a run without a RunCommand, or a record too thin to rerun
    ├── ReproducibilityError        a strict verified rerun that diverged
    ├── UnverifiableError           a strict verified rerun with nothing to compare
    ├── ArgumentError               bad user input (CLI values, argument sets)
    │   ├── UnserializableArgumentError   a value pcs cannot record
    │   ├── InputLimitError         input too large, too deep or not representable
    │   └── AmbiguousRunIdError     a run id prefix that several runs share
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
    ├── EnvironmentBuildError       a recorded environment that cannot be rebuilt
    ├── TrackingStoreError          the MLflow tracking store is unreachable or refused
    │   └── StoreOutageError        the store stayed away longer than PCS_STORE_RETRY_S mid-run
    ├── CacheInUseError             a cache entry that a running pcs process still uses
    ├── ExperimentNotFoundError     an experiment name or id the tracking store does not know
    ├── ScriptError                 a script that cannot be run (no such file, a folder, bad syntax)
    ├── ScriptExitError             a script run that exited with a non-zero code
    └── DiskFullError               no space left where pcs writes (ENOSPC)

Exit codes of the ``pcs`` CLI (one table for every command):

====  ======================================================================
code  meaning
====  ======================================================================
0     success (a verified rerun or diff: reproduced)
1     diverged: a verified rerun or ``pcs diff`` did not reproduce
2     usage: bad options, arguments or input values
3     not found: no such run, spec or component
4     not rerunnable: the record is not enough to execute the run again
5     unverifiable: nothing that could differ was compared
6     the component failed: it could not be loaded, or its code raised
7     registry, bundle or registry server error
8     a recorded environment cannot be rebuilt
9     a git repo cannot be read at the recorded version
10    the MLflow tracking store is unreachable or refused the request
11    a disk is full: no space left where pcs was writing (the path is named)
130   interrupted (Ctrl-C); SIGTERM/SIGHUP end the process as the signal does
====  ======================================================================
"""

from __future__ import annotations

__all__ = [
    "EXIT_CODES",
    "PcsError",
    "RunNotFoundError",
    "NotReproducibleError",
    "ReproducibilityError",
    "UnverifiableError",
    "ArgumentError",
    "UnserializableArgumentError",
    "InputLimitError",
    "AmbiguousRunIdError",
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
    "TrackingStoreError",
    "CacheInUseError",
    "StoreOutageError",
    "ExperimentNotFoundError",
    "ScriptError",
    "ScriptExitError",
    "DiskFullError",
]

# the CLI's exit codes by meaning; the error classes below carry them
EXIT_CODES = {
    "ok": 0,
    "diverged": 1,
    "usage": 2,
    "not_found": 3,
    "not_rerunnable": 4,
    "unverifiable": 5,
    "component_failed": 6,
    "registry": 7,
    "environment": 8,
    "repo": 9,
    "tracking_store": 10,
    "disk_full": 11,
    "interrupted": 130,
}


class PcsError(Exception):
    """Root of every error pcs raises on purpose."""

    exit_code = EXIT_CODES["usage"]
    http_status = 400


class RunNotFoundError(PcsError):
    """No tracking store or registry holds a run with this id."""

    exit_code = EXIT_CODES["not_found"]
    http_status = 404


class NotReproducibleError(PcsError):
    """The run's record is not enough to execute it again."""

    exit_code = EXIT_CODES["not_rerunnable"]


class ReproducibilityError(PcsError):
    """A strict verified rerun produced a different result."""

    exit_code = EXIT_CODES["diverged"]

    def __init__(self, message: str, verification: object = None) -> None:
        super().__init__(message)
        self.verification = verification


class UnverifiableError(PcsError):
    """A strict verified rerun compared nothing that could have differed."""

    exit_code = EXIT_CODES["unverifiable"]

    def __init__(self, message: str, verification: object = None) -> None:
        super().__init__(message)
        self.verification = verification


class ArgumentError(PcsError):
    """Bad input given by the user."""

    exit_code = EXIT_CODES["usage"]


class UnserializableArgumentError(ArgumentError):
    """A value that cannot be recorded faithfully in YAML/JSON."""


class InputLimitError(ArgumentError):
    """Input larger, deeper or longer than pcs accepts, or a number MLflow cannot hold."""

    http_status = 413


class AmbiguousRunIdError(ArgumentError):
    """A run id prefix that more than one run starts with."""


class ComponentError(PcsError):
    """A component that cannot be loaded or run."""

    exit_code = EXIT_CODES["component_failed"]


class ComponentFileNotFoundError(ComponentError):
    """The source file of a component does not exist."""


class EntryPointNotFoundError(ComponentError):
    """The component has no callable with the requested name."""


class DependencyError(ComponentError):
    """A dependency cycle, or a dependency that cannot be found."""


class RepoError(PcsError):
    """A repo that cannot be read at the requested version."""

    exit_code = EXIT_CODES["repo"]


class DirtyRepoError(RepoError):
    """A file has uncommitted changes where a commit is required."""


class RegistryError(PcsError):
    """A registry, a spec or a bundle that cannot be used."""

    exit_code = EXIT_CODES["registry"]


class SpecNotFoundError(RegistryError):
    """The registry has no spec with this identifier."""

    exit_code = EXIT_CODES["not_found"]
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

    exit_code = EXIT_CODES["environment"]


class TrackingStoreError(PcsError):
    """The MLflow tracking store cannot be reached, or refused a request."""

    exit_code = EXIT_CODES["tracking_store"]
    http_status = 502


class CacheInUseError(PcsError):
    """A cache entry that a running pcs process still uses cannot be removed."""

    exit_code = EXIT_CODES["usage"]


class StoreOutageError(TrackingStoreError):
    """The tracking store stayed away longer than ``PCS_STORE_RETRY_S`` while a run was writing."""


class ExperimentNotFoundError(PcsError):
    """An experiment name or id (``--experiment``, ``MLFLOW_EXPERIMENT_*``) the store does not know."""

    exit_code = EXIT_CODES["not_found"]
    http_status = 404


class ScriptError(PcsError):
    """A script that cannot be run: no such file, a folder, a syntax error, no such module."""

    exit_code = EXIT_CODES["usage"]


class ScriptExitError(PcsError):
    """A script that exited with a non-zero code; the CLI exits with that code.

    Args:
        message: what happened.
        code: the script's exit code (``exit_code``).
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = code if isinstance(code, int) and 0 < code < 256 else 1


class DiskFullError(PcsError):
    """No space left on a disk pcs writes to (TMPDIR, output, PCS_HOME, artifacts, store)."""

    exit_code = EXIT_CODES["disk_full"]
    http_status = 507
