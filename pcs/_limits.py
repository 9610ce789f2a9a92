"""What pcs accepts as input, and the checks that refuse the rest in one line.

Every value pcs records must survive YAML, JSON and the MLflow store exactly,
and every document it reads must stay small in memory. Anything else is
refused up front, with a message that names the field, instead of failing
later with a traceback or being cut short:

=========================  ============================================================
limit                      value
=========================  ============================================================
``MAX_DEPTH``              100 levels of nested lists/dicts in one value (an argument,
                           a return value); deeper values are refused
``MAX_DOCUMENT_DEPTH``     128 levels in a YAML/JSON document: a value at full depth
                           plus the registry or argument-set structure around it
``MAX_INT_BITS``           64: ints must satisfy ``abs(n) < 2**64`` (every int64 and
                           uint64 value); pass larger numbers as strings
``MAX_YAML_BYTES``         16 MiB per YAML document (a registry file, a bundle's
                           ``registry.yaml``, an argument-set file, a ``-a`` value)
``MAX_ALIAS_EXPANSION``    8: YAML aliases may make a document at most 8 times as large
                           as its own text once expanded (or ``MIN_ALIAS_BUDGET``,
                           whichever is larger), so ordinary anchors work and a
                           "billion laughs" document is refused
metrics                    a float (``float(value)`` must not overflow; NaN and ±inf
                           are allowed, as MLflow allows them); step and timestamp in
                           the signed 64-bit range
params and tags            MLflow's own limits (``mlflow.utils.validation``: 6000 and
                           8000 characters, keys up to 250); never truncated
text                       valid Unicode: no lone surrogates (``'\\udcff'``, as
                           undecodable bytes in file names or ``sys.argv`` become)
return values              YAML/JSON up to ``MAX_YAML_BYTES`` (what pcs reads back);
                           a larger one is not recorded, or fails the run when YAML
                           or JSON was asked for
metric histories           no cap on points: up to 1000 per metric (50,000 per run)
                           inline in a run spec, longer ones in JSON-lines files of
                           a bundle (:mod:`pcs.transfer._histories`), so what pcs
                           exports stays within what it imports
=========================  ============================================================

MLflow's limits are read from MLflow itself, lazily, so ``import pcs`` stays
fast and a newer MLflow's limits apply without a pcs release.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from pcs.errors import InputLimitError

__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_DEPTH",
    "MAX_INT_BITS",
    "MAX_YAML_BYTES",
    "MAX_ALIAS_EXPANSION",
    "MIN_ALIAS_BUDGET",
    "INT64_MIN",
    "INT64_MAX",
    "check_int",
    "check_text",
    "check_value",
    "check_metric",
    "check_step",
    "check_key",
    "check_param",
    "check_tag",
    "param_value_limit",
    "tag_value_limit",
    "key_length_limit",
    "describe_int",
    "depth_error",
]

MAX_DEPTH = 100
MAX_DOCUMENT_DEPTH = 128
MAX_INT_BITS = 64
MAX_YAML_BYTES = 16 * 1024**2
MAX_ALIAS_EXPANSION = 8
MIN_ALIAS_BUDGET = 100_000
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_SURROGATE = re.compile("[\ud800-\udfff]")
# ints up to this many bits are shown in messages; larger ones by their size only
# (Python refuses to write ints of more than 4300 digits as text)
_SHOWN_INT_BITS = 256


def describe_int(value: int) -> str:
    """``value`` as text when it is short, else ``'an int of N bits'`` (never fails).

    Args:
        value: any Python int, however large.

    Returns:
        Text safe to put in a one-line message.
    """
    bits = value.bit_length()
    if bits <= _SHOWN_INT_BITS:
        return str(int(value))
    return f"an int of {bits} bits (about {int(bits * math.log10(2)) + 1} digits)"


def check_int(value: int, where: str) -> int:
    """Refuse an int larger than ``MAX_INT_BITS`` bits, naming ``where``.

    Args:
        value: the int to check.
        where: what the value is, for the message (``"argument agent.run['n']"``).

    Returns:
        ``value`` itself.

    Raises:
        InputLimitError: ``abs(value) >= 2**MAX_INT_BITS``.
    """
    bits = value.bit_length()
    if bits > MAX_INT_BITS:
        raise InputLimitError(
            f"{_cap(where)} is an int of {bits} bits; pcs records ints up to {MAX_INT_BITS} "
            f"bits (abs(n) < 2**{MAX_INT_BITS}), which YAML, JSON and MLflow hold exactly. "
            "Pass a larger number as a string."
        )
    return value


def check_text(value: str, where: str) -> str:
    """Refuse text holding a lone surrogate (which UTF-8 cannot encode), naming ``where``.

    Args:
        value: the text to check.
        where: what the text is, for the message.

    Returns:
        ``value`` itself.

    Raises:
        InputLimitError: ``value`` holds a code point from U+D800 to U+DFFF.
    """
    if value.isascii():
        return value
    found = _SURROGATE.search(value)
    if found is not None:
        raise InputLimitError(
            f"{_cap(where)} holds a lone surrogate (U+{ord(found.group()):04X} at character "
            f"{found.start()}), which UTF-8 cannot encode, so YAML, JSON and MLflow cannot "
            "store it. It usually comes from undecodable bytes in a file name or on the "
            "command line; pass valid Unicode text."
        )
    return value


def depth_error(where: str, limit: int) -> InputLimitError:
    """The error for a value or document nested deeper than ``limit`` levels.

    Args:
        where: what is too deep, for the message.
        limit: the depth that was exceeded.

    Returns:
        The error, to raise.
    """
    return InputLimitError(
        f"{_cap(where)} is nested more than {limit} levels deep (lists and mappings inside "
        "each other, or one that contains itself), more than pcs accepts. Flatten the "
        "data, or store it as an artifact."
    )


def check_value(value: Any, where: str, max_depth: int = MAX_DEPTH) -> None:
    """Refuse plain data nested too deep, with too large ints, or with lone surrogates.

    Walks ``value`` without recursion (and once per shared object), so any input
    gives a one-line error, never a ``RecursionError``. Types are not judged here
    (``specs.to_recordable`` does that); only what no store could hold.

    Args:
        value: lists, tuples, dicts, strings, numbers (as parsed from YAML/JSON).
        where: what the value is, for the message.
        max_depth: how many nested containers are allowed.

    Raises:
        InputLimitError: naming the first offending field.
    """
    # deepest level each container was checked at: a shared container is checked again
    # only when met deeper, so shared data costs little and a cycle ends at max_depth
    seen: dict[int, int] = {}
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, float):
            continue
        if isinstance(item, int):
            check_int(item, path)
        elif isinstance(item, str):
            check_text(item, path)
        elif isinstance(item, (list, tuple, Mapping)):
            if depth >= max_depth:
                raise depth_error(where, max_depth)
            if seen.get(id(item), -1) >= depth:
                continue
            seen[id(item)] = depth
            if isinstance(item, Mapping):
                for key, child in item.items():
                    label = _key_label(key)
                    if isinstance(key, str):
                        check_text(key, f"a key in {path}")
                    elif isinstance(key, int) and not isinstance(key, bool):
                        check_int(key, f"a key in {path}")
                    stack.append((child, f"{path}[{label}]", depth + 1))
            else:
                for index, child in enumerate(item):
                    stack.append((child, f"{path}[{index}]", depth + 1))


# -- MLflow: metrics, params, tags ---------------------------------------------------------


class _MlflowRules(NamedTuple):
    param_value: int
    tag_value: int
    key_length: int
    name_ok: Any  # callable(name) -> truthy when MLflow accepts the characters
    path_not_unique: Any  # callable(name) -> True when the name resolves to another path


@functools.lru_cache(maxsize=1)
def _mlflow_rules() -> _MlflowRules:
    # MLflow's own constants and name checks, so pcs refuses exactly what MLflow would
    # refuse (or truncate); the fallbacks are MLflow 3's values
    v: Any
    try:
        from mlflow.utils import validation as v
    except ImportError:  # pragma: no cover - mlflow is a dependency
        v = None

    def name_ok(name: str) -> bool:
        return re.match(r"^[/\w.\- :]*$", name) is not None

    def path_not_unique(name: str) -> bool:
        import posixpath

        norm = posixpath.normpath(name)
        return norm != name or norm == "." or norm.startswith("..") or norm.startswith("/")

    return _MlflowRules(
        param_value=getattr(v, "MAX_PARAM_VAL_LENGTH", 6000),
        tag_value=getattr(v, "MAX_TAG_VAL_LENGTH", 8000),
        key_length=getattr(v, "MAX_ENTITY_KEY_LENGTH", 250),
        name_ok=getattr(v, "validate_param_and_metric_name", name_ok),
        path_not_unique=getattr(v, "path_not_unique", path_not_unique),
    )


def param_value_limit() -> int:
    """The longest param value MLflow stores, in characters (6000 in MLflow 3)."""
    return int(_mlflow_rules().param_value)


def tag_value_limit() -> int:
    """The longest tag value MLflow stores, in characters (8000 in MLflow 3)."""
    return int(_mlflow_rules().tag_value)


def key_length_limit() -> int:
    """The longest metric, param or tag name MLflow stores (250 in MLflow 3)."""
    return int(_mlflow_rules().key_length)


def check_key(key: Any, kind: str) -> str:
    """Refuse a metric, param or tag name that MLflow would refuse, in one line.

    Args:
        key: the name as given (must be a string).
        kind: ``"Metric"``, ``"Param"`` or ``"Tag"``, for the message.

    Returns:
        The name.

    Raises:
        InputLimitError: not a string, a lone surrogate, too long, characters MLflow
            does not allow, or a name that would resolve to another path.
    """
    if not isinstance(key, str):
        raise InputLimitError(
            f"{kind} name {_short(key)} is a {type(key).__name__}; MLflow names are strings. "
            "Pass the name as a string."
        )
    check_text(key, f"{kind} name {_short(key)}")
    rules = _mlflow_rules()
    if len(key) > rules.key_length:
        raise InputLimitError(
            f"{kind} name {_short(key)} is {len(key)} characters long; MLflow keeps names up "
            f"to {rules.key_length} characters. Use a shorter name."
        )
    if not rules.name_ok(key):
        raise InputLimitError(
            f"{kind} name {_short(key)} has characters MLflow does not accept: names may only "
            "hold letters, digits, underscores, dashes, periods, spaces, colons and slashes."
        )
    if rules.path_not_unique(key):
        raise InputLimitError(
            f"{kind} name {_short(key)} is empty or would resolve to another path (MLflow "
            "treats names as file paths): drop leading '/', '..' and repeated or trailing "
            "slashes."
        )
    return key


def check_step(step: Any, where: str) -> int:
    """Refuse a metric step that is not an integer in the signed 64-bit range.

    Args:
        step: the step as given (an int, or a float with an integral value).
        where: what the step belongs to, for the message (``"Metric 'loss'"``).

    Returns:
        The step as a Python int.

    Raises:
        InputLimitError: not integral, or outside ``INT64_MIN..INT64_MAX``.
    """
    if isinstance(step, bool) or not isinstance(step, numbers.Real):
        raise InputLimitError(
            f"{_cap(where)} has step {_short(step)} ({type(step).__name__}); a step is an "
            "integer. Pass an int."
        )
    if not isinstance(step, numbers.Integral):
        as_float = float(step)
        if not as_float.is_integer():
            raise InputLimitError(
                f"{_cap(where)} has step {as_float!r}, which is not a whole number; MLflow "
                "stores steps as 64-bit integers. Pass an int."
            )
        step = int(as_float)
    value = int(step)
    if not INT64_MIN <= value <= INT64_MAX:
        raise InputLimitError(
            f"{_cap(where)} has step {describe_int(value)}, outside the signed 64-bit range "
            f"MLflow stores steps in ({INT64_MIN} to {INT64_MAX}). Number the steps from 0."
        )
    return value


def check_metric(key: Any, value: Any, step: Any = 0, timestamp: Any = None) -> float:
    """Refuse a metric that MLflow cannot store exactly; return its value as a float.

    NaN and ±inf are allowed, as MLflow allows them. A number too large for a
    float (``10**400``) is refused rather than stored as something else.

    Args:
        key: the metric name (MLflow's name rules apply).
        value: a number (``int``, ``float``, NumPy scalars, anything with ``__float__``).
        step: the step, an integer in the signed 64-bit range.
        timestamp: milliseconds since the epoch, or None.

    Returns:
        ``float(value)``.

    Raises:
        InputLimitError: naming the metric and what is wrong with it.
    """
    name = check_key(key, "Metric")
    where = f"Metric {name!r}"
    if isinstance(value, (str, bytes)) or value is None or isinstance(value, complex):
        raise InputLimitError(
            f"{where} is {_short(value)} ({type(value).__name__}); a metric is a real number. "
            "Log text as a param or tag instead."
        )
    try:
        number = float(value)
    except OverflowError:
        size = describe_int(value) if isinstance(value, int) else _short(value)
        raise InputLimitError(
            f"{where} is {size}, larger than any float (about 1.8e308), and MLflow stores "
            "metrics as 64-bit floats. Log a scaled value (e.g. its log10), or record the "
            "exact number as a param or artifact."
        ) from None
    except (TypeError, ValueError):
        raise InputLimitError(
            f"{where} is a {type(value).__name__} ({_short(value)}), which is not a number. "
            "Log a float."
        ) from None
    check_step(step, where)
    if timestamp is not None:
        stamp = check_step(timestamp, f"{where} (timestamp)")
        if stamp < 0:
            raise InputLimitError(
                f"{where} has timestamp {stamp}; timestamps are milliseconds since 1970, "
                "not negative."
            )
    return number


def _as_text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 14_000:
        # about 4200 digits: str() of a larger int raises in Python 3.11+
        raise InputLimitError(
            f"{where} is {describe_int(value)}, too long to write as text. "
            "Log it as an artifact instead."
        )
    try:
        return str(value)
    except ValueError as exc:
        raise InputLimitError(f"{where} cannot be written as text ({exc}).") from None


def check_param(key: Any, value: Any) -> str:
    """Refuse a param MLflow would refuse or cut short; return the text it stores.

    Args:
        key: the param name (MLflow's name rules apply).
        value: any value; MLflow stores ``str(value)``.

    Returns:
        The value as the text MLflow stores.

    Raises:
        InputLimitError: naming the param (a bad name, a lone surrogate, or a value
            longer than MLflow's param limit).
    """
    name = check_key(key, "Param")
    where = f"Param {name!r}"
    text = check_text(_as_text(value, where), where)
    limit = param_value_limit()
    if len(text) > limit:
        raise InputLimitError(
            f"{where} is {len(text)} characters long; MLflow keeps param values up to {limit} "
            "characters and would cut it short. Log the value as an artifact "
            "(run.log_text) and its name or hash as the param."
        )
    return text


def check_tag(key: Any, value: Any) -> str:
    """Refuse a tag MLflow would refuse or cut short; return the text it stores.

    Args:
        key: the tag name (MLflow's name rules apply).
        value: any value; MLflow stores ``str(value)``.

    Returns:
        The value as the text MLflow stores.

    Raises:
        InputLimitError: naming the tag (a bad name, a lone surrogate, or a value
            longer than MLflow's tag limit).
    """
    name = check_key(key, "Tag")
    where = f"Tag {name!r}"
    text = check_text(_as_text(value, where), where)
    limit = tag_value_limit()
    if len(text) > limit:
        raise InputLimitError(
            f"{where} is {len(text)} characters long; MLflow keeps tag values up to {limit} "
            "characters and would cut it short. Log the value as an artifact "
            "(run.log_text) and its name or hash as the tag."
        )
    return text


# -- message helpers -----------------------------------------------------------------------


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return describe_int(value)
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_label(key: Any) -> str:
    if isinstance(key, str):
        return repr(key) if len(key) <= 40 else repr(key[:37] + "...")
    if isinstance(key, int) and not isinstance(key, bool):
        return describe_int(key)
    return _short(key, 40)
