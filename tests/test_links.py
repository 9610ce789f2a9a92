"""Run links: inner-outer, dependency-depender, rerun-of; navigable both ways."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest
from mlflow import MlflowClient

import pcs
from pcs import Component, Run


def test_inner_outer_through_the_active_run_stack(store):
    with Run(run_name="outer") as outer:
        with Run(run_name="inner1") as inner1:
            assert pcs.active_run() is inner1
            with Run(run_name="innermost") as innermost:
                pass
        assert pcs.active_run() is outer
        inner2 = Run(run_name="inner2")  # created while outer is active: nested too
        inner2.end()
    assert pcs.active_run() is None
    assert MlflowClient().get_run(inner1.identifier).data.tags["mlflow.parentRunId"] == outer.identifier
    assert inner1.outer_run == outer
    assert innermost.outer_run == inner1
    assert outer.outer_run is None
    assert [r.identifier for r in outer.inner_runs] == [inner1.identifier, inner2.identifier]
    assert [r.identifier for r in inner1.inner_runs] == [innermost.identifier]


def test_explicit_outer_run(store):
    outer = Run()
    inner = Run(outer_run=outer)
    assert inner.outer_run == outer
    assert outer.inner_runs == [inner]


def test_component_runs_nest_in_the_active_run(store):
    class Step:
        def go(self):
            return pcs.active_run().identifier

    with Run() as outer:
        run = Component.from_class(Step, instantiate=True).run_with_arg_set("go", {})
    assert run.outer_run == outer
    assert run.return_value == run.identifier  # the active run inside is the component run


def test_active_run_stack_is_per_thread_and_task(store):
    seen = {}

    def worker():
        seen["thread"] = pcs.active_run()

    async def task():
        seen["task_before"] = pcs.active_run()
        with Run() as mine:
            await asyncio.sleep(0)
            seen["task_inside"] = pcs.active_run() is mine

    with Run():
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        asyncio.run(task())
    assert seen["thread"] is None
    assert seen["task_inside"] is True
    # asyncio copies the context into a task: a run active outside is visible inside
    assert seen["task_before"] is not None
    assert contextvars.copy_context()  # the stack lives in a ContextVar


def test_dependency_depender_both_ways(store):
    with Run(run_name="data") as data:
        data.log_dict({"rows": 3}, "data.json")
    with Run(run_name="model") as model:
        model.add_dependency(data)
        model.add_dependency(data)  # idempotent
    assert model.dependency_ids == [data.identifier]
    assert model.dependency_runs == [data]
    assert data.depender_runs == [model]
    with pytest.raises(pcs.ArgumentError, match="itself"):
        model.add_dependency(model)
    with pytest.raises(pcs.RunNotFoundError):
        model.add_dependency("f" * 32)


def test_loading_an_artifact_records_the_dependency(store):
    with Run(run_name="data") as data:
        data.log_dict({"rows": [1, 2]}, "data.json")
    with Run(run_name="consumer") as consumer:
        assert Run.from_existing_run_id(data.identifier).load_dict("data.json") == {"rows": [1, 2]}
    assert consumer.refresh().dependency_ids == [data.identifier]
    assert [r.identifier for r in data.depender_runs] == [consumer.identifier]
    # outside any active run, loading records nothing
    data.load_dict("data.json")
    assert data.refresh().dependency_ids == []


def test_component_consuming_another_runs_output(store):
    with Run() as data:
        data.log_dict({"values": [1, 2, 3]}, "values.json")

    class Summer:
        def total(self, data_run_id):
            return sum(Run.from_existing_run_id(data_run_id).load_dict("values.json")["values"])

    run = Component.from_class(Summer, instantiate=True).run_with_arg_set(
        "total", {"Summer": {"total": {"data_run_id": data.identifier}}}
    )
    assert run.return_value == 6
    assert Run.from_existing_run_id(run.identifier).dependency_runs == [data]
    assert run.identifier in {r.identifier for r in data.depender_runs}


def test_rerun_of_both_ways(store):
    class One:
        def go(self):
            return 1

    run = Component.from_class(One, instantiate=True).run_with_arg_set("go", {})
    again = run.rerun()
    third = Run.from_existing_run_id(run.identifier).rerun()
    assert again.rerun_of == run and third.rerun_of == run
    assert [r.identifier for r in run.reruns] == [again.identifier, third.identifier]
    assert run.rerun_of is None
