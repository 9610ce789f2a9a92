"""Credentials removed from URLs and messages before pcs records or shows them."""

from __future__ import annotations

import pytest

from pcs._redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        # http(s): any userinfo goes, tokens are often given as the user name
        ("https://user:ghp_secret@github.com/team/models.git", "https://github.com/team/models.git"),
        ("https://ghp_secret@github.com/team/models.git", "https://github.com/team/models.git"),
        ("https://oauth2:glpat-secret@gitlab.example/a/b.git", "https://gitlab.example/a/b.git"),
        ("http://user%40corp:p%3Ass@127.0.0.1:8080/r.git", "http://127.0.0.1:8080/r.git"),
        ("HTTPS://u:secret@Host.Example/r", "HTTPS://Host.Example/r"),
        ("git+https://u:secret@host/r.git", "git+https://host/r.git"),
        # ssh: the user is not a secret, a password is
        ("ssh://git@github.com/team/models.git", "ssh://git@github.com/team/models.git"),
        ("ssh://git:secret@host:2222/r.git", "ssh://git@host:2222/r.git"),
        ("git@github.com:team/models.git", "git@github.com:team/models.git"),
        ("deploy:secret@host.example:team/r.git", "deploy@host.example:team/r.git"),
        ("git://anon@host/r.git", "git://anon@host/r.git"),
        ("git://anon:secret@host/r.git", "git://anon@host/r.git"),
        # secret query and fragment parameters go, the others stay in their order
        ("https://host/r.git?private_token=secret&ref=main#top", "https://host/r.git?ref=main#top"),
        ("https://host/r.git?token=secret", "https://host/r.git"),
        ("https://host/r?a=1&ACCESS_TOKEN=secret&b=2", "https://host/r?a=1&b=2"),
        (
            "https://bucket.s3.example/k?X-Amz-Credential=AKIA&X-Amz-Signature=ab&X-Amz-Date=1&v=2",
            "https://bucket.s3.example/k?v=2",
        ),
        ("https://acct.blob.example/c/r?sv=2022&sig=secret&se=2030", "https://acct.blob.example/c/r?sv=2022&se=2030"),
        ("https://host/r?api-key=secret&password=x&passwd=y&auth=z&key=k", "https://host/r"),
        ("https://host/r?client_secret=s&gitlab_job_token=t", "https://host/r"),
        ("https://host/r?to%6Ben=secret&q=1", "https://host/r?q=1"),
        ("https://host/cb#access_token=secret&state=1", "https://host/cb#state=1"),
        # nothing to remove: kept exactly, odd spellings included
        ("https://github.com/team/models.git", "https://github.com/team/models.git"),
        ("https://host/p?a=1&&b;c#frag", "https://host/p?a=1&&b;c#frag"),
        ("https://host/user@name/r.git", "https://host/user@name/r.git"),
        ("file:///srv/git/models.git", "file:///srv/git/models.git"),
        ("/home/me/work@home/models", "/home/me/work@home/models"),
        ("./models", "./models"),
        ("~/models", "~/models"),
        ("C:\\Users\\me:x@y\\models", "C:\\Users\\me:x@y\\models"),
        ("", ""),
    ],
)
def test_redact_url(url, clean):
    assert redact_url(url) == clean
    assert redact_url(clean) == clean  # a clean URL stays clean


def test_redact_text_cleans_every_url_and_header_in_a_message():
    stderr = (
        "fatal: unable to access 'https://bot:ghp_secret@github.com/team/r.git/': "
        "The requested URL returned error: 403\n"
        "also tried deploy:hunter2@host.example:team/r.git and "
        "https://host/r.git?private_token=glpat-secret\n"
        "> Authorization: Basic Ym90OmdocF9zZWNyZXQ=\n"
        "> Authorization: Bearer eyJhbGciOi.abc.def\n"
        "token sent as bearer ghp_other"
    )
    text = redact_text(stderr)
    for secret in ("ghp_secret", "hunter2", "glpat-secret", "Ym90OmdocF9zZWNyZXQ", "eyJhbGciOi", "ghp_other"):
        assert secret not in text
    assert "'https://github.com/team/r.git/'" in text
    assert "deploy@host.example:team/r.git" in text
    assert "Authorization: Basic ***" in text and "Authorization: Bearer ***" in text
    assert "error: 403" in text


def test_redact_text_leaves_ordinary_messages_alone():
    text = "Could not read m.py at commit 3f2a9c1 (repo 'models', /home/me/models): time 10:30"
    assert redact_text(text) == text
