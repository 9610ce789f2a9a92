"""Distributions loaded before a run count as used when the run imports them (issue 16.7).

An ``import`` of a module already in ``sys.modules`` loads nothing, so a notebook that
imported a library before the run, or an in-process rerun after its original, recorded
fewer used distributions, and verification named them as removed. Real components and
runs in this process; omegaconf (a dependency of the test extra's hydra-core) is the
library, imported here before the runs.
"""

from __future__ import annotations

import builtins
import importlib
from pathlib import Path

import omegaconf  # noqa: F401 - loaded before every run below, as a notebook would have it

from pcs import Component, LocalRepo
from pcs.record.imports import ImportWatch

PLUGIN = """\
import importlib


class C:
    def go(self, plugin="omegaconf"):
        return importlib.import_module(plugin).__name__ if plugin else None
"""

STATEMENT = """\
class C:
    def go(self):
        import omegaconf
        return omegaconf.__name__
"""


def _component(tmp_path: Path, source: str) -> Component:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "comp.py").write_text(source)
    return Component.from_repo(LocalRepo("src", folder), "c", "comp.py", "C", instantiate=True)


def test_a_plugin_loaded_before_the_run_is_a_used_distribution(tmp_path):
    run = _component(tmp_path, PLUGIN).run_with_arg_set("go", {}, seed=1)
    assert "omegaconf" in run.environment["used_distributions"]
    again = run.rerun(verify=True)
    report = again.verification
    assert report.verdict == "reproduced", str(report)
    assert "omegaconf" in again.environment["used_distributions"]
    assert not any("distributions changed" in c for c in report.causes), report.causes


def test_a_library_loaded_before_but_not_imported_by_the_run_is_not_used(tmp_path):
    run = _component(tmp_path, PLUGIN).run_with_arg_set("go", {"c": {"go": {"plugin": ""}}}, seed=1)
    assert "omegaconf" not in run.environment["used_distributions"]


def test_the_watch_sees_statements_and_import_module_and_leaves_no_hook_behind():
    before = (builtins.__import__, importlib.import_module)
    with ImportWatch() as watch:
        exec("import json.decoder\nfrom os import path\n", {"__name__": "user"})  # noqa: S102
        importlib.import_module("email.utils")
        exec("import csv\n", {"__name__": "pcs.something"})  # noqa: S102 - pcs's own import
    assert watch.names == {"json", "os", "email"}
    assert (builtins.__import__, importlib.import_module) == before
