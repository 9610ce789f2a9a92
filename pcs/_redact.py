"""Credentials out of URLs and messages, before pcs records or shows them.

A git remote may carry a secret (``https://user:token@host/repo.git``, a
``?private_token=`` query). pcs records clean URLs only: the userinfo of
http(s) URLs (tokens are often given as the user name), any password in other
URLs, and query or fragment parameters that carry secrets are removed;
everything else is kept character for character. A clean URL still works
when the user's git credential helper supplies the secret.

The ssh user of ``ssh://git@host/repo`` or ``git@host:org/repo.git`` is not a
secret and stays.

:func:`redact_text` is the one redactor for everything pcs writes from user
code (the ``pcs.error`` tag, ``pcs/traceback.txt``, captured stdout/stderr,
the params pcs logs, bundles and published specs, the CLI's error line). Beyond
URLs it masks, with ``***``: ``name=value`` pairs whose name is a secret
(``access_token=...``, ``password=...``) anywhere in the text; the values of
environment variables whose names look secret (``*TOKEN*``, ``*SECRET*``,
``*PASSWORD*``, ``*API_KEY*``, ``*_KEY``, ``*CREDENTIAL*``) wherever they appear
verbatim, when at least :data:`MIN_ENV_SECRET` characters long (shorter values
are too often ordinary words); and the secret arguments this process was
given (:mod:`pcs.secret`). A value it removed once (a token in a query, a URL
password, a ``password=`` value) is remembered for the rest of the process
(:func:`learned_secret`), so the same value is masked wherever else it
appears, and a record of what a run read (an environment variable holding the
token under an innocent name) keeps only its hash.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote_plus

__all__ = ["redact_url", "redact_text", "learned_secret"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")

# query parameters whose value is a secret (names compared lower-case, '-' as '_')
_SECRET_NAMES = frozenset(
    {
        "token", "access_token", "private_token", "refresh_token", "id_token", "auth_token",
        "session_token", "security_token", "oauth_token", "job_token",
        "password", "passwd", "pwd", "pass", "secret", "client_secret",
        "key", "api_key", "apikey", "access_key", "secret_key", "private_key",
        "sig", "signature", "auth", "authorization", "credential", "credentials",
    }
)
_SECRET_PREFIXES = ("x_amz_", "x_goog_")
_SECRET_SUFFIXES = ("_token", "_secret", "_password", "_passwd", "_signature", "_key")

# a URL inside free text: a scheme, then anything up to a space or quote
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# scp-like ``user:password@host:path`` inside free text
_SCP_PASSWORD_IN_TEXT = re.compile(r"(?<![\w/.:@-])([\w.+-]+):[^\s@/'\"]+@(?=[\w.-]+:)")
_AUTH_HEADER = re.compile(r"(?i)\b(authorization:\s*)(?:(basic|bearer|token|digest)\s+)?\S+")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
# ``name=value`` in free text (a query string quoted without its URL, a log line)
_PAIR_IN_TEXT = re.compile(r"(?<![\w.-])([A-Za-z][\w-]*)=([^\s&'\"<>`,;)\]}]+)")
_ENV_SECRET_NAME = re.compile(
    r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL|_KEY$|^KEY$"
)
#: environment values shorter than this are not masked (too often ordinary words)
MIN_ENV_SECRET = 8
# values removed once, masked from then on wherever they appear (bounded: a process that
# prints a million tokens keeps the first ones)
_LEARNED: set[str] = set()
_MAX_LEARNED = 1000


def _learn(value: str) -> None:
    value = unquote_plus(value).strip()
    if len(value) >= MIN_ENV_SECRET and value != "***" and len(_LEARNED) < _MAX_LEARNED:
        _LEARNED.add(value)


def learned_secret(value: str) -> bool:
    """Whether ``value`` was removed as a credential from text this process redacted."""
    return value in _LEARNED


def redact_url(url: str) -> str:
    """``url`` without the credentials it carries; everything else kept exactly.

    Args:
        url: a git remote or any URL: ``https://...``, ``ssh://...``,
            ``git@host:org/repo.git``, a local path (returned unchanged).

    Returns:
        The URL without userinfo (http/https), without passwords (other schemes
        and scp-like remotes) and without secret query or fragment parameters.

    Example::

        redact_url("https://oauth2:glpat-x@gitlab.example/team/m.git")
        # 'https://gitlab.example/team/m.git'
    """
    if not isinstance(url, str) or not url:
        return url
    match = _SCHEME.match(url)
    if match is None:
        return _redact_scp_like(url)
    scheme = match.group(1).lower()
    start = match.end()
    end = len(url)
    for stop in "/?#":
        found = url.find(stop, start)
        if found != -1:
            end = min(end, found)
    authority = url[start:end]
    userinfo, at, host = authority.rpartition("@")
    if at:
        _learn(userinfo.partition(":")[2] or (userinfo if scheme in ("http", "https") else ""))
        if scheme in ("http", "https") or scheme.endswith(("+http", "+https")):
            authority = host
        elif ":" in userinfo:
            authority = f"{userinfo.split(':', 1)[0]}@{host}"
    rest = url[end:]
    return url[:start] + authority + _redact_query(rest)


def redact_text(text: str) -> str:
    """``text`` (an error message, git's stderr) with every credential in it removed.

    Args:
        text: free text that may quote URLs or HTTP headers.

    Returns:
        The text with each URL redacted as :func:`redact_url` does, scp-like
        passwords dropped and ``Authorization``/``Bearer`` values replaced by ``***``.
    """
    if not isinstance(text, str) or not text:
        return text
    for value in _verbatim_secrets():
        if value in text:
            text = text.replace(value, "***")
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    text = _SCP_PASSWORD_IN_TEXT.sub(lambda m: f"{m.group(1)}@", text)
    text = _AUTH_HEADER.sub(
        lambda m: f"{m.group(1)}{m.group(2) + ' ' if m.group(2) else ''}***", text
    )
    text = _BEARER.sub(lambda m: f"{m.group(1)} ***", text)
    return _PAIR_IN_TEXT.sub(_mask_pair, text)


def _mask_pair(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    if not _is_secret_name(name) or value == "***" or _is_placeholder(value):
        return match.group(0)
    _learn(value)
    return f"{name}=***"


# what usage lines and docs write where a value goes (``KEY=VALUE``, ``token=$HF_TOKEN``)
_PLACEHOLDERS = frozenset({"VALUE", "VALUES", "KEY", "TOKEN", "SECRET", "PASSWORD", "***", "..."})


def _is_placeholder(value: str) -> bool:
    """Whether a ``name=value`` value stands for a value (a usage line, a shell variable)."""
    value = value.rstrip(".:!?")  # the end of a sentence
    return value in _PLACEHOLDERS or bool(re.fullmatch(r"\$\{?[A-Za-z_]\w*\}?", value))


def secret_env_names(environ: dict[str, str] | None = None) -> list[str]:
    """Names of environment variables whose values pcs masks in what it writes."""
    env = os.environ if environ is None else environ
    return sorted(
        name for name, value in env.items()
        if len(value) >= MIN_ENV_SECRET and _ENV_SECRET_NAME.search(name.upper())
    )


def _verbatim_secrets() -> list[str]:
    """Values to mask wherever they appear: secret env values and secret arguments, longest first."""
    values = {os.environ[name] for name in secret_env_names()} | _LEARNED
    try:
        from pcs.secrets import known_values
    except ImportError:  # pragma: no cover - a partial install
        pass
    else:
        values.update(known_values())
    return sorted(values, key=len, reverse=True)


def _redact_scp_like(url: str) -> str:
    """``user:password@host:path`` → ``user@host:path``; paths are returned unchanged."""
    if url.startswith(("/", ".", "~", "\\")) or _WINDOWS_DRIVE.match(url):
        return url
    slash = url.find("/")
    head = url if slash == -1 else url[:slash]
    at = head.rfind("@")
    if at == -1 or ":" not in head[at:]:
        return url  # not ``[user@]host:path``
    userinfo = head[:at]
    if ":" not in userinfo:
        return url
    return userinfo.split(":", 1)[0] + url[at:]


def _redact_query(rest: str) -> str:
    """The path, query and fragment of a URL with secret parameters removed."""
    path, hash_mark, fragment = rest.partition("#")
    path, question, query = path.partition("?")
    if question:
        query = _drop_secret_params(query)
        question = "?" if query else ""
    if hash_mark and "=" in fragment:
        fragment = _drop_secret_params(fragment)
        hash_mark = "#" if fragment else ""
    return f"{path}{question}{query}{hash_mark}{fragment}"


def _drop_secret_params(params: str) -> str:
    kept = []
    for pair in params.split("&"):
        name, _, value = pair.partition("=")
        if _is_secret_name(name):
            _learn(value)
        else:
            kept.append(pair)
    return "&".join(kept)


def _is_secret_name(raw: str) -> bool:
    name = unquote_plus(raw).strip().lower().replace("-", "_")
    return (
        name in _SECRET_NAMES
        or name.startswith(_SECRET_PREFIXES)
        or name.endswith(_SECRET_SUFFIXES)
    )
