"""The public face: pcs.__all__ matches what modules export; import stays light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pcs

MODULES = [
    "pcs.argument_set", "pcs.component", "pcs.component_run", "pcs.errors", "pcs.registry",
    "pcs.repo", "pcs.run", "pcs.run_command", "pcs.sweep",
]


def test_issue_names_are_public():
    for name in [
        "Run", "ComponentRun", "RunCommand", "Component", "ArgumentSet", "Registry",
        "InMemoryRegistry", "LocalRepo", "GitRepo", "active_run", "active_component_run", "PcsError",
    ]:
        assert name in pcs.__all__ and hasattr(pcs, name)


def test_package_all_matches_module_all():
    exported = set(pcs.__all__)
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if name[0].isupper() or name == "active_component_run" or name == "active_run":
                assert name in exported or name in {"PAGE_SIZE", "GRADES", "SECTIONS", "DEFAULT_ENTRY_POINT_NAME", "GitState", "VERDICTS", "EXECUTORS"}, (module_name, name)
    for name in exported:
        assert getattr(pcs, name) is not None


def test_every_error_derives_from_pcs_error():
    from pcs import errors

    for name in errors.__all__:
        if name == "EXIT_CODES":
            continue
        assert issubclass(getattr(errors, name), pcs.PcsError)
        assert isinstance(getattr(errors, name).exit_code, int)


def test_import_pcs_does_not_import_mlflow():
    code = "import sys, pcs; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
