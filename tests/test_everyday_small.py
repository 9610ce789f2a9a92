"""Smaller everyday points: shell completion, and help that touches no store."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, run_cli


@pytest.mark.parametrize("shell, marker", [
    ("bash", "complete -o nosort -F _pcs_completion pcs"),
    ("zsh", "compdef _pcs_completion pcs"),
    ("fish", "complete --no-files --command pcs"),
])
def test_completion_prints_the_script_for_a_shell(shell, marker, cli):
    script = cli("completion", shell).stdout
    assert marker in script and "_PCS_COMPLETE" in script


def test_completion_completes_commands_and_options(tmp_path):
    env = dict(os.environ, _PCS_COMPLETE="bash_complete", COMP_WORDS="pcs ru", COMP_CWORD="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-m", "pcs"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300).stdout
    assert "plain,run" in out.splitlines() and "plain,runs" in out.splitlines()
    env.update(COMP_WORDS="pcs runs --exp", COMP_CWORD="2")
    out = subprocess.run([sys.executable, "-m", "pcs"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300).stdout
    assert "plain,--experiment" in out.splitlines()


def test_an_unknown_shell_is_a_usage_error(cli):
    result = cli("completion", "tcsh", check=False)
    assert result.returncode == 2 and "'tcsh' is not one of" in result.stderr


def test_help_of_a_store_command_creates_and_announces_no_store(tmp_path, monkeypatch, cli):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # MLflow's default: ./mlflow.db
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    # a fresh process: importing pcs's CLI there must not create a store either
    result = run_cli("export", "--help", cwd=fresh)
    assert "Usage: pcs export" in result.stdout
    assert "creating one" not in result.stderr and not (fresh / "mlflow.db").exists()
    result = cli("status", cwd=fresh)  # a command that uses the store still says so
    assert "creating one" in result.stderr
