"""Secret arguments: recorded as a hash with a marker, never in clear.

An argument is a secret when its value is wrapped in :func:`secret`, when it
is given with ``pcs run -s COMPONENT.FUNCTION.ARG=VALUE``, or when it is a
string whose name has a part ``token``, ``secret``, ``password`` or
``passwd``, or contains ``api_key`` / ``apikey`` (``api_token``,
``client_secret``, ``db_password``, ``openai_api_key``; not ``tokenizer`` or
``max_tokens``, which only look alike).

pcs stores ``pcs-secret:<hash>`` in its place: in params, the run command,
bundles and registries. The hash is a slow, salted PBKDF2 of the value, so the
run command identifier still changes when the secret changes, and the value
cannot be read back from a record (a weak password can still be guessed by
trying many: use real tokens). The clear value lives only in the memory of the
process that was given it, where the redactor also masks it in everything pcs
writes (errors, tracebacks, captured output).

A rerun asks for the value again: from ``--secret-arg COMPONENT.FUNCTION.ARG=VALUE``
(:func:`provide_secret` in Python) or from the environment variable
``PCS_SECRET_<ARG>`` (the argument name in capitals, ``-`` and ``.`` as ``_``).
A value whose hash is not the recorded one is refused: a rerun with another
secret is not the same run.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
from typing import Any

from pcs.errors import ArgumentError

__all__ = ["Secret", "secret", "provide_secret"]

MARKER_PREFIX = "pcs-secret:"
_MARKER = re.compile(r"^pcs-secret:[0-9a-f]{64}$")
_SALT = b"pcs secret argument, format 1"
_ITERATIONS = 100_000
_NAME_PARTS = frozenset({"token", "secret", "password", "passwd", "apikey"})
_NAME_PIECES = ("api_key", "apikey")
_MIN_MASKED = 4  # shorter values would mask ordinary characters everywhere

_lock = threading.Lock()
_known: dict[str, str] = {}  # marker -> clear value, for this process only


class Secret:
    """A value pcs must never record in clear (see :func:`secret`).

    ``str()`` and ``repr()`` show ``***``; the value is :attr:`value`.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.value
        if not isinstance(value, str) or not value:
            raise ArgumentError(
                f"A secret is a non-empty string; got {type(value).__name__}. Pass the token "
                "or password itself, e.g. pcs.secret(os.environ['API_TOKEN'])."
            )
        self._value = value
        remember(value)

    @property
    def value(self) -> str:
        return self._value

    @property
    def marker(self) -> str:
        return marker_of(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("pcs.Secret", self._value))


def secret(value: str) -> Secret:
    """Mark an argument value as a secret: recorded as a hash, never in clear.

    Example::

        component.run("fetch", api=pcs.secret(os.environ["API_TOKEN"]))
    """
    return Secret(value)


def provide_secret(value: str) -> None:
    """Give this process the clear value of a secret argument a rerun needs.

    The rerun takes it for whichever recorded argument has its hash
    (``pcs rerun --secret-arg`` calls this).
    """
    Secret(value)


@functools.lru_cache(maxsize=256)
def marker_of(value: str) -> str:
    """``pcs-secret:<hex>``: what pcs records in place of ``value``."""
    digest = hashlib.pbkdf2_hmac("sha256", value.encode("utf-8", "surrogatepass"), _SALT, _ITERATIONS)
    return MARKER_PREFIX + digest.hex()


def remember(value: str) -> str:
    """Keep ``value`` for reruns and redaction in this process; its marker."""
    mark = marker_of(value)
    with _lock:
        _known[mark] = value
    return mark


def known_values() -> list[str]:
    """The clear secret values this process holds that are long enough to mask in text."""
    with _lock:
        return [v for v in _known.values() if len(v) >= _MIN_MASKED]


def known_value(marker: str) -> str | None:
    """The clear value behind ``marker`` when this process holds it."""
    with _lock:
        return _known.get(marker)


def is_marker(value: Any) -> bool:
    return isinstance(value, str) and bool(_MARKER.match(value))


def is_secret_name(name: str) -> bool:
    """Whether an argument called ``name`` holds a secret when its value is a string."""
    lowered = name.lower().replace("-", "_")
    if any(piece in lowered for piece in _NAME_PIECES):
        return True
    return any(part in _NAME_PARTS for part in re.split(r"[_.\s]+", lowered))


def env_name(arg: str) -> str:
    """``PCS_SECRET_<ARG>``: the variable a rerun reads the secret ``arg`` from."""
    return "PCS_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", arg).upper()


def protect(name: str, value: Any) -> Any:
    """``value`` as recorded: a marker for a secret, the value itself otherwise."""
    if isinstance(value, Secret):
        return remember(value.value)
    if isinstance(value, str) and value and not is_marker(value) and is_secret_name(name):
        return remember(value)
    return value


def reveal(value: Any, where: str, arg: str) -> Any:
    """The clear value behind a recorded marker (other values unchanged).

    Args:
        value: a recorded argument value.
        where: ``component.function.arg``, for messages.
        arg: the argument name (it names the environment variable).

    Raises:
        ArgumentError: the secret is neither known to this process nor in
            ``PCS_SECRET_<ARG>``, or the value given has another hash.
    """
    if not is_marker(value):
        return value
    with _lock:
        clear = _known.get(value)
    if clear is not None:
        return clear
    variable = env_name(arg)
    given = os.environ.get(variable)
    if given is None or given == "":
        raise ArgumentError(
            f"Argument {where} is a secret, recorded only as a hash, so pcs needs its value "
            f"again: set the environment variable {variable} or pass "
            f"--secret-arg {where}=VALUE."
        )
    if marker_of(given) != value:
        raise ArgumentError(
            f"Argument {where} is a secret, and the value in {variable} is not the one the "
            "run recorded (its hash differs). A rerun with another secret is not the same "
            f"run: set {variable} to the value the run was made with."
        )
    remember(given)
    return given
