"""What a run records about where it ran: environment, requirements, seed, grade."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import random
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from pcs import (
    Component,
    ComponentFileNotFoundError,
    LocalRepo,
    NotReproducibleError,
    Run,
)
from pcs.environment import (
    SeedReport,
    _normalize,
    capture_environment,
    environment_fingerprint,
    imported_modules,
    installed_distributions,
    loaded_top_level_modules,
    modules_used_by_run,
    required_distributions,
    used_distributions,
    used_environment_yaml,
)

RANDOM_SOURCE = """\
import random


class Draw:
    def run(self, n=3):
        return [random.random() for _ in range(n)]
"""

NUMPY_SOURCE = """\
import numpy


class Draw:
    def run(self, n=3):
        return [float(v) for v in numpy.random.rand(n)]
"""

SEED_SOURCE = """\
import random

from pcs import active_component_run


class Seeded:
    def run(self):
        me = active_component_run(self)
        own = random.Random(me.seed)
        return {"seed": me.seed, "own": own.random(), "run_id": me.identifier}
"""


def component_in(folder: Path, name: str, source: str, class_name: str, **kw) -> Component:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(source, encoding="utf-8")
    return Component.from_repo(
        LocalRepo(f"{name}_dir", folder), name, f"{name}.py", class_name, instantiate=True, **kw
    )


def read_artifact(run: Run, path: str, tmp_path: Path) -> str:
    from mlflow.artifacts import download_artifacts

    local = download_artifacts(run_id=run.identifier, artifact_path=path, dst_path=str(tmp_path))
    return Path(local).read_text(encoding="utf-8")


# -- environment ------------------------------------------------------------------------


def recorded_environment(run: Run, tmp_path: Path) -> dict:
    """``{**start, **end}``: pcs/environment.yaml with pcs/environment_used.yaml when recorded."""
    env = yaml.safe_load(read_artifact(run, "pcs/environment.yaml", tmp_path / "start"))
    try:
        end = yaml.safe_load(read_artifact(run, "pcs/environment_used.yaml", tmp_path / "end"))
    except Exception:  # noqa: BLE001 - not recorded (component_run does not write it yet)
        end = None
    return {**env, **(end or {})}


def test_environment_yaml_and_fingerprint_tag(tmp_path):
    run = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw").run_with_arg_set(
        "run", {}, seed=1
    )
    env = yaml.safe_load(read_artifact(run, "pcs/environment.yaml", tmp_path / "dl"))

    assert env["python"]["version"] == platform.python_version()
    assert env["python"]["implementation"] == platform.python_implementation()
    assert env["platform"]["system"] == platform.system()
    assert env["platform"]["machine"] == platform.machine()
    distributions = env["distributions"]
    assert distributions["mlflow"] == importlib.metadata.version("mlflow")
    assert distributions["pyyaml"] == importlib.metadata.version("PyYAML")
    assert distributions["gitpython"] == importlib.metadata.version("GitPython")
    assert len(distributions) > 10
    assert env["seed"] == 1
    assert env["determinism"]["cpu"]["count"] == os.cpu_count()
    assert "numpy" in env["determinism"]["frameworks"]  # MLflow imported it before the run

    # the tag is the fingerprint of the run's record as it stands at its end
    fingerprint = run.tags["pcs.environment_fingerprint"]
    whole = recorded_environment(run, tmp_path / "whole")
    assert fingerprint == whole["fingerprint"] == environment_fingerprint(whole)
    # the same process makes the same fingerprint
    again = component_in(tmp_path / "src2", "draw", RANDOM_SOURCE, "Draw").run_with_arg_set(
        "run", {}, seed=2
    )
    assert again.tags["pcs.environment_fingerprint"] == fingerprint


def test_fingerprint_changes_with_a_distribution_version(tmp_path):
    run = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw").run_with_arg_set(
        "run", {}, seed=1
    )
    env = run.environment
    # the fingerprint covers the distributions the run used (pcs here), not all installed
    assert env["used_distributions"]["pcs"]
    used_changed = dict(env, used_distributions=dict(env["used_distributions"], pcs="0.0.1"))
    assert environment_fingerprint(used_changed) != environment_fingerprint(env)
    unused_changed = dict(env, distributions=dict(env["distributions"], mlflow="0.0.1"))
    assert environment_fingerprint(unused_changed) == environment_fingerprint(env)
    assert run.tags["pcs.environment_fingerprint"] == environment_fingerprint(env)


def test_pythonhashseed_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONHASHSEED", "123")
    run = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw").run_with_arg_set(
        "run", {}, seed=1
    )
    assert run.environment["pythonhashseed"] == "123"


def test_requirements_file_content_is_recorded(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    pinned = "# what this needs\nnumpy==2.0.0\nPyYAML==6.0.1\n"
    (folder / "requirements.txt").write_text(pinned, encoding="utf-8")
    component = component_in(
        folder, "draw", RANDOM_SOURCE, "Draw", requirements_path="requirements.txt"
    )
    run = component.run_with_arg_set("run", {}, seed=1)

    assert read_artifact(run, "pcs/requirements/draw.txt", tmp_path / "dl") == pinned
    assert run.code_record["requirements"]["draw"]["path"] == "requirements.txt"
    assert run.grade == "portable", run.grade_reasons


def test_requirements_that_pin_nothing_make_the_run_local(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "requirements.txt").write_text("numpy\nrequests>=2\n", encoding="utf-8")
    component = component_in(
        folder, "draw", RANDOM_SOURCE, "Draw", requirements_path="requirements.txt"
    )
    run = component.run_with_arg_set("run", {}, seed=1)

    assert run.grade == "local"
    (reason,) = [r for r in run.grade_reasons if "requirements.txt" in r]
    assert "numpy" in reason and "requests>=2" in reason
    # the tag holds the same reasons, as JSON
    assert json.loads(run.tags["pcs.reproducibility_reasons"]) == run.grade_reasons


def test_missing_requirements_file_fails_before_the_run(tmp_path):
    component = component_in(
        tmp_path / "src", "draw", RANDOM_SOURCE, "Draw", requirements_path="nope.txt"
    )
    with pytest.raises(ComponentFileNotFoundError, match="nope.txt"):
        component.run_with_arg_set("run", {}, seed=1)
    assert Run.get_all_runs() == []


# -- distributions ----------------------------------------------------------------------


def dist_info(folder: Path, name: str, version: str, *, requires=(), top_level=None, files=()) -> None:
    """A real installed distribution: a *.dist-info folder (and its files) in ``folder``."""
    stem = f"{name.replace('-', '_')}-{version}"
    info = folder / f"{stem}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n\nA long description.\n")
    if top_level is not None:
        (info / "top_level.txt").write_text("".join(f"{t}\n" for t in top_level))
    record = []
    for path in files:
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("VALUE = 1\n")
        record.append(f"{path},sha256=x,10")
    record.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture
def site_dir(tmp_path, monkeypatch):
    """An empty folder first on sys.path, for distributions made by a test."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_installed_distributions_agree_with_importlib_metadata():
    expected: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        expected.setdefault(_normalize(dist.metadata["Name"]), dist.version)
    assert installed_distributions() == expected


def test_egg_info_names_come_from_their_metadata(site_dir):
    # folder names that a name-version pattern reads wrongly, or not at all
    (site_dir / "foo-1-0.egg-info").mkdir()
    (site_dir / "foo-1-0.egg-info" / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: foo\nVersion: 1.0\n")
    (site_dir / "bar.egg-info").mkdir()  # a development install: no version in the name
    (site_dir / "bar.egg-info" / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: Bar_Baz\nVersion: 2.0\n")
    (site_dir / "qux_dist-3.0-py3.11.egg-info").write_text(  # a single-file egg-info
        "Metadata-Version: 1.1\nName: qux.dist\nVersion: 3.0\n"
    )
    found = installed_distributions()
    assert found["foo"] == "1.0" and "foo-1" not in found
    assert found["bar-baz"] == "2.0"
    assert found["qux-dist"] == "3.0"


def test_distributions_are_read_once_per_sys_path_state(site_dir, monkeypatch):
    import importlib.metadata

    scans = []
    real = importlib.metadata.distributions

    def counted(*args, **kwargs):
        scans.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(importlib.metadata, "distributions", counted)
    installed_distributions()
    for _ in range(100):
        installed_distributions()
    assert len(scans) == 1  # cached: the metadata is read once for this sys.path state
    dist_info(site_dir, "late-arrival", "0.1")  # installing changes the folder's mtime
    assert installed_distributions()["late-arrival"] == "0.1"
    assert len(scans) == 2  # and once more after the install


def test_used_distributions_map_modules_to_their_distributions(site_dir):
    import pcs

    dist_info(site_dir, "pcs-declared-dist", "1.0", top_level=["pcs_declared"])
    dist_info(site_dir, "pcs-record-dist", "2.0", files=["pcs_recorded/__init__.py", "pcs_single.py"])
    used = used_distributions(
        [
            "numpy.linalg", "yaml", "pcs_declared", "pcs_recorded.sub", "pcs_single",
            "random", "os.path", "sys",  # the standard library
            "_pcs_components.draw_0123", "no_such_module",  # provided by no distribution
        ]
    )
    assert used == {
        "numpy": importlib.metadata.version("numpy"),
        "pcs": pcs.__version__,  # always in: the run ran under pcs
        "pcs-declared-dist": "1.0",
        "pcs-record-dist": "2.0",
        "pyyaml": importlib.metadata.version("PyYAML"),
    }
    assert list(used) == sorted(used)
    assert used_distributions([]) == {"pcs": pcs.__version__}


def test_used_distributions_agree_with_packages_distributions():
    mapping = importlib.metadata.packages_distributions()
    versions = installed_distributions()
    copies: dict[str, int] = {}
    for dist in importlib.metadata.distributions():
        name = _normalize(dist.metadata["Name"])
        copies[name] = copies.get(name, 0) + 1
    for module, names in mapping.items():
        if not module.isidentifier() or module in sys.stdlib_module_names or module == "pcs":
            continue
        if any(copies.get(_normalize(n), 0) > 1 for n in names):
            # a distribution installed twice on sys.path (one shadows the other): the map
            # names it for the files of both copies, pcs for those of the one that wins
            continue
        expected = {_normalize(n): versions[_normalize(n)] for n in names if _normalize(n) in versions}
        expected.pop("pcs", None)  # pcs is always in, at the running version: checked elsewhere
        used = used_distributions([module])
        used.pop("pcs")
        assert used == expected, module


def test_required_distributions_follow_requirements_extras_and_markers(site_dir):
    dist_info(site_dir, "pcs-app", "1.0", requires=[
        "pcs-lib-b>=1",
        "pcs-lib-c[fast]",
        'pcs-lib-old; python_version < "3"',  # not for this Python
        "pcs-not-installed",  # unmet where the run ran: left out
        "pcs",  # pcs's own requirements are its runtime, not the run's
    ])
    dist_info(site_dir, "pcs-lib-b", "1.5")
    dist_info(site_dir, "pcs-lib-c", "2.0", requires=['pcs-lib-d; extra == "fast"', 'pcs-lib-e; extra == "slow"'])
    dist_info(site_dir, "pcs-lib-d", "3.0", requires=["pcs-app"])  # a cycle back to a used one
    dist_info(site_dir, "pcs-lib-e", "4.0")
    dist_info(site_dir, "pcs-lib-old", "5.0")
    required = required_distributions({"pcs-app": "1.0", "pcs": "0"})
    assert required == {"pcs-lib-b": "1.5", "pcs-lib-c": "2.0", "pcs-lib-d": "3.0"}


def test_requirements_are_read_as_importlib_metadata_reads_them():
    from pcs.environment import _scan

    scan = _scan()
    for name, dist in scan.dists.items():
        assert sorted(scan.requires[name]) == sorted(dist.requires or []), name


def test_imported_modules_are_read_from_the_sources():
    source = textwrap.dedent(
        """
        import os, numpy.linalg as la
        from yaml import safe_load
        from . import sibling
        from .pkg import thing

        def later():
            import torch
            from sklearn.linear_model import LinearRegression
        """
    )
    assert imported_modules([source, "import random\n", "this is not python ("]) == {
        "os", "numpy", "yaml", "torch", "sklearn", "random",
    }


def test_modules_used_by_run_add_what_the_run_loaded_but_not_pcs_runtime(site_dir, monkeypatch):
    dist_info(site_dir, "pcs-plugin-dist", "1.0", top_level=["pcs_plugin"])
    (site_dir / "pcs_plugin.py").write_text("VALUE = 1\n")
    for name in ("pcs_plugin", "json", "uvicorn"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    before = loaded_top_level_modules()
    importlib.import_module("pcs_plugin")  # loaded by name: no source says "import pcs_plugin"
    importlib.import_module("json")  # the standard library
    importlib.import_module("uvicorn")  # pcs's runtime (as MLflow loading more of itself)
    names = modules_used_by_run(["import random\n"], before)
    assert names == {"random", "pcs_plugin"}
    assert used_distributions(names)["pcs-plugin-dist"] == "1.0"


def test_used_record_and_its_fingerprint(site_dir):
    import pcs

    dist_info(site_dir, "pcs-app", "1.0", top_level=["pcs_app"], requires=["pcs-lib-b"])
    dist_info(site_dir, "pcs-lib-b", "1.5")
    report = SeedReport(5, ["random", "numpy"], ["numpy"])
    fingerprint, text = used_environment_yaml(["pcs_app", "random"], report)
    end = yaml.safe_load(text)
    assert end["used_distributions"] == {"pcs": pcs.__version__, "pcs-app": "1.0"}
    assert end["required_distributions"] == {"pcs-lib-b": "1.5"}
    assert end["fingerprint"] == fingerprint
    assert end["seeded"] == report.to_dict()
    assert end["determinism"]["cpu"]["count"] == os.cpu_count()
    # the fingerprint covers Python, platform and used distributions, not everything installed
    start = capture_environment()
    whole = {**start, **end}
    assert environment_fingerprint(whole) == fingerprint
    changed = dict(whole, used_distributions={**end["used_distributions"], "pcs-app": "1.1"})
    assert environment_fingerprint(changed) != fingerprint
    # what they require counts too: it decides what the used code runs on
    changed = dict(whole, required_distributions={"pcs-lib-b": "1.6"})
    assert environment_fingerprint(changed) != fingerprint
    more_installed = dict(whole, distributions={**start["distributions"], "other": "1"})
    assert environment_fingerprint(more_installed) == fingerprint
    assert environment_fingerprint(start) != fingerprint  # no used record: over what is installed


# -- seeds ------------------------------------------------------------------------------


def test_given_seed_is_recorded_and_seeds_random(tmp_path):
    component = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw")
    random.seed(999)  # whatever state the process is in must not matter
    run = component.run_with_arg_set("run", {}, seed=1234)

    expected = random.Random(1234)
    assert run.return_value == [expected.random() for _ in range(3)]
    assert run.seed == 1234
    assert run.tags["pcs.seed"] == "1234"
    loaded = Run.from_existing_run_id(run.identifier)
    assert loaded.seed == 1234
    assert loaded.run_command.seed == 1234

    assert component.run_with_arg_set("run", {}, seed=1234).return_value == run.return_value
    assert component.run_with_arg_set("run", {}, seed=1235).return_value != run.return_value


def test_drawn_seed_is_recorded_and_reused_by_a_rerun(tmp_path):
    component = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw")
    first = component.run_with_arg_set("run", {})
    second = component.run_with_arg_set("run", {})

    assert isinstance(first.seed, int) and first.tags["pcs.seed"] == str(first.seed)
    assert first.seed != second.seed
    drawn = random.Random(first.seed)
    assert first.return_value == [drawn.random() for _ in range(3)]
    rerun = Run.from_existing_run_id(first.identifier).rerun()
    assert rerun.seed == first.seed
    assert rerun.return_value == first.return_value


@pytest.mark.skipif(importlib.util.find_spec("numpy") is None, reason="numpy is not installed")
def test_numpy_is_seeded_too(tmp_path):
    import numpy

    component = component_in(tmp_path / "src", "draw", NUMPY_SOURCE, "Draw")
    numpy.random.seed(5)
    run = component.run_with_arg_set("run", {}, seed=42)
    assert run.return_value == [float(v) for v in numpy.random.RandomState(42).rand(3)]
    assert component.run_with_arg_set("run", {}, seed=42).return_value == run.return_value


def test_seed_is_available_inside_the_entry_point(tmp_path):
    component = component_in(tmp_path / "src", "seeded", SEED_SOURCE, "Seeded")
    run = component.run_with_arg_set("run", {}, seed=77)
    value = run.return_value
    assert value["seed"] == 77
    assert value["own"] == random.Random(77).random()
    assert value["run_id"] == run.identifier


def test_negative_seed_is_refused(tmp_path):
    from pcs import ArgumentError

    component = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw")
    with pytest.raises(ArgumentError, match="seed"):
        component.run_with_arg_set("run", {}, seed=-1)


# -- grades -----------------------------------------------------------------------------


def test_self_contained_snapshot_is_portable(tmp_path):
    run = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw").run_with_arg_set(
        "run", {"draw": {"run": {"n": 2}}}, seed=1
    )
    assert run.grade == "portable"
    assert run.tags["pcs.reproducibility"] == "portable"
    assert run.grade_reasons


def test_component_importing_a_sibling_file_records_it_and_is_portable(tmp_path, monkeypatch):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "sibling_helper_mod.py").write_text("FACTOR = 3\n", encoding="utf-8")
    source = (
        "import sibling_helper_mod\n\n\n"
        "class Uses:\n"
        "    def run(self, x=1):\n"
        "        return x * sibling_helper_mod.FACTOR\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "sibling_helper_mod", raising=False)
    run = component_in(folder, "uses", source, "Uses").run_with_arg_set(
        "run", {"uses": {"run": {"x": 2}}}, seed=1
    )
    assert run.return_value == 6
    assert run.grade == "portable", run.grade_reasons
    assert "uses:sibling_helper_mod" in run.run_command.code  # the helper is in the snapshot


class Unreadable:
    def run(self):
        return 1


def test_inline_component_without_source_is_not_rerunnable():
    component = Component(
        "Unreadable", class_name="Unreadable", instantiate=True, managed_obj=Unreadable,
        inline_source=None, inline_problems=["the source of class Unreadable could not be read"],
    )
    run = component.run_with_arg_set("run", {}, seed=1)
    assert run.return_value == 1
    assert run.grade == "not-rerunnable"
    assert any("could not be read" in r for r in run.grade_reasons)


def test_inline_component_with_unrecordable_globals_is_not_rerunnable(tmp_path):
    source = "class Unreadable:\n    def run(self):\n        return 1\n"
    component = Component(
        "Unreadable", class_name="Unreadable", instantiate=True, managed_obj=Unreadable,
        inline_source=source,
        inline_problems=["the global lock (lock) used by Unreadable cannot be recorded"],
    )
    run = component.run_with_arg_set("run", {}, seed=1)
    assert run.return_value == 1
    assert run.grade == "not-rerunnable"
    assert run.grade_reasons[0] == "the global lock (lock) used by Unreadable cannot be recorded"

    with pytest.raises(NotReproducibleError, match="not-rerunnable"):
        Run.from_existing_run_id(run.identifier).rerun()

    # pcs status RUN_ID shows the grade and its reasons (rendered in-process: fast)
    from io import StringIO

    from rich.console import Console

    from pcs import _render

    out = StringIO()
    _render.print_run_status(run, detailed=True, out=Console(file=out, width=200))
    assert "not-rerunnable" in out.getvalue()
    assert "cannot be recorded" in out.getvalue()


def test_status_shows_each_runs_grade(tmp_path):
    portable = component_in(tmp_path / "a", "draw", RANDOM_SOURCE, "Draw").run_with_arg_set(
        "run", {}, seed=1
    )
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "requirements.txt").write_text("numpy\n", encoding="utf-8")
    local = component_in(
        folder, "draw", RANDOM_SOURCE, "Draw", requirements_path="requirements.txt"
    ).run_with_arg_set("run", {}, seed=1)
    blocked = Component(
        "Unreadable", class_name="Unreadable", instantiate=True, managed_obj=Unreadable,
        inline_source="class Unreadable:\n    def run(self):\n        return 1\n",
        inline_problems=["the global lock (lock) used by Unreadable cannot be recorded"],
    ).run_with_arg_set("run", {}, seed=1)

    table = run_cli("status").stdout
    lines = {
        run.identifier: next(ln for ln in table.splitlines() if run.identifier in ln)
        for run in (portable, local, blocked)
    }
    assert "portable" in lines[portable.identifier]
    assert "local" in lines[local.identifier] and "portable" not in lines[local.identifier]
    assert "not-rerunnable" in lines[blocked.identifier]


def test_run_status_line_shows_the_grade(tmp_path):
    from io import StringIO

    from rich.console import Console

    from pcs import _render

    run = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw").run_with_arg_set(
        "run", {}, seed=1
    )
    out = StringIO()
    _render.print_run_status(run, out=Console(file=out, width=200))
    assert "portable" in out.getvalue()
