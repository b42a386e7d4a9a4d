"""Message framing on the wire: JSON, server-sent events, NDJSON and streamed JSON arrays.

Everything here is sans-io: encoders turn values into bytes, decoders are fed bytes in
whatever pieces the network delivers and hand back whole messages. Nothing reads a socket.

Decoders share one contract, the one h11's ``receive_data`` has:

* ``feed(data)`` returns the messages that ``data`` completed, possibly none; bytes may be
  split anywhere, including inside a UTF-8 sequence or between a CR and its LF, and the
  messages are the same whatever the split.
* ``close()`` says the stream ended and returns what the end completed.
* A malformed stream raises :class:`FramingError`, and so does a message that would grow past
  ``max_buffer`` without completing: a peer must not make us buffer without bound.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

import attrs

__all__ = [
    "MAX_BUFFER_SIZE",
    "FramingError",
    "JSONArrayDecoder",
    "NDJSONDecoder",
    "SSEDecoder",
    "SSEMessage",
    "dumps",
    "loads",
    "ndjson",
    "sse",
]

#: The most a decoder buffers for one incomplete message (an SSE event, an NDJSON line, a JSON
#: array element), in characters for SSE and in bytes otherwise. h11 allows 16 KiB for a head;
#: model answers carry whole base64 images in one event, so this is sized like the 16-20 MiB
#: request caps of the major LLM APIs rather than like an HTTP head.
MAX_BUFFER_SIZE = 16 * 1024 * 1024


class FramingError(ValueError):
    """The byte stream does not follow its framing, or a message outgrew the buffer limit."""


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` as compact UTF-8 JSON; the one JSON encoder mux uses.

    Raises:
      ValueError: ``obj`` holds a NaN or infinite float, which JSON cannot express.
      TypeError: ``obj`` holds something that is not JSON data.
    """
    return _ENCODER.encode(obj).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Built once: json.dumps/json.loads with any non-default option build a new encoder or
# decoder per call, which bench.profile measured at ~8% of translation time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads(data: bytes | str) -> Any:
    """Decode one JSON text strictly (no ``NaN``/``Infinity``), the inverse of :func:`dumps`.

    Raises:
      FramingError: ``data`` is not UTF-8, not JSON, or nested too deeply to decode.
    """
    try:
        if isinstance(data, bytes):  # as json.loads does: UTF-8, -16 or -32, BOM or not
            data = data.decode(json.detect_encoding(data), "surrogatepass")
        return _DECODER.decode(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise FramingError(f"invalid JSON: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Server-sent events (https://html.spec.whatwg.org/multipage/server-sent-events.html)

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@attrs.frozen
class SSEMessage:
    """One dispatched server-sent event: its ``event:`` name, if any, and its data."""

    event: str | None
    data: str


def sse(data: bytes | str, event: str | None = None) -> bytes:
    """Encode one server-sent event.

    Each line of ``data`` becomes its own ``data:`` line, so a decoder rebuilds ``data`` with
    its line breaks normalised to LF.

    Raises:
      ValueError: ``event`` contains a line break.
    """
    text = data.decode() if isinstance(data, bytes) else data
    head = ""
    if event is not None:
        if _LINE_BREAK.search(event):
            raise ValueError(f"an SSE event name cannot contain a line break: {event!r}")
        head = f"event: {event}\n"
    body = "".join(f"data: {line}\n" for line in _LINE_BREAK.split(text))
    return f"{head}{body}\n".encode()


class SSEDecoder:
    """Incremental server-sent events decoder, following the WHATWG event-stream rules.

    Lines end in LF, CRLF or CR; a leading byte-order mark is skipped; a line starting with
    ``:`` is a comment; ``field: value`` loses one space after the colon; ``data`` lines join
    with LF; a blank line dispatches the event, unless it had no ``data`` line at all. ``id``
    and ``retry`` are accepted and ignored: mux never reconnects a stream.

    One deliberate difference from the spec: :meth:`close` dispatches an event left
    unterminated at the end of the stream instead of discarding it. Some servers omit the
    last blank line; a truncated event then fails loudly at JSON decoding instead of silently
    vanishing.
    """

    def __init__(self, max_buffer: int = MAX_BUFFER_SIZE) -> None:
        self._max_buffer = max_buffer
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_start = True  # nothing decoded yet: a BOM may still come
        self._skip_lf = False  # the last line ended in CR; a LF right after belongs to it
        self._line: list[str] = []  # the pieces of the current, unterminated line
        self._line_size = 0
        self._event: str | None = None
        self._data: list[str] | None = None  # None until the event has a data line
        self._data_size = 0

    def feed(self, data: bytes) -> list[SSEMessage]:
        """Decode ``data`` and return the events it completed.

        Raises:
          FramingError: an incomplete event outgrew ``max_buffer``.
        """
        return self._decode(self._text.decode(data))

    def close(self) -> list[SSEMessage]:
        """End the stream; return an event it left unterminated, if any (see the class doc)."""
        messages = self._decode(self._text.decode(b"", final=True))
        if self._line:
            line = "".join(self._line)
            self._line.clear()
            self._line_size = 0
            messages += self._line_done(line)
        return messages + self._line_done("")

    def _decode(self, text: str) -> list[SSEMessage]:
        if self._at_start and text:
            self._at_start = False
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text:
            self._skip_lf = False
            text = text.removeprefix("\n")
        messages: list[SSEMessage] = []
        start = 0
        for match in _LINE_BREAK.finditer(text):
            self._line.append(text[start : match.start()])
            start = match.end()
            line = "".join(self._line)
            self._line.clear()
            self._line_size = 0
            messages += self._line_done(line)
        if start < len(text):
            self._line.append(text[start:])
            self._line_size += len(text) - start
            self._check_size()
        elif text.endswith("\r"):
            self._skip_lf = True
        return messages

    def _line_done(self, line: str) -> list[SSEMessage]:
        if not line:
            if self._data is None:
                self._event = None
                return []
            message = SSEMessage(event=self._event, data="\n".join(self._data))
            self._event, self._data, self._data_size = None, None, 0
            return [message]
        field, colon, value = line.partition(":")
        if not field and colon:
            return []  # a comment
        value = value.removeprefix(" ")
        if field == "data":
            if self._data is None:
                self._data = []
            self._data.append(value)
            self._data_size += len(value) + 1
            self._check_size()
        elif field == "event":
            self._event = value
        return []

    def _check_size(self) -> None:
        if self._line_size + self._data_size > self._max_buffer:
            raise FramingError(
                f"a server-sent event grew past {self._max_buffer} characters without ending"
            )


# --------------------------------------------------------------------------------------------
# Newline-delimited JSON


def ndjson(obj: Any) -> bytes:
    """Encode ``obj`` as one NDJSON line."""
    return dumps(obj) + b"\n"


class NDJSONDecoder:
    """Incremental newline-delimited JSON decoder: one JSON value per line.

    Lines may end in LF or CRLF; blank lines are skipped; a final line without a line break
    is decoded by :meth:`close`.
    """

    def __init__(self, max_buffer: int = MAX_BUFFER_SIZE) -> None:
        self._max_buffer = max_buffer
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """Decode ``data`` and return the values of the lines it completed.

        Raises:
          FramingError: a line is not JSON, or an unterminated line outgrew ``max_buffer``.
        """
        end = data.rfind(b"\n")
        if end < 0:
            complete = b""
            self._buffer += data
        else:
            complete = bytes(self._buffer) + data[:end]
            self._buffer = bytearray(data[end + 1 :])
        if len(self._buffer) > self._max_buffer:
            raise FramingError(f"an NDJSON line grew past {self._max_buffer} bytes without ending")
        return [loads(line) for line in complete.split(b"\n") if line.strip()]

    def close(self) -> list[Any]:
        """End the stream; decode a last line that had no line break.

        Raises:
          FramingError: that line is not JSON.
        """
        rest, self._buffer = self._buffer, bytearray()
        return [loads(bytes(rest))] if rest.strip() else []


# --------------------------------------------------------------------------------------------
# Streamed JSON arrays

# JSON's insignificant whitespace (RFC 8259 section 2).
_WHITESPACE = b" \t\r\n"
# Inside an element: the bytes that change nesting or string state.
_STRUCTURE = re.compile(rb'["\\\[\]{}]')
_STRING = re.compile(rb'["\\]')
# A scalar element ends where the array's own syntax resumes.
_SCALAR_END = re.compile(rb"[,\] \t\r\n]")

# Where the decoder stands in ``[ element , element ]``.
_BEFORE_ARRAY = "before-array"
_BEFORE_FIRST = "before-first-element"
_BEFORE_ELEMENT = "before-element"
_IN_ELEMENT = "in-element"
_AFTER_ELEMENT = "after-element"
_DONE = "done"


class JSONArrayDecoder:
    """Incremental decoder for one JSON array whose elements arrive over time.

    Gemini's ``streamGenerateContent`` without ``alt=sse`` answers ``[{...}\\r\\n,{...}]``:
    each element is returned as soon as its last byte arrives. Elements may be any JSON
    value; only whole elements are buffered, never the whole array.
    """

    def __init__(self, max_buffer: int = MAX_BUFFER_SIZE) -> None:
        self._max_buffer = max_buffer
        self._state = _BEFORE_ARRAY
        self._element = bytearray()  # the bytes of the element being read
        self._depth = 0  # open brackets and braces in the element
        self._in_string = False
        self._escaped = False  # the element's last byte was a backslash inside a string
        self._scalar = False  # the element is a number or a literal, ended by a delimiter

    def feed(self, data: bytes) -> list[Any]:
        """Decode ``data`` and return the elements it completed.

        Raises:
          FramingError: the bytes are not a JSON array, or an element outgrew ``max_buffer``.
        """
        elements: list[Any] = []
        pos = 0
        while pos < len(data):
            if self._state == _IN_ELEMENT:
                pos = self._scan_element(data, pos, elements)
                continue
            byte = data[pos : pos + 1]
            pos += 1
            if byte in _WHITESPACE:
                continue
            if self._state == _BEFORE_ARRAY and byte == b"[":
                self._state = _BEFORE_FIRST
            elif self._state in (_BEFORE_FIRST, _AFTER_ELEMENT) and byte == b"]":
                self._state = _DONE
            elif self._state == _AFTER_ELEMENT and byte == b",":
                self._state = _BEFORE_ELEMENT
            elif self._state in (_BEFORE_FIRST, _BEFORE_ELEMENT) and byte not in b",]":
                self._state = _IN_ELEMENT
                self._scalar = byte not in b'{["'
                pos -= 1
            else:
                raise FramingError(f"unexpected {byte!r} in a streamed JSON array ({self._state})")
        return elements

    def close(self) -> list[Any]:
        """End the stream.

        Raises:
          FramingError: the array was not complete.
        """
        if self._state != _DONE:
            raise FramingError(f"the streamed JSON array ended early ({self._state})")
        return []

    def _scan_element(self, data: bytes, pos: int, elements: list[Any]) -> int:
        """Consume element bytes from ``pos``; return where the element's scan stopped."""
        if self._scalar:
            match = _SCALAR_END.search(data, pos)
            end = match.start() if match else len(data)
            self._append(data[pos:end])
            if match:
                self._end_element(elements)
            return end
        while pos < len(data):
            if self._escaped:
                self._escaped = False
                self._append(data[pos : pos + 1])
                pos += 1
                continue
            match = (_STRING if self._in_string else _STRUCTURE).search(data, pos)
            if match is None:
                self._append(data[pos:])
                return len(data)
            end = match.end()
            self._append(data[pos:end])
            pos = end
            byte = match.group()
            if byte == b"\\":
                self._escaped = self._in_string
            elif byte == b'"':
                self._in_string = not self._in_string
                if not self._in_string and self._depth == 0:  # a string element ended
                    self._end_element(elements)
                    return pos
            elif byte in b"[{":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    self._end_element(elements)
                    return pos
        return pos

    def _append(self, data: bytes) -> None:
        self._element += data
        if len(self._element) > self._max_buffer:
            raise FramingError(
                f"a streamed JSON array element grew past {self._max_buffer} bytes without ending"
            )

    def _end_element(self, elements: list[Any]) -> None:
        element, self._element = self._element, bytearray()
        self._state = _AFTER_ELEMENT
        elements.append(loads(bytes(element)))
