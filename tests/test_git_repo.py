"""GitRepo: components read from real git repositories at a commit, branch or tag.

Every repository here is made with the ``git`` command in the test's tmp dir;
the clone cache is the test's own ``PCS_HOME``.
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from pcs import (
    Component,
    ComponentFileNotFoundError,
    GitRepo,
    InMemoryRegistry,
    LocalRepo,
    RepoError,
    Run,
)
from pcs.repo import git_state


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "pcs tests")
    git(path, "config", "user.email", "tests@example.invalid")
    git(path, "config", "commit.gpgsign", "false")
    return path


def commit_file(repo: Path, name: str, text: str, message: str) -> str:
    (repo / name).write_text(text, encoding="utf-8")
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def model_source(label: str) -> str:
    return f"class Model:\n    def run(self):\n        return {label!r}\n"


@pytest.fixture
def two_commits(tmp_path):
    """A repo with m.py at commit A (returns 'A', tagged v1) then commit B (returns 'B')."""
    repo = make_repo(tmp_path / "models")
    sha_a = commit_file(repo, "m.py", model_source("A"), "A")
    git(repo, "tag", "v1")
    sha_b = commit_file(repo, "m.py", model_source("B"), "B")
    return repo, sha_a, sha_b


def model(repo: GitRepo, version: str) -> Component:
    return Component.from_repo(repo, f"m=={version}", "m.py", class_name="Model", instantiate=True)


def working_copy_state(repo: Path) -> tuple[str, str, str]:
    return git(repo, "status", "--porcelain"), git(repo, "rev-parse", "HEAD"), git(
        repo, "symbolic-ref", "HEAD"
    )


def test_commit_a_keeps_running_after_the_repo_moves_to_commit_b(tmp_path):
    src = make_repo(tmp_path / "models")
    sha_a = commit_file(src, "m.py", model_source("A"), "A")
    repo = GitRepo("r", url=str(src))
    pinned = model(repo, sha_a)
    assert pinned.run("run") == "A"

    sha_b = commit_file(src, "m.py", model_source("B"), "B")

    assert sha_b != sha_a
    assert pinned.run("run") == "A"
    assert model(GitRepo("r", url=str(src)), sha_a).run("run") == "A"
    assert model(GitRepo("r", url=str(src)), sha_b).run("run") == "B"
    # a short sha names the commit too
    assert model(GitRepo("r", url=str(src)), sha_a[:10]).run("run") == "A"


def test_file_url_and_plain_path_read_the_same_commits(two_commits):
    src, sha_a, sha_b = two_commits
    by_url = GitRepo("r", url=f"file://{src}")
    assert by_url.url == f"file://{src}"
    assert model(by_url, sha_a).run("run") == "A"
    assert model(by_url, sha_b).run("run") == "B"
    assert by_url.resolve(sha_a[:8]) == sha_a


def test_relative_path_url_resolves_against_the_cwd(two_commits, monkeypatch):
    src, sha_a, _ = two_commits
    monkeypatch.chdir(src.parent)
    repo = GitRepo("r", url="models")
    assert repo.url == str(src)
    assert model(repo, sha_a).run("run") == "A"


def test_branch_and_tag_names_select_commits(two_commits):
    src, sha_a, sha_b = two_commits
    repo = GitRepo("r", url=str(src))
    assert repo.resolve("v1") == sha_a
    assert repo.resolve("main") == sha_b
    assert repo.resolve() == sha_b  # no version: HEAD of the default branch
    assert model(repo, "v1").run("run") == "A"
    assert model(repo, "main").run("run") == "B"


def test_a_moved_branch_is_picked_up_and_a_tag_stays(two_commits):
    src, sha_a, sha_b = two_commits
    assert model(GitRepo("r", url=str(src)), "main").run("run") == "B"
    sha_c = commit_file(src, "m.py", model_source("C"), "C")

    # a repo loaded afresh (as from a registry) fetches the branch again
    fresh = GitRepo("r", url=str(src))
    assert fresh.resolve("main") == sha_c
    assert model(fresh, "main").run("run") == "C"
    assert model(fresh, "v1").run("run") == "A"

    # the same repo object picks it up once its branch memo is stale
    sha_d = commit_file(src, "m.py", model_source("D"), "D")
    assert fresh.resolve("main") == sha_c  # one run resolves a branch to one commit
    fresh.refresh()
    assert fresh.resolve("main") == sha_d
    assert model(fresh, "main").run("run") == "D"
    assert model(fresh, sha_b).run("run") == "B"


def test_a_branch_moved_after_the_memo_expires(two_commits, monkeypatch):
    src, _, _ = two_commits
    repo = GitRepo("r", url=str(src))
    monkeypatch.setattr(repo, "branch_refresh_seconds", 0.0)
    assert repo.resolve("main") == git(src, "rev-parse", "main")
    sha_c = commit_file(src, "m.py", model_source("C"), "C")
    assert repo.resolve("main") == sha_c
    assert model(repo, "main").run("run") == "C"


def test_reading_never_touches_the_working_copy(two_commits):
    src, sha_a, _ = two_commits
    # a feature branch checked out with an uncommitted edit: the user's state
    git(src, "checkout", "-q", "-b", "feature")
    (src / "m.py").write_text(model_source("work in progress"), encoding="utf-8")
    before = working_copy_state(src)
    files_before = sorted(p.name for p in src.iterdir())

    repo = GitRepo("r", url=str(src))
    assert model(repo, sha_a).run("run") == "A"
    assert model(repo, "main").run("run") == "B"
    assert model(repo, "v1").source() == model_source("A")

    assert working_copy_state(src) == before
    assert before[0].endswith("M m.py")
    assert before[2] == "refs/heads/feature"
    assert (src / "m.py").read_text() == model_source("work in progress")
    assert sorted(p.name for p in src.iterdir()) == files_before


def test_clean_working_copy_stays_clean(two_commits):
    src, sha_a, sha_b = two_commits
    before = working_copy_state(src)
    assert before[0] == ""
    run = model(GitRepo("r", url=str(src)), sha_a).run_with_arg_set("run", {}, seed=1)
    assert run.return_value == "A"
    assert working_copy_state(src) == before
    assert git(src, "rev-parse", "HEAD") == sha_b


def test_unknown_version_is_a_repo_error_that_names_it(two_commits):
    src, _, _ = two_commits
    repo = GitRepo("models", url=str(src))
    for version in ("no-such-branch", "0123456789abcdef0123456789abcdef01234567"):
        with pytest.raises(RepoError) as info:
            model(repo, version).source()
        message = str(info.value)
        assert version in message
        assert "'models'" in message and str(src) in message
        assert "no commit, branch or tag" in message


def test_unknown_version_fails_before_a_run_is_recorded(two_commits):
    src, _, _ = two_commits
    with pytest.raises(RepoError):
        model(GitRepo("r", url=str(src)), "nope").run_with_arg_set("run", {}, seed=1)
    assert Run.get_all_runs() == []


def test_missing_file_at_that_commit(two_commits):
    src, sha_a, _ = two_commits
    sha_c = commit_file(src, "later.py", model_source("later"), "C")
    repo = GitRepo("r", url=str(src))
    later = Component.from_repo(repo, f"later=={sha_a}", "later.py", class_name="Model")
    with pytest.raises(ComponentFileNotFoundError) as info:
        later.source()
    assert "'later.py'" in str(info.value) and sha_a[:12] in str(info.value)
    # the same file exists at the later commit
    assert Component.from_repo(repo, f"later=={sha_c}", "later.py").source() == model_source("later")


def test_unreachable_url_is_a_repo_error(tmp_path):
    repo = GitRepo("gone", url=str(tmp_path / "does-not-exist"))
    with pytest.raises(RepoError) as info:
        repo.resolve("main")
    assert "Could not clone git repo 'gone'" in str(info.value)
    assert not any((Path(os.environ["PCS_HOME"]) / "git").iterdir())  # no half clone left


def test_empty_url_is_refused():
    with pytest.raises(RepoError, match="needs a URL"):
        GitRepo("r", url="")


def test_a_url_that_git_would_take_for_an_option_is_refused(tmp_path):
    marker = tmp_path / "ran"
    registry = InMemoryRegistry.from_dict(
        {
            "repos": {"r": {"type": "git", "url": f"--upload-pack=touch {marker}"}},
            "components": {"m==main": {"repo": "r", "file_path": "m.py"}},
        }
    )
    with pytest.raises(RepoError, match="starts with '-'"):
        Component.from_registry(registry, "m==main").source()
    assert not marker.exists()


def test_one_clone_in_pcs_home_serves_every_read(two_commits):
    src, sha_a, sha_b = two_commits
    cache_root = Path(os.environ["PCS_HOME"]) / "git"

    first = GitRepo("r", url=str(src))
    assert model(first, sha_a).source() == model_source("A")
    clones = list(cache_root.iterdir())
    assert len(clones) == 1
    assert first.cache_path == clones[0]
    assert (clones[0] / "HEAD").is_file()  # a bare clone: no working tree in the cache
    marker = clones[0] / "pcs-test-marker"
    marker.write_text("still the same clone")

    second = GitRepo("other-name", url=str(src))
    assert model(second, sha_b).source() == model_source("B")
    assert model(second, "v1").run("run") == "A"

    assert list(cache_root.iterdir()) == clones
    assert marker.read_text() == "still the same clone"


def test_new_commit_sha_is_fetched_into_an_existing_clone(two_commits):
    src, sha_a, _ = two_commits
    repo = GitRepo("r", url=str(src))
    assert model(repo, sha_a).run("run") == "A"
    sha_c = commit_file(src, "m.py", model_source("C"), "C")
    # a sha the clone has never seen is fetched, not reported missing
    assert model(GitRepo("r", url=str(src)), sha_c).run("run") == "C"


def test_registry_accepts_git_and_github_repos(two_commits):
    src, sha_a, sha_b = two_commits
    registry = InMemoryRegistry.from_dict(
        {
            "repos": {
                "models_git": {"type": "git", "url": str(src)},
                "models_github": {"type": "github", "url": f"file://{src}"},
            },
            "components": {
                f"old=={sha_a}": {
                    "repo": "models_git",
                    "file_path": "m.py",
                    "class_name": "Model",
                    "instantiate": True,
                },
                "new==main": {
                    "repo": "models_github",
                    "file_path": "m.py",
                    "class_name": "Model",
                    "instantiate": True,
                },
            },
        }
    )
    old = Component.from_registry(registry, f"old=={sha_a}")
    new = Component.from_registry(registry, "new")  # a name finds its only version
    assert isinstance(old.repo, GitRepo) and isinstance(new.repo, GitRepo)
    assert old.repo.url == str(src)
    assert new.repo.url == f"file://{src}"
    assert old.run("run") == "A"
    assert new.run("run") == "B"
    assert new.repo.resolve(new.version) == sha_b


def test_registry_yaml_with_relative_git_path(two_commits, tmp_path):
    src, sha_a, _ = two_commits
    registry_file = tmp_path / "components.yaml"
    registry_file.write_text(
        "repos:\n"
        "  models:\n"
        "    type: git\n"
        "    url: models\n"  # relative to the registry file's folder
        "components:\n"
        f"  m=={sha_a}:\n"
        "    repo: models\n"
        "    file_path: m.py\n"
        "    class_name: Model\n"
        "    instantiate: true\n",
        encoding="utf-8",
    )
    component = Component.from_registry_file(registry_file, f"m=={sha_a}")
    assert component.repo.url == str(src.resolve())
    assert component.run("run") == "A"


def test_git_repo_without_url_in_registry_is_refused():
    from pcs import RegistryError

    registry = InMemoryRegistry.from_dict(
        {
            "repos": {"r": {"type": "git"}},
            "components": {"m": {"repo": "r", "file_path": "m.py"}},
        }
    )
    with pytest.raises(RegistryError, match="needs a 'url'"):
        Component.from_registry(registry, "m")


def test_run_of_a_git_component_records_its_commit(two_commits):
    src, sha_a, _ = two_commits
    run = model(GitRepo("r", url=str(src)), "v1").run_with_arg_set("run", {}, seed=3)
    assert run.return_value == "A"
    assert run.tags["mlflow.source.git.commit"] == sha_a
    entry = run.code_record["components"]["m==v1"]
    assert entry["git"]["commit"] == sha_a
    assert entry["git"]["url"] == str(src)
    # pinned to a repo that only this machine can read
    assert run.grade == "local"
    assert any("local path" in reason for reason in run.grade_reasons)


def test_rerun_of_a_git_component_runs_the_recorded_commit(two_commits):
    src, _, _ = two_commits
    run = model(GitRepo("r", url=str(src)), "main").run_with_arg_set("run", {}, seed=3)
    assert run.return_value == "B"
    commit_file(src, "m.py", model_source("C"), "C")

    loaded = Run.from_existing_run_id(run.identifier)
    rerun = loaded.rerun(verify=True)
    assert rerun.return_value == "B"
    assert rerun.verification.reproduced


# -- a private repo behind HTTP basic auth -------------------------------------------

GIT_USER = "pcs-bot"


class _GitHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    token: str


class _GitHttpHandler(BaseHTTPRequestHandler):
    """Smart-HTTP git behind basic auth: ``git http-backend`` run as a CGI per request."""

    server: _GitHttpServer

    def _serve(self) -> None:
        expected = base64.b64encode(f"{GIT_USER}:{self.server.token}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {expected}":
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="pcs tests"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self._body()
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": GIT_USER,
            "REMOTE_ADDR": self.client_address[0],
        }
        for header, variable in (
            ("Git-Protocol", "GIT_PROTOCOL"), ("Content-Encoding", "HTTP_CONTENT_ENCODING")
        ):
            if self.headers.get(header):
                env[variable] = self.headers[header]
        out = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        ).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _serve

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="session")
def git_server(tmp_path_factory):
    """A real git smart-HTTP server on 127.0.0.1 that needs user and token (basic auth)."""
    server = _GitHttpServer(("127.0.0.1", 0), _GitHttpHandler)
    server.root = tmp_path_factory.mktemp("git_server")
    server.token = f"tok-{uuid.uuid4().hex}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def served(git_server, tmp_path, monkeypatch):
    """A private repo on the server: m.py at A (tag v1) and B on main, and a pull request.

    The pull request's commits P1 and P2 are only under refs/pull/1/head, and
    the repo allows fetching any reachable commit by sha, as GitHub does.
    git runs with an empty HOME: no credential helper unless a test adds one.
    """
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    name = f"models-{uuid.uuid4().hex[:8]}.git"
    bare = git_server.root / name
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    git(bare, "config", "uploadpack.allowReachableSHA1InWant", "true")
    src = make_repo(tmp_path / "source")
    sha_a = commit_file(src, "m.py", model_source("A"), "A")
    git(src, "tag", "v1")
    sha_b = commit_file(src, "m.py", model_source("B"), "B")
    git(src, "checkout", "-q", "-b", "pr")
    pr_1 = commit_file(src, "m.py", model_source("P1"), "P1")
    pr_2 = commit_file(src, "m.py", model_source("P2"), "P2")
    git(src, "push", "-q", str(bare), "main", "v1", "pr:refs/pull/1/head")
    port = git_server.server_address[1]
    return SimpleNamespace(
        clean=f"http://127.0.0.1:{port}/{name}",
        with_token=f"http://{GIT_USER}:{git_server.token}@127.0.0.1:{port}/{name}",
        token=git_server.token, bare=bare, home=home,
        sha_a=sha_a, sha_b=sha_b, pr_1=pr_1, pr_2=pr_2,
    )


def store_credentials(served) -> Path:
    """The user's git credential helper: git's 'store' helper with the server's token."""
    store = served.home / "git-credentials"
    host = served.clean.split("/")[2]
    store.write_text(f"http://{GIT_USER}:{served.token}@{host}\n", encoding="utf-8")
    git(served.home, "config", "--global", "credential.helper", f"store --file={store}")
    return store


def force_protocol(monkeypatch, version: str) -> None:
    """Make every git command of this test speak wire protocol ``version``."""
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "protocol.version")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", version)


def files_containing(root: Path, secret: str, skip: tuple[Path, ...] = ()) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and path not in skip:
            if secret.encode() in path.read_bytes():
                found.append(path)
    return found


def git_cache() -> Path:
    return Path(os.environ["PCS_HOME"]) / "git"


def test_a_url_with_credentials_reaches_the_repo_but_only_the_clean_url_is_kept(served):
    repo = GitRepo("models", url=served.with_token)
    assert model(repo, "v1").run("run") == "A"
    assert repo.resolve("main") == served.sha_b
    assert repo.resolve() == served.sha_b  # the clone's HEAD follows the server's default branch

    assert repo.url == served.clean
    assert repo.to_spec() == {"identifier": "models", "type": "git", "url": served.clean}
    assert served.token not in repr(repo)
    assert repo == GitRepo("models", url=served.clean)
    assert repo.cache_path == GitRepo("other", url=served.clean).cache_path
    # the bare cache keeps no trace of the secret: not in its config, FETCH_HEAD or refs
    assert files_containing(git_cache(), served.token) == []


def test_the_clean_url_clones_when_a_credential_helper_supplies_the_secret(served):
    with pytest.raises(RepoError) as info:  # no helper: git must not wait at a prompt
        GitRepo("models", url=served.clean).resolve("main")
    assert "credential helper" in str(info.value)
    assert not any(git_cache().iterdir())

    store_credentials(served)
    repo = GitRepo("models", url=served.clean)
    assert model(repo, "v1").run("run") == "A"
    assert repo.resolve("main") == served.sha_b
    assert model(repo, served.pr_2).run("run") == "P2"


def test_a_wrong_token_fails_with_advice_and_without_the_token(served, caplog):
    wrong = served.with_token.replace(served.token, "tok-WRONG-secret")
    with pytest.raises(RepoError) as info:
        GitRepo("models", url=wrong).resolve("main")
    message = str(info.value)
    assert "tok-WRONG-secret" not in message
    assert f"Could not clone git repo 'models' from {served.clean}:" in message
    assert "credential helper" in message
    assert "\n" not in message
    assert not any(git_cache().iterdir())  # no half clone left

    # a clone made with the right token; a later fetch with the wrong one
    GitRepo("models", url=served.with_token).resolve("main")
    with pytest.raises(RepoError) as info:
        GitRepo("models", url=wrong).resolve("no-such-branch")
    assert f"Could not fetch git repo 'models' from {served.clean}:" in str(info.value)
    assert "tok-WRONG-secret" not in str(info.value)
    # a branch already in the cache is used, with a warning that names no secret
    assert GitRepo("models", url=wrong).resolve("main") == served.sha_b
    assert "Could not fetch" in caplog.text and "tok-WRONG-secret" not in caplog.text


def test_a_run_from_a_credentialed_url_records_no_secret(served, tmp_path):
    run = model(GitRepo("models", url=served.with_token), "v1").run_with_arg_set("run", {}, seed=1)
    assert run.return_value == "A"
    assert run.tags["mlflow.source.git.repoURL"] == served.clean
    entry = run.code_record["components"]["m==v1"]["git"]
    assert entry == {"url": served.clean, "commit": served.sha_a, "version": "v1"}
    # nothing under the test's folder holds the token: store, artifacts, caches
    assert files_containing(tmp_path, served.token) == []


def test_the_recorded_url_reaches_the_commit_through_a_credential_helper(served, tmp_path, monkeypatch):
    run = model(GitRepo("models", url=served.with_token), "main").run_with_arg_set("run", {}, seed=1)
    recorded = run.code_record["components"]["m==main"]["git"]

    # another machine: an empty cache, the user's credential helper, the recorded URL alone
    monkeypatch.setenv("PCS_HOME", str(tmp_path / "elsewhere"))
    store_credentials(served)
    repo = GitRepo.for_url(recorded["url"])
    assert repo.identifier == served.clean.rsplit("/", 1)[1].removesuffix(".git") + "_git"
    out = repo.export_files(recorded["commit"], ["m.py"], tmp_path / "code")
    assert (out / "m.py").read_text() == model_source("B")


def test_a_working_copy_with_a_credentialed_remote_records_the_clean_url(served, tmp_path):
    work = tmp_path / "clone"
    git(tmp_path, "clone", "-q", served.with_token, str(work))
    state = git_state([work / "m.py"])
    assert state is not None
    assert state.remote_url == served.clean
    assert state.pushed
    assert served.token not in str(state.to_dict())

    component = Component.from_repo(LocalRepo("w", work), "m", "m.py", "Model", instantiate=True)
    run = component.run_with_arg_set("run", {}, seed=1)
    assert run.return_value == "B"
    assert run.tags["mlflow.source.git.repoURL"] == served.clean
    assert run.code_record["components"]["m"]["git"]["remote_url"] == served.clean
    # only the user's own clone keeps the token (git wrote it there, pcs nowhere)
    leaks = files_containing(tmp_path, served.token)
    assert leaks and all(work / ".git" in path.parents for path in leaks)


@pytest.mark.parametrize("protocol", ["0", "2"])
def test_a_commit_only_under_a_pull_request_ref_is_fetched_by_sha(served, protocol, monkeypatch, tmp_path):
    force_protocol(monkeypatch, protocol)
    # a clone made before: it has main and the tags, not the pull request
    repo = GitRepo("models", url=served.with_token)
    assert repo.resolve("main") == served.sha_b
    # P1 is no ref's tip and no branch or tag holds it: fetched by its sha
    fresh_object = GitRepo("models", url=served.with_token)
    assert model(fresh_object, served.pr_1).run("run") == "P1"
    pinned = git(repo.cache_path, "for-each-ref", "--format=%(refname)", "refs/pcs/pinned")
    assert pinned == f"refs/pcs/pinned/{served.pr_1}"  # kept, so git gc does not drop it

    # a fresh clone fetches it the same way
    monkeypatch.setenv("PCS_HOME", str(tmp_path / "another_home"))
    assert model(GitRepo("models", url=served.with_token), served.pr_2).run("run") == "P2"


def test_a_server_that_refuses_unadvertised_commits_says_so(served, monkeypatch):
    git(served.bare, "config", "--unset", "uploadpack.allowReachableSHA1InWant")
    force_protocol(monkeypatch, "0")
    with pytest.raises(RepoError) as info:
        GitRepo("models", url=served.with_token).resolve(served.pr_1)
    message = str(info.value)
    assert f"has no commit, branch or tag {served.pr_1!r}" in message
    assert "fetching it by its sha failed too" in message
    assert "unadvertised object" in message
    assert served.token not in message and "\n" not in message


def test_a_short_sha_of_a_pull_request_commit_asks_for_the_full_sha(served):
    with pytest.raises(RepoError) as info:
        GitRepo("models", url=served.with_token).resolve(served.pr_1[:10])
    assert "full 40-character sha" in str(info.value)


# -- files of a commit out of the cache ------------------------------------------------


@pytest.fixture
def tree_repo(tmp_path):
    """A package, an executable script, a symlink and a submodule (commit 1), then changes (2)."""
    repo = make_repo(tmp_path / "tree")
    (repo / "pkg").mkdir()
    (repo / "pkg" / "a.py").write_text("A = 1\n", encoding="utf-8")
    (repo / "pkg" / "data.txt").write_text("data\n", encoding="utf-8")
    (repo / "run.sh").write_text("#!/bin/sh\necho hi\n", encoding="utf-8")
    (repo / "run.sh").chmod(0o755)
    os.symlink("pkg/a.py", repo / "link.py")
    git(repo, "add", "-A")
    # a submodule's entry: a commit of another repo, which has no files here
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{'ab' * 20},vendor/lib")
    git(repo, "commit", "-q", "-m", "one")
    first = git(repo, "rev-parse", "HEAD")
    (repo / "pkg" / "a.py").write_text("A = 2\n", encoding="utf-8")
    (repo / "new.py").write_text("NEW = True\n", encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "two")
    return repo, first, git(repo, "rev-parse", "HEAD")


def tree_of(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = f"-> {os.readlink(path)}"
        elif path.is_file():
            out[rel] = path.read_text()
    return out


def test_export_files_writes_every_file_of_a_commit(tree_repo, tmp_path):
    src, first, _ = tree_repo
    (src / "pkg" / "a.py").write_text("A = 'work in progress'\n", encoding="utf-8")
    before = working_copy_state(src)

    dest = GitRepo("t", url=str(src)).export_files(first, None, tmp_path / "out")

    assert dest == tmp_path / "out"
    assert tree_of(dest) == {
        "link.py": "-> pkg/a.py",
        "pkg/a.py": "A = 1\n",
        "pkg/data.txt": "data\n",
        "run.sh": "#!/bin/sh\necho hi\n",
    }
    assert os.stat(dest / "run.sh").st_mode & stat.S_IXUSR
    assert not os.stat(dest / "pkg" / "data.txt").st_mode & stat.S_IXUSR
    assert working_copy_state(src) == before
    assert (src / "pkg" / "a.py").read_text() == "A = 'work in progress'\n"


def test_export_files_writes_only_the_paths_asked_for(tree_repo, tmp_path):
    src, first, second = tree_repo
    repo = GitRepo("t", url=str(src))
    assert tree_of(repo.export_files(second, ["pkg/a.py", "new.py"], tmp_path / "two")) == {
        "new.py": "NEW = True\n", "pkg/a.py": "A = 2\n",
    }
    assert tree_of(repo.export_files(first, "run.sh", tmp_path / "one")) == {
        "run.sh": "#!/bin/sh\necho hi\n",
    }
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder may be the destination too
    assert tree_of(repo.export_files(first, ["pkg"], empty)) == {
        "pkg/a.py": "A = 1\n", "pkg/data.txt": "data\n",
    }


def test_export_files_of_a_missing_path_or_commit_writes_nothing(tree_repo, tmp_path):
    src, first, _ = tree_repo
    repo = GitRepo("t", url=str(src))
    out = tmp_path / "exports"
    out.mkdir()

    with pytest.raises(ComponentFileNotFoundError) as info:
        repo.export_files(first, ["pkg/a.py", "new.py"], out / "a")
    assert "'new.py'" in str(info.value) and first[:12] in str(info.value)

    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(RepoError) as info:
        repo.export_files(missing, None, out / "b")
    assert missing in str(info.value) and "\n" not in str(info.value)

    with pytest.raises(RepoError, match="not a relative path"):
        repo.export_files(first, ["../tree/run.sh"], out / "c")

    (out / "d").mkdir()
    (out / "d" / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(RepoError, match="not an empty folder"):
        repo.export_files(first, None, out / "d")
    assert (out / "d" / "keep.txt").read_text() == "mine"

    assert sorted(p.name for p in out.iterdir()) == ["d"]  # no half export, no temp folder


def test_export_files_from_an_unreachable_repo_is_one_line(tmp_path):
    with pytest.raises(RepoError) as info:
        GitRepo("gone", url=str(tmp_path / "nope")).export_files("main", None, tmp_path / "out")
    assert "Could not clone git repo 'gone'" in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_for_url_names_the_repo_after_its_url(two_commits):
    src, sha_a, _ = two_commits
    assert GitRepo.for_url("https://u:secret@example.invalid/team/models.git").identifier == "models_git"
    assert GitRepo.for_url("git@example.invalid:team/agents").identifier == "agents_git"
    assert GitRepo.for_url("https://example.invalid/x/r.git?private_token=s").url == (
        "https://example.invalid/x/r.git"
    )
    repo = GitRepo.for_url(str(src))
    assert repo.identifier == "models_git"
    assert repo.resolve("v1") == sha_a
