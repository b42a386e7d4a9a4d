"""Reading JSON with paths, shared by the format modules.

A :class:`Node` is a decoded JSON value plus its path in the document (``messages[2].content``),
so that every validation error names the field, what was expected and what arrived. The
error it raises is chosen by the caller: :func:`request_error` for what a client sent (a 400
naming the field), :func:`upstream_error` for what an upstream sent.
"""

from __future__ import annotations

import base64
import binascii
import enum
import math
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from mux import ir
from mux.errors import MuxError, RequestError, UpstreamError
from mux.framing import dumps

__all__ = [
    "Node",
    "describe",
    "extract_extra",
    "finite",
    "maybe",
    "present",
    "request_error",
    "upstream_error",
    "with_extra",
]

_T = TypeVar("_T")

class _Absent(enum.Enum):
    MISSING = "missing"


_MISSING = _Absent.MISSING


_KINDS = {
    _Absent: "nothing", type(None): "null", bool: "a boolean", int: "a number",
    float: "a number", str: "a string", list: "an array", dict: "an object",
}  # fmt: skip


def describe(value: object) -> str:
    """What a JSON value is, for "expected X, got Y" messages."""
    return _KINDS.get(type(value), type(value).__name__)


class Node:
    """A JSON value and its path in the document, so that every error names the field.

    Reading a key of a missing or null value gives a missing value, so optional chains need
    no checks; reading a key of anything else that is not an object is an error.
    """

    __slots__ = ("_error", "path", "value")

    def __init__(self, value: Any, path: str, error: Callable[[str, str], MuxError]) -> None:
        self.value = value
        self.path = path
        self._error = error

    def __getitem__(self, key: str) -> Node:
        value = _MISSING if self.absent else self.object().get(key, _MISSING)
        return Node(value, f"{self.path}.{key}" if self.path else key, self._error)

    @property
    def absent(self) -> bool:
        """Whether the value is missing or null."""
        return self.value is None or self.value is _MISSING

    def fail(self, expected: str, got: str | None = None) -> NoReturn:
        raise self._error(self.path, f"expected {expected}, got {got or describe(self.value)}")

    def optional(self, read: Callable[[Node], _T]) -> _T | None:
        """``read(self)``, or None when the value is missing or null."""
        return None if self.absent else read(self)

    def object(self) -> dict[str, Any]:
        if not isinstance(self.value, dict):
            self.fail("an object")
        return self.value

    def free_object(self) -> dict[str, Any]:
        """An object of any content (a schema, tool parameters), checked to hold only what
        JSON can say: ``json.loads`` lets NaN and Infinity in, and they could not go out."""
        return self.object() if finite(self.value) else self.fail("JSON without NaN or Infinity")

    def array(self) -> list[Node]:
        if not isinstance(self.value, list):
            self.fail("an array")
        return [Node(v, f"{self.path}[{i}]", self._error) for i, v in enumerate(self.value)]

    def string(self) -> str:
        if not isinstance(self.value, str):
            self.fail("a string")
        return self.value

    def choice(self, options: Sequence[str]) -> str:
        if self.value not in options:
            got = repr(self.value[:40]) if isinstance(self.value, str) else None
            self.fail(f"one of {', '.join(repr(o) for o in options)}", got)
        return str(self.value)

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            self.fail("a boolean")
        return self.value

    def number(self) -> float:
        value = self.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail("a number")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            self.fail("a finite number", "a number out of range")
        return number

    def integer(self, minimum: int | None = None) -> int:
        value = self.value
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail("an integer", str(value) if isinstance(value, float) else None)
        if minimum is not None and value < minimum:
            self.fail(f"an integer of at least {minimum}", str(value))
        return value

    def positive(self) -> int:
        return self.integer(minimum=1)

    def base64(self) -> bytes:
        try:
            return base64.b64decode(self.string(), validate=True)
        except binascii.Error:
            self.fail("base64 data", "a string that is not base64")

    def compact(self, expected: str = "a JSON object") -> str:
        """The value re-encoded as compact JSON text (tool arguments sent as an object)."""
        try:
            return dumps(self.value).decode()
        except (ValueError, TypeError, RecursionError):
            self.fail(expected, "an object that cannot be encoded")

    def data_url(self) -> tuple[str | None, bytes]:
        """A ``data:`` URL's media type (None when empty) and payload."""
        header, comma, payload = self.string().removeprefix("data:").partition(",")
        params = header.split(";")
        if not comma:
            self.fail("a data URL (data:<type>;base64,<data>)", "a URL without a comma")
        if params[-1].lower() == "base64":
            params.pop()
            data = Node(payload, self.path, self._error).base64()
        else:
            data = urllib.parse.unquote_to_bytes(payload)
        return ";".join(params) or None, data


def finite(value: object) -> bool:
    """Whether a decoded JSON value holds no NaN or infinite number (walked iteratively, as
    it may nest deeply)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, dict):
            stack += item.values()
        elif isinstance(item, list):
            stack += item
    return True


def request_error(path: str, message: str) -> MuxError:
    return RequestError(f"{path or 'request body'}: {message}", param=path or None)


def upstream_error(path: str, message: str) -> MuxError:
    where = path or "body"
    return UpstreamError(ir.ErrorKind.UPSTREAM, f"malformed upstream data: {where}: {message}")


def maybe(value: _T | None, render: Callable[[_T], Any]) -> Any:
    return None if value is None else render(value)


def present(**fields: Any) -> dict[str, Any]:
    """The fields that are not None: most formats omit what they do not say."""
    return {key: value for key, value in fields.items() if value is not None}


def extract_extra(node: Node, known: frozenset[str], format_: str) -> ir.Extra | None:
    """The fields of ``node`` this format does not model, kept for a same-format hop."""
    unknown = {k: v for k, v in node.object().items() if k not in known}
    if not finite(unknown):
        name = next(k for k, v in unknown.items() if not finite(v))
        node[name].fail("JSON without NaN or Infinity")
    return ir.Extra(format=format_, fields=unknown) if unknown else None


def with_extra(body: dict[str, Any], extra: ir.Extra | None, format_: str) -> dict[str, Any]:
    """``body`` plus the fields ``extra`` kept, if this format parsed them; body wins."""
    if extra is not None and extra.format == format_:
        body.update({k: v for k, v in extra.fields.items() if k not in body})
    return body
