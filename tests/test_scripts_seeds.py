"""Seeds of script runs: seeded like a component before the script starts, and a script
that seeds itself from its own argument still works (issue 18, point 6)."""

from __future__ import annotations

import textwrap

import pcs

DRAWS = """
import random
import mlflow
import numpy as np
mlflow.log_metrics({"py": random.random(), "np": float(np.random.rand())})
"""

SELF_SEEDED = """
import argparse
import random
import mlflow
parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
random.seed(args.seed)
mlflow.log_metric("draw", random.random())
"""


def test_a_script_is_seeded_before_it_starts(tmp_path):
    script = tmp_path / "draws.py"
    script.write_text(textwrap.dedent(DRAWS))
    a = pcs.run_script(script, seed=11)
    b = pcs.run_script(script, seed=11)
    c = pcs.run_script(script, seed=12)
    assert a.metrics == b.metrics
    assert a.metrics["py"] != c.metrics["py"] and a.metrics["np"] != c.metrics["np"]
    assert a.params["pcs.seed"] == "11" and a.seed == 11


def test_a_script_seeding_itself_from_its_argument(tmp_path):
    script = tmp_path / "self_seeded.py"
    script.write_text(textwrap.dedent(SELF_SEEDED))
    a = pcs.run_script(script, ["--seed", "5"], seed=1)
    b = pcs.run_script(script, ["--seed", "5"], seed=2)   # pcs's seed differs, the script's wins
    c = pcs.run_script(script, ["--seed", "6"], seed=1)
    assert a.params["seed"] == "5" and a.params["pcs.seed"] == "1"
    assert a.metrics == b.metrics and a.metrics != c.metrics
    assert a.rerun(verify=True).verification.verdict == "reproduced"
    derived = a.rerun(args=["--seed", "6"])
    assert derived.params["seed"] == "6" and derived.metrics == c.metrics
