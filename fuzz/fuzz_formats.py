"""Fuzz the wire formats and the framing decoders: whatever arrives, only mux's errors escape.

Targets and what each must do:

* ``openai_chat.parse_request`` on random JSON values (keys and strings drawn partly from the
  format's own vocabulary, so that random objects reach deep into the parser) and on valid
  requests with random mutations: return a request or raise ``RequestError``. A request it
  returns must render, and survive a round trip as its projection (tests/projections/).
* ``openai_chat.parse_response`` on the same kinds of input: a response or ``UpstreamError``;
  ``parse_error`` on anything: an error, never an exception.
* ``openai_chat.StreamParser`` on random bytes and on rendered streams with bytes flipped,
  dropped or spliced in, split at random points: events or ``UpstreamError``. Events it
  returns must follow the IR grammar and survive a render/parse round trip as their
  projection.
* ``SSEDecoder``, ``NDJSONDecoder`` and ``JSONArrayDecoder`` on the same bytes: messages or
  ``FramingError``, and the same outcome whole as split.

Run longer by hand::

    python -m fuzz.fuzz_formats --examples 50000
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import hypothesis
from hypothesis import strategies as st

from mux import ir
from mux.errors import MuxError, RequestError, UpstreamError
from mux.formats import openai_chat
from mux.framing import FramingError, JSONArrayDecoder, NDJSONDecoder, SSEDecoder, dumps, loads
from tests.projections import openai_chat as chat_projection
from tests import strategies as strats

__all__ = ["TARGETS", "json_bodies", "main", "make_property", "mutated", "run", "stream_bytes"]

# --------------------------------------------------------------------------------------------
# Inputs

#: Words of the OpenAI Chat format, so that random objects hit real fields and values.
VOCABULARY = (
    "model", "messages", "role", "content", "type", "text", "image_url", "url", "detail",
    "input_audio", "data", "format", "file", "file_data", "file_id", "filename", "refusal",
    "tool_calls", "id", "function", "name", "arguments", "tool_call_id", "tools", "parameters",
    "strict", "description", "tool_choice", "response_format", "json_schema", "schema",
    "stream", "stream_options", "include_usage", "stop", "n", "max_tokens", "temperature",
    "reasoning_effort", "reasoning_content", "reasoning", "metadata", "choices", "delta",
    "message", "finish_reason", "usage", "prompt_tokens", "completion_tokens",
    "prompt_tokens_details", "cached_tokens", "index", "error", "code", "cache_control",
    "system", "developer", "user", "assistant", "tool", "none", "auto", "required",
    "json_object", "tool_calls", "length", "content_filter", "data:image/png;base64,AAAA",
    "data:;base64,", "data:text/plain,a%20b",
)  # fmt: skip

_keys = st.sampled_from(VOCABULARY) | st.text(max_size=6)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and infinities too: a server's json.loads accepts them
    st.sampled_from(VOCABULARY),
    st.text(max_size=8),
)


def json_bodies() -> st.SearchStrategy[Any]:
    """Random JSON values, objects keyed mostly by the format's vocabulary."""
    return st.recursive(
        _scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=5)
        ),
        max_leaves=25,
    )


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON value, the root included."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += _paths(child, (*prefix, index))
    return paths


_DELETE = object()  # an edit's result that removes the item


def _replace(value: Any, path: tuple[Any, ...], edit: Callable[[Any], Any]) -> Any:
    """A copy of ``value`` with the item at ``path`` replaced by ``edit(item)``."""
    if not path:
        return edit(value)
    head, rest = path[0], path[1:]
    child = _replace(value[head], rest, edit)
    if isinstance(value, dict):
        copy = {k: v for k, v in value.items() if k != head}
        return copy if child is _DELETE else copy | {head: child}
    return [*value[:head], *([] if child is _DELETE else [child]), *value[head + 1 :]]


def _constant(new: Any) -> Callable[[Any], Any]:
    return lambda _: new


def _with_key(key: str, new: Any) -> Callable[[Any], Any]:
    return lambda value: value | {key: new} if isinstance(value, dict) else value


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> Any:
    """A valid JSON body with a few random edits: values replaced, deleted, wrapped in an
    array, or objects given a random extra key."""
    body = draw(valid)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(_paths(body)))
        action = draw(st.sampled_from(["replace", "delete", "wrap", "add"]))
        if action == "delete" and path:
            edit: Callable[[Any], Any] = _constant(_DELETE)
        elif action == "wrap":
            edit = lambda value: [value]  # noqa: E731 - one edit among its peers
        elif action == "add":
            edit = _with_key(draw(_keys), draw(json_bodies()))
        else:
            edit = _constant(draw(json_bodies()))
        body = _replace(body, path, edit)
    return body


def valid_requests() -> st.SearchStrategy[Any]:
    return strats.requests().map(lambda r: loads(dumps(openai_chat.render_request(r))))


def valid_responses() -> st.SearchStrategy[Any]:
    return strats.responses().map(lambda r: loads(dumps(openai_chat.render_response(r))))


def _render(events: Sequence[ir.Event], include_usage: bool) -> bytes:
    renderer = openai_chat.StreamRenderer(ir.Request(model="m", stream_usage=include_usage))
    return b"".join(renderer.render(e) for e in events)


#: Byte strings that matter to SSE and to Chat chunks, spliced into streams.
_FRAGMENTS = (
    b"\n", b"\r", b"\r\n", b"\n\n", b"data: ", b"data:", b": ping\n", b"event: x\n", b"[DONE]",
    b"{", b"}", b"[", b"]", b",", b'"', b"\\", b'{"error":{"message":"x","code":500}}',
    b'"tool_calls":[{"index":1}]', b'"finish_reason":"stop"', b"\xc3", b"\xff", b"\xef\xbb\xbf",
)  # fmt: skip


@st.composite
def stream_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, or a rendered Chat stream with bytes flipped, dropped or spliced in."""
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        return draw(st.binary(max_size=200))
    data = bytearray(_render(draw(strats.event_streams()), draw(st.booleans())))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(data)))
        action = draw(st.sampled_from(["insert", "delete", "flip"]))
        if action == "insert":
            data[at:at] = draw(st.sampled_from(_FRAGMENTS) | st.binary(min_size=1, max_size=4))
        elif action == "delete":
            del data[at : at + draw(st.integers(min_value=1, max_value=8))]
        elif at < len(data):
            data[at] ^= draw(st.integers(min_value=1, max_value=255))
    return bytes(data)


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at random places, or byte by byte."""
    if draw(st.integers(min_value=0, max_value=7)) == 0:
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# --------------------------------------------------------------------------------------------
# Checks


def _wire(value: Any) -> Any:
    return loads(dumps(value))


def check_request(body: Any) -> None:
    """parse_request: a request or RequestError; a request round-trips as its projection."""
    try:
        request = openai_chat.parse_request(body)
    except RequestError:
        return
    again = openai_chat.parse_request(_wire(openai_chat.render_request(request)))
    assert again == chat_projection.request(request), (body, request)


def check_response(body: Any) -> None:
    """parse_response: a response or UpstreamError; a response round-trips as its projection;
    parse_error never raises."""
    assert isinstance(openai_chat.parse_error(502, body), MuxError)
    try:
        response = openai_chat.parse_response(body)
    except UpstreamError as error:
        assert error.kind is ir.ErrorKind.UPSTREAM
        return
    again = openai_chat.parse_response(_wire(openai_chat.render_response(response)))
    if response.created is None:
        again = attrs.evolve(again, created=None)
    assert again == chat_projection.response(response), (body, response)


def _parse_stream(pieces: Sequence[bytes]) -> list[ir.Event]:
    parser = openai_chat.StreamParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    return events + parser.close()


def check_stream(pieces: Sequence[bytes], include_usage: bool) -> None:
    """StreamParser: grammatical events or UpstreamError; its events round-trip as their
    projection."""
    try:
        events = _parse_stream(pieces)
    except UpstreamError as error:
        assert error.kind is ir.ErrorKind.UPSTREAM
        return
    strats.check_stream(events)
    request = ir.Request(model="m", stream=True, stream_usage=include_usage)
    again = _parse_stream([_render(events, include_usage)])
    start, first = events[0], again[0]
    if isinstance(start, ir.StreamStart) and isinstance(first, ir.StreamStart):
        again[0] = attrs.evolve(first, created=start.created)  # the clock's, if start had none
    assert again == chat_projection.events(events, request), events


def _decode(make: Callable[[], Any], pieces: Sequence[bytes]) -> object:
    decoder = make()
    try:
        return [m for piece in pieces for m in decoder.feed(piece)] + decoder.close()
    except FramingError:
        return FramingError


def check_decoders(pieces: Sequence[bytes]) -> None:
    """Each decoder: messages or FramingError, the same whole as split."""
    whole = [b"".join(pieces)]
    for make in (SSEDecoder, NDJSONDecoder, JSONArrayDecoder):
        assert _decode(make, pieces) == _decode(make, whole), make.__name__


# --------------------------------------------------------------------------------------------
# Properties


def _stream_case(data: st.DataObject, raw: bytes, include_usage: bool) -> None:
    check_stream(data.draw(splits(raw)), include_usage)


def _decoders_case(data: st.DataObject, raw: bytes) -> None:
    check_decoders(data.draw(splits(raw)))


_decoder_input = stream_bytes() | strats.json_values().map(lambda v: dumps([v, v]))

#: Each target: its check, and the strategy of its arguments.
TARGETS: dict[str, tuple[Callable[..., None], st.SearchStrategy[tuple[Any, ...]]]] = {
    "parse_request": (check_request, st.tuples(json_bodies() | mutated(valid_requests()))),
    "parse_response": (check_response, st.tuples(json_bodies() | mutated(valid_responses()))),
    "stream_parser": (_stream_case, st.tuples(st.data(), stream_bytes(), st.booleans())),
    "decoders": (_decoders_case, st.tuples(st.data(), _decoder_input)),
}


def make_property(target: str) -> Callable[[], None]:
    """A fresh hypothesis property for ``target`` (a name in :data:`TARGETS`)."""
    check, arguments = TARGETS[target]

    @hypothesis.given(arguments)
    def prop(args: tuple[Any, ...]) -> None:
        check(*args)

    prop.__name__ = prop.__qualname__ = f"fuzz_{target}"
    return prop


def run(
    max_examples: int = 1000,
    *,
    targets: Sequence[str] = tuple(TARGETS),
    settings: hypothesis.settings | None = None,
    seed: int | None = None,
) -> None:
    """Check ``max_examples`` cases against each of ``targets``.

    Raises:
      AssertionError (or the exception that escaped): the shrunk failing case.
    """
    base = hypothesis.settings(
        settings,
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[
            hypothesis.HealthCheck.too_slow,
            hypothesis.HealthCheck.data_too_large,
        ],
    )
    for target in targets:
        prop = make_property(target)
        if seed is not None:
            prop = hypothesis.seed(seed)(prop)
        base(prop)()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=5000, help="cases per target (5000)")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), help="repeatable")
    parser.add_argument("--seed", type=int, help="hypothesis seed, to replay a run")
    args = parser.parse_args()
    for target in args.target or TARGETS:
        run(args.examples, targets=[target], seed=args.seed)
        print(f"ok: {target}, {args.examples} examples")


if __name__ == "__main__":
    main()
