"""Where the registry token comes from, how it is cleaned, and how the server compares it.

The token reaches the server through ``PCS_REGISTRY_TOKEN`` or ``--token-file``
(``--token`` still works, but ``ps`` shows it); whitespace around it is
ignored on both sides; the server compares in constant time.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from _registry_server import TOKEN, shared_registry_server, start_registry_server, stop_process
from click.testing import CliRunner
from conftest import REPO_ROOT

import registry.app as registry_app
from pcs.errors import ArgumentError, RegistryAuthError
from pcs.web_registry import TOKEN_ENV, WebRegistry, normalize_token, resolve_token
from registry.cli import main as registry_main


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> tuple[str, Path]:
    return shared_registry_server(tmp_path_factory)


def command_line(pid: int) -> str:
    """What ``ps`` shows every user of the machine for a process."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def can_write(url: str, token: str | None) -> bool:
    identifier = f"probe-{uuid.uuid4().hex[:12]}"
    try:
        WebRegistry(url, token=token).add_component_spec({"identifier": identifier})
    except RegistryAuthError:
        return False
    return True


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["serve", "-h"]])
def test_pcs_registry_has_short_help(args):
    result = subprocess.run([sys.executable, "-m", "registry.cli", *args], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    if "serve" in args:
        assert "--token-file" in result.stdout and "--shutdown-timeout" in result.stdout
        flat = " ".join(result.stdout.split())
        assert "Every user of this machine can read it in `ps`" in flat
        assert TOKEN_ENV in flat


def test_server_token_from_a_file_with_whitespace_wins_and_stays_out_of_ps(tmp_path):
    secret = f"fïle-tökén-🙂-{uuid.uuid4().hex}"
    env_secret = f"env-token-{uuid.uuid4().hex}"
    token_file = tmp_path / "token"
    token_file.write_text(f"  {secret} \n\n")  # as an editor or `echo` leaves it
    url, process = start_registry_server(
        tmp_path / "server", token=None, extra_args=["--token-file", str(token_file)],
        env={TOKEN_ENV: f"  {env_secret}\n"},
    )
    try:
        shown = command_line(process.pid)
        assert secret not in shown and env_secret not in shown
        assert str(token_file) in shown

        assert can_write(url, secret)
        assert can_write(url, f"\t{secret}\r\n")  # the client strips too
        assert not can_write(url, env_secret)  # the file takes precedence
        assert not can_write(url, secret[:-1])
        assert not can_write(url, secret + "x")
        # raw headers: whitespace around the token is not part of it
        answer = requests.put(f"{url}/api/v1/components/{uuid.uuid4().hex}", json={},
                              headers={"Authorization": b"Bearer   " + secret.encode() + b"  "},
                              timeout=10)
        assert answer.status_code == 201, answer.text
    finally:
        stop_process(process)
    log = (tmp_path / "server" / "server.log").read_text()
    assert secret not in log and "visible to every user" not in log


def test_server_token_on_the_command_line_works_with_a_warning(tmp_path):
    secret = f"cli-token-{uuid.uuid4().hex}"
    url, process = start_registry_server(tmp_path / "server", token="env-token-loses",
                                         extra_args=["--token", f" {secret} "])
    try:
        assert secret in command_line(process.pid)  # which is why the help warns
        assert can_write(url, secret)
        assert not can_write(url, "env-token-loses")
    finally:
        stop_process(process)
    log = (tmp_path / "server" / "server.log").read_text()
    assert "--token is visible to every user in `ps`" in log
    assert secret not in log


@pytest.mark.parametrize(
    "content, message",
    [(b"", "is empty"), (b" \n\t\n", "is empty"), (b"to\nken\n", "line break"),
     (b"\xff\xfe", "not UTF-8"), (b"x" * 70_000, "larger than")],
)
def test_server_refuses_an_unusable_token_file(tmp_path, content, message):
    token_file = tmp_path / "token"
    token_file.write_bytes(content)
    result = CliRunner().invoke(registry_main, [
        "serve", "--token-file", str(token_file), "--db", f"sqlite:///{tmp_path / 'r.db'}",
        "--artifacts", str(tmp_path / "artifacts"),
    ])
    assert result.exit_code == 2
    assert message in result.output and str(token_file) in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r.db").exists()  # refused before anything was created


def test_server_refuses_a_missing_token_file(tmp_path):
    result = CliRunner().invoke(registry_main, [
        "serve", "--token-file", str(tmp_path / "nope"), "--artifacts", str(tmp_path / "a")])
    assert result.exit_code == 2
    assert "Cannot read the registry token file" in result.output


# -- the client ---------------------------------------------------------------------------------


def test_resolve_token_precedence_and_whitespace(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv(TOKEN_ENV, "  from-env \n")

    assert resolve_token("from-flag", token_file) == "from-file"
    assert resolve_token(" from-flag\n", None) == "from-flag"
    assert resolve_token(None, None) == "from-env"
    assert resolve_token("  ", None) == "from-env"  # blank counts as not given
    monkeypatch.setenv(TOKEN_ENV, " ")
    assert resolve_token(None, None) is None
    monkeypatch.delenv(TOKEN_ENV)
    assert resolve_token() is None
    home_file = Path("~") / "token"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_token(None, home_file) == "from-file"


@pytest.mark.parametrize(
    "content, message",
    [(b"", "is empty"), (b"\n \n", "is empty"), (b"two\nlines", "line break"),
     (b"\xc3\x28", "not UTF-8"), (b"t" * 65_537, "larger than")],
)
def test_resolve_token_refuses_unusable_files(tmp_path, content, message):
    token_file = tmp_path / "token"
    token_file.write_bytes(content)
    with pytest.raises(ArgumentError, match=message) as caught:
        resolve_token("ignored", token_file)
    assert "two" not in str(caught.value)  # the token itself is never shown


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_resolve_token_refuses_unreadable_files(tmp_path, make):
    with pytest.raises(ArgumentError, match="Cannot read the registry token file"):
        resolve_token(None, make(tmp_path))


def test_tokens_with_control_characters_are_refused_without_showing_them(monkeypatch, server):
    url, _ = server
    with pytest.raises(ArgumentError, match="control character") as caught:
        WebRegistry(url, token="sec\nret")
    assert "sec" not in str(caught.value)
    monkeypatch.setenv(TOKEN_ENV, "a\x1bb")
    with pytest.raises(ArgumentError, match=TOKEN_ENV):
        resolve_token()
    assert normalize_token(" \t") is None


def test_client_token_with_trailing_newline_writes(server, monkeypatch):
    url, _ = server
    assert can_write(url, f"{TOKEN}\n")
    monkeypatch.setenv(TOKEN_ENV, f" {TOKEN}\r\n")
    assert can_write(url, None)


# -- the comparison -----------------------------------------------------------------------------


def test_token_comparison_is_constant_time(monkeypatch):
    """The server compares fixed-length digests with hmac.compare_digest, never the raw tokens.

    ``==`` on the tokens would return sooner the earlier they differ, and a
    plain compare_digest would still reveal the expected token's length.
    """
    calls: list[tuple[bytes, bytes]] = []
    real = registry_app.hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(registry_app.hmac, "compare_digest", recording)
    expected = b"the-expected-token"
    assert registry_app._token_matches(b"the-expected-token", expected)
    assert not registry_app._token_matches(b"x", expected)
    assert not registry_app._token_matches(b"the-expected-tokeX", expected)
    assert not registry_app._token_matches(b"the-expected-token" * 100, expected)

    assert len(calls) == 4
    for given, wanted in calls:
        assert len(given) == len(wanted) == 32
        assert wanted == hashlib.sha256(expected).digest()


def test_wrong_tokens_of_every_shape_are_refused(server):
    url, _ = server
    for wrong in ("", "s", TOKEN[:-1], TOKEN + "t", TOKEN.upper(), "x" * 10_000, "sëcret"):
        headers = {"Authorization": f"Bearer {wrong}".encode()}
        answer = requests.put(f"{url}/api/v1/components/{uuid.uuid4().hex}", json={},
                              headers=headers, timeout=10)
        assert answer.status_code == 401, wrong
        assert answer.json()["error"] == "RegistryAuthError"
