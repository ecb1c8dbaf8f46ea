"""Encoding JSONL lines: orjson when installed (``plait[telemetry]``), else the standard json.

orjson encodes a small event in a fraction of a microsecond, several times faster than
``json``; the output is the same JSON either way.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["FAST", "fragment", "hole", "line", "number", "template", "value"]

orjson: Any
try:
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is absent
    orjson = None

FAST = orjson is not None
"""True when orjson does the encoding."""


def _default(obj: Any) -> str:
    """What a value JSON has no type for becomes: its ``str``, or a placeholder."""
    try:
        return str(obj)
    except Exception:  # a user's object whose __str__ raises: the line is still written
        return f"<unprintable {type(obj).__name__}>"


if orjson is not None:
    _OPTIONS = orjson.OPT_APPEND_NEWLINE
    # Non-string keys (in a user's custom event, say) cost orjson twice the time for
    # every line; they are allowed only on a second try.
    _ANY_KEYS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS

    def line(obj: Any) -> bytes:
        """``obj`` as one JSON line (bytes, newline included); unknown types as ``str``."""
        try:
            encoded: bytes = orjson.dumps(obj, default=_default, option=_OPTIONS)
        except TypeError:
            encoded = orjson.dumps(obj, default=_default, option=_ANY_KEYS)
        return encoded

    value = orjson.dumps  # one value (a number, a string, a list of strings) as in a line
    number = value

else:

    def line(obj: Any) -> bytes:
        """``obj`` as one JSON line (bytes, newline included); unknown types as ``str``."""
        return (json.dumps(obj, default=_default) + "\n").encode()

    def value(obj: Any) -> bytes:
        """One value (a number, a string, a list of strings) as JSON: the same text as in a line."""
        return json.dumps(obj).encode()

    number = value


def fragment(obj: dict[str, Any]) -> bytes:
    """The members of ``obj`` encoded, without the braces: a constant part of lines.

    ``fragment({"a": 1, "b": 2})`` is ``b'"a":1,"b":2'``.
    """
    return line(obj)[1:-2]


_HOLE = "\x00plait.hole.%d\x00"
_FILLS = {"v": b"%s", "t": b'"%s"', "d": b"%d", "x": b'"0x%x"'}


def hole(index: int) -> str:
    """The placeholder of a :func:`template`'s ``index``-th hole."""
    return _HOLE % index


def template(
    obj: dict[str, Any], kinds: str, fills: dict[str, bytes] | None = None
) -> bytes | None:
    """The line of ``obj`` as a ``%`` template: its holes filled in per line, the rest encoded once.

    ``obj`` holds ``hole(0)``, ``hole(1)``... in that order; ``kinds[i]`` says what the
    i-th becomes: ``v`` a ``%s`` for a JSON value given encoded (:func:`value`), ``t``
    a ``"%s"`` for text that needs no escaping, ``d`` a ``%d`` for an int, ``x`` a
    ``"0x%x"`` for an int written as ``hex()`` writes it (a span id); ``fills`` may add
    kinds of its own (their text, with its ``%`` directive, in place of the hole).
    Every other ``%`` is doubled, so ``template(obj, kinds) % args`` is the line of
    ``obj`` with the values in place.

    Returns:
        The template; None when a hole is not found exactly once and in order (a user's
        string that happens to hold one): such lines are encoded whole instead.
    """
    encoded = line(obj).replace(b"%", b"%%")
    fills = _FILLS if fills is None else {**_FILLS, **fills}
    at = 0
    for index, kind in enumerate(kinds):
        mark = value(hole(index))
        found = encoded.find(mark, at)
        if found < 0 or encoded.count(mark) != 1:
            return None
        encoded = encoded[:found] + fills[kind] + encoded[found + len(mark) :]
        at = found
    return encoded
