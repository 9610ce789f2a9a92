#!/usr/bin/env python
"""The same hyperparameter search with pcs, with Optuna + its MLflow callback, and with Ray Tune +
its MLflow callback, side by side in one run.

Usage::

    python benchmarks/bench_search.py [--trials 100] [--skip pcs-ray,tune] [--json-out PATH]

Every case runs ``--trials`` trials of one trivial objective (a loss from a
log-uniform ``lr`` and an integer ``depth``, logged as a metric with the two
arguments as params) and records each trial as an MLflow run in one fresh
SQLite store in a temporary folder:

- ``pcs process``: ``Component.sweep(space=..., search="tpe", n_trials=N,
  metric="loss", mode="min", executor="process", max_workers=2)``;
- ``pcs ray``: the same with ``executor="ray"`` on a local Ray with 2 CPUs;
- ``optuna + MLflowCallback``: ``optuna.create_study(sampler=TPESampler(seed))``
  and ``study.optimize(objective, n_trials=N, callbacks=[MLflowCallback(...)])``
  with ``n_jobs=1`` (Optuna's callback gives wrong values with ``n_jobs=2``);
- ``ray tune + MLflowLoggerCallback``: ``tune.Tuner(trainable, param_space=...,
  tune_config=TuneConfig(num_samples=N, search_alg=OptunaSearch(seed), metric,
  mode), run_config=RunConfig(callbacks=[MLflowLoggerCallback(...)]))`` with
  Tune's defaults, and again with ``reuse_actors=True``.

pcs's trials are full component runs (their code, arguments, seed and
environment recorded, each rerunnable and verifiable); the others record the
params and the metric. Wall time of each whole search, ratios against pcs.
Nothing leaves this machine: MLflow's and Ray's usage stats are off.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

MODEL_FILE = "bench_model.py"
MODEL_SOURCE = '''\
import math


class Model:
    def fit(self, lr=0.01, depth=4):
        from pcs import active_component_run

        loss = abs(math.log10(lr) + 2.5) + 0.1 * abs(depth - 5)
        active_component_run(self).log_metric("loss", loss)
        return loss
'''


def loss_of(lr: float, depth: int) -> float:
    return abs(math.log10(lr) + 2.5) + 0.1 * abs(depth - 5)


def pcs_search(folder: Path, trials: int, executor: str, seed: int) -> Any:
    import pcs
    from pcs import Component, LocalRepo

    model = Component.from_repo(LocalRepo("bench", folder), "model", MODEL_FILE, "Model",
                                instantiate=True)
    sweep = model.sweep(
        "fit", space={"model.fit.lr": pcs.loguniform(1e-4, 1e-1),
                      "model.fit.depth": pcs.intrange(2, 8)},
        search="tpe", n_trials=trials, metric="loss", mode="min", seed=seed,
        executor=executor, max_workers=2, experiment_id=_experiment(f"pcs-{executor}"),
    )
    done = sweep.summary().get("FINISHED", 0)
    if done != trials:
        raise SystemExit(f"pcs {executor}: {done} of {trials} trials finished")
    return sweep


def optuna_search(uri: str, trials: int, seed: int) -> None:
    import optuna
    from optuna_integration.mlflow import MLflowCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    callback = MLflowCallback(tracking_uri=uri, metric_name="loss",
                              create_experiment=True, mlflow_kwargs={"nested": False})
    study = optuna.create_study(study_name="optuna-mlflow", direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed))

    def objective(trial: Any) -> float:
        return loss_of(trial.suggest_float("lr", 1e-4, 1e-1, log=True),
                       trial.suggest_int("depth", 2, 8))

    study.optimize(objective, n_trials=trials, n_jobs=1, callbacks=[callback])


def tune_search(uri: str, trials: int, seed: int, reuse_actors: bool, folder: Path) -> None:
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.search.optuna import OptunaSearch

    def trainable(config: dict[str, Any]) -> dict[str, float]:
        return {"loss": loss_of(config["lr"], config["depth"])}

    tuner = tune.Tuner(
        trainable,
        param_space={"lr": tune.loguniform(1e-4, 1e-1), "depth": tune.randint(2, 9)},
        tune_config=tune.TuneConfig(num_samples=trials, metric="loss", mode="min",
                                    search_alg=OptunaSearch(seed=seed),
                                    reuse_actors=reuse_actors),
        run_config=tune.RunConfig(
            name=f"tune-{'reuse' if reuse_actors else 'default'}",
            storage_path=str(folder / "ray_results"), verbose=0,
            callbacks=[MLflowLoggerCallback(tracking_uri=uri,
                                            experiment_name=f"tune-{reuse_actors}")],
        ),
    )
    results = tuner.fit()
    if results.num_errors:
        raise SystemExit(f"ray tune: {results.num_errors} trials failed")


_CLIENT: Any = None


def _experiment(name: str) -> str:
    found = _CLIENT.get_experiment_by_name(name)
    return found.experiment_id if found else _CLIENT.create_experiment(name)


def main(argv: list[str] | None = None) -> int:
    global _CLIENT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--skip", default="", help="comma-separated: pcs-process, pcs-ray, "
                                                    "optuna, tune, tune-reuse")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    folder = Path(tempfile.mkdtemp(prefix=f"pcs-{os.getpid()}-bench-search-"))
    old_cwd = os.getcwd()
    times: dict[str, float] = {}
    try:
        os.chdir(folder)
        os.environ["PCS_HOME"] = str(folder / "pcs_home")
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        (folder / MODEL_FILE).write_text(MODEL_SOURCE)
        from mlflow import MlflowClient

        _CLIENT = MlflowClient(tracking_uri=uri)
        _CLIENT.search_experiments()  # migrate the schema, untimed
        load = os.getloadavg()[0]
        print(f"search benchmark: {args.trials} trials, {os.cpu_count()} CPUs, load {load:.1f}",
              flush=True)
        # warm-ups, untimed: the zygote (pcs's worker server), and Ray
        pcs_search(folder, 2, "process", args.seed)
        if not {"pcs-ray", "tune", "tune-reuse"} <= skip:
            import ray

            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            pcs_search(folder, 2, "ray", args.seed)

        def timed(name: str, fn: Any, *fn_args: Any) -> None:
            if name in skip:
                return
            start = time.perf_counter()
            fn(*fn_args)
            times[name] = time.perf_counter() - start
            print(f"  {name:<28} {times[name]:8.2f} s  (load {os.getloadavg()[0]:.1f})",
                  flush=True)

        timed("pcs-process", pcs_search, folder, args.trials, "process", args.seed)
        timed("optuna", optuna_search, uri, args.trials, args.seed)
        timed("pcs-ray", pcs_search, folder, args.trials, "ray", args.seed)
        timed("tune", tune_search, uri, args.trials, args.seed, False, folder)
        timed("tune-reuse", tune_search, uri, args.trials, args.seed, True, folder)
        print()
        base = times.get("pcs-process")
        for name, seconds in times.items():
            ratio = f"{seconds / base:6.2f}x pcs-process" if base else ""
            print(f"  {name:<28} {seconds:8.2f} s  {ratio}")
        if args.json_out:
            Path(old_cwd, args.json_out).write_text(json.dumps({
                "trials": args.trials, "seconds": times,
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            }, indent=2))
    finally:
        os.chdir(old_cwd)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
