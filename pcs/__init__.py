"""pcs: reproducible runs of Python code, recorded in MLflow.

``import pcs`` stays fast: MLflow is imported only when a run touches the store.
"""

from pcs.argument_set import ArgumentSet
from pcs.cleanup import cleanup_stale_runs
from pcs.component import Component
from pcs.component_run import ComponentRun, active_component_run
from pcs.errors import (
    EXIT_CODES,
    AmbiguousRunIdError,
    ArgumentError,
    BundleError,
    CacheInUseError,
    ComponentError,
    ComponentFileNotFoundError,
    DependencyError,
    DirtyRepoError,
    DiskFullError,
    EntryPointNotFoundError,
    EnvironmentBuildError,
    ExperimentNotFoundError,
    FormatVersionError,
    InputLimitError,
    NotReproducibleError,
    PcsError,
    RegistryAuthError,
    RegistryConflictError,
    RegistryError,
    RegistryServerError,
    RepoError,
    ReproducibilityError,
    RunNotFoundError,
    ScriptError,
    ScriptExitError,
    SpecNotFoundError,
    StoreOutageError,
    TrackingStoreError,
    UnserializableArgumentError,
    UnverifiableError,
    UploadTooLargeError,
)
from pcs.registry import InMemoryRegistry, Registry
from pcs.repo import GitRepo, LocalRepo, Repo
from pcs.run import Run, active_run
from pcs.run_command import RunCommand
from pcs.script import run_script, script_component, sweep_script
from pcs.secrets import Secret, provide_secret, secret
from pcs.sweep import SweepRun, SweepVerification, intrange, loguniform, uniform
from pcs.verification import Difference, Verification, compare_runs

# the features the run core reaches through pcs._features register themselves on import
from pcs import _render, freeze, isolated, transfer  # noqa: E402, F401  isort: skip

from pcs._version import __version__ as __version__  # noqa: E402


def __getattr__(name: str):
    # the HTTP client pulls in requests; load it only when asked for
    if name == "WebRegistry":
        from pcs.web_registry import WebRegistry

        return WebRegistry
    raise AttributeError(f"module 'pcs' has no attribute {name!r}")


__all__ = [
    "ArgumentSet",
    "cleanup_stale_runs",
    "Component",
    "ComponentRun",
    "active_component_run",
    "InMemoryRegistry",
    "Registry",
    "GitRepo",
    "LocalRepo",
    "Repo",
    "Run",
    "active_run",
    "RunCommand",
    "SweepRun",
    "SweepVerification",
    "loguniform",
    "uniform",
    "intrange",
    "Verification",
    "Difference",
    "compare_runs",
    "WebRegistry",
    "EXIT_CODES",
    "AmbiguousRunIdError",
    "ArgumentError",
    "BundleError",
    "CacheInUseError",
    "ComponentError",
    "ComponentFileNotFoundError",
    "DependencyError",
    "DirtyRepoError",
    "EntryPointNotFoundError",
    "EnvironmentBuildError",
    "FormatVersionError",
    "InputLimitError",
    "NotReproducibleError",
    "PcsError",
    "RegistryAuthError",
    "RegistryConflictError",
    "RegistryError",
    "RegistryServerError",
    "RepoError",
    "ReproducibilityError",
    "RunNotFoundError",
    "SpecNotFoundError",
    "TrackingStoreError",
    "UnserializableArgumentError",
    "UnverifiableError",
    "UploadTooLargeError",
    "StoreOutageError",
    "ExperimentNotFoundError",
    "ScriptError",
    "ScriptExitError",
    "run_script",
    "script_component",
    "sweep_script",
    "Secret",
    "secret",
    "provide_secret",
    "DiskFullError",
]
