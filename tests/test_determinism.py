"""Seeding what a run uses (and nothing else), and the determinism record and suspects.

Frameworks pcs must not import are stood for by small real packages written
into a temporary folder on ``sys.path`` (a ``torch`` with ``manual_seed``, a
``tensorflow`` with ``random.set_seed``, a ``jax``): the property under test
is pcs's import behaviour, which they show as well as the real ones. NumPy is
used for real; PyTorch too when it is installed.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import random
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from pcs.record import determinism as _determinism
from pcs.record.determinism import (
    SeedReport,
    determinism_record,
    determinism_suspects,
    seed_everything,
    seeded,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

# Each stand-in records its import (a file, so another process can see it) and its seeds.
FAKE_TORCH = """\
import os
SEEDS = []
if os.environ.get("PCS_TEST_IMPORT_LOG"):
    with open(os.environ["PCS_TEST_IMPORT_LOG"], "a") as log:
        log.write("torch\\n")


def manual_seed(seed):
    SEEDS.append(seed)
"""
FAKE_TENSORFLOW = """\
import types
SEEDS = []
random = types.SimpleNamespace(set_seed=SEEDS.append)
"""
FAKE_JAX = "VALUE = 1\n"
BROKEN_TORCH = "raise RuntimeError('this torch cannot be imported')\n"


@pytest.fixture
def fake_frameworks(tmp_path, monkeypatch):
    """A folder on sys.path with stand-ins named torch, tensorflow and jax (none imported yet)."""
    folder = tmp_path / "frameworks"
    for name, source in (("torch", FAKE_TORCH), ("tensorflow", FAKE_TENSORFLOW), ("jax", FAKE_JAX)):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    for name in ("torch", "tensorflow", "jax"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    importlib.invalidate_caches()
    yield folder
    for name in ("torch", "tensorflow", "jax"):
        sys.modules.pop(name, None)


def python(code: str, *, path: list[Path] = (), env: dict | None = None) -> str:
    """Run ``code`` in a fresh interpreter with pcs (this checkout) importable; its stdout."""
    full = dict(os.environ)
    inherited = [p for p in full.get("PYTHONPATH", "").split(os.pathsep) if p]
    full["PYTHONPATH"] = os.pathsep.join([*map(str, path), str(REPO_ROOT), *inherited])
    full.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=full, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- seeding ---------------------------------------------------------------------------------


def test_seeded_seeds_random_and_an_imported_numpy():
    import numpy

    random.seed(1)
    numpy.random.seed(1)
    with seeded(42) as report:
        drawn = random.random(), float(numpy.random.rand())
    assert drawn == (random.Random(42).random(), float(numpy.random.RandomState(42).rand()))
    assert report.seeded[:2] == ["random", "numpy"]
    assert "numpy" not in report.on_import
    assert _determinism._FINDER not in sys.meta_path


def test_numpy_first_imported_inside_the_block_is_seeded():
    out = python(
        """
        import json, sys
        from pcs.record.determinism import seeded
        before = "numpy" in sys.modules
        with seeded(7) as report:
            import numpy
            value = float(numpy.random.rand())
        expected = float(numpy.random.RandomState(7).rand())
        print(json.dumps({"before": before, "value": value, "expected": expected,
                          "report": report.to_dict()}))
        """
    )
    result = json.loads(out)
    assert result["before"] is False  # pcs itself did not import it
    assert result["value"] == result["expected"]
    assert result["report"]["seeded"] == ["random", "numpy"]
    assert result["report"]["on_import"] == ["numpy"]


def test_a_framework_imported_during_the_block_is_seeded_after_its_import(fake_frameworks):
    with seeded(11) as report:
        assert "torch" not in sys.modules  # entering the block imported nothing
        import torch

        assert torch.SEEDS == [11]  # seeded once its import had finished
    assert report.seeded[0] == "random" and report.seeded[-1] == "torch"
    assert report.on_import == ["torch"]
    # the module keeps its own loader, and the hook is gone
    assert isinstance(torch.__loader__, importlib.machinery.SourceFileLoader)
    assert torch.__spec__.loader is torch.__loader__
    assert _determinism._FINDER not in sys.meta_path


def test_after_the_block_an_import_is_not_seeded(fake_frameworks):
    with seeded(3):
        pass
    import torch

    assert torch.SEEDS == []


def test_nested_blocks_seed_with_the_innermost_seed(fake_frameworks):
    with seeded(1) as outer:
        with seeded(2) as inner:
            import torch
        import tensorflow
    assert torch.SEEDS == [2]
    assert tensorflow.SEEDS == [1]
    assert inner.on_import == ["torch"]
    assert outer.on_import == ["tensorflow"]
    assert _determinism._FINDER not in sys.meta_path


def test_an_import_is_seeded_with_the_block_of_its_own_thread(fake_frameworks):
    entered, imported = threading.Event(), threading.Event()

    def other_run():
        with seeded(200):
            entered.set()
            imported.wait(30)

    thread = threading.Thread(target=other_run)
    with seeded(100) as mine:
        thread.start()
        entered.wait(30)  # the other thread's block is now the newest
        import torch

        imported.set()
    thread.join(30)
    assert torch.SEEDS == [100]
    assert mine.on_import == ["torch"]
    assert _determinism._FINDER not in sys.meta_path


def test_jax_is_noted_not_seeded(fake_frameworks):
    with seeded(5) as report:
        import jax  # noqa: F401
    assert "jax" not in report.seeded
    assert any("jax" in note and "PRNGKey" in note for note in report.notes)


def test_a_failing_import_inside_the_block_is_not_seeded_and_can_be_retried(fake_frameworks):
    (fake_frameworks / "torch" / "__init__.py").write_text(BROKEN_TORCH, encoding="utf-8")
    importlib.invalidate_caches()
    with seeded(9) as report:
        with pytest.raises(RuntimeError, match="cannot be imported"):
            import torch  # noqa: F401
    assert "torch" not in sys.modules
    assert "torch" not in report.seeded
    (fake_frameworks / "torch" / "__init__.py").write_text(FAKE_TORCH, encoding="utf-8")
    importlib.invalidate_caches()
    import torch

    assert torch.SEEDS == []


def test_seed_everything_seeds_what_is_imported_and_imports_nothing(fake_frameworks):
    import numpy

    seeded_names = seed_everything(8)
    assert seeded_names == ["random", "numpy"]
    assert "torch" not in sys.modules and "tensorflow" not in sys.modules
    assert random.random() == random.Random(8).random()
    assert float(numpy.random.rand()) == float(numpy.random.RandomState(8).rand())
    import torch

    assert seed_everything(9) == ["random", "numpy", "torch"]
    assert torch.SEEDS == [9]


def test_seed_report_to_dict():
    report = SeedReport(3, ["random"], [], ["a note"])
    assert report.to_dict() == {"seed": 3, "seeded": ["random"], "on_import": [], "notes": ["a note"]}


PURE_COMPONENT = """\
import random


class Draw:
    def run(self, n=3):
        return [random.random() for _ in range(n)]
"""


def test_a_pure_python_run_does_not_import_a_framework_it_does_not_use(tmp_path, fake_frameworks):
    """In a fresh process: torch (a stand-in) is installed, the run does not use it, so it stays unloaded."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "draw.py").write_text(PURE_COMPONENT, encoding="utf-8")
    log = tmp_path / "imports.log"
    out = python(
        f"""
        import json, sys
        from pcs import Component, LocalRepo
        component = Component.from_repo(
            LocalRepo("src", {str(source)!r}), "draw", "draw.py", "Draw", instantiate=True
        )
        run = component.run_with_arg_set("run", {{}}, seed=4)
        print(json.dumps({{"status": run.status, "torch": "torch" in sys.modules,
                          "installed": __import__("importlib.util").util.find_spec("torch") is not None}}))
        """,
        path=[fake_frameworks],
        env={"PCS_TEST_IMPORT_LOG": str(log)},
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"status": "FINISHED", "torch": False, "installed": True}
    assert not log.exists()  # its module body never ran


def test_a_framework_first_imported_during_a_component_run_is_seeded(tmp_path, fake_frameworks):
    from pcs import Component, LocalRepo

    source = tmp_path / "src"
    source.mkdir()
    (source / "late.py").write_text(
        "class Late:\n"
        "    def run(self):\n"
        "        import torch\n"
        "        return list(torch.SEEDS)\n",
        encoding="utf-8",
    )
    component = Component.from_repo(LocalRepo("src", source), "late", "late.py", "Late", instantiate=True)
    assert component.run_with_arg_set("run", {}, seed=21).return_value == [21]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_real_torch_first_imported_inside_the_block_is_seeded():
    out = python(
        """
        import json
        from pcs.record.determinism import seeded, determinism_record
        with seeded(13) as report:
            import torch
            value = torch.rand(3).tolist()
        torch.manual_seed(13)
        print(json.dumps({"value": value, "expected": torch.rand(3).tolist(),
                          "report": report.to_dict(),
                          "record": determinism_record()["frameworks"]["torch"]}))
        """
    )
    result = json.loads(out)
    assert result["value"] == result["expected"]
    assert result["report"]["on_import"][-1] == "torch"  # (torch imports numpy on its way)
    assert result["record"]["threads"] >= 1
    assert result["record"]["deterministic_algorithms"] is False


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_entering_a_block_does_not_import_real_torch():
    out = python(
        """
        import sys
        from pcs.record.determinism import seeded, seed_everything, determinism_record
        with seeded(1):
            seed_everything(2)
            determinism_record()
        print("torch" in sys.modules)
        """
    )
    assert out.strip() == "False"


# -- the determinism record ------------------------------------------------------------------


def test_determinism_record_reads_variables_frameworks_and_cpu(monkeypatch):
    import numpy  # noqa: F401 - imported, so it is recorded

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    record = determinism_record()
    assert record["pythonhashseed"] == "0"
    assert record["variables"]["OMP_NUM_THREADS"] == "3"
    assert "MKL_NUM_THREADS" not in record["variables"]
    assert record["frameworks"]["numpy"]["version"] == numpy.__version__
    assert record["cpu"]["count"] == os.cpu_count()
    assert record["cpu"]["model"]
    json.dumps(record)  # plain data, ready for YAML


def test_determinism_record_leaves_frameworks_that_are_not_imported_out(fake_frameworks):
    record = determinism_record()
    assert "torch" not in record["frameworks"]
    assert "torch" not in sys.modules
    import torch  # noqa: F401 - the stand-in has no thread API: recorded with what it has

    assert "torch" in determinism_record()["frameworks"]


def test_no_gpu_record_without_an_nvidia_driver():
    pynvml = pytest.importorskip("pynvml", reason="the pcs[gpu] extra (nvidia-ml-py) is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("an NVIDIA driver answers on this machine: the absent path cannot be shown")
    # the real binding, the real failure to find libnvidia-ml: no record, no error
    assert _determinism._read_nvml(pynvml) is None
    assert "gpu" not in determinism_record()


def test_no_gpu_record_without_the_nvml_binding(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes "import pynvml" fail
    _determinism._gpu.cache_clear()
    try:
        assert _determinism._gpu() is None
        assert "gpu" not in determinism_record()
    finally:
        _determinism._gpu.cache_clear()


def test_nvml_values_become_text():
    assert _determinism._cuda_version(12040) == "12.4"
    assert _determinism._cuda_version(11080) == "11.8"
    assert _determinism._text(b"NVIDIA A100-SXM4-40GB") == "NVIDIA A100-SXM4-40GB"
    assert _determinism._text("550.54.15") == "550.54.15"


# -- suspects --------------------------------------------------------------------------------


def record(**changes):
    base = {
        "pythonhashseed": "0",
        "variables": {},
        "frameworks": {},
        "cpu": {"model": "AMD EPYC", "count": 2, "usable": 2},
    }
    base.update(changes)
    return base


def test_suspects_name_what_differed_first_in_order():
    a = record(
        pythonhashseed=None,
        variables={"OMP_NUM_THREADS": "4"},
        frameworks={"torch": {"version": "2.3", "threads": 4}},
        cpu={"model": "Intel Xeon", "count": 8, "usable": 8},
        gpu={"driver": "550.1", "cuda": "12.4", "devices": ["NVIDIA A100"]},
    )
    b = record(
        variables={"OMP_NUM_THREADS": "8", "MKL_CBWR": "AUTO"},
        frameworks={"torch": {"version": "2.4", "threads": 8}},
        gpu={"driver": "535.2", "cuda": "12.2", "devices": ["NVIDIA V100"]},
    )
    assert determinism_suspects(a, b) == [
        "PYTHONHASHSEED: unset (random per process) vs 0",
        "OMP_NUM_THREADS: 4 vs 8",
        "MKL_CBWR: unset vs AUTO",
        "PyTorch threads: 4 vs 8",
        "CPU: Intel Xeon vs AMD EPYC",
        "CPU count: 8 vs 2",
        "usable CPUs: 8 vs 2",
        "GPU: NVIDIA A100 vs NVIDIA V100",
        "GPU driver: 550.1 vs 535.2",
        "CUDA: 12.4 vs 12.2",
        # then the risks both share: torch on a GPU without deterministic algorithms
        "GPU: some CUDA kernels (atomic adds in cuDNN and cuBLAS) are not deterministic unless "
        "torch.use_deterministic_algorithms(True) is on and CUBLAS_WORKSPACE_CONFIG=:4096:8 is set",
    ]


def test_suspects_that_were_the_same_but_risky_come_after():
    a = record(pythonhashseed=None, frameworks={"torch": {"threads": 2}, "numpy": {"version": "2"}})
    b = record(pythonhashseed=None, frameworks={"torch": {"threads": 2}, "numpy": {"version": "2"}})
    suspects = determinism_suspects(a, b)
    assert len(suspects) == 2
    assert suspects[0].startswith("PYTHONHASHSEED: unset in both runs")
    assert "sets" in suspects[0] and "PYTHONHASHSEED=0" in suspects[0]
    assert suspects[1].startswith("PyTorch: 2 threads in both runs")
    assert "reduction" in suspects[1]


def test_a_framework_imported_in_one_run_only_is_a_difference():
    a = record(frameworks={"torch": {"threads": 1}})
    b = record(frameworks={})
    assert determinism_suspects(a, b) == ["PyTorch: imported vs not imported"]


def test_identical_safe_records_have_no_suspects():
    assert determinism_suspects(record(), record()) == []
    assert determinism_suspects({}, {}) == []


def test_parts_missing_from_an_old_record_are_not_differences():
    old = {"pythonhashseed": "0"}  # a record from before the other parts existed
    assert determinism_suspects(old, record(variables={"OMP_NUM_THREADS": "2"})) == []


def test_suspects_of_this_process_against_itself_name_only_risks(monkeypatch):
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    here = determinism_record()
    # no difference; at most the thread-count risk of a NumPy already imported here
    # (and of PyTorch, when an earlier test in this process imported it)
    assert [s for s in determinism_suspects(here, here)
            if not s.startswith("thread counts:") and "threads in both runs" not in s] == []
