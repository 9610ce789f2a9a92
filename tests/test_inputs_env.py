"""Environment variables a run reads are recorded, restored on rerun and named when changed (issue 17, point 5)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pytest
from conftest import run_cli

from pcs import Component, LocalRepo, Run
from pcs.errors import ArgumentError
from pcs.record.environ import EnvReads

USER_CODE = '''
import os

def lookups():
    os.environ.get("LR")
    os.getenv("API_TOKEN")
    os.environ.get("DATABASE_URL")
    "UNSET_FLAG" in os.environ
    os.environ["MADE_HERE"] = "1"
    os.environ["MADE_HERE"]  # set by the run itself: not an input
    try:
        os.environ["NOT_THERE"]
    except KeyError:
        pass
    # copies of the whole environment are not lookups of its names
    dict(os.environ)
    os.environ.copy()
    {**os.environ}
    list(os.environ.items())
'''


def test_lookups_by_the_runs_code_are_recorded_and_library_lookups_are_not(tmp_path, monkeypatch):
    monkeypatch.setenv("LR", "0.1")
    monkeypatch.setenv("API_TOKEN", "s3cr3t")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "postgresql://me:pw@127.0.0.1/db")  # a password in a URL
    monkeypatch.delenv("UNSET_FLAG", raising=False)
    monkeypatch.delenv("NOT_THERE", raising=False)
    namespace: dict = {}
    exec(compile(USER_CODE, str(tmp_path / "user.py"), "exec"), namespace)
    with EnvReads() as reads:
        namespace["lookups"]()
        tempfile._candidate_tempdir_list()  # the standard library reads TMPDIR: not the run's input
    monkeypatch.delenv("MADE_HERE", raising=False)
    assert reads.values == {
        "LR": "0.1",
        "API_TOKEN": {"sha256": hashlib.sha256(b"s3cr3t").hexdigest()},
        "DATABASE_URL": {"sha256": hashlib.sha256(b"postgresql://me:pw@127.0.0.1/db").hexdigest()},
        "UNSET_FLAG": None,
        "NOT_THERE": None,
    }
    # outside a block nothing is recorded
    namespace["lookups"]()
    assert "MADE_HERE" not in reads.values


COMPONENT = """\
import os

SCALE = float(os.environ.get("SCALE", "1"))  # read when the module loads, before the run starts


class C:
    def go(self):
        lr = float(os.environ["LR"])
        token = os.getenv("API_TOKEN", "")
        return {"lr": lr * SCALE, "token_length": len(token)}
"""


def component(folder: Path) -> Component:
    folder.mkdir(parents=True)
    (folder / "comp.py").write_text(COMPONENT)
    (folder / "components.yaml").write_text(
        "repos: {here: {type: local, path: .}}\n"
        "components: {c: {repo: here, file_path: comp.py, class_name: C, instantiate: true}}\n"
    )
    return Component.from_repo(LocalRepo("here", folder), "c", "comp.py", "C", instantiate=True)


def test_a_rerun_runs_with_the_recorded_values_and_a_changed_value_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("LR", "0.1")
    monkeypatch.setenv("API_TOKEN", "abc")
    monkeypatch.setenv("SCALE", "1")
    run = Run.from_existing_run_id(component(tmp_path / "p").run_with_arg_set("go", {}, seed=1).identifier)
    text = run.load_text("pcs/inputs.yaml")
    assert "abc" not in text  # a secret is kept as its hash only
    assert run._read_yaml("pcs/inputs.yaml")["env"] == {
        "API_TOKEN": {"sha256": hashlib.sha256(b"abc").hexdigest()}, "LR": "0.1", "SCALE": "1",
    }

    monkeypatch.setenv("LR", "0.2")
    monkeypatch.setenv("SCALE", "10")  # read at module load: set back as well
    same = run.rerun(verify=True)
    assert same.verification.verdict == "reproduced"
    assert same.return_value == {"lr": 0.1, "token_length": 3}
    assert os.environ["LR"] == "0.2"  # put back after the rerun

    current = run.rerun(verify=True, env_vars="current")
    assert current.verification.verdict == "diverged"
    assert current.verification.causes == ["env: LR 0.1 -> 0.2", "env: SCALE 1 -> 10"]
    monkeypatch.setenv("SCALE", "1")

    # a secret cannot be set back (only its hash is known): its change is named, not shown
    monkeypatch.setenv("API_TOKEN", "abcd")
    secret = run.rerun(verify=True)
    assert secret.verification.verdict == "diverged"
    old, new = hashlib.sha256(b"abc").hexdigest()[:4], hashlib.sha256(b"abcd").hexdigest()[:4]
    assert secret.verification.causes == [
        f"env: API_TOKEN changed (<secret sha {old}> -> <secret sha {new}>)"
    ]
    with pytest.raises(ArgumentError, match="env_vars"):
        run.rerun(env_vars="mine")


def test_cli_rerun_sets_recorded_values_unless_told_env_vars_current(tmp_path):
    folder = tmp_path / "p"
    component(folder)
    run_id = run_cli("run", "c", "-e", "go", cwd=folder, env={"LR": "0.1"}).stdout.split()[-1]
    same = run_cli("rerun", run_id, "--verify", cwd=folder, env={"LR": "0.3"})
    assert "reproduced" in same.stdout
    changed = run_cli("rerun", run_id, "--verify", "--env-vars", "current", cwd=folder,
                      env={"LR": "0.3"}, check=False)
    assert changed.returncode == 1, changed.stderr
    assert "env: LR 0.1 -> 0.3" in changed.stdout
