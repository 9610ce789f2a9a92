"""Run: a handle on an MLflow run; logging, lifecycle, caching, listing."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

import pcs
from pcs import NotReproducibleError, Run, RunNotFoundError


def test_new_run_is_an_ordinary_mlflow_run(store):
    run = Run(run_name="plain", tags={"team": "rl"}, description="a note")
    mlrun = MlflowClient().get_run(run.identifier)
    assert mlrun.info.run_name == "plain"
    assert mlrun.info.status == "RUNNING"
    assert mlrun.data.tags["team"] == "rl"
    assert mlrun.data.tags["pcs.run_type"] == "run"
    assert mlrun.data.tags["mlflow.note.content"] == "a note"
    assert "mlflow.user" in mlrun.data.tags
    run.end()
    assert MlflowClient().get_run(run.identifier).info.status == "FINISHED"


def test_logging_methods_bind_the_run_id(store, tmp_path):
    run = Run()
    run.log_param("lr", 0.1)
    run.log_params({"batch": 32, "opt": "adam"})
    run.log_metric("loss", 1.5, step=0)
    run.log_metric("loss", 0.5, step=1)
    run.log_metrics({"acc": 0.9, "f1": 0.8}, step=2)
    run.set_tag("stage", "dev")
    (tmp_path / "a.txt").write_text("hello")
    run.log_artifact(tmp_path / "a.txt")
    folder = tmp_path / "many"
    folder.mkdir()
    (folder / "b.txt").write_text("b")
    run.log_artifacts(folder, "many")
    run.log_dict({"k": [1, 2]}, "d.json")
    run.log_text("text", "t.txt")
    run.end()

    assert run.params == {"lr": "0.1", "batch": "32", "opt": "adam"}
    assert run.metrics == {"loss": 0.5, "acc": 0.9, "f1": 0.8}
    assert run.tags["stage"] == "dev"
    names = {a.path for a in run.list_artifacts()}
    assert {"a.txt", "many", "d.json", "t.txt"} <= names
    assert run.load_dict("d.json") == {"k": [1, 2]}
    assert run.load_text("t.txt") == "text"
    local = run.download_artifacts("many", dst_path=tmp_path / "dl")
    assert (local / "b.txt").read_text() == "b"
    history = MlflowClient().get_metric_history(run.identifier, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.5), (1, 0.5)]


def test_context_manager_finishes_on_success(store):
    with Run() as run:
        assert pcs.active_run() is run
        assert run.status == "RUNNING"
    assert pcs.active_run() is None
    assert Run.from_existing_run_id(run.identifier).status == "FINISHED"


def test_context_manager_fails_on_exception_and_propagates(store):
    with pytest.raises(ZeroDivisionError):
        with Run() as run:
            1 / 0  # noqa: B018
    assert pcs.active_run() is None
    assert Run.from_existing_run_id(run.identifier).status == "FAILED"


def test_resume_an_ended_run_to_append_results(store):
    with Run() as run:
        run.log_metric("score", 1.0, step=0)
    loaded = Run.from_existing_run_id(run.identifier)
    assert loaded.status == "FINISHED"
    loaded.resume()
    assert Run.from_existing_run_id(run.identifier).status == "RUNNING"
    loaded.log_metric("score", 2.0, step=1)
    loaded.end()
    again = Run.from_existing_run_id(run.identifier)
    assert again.status == "FINISHED"
    assert again.metrics["score"] == 2.0
    # the context manager resumes too
    with Run.from_existing_run_id(run.identifier) as resumed:
        assert resumed.status == "RUNNING"
        resumed.log_param("late", "yes")
    assert Run.from_existing_run_id(run.identifier).params["late"] == "yes"


def test_delete_and_restore(store):
    run = Run()
    run.end()
    run.delete()
    assert Run.from_existing_run_id(run.identifier).lifecycle_stage == "deleted"
    assert run.identifier not in {r.identifier for r in Run.get_all_runs()}
    assert run.identifier in {r.identifier for r in Run.get_all_runs(include_deleted=True)}
    with pytest.raises(pcs.PcsError, match="restore"):
        run.resume()
    run.restore()
    assert Run.from_existing_run_id(run.identifier).lifecycle_stage == "active"


def test_unknown_run_id_is_a_pcs_error(store):
    with pytest.raises(RunNotFoundError, match="pcs status"):
        Run.from_existing_run_id("0" * 32)
    assert not Run.run_exists("0" * 32)
    with pytest.raises(RunNotFoundError):
        Run.from_existing_run_id("")


def test_plain_run_cannot_be_rerun(store):
    run = Run()
    run.end()
    with pytest.raises(NotReproducibleError, match="has no RunCommand.*Component.run_with_arg_set"):
        Run.from_existing_run_id(run.identifier).rerun()


def test_end_refuses_unknown_status(store):
    run = Run()
    with pytest.raises(pcs.ArgumentError, match="FINISHED, FAILED or KILLED"):
        run.end("DONE")
    run.end()


def test_tracking_uri_is_resolved_when_used(tmp_path, monkeypatch):
    """A later mlflow.set_tracking_uri is honoured (not bound at import time)."""
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    uri = f"sqlite:///{other / 'second.db'}"
    mlflow.set_tracking_uri(uri)
    run = Run()
    run.end()
    assert MlflowClient(tracking_uri=uri).get_run(run.identifier).info.status == "FINISHED"


def test_loading_reads_once_and_never_writes(store):
    with Run(run_name="r") as run:
        run.log_metric("m", 1.0)
    before = MlflowClient().get_run(run.identifier)
    loaded = Run.from_existing_run_id(run.identifier)
    calls = []
    original = loaded.client.get_run

    def counting(run_id):
        calls.append(run_id)
        return original(run_id)

    loaded.client.get_run = counting  # instrument this client instance only
    _ = (loaded.info, loaded.data, loaded.status, loaded.tags, loaded.name, loaded.metrics)
    loaded.print_status()
    assert calls == []  # everything came from the one fetch made when loading
    after = MlflowClient().get_run(run.identifier)
    assert after.data.tags == before.data.tags


def test_get_all_runs_pages_past_one_page(store, monkeypatch):
    from pcs import run as run_module

    monkeypatch.setattr(run_module, "PAGE_SIZE", 7)
    experiment = pcs._config.default_experiment_id(MlflowClient())
    made = []
    for _ in range(20):
        r = Run()
        r.end()
        made.append(r.identifier)
    plain = MlflowClient().create_run(experiment)  # not a pcs run
    listed = Run.get_all_runs([experiment])
    assert [r.identifier for r in listed] == list(reversed(made))
    assert plain.info.run_id not in {r.identifier for r in listed}
    everything = Run.get_all_runs([experiment], pcs_only=False)
    assert plain.info.run_id in {r.identifier for r in everything}


def test_print_all_status(store, capsys):
    with Run(run_name="listed"):
        pass
    Run.print_all_status()
    out = capsys.readouterr().out
    assert "listed" in out and "FINISHED" in out


def test_system_metrics_need_psutil_or_work(store):
    try:
        import psutil  # noqa: F401
    except ImportError:
        with pytest.raises(pcs.ArgumentError, match="psutil"):
            Run(log_system_metrics=True)
        return
    run = Run(log_system_metrics=True)
    run.end()
