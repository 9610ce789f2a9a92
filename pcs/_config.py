"""Where pcs keeps things and which tracking store it talks to.

Everything configurable is resolved here, at call time, so that a later
``mlflow.set_tracking_uri`` or a changed environment variable is honoured and
tests can point pcs elsewhere by setting ``PCS_HOME`` or ``MLFLOW_*``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pcs import _keys
from pcs._redact import redact_url
from pcs.errors import TrackingStoreError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

PCS_HOME_ENV = "PCS_HOME"


def pcs_home() -> Path:
    """The pcs home directory (``$PCS_HOME``, default ``~/.pcs``)."""
    home = os.environ.get(PCS_HOME_ENV)
    path = Path(home).expanduser() if home else Path.home() / ".pcs"
    return path


def cache_dir(name: str) -> Path:
    """A named cache folder under the pcs home, created on demand."""
    path = pcs_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# pcs fails fast only at its first contact with a tracking server (the probe below); after
# that, MLflow's own HTTP retries stay as the user set them, and a run's writes ride out an
# outage for PCS_STORE_RETRY_S (see pcs._writer)
PROBE_TIMEOUT_S = 5.0
_REACHABLE: set[str] = set()


def tracking_client() -> MlflowClient:
    """An MlflowClient for the tracking store in force right now.

    Raises:
        TrackingStoreError: the tracking URI is an HTTP server that does not answer.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    uri = client._tracking_client.tracking_uri
    if uri.startswith(("http://", "https://")):
        check_reachable(uri)
    return client


def check_reachable(uri: str) -> None:
    """Refuse, within seconds, an HTTP tracking server that does not answer (once per process)."""
    if uri in _REACHABLE:
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        pass  # something answered; MLflow will say what it thinks of the request
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingStoreError(
            f"Nothing answered at the MLflow tracking server {redact_url(uri)} ({reason}). "
            "Start the server, or point MLFLOW_TRACKING_URI (or --tracking-uri) at a store "
            "that is reachable."
        ) from None
    _REACHABLE.add(uri)


def tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def experiment_chosen() -> bool:
    """Whether the user named an experiment (``mlflow.set_experiment`` or ``MLFLOW_EXPERIMENT_*``)."""
    from mlflow.tracking import fluent

    return bool(
        getattr(fluent, "_active_experiment_id", None)
        or os.environ.get("MLFLOW_EXPERIMENT_ID")
        or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    )


def experiment_by_name(client: MlflowClient, name: str) -> str:
    """The id of the experiment called ``name``, created when missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None and experiment.lifecycle_stage == "active":
        return str(experiment.experiment_id)
    if experiment is not None:
        return default_experiment_id(client)  # a deleted experiment cannot take runs
    return str(client.create_experiment(name, tags=experiment_tags()))


def experiment_tags() -> dict[str, str]:
    """The tags of an experiment pcs creates: MLflow 3's kind for model training."""
    return {_keys.EXPERIMENT_KIND: _keys.EXPERIMENT_KIND_TRAINING}


def default_experiment_id(client: MlflowClient) -> str:
    """The experiment a new run goes to when none is given.

    Follows MLflow's own rules: ``mlflow.set_experiment``, then
    ``MLFLOW_EXPERIMENT_ID`` / ``MLFLOW_EXPERIMENT_NAME`` (created when
    missing), then the store's default experiment.
    """
    from mlflow.tracking import fluent

    experiment_id = getattr(fluent, "_active_experiment_id", None)
    if experiment_id:
        return str(experiment_id)
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return os.environ["MLFLOW_EXPERIMENT_ID"]
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if name:
        return experiment_by_name(client, name)
    return "0"
