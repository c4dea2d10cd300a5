"""Reading text that someone else wrote (a config in a runs row, a warm-up progress file): bounded in size
and depth, never raising anything but ValueError; and showing it on a terminal without letting it act
there (`printable`).

Python's json module recurses once per nesting level: a config nested 10,000 deep raises RecursionError
(not ValueError), and a 1 GB string is parsed whole. `json_value` refuses both before parsing.
"""
from __future__ import annotations

import json

MAX_JSON_BYTES = 4 << 20
MAX_JSON_DEPTH = 64


def json_value(text, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH):
    """The JSON value in `text` (str or bytes); ValueError with a one-line reason when it is not JSON,
    longer than max_bytes or nested deeper than max_depth."""
    if isinstance(text, (bytes, bytearray)):
        if len(text) > max_bytes:
            raise ValueError(f"{len(text)} bytes of JSON, more than {max_bytes}")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(text, str):
        raise ValueError(f"not text but {type(text).__name__}")
    if len(text) > max_bytes:
        raise ValueError(f"{len(text)} characters of JSON, more than {max_bytes}")
    depth = _depth(text) if text.count("[") + text.count("{") > max_depth else 0
    if depth > max_depth:
        raise ValueError(f"JSON nested {depth} deep, more than {max_depth}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not JSON: {str(e).splitlines()[0][:120]}") from None


def _depth(text: str) -> int:
    """Deepest nesting of [ and { outside strings (stops counting once past any sane limit)."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def printable(text: str) -> str:
    """`text` from a log as a terminal should show it: every character Python does not call printable
    (ESC, CR, BEL, backspace, newline, bidi overrides, lone surrogates of a name that is not UTF-8) as
    its escape (\\x1b, \\u202e), so a run name cannot move the cursor, retitle or recolour the terminal,
    overwrite a verdict or start a line of its own."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"
