"""``Component.from_function``: a function (from a notebook's ``__main__`` or a module) is a
component without a class (issue 18, point 5)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import run_cli

from pcs import Component, ComponentError, Run

NOTEBOOK = """
import random
import mlflow
from pcs import Component

SCALE = 3

def helper(x):
    return x * SCALE

def train(lr=0.1, epochs=2):
    for epoch in range(epochs):
        mlflow.log_metric("loss", helper(lr) / (epoch + 1) + random.random(), step=epoch)
    return {"lr": lr, "draw": random.random()}

run = Component.from_function(train).run_with_arg_set("train", {"train": {"train": {"lr": 0.5}}}, seed=1)
print(run.identifier)
"""


def test_a_main_function_reruns_in_a_fresh_process_without_its_notebook(tmp_path):
    notebook = tmp_path / "notebook.py"
    notebook.write_text(textwrap.dedent(NOTEBOOK))
    made = subprocess.run([sys.executable, str(notebook)], capture_output=True, text=True,
                          check=True, timeout=600)
    run_id = made.stdout.strip().splitlines()[-1]
    notebook.unlink()  # the rerun needs only the record
    run = Run.from_existing_run_id(run_id)
    assert run.grade == "portable", run.grade_reasons
    assert run.params["train.train.lr"] == "0.5"
    result = run_cli("rerun", run_id, "--verify")
    assert f"(rerun of {run_id}): reproduced" in result.stdout
    new = Run.from_existing_run_id(result.stdout.strip().splitlines()[-1])
    assert new.return_value == run.return_value


def _module_function(x=1):
    return {"double": 2 * x}


def test_a_module_function_is_a_module_component():
    component = Component.from_function(_module_function)
    assert component.class_name is None and component.file_path == "test_scripts_function.py"
    run = component.run_with_arg_set("_module_function", {"_module_function": {"_module_function": {"x": 4}}})
    assert run.return_value == {"double": 8}
    assert component.run(x=5) == {"double": 10}
    assert run.rerun(verify=True).verification.verdict == "reproduced"


def test_what_is_not_a_function_is_refused():
    def inner():
        return 1

    with pytest.raises(ComponentError, match="needs a function"):
        Component.from_function(_Holder)
    with pytest.raises(ComponentError, match="inside another function"):
        Component.from_function(inner)
    with pytest.raises(ComponentError, match="lambda"):
        Component.from_function(lambda: 1)


class _Holder:
    pass
