"""mux.framing: JSON, SSE, NDJSON and JSON-array framing, whatever the byte splits."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mux.framing import (
    FramingError,
    JSONArrayDecoder,
    NDJSONDecoder,
    SSEDecoder,
    SSEMessage,
    dumps,
    loads,
    ndjson,
    sse,
)
from tests.strategies import json_values
from tests.strategies import splits

fast = settings(deadline=None)  # examples: the profile's (conftest)


class _Decoder(Protocol):
    def feed(self, data: bytes) -> list[Any]: ...
    def close(self) -> list[Any]: ...


def decode_all(decoder: _Decoder, pieces: Sequence[bytes]) -> list[Any]:
    out: list[Any] = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out + decoder.close()


# --------------------------------------------------------------------------------------------
# JSON


def test_dumps_is_compact_utf8() -> None:
    """One encoder: no spaces, non-ASCII kept as UTF-8."""
    assert dumps({"a": [1, "é"], "b": None}) == '{"a":[1,"é"],"b":null}'.encode()


def test_dumps_rejects_nan() -> None:
    """JSON has no NaN; the encoder refuses rather than emit invalid JSON."""
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps({"x": float("nan")})


@pytest.mark.parametrize("text", [b"NaN", b"[Infinity]", b"{", b"\xff", b"[" * 100_000])
def test_loads_rejects_what_json_does_not_allow(text: bytes) -> None:
    """Invalid JSON, NaN, invalid UTF-8 and absurd nesting are all FramingErrors."""
    with pytest.raises(FramingError):
        loads(text)


@fast
@given(json_values())
def test_loads_inverts_dumps(value: Any) -> None:
    """loads(dumps(x)) == x for any JSON value."""
    assert loads(dumps(value)) == value


# --------------------------------------------------------------------------------------------
# SSE

events = st.none() | st.text(
    st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=8
)


@fast
@given(st.lists(st.tuples(events, st.text(max_size=20)), max_size=5), st.data())
def test_sse_round_trip_whatever_the_split(
    messages: list[tuple[str | None, str]], data: st.DataObject
) -> None:
    """sse() then SSEDecoder gives the messages back (line breaks normalised to LF)."""
    wire = b"".join(sse(text, event) for event, text in messages)
    decoded = decode_all(SSEDecoder(), data.draw(splits(wire)))
    expected = [SSEMessage(event=event, data=_lf(text)) for event, text in messages]
    assert decoded == expected


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


@fast
@given(
    st.lists(
        st.lists(
            st.text(
                st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=6
            ),
            min_size=1,
            max_size=3,
        ),
        max_size=4,
    ),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.booleans(),
    st.data(),
)
def test_sse_decoder_handles_every_line_ending(
    messages: list[list[str]], eol: str, bom: bool, data: st.DataObject
) -> None:
    """LF, CRLF or CR line endings, comments and a BOM: the same events, whatever the split."""
    lines = ["\ufeff" if bom else ""]
    for data_lines in messages:
        lines += [": keep-alive", *(f"data: {line}" for line in data_lines), "id: 7", ""]
    wire = eol.join(lines).encode()
    decoded = decode_all(SSEDecoder(), data.draw(splits(wire)))
    assert decoded == [SSEMessage(event=None, data="\n".join(m)) for m in messages]


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        # The WHATWG spec's own examples.
        (b"data: YHOO\ndata: +2\ndata: 10\n\n", [SSEMessage(None, "YHOO\n+2\n10")]),
        (b": test stream\n\ndata: first event\nid: 1\n\n", [SSEMessage(None, "first event")]),
        (
            b"data\n\ndata\ndata\n\ndata:\n",
            [SSEMessage(None, ""), SSEMessage(None, "\n"), SSEMessage(None, "")],
        ),
        (b"data:test\n\ndata: test\n\n", [SSEMessage(None, "test"), SSEMessage(None, "test")]),
        # One space after the colon is stripped, not two.
        (b"data:  two\n\n", [SSEMessage(None, " two")]),
        # An event with no data line is not dispatched, and its name does not leak.
        (b"event: ping\n\ndata: x\n\n", [SSEMessage(None, "x")]),
        (b"event: a\ndata: 1\n\n", [SSEMessage("a", "1")]),
        # Unknown fields are ignored.
        (b"retry: 10\nfoo: bar\ndata: x\n\n", [SSEMessage(None, "x")]),
        # close() dispatches an unterminated last event (a deliberate leniency).
        (b"data: [DONE]", [SSEMessage(None, "[DONE]")]),
        (b"data: [DONE]\n", [SSEMessage(None, "[DONE]")]),
    ],
)
def test_sse_decoder_cases(wire: bytes, expected: list[SSEMessage]) -> None:
    """Spec cases, fed whole and byte by byte."""
    assert decode_all(SSEDecoder(), [wire]) == expected
    assert decode_all(SSEDecoder(), [wire[i : i + 1] for i in range(len(wire))]) == expected


def test_sse_decoder_splits_inside_utf8_and_crlf() -> None:
    """A CR at the end of one feed and its LF at the start of the next make one line end."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: \xc3") == []
    assert decoder.feed(b"\xa9\r") == []
    assert decoder.feed(b"\n\r") == [SSEMessage(None, "é")]
    assert decoder.feed(b"\ndata: x\r\n\r\n") == [SSEMessage(None, "x")]


def test_sse_encodes_multiline_data_and_event() -> None:
    assert sse("a\nb", event="e") == b"event: e\ndata: a\ndata: b\n\n"
    assert sse(b'{"x":1}') == b'data: {"x":1}\n\n'
    with pytest.raises(ValueError, match="line break"):
        sse("x", event="a\nb")


@pytest.mark.parametrize("wire", [b"data: " + b"x" * 100, b"data: xx\n" * 40, b"x" * 101])
def test_sse_decoder_bounds_its_buffer(wire: bytes) -> None:
    """An event that never ends cannot make the decoder buffer without bound."""
    with pytest.raises(FramingError):
        SSEDecoder(max_buffer=64).feed(wire)


# --------------------------------------------------------------------------------------------
# NDJSON


@fast
@given(st.lists(json_values(), max_size=5), st.sampled_from([b"\n", b"\r\n"]), st.data())
def test_ndjson_round_trip_whatever_the_split(
    values: list[Any], eol: bytes, data: st.DataObject
) -> None:
    """ndjson() lines (LF or CRLF, blank lines between) decode back, whatever the split."""
    wire = b"\n".join(ndjson(v).rstrip(b"\n") + eol for v in values)
    assert decode_all(NDJSONDecoder(), data.draw(splits(wire))) == values


def test_ndjson_decodes_a_last_line_without_break() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a":1}\n\n{"b"') == [{"a": 1}]
    assert decoder.feed(b":2}") == []
    assert decoder.close() == [{"b": 2}]


@pytest.mark.parametrize("wire", [b"{]\n", b'{"a":1}\nnot json\n', b"NaN\n"])
def test_ndjson_rejects_invalid_lines(wire: bytes) -> None:
    with pytest.raises(FramingError):
        decode_all(NDJSONDecoder(), [wire])


def test_ndjson_bounds_its_buffer() -> None:
    with pytest.raises(FramingError):
        NDJSONDecoder(max_buffer=16).feed(b'{"a":"' + b"x" * 32)


# --------------------------------------------------------------------------------------------
# JSON arrays

layouts: list[Callable[[list[Any]], bytes]] = [
    lambda values: dumps(values),
    lambda values: json.dumps(values, indent=2).encode(),
    # Gemini's own layout: elements separated by "\r\n,".
    lambda values: b"[" + b"\r\n,".join(dumps(v) for v in values) + b"]",
]


@fast
@given(st.lists(json_values(), max_size=5), st.sampled_from(layouts), st.data())
def test_json_array_round_trip_whatever_the_split(
    values: list[Any], layout: Callable[[list[Any]], bytes], data: st.DataObject
) -> None:
    """Each element comes out as soon as it is complete; all of them, whatever the split."""
    assert decode_all(JSONArrayDecoder(), data.draw(splits(layout(values)))) == values


def test_json_array_yields_elements_as_they_complete() -> None:
    decoder = JSONArrayDecoder()
    assert decoder.feed(b'[{"a":"]}\\"') == []
    assert decoder.feed(b'"}, 12') == [{"a": ']}"'}]
    assert decoder.feed(b" ") == [12]
    assert decoder.feed(b',"x"]  ') == ["x"]
    assert decoder.close() == []


@pytest.mark.parametrize(
    "wire", [b"", b"{}", b"[1,]", b"[,1]", b"[1 2]", b"[1] x", b"[{]", b"[1", b'["a', b"[tru]"]
)
def test_json_array_rejects_what_is_not_an_array(wire: bytes) -> None:
    """Malformed or truncated arrays are FramingErrors, at feed or at close."""
    with pytest.raises(FramingError):
        decode_all(JSONArrayDecoder(), [wire])


def test_json_array_bounds_its_buffer() -> None:
    with pytest.raises(FramingError):
        JSONArrayDecoder(max_buffer=16).feed(b'[{"a":"' + b"x" * 32)
