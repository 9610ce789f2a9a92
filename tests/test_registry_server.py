"""The registry server and WebRegistry, against real server processes on 127.0.0.1.

The session's shared SQLite-backed server serves most tests; tests that need
another configuration (read-only, a small upload limit, PostgreSQL) start
their own. Every test uses fresh identifiers, so tests never see each other's
specs.
"""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import os
import tarfile
import threading
import uuid
from pathlib import Path

import pytest
import requests
from _registry_server import (
    TOKEN,
    postgres_database,
    shared_registry_server,
    start_registry_server,
    stop_process,
)
from conftest import free_port

from pcs._archive import make_tar_gz, safe_extract_tar
from pcs.errors import (
    BundleError,
    RegistryAuthError,
    RegistryConflictError,
    RegistryError,
    RegistryServerError,
    SpecNotFoundError,
    UploadTooLargeError,
)
from pcs.registry import InMemoryRegistry
from pcs.web_registry import WebRegistry

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> tuple[str, Path]:
    """(base URL, server folder) of the session's registry server with token 'secret'."""
    return shared_registry_server(tmp_path_factory)


@pytest.fixture
def url(server) -> str:
    return server[0]


@pytest.fixture
def artifacts(server) -> Path:
    return server[1] / "artifacts"


def new_id(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_run_id() -> str:
    return uuid.uuid4().hex


def put_archive(url: str, run_id: str, data: bytes, headers: dict | None = None) -> requests.Response:
    """PUT raw bytes as a run's artifacts; ``run_id`` goes into the URL as given."""
    return requests.put(
        f"{url}/api/v1/runs/{run_id}/artifacts", data=data, timeout=30,
        headers={"Content-Type": "application/gzip", **(AUTH if headers is None else headers)},
    )


def tar_gz(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    """A hand-made .tar.gz holding exactly ``members``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def file_member(name: str, data: bytes = b"evil") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def special_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def make_artifact_folder(root: Path) -> Path:
    (root / "pcs" / "source").mkdir(parents=True)
    (root / "empty_dir").mkdir()
    (root / "model.bin").write_bytes(os.urandom(200_000))
    (root / "pcs" / "run_command.yaml").write_text("entry_point: run\n")
    (root / "pcs" / "source" / "agent.py").write_text("print('hi')\n")
    script = root / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    return root


def folder_contents(root: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def leftovers(artifacts: Path) -> list[str]:
    """Staging folders or upload spools a refused request left behind."""
    return [p.name for p in artifacts.iterdir() if p.name.startswith(".")]


# -- specs ---------------------------------------------------------------------------


def test_health(url):
    answer = requests.get(f"{url}/api/v1/health", timeout=10)
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
    assert answer.json()["writes"] is True
    assert WebRegistry(url).health()["status"] == "ok"


@pytest.mark.parametrize(
    "identifier",
    ["agent==1.0", "a/b c?d#e%f&g=h+i", "../../etc/passwd", "ünïcode==2", "x" * 300],
)
def test_put_and_get_spec_with_any_identifier(url, identifier):
    registry = WebRegistry(url, token=TOKEN)
    identifier = f"{identifier}-{uuid.uuid4().hex[:6]}"
    spec = {"identifier": identifier, "class_name": "Agent", "nested": {"a": [1, 2.5, None]}}

    registry.add_component_spec(spec)

    assert registry.get_component_spec(identifier) == spec
    assert registry.has_spec("components", identifier)
    assert identifier in registry.identifiers("components")
    # a second client sees the same thing
    assert WebRegistry(url).get_spec("components", identifier) == spec


def test_identifiers_lists_each_section_on_its_own(url):
    registry = WebRegistry(url, token=TOKEN)
    repo_id, command_id = new_id("repo"), new_id("cmd")
    registry.add_repo_spec({"identifier": repo_id, "type": "local", "path": "."})
    registry.add_run_command_spec({"identifier": command_id, "component": "agent"})

    assert repo_id in registry.identifiers("repos")
    assert repo_id not in registry.identifiers("run_commands")
    assert command_id in registry.identifiers("run_commands")


def test_unknown_section_is_404_and_refused_by_the_client(url):
    answer = requests.get(f"{url}/api/v1/bogus", timeout=10)
    assert answer.status_code == 404
    assert answer.json()["error"] == "SpecNotFoundError"
    assert "repos, components" in answer.json()["message"]
    assert requests.get(f"{url}/api/v1/bogus/x", timeout=10).status_code == 404
    with pytest.raises(RegistryError, match="Unknown registry section 'bogus'"):
        WebRegistry(url).identifiers("bogus")


def test_missing_spec(url):
    registry = WebRegistry(url)
    missing = new_id("missing")
    assert registry._get("components", missing) is None
    assert not registry.has_spec("components", missing)
    with pytest.raises(SpecNotFoundError, match=missing):
        registry.get_component_spec(missing)
    answer = requests.get(f"{url}/api/v1/components/{missing}", timeout=10)
    assert answer.status_code == 404
    assert set(answer.json()) == {"error", "message"}


def test_conflicting_spec_needs_force(url):
    registry = WebRegistry(url, token=TOKEN)
    identifier = new_id("agent")
    registry.add_component_spec({"identifier": identifier, "version": 1})
    registry.add_component_spec({"identifier": identifier, "version": 1})  # equal: no-op

    with pytest.raises(RegistryConflictError):
        registry.add_component_spec({"identifier": identifier, "version": 2})
    assert registry.get_component_spec(identifier)["version"] == 1

    registry.add_component_spec({"identifier": identifier, "version": 2}, force=True)
    assert registry.get_component_spec(identifier)["version"] == 2


def test_a_spec_written_meanwhile_by_another_client_is_not_overwritten(url):
    """Two publishers race: the server, not the client's earlier read, decides."""
    first, second = WebRegistry(url, token=TOKEN), WebRegistry(url, token=TOKEN)
    identifier = new_id("race")
    assert first._get("components", identifier) is None  # first looks: nothing there
    second.add_component_spec({"identifier": identifier, "version": "second"})
    with pytest.raises(RegistryConflictError):
        first._put("components", identifier, {"version": "first"}, overwrite=False)
    assert first.get_component_spec(identifier)["version"] == "second"


def test_http_put_semantics(url):
    spec_url = f"{url}/api/v1/components/{new_id('agent')}%3D%3D1.0"
    assert requests.put(spec_url, json={"v": 1}, headers=AUTH, timeout=10).status_code == 201
    again = requests.put(spec_url, json={"v": 1}, headers=AUTH, timeout=10)
    assert (again.status_code, again.json()["result"]) == (200, "unchanged")

    conflict = requests.put(spec_url, json={"v": 2}, headers=AUTH, timeout=10)
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "RegistryConflictError"
    assert "force=true" in conflict.json()["message"]
    assert requests.get(spec_url, timeout=10).json() == {"v": 1}

    forced = requests.put(spec_url, params={"force": "true"}, json={"v": 2}, headers=AUTH, timeout=10)
    assert (forced.status_code, forced.json()["result"]) == (200, "updated")
    assert requests.get(spec_url, timeout=10).json() == {"v": 2}


@pytest.mark.parametrize(
    "body, message",
    [(b"[1, 2]", "must be a JSON object"), (b"{not json", "not valid JSON"),
     (b'{"x": NaN}', "NaN")],
)
def test_bad_spec_bodies_are_400(url, body, message):
    spec_url = f"{url}/api/v1/components/{new_id()}"
    answer = requests.put(spec_url, data=body, headers={**AUTH, "Content-Type": "application/json"},
                          timeout=10)
    assert answer.status_code == 400
    assert message in answer.json()["message"]
    assert requests.get(spec_url, timeout=10).status_code == 404


# -- auth ----------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {TOKEN}"}])
def test_writes_without_a_valid_token_are_401_and_store_nothing(url, artifacts, headers, tmp_path):
    identifier = new_id("agent")
    spec_url = f"{url}/api/v1/components/{identifier}"
    answer = requests.put(spec_url, json={"v": 1}, headers=headers, timeout=10)
    assert answer.status_code == 401
    assert answer.json()["error"] == "RegistryAuthError"
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(spec_url, timeout=10).status_code == 404

    run_id = new_run_id()
    archive = make_tar_gz(make_artifact_folder(tmp_path / "run"))
    assert put_archive(url, run_id, archive, headers=headers).status_code == 401
    assert not (artifacts / run_id).exists()
    assert requests.get(f"{url}/api/v1/runs/{run_id}/artifacts", timeout=10).status_code == 404


def test_client_without_token_refuses_to_write(url, tmp_path):
    registry = WebRegistry(url)
    identifier = new_id("agent")
    with pytest.raises(RegistryAuthError, match="PCS_REGISTRY_TOKEN"):
        registry.add_component_spec({"identifier": identifier})
    with pytest.raises(RegistryAuthError):
        registry.add_run_artifacts(new_run_id(), make_artifact_folder(tmp_path / "run"))
    assert not registry.has_spec("components", identifier)


def test_client_with_wrong_token_gets_auth_error(url, tmp_path):
    registry = WebRegistry(url, token="wrong")
    identifier = new_id("agent")
    with pytest.raises(RegistryAuthError) as caught:
        registry.add_component_spec({"identifier": identifier})
    assert url in str(caught.value)
    assert "token=" in str(caught.value) and "PCS_REGISTRY_TOKEN" in str(caught.value)
    assert not registry.has_spec("components", identifier)

    run_id = new_run_id()
    with pytest.raises(RegistryAuthError):
        registry.add_run_artifacts(run_id, make_artifact_folder(tmp_path / "run"))
    assert registry.run_artifacts_dir(run_id) is None


def test_token_from_environment(url, monkeypatch):
    monkeypatch.setenv("PCS_REGISTRY_TOKEN", TOKEN)
    registry = WebRegistry(url)
    identifier = new_id("agent")
    registry.add_component_spec({"identifier": identifier})
    assert registry.has_spec("components", identifier)


def test_server_without_token_is_read_only(tmp_path):
    url, process = start_registry_server(tmp_path / "server", token=None)
    try:
        assert requests.get(f"{url}/api/v1/health", timeout=10).json()["writes"] is False
        assert requests.get(f"{url}/api/v1/components", timeout=10).json() == {"identifiers": []}
        answer = requests.put(f"{url}/api/v1/components/a", json={}, headers=AUTH, timeout=10)
        assert answer.status_code == 401
        assert "started without a token" in answer.json()["message"]
        with pytest.raises(RegistryAuthError, match="without a token"):
            WebRegistry(url, token=TOKEN).add_component_spec({"identifier": "a"})
        assert WebRegistry(url).identifiers("components") == []
    finally:
        stop_process(process)
    assert "READ-ONLY" in (tmp_path / "server" / "server.log").read_text()


# -- artifacts -----------------------------------------------------------------------


def test_artifacts_round_trip(url, tmp_path):
    source = make_artifact_folder(tmp_path / "run")
    run_id = new_run_id()
    WebRegistry(url, token=TOKEN).add_run_artifacts(run_id, source)

    downloaded = WebRegistry(url).run_artifacts_dir(run_id)

    assert downloaded is not None
    assert downloaded.is_relative_to(Path(os.environ["PCS_HOME"]) / "web_registry")
    assert folder_contents(downloaded) == folder_contents(source)
    assert os.access(downloaded / "run.sh", os.X_OK)


def test_artifacts_upload_replaces_the_old_copy(url, artifacts, tmp_path):
    registry = WebRegistry(url, token=TOKEN)
    run_id = new_run_id()
    registry.add_run_artifacts(run_id, make_artifact_folder(tmp_path / "first"))
    second = tmp_path / "second"
    second.mkdir()
    (second / "only.txt").write_text("second")

    registry.add_run_artifacts(run_id, second)

    assert folder_contents(artifacts / run_id) == {"only.txt": b"second"}
    downloaded = registry.run_artifacts_dir(run_id)
    assert downloaded is not None and folder_contents(downloaded) == {"only.txt": b"second"}
    assert leftovers(artifacts) == []


def test_missing_artifacts_are_none(url):
    assert WebRegistry(url).run_artifacts_dir(new_run_id()) is None


def test_registry_update_copies_specs_and_artifacts_both_ways(url, tmp_path):
    run_id = new_run_id()
    local = InMemoryRegistry()
    local.add_run_spec({"identifier": run_id, "run_command": "cmd"})
    local.add_component_spec({"identifier": new_id("agent"), "class_name": "Agent"})
    local.add_run_artifacts(run_id, make_artifact_folder(tmp_path / "run"))

    web = WebRegistry(url, token=TOKEN)
    web.update(local)
    back = InMemoryRegistry()
    back.update(web)

    for section in ("runs", "components"):
        for identifier in local.identifiers(section):
            assert back.get_spec(section, identifier) == local.get_spec(section, identifier)
    copied = back.run_artifacts_dir(run_id)
    assert copied is not None
    assert folder_contents(copied) == folder_contents(tmp_path / "run")


UNSAFE_ARCHIVES = {
    "parent_dir": (tar_gz(file_member("../evil")), "'..' component"),
    "grandparent_dir": (tar_gz(file_member("ok.txt", b"ok"), file_member("../../evil")),
                        "'..' component"),
    "inner_dotdot": (tar_gz(file_member("a/../../evil")), "'..' component"),
    "symlink": (tar_gz(special_member("link", tarfile.SYMTYPE, "/etc/passwd")), "symbolic link"),
    "hardlink": (tar_gz(special_member("link", tarfile.LNKTYPE, "/etc/passwd")), "hard link"),
    "device": (tar_gz(special_member("dev", tarfile.CHRTYPE)), "device"),
    "fifo": (tar_gz(special_member("fifo", tarfile.FIFOTYPE)), "device, pipe"),
    "backslash": (tar_gz(file_member("..\\evil")), "backslash"),
    "not_gzip": (b"just some bytes, not an archive", "not a complete .tar.gz"),
    "gzip_not_tar": (gzip.compress(b"hello " * 1000), "not a complete .tar.gz"),
    "empty": (b"", "not a complete .tar.gz"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE_ARCHIVES))
def test_unsafe_archives_are_refused(url, server, artifacts, case):
    data, message = UNSAFE_ARCHIVES[case]
    run_id = new_run_id()

    answer = put_archive(url, run_id, data)

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "BundleError"
    assert message in answer.json()["message"]
    assert not (artifacts / run_id).exists()
    assert not (artifacts / "evil").exists()
    assert not (server[1] / "evil").exists()
    assert leftovers(artifacts) == []


def test_absolute_member_is_refused(url, server, artifacts, tmp_path):
    target = tmp_path / "abs_evil"
    run_id = new_run_id()

    answer = put_archive(url, run_id, tar_gz(file_member(str(target))))

    assert answer.status_code == 400
    assert "absolute path" in answer.json()["message"]
    assert not target.exists()
    assert not (artifacts / run_id).exists()
    assert leftovers(artifacts) == []


@pytest.mark.parametrize("cut", ["half", "trailer"])
def test_truncated_archive_is_refused(url, artifacts, tmp_path, cut):
    data = make_tar_gz(make_artifact_folder(tmp_path / "run"))
    data = data[: len(data) // 2] if cut == "half" else data[:-4]  # -4: only the gzip size field
    run_id = new_run_id()

    answer = put_archive(url, run_id, data)

    assert answer.status_code == 400
    assert "truncated" in answer.json()["message"]
    assert not (artifacts / run_id).exists()
    assert leftovers(artifacts) == []


def test_refused_upload_keeps_the_previous_artifacts(url, artifacts, tmp_path):
    run_id = new_run_id()
    source = make_artifact_folder(tmp_path / "run")
    WebRegistry(url, token=TOKEN).add_run_artifacts(run_id, source)

    bad = tar_gz(file_member("fine.txt", b"fine"), file_member("../evil"))
    assert put_archive(url, run_id, bad).status_code == 400

    assert folder_contents(artifacts / run_id) == folder_contents(source)


@pytest.mark.parametrize(
    "encoded_run_id",
    ["abc%2F..", "..%2Fescape", "abc%2F..%2F..%2Fevil", "%2E%2E", "a%20b", "a.b", "x" * 65],
)
def test_bad_run_ids_are_400(url, artifacts, server, tmp_path, encoded_run_id):
    archive = make_tar_gz(make_artifact_folder(tmp_path / "run"))

    put = put_archive(url, encoded_run_id, archive)
    get = requests.get(f"{url}/api/v1/runs/{encoded_run_id}/artifacts", timeout=10)

    for answer in (put, get):
        assert answer.status_code == 400, answer.text
        assert "not a valid run id" in answer.json()["message"]
    assert sorted(p.name for p in server[1].iterdir()) == ["artifacts", "registry.db", "server.log"]
    assert leftovers(artifacts) == []


def test_client_refuses_bad_run_ids(url, tmp_path):
    registry = WebRegistry(url, token=TOKEN)
    with pytest.raises(BundleError, match="not a valid run id"):
        registry.add_run_artifacts("abc/..", make_artifact_folder(tmp_path / "run"))
    with pytest.raises(BundleError, match="not a valid run id"):
        registry.run_artifacts_dir("../x")


def test_upload_limit_is_413(tmp_path):
    url, process = start_registry_server(tmp_path / "server", extra_args=["--max-upload-mb", "1"])
    try:
        small = tmp_path / "small"
        small.mkdir()
        (small / "a.txt").write_text("fits")
        WebRegistry(url, token=TOKEN).add_run_artifacts("smallrun", small)

        big = os.urandom(1024**2 + 1000)  # incompressible, just above 1 MiB
        answer = put_archive(url, "bigrun", big)
        assert answer.status_code == 413
        assert "--max-upload-mb" in answer.json()["message"]

        # without Content-Length (chunked), the server counts while it reads
        chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))
        answer = requests.put(f"{url}/api/v1/runs/bigrun/artifacts", data=chunks, headers=AUTH,
                              timeout=30)
        assert answer.status_code == 413
        assert not (tmp_path / "server" / "artifacts" / "bigrun").exists()
        assert (tmp_path / "server" / "artifacts" / "smallrun" / "a.txt").read_text() == "fits"

        # the client raises the pcs error the server named
        too_big = tmp_path / "big"
        too_big.mkdir()
        (too_big / "blob.bin").write_bytes(big)
        with pytest.raises(UploadTooLargeError, match="--max-upload-mb"):
            WebRegistry(url, token=TOKEN).add_run_artifacts("bigrun", too_big)
    finally:
        stop_process(process)


# -- client errors -------------------------------------------------------------------


def test_unreachable_server_is_a_registry_server_error():
    free_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    registry = WebRegistry(free_url)
    with pytest.raises(RegistryServerError, match="Cannot reach the registry") as caught:
        registry.identifiers("components")
    assert free_url in str(caught.value)
    with pytest.raises(RegistryServerError):
        registry.get_spec("components", "agent")


def test_a_404_from_something_else_is_not_a_missing_spec(url):
    registry = WebRegistry(f"{url}/not-the-api")
    with pytest.raises(RegistryServerError, match="HTTP 404"):
        registry.has_spec("components", "agent")


def test_malformed_json_is_a_bundle_error(tmp_path):
    """A plain file server (not a registry) answering 200 with non-JSON bodies."""
    (tmp_path / "api" / "v1" / "components").mkdir(parents=True)
    (tmp_path / "api" / "v1" / "components" / "agent").write_text("<html>not json</html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        registry = WebRegistry(f"http://127.0.0.1:{httpd.server_address[1]}")
        with pytest.raises(BundleError, match="not JSON"):
            registry._get("components", "agent")
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_bad_url_is_refused():
    with pytest.raises(RegistryError, match="http://"):
        WebRegistry("127.0.0.1:8765")


# -- the archive helpers themselves --------------------------------------------------


def test_make_tar_gz_is_reproducible_and_round_trips(tmp_path):
    source = make_artifact_folder(tmp_path / "run")
    data = make_tar_gz(source)
    assert make_tar_gz(source) == data

    restored = safe_extract_tar(io.BytesIO(data), tmp_path / "restored")
    assert folder_contents(restored) == folder_contents(source)
    with pytest.raises(BundleError, match="already exists"):
        safe_extract_tar(data, tmp_path / "restored")
    archive_file = tmp_path / "run.tar.gz"
    archive_file.write_bytes(data)
    assert folder_contents(safe_extract_tar(archive_file, tmp_path / "again")) == folder_contents(source)


def test_make_tar_gz_refuses_symlinks(tmp_path):
    source = tmp_path / "run"
    source.mkdir()
    (source / "link").symlink_to("/etc/passwd")
    with pytest.raises(BundleError, match="symlink"):
        make_tar_gz(source)


def test_safe_extract_tar_caps_the_unpacked_size(tmp_path):
    data = tar_gz(file_member("zeros", b"\0" * 1_000_000))
    parent = tmp_path / "parent"
    with pytest.raises(BundleError, match="more than 100000 bytes"):
        safe_extract_tar(data, parent / "out", max_size=100_000)
    assert list(parent.iterdir()) == []


# -- PostgreSQL ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_db() -> str:
    """A fresh PostgreSQL database, dropped at the end; skips when none answers."""
    return postgres_database()


@pytest.mark.postgres
def test_postgres_backed_server(postgres_db, tmp_path_factory, tmp_path):
    import psycopg2

    folder = tmp_path_factory.mktemp("registry_pg")
    url, process = start_registry_server(folder, db_url=postgres_db)
    try:
        registry = WebRegistry(url, token=TOKEN)
        spec = {"identifier": "agent==1.0", "class_name": "Agent", "args": {"n": 3}}
        registry.add_component_spec(spec)
        assert registry.get_component_spec("agent==1.0") == spec
        assert registry.identifiers("components") == ["agent==1.0"]
        with pytest.raises(RegistryConflictError):
            registry.add_component_spec({**spec, "class_name": "Other"})

        with pytest.raises(RegistryAuthError):
            WebRegistry(url, token="wrong").add_component_spec({"identifier": "intruder"})
        assert not registry.has_spec("components", "intruder")

        run_id = new_run_id()
        registry.add_run_artifacts(run_id, make_artifact_folder(tmp_path / "run"))
        downloaded = registry.run_artifacts_dir(run_id)
        assert downloaded is not None
        assert folder_contents(downloaded) == folder_contents(tmp_path / "run")
    finally:
        stop_process(process)
    # the specs really live in PostgreSQL
    with psycopg2.connect(postgres_db) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT section, identifier FROM pcs_specs")
        assert cursor.fetchall() == [("components", "agent==1.0")]
    conn.close()
    assert not (folder / "registry.db").exists()
