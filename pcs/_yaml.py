"""The one YAML loader pcs uses for everything it reads, and the ``-a`` value parser.

``yaml.safe_load`` keeps untrusted YAML from running code, but not from
exhausting memory: PyYAML builds an aliased node once and shares it, so a
"billion laughs" document of 3 KB loads quickly and then takes gigabytes when
anything walks the result (``json.dumps``, ``copy.deepcopy``, an error message).
:func:`load_yaml` therefore looks at the composed node graph before building
any Python object, and refuses, in one line:

- documents larger than ``max_bytes`` (``pcs._limits.MAX_YAML_BYTES``);
- aliases that would expand the document to more than ``MAX_ALIAS_EXPANSION``
  times its own size (measured in a linear pass that counts every node once,
  so the check itself costs nothing on a bomb); ordinary anchors and merge keys
  (``<<: *defaults``) stay well inside that;
- aliases that refer to a node containing themselves;
- nesting deeper than ``max_depth`` (without recursion, whatever the depth);
- ints beyond ``MAX_INT_BITS`` bits and lone surrogates, naming the field;
- a mapping that holds one key twice (YAML forbids it; PyYAML keeps the last
  one silently), naming the key.

Syntax and shape problems raise the caller's error class (``RegistryError`` for
registries, ``ArgumentError`` for arguments); limits raise ``InputLimitError``.
libyaml's C parser is used when installed, PyYAML's pure-Python one otherwise;
both give the same data and refuse the same limits. (One difference: libyaml
refuses a ``"\\ud800"`` escape as a syntax error, where the pure-Python parser
decodes it and the check here refuses it as a lone surrogate.)

:func:`load_json` applies the same limits to JSON from outside, and
:func:`parse_value` reads the value of a CLI ``-a`` option.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import yaml

from pcs._limits import (
    MAX_ALIAS_EXPANSION,
    MAX_DEPTH,
    MAX_DOCUMENT_DEPTH,
    MAX_INT_BITS,
    MAX_YAML_BYTES,
    MIN_ALIAS_BUDGET,
    check_int,
    check_text,
    check_value,
    depth_error,
)
from pcs.errors import ArgumentError, InputLimitError, PcsError

__all__ = ["load_yaml", "load_json", "parse_value"]

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader (libyaml's when installed), untouched."""


# JSON's number syntax: what json.loads reads as a number, -a reads as that number
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?\Z")


class _ValueLoader(_Loader):
    """The loader for ``-a`` values: YAML, plus JSON numbers inside collections."""


class _PureLoader(yaml.SafeLoader):
    """PyYAML's pure-Python safe loader: what runs where libyaml is not installed."""


# YAML 1.1 reads 1e-3 (no dot) as a string; JSON, and so -a, reads it as a float
_ValueLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?[eE][-+]?[0-9]+$"),
    list("-0123456789"),
)

_INT_TAG = "tag:yaml.org,2002:int"
_SATURATED = 1 << 62  # expanded sizes stop counting here: far past any budget


def load_yaml(
    text: str | bytes,
    where: str,
    error: type[PcsError] = ArgumentError,
    max_bytes: int = MAX_YAML_BYTES,
    max_depth: int = MAX_DOCUMENT_DEPTH,
    inspect: Callable[[yaml.Node], None] | None = None,
) -> Any:
    """Parse one YAML document safely: no code, no alias bombs, no unbounded nesting.

    Args:
        text: the document (bytes are read as UTF-8).
        where: what the document is, to start every message
            (``"Registry file components.yaml"``).
        error: the class raised for syntax and shape problems.
        max_bytes: the largest document accepted, in UTF-8 bytes.
        max_depth: the deepest nesting of lists and mappings accepted.
        inspect: called with the composed root node (after every check, before
            any Python object is built), for callers that need the document's
            structure, such as which nodes are shared through aliases.

    Returns:
        The document's data (None for an empty document).

    Raises:
        InputLimitError: the document is too large, expands too much through
            aliases, nests too deep, or holds an int or text no store can keep.
        error: the document is not valid YAML, holds several documents, uses a
            tag outside plain data, or has an alias that contains itself.

    Example::

        data = load_yaml(path.read_text(encoding="utf-8"), f"Registry file {path}", RegistryError)
    """
    return _load(text, where, error, max_bytes, max_depth, inspect, _Loader)


def load_json(
    text: str | bytes,
    where: str,
    error: type[PcsError] = ArgumentError,
    max_bytes: int = MAX_YAML_BYTES,
    max_depth: int = MAX_DOCUMENT_DEPTH,
    allow_nan: bool = True,
) -> Any:
    """Parse JSON from outside (a request body, a stored artifact) within the same limits.

    JSON has no aliases, but deep nesting makes ``json.loads`` raise
    ``RecursionError``, huge ints raise ``ValueError`` and ``\\ud800`` escapes
    give lone surrogates; each is refused here in one line.

    Args:
        text: the JSON text (bytes are read as UTF-8).
        where: what it is, to start every message (``"The request body"``).
        error: the class raised for syntax problems.
        max_bytes: the largest text accepted, in UTF-8 bytes.
        max_depth: the deepest nesting of lists and objects accepted.
        allow_nan: when False, ``NaN`` and ``Infinity`` are refused (class ``error``).

    Returns:
        The parsed value.

    Raises:
        InputLimitError: too large, too deep, an int beyond ``MAX_INT_BITS`` bits,
            a number beyond the float range, or a lone surrogate.
        error: not valid JSON (or a NaN/Infinity constant when not allowed).
    """
    _check_size(text, where, max_bytes)

    def refuse_constant(name: str) -> Any:
        raise error(
            f"{_cap(where)} holds {name}, which is not a JSON number and cannot be recorded "
            "exactly. Send a finite number, or a string."
        )

    def finite(number: str) -> float:
        value = float(number)
        if math.isinf(value):  # json.loads would turn 1e400 into inf without a word
            raise InputLimitError(
                f"{_cap(where)} holds {_clip(number, 40)}, beyond the largest float (about "
                "1.8e308). Send a smaller number, or a string."
            )
        return value

    try:
        value = json.loads(
            text, parse_float=finite, parse_constant=None if allow_nan else refuse_constant
        )
    except RecursionError:
        raise depth_error(where, max_depth) from None
    except UnicodeDecodeError as exc:
        raise error(
            f"{_cap(where)} is not UTF-8 text (byte {exc.start} cannot be decoded)."
        ) from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # more than 4300 digits
            raise InputLimitError(
                f"{_cap(where)} holds an int of more than 4300 digits; pcs accepts ints up to "
                f"{MAX_INT_BITS} bits. Send large numbers as strings."
            ) from None
        raise error(f"{_cap(where)} is not valid JSON: {_clip(str(exc))}.") from None
    check_value(value, where, max_depth)
    return value


def parse_value(text: str, where: str, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Read the VALUE of a CLI ``-a COMPONENT.FUNCTION.ARG=VALUE``.

    The value is YAML, as ``--arg-set`` files are: ``5`` an int, ``yes`` and
    ``true`` booleans, ``'5'`` the string "5", ``[1, 2]`` a list, ``{a: 1}`` a
    dict, ``abc`` the string "abc". What JSON reads as a number is that number
    (``1e-3`` is a float, also inside ``[...]``; YAML 1.1 alone would read it as
    text). Limits are checked up front, naming ``where``.

    Args:
        text: the VALUE, as given on the command line.
        where: what it is, for messages (``"argument agent.run.lr"``).
        max_bytes: the longest value accepted, in UTF-8 bytes.

    Returns:
        The value.

    Raises:
        InputLimitError: a lone surrogate (undecodable bytes on the command
            line), an int beyond ``MAX_INT_BITS`` bits, a float beyond the float
            range, nesting beyond ``MAX_DEPTH``, an alias bomb, or a value larger
            than ``max_bytes``.
    """
    check_text(text, where)
    _check_size(text, where, max_bytes)
    stripped = text.strip()
    number = _JSON_NUMBER.match(stripped)
    if number is not None:
        return _json_number(stripped, bool(number.group(1) or number.group(2)), where)
    try:
        value = json.loads(stripped)
    except RecursionError:
        raise depth_error(where, MAX_DEPTH) from None
    except ValueError:
        pass
    else:
        check_value(value, where, MAX_DEPTH)
        return value
    if not stripped:
        return ""
    try:
        return _load(stripped, where, ArgumentError, max_bytes, MAX_DEPTH, None, _ValueLoader)
    except InputLimitError:
        raise
    except ArgumentError as exc:
        raise ArgumentError(
            f"{exc} Quote the value to pass it as a string (e.g. -a 'x.y.z=\"{_clip(stripped, 30)}\"')."
        ) from None


# -- internals -----------------------------------------------------------------------------


def _json_number(text: str, is_float: bool, where: str) -> int | float:
    if is_float:
        value = float(text)
        if value in (float("inf"), float("-inf")):
            raise InputLimitError(
                f"{_cap(where)} is {_clip(text, 40)}, beyond the largest float (about 1.8e308). "
                "Pass a smaller number, or a string."
            )
        return value
    digits = len(text.lstrip("-"))
    if digits > 40:  # 2**64 has 20 digits; Python refuses ints over 4300 digits
        raise InputLimitError(
            f"{_cap(where)} is an int of {digits} digits; pcs records ints up to "
            f"{MAX_INT_BITS} bits (abs(n) < 2**{MAX_INT_BITS}). Pass a larger number as a "
            "quoted string."
        )
    return check_int(int(text), where)


def _check_size(text: str | bytes, where: str, max_bytes: int) -> None:
    size = len(text)
    if isinstance(text, str) and size <= max_bytes < size * 4:
        size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise InputLimitError(
            f"{_cap(where)} is {size} bytes, more than the {max_bytes} bytes pcs reads from "
            "one YAML document. Keep large data in artifacts, not in YAML."
        )


def _load(
    text: str | bytes,
    where: str,
    error: type[PcsError],
    max_bytes: int,
    max_depth: int,
    inspect: Callable[[yaml.Node], None] | None,
    loader_class: type,
) -> Any:
    _check_size(text, where, max_bytes)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(
                f"{_cap(where)} is not UTF-8 text (byte {exc.start} cannot be decoded). "
                "Save it as UTF-8."
            ) from None
    check_text(text, where)
    loader = loader_class(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:  # PyYAML's pure-Python composer recurses per level
            raise depth_error(where, max_depth) from None
        except yaml.YAMLError as exc:
            detail = _describe(exc)
            if "maximum nesting depth" in detail:  # libyaml stops at 1000 levels
                raise depth_error(where, max_depth) from None
            raise error(f"{_cap(where)} is not valid YAML: {detail}.") from None
        except ValueError as exc:  # e.g. an escape the pure-Python scanner cannot decode
            raise error(f"{_cap(where)} is not valid YAML: {_clip(str(exc))}.") from None
        if root is None:
            return None
        _measure(root, where, error, max_depth, loader)
        if inspect is not None:
            inspect(root)
        try:
            return loader.construct_document(root)
        except yaml.YAMLError as exc:
            raise error(f"{_cap(where)} is not valid YAML: {_describe(exc)}.") from None
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date 2020-13-45
            raise error(
                f"{_cap(where)} has a value YAML cannot build: {_clip(str(exc))}."
            ) from None
    finally:
        loader.dispose()


def _measure(
    root: yaml.Node, where: str, error: type[PcsError], max_depth: int, loader: Any
) -> None:
    """Check the node graph: depth, alias expansion, cycles, ints and text.

    One pass, each distinct node once (aliases share node objects), no recursion.
    A node's weight is 2 plus its text length for a scalar, 2 plus its children's
    weights for a collection: about what it costs once every alias is expanded.
    """
    weight: dict[int, int] = {}  # id(node) -> expanded weight, for finished nodes
    height: dict[int, int] = {}  # id(node) -> nesting levels from it down
    on_path: set[int] = set()
    own_size = 0  # the document without expansion: each distinct node once
    # frames: [node, children, index of the next child, weight so far, height so far];
    # a mapping's children are its keys and values, interleaved
    stack: list[list[Any]] = []

    def path() -> str:
        # the field being entered, named from the open frames (built only for messages)
        parts = []
        for frame in stack:
            node, kids, index = frame[0], frame[1], frame[2] - 1
            if isinstance(node, yaml.SequenceNode):
                parts.append(f"[{index}]")
            else:
                key = kids[index - index % 2]
                name = _clip(key.value, 40) if isinstance(key, yaml.ScalarNode) else "?"
                parts.append(f".{name}" + (" (a key)" if index % 2 == 0 else ""))
        if not parts:
            return "the top level"
        if len(parts) > 6:
            parts = [*parts[:3], "...", *parts[-2:]]
        return "".join(parts).lstrip(".")

    def scalar(node: yaml.ScalarNode) -> int:
        value = node.value
        if not value.isascii():
            check_text(value, f"{where}, at {path()},")
        if node.tag == _INT_TAG:
            digits = value.replace("_", "")
            if len(digits) > 100:
                raise InputLimitError(
                    f"{_cap(where)}, at {path()}, has an int of {len(digits)} characters; pcs "
                    f"accepts ints up to {MAX_INT_BITS} bits. Quote large numbers as strings."
                )
            check_int(loader.construct_yaml_int(node), f"{where}, at {path()},")
        return 2 + len(value)

    scalar_class, sequence_class = yaml.ScalarNode, yaml.SequenceNode

    def enter(node: yaml.Node) -> int | None:
        """The weight of a finished or scalar node; None when ``node`` was pushed."""
        nonlocal own_size
        if node.__class__ is scalar_class or isinstance(node, scalar_class):
            # scalars are not memoised: an alias to one costs no more than its text
            own = scalar(node)
            own_size += own
            return own
        key = id(node)
        if key in weight:
            if len(stack) + height[key] > max_depth:
                raise depth_error(f"{where}, at {path()},", max_depth)
            return weight[key]
        if key in on_path:
            raise error(
                f"{_cap(where)} has an alias at {path()} that refers to a node containing "
                "it; pcs reads only data without cycles. Remove the recursive alias."
            )
        if len(stack) >= max_depth:
            raise depth_error(f"{where}, at {path()},", max_depth)
        own_size += 2
        on_path.add(key)
        if isinstance(node, sequence_class):
            kids = node.value
        else:
            kids = [item for pair in node.value for item in pair]
            _refuse_duplicate_keys(node, where, error, path)
        stack.append([node, kids, 0, 2, 0])
        return None

    if enter(root) is not None:
        return
    result = 0
    while stack:
        frame = stack[-1]
        kids, index = frame[1], frame[2]
        if index < len(kids):
            frame[2] = index + 1
            child = kids[index]
            if child.__class__ is scalar_class:  # the common case, inline
                value = child.value
                if child.tag == _INT_TAG or not value.isascii():
                    scalar(child)
                own = 2 + len(value)
                own_size += own
                frame[3] += own
                continue
            got = enter(child)
            if got is not None:
                frame[3] = min(frame[3] + got, _SATURATED)
                frame[4] = max(frame[4], height.get(id(child), 0))
            continue
        stack.pop()
        node = frame[0]
        on_path.discard(id(node))
        total = min(frame[3], _SATURATED)
        weight[id(node)], height[id(node)] = total, frame[4] + 1
        if stack:
            parent = stack[-1]
            parent[3] = min(parent[3] + total, _SATURATED)
            parent[4] = max(parent[4], frame[4] + 1)
        else:
            result = total
    budget = max(MIN_ALIAS_BUDGET, MAX_ALIAS_EXPANSION * own_size)
    if result > budget:
        ratio = result / max(own_size, 1)
        shown = f"more than {ratio:.0e}" if result >= _SATURATED else f"{ratio:.0e}"
        raise InputLimitError(
            f"{_cap(where)} uses YAML aliases that would expand it {shown} times over (an "
            f"alias bomb); pcs allows {MAX_ALIAS_EXPANSION} times, so it refuses the document. "
            "Write the data out, or reuse anchors less often."
        )


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _refuse_duplicate_keys(
    node: yaml.Node, where: str, error: type[PcsError], path: Callable[[], str]
) -> None:
    """One line naming a key that a mapping holds twice (PyYAML would keep the last silently).

    Keys are compared as YAML resolved them (``1`` and ``"1"`` differ); merge
    keys (``<<``) are not keys of the mapping and may repeat.
    """
    seen: set[tuple[str, str]] = set()
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
            continue
        ident = (key.tag, key.value)
        if ident in seen:
            inside = path()
            place = "at the top level" if inside == "the top level" else f"in {inside}"
            raise error(
                f"{_cap(where)} has the key {_clip(key.value, 80)!r} twice {place}; pcs "
                "refuses duplicate keys instead of keeping one silently. Keep one of them."
            )
        seen.add(ident)


def _describe(exc: yaml.YAMLError) -> str:
    """One short line for a YAML error: what, and where (never the document's text)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        words = [w for w in (exc.context, exc.problem) if w]
        text = ", ".join(words) or "syntax error"
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            text = f"{_clip(text)} (line {mark.line + 1}, column {mark.column + 1})"
        return text
    return _clip(str(exc))


def _clip(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
