"""A plain ``postgresql://`` URL works with what the ``postgres`` extra installs.

SQLAlchemy 2.1 reads ``postgresql://`` as psycopg 3 (2.0 as psycopg2); the
extra installs both, so the URL needs no ``+driver`` for ``mlflow server
--backend-store-uri`` or ``pcs-registry serve --db``, whichever SQLAlchemy
MLflow brings.
"""

from __future__ import annotations

import configparser

import pytest
from _registry_server import postgres_database
from conftest import REPO_ROOT

pytestmark = pytest.mark.postgres


def _extra(name: str) -> list[str]:
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    return [line.strip() for line in config["options.extras_require"][name].splitlines() if line.strip()]


def test_the_postgres_extra_holds_the_driver_sqlalchemy_picks():
    import sqlalchemy
    from sqlalchemy.dialects import postgresql

    default = postgresql.dialect.driver  # what a bare postgresql:// URL loads
    wanted = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary"}[default]
    assert any(r.startswith(wanted) for r in _extra("postgres")), (sqlalchemy.__version__, default)
    assert any(r.startswith(wanted) for r in _extra("test"))


def test_a_plain_postgresql_url_holds_an_mlflow_store(monkeypatch):
    url = postgres_database()
    assert url.startswith("postgresql://")  # no +driver
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)  # what mlflow server --backend-store-uri does
    experiment_id = client.create_experiment("on postgres")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "loss", 0.5)
    assert client.get_run(run.info.run_id).data.metrics == {"loss": 0.5}
