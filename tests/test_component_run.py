"""Components, run commands and component runs: record at start, rerun exactly."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

import pcs
from pcs import (
    ArgumentSet,
    Component,
    ComponentRun,
    InMemoryRegistry,
    LocalRepo,
    Run,
    RunCommand,
)
from pcs.run import all_experiment_ids, search_mlflow_runs


class Simple:
    def __init__(self, x):
        self.x = x

    def fn(self, input):
        return [self.x, input]


def count_runs() -> int:
    client = MlflowClient()
    return len(search_mlflow_runs(client, "", all_experiment_ids(client), include_deleted=True))


def write_component(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


MODEL_V1 = """
    import random

    class Model:
        def __init__(self, scale=1):
            self.scale = scale

        def train(self, steps=3):
            from pcs import active_component_run
            run = active_component_run(self)
            total = 0.0
            for i in range(steps):
                total += random.random() * self.scale
                run.log_metric("total", total, step=i)
            return {"total": total, "version": 1}
"""


@pytest.fixture
def model_component(tmp_path):
    write_component(tmp_path / "src", "model.py", MODEL_V1)
    repo = LocalRepo("src", local_dir=tmp_path / "src")
    return Component.from_repo(repo, identifier="model", file_path="model.py", class_name="Model", instantiate=True)


def test_issue_example(store):
    c = Component.from_class(Simple, instantiate=True)
    run = c.run_with_arg_set("fn", ArgumentSet({"Simple": {"__init__": {"x": 1}, "fn": {"input": "hi"}}}))
    assert run.return_value == [1, "hi"]
    assert isinstance(run, ComponentRun) and run.status == "FINISHED"
    again = Run.from_existing_run_id(run.identifier).rerun()
    assert isinstance(again, ComponentRun)
    assert again.return_value == run.return_value and again.identifier != run.identifier
    assert again.rerun_of == run
    assert again.tags["pcs.run_command_id"] == run.tags["pcs.run_command_id"]


def test_plain_dict_arguments_and_component_run(store):
    c = Component.from_class(Simple, instantiate=True)
    run = c.run_with_arg_set("fn", {"Simple": {"__init__": {"x": 2}, "fn": {"input": 3}}})
    assert run.return_value == [2, 3]
    assert run.run_command.argument_set == ArgumentSet({"Simple": {"__init__": {"x": 2}, "fn": {"input": 3}}})


def test_component_run_returns_value_and_honours_default_entry_point(store, tmp_path):
    write_component(tmp_path / "m", "greeter.py", """
        class Greeter:
            DEFAULT_ENTRY_POINT = "greet"

            def greet(self, name="world"):
                return f"hello {name}"

            def shout(self, name):
                return name.upper()
    """)
    c = Component.from_repo(LocalRepo("m", tmp_path / "m"), "greeter", "greeter.py", "Greeter", instantiate=True)
    assert c.run(name="pcs") == "hello pcs"
    assert c.run("shout", name="a") == "A"
    last = Run.get_all_runs()[0]
    assert last.tags["pcs.entry_point"] == "shout"


def test_module_and_class_components_and_dependency_injection(store, tmp_path):
    write_component(tmp_path / "m", "tools.py", """
        def double(x):
            return 2 * x

        def run(x=1):
            return double(x) + OFFSET.value

        class Offset:
            value = 10

            @classmethod
            def get(cls):
                return cls.value
    """)
    write_component(tmp_path / "m", "user.py", """
        class User:
            def __init__(self, k):
                # dependencies are injected before __init__ runs
                self.k = k + self.tools.double(1)

            def go(self):
                return [self.k, self.offset.get()]
    """)
    repo = LocalRepo("m", tmp_path / "m")
    offset = Component.from_repo(repo, "offset", "tools.py", class_name="Offset")
    tools = Component.from_repo(repo, "tools", "tools.py")
    tools.add_dependency(offset, "OFFSET")
    user = Component.from_repo(repo, "user", "user.py", "User", instantiate=True)
    user.add_dependency(tools)
    user.add_dependency(offset, "offset")
    assert [c.identifier for c in user.dependency_list()] == ["user", "tools", "offset"]
    assert tools.run(x=4) == 18
    run = user.run_with_arg_set("go", {"user": {"__init__": {"k": 1}}})
    assert run.return_value == [3, 10]
    assert run.rerun().return_value == [3, 10]


def test_dependency_cycle_is_refused(tmp_path):
    a = Component("a", managed_obj=Simple)
    b = Component("b", managed_obj=Simple)
    a.add_dependency(b)
    with pytest.raises(pcs.DependencyError, match="cycle"):
        b.add_dependency(a)
    assert "a" not in b.dependencies


def test_rerun_after_editing_the_file_gives_the_original_result(store, tmp_path, model_component):
    run = model_component.run_with_arg_set("train", {"model": {"train": {"steps": 4}}}, seed=5)
    original = run.return_value
    (tmp_path / "src" / "model.py").write_text(
        (tmp_path / "src" / "model.py").read_text().replace('"version": 1', '"version": 2')
        .replace("* self.scale", "* self.scale * 100")
    )
    again = Run.from_existing_run_id(run.identifier).rerun()
    assert again.return_value == original
    assert again.run_command.identifier == run.run_command.identifier
    # the current code really is different, and runs under a different command id
    fresh = model_component.run_with_arg_set("train", {"model": {"train": {"steps": 4}}}, seed=5)
    assert fresh.return_value["version"] == 2
    assert fresh.run_command.identifier != run.run_command.identifier


def test_run_command_id_covers_code_arguments_and_seed(tmp_path, model_component):
    base = RunCommand.create(model_component, "train", {"model": {"train": {"steps": 2}}}, seed=1)
    same = RunCommand.create(model_component, "train", ArgumentSet({"model": {"train": {"steps": 2}}}), seed=1)
    assert base.identifier == same.identifier and base == same
    assert RunCommand.create(model_component, "train", {"model": {"train": {"steps": 3}}}, seed=1) != base
    assert RunCommand.create(model_component, "train", {"model": {"train": {"steps": 2}}}, seed=2) != base
    (tmp_path / "src" / "model.py").write_text((tmp_path / "src" / "model.py").read_text() + "\n# edit\n")
    assert RunCommand.create(model_component, "train", {"model": {"train": {"steps": 2}}}, seed=1) != base


def test_run_command_registry_round_trip(model_component):
    cmd = RunCommand.create(model_component, "train", {"model": {"train": {"steps": 2}}}, seed=3)
    registry = InMemoryRegistry()
    cmd.to_registry(registry)
    assert registry.get_run_command_spec(cmd.identifier) == cmd.to_spec()
    assert RunCommand.from_spec(cmd.to_spec(), model_component) == cmd
    loaded = RunCommand.from_registry(InMemoryRegistry.from_dict(registry.to_dict()), cmd.identifier)
    assert loaded == cmd and loaded.seed == 3
    tampered = cmd.to_spec() | {"seed": 4}
    with pytest.raises(pcs.RegistryError, match="hashes to"):
        RunCommand.from_spec(tampered, model_component)


def test_record_is_written_before_user_code_and_survives_a_crash(store, tmp_path):
    write_component(tmp_path / "c", "crash.py", """
        class Crash:
            def go(self, n=1):
                from pcs import active_component_run
                active_component_run(self).log_metric("before_crash", n)
                raise RuntimeError("boom")
    """)
    c = Component.from_repo(LocalRepo("c", tmp_path / "c"), "crash", "crash.py", "Crash", instantiate=True)
    with pytest.raises(RuntimeError, match="boom"):
        c.run_with_arg_set("go", {"crash": {"go": {"n": 7}}})
    failed = Run.get_all_runs()[0]
    assert isinstance(failed, ComponentRun)
    assert failed.status == "FAILED"
    assert failed.metrics["before_crash"] == 7
    paths = {a.path for a in failed.list_artifacts("pcs")}
    assert {"pcs/run_command.yaml", "pcs/code", "pcs/environment.yaml"} <= paths
    assert failed.run_command.argument_set.get_function_args("crash", "go") == {"n": 7}
    with pytest.raises(RuntimeError, match="boom"):
        failed.rerun()


def test_component_run_reloads_in_a_new_process(store, model_component):
    run = model_component.run_with_arg_set("train", {"model": {"train": {"steps": 3}}}, seed=11)
    code = textwrap.dedent(f"""
        import json
        from pcs import Run, ComponentRun
        run = Run.from_existing_run_id({run.identifier!r})
        assert isinstance(run, ComponentRun), type(run)
        cmd = run.run_command
        print(json.dumps({{"rv": run.return_value, "cmd": cmd.identifier, "seed": run.seed,
                          "args": cmd.argument_set.to_dict(), "ep": cmd.entry_point}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data == {
        "rv": run.return_value,
        "cmd": run.run_command.identifier,
        "seed": 11,
        "args": {"model": {"train": {"steps": 3}}},
        "ep": "train",
    }


def test_missing_entry_point_writes_nothing(store, model_component):
    before = count_runs()
    with pytest.raises(pcs.EntryPointNotFoundError, match="no entry point 'fit'.*train"):
        model_component.run_with_arg_set("fit", {})
    assert count_runs() == before


def test_missing_component_file_writes_nothing(store, tmp_path):
    c = Component.from_repo(LocalRepo("m", tmp_path), "ghost", "ghost.py", "Ghost")
    before = count_runs()
    with pytest.raises(pcs.ComponentFileNotFoundError, match="ghost.py does not exist"):
        c.run_with_arg_set("go", {})
    assert count_runs() == before


def test_unserializable_argument_is_refused_before_the_run(store, model_component):
    before = count_runs()
    with pytest.raises(pcs.UnserializableArgumentError, match="function.*cannot.*record"):
        model_component.run_with_arg_set("train", {"model": {"train": {"steps": lambda: 3}}})
    with pytest.raises(pcs.UnserializableArgumentError):
        model_component.run("train", steps=object())
    with pytest.raises(pcs.UnserializableArgumentError, match="finite"):
        model_component.run("train", steps=float("nan"))
    assert count_runs() == before


def test_arguments_for_unknown_component_are_refused(store, model_component):
    before = count_runs()
    with pytest.raises(pcs.ArgumentError, match="modle"):
        model_component.run_with_arg_set("train", {"modle": {"train": {"steps": 1}}})
    assert count_runs() == before


def test_wrong_init_arguments_give_a_clear_error(store, model_component):
    with pytest.raises(pcs.ArgumentError, match="Model.__init__|model.__init__"):
        model_component.run_with_arg_set("train", {"model": {"__init__": {"nope": 1}}})


def test_sys_path_does_not_grow(store, model_component):
    before = list(sys.path)
    for _ in range(3):
        model_component.run_with_arg_set("train", {"model": {"train": {"steps": 1}}})
    assert sys.path == before


def test_runs_do_not_share_module_state(store, tmp_path):
    write_component(tmp_path / "s", "counter.py", """
        CALLS = []

        def run():
            CALLS.append(1)
            return len(CALLS)
    """)
    c = Component.from_repo(LocalRepo("s", tmp_path / "s"), "counter", "counter.py")
    assert [c.run() for _ in range(3)] == [1, 1, 1]


def test_return_value_formats(store, model_component):
    c = Component.from_class(Simple, instantiate=True)
    run = c.run_with_arg_set(
        "fn", {"Simple": {"__init__": {"x": 1}, "fn": {"input": "a"}}}, return_value_format="dill"
    )
    loaded = Run.from_existing_run_id(run.identifier)
    assert loaded.tags["pcs.return_value_format"] == "dill"
    assert loaded.return_value == [1, "a"]
    with pytest.raises(pcs.ArgumentError):
        c.run_with_arg_set("fn", {}, return_value_format="xml")


def test_unrecordable_return_value_is_graded_and_reported(store, tmp_path):
    write_component(tmp_path / "o", "obj.py", """
        class Obj:
            def make(self):
                return object()
    """)
    c = Component.from_repo(LocalRepo("o", tmp_path / "o"), "obj", "obj.py", "Obj", instantiate=True)
    run = c.run_with_arg_set("make", {})
    loaded = Run.from_existing_run_id(run.identifier)
    assert loaded.tags["pcs.return_value_format"] == "none"
    assert loaded.grade == "local"
    assert any("return value" in r for r in loaded.grade_reasons)
    with pytest.raises(pcs.NotReproducibleError, match="no recorded return value"):
        loaded.return_value  # noqa: B018


def test_active_component_run_inside_entry_point(store, model_component):
    seen = {}

    class Probe:
        def look(self):
            current = pcs.active_component_run(self)
            seen["run"] = current.identifier
            seen["seed"] = current.seed
            seen["other"] = pcs.active_component_run(object())
            return 1

    run = Component.from_class(Probe, instantiate=True).run_with_arg_set("look", {}, seed=99)
    assert seen == {"run": run.identifier, "seed": 99, "other": None}
    assert pcs.active_component_run() is None


def test_inline_class_source_is_captured_for_reruns(store):
    """A class defined outside a module file (like __main__) reruns from captured source."""
    source = textwrap.dedent("""
        import math as m
        FACTOR = 3

        def helper(v):
            return v * FACTOR

        class Inline:
            def go(self, v=2):
                return [helper(v), m.floor(2.5)]
    """)
    # a script's classes live in __main__; run it in a subprocess, as a user would
    script = Path("script.py")
    script.write_text(source + textwrap.dedent("""
        if __name__ == "__main__":
            from pcs import Component, Run
            run = Component.from_class(Inline, instantiate=True).run_with_arg_set("go", {"Inline": {"go": {"v": 5}}})
            print(run.identifier)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True)
    run_id = out.stdout.strip().splitlines()[-1]
    script.unlink()
    run = Run.from_existing_run_id(run_id)
    assert run.return_value == [15, 2]
    assert run.grade == "portable"
    again = run.rerun()
    assert again.return_value == [15, 2]
    snapshot = next(iter(run.recorded_sources().values()))
    assert "import math as m" in snapshot and "FACTOR = 3" in snapshot and "def helper" in snapshot


def test_component_spec_and_registry(tmp_path, model_component):
    registry = model_component.to_registry()
    spec = registry.get_component_spec("model")
    assert spec == model_component.to_spec()
    assert registry.get_repo_spec("src")["path"] == str((tmp_path / "src").resolve())
    rebuilt = Component.from_registry(registry, "model")
    assert rebuilt.to_spec() == model_component.to_spec()
    path = tmp_path / "reg.yaml"
    registry.to_yaml(path)
    assert Component.from_registry_file(path, "model").to_spec() == model_component.to_spec()


def test_print_status_tree(capsys, tmp_path, model_component):
    other = Component.from_class(Simple, instantiate=True)
    model_component.add_dependency(other, "simple")
    model_component.print_status_tree()
    out = capsys.readouterr().out
    assert "model" in out and "simple = Simple" in out


def test_component_importing_a_file_next_to_it_records_it_and_is_portable(store, tmp_path):
    """The helper is part of the snapshot (the closure), so the run is portable (it was 'local')."""
    write_component(tmp_path / "p", "helpers.py", "def triple(x):\n    return 3 * x\n")
    write_component(tmp_path / "p", "main_mod.py", """
        from helpers import triple

        def run(x=2):
            return triple(x)
    """)
    before = list(sys.path)
    c = Component.from_repo(LocalRepo("p", tmp_path / "p"), "main_mod", "main_mod.py")
    run = c.run_with_arg_set("run", {"main_mod": {"run": {"x": 5}}})
    assert run.return_value == 15
    assert run.grade == "portable", run.grade_reasons
    entry = run.run_command.code["main_mod:helpers"]
    assert entry["path"] == "helpers.py" and entry["module"] == "helpers"
    assert (tmp_path / "p" / "helpers.py").read_text() in run.recorded_sources().values()
    assert sys.path == before
    assert "helpers" not in sys.modules


def test_class_imported_before_its_file_changed_runs_the_recorded_code(store, tmp_path, monkeypatch):
    """The record never lies: what runs is the file's text that is snapshotted."""
    import importlib

    folder = tmp_path / "nb"
    write_component(folder, "nbmod.py", "class Step:\n    def go(self):\n        return 1\n")
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module("nbmod")
    (folder / "nbmod.py").write_text("class Step:\n    def go(self):\n        return 2\n")
    run = Component.from_class(module.Step, instantiate=True).run_with_arg_set("go", {})
    snapshot = next(iter(run.recorded_sources().values()))
    assert "return 2" in snapshot
    assert run.return_value == 2
    assert run.rerun(verify=True).verification.reproduced


def test_rerun_stays_in_the_original_experiment(store):
    from mlflow import MlflowClient

    experiment = MlflowClient().create_experiment(f"exp-{uuid.uuid4().hex[:8]}")
    c = Component.from_class(Simple, instantiate=True)
    run = c.run_with_arg_set(
        "fn", {"Simple": {"__init__": {"x": 1}, "fn": {"input": 2}}}, experiment_id=experiment
    )
    assert run.experiment_id == experiment
    assert run.rerun().experiment_id == experiment


def test_status_of_values_that_look_like_markup(store, capsys):
    with Run(run_name="[bold]x") as run:
        run.log_param("path", "[/tmp/data]")
        run.set_tag("note", "[red]not a style")
    Run.from_existing_run_id(run.identifier).print_status(detailed=True)
    out = capsys.readouterr().out
    assert "[/tmp/data]" in out and "[red]not a style" in out and "[bold]x" in out


def test_non_utf8_registry_file_is_a_pcs_error(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("components: {caf\xe9: {}}\n".encode("latin-1"))
    with pytest.raises(pcs.RegistryError, match="UTF-8"):
        Component.from_registry_file(bad, "x")


def test_component_whose_file_path_was_cleared_gives_a_pcs_error(tmp_path):
    c = Component.from_repo(LocalRepo("r", tmp_path), "m", "m.py")
    c.file_path = None
    with pytest.raises(pcs.ComponentError, match="no file_path"):
        c.source()


def test_a_component_run_makes_the_floors_store_calls_and_no_more(store, monkeypatch):
    """Issue 22.1: the run with its tags and description, its params, its end tags, its end.

    No read of the run back (a run younger than half its heartbeat interval cannot have been
    ended by another host's cleanup), and no separate write of the description.
    """
    import inspect

    component = Component.from_class(Simple, instantiate=True)
    component.run_with_arg_set("fn", {"Simple": {"__init__": {"x": 1}, "fn": {"input": 2}}}, seed=1)
    store_class = type(MlflowClient()._tracking_client.store)  # SqlAlchemyStore or RestStore
    calls: list[tuple[str, tuple[str, ...]]] = []
    for name in ("create_run", "get_run", "log_batch", "set_tag", "update_run_info", "log_param"):
        original = getattr(store_class, name)
        signature = inspect.signature(original)

        def counted(self, *args, _original=original, _name=name, _signature=signature, **kwargs):
            given = _signature.bind(self, *args, **kwargs).arguments
            calls.append((_name, tuple(k for k in ("metrics", "params", "tags")
                                       if given.get(k) and _name == "log_batch")))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(store_class, name, counted)
    run = component.run_with_arg_set("fn", {"Simple": {"__init__": {"x": 1}, "fn": {"input": 2}}},
                                     seed=1)
    assert calls == [
        ("create_run", ()), ("log_batch", ("params",)), ("log_batch", ("tags",)),
        ("update_run_info", ()),
    ]
    tags = MlflowClient().get_run(run.identifier).data.tags
    assert tags["mlflow.note.content"].startswith("Recorded by pcs: `Simple.fn` with 2 arguments")
    assert run.return_value == [1, 2]


def test_runs_of_one_process_share_their_record_texts_and_never_write_into_them(store, tmp_path):
    """The record files that repeat from run to run are links to one text, placed (never
    written into) per run: a run whose text differs gets its own file, the others keep theirs."""
    import os

    from pcs.record.code import place_text

    component = Component.from_class(Simple, instantiate=True)
    runs = [component.run_with_arg_set("fn", {"Simple": {"__init__": {"x": 1}, "fn": {"input": i}}},
                                       seed=1) for i in range(2)]
    for run in runs:
        assert run.return_value == [1, run.run_command.argument_set.to_dict()["Simple"]["fn"]["input"]]
        env = run.download_artifacts("pcs/environment.yaml").read_text()
        assert "python" in env.lower()
    if store == "sqlite" or str(store).startswith("sqlite"):
        first, second = (Path(r._artifacts().artifact_dir) / "pcs" for r in runs)
        for name in ("environment.yaml", "code.yaml", "inputs.yaml"):
            assert (first / name).stat().st_ino == (second / name).stat().st_ino, name
        assert (first / "run_command.yaml").read_text() != (second / "run_command.yaml").read_text()

    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    place_text(one, "a: 1\n")
    place_text(two, "a: 1\n")
    assert one.stat().st_ino == two.stat().st_ino  # one text, linked
    place_text(one, "a: 2\n")
    assert one.read_text() == "a: 2\n" and two.read_text() == "a: 1\n"
    assert os.stat(two).st_nlink >= 2  # the process's copy still holds the old text
