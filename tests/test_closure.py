"""The code closure: modules a component imports from its own repo are recorded and served fresh."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

import pcs
from pcs import Component, ComponentRun, GitRepo, InMemoryRegistry, LocalRepo, Run, RunCommand
from pcs.run_command import PORTABLE_LOCAL_PATH

HELPERS_V1 = """\
import random


def step(scale):
    return random.random() * scale
"""

AGENT = """\
from pathlib import Path

from helpers import step


class Agent:
    def run(self, n=3, scale=1.0):
        values = [step(scale) for _ in range(n)]
        return {"values": values, "summary": describe(values)}

    def where(self):
        return {"agent": __file__, "helpers": step.__globals__["__file__"]}

    def read_data(self, name="data.txt"):
        return (Path(__file__).parent / name).read_text().strip()


def describe(values):
    import reporting  # a lazy import: resolved when the function runs

    return reporting.summary(values)
"""

REPORTING = """\
def summary(values):
    return f"{len(values)} values, max {max(values):.3f}"
"""


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def agent_in(folder: Path, identifier: str = "agent", repo_id: str = "src") -> Component:
    write(folder, {"agent.py": AGENT, "helpers.py": HELPERS_V1, "reporting.py": REPORTING})
    return Component.from_repo(LocalRepo(repo_id, folder), identifier, "agent.py", "Agent",
                               instantiate=True)


def load(run: Run) -> ComponentRun:
    loaded = Run.from_existing_run_id(run.identifier)
    assert isinstance(loaded, ComponentRun)
    return loaded


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=pcs tests", "-c", "user.email=tests@pcs.invalid",
         "-c", "commit.gpgsign=false", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.strip()


# -- recording the closure ------------------------------------------------------------------------


def test_helpers_and_lazy_imports_are_recorded_before_the_run_starts(tmp_path):
    run = agent_in(tmp_path / "src").run_with_arg_set("run", {}, seed=1)

    code = run.run_command.code
    assert set(code) == {"agent", "agent:helpers", "agent:reporting"}
    assert code["agent:helpers"] == {
        "component": "agent", "module": "helpers", "path": "helpers.py",
        "file": "src:helpers.py", "sha256": pcs.specs.sha256_bytes(HELPERS_V1.encode()),
    }
    # found by the scan of literal imports, so the record written at the start covers it
    # and was not rewritten at the end
    assert load(run).tags["pcs.run_command_id"] == run.run_command.identifier
    assert run.return_value["summary"].startswith("3 values")
    assert run.grade == "portable", run.grade_reasons
    assert set(load(run).recorded_sources().values()) >= {HELPERS_V1, REPORTING}
    record = load(run).code_record["components"]
    assert record["agent:helpers"]["local_path"] == str((tmp_path / "src" / "helpers.py").resolve())
    assert record["agent"]["local_dir"] == str((tmp_path / "src").resolve())


def test_editing_a_helper_changes_the_command_id(tmp_path):
    component = agent_in(tmp_path / "src")
    before = RunCommand.create(component, "run", {}, seed=1)
    (tmp_path / "src" / "helpers.py").write_text(HELPERS_V1.replace("* scale", "* scale * 2"))
    after = RunCommand.create(component, "run", {}, seed=1)

    assert before.identifier != after.identifier
    assert before.code["agent"] == after.code["agent"]
    assert before.code["agent:helpers"]["sha256"] != after.code["agent:helpers"]["sha256"]


def test_recorded_rerun_reproduces_and_current_code_diverges_naming_the_helper(tmp_path):
    run = agent_in(tmp_path / "src").run_with_arg_set("run", {"agent": {"run": {"n": 4}}}, seed=7)
    (tmp_path / "src" / "helpers.py").write_text(HELPERS_V1.replace("* scale", "* scale * 2"))

    recorded = load(run).rerun(verify=True)
    assert recorded.verification.verdict == "reproduced", str(recorded.verification)
    assert recorded.return_value == run.return_value

    current = load(run).rerun(code="current", verify=True)
    report = current.verification
    assert report.verdict == "diverged"
    assert report.causes == ["code: helpers.py changed"]
    assert "no recorded difference explains it" not in str(report)
    assert current.return_value["values"] == [2 * v for v in run.return_value["values"]]


def test_a_stale_module_in_sys_modules_never_satisfies_the_closure(tmp_path, monkeypatch):
    component = agent_in(tmp_path / "src")
    stale = types.ModuleType("helpers")
    stale.step = lambda scale: -1.0  # what a user imported earlier, or an older version
    monkeypatch.setitem(sys.modules, "helpers", stale)

    run = component.run_with_arg_set("run", {"agent": {"run": {"n": 2}}}, seed=3)
    assert all(v >= 0 for v in run.return_value["values"])
    again = load(run).rerun(verify=True)
    assert again.verification.reproduced
    assert sys.modules["helpers"] is stale  # put back when the runs ended
    assert "reporting" not in sys.modules


def test_a_module_imported_only_at_run_time_is_added_and_the_record_rewritten(tmp_path):
    folder = write(tmp_path / "src", {
        "plugin_a.py": "VALUE = 41\n",
        "dyn.py": """\
            import importlib


            class Dyn:
                def run(self, which="a"):
                    return importlib.import_module("plugin_" + which).VALUE + 1
        """,
    })
    component = Component.from_repo(LocalRepo("src", folder), "dyn", "dyn.py", "Dyn", instantiate=True)
    command = RunCommand.create(component, "run", {}, seed=1)
    assert "dyn:plugin_a" not in command.code  # no literal import names it

    run = component.run_with_arg_set("run", {}, seed=1)

    assert run.return_value == 42
    assert "dyn:plugin_a" in run.run_command.code
    stored = load(run)
    assert stored.tags["pcs.run_command_id"] == run.run_command.identifier != command.identifier
    assert "dyn:plugin_a" in stored.run_command.code  # pcs/run_command.yaml rewritten too
    assert "dyn:plugin_a" in stored.code_record["components"]
    (folder / "plugin_a.py").unlink()
    again = stored.rerun(verify=True)
    assert again.verification.reproduced and again.return_value == 42


def test_file_is_a_real_path_in_first_runs_and_reruns(tmp_path):
    folder = tmp_path / "src"
    component = agent_in(folder)
    (folder / "data.txt").write_text("hello from a data file\n")

    assert component.run("read_data") == "hello from a data file"
    run = component.run_with_arg_set("where", {})
    assert run.return_value == {
        "agent": str((folder / "agent.py").resolve()),
        "helpers": str((folder / "helpers.py").resolve()),
    }
    rerun = load(run).rerun()
    paths = {k: Path(v) for k, v in rerun.return_value.items()}
    sources = Path(pcs._config.cache_dir("sources"))
    assert paths["agent"].parent == paths["helpers"].parent
    assert paths["agent"].parent.parent == sources  # the materialised snapshot
    assert paths["helpers"].read_text() == HELPERS_V1
    assert not list(sources.glob(".*pcs-*"))  # no temp folder left behind


def test_helper_package_with_relative_imports_inside_it(tmp_path):
    folder = write(tmp_path / "src", {
        "tools/__init__.py": "from .core import double\n",
        "tools/core.py": "def double(x):\n    return 2 * x\n",
        "main_mod.py": "from tools import double\n\n\ndef run(x=2):\n    return double(x)\n",
    })
    component = Component.from_repo(LocalRepo("src", folder), "main_mod", "main_mod.py")
    run = component.run_with_arg_set("run", {"main_mod": {"run": {"x": 21}}})

    assert run.return_value == 42
    code = run.run_command.code
    assert code["main_mod:tools"]["path"] == "tools/__init__.py"
    assert code["main_mod:tools.core"]["path"] == "tools/core.py"
    assert run.grade == "portable"
    (folder / "tools" / "core.py").write_text("def double(x):\n    return 3 * x\n")
    assert load(run).rerun().return_value == 42


def test_a_module_found_on_sys_path_under_the_repo_root_is_part_of_the_closure(tmp_path, monkeypatch):
    root = write(tmp_path / "project", {
        "lib/__init__.py": "",
        "lib/util.py": "def inc(x):\n    return x + 1\n",
        "agents/runner.py": "from lib.util import inc\n\n\ndef run(x=1):\n    return inc(x)\n",
    })
    monkeypatch.syspath_prepend(str(root))  # as when the project's root is the working directory
    component = Component.from_repo(LocalRepo("project", root), "runner", "agents/runner.py")

    run = component.run_with_arg_set("run", {"runner": {"run": {"x": 41}}})

    assert run.return_value == 42
    assert run.run_command.code["runner:lib.util"]["path"] == "lib/util.py"
    (root / "lib" / "util.py").unlink()
    assert load(run).rerun().return_value == 42


def test_installed_and_standard_modules_are_not_the_closure_but_are_listed(tmp_path):
    folder = write(tmp_path / "src", {"uses.py": """\
        import json


        def run():
            import numpy  # lazy, third party

            return json.dumps(int(numpy.int64(3)))
    """})
    run = Component.from_repo(LocalRepo("src", folder), "uses", "uses.py").run_with_arg_set("run", {})

    assert run.return_value == "3"
    assert set(run.run_command.code) == {"uses"}
    assert run.imported_modules == ["numpy"]
    assert load(run).imported_modules == ["numpy"]
    stdlib = pcs._yaml.load_yaml(load(run).load_text("pcs/imports.yaml"), "imports")["stdlib"]
    assert "json" in stdlib


def test_runs_leave_sys_path_and_sys_modules_as_they_were(tmp_path):
    component = agent_in(tmp_path / "src")
    before_path, before_meta = list(sys.path), list(sys.meta_path)
    component.run_with_arg_set("run", {}, seed=1)
    assert sys.path == before_path and sys.meta_path == before_meta
    assert "helpers" not in sys.modules and "reporting" not in sys.modules


def test_nested_component_runs_with_helpers_of_the_same_name(tmp_path):
    inner_dir = write(tmp_path / "inner", {
        "helpers.py": "NAME = 'inner'\n",
        "inner.py": "from helpers import NAME\n\n\ndef run():\n    return NAME\n",
    })
    outer_dir = write(tmp_path / "outer", {
        "helpers.py": "NAME = 'outer'\n",
        "outer.py": f"""\
            from helpers import NAME


            def run():
                from pcs import Component, LocalRepo
                inner = Component.from_repo(LocalRepo("inner", {str(inner_dir)!r}), "inner", "inner.py")
                got = inner.run()
                import helpers
                return [NAME, got, helpers.NAME]
        """,
    })
    run = Component.from_repo(LocalRepo("outer", outer_dir), "outer", "outer.py").run_with_arg_set("run", {})
    assert run.return_value == ["outer", "inner", "outer"]
    assert "helpers" not in sys.modules


# -- ids do not depend on where the code lies -------------------------------------------------------


def test_two_copies_of_a_local_repo_give_one_command_and_publish_without_conflict(tmp_path):
    a = agent_in(tmp_path / "a" / "copy", repo_id="local_dir")
    b = agent_in(tmp_path / "elsewhere" / "deeper" / "copy2", repo_id="local_dir")
    run_a = a.run_with_arg_set("run", {}, seed=5)
    run_b = b.run_with_arg_set("run", {}, seed=5)

    assert run_a.run_command.identifier == run_b.run_command.identifier
    registry = InMemoryRegistry()
    load(run_a).to_registry(registry)
    load(run_b).to_registry(registry)  # no RegistryConflictError
    assert registry.get_repo_spec("local_dir")["path"] == PORTABLE_LOCAL_PATH
    # where the files were is in pcs/code.yaml, and code="current" finds them there
    assert load(run_b).code_record["components"]["agent"]["local_dir"] == str(
        (tmp_path / "elsewhere" / "deeper" / "copy2").resolve()
    )
    assert load(run_b).rerun(code="current", verify=True).verification.reproduced


def _import_as(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_from_class_in_two_copies_gives_one_command(tmp_path, monkeypatch):
    ids = []
    for where in ("one", "two/levels"):
        folder = write(tmp_path / where, {"twin.py": "class Twin:\n    def go(self, x=1):\n        return x\n"})
        module = _import_as("twin", folder / "twin.py")
        component = Component.from_class(module.Twin, instantiate=True)
        ids.append(RunCommand.create(component, "go", {}, seed=1).identifier)
        monkeypatch.delitem(sys.modules, "twin")
    assert ids[0] == ids[1]


# -- git repos --------------------------------------------------------------------------------------


def make_origin(tmp_path: Path) -> tuple[Path, Path, str]:
    work = write(tmp_path / "git_work", {"agent.py": AGENT, "helpers.py": HELPERS_V1, "reporting.py": REPORTING})
    git("init", "-q", "-b", "main", cwd=work)
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "first", cwd=work)
    origin = tmp_path / "origin.git"
    git("clone", "-q", "--bare", str(work), str(origin), cwd=tmp_path)
    git("remote", "add", "origin", str(origin), cwd=work)
    git("fetch", "-q", "origin", cwd=work)
    git("branch", "-q", "-u", "origin/main", cwd=work)
    return work, origin, git("rev-parse", "HEAD", cwd=work)


def test_git_component_with_helpers_reruns_from_its_snapshot_without_the_remote(tmp_path, monkeypatch):
    import shutil

    _, origin, sha = make_origin(tmp_path)
    component = Component.from_repo(GitRepo("models", url=str(origin)), f"agent=={sha}", "agent.py",
                                    "Agent", instantiate=True)
    run = component.run_with_arg_set("run", {}, seed=2)
    assert set(run.run_command.code) == {f"agent=={sha}", f"agent=={sha}:helpers", f"agent=={sha}:reporting"}

    shutil.rmtree(origin)
    monkeypatch.setenv("PCS_HOME", str(tmp_path / "fresh_home"))  # no cached clone either
    again = load(run).rerun(verify=True)
    assert again.verification.reproduced, str(again.verification)
    assert again.code_record["components"][f"agent=={sha}"]["git"]["commit"] == sha


def test_code_git_checks_out_the_recorded_commit_of_a_local_folder(tmp_path, monkeypatch):
    work, origin, sha = make_origin(tmp_path)
    component = Component.from_repo(LocalRepo("local_dir", work), "agent", "agent.py", "Agent", instantiate=True)
    run = component.run_with_arg_set("run", {}, seed=4)
    (work / "helpers.py").write_text(HELPERS_V1.replace("* scale", "* scale * 3"))  # not committed

    from_git = load(run).rerun(code="git", verify=True)
    assert from_git.verification.reproduced  # the commit holds the helper as it ran
    assert from_git.run_command.component.identifier == f"agent=={sha}"
    assert isinstance(from_git.run_command.component.repo, GitRepo)

    import shutil

    shutil.rmtree(origin)
    monkeypatch.setenv("PCS_HOME", str(tmp_path / "fresh_home"))
    with pytest.raises(pcs.RepoError) as info:
        load(run).rerun(code="git")
    assert "\n" not in str(info.value) and "origin.git" in str(info.value)
    assert info.value.exit_code == 9


def test_code_git_needs_a_recorded_remote(tmp_path):
    run = agent_in(tmp_path / "src").run_with_arg_set("run", {}, seed=1)
    with pytest.raises(pcs.NotReproducibleError, match="code='git'.*agent.*remote"):
        load(run).rerun(code="git")
    with pytest.raises(pcs.ArgumentError, match="'recorded', 'current' or 'git'"):
        load(run).rerun(code="head")


# -- records made before closures ------------------------------------------------------------------


def test_a_record_without_a_closure_still_reruns_with_its_helpers_from_the_folder(tmp_path):
    component = agent_in(tmp_path / "src")
    new = RunCommand.create(component, "run", {}, seed=1)
    data = new.to_registry().to_dict()
    # how pcs wrote it before: the folder's path, and no closure in the code map
    data["repos"]["src"]["path"] = str((tmp_path / "src").resolve())
    spec = data["run_commands"].pop(new.identifier)
    spec["code"] = {"agent": spec["code"]["agent"]}
    old_id = RunCommand.from_spec({k: v for k, v in spec.items() if k != "identifier"}, component).identifier
    data["run_commands"][old_id] = spec | {"identifier": old_id}
    old = RunCommand.from_registry(InMemoryRegistry(data), old_id)
    assert old.identifier == old_id and not old.closure_entries("agent")

    old.use_sources({new.code["agent"]["sha256"]: AGENT})
    rerun = old.run()

    assert rerun.return_value["summary"].startswith("3 values")
    assert "agent:helpers" in rerun.run_command.code  # the rerun's record has the closure


def test_relative_imports_keep_todays_behaviour(tmp_path, monkeypatch):
    folder = write(tmp_path / "pkgroot", {
        "relpkg/__init__.py": "",
        "relpkg/util.py": "def one():\n    return 1\n",
        "relpkg/model.py": "from .util import one\n\n\nclass Model:\n    def go(self):\n        return one()\n",
    })
    monkeypatch.syspath_prepend(str(folder))
    import relpkg.model

    run = Component.from_class(relpkg.model.Model, instantiate=True).run_with_arg_set("go", {})
    assert run.return_value == 1
    assert run.grade == "not-rerunnable"
    assert any("relative to its package" in r for r in run.grade_reasons)
