"""Reruns in a virtual environment rebuilt from what a run used.

Builds install from a folder of wheels made here (the installers run with
``--no-index``), so nothing reaches beyond this machine.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from pcs import Component, EnvironmentBuildError, LocalRepo, Run
from pcs.isolated import MARKER, build_recorded_env, recorded_env, venv_python
from pcs.record.environment import (
    capture_environment,
    environment_fingerprint,
    used_environment_yaml,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
RANDOM_AGENT = REPO_ROOT / "examples" / "random_agent"


def make_wheel(folder: Path, name: str, version: str, module: str, source: str) -> Path:
    """A real, minimal pure-Python wheel."""
    stem = f"{name.replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    files = {
        f"{module}.py": source,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: pcs-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheelhouse")
    make_wheel(folder, "pcs-mini-dist", "1.0", "pcs_mini", "VALUE = 'one'\n")
    return folder


@pytest.fixture
def offline(monkeypatch, wheelhouse, tmp_path_factory) -> Path:
    """Installers see only the wheelhouse; uv keeps its cache in the session's temp folder."""
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX",
                 "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS", "UV_INDEX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheelhouse))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "uv-cache"))
    return wheelhouse


def record_using(used: dict[str, str], required: dict[str, str] | None = None) -> dict:
    """A run's environment record ({**start, **end}) that used ``used``."""
    import pcs

    env = capture_environment()
    env["used_distributions"] = {**used, "pcs": pcs.__version__}
    env["required_distributions"] = required or {}
    return env


def venvs(tmp_path: Path) -> Path:
    return tmp_path / "pcs_home" / "venvs"


def in_venv(venv: Path, code: str) -> dict:
    """Run ``code`` with the environment's interpreter, as a rerun would (no PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(venv_python(venv)), "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=env, cwd=venv.parent, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- refusals --------------------------------------------------------------------------------


def test_python_version_mismatch_is_refused(tmp_path):
    with pytest.raises(EnvironmentBuildError, match="Python 2.7.18"):
        build_recorded_env({"python": {"version": "2.7.18"}, "used_distributions": {"pcs": "1"}})
    assert not venvs(tmp_path).exists() or list(venvs(tmp_path).iterdir()) == []


def test_python_implementation_mismatch_is_refused():
    import platform

    record = {"python": {"version": platform.python_version(), "implementation": "PyPy"},
              "used_distributions": {}}
    with pytest.raises(EnvironmentBuildError, match="PyPy"):
        build_recorded_env(record)


def test_a_record_without_distributions_cannot_be_rebuilt():
    with pytest.raises(EnvironmentBuildError, match="nothing to rebuild"):
        build_recorded_env({"python": {}})


# -- building --------------------------------------------------------------------------------


def test_environment_holds_what_the_run_used_and_pcs_with_its_metadata(tmp_path, offline):
    import pcs

    record = record_using({"pcs-mini-dist": "1.0"})
    events: list[tuple] = []
    venv = build_recorded_env(record, progress=lambda *args: events.append(args))

    assert venv.parent == venvs(tmp_path)
    assert (venv / MARKER).is_file()
    assert yaml.safe_load((venv / MARKER).read_text())["installed"] == {"pcs-mini-dist": "1.0"}
    # progress: descriptions as the build advances, bytes on disk that only grow
    descriptions = [e[0] for e in events]
    assert any("installing pcs-mini-dist==1.0" in d for d in descriptions)
    assert descriptions[-1].startswith("built the environment")
    done = [e[1] for e in events]
    assert done == sorted(done) and done[-1] > 0
    assert all(e[2] is None for e in events)

    seen = in_venv(
        venv,
        """
        import importlib.metadata, importlib.util, json, sys, pcs, pcs_mini
        from pcs.record.environment import used_environment_yaml
        fingerprint, text = used_environment_yaml(["pcs_mini"])
        print(json.dumps({
            "mini": pcs_mini.VALUE,
            "pcs_file": pcs.__file__,
            "pcs_version": importlib.metadata.version("pcs"),
            "mlflow": importlib.util.find_spec("mlflow").origin,
            "path": sys.path,
            "fingerprint": fingerprint,
        }))
        """,
    )
    assert seen["mini"] == "one"
    assert seen["pcs_file"].startswith(str(venv))  # this pcs, copied in
    assert seen["pcs_version"] == pcs.__version__  # with its metadata
    runtime = str(Path(sys.modules["mlflow"].__file__).parent.parent)
    assert seen["mlflow"].startswith(runtime)  # pcs's runtime is reached, not installed
    own = next(i for i, p in enumerate(seen["path"]) if p.startswith(str(venv)))
    assert own < seen["path"].index(runtime)  # and what the run used comes first
    # the rerun there records the same used distributions, so the same fingerprint
    assert seen["fingerprint"] == environment_fingerprint(record)


def test_a_built_environment_is_reused(tmp_path, offline):
    record = record_using({})
    first = build_recorded_env(record)
    marker = (first / MARKER).stat().st_mtime_ns
    events: list[tuple] = []
    start = time.perf_counter()
    again = build_recorded_env(record, progress=lambda *args: events.append(args))
    assert time.perf_counter() - start < 1.0
    assert again == first and events == []
    assert (first / MARKER).stat().st_mtime_ns == marker
    # a different set of distributions is another environment
    other = build_recorded_env(record_using({"pcs-mini-dist": "1.0"}))
    assert other != first


def test_the_environment_is_in_use_while_the_block_runs(tmp_path, offline):
    probe = textwrap.dedent(
        """
        import fcntl, os, sys
        fd = os.open(sys.argv[1], os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            print("free")
        except BlockingIOError:
            print("busy")
        """
    )

    def cleaner_sees(lock: Path) -> str:
        return subprocess.run(
            [sys.executable, "-c", probe, str(lock)], capture_output=True, text=True, check=True
        ).stdout.strip()

    with recorded_env(record_using({})) as venv:
        lock = venv.parent / f"{venv.name}.lock"
        assert cleaner_sees(lock) == "busy"
    assert cleaner_sees(lock) == "free"


def test_an_uninstallable_distribution_is_named_and_nothing_is_left(tmp_path, offline):
    record = record_using({"pcs-mini-dist": "1.0", "pcs-no-such-dist": "1.0"})
    with pytest.raises(EnvironmentBuildError) as caught:
        build_recorded_env(record)
    message = str(caught.value)
    assert "pcs-no-such-dist==1.0" in message
    assert "env='current'" in message
    # no environment, finished or half-built; only the entry's lock file stays
    assert [p.name for p in venvs(tmp_path).iterdir() if not p.name.endswith(".lock")] == []


def test_pip_builds_when_uv_is_absent(tmp_path, offline, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "uv", None)  # the uv distribution is not importable
    monkeypatch.setenv("PATH", str(tmp_path))  # and no uv on PATH
    events: list[tuple] = []
    venv = build_recorded_env(record_using({"pcs-mini-dist": "1.0"}), progress=lambda *a: events.append(a))
    assert any("uv is not installed" in e[0] and "pip" in e[0] for e in events)
    assert any("uv is not installed" in r.getMessage() for r in caplog.records)
    assert yaml.safe_load((venv / MARKER).read_text())["installer"] == "pip"
    assert in_venv(venv, "import json, pcs_mini; print(json.dumps(pcs_mini.VALUE))") == "one"


def test_a_record_from_an_older_pcs_installs_every_recorded_distribution(tmp_path, offline):
    import platform

    record = {
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation()},
        "platform": {"system": platform.system(), "machine": platform.machine()},
        "distributions": {"pcs-mini-dist": "1.0", "pcs": "0.0.1", "pip": "24.0"},
    }
    events: list[tuple] = []
    venv = build_recorded_env(record, progress=lambda *a: events.append(a))
    assert any("older pcs" in e[0] for e in events)
    marker = yaml.safe_load((venv / MARKER).read_text())
    assert marker["installed"] == {"pcs-mini-dist": "1.0"}  # pcs is copied, pip not needed
    assert marker["from_every_recorded_distribution"] is True


def test_a_killed_build_is_swept_by_the_next_one(tmp_path, offline):
    root = venvs(tmp_path)
    ready = tmp_path / "ready"
    builder = textwrap.dedent(
        f"""
        import time
        from pcs.record.environment import capture_environment
        from pcs.isolated import build_recorded_env
        record = capture_environment()
        record["used_distributions"] = {{}}

        def progress(description, done, total):
            if description == "adding pcs":
                open({str(ready)!r}, "w").close()
                time.sleep(120)  # killed here, half-built

        build_recorded_env(record, progress=progress)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    child = subprocess.Popen([sys.executable, "-c", builder], env=env)
    try:
        deadline = time.time() + 60
        while not ready.exists():
            assert child.poll() is None and time.time() < deadline, "the builder did not get going"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    leftovers = [p for p in root.iterdir() if f".pcs-{child.pid}-venv-" in p.name]
    assert len(leftovers) == 1 and leftovers[0].is_dir()

    # a live builder's folder is not touched
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = root / f".0123456789abcdef.pcs-{sleeper.pid}-venv-live"
        live.mkdir()
        venv = build_recorded_env(record_using({}))
        assert not leftovers[0].exists()
        assert live.exists()
        assert (venv / MARKER).is_file()
    finally:
        sleeper.kill()
        sleeper.wait()
        live.rmdir()


# -- rerunning in it (slow: a subprocess that loads MLflow) --------------------------------------


def record_used_distributions(run: Run, module_names: list[str], tmp_path: Path) -> None:
    """Write pcs/environment_used.yaml as component_run does at a run's end, if it has not."""
    from mlflow import MlflowClient

    listed = [a.path for a in MlflowClient().list_artifacts(run.identifier, "pcs")]
    if "pcs/environment_used.yaml" in listed:
        return
    folder = tmp_path / "end_record"
    folder.mkdir()
    (folder / "environment_used.yaml").write_text(used_environment_yaml(module_names)[1])
    MlflowClient().log_artifact(run.identifier, str(folder / "environment_used.yaml"), "pcs")


@pytest.mark.slow
def test_rerun_of_the_random_agent_in_its_rebuilt_environment_reproduces(tmp_path):
    agent = Component.from_registry_file(RANDOM_AGENT / "components.yaml", "agent")
    run = agent.run_with_arg_set("run_episodes", {"agent": {"run_episodes": {"num_episodes": 3}}}, seed=5)
    # the agent's files import random and (for logging) pcs
    record_used_distributions(run, ["random", "pcs"], tmp_path)

    again = run.rerun(env="recorded", verify=True)

    assert again.verification.reproduced, str(again.verification)
    assert again.rerun_of == run
    executable = again.environment["python"]["executable"]
    assert str(venvs(tmp_path)) in executable  # it really ran in the rebuilt environment
    # the same fingerprint: over what the run used once component_run records the end of a
    # run; until then over what is installed, which the environment reproduces as well
    # (pcs with its metadata, then pcs's runtime) unless PYTHONPATH added distributions here
    assert again.tags["pcs.environment_fingerprint"] == run.tags["pcs.environment_fingerprint"]
    (venv,) = [p for p in venvs(tmp_path).iterdir() if p.is_dir()]
    assert yaml.safe_load((venv / MARKER).read_text())["installed"] == {}  # only pcs: tiny


THREADS_SOURCE = """
import os


class Threads:
    def go(self):
        return {"omp": os.environ.get("OMP_NUM_THREADS"), "hashseed": os.environ.get("PYTHONHASHSEED")}
"""


@pytest.mark.slow
def test_rerun_in_the_rebuilt_environment_restores_hash_seed_and_thread_variables(tmp_path, monkeypatch):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "threads.py").write_text(THREADS_SOURCE)
    component = Component.from_repo(LocalRepo("src", folder), "threads", "threads.py", "Threads", instantiate=True)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv("PYTHONHASHSEED", "5")
    run = component.run_with_arg_set("go", {}, seed=1)
    record_used_distributions(run, ["os"], tmp_path)

    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # this process now differs from the record
    monkeypatch.delenv("PYTHONHASHSEED")
    again = run.rerun(env="recorded", verify=True)
    assert again.return_value == {"omp": "3", "hashseed": "5"}
    assert again.verification.reproduced, str(again.verification)
