"""Issue 21.1: no secret from user code reaches the store, a bundle, the registry or the screen.

A component fails with an error that quotes a token in a URL query, URL
credentials and a secret env value, prints them, and takes a secret argument.
The tests grep the bytes of the SQLite store and its artifact folder, an
exported bundle, ``pcs status`` and a spec published to a real registry server.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from _registry_server import start_registry_server, stop_process
from conftest import run_cli

import pcs
from pcs import ArgumentSet
from pcs._redact import redact_text
from pcs.errors import ArgumentError
from pcs.secrets import env_name, is_marker, is_secret_name

TOKEN = "tok-QUERYSECRET-9f8e7d"
PASSWORD = "pw-URLSECRET-5c4b"
ENV_SECRET = "env-SECRETVALUE-1a2b3c"
ARG_SECRET = "arg-APIKEYSECRET-77aa"
SECRETS = (TOKEN, PASSWORD, ENV_SECRET, ARG_SECRET)

COMPONENTS = """
repos:
  here:
    type: local
    path: .
components:
  svc:
    repo: here
    file_path: svc.py
    class_name: Service
    instantiate: true
"""

# the values come from the environment: a secret written in the source is in its snapshot
SERVICE = """
import os

class Service:
    def fetch(self, api_key="", fail=True):
        env = os.environ
        print("calling with", api_key, env.get("SVC_API_TOKEN"))
        print("url", "https://api.example.invalid/v1/data?access_token=" + env["SVC_Q"])
        if fail:
            raise ValueError(
                "fetch https://api.example.invalid/v1/data?access_token=" + env["SVC_Q"]
                + " ; https://bob:" + env["SVC_U"] + "@files.example.invalid/x ; env "
                + env["SVC_API_TOKEN"] + " ; key " + api_key
            )
        return len(api_key)
"""
ENV = {"SVC_API_TOKEN": ENV_SECRET, "SVC_Q": TOKEN, "SVC_U": PASSWORD}


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "components.yaml").write_text(COMPONENTS)
    (folder / "svc.py").write_text(textwrap.dedent(SERVICE))
    return folder


def _store_bytes(tmp_path: Path) -> bytes:
    """Every byte of the test's SQLite store and its artifact folder."""
    data = b""
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and "project" not in path.parts and "pcs_home" not in path.parts:
            data += path.read_bytes()
    return data


def _assert_clean(data: bytes | str, where: str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    for value in SECRETS:
        assert value.encode() not in raw, f"{value} found in {where}"


def test_redactor_masks_pairs_env_values_and_known_secrets(monkeypatch):
    monkeypatch.setenv("SVC_API_TOKEN", ENV_SECRET)
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to mask: ordinary words would go
    pcs.secret(ARG_SECRET)
    text = redact_text(
        f"GET /x?access_token={TOKEN}&page=2 failed; password={PASSWORD}, env {ENV_SECRET}, "
        f"arg {ARG_SECRET}, abc stays, key=k1 monkey=3 svc.fetch.api_key=VALUE"
    )
    _assert_clean(text, "redacted text")
    assert "access_token=***&page=2" in text and "password=***" in text
    assert "abc stays" in text and "monkey=3" in text and "key=***" in text
    assert "svc.fetch.api_key=VALUE" in text  # pcs's own argument names are not secrets


def test_usage_placeholders_and_shell_variables_are_not_masked():
    text = redact_text("Cannot read tag 'x': write it as KEY=VALUE, or token=$HF_TOKEN, key=${K}. Use KEY=VALUE.")
    assert text.endswith("KEY=VALUE.") and "KEY=VALUE" in text and "token=$HF_TOKEN" in text and "key=${K}" in text
    assert redact_text("key=VALUE2") == "key=***"  # only the placeholder words themselves


def test_secret_names_are_parts_not_lookalikes():
    for name in ("api_key", "openAiApiKey", "OPENAI_API_KEY", "token", "hf_token", "client_secret",
                 "db_password", "passwd", "apikey"):
        assert is_secret_name(name), name
    for name in ("tokenizer", "max_tokens", "n", "keyword", "monkey", "passage"):
        assert not is_secret_name(name), name
    assert env_name("api-key") == "PCS_SECRET_API_KEY"


def test_secret_argument_is_a_marker_and_the_id_covers_its_hash(monkeypatch):
    a = ArgumentSet({"svc": {"fetch": {"api_key": ARG_SECRET, "n": 1}}})
    b = ArgumentSet({"svc": {"fetch": {"api_key": pcs.secret(ARG_SECRET), "n": 1}}})
    c = ArgumentSet({"svc": {"fetch": {"api_key": "another-secret-value", "n": 1}}})
    stored = a.to_dict()["svc"]["fetch"]["api_key"]
    assert is_marker(stored) and ARG_SECRET not in repr(a.to_spec())
    assert a.identifier == b.identifier != c.identifier
    assert a.get_function_args("svc", "fetch") == {"api_key": ARG_SECRET, "n": 1}
    # a recorded set read back keeps its marker and its identifier
    assert ArgumentSet.from_spec(a.to_spec()).identifier == a.identifier
    # an old record with a clear value under a secret-looking name keeps its identifier
    old = {"svc": {"fetch": {"password": "x"}}}
    assert ArgumentSet.recorded(old).to_dict() == old


def test_secret_unknown_to_the_process_comes_from_the_environment(monkeypatch):
    from pcs import secrets as secret_module

    spec = ArgumentSet({"svc": {"fetch": {"api_key": pcs.secret("only-in-env-123")}}}).to_spec()
    monkeypatch.setattr(secret_module, "_known", {})  # as in a new process
    loaded = ArgumentSet.from_spec(spec)
    with pytest.raises(ArgumentError, match="PCS_SECRET_API_KEY") as missing:
        loaded.get_function_args("svc", "fetch")
    assert "--secret-arg svc.fetch.api_key=VALUE" in str(missing.value)
    monkeypatch.setenv("PCS_SECRET_API_KEY", "a-different-value")
    with pytest.raises(ArgumentError, match="hash differs"):
        loaded.get_function_args("svc", "fetch")
    monkeypatch.setenv("PCS_SECRET_API_KEY", "only-in-env-123")
    assert loaded.get_function_args("svc", "fetch") == {"api_key": "only-in-env-123"}


def test_no_secret_in_store_status_bundle_or_registry(project, tmp_path):
    env = ENV
    failed = run_cli("run", "svc", "-e", "fetch", "-s", f"svc.fetch.api_key={ARG_SECRET}",
                     cwd=project, env=env, check=False)
    assert failed.returncode == 6, failed.stderr
    _assert_clean(failed.stderr, "pcs run's error line")  # stdout shows the code's own print live
    run_id = json.loads(run_cli("status", "--json", cwd=project).stdout)[0]["run_id"]

    status = run_cli("status", run_id, cwd=project, env=env)
    _assert_clean(status.stdout + status.stderr, "pcs status")
    assert "access_token=***" in status.stdout or "v1/data" in status.stdout
    _assert_clean(_store_bytes(tmp_path), "the SQLite store and artifacts")

    from pcs import Run

    run = Run.from_existing_run_id(run_id)
    assert is_marker(run.params["svc.fetch.api_key"])
    assert "files.example.invalid/x" in run.tags["pcs.error"]

    bundle = tmp_path / "out" / "bundle.tar.gz"
    bundle.parent.mkdir()
    run_cli("export", run_id, "-o", str(bundle), cwd=project)
    import tarfile

    with tarfile.open(bundle) as tar:
        for member in tar.getmembers():
            if member.isfile():
                _assert_clean(tar.extractfile(member).read(), f"bundle member {member.name}")

    url, server = start_registry_server(tmp_path / "registry", token="team-token-xyz")
    try:
        run_cli("publish", run_id, "--to", url, cwd=project,
                env={"PCS_REGISTRY_TOKEN": "team-token-xyz"})
        _assert_clean(_server_bytes(tmp_path / "registry"), "the registry server's files")
        other = tmp_path / "elsewhere"
        other.mkdir()
        pulled = run_cli("pull", run_id, "--from", url, cwd=other, check=False,
                         env={"MLFLOW_TRACKING_URI": f"sqlite:///{other / 'mlflow.db'}"})
        _assert_clean(pulled.stdout + pulled.stderr, "pcs pull")
    finally:
        stop_process(server)


def _server_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_rerun_of_a_secret_argument_needs_the_value(project, tmp_path):
    ok = run_cli("run", "svc", "-e", "fetch", "-a", "svc.fetch.fail=false",
                 "-a", f"svc.fetch.api_key={ARG_SECRET}", cwd=project,
                 env=ENV)
    run_id = ok.stdout.strip().splitlines()[-1]
    _assert_clean(_store_bytes(tmp_path), "the store")

    clean_env = {k: "" for k in os.environ if k.startswith("PCS_SECRET_")}
    clean_env.update(ENV)
    missing = run_cli("rerun", run_id, cwd=project, env=clean_env, check=False)
    assert missing.returncode == 2
    lines = [line for line in missing.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and "PCS_SECRET_API_KEY" in lines[0], missing.stderr

    by_option = run_cli("rerun", run_id, "--verify", "--secret-arg",
                        f"svc.fetch.api_key={ARG_SECRET}", cwd=project, env=clean_env)
    assert "reproduced" in by_option.stdout
    by_env = run_cli("rerun", run_id, "--verify", cwd=project,
                     env=clean_env | {"PCS_SECRET_API_KEY": ARG_SECRET})
    assert "reproduced" in by_env.stdout


def test_the_recorded_env_child_gets_secrets_through_its_environment():
    from pcs.isolated import secret_arguments_env

    args = ArgumentSet({"svc": {"fetch": {"api_key": pcs.secret("child-secret-1"), "n": 1},
                                "__init__": {"db_password": "child-secret-2"}}})
    assert secret_arguments_env(args.to_dict()) == {
        "PCS_SECRET_API_KEY": "child-secret-1", "PCS_SECRET_DB_PASSWORD": "child-secret-2",
    }


def test_the_recorded_env_child_gets_a_script_s_argv_secrets_through_its_environment(monkeypatch):
    from pcs import secrets as secret_module
    from pcs.isolated import secret_arguments_env
    from pcs.record.script import protect_argv, reveal_argv
    from pcs.secrets import marker_of

    argv = protect_argv(["--lr", "0.1", "--api-key", "argv-secret-1", "--db-password=argv-secret-2",
                         "db.token=argv-secret-3"])
    held = secret_arguments_env({"train": {"run": {"argv": argv}}})
    assert held == {"PCS_SECRET_API_KEY": "argv-secret-1", "PCS_SECRET_DB_PASSWORD": "argv-secret-2",
                    "PCS_SECRET_DB_TOKEN": "argv-secret-3"}
    # a value this process does not hold is not passed on
    assert secret_arguments_env({"train": {"run": {"argv": ["--token", marker_of("unheld")]}}}) == {}
    # the child, which holds none of them, reveals the argv from exactly these variables
    monkeypatch.setattr(secret_module, "_known", {})  # as in a new process
    for name, value in held.items():
        monkeypatch.setenv(name, value)
    assert reveal_argv(argv, "train")[0] == [
        "--lr", "0.1", "--api-key", "argv-secret-1", "--db-password=argv-secret-2",
        "db.token=argv-secret-3",
    ]
