"""An in-process run leaves the caller's random state alone, and MLflow's run names do not draw from it."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import pytest
from conftest import component_from_source

from pcs import Component, Run

DRAWER = """\
import random

import mlflow
import numpy


class Drawer:
    def run(self, nested=False):
        if nested:
            with mlflow.start_run(nested=True):
                pass
        print(f"draw {random.random():.12f} {numpy.random.random():.12f}")
        return round(random.random(), 12)
"""


@pytest.fixture
def drawer(tmp_path) -> Component:
    return component_from_source(tmp_path, "drawer", DRAWER, "Drawer")


def test_a_run_leaves_the_callers_random_and_numpy_states_as_it_found_them(drawer):
    import numpy

    random.seed(2024)
    numpy.random.seed(2024)
    expected = (random.random(), numpy.random.random())
    random.seed(2024)
    numpy.random.seed(2024)
    drawer.run_with_arg_set("run", {}, seed=7)
    assert (random.random(), numpy.random.random()) == expected


def test_runs_of_one_seed_get_different_names_and_naming_draws_nothing(drawer):
    plain = [drawer.run_with_arg_set("run", {}, seed=3) for _ in range(3)]
    assert len({r.info.run_name for r in plain}) == 3
    # a nested MLflow run inside the entry point takes no number from the seeded sequence
    nested = drawer.run_with_arg_set("run", {"drawer": {"run": {"nested": True}}}, seed=3)
    assert nested.return_value == plain[0].return_value


def test_an_in_process_rerun_gives_the_verdict_of_a_fresh_process_rerun(drawer):
    run = drawer.run_with_arg_set("run", {}, seed=11)
    random.random()  # the caller keeps using random between runs, as a notebook does
    in_process = Run.from_existing_run_id(run.identifier).rerun(verify=True)
    assert in_process.verification.verdict == "reproduced", in_process.verification.differences
    script = textwrap.dedent(f"""\
        from pcs import Run
        new = Run.from_existing_run_id({run.identifier!r}).rerun(verify=True)
        print(new.verification.verdict)
    """)
    fresh = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env=dict(os.environ), timeout=600)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert fresh.stdout.strip().splitlines()[-1] == in_process.verification.verdict
