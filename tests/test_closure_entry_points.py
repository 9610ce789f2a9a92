"""Async and generator entry points: their body runs to the end, and its result is the return value."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from pcs import Component, LocalRepo, Run

AGENT = """\
import asyncio

import pcs


class Agent:
    async def arun(self, x=1):
        await asyncio.sleep(0)
        run = pcs.active_component_run(self)
        run.log_metric("awaited", 1)
        return {"x": x + 1, "run": run.identifier}

    def squares(self, n=3):
        for i in range(n):
            yield i * i

    async def ticks(self, n=3):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def broken(self):
        await asyncio.sleep(0)
        raise ValueError("the async body ran and failed")

    def broken_generator(self):
        yield 1
        raise ValueError("the generator ran and failed")

    def returns_coroutine(self):
        return self.arun(x=10)
"""


def agent(tmp_path: Path) -> Component:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "agent.py").write_text(textwrap.dedent(AGENT), encoding="utf-8")
    return Component.from_repo(LocalRepo("src", folder), "agent", "agent.py", "Agent", instantiate=True)


def all_runs():
    import mlflow

    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_an_async_entry_point_is_awaited_in_its_run(tmp_path):
    run = agent(tmp_path).run_with_arg_set("arun", {"agent": {"arun": {"x": 2}}})

    assert run.status == "FINISHED"
    assert run.return_value == {"x": 3, "run": run.identifier}
    assert Run.from_existing_run_id(run.identifier).data.metrics["awaited"] == 1


def test_a_generator_entry_point_is_consumed_into_a_list(tmp_path):
    run = agent(tmp_path).run_with_arg_set("squares", {"agent": {"squares": {"n": 4}}})

    assert run.status == "FINISHED"
    assert run.return_value == [0, 1, 4, 9]
    assert Run.from_existing_run_id(run.identifier).return_value == [0, 1, 4, 9]


def test_an_async_generator_entry_point_is_consumed_into_a_list(tmp_path):
    run = agent(tmp_path).run_with_arg_set("ticks", {})

    assert run.return_value == [0, 1, 2]


def test_an_entry_point_returning_a_coroutine_is_awaited(tmp_path):
    run = agent(tmp_path).run_with_arg_set("returns_coroutine", {})

    assert run.return_value["x"] == 11


def test_a_failing_async_body_fails_the_run(tmp_path):
    component = agent(tmp_path)
    with pytest.raises(ValueError, match="the async body ran and failed"):
        component.run_with_arg_set("broken", {})
    [failed] = all_runs()
    assert failed.info.status == "FAILED"
    assert "the async body ran and failed" in failed.data.tags["pcs.error"]


def test_a_generator_failing_midway_fails_the_run(tmp_path):
    component = agent(tmp_path)
    with pytest.raises(ValueError, match="the generator ran and failed"):
        component.run_with_arg_set("broken_generator", {})
    assert [r.info.status for r in all_runs()] == ["FAILED"]


def test_an_async_entry_point_runs_when_the_caller_already_runs_a_loop(tmp_path):
    component = agent(tmp_path)

    async def notebook_cell():
        # a notebook or an async program calls pcs synchronously inside its loop
        return component.run_with_arg_set("arun", {"agent": {"arun": {"x": 5}}})

    run = asyncio.run(notebook_cell())

    assert run.status == "FINISHED"
    assert run.return_value == {"x": 6, "run": run.identifier}


def test_a_verified_rerun_of_a_generator_entry_point_reproduces(tmp_path):
    run = agent(tmp_path).run_with_arg_set("squares", {"agent": {"squares": {"n": 3}}})

    rerun = run.rerun(verify=True)

    assert rerun.return_value == [0, 1, 4]
    assert rerun.verification.verdict == "reproduced"
