"""Secret values on a script's command line (issue 18): ``--token X`` / ``--password=X``
are recorded as hashes, like secret component arguments, and a rerun asks for them again.

Real scripts run in this process and through the ``pcs`` CLI against the test's SQLite
store; the store's bytes are searched for the clear values.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from conftest import run_cli

import pcs
from pcs import ArgumentError
from pcs.record.script import protect_argv, reveal_argv
from pcs.script import script_grid
from pcs.secrets import is_marker, marker_of

TOKEN = "hf_s16TokenValue9876"
PASSWORD = "pw-s16-Value-5432"

SCRIPT = """
import argparse
import sys

import mlflow

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--token")
parser.add_argument("--db-password")
parser.add_argument("--hub", default="")
args = parser.parse_args()
# the script gets the clear values, and uses them
mlflow.log_metric("secret_len", len(args.token) + len(args.db_password or "") + len(args.hub))
print("argv", sys.argv[1:])
"""


@pytest.fixture
def script(tmp_path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "train.py"
    path.write_text(textwrap.dedent(SCRIPT))
    return path


def _store_bytes(tmp_path: Path) -> bytes:
    data = b""
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and "project" not in path.parts and "pcs_home" not in path.parts:
            data += path.read_bytes()
    return data


def _clean_env() -> dict[str, str]:
    return {k: "" for k in os.environ if k.startswith("PCS_SECRET_")}


def test_protect_argv_hashes_values_of_secret_options_only():
    argv = ["--lr", "0.1", "--token", TOKEN, f"--db-password={PASSWORD}", "--max-tokens", "5",
            "--tokenizer", "bpe", "pos"]
    out = protect_argv(argv)
    assert out[:2] == ["--lr", "0.1"]
    assert out[2] == "--token" and out[3] == marker_of(TOKEN)
    assert out[4] == f"--db-password={marker_of(PASSWORD)}"
    assert out[5:] == ["--max-tokens", "5", "--tokenizer", "bpe", "pos"]  # look-alikes stay
    assert protect_argv(out) == out  # a recorded argv is kept as it is
    assert protect_argv(["--token"]) == ["--token"]  # no value: nothing to hide
    back, clear = reveal_argv(out, "train")
    assert back == argv and clear == {TOKEN, PASSWORD}


def test_hydra_overrides_with_secret_names_are_hashed(monkeypatch):
    from pcs import secrets as secret_module

    out = protect_argv(["db.password=pw-hydra-123", "+api.token=tk-hydra-456", "model.depth=3"])
    assert out == [f"db.password={marker_of('pw-hydra-123')}", f"+api.token={marker_of('tk-hydra-456')}",
                   "model.depth=3"]
    monkeypatch.setattr(secret_module, "_known", {})
    monkeypatch.setenv("PCS_SECRET_DB_PASSWORD", "pw-hydra-123")
    monkeypatch.setenv("PCS_SECRET_API_TOKEN", "tk-hydra-456")
    assert reveal_argv(out, "train")[0] == ["db.password=pw-hydra-123", "+api.token=tk-hydra-456",
                                            "model.depth=3"]


def test_a_pcs_secret_in_a_python_argv_is_a_marker_under_any_name():
    out = protect_argv(["--hub", pcs.secret("hub-credential-1")])
    assert out == ["--hub", marker_of("hub-credential-1")]


def test_a_secret_missing_on_rerun_says_how_to_give_it(monkeypatch):
    from pcs import secrets as secret_module

    recorded = protect_argv(["--api-key", "only-in-env-s16"])
    monkeypatch.setattr(secret_module, "_known", {})  # as in a new process
    with pytest.raises(ArgumentError, match="PCS_SECRET_API_KEY") as missing:
        reveal_argv(recorded, "train")
    assert "--secret-arg train.run.api_key=VALUE" in str(missing.value)
    monkeypatch.setenv("PCS_SECRET_API_KEY", "another-value")
    with pytest.raises(ArgumentError, match="hash differs"):
        reveal_argv(recorded, "train")
    monkeypatch.setenv("PCS_SECRET_API_KEY", "only-in-env-s16")
    assert reveal_argv(recorded, "train")[0] == ["--api-key", "only-in-env-s16"]


def test_script_secrets_are_never_recorded_in_clear(script, tmp_path):
    run = pcs.run_script(script, ["--token", TOKEN, f"--db-password={PASSWORD}",
                                  "--hub", pcs.secret("hub-credential-2")], seed=1)
    assert run.status == "FINISHED"
    # the script saw the clear values: 20 + 17 + 16 characters
    assert run.metrics["secret_len"] == len(TOKEN) + len(PASSWORD) + len("hub-credential-2")
    assert is_marker(run.params["token"]) and is_marker(run.params["db_password"])
    assert is_marker(run.params["hub"])  # given as pcs.secret: hidden whatever its name
    assert run.params["lr"] == "0.1"
    data = _store_bytes(tmp_path)
    for value in (TOKEN, PASSWORD, "hub-credential-2"):
        assert value.encode() not in data, f"{value} is in the store"
    # a rerun in this process holds the values: the same run again
    again = run.rerun(verify=True)
    assert again.verification.verdict == "reproduced", str(again.verification)


def test_a_derived_run_hashes_a_secret_it_is_given(script, tmp_path):
    run = pcs.run_script(script, ["--token", TOKEN], seed=1)
    derived = run.rerun(args=["--token", "hf_otherTokenValue111"])
    assert derived.params["token"] == marker_of("hf_otherTokenValue111")
    assert b"hf_otherTokenValue111" not in _store_bytes(tmp_path)


def test_a_script_sweep_hashes_secret_options():
    argvs = script_grid({"lr": [0.1, 0.2]}, ["--token", TOKEN])
    assert [a[1] for a in argvs] == [marker_of(TOKEN)] * 2


def test_cli_rerun_of_a_script_asks_for_its_secret(script, tmp_path):
    ok = run_cli("run", str(script), "--token", TOKEN, "--db-password", PASSWORD, cwd=script.parent)
    run_id = ok.stdout.strip().splitlines()[-1]
    data = _store_bytes(tmp_path)
    assert TOKEN.encode() not in data and PASSWORD.encode() not in data

    missing = run_cli("rerun", run_id, cwd=script.parent, env=_clean_env(), check=False)
    assert missing.returncode == 2
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "PCS_SECRET_TOKEN" in lines[0], missing.stderr
    assert TOKEN not in missing.stderr

    by_option = run_cli("rerun", run_id, "--verify", "--secret-arg", f"train.run.token={TOKEN}",
                        cwd=script.parent, env=_clean_env() | {"PCS_SECRET_DB_PASSWORD": PASSWORD})
    assert "reproduced" in by_option.stdout, by_option.stdout + by_option.stderr
    assert TOKEN.encode() not in _store_bytes(tmp_path)
