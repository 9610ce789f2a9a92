"""Suspects of an unexplained divergence compare sets as sets, and name thread counts (issue 17, point 8)."""

from __future__ import annotations

from pcs.record.determinism import determinism_suspects

OPENBLAS = {"api": "openblas", "version": "0.3.27", "threads": 4}
OPENMP = {"api": "openmp", "version": None, "threads": 4}


def record(**changes):
    base = {
        "pythonhashseed": "0",
        "variables": {},
        "frameworks": {},
        "cpu": {"model": "AMD EPYC", "count": 4, "usable": 4},
    }
    base.update(changes)
    return base


def test_the_same_pools_listed_in_another_order_are_no_difference():
    a = record(frameworks={"numpy": {"version": "2"}, "blas_pools": [OPENBLAS, OPENMP]})
    b = record(frameworks={"numpy": {"version": "2"}, "blas_pools": [OPENMP, OPENBLAS]})
    suspects = determinism_suspects(a, b)
    assert not any(" vs " in s for s in suspects), suspects
    # still the risk both share, and only once
    assert len(suspects) == 1
    assert suspects[0].startswith("BLAS/OpenMP thread pools: openblas 4 threads, openmp 4 threads in both")


def test_pools_that_differ_name_only_the_pools_that_differ():
    a = record(frameworks={"blas_pools": [OPENMP, OPENBLAS]})
    b = record(frameworks={"blas_pools": [{**OPENBLAS, "threads": 1}, OPENMP]})
    suspects = determinism_suspects(a, b)
    assert suspects[0] == "BLAS/OpenMP thread pools: openblas 0.3.27 4 threads vs openblas 0.3.27 1 threads"
    assert len([s for s in suspects if s.startswith("BLAS/OpenMP")]) == 1


def test_a_numpy_run_with_thread_counts_unset_lists_the_thread_count_suspect():
    a = record(frameworks={"numpy": {"version": "2"}})
    suspects = determinism_suspects(a, record(frameworks={"numpy": {"version": "2"}}))
    assert len(suspects) == 1
    line = suspects[0]
    assert line.startswith("thread counts: OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS not set")
    assert "NumPy" in line and "(4 here)" in line and "OMP_NUM_THREADS=1" in line


def test_thread_counts_pinned_to_one_are_not_suspected():
    pinned = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    a = record(variables=pinned, frameworks={"numpy": {"version": "2"}})
    assert determinism_suspects(a, dict(a)) == []
    # one variable left unset in one run is enough to suspect it
    b = record(variables={**pinned, "MKL_NUM_THREADS": "8"}, frameworks={"numpy": {"version": "2"}})
    suspects = determinism_suspects(a, b)
    assert suspects[0] == "MKL_NUM_THREADS: 1 vs 8"
    assert suspects[1].startswith("thread counts: MKL_NUM_THREADS not set to 1 in both runs")


def test_a_pure_python_run_has_no_thread_suspect():
    assert determinism_suspects(record(), record()) == []


UNSEEDED = """\
import os

import numpy as np


class C:
    def go(self):
        # noise pcs does not seed: the divergence is unexplained by the record
        return int(np.frombuffer(os.urandom(8), dtype="uint32")[0])
"""


def test_an_unexplained_divergence_of_a_numpy_run_lists_the_thread_count_suspect(tmp_path):
    # in a fresh interpreter: what earlier tests imported (PyTorch reads thread counts) must
    # not decide whether NumPy's thread count is known
    import json
    import os
    import subprocess
    import sys

    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "comp.py").write_text(UNSEEDED)
    script = tmp_path / "check.py"
    script.write_text(
        "import json, sys\n"
        "from pcs import Component, LocalRepo, Run\n"
        f"component = Component.from_repo(LocalRepo('here', {str(folder)!r}), 'c', 'comp.py', 'C',"
        " instantiate=True)\n"
        "run = Run.from_existing_run_id(component.run_with_arg_set('go', {}, seed=1).identifier)\n"
        "report = run.rerun(verify=True).verification\n"
        "print(json.dumps([report.verdict, report.causes, report.suspects]))\n"
    )
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    verdict, causes, suspects = json.loads(result.stdout.strip().splitlines()[-1])
    assert verdict == "diverged" and causes == []
    assert any(s.startswith("thread counts: OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS")
               for s in suspects), suspects
