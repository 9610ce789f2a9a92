"""With MLflow's asynchronous logging on, a run's data is written before pcs ends it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

LOGGER = """\
import mlflow


class Trainer:
    def run(self, epochs=300):
        mlflow.log_param("optimizer", "sgd")
        loss = 1.0
        for step in range(epochs):
            loss *= 0.99
            mlflow.log_metric("loss", loss, step=step)
        return round(loss, 12)
"""

SCRIPT = """\
import json
import sys
from pathlib import Path

from mlflow import MlflowClient

from pcs import Component, LocalRepo, Run

folder = Path(sys.argv[1])
trainer = Component.from_repo(LocalRepo("src", folder / "src"), "trainer", "trainer.py", "Trainer",
                              instantiate=True)
run = trainer.run_with_arg_set("run", {})
# read as another process would, the moment the run has ended
client = MlflowClient()
history = client.get_metric_history(run.identifier, "loss")
status = client.get_run(run.identifier).info.status
rerun = Run.from_existing_run_id(run.identifier).rerun(verify=True)
rerun_history = client.get_metric_history(rerun.identifier, "loss")
json.dump({
    "status": status,
    "steps": len(history),
    "params": client.get_run(run.identifier).data.params.get("optimizer"),
    "rerun_steps": len(rerun_history),
    "verdict": rerun.verification.verdict,
}, open(folder / "result.json", "w"))
"""


def test_asynchronously_logged_data_is_complete_when_the_run_ends(tmp_path, isolated):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "trainer.py").write_text(LOGGER, encoding="utf-8")
    script = tmp_path / "main.py"
    script.write_text(SCRIPT, encoding="utf-8")
    env = dict(os.environ, MLFLOW_ENABLE_ASYNC_LOGGING="true")
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text(encoding="utf-8"))
    assert result["status"] == "FINISHED"
    assert result["steps"] == 300 and result["params"] == "sgd"
    assert result["rerun_steps"] == 300
    assert result["verdict"] == "reproduced"
