"""Fuzz the wire formats and the framing decoders: whatever arrives, only mux's errors escape.

Every format of :data:`FORMATS` whose module and projection exist gets three targets, named
``<format>.<target>``:

* ``<format>.parse_request`` on random JSON values (keys and strings drawn partly from a
  vocabulary merged from every format's field names, so that random objects reach deep into
  the parser) and on the format's valid requests with random mutations: return a request or
  raise ``RequestError``. A request it returns must render, and survive a round trip as its
  projection (tests/projections/).
* ``<format>.parse_response`` on the same kinds of input: a response or ``UpstreamError``;
  ``parse_error`` on anything: an error, never an exception.
* ``<format>.stream_parser`` on random bytes and on the format's rendered streams with bytes
  flipped, dropped or spliced in (among them lines of every format's streams), split at
  random points: events or ``UpstreamError``. Events it returns must follow the IR grammar
  and survive a render/parse round trip as their projection.

and one more, ``decoders``: ``SSEDecoder``, ``NDJSONDecoder`` and ``JSONArrayDecoder`` on the
same bytes: messages or ``FramingError``, and the same outcome whole as split.

A format that carries a request's model and stream flag in its URL (Gemini) has them filled
in from the parsed request before the round trip is compared, as the routes do.

Run longer by hand::

    python -m fuzz.fuzz_formats --examples 50000
    python -m fuzz.fuzz_formats --target gemini.stream_parser --examples 20000
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

import attrs
import hypothesis
from hypothesis import strategies as st

from mux import fidelity, ir
from mux.errors import MuxError, RequestError, UpstreamError
from mux.framing import FramingError, JSONArrayDecoder, NDJSONDecoder, SSEDecoder, dumps, loads
from tests import strategies as strats
from tests.strategies import splits, wire

__all__ = [
    "FORMATS",
    "TARGETS",
    "VOCABULARY",
    "json_bodies",
    "main",
    "make_property",
    "mutated",
    "run",
    "stream_bytes",
]

#: The formats fuzzed: every one whose module and projection exist.
FORMATS = tuple(
    name
    for name in fidelity.FORMATS
    if importlib.util.find_spec(f"mux.formats.{name}") is not None
    and importlib.util.find_spec(f"tests.projections.{name}") is not None
)

#: Request fields a format carries in its URL, not its body.
_FROM_URL = {"gemini": ("model", "stream")}


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"mux.formats.{name}")


def _projection(name: str) -> ModuleType:
    return importlib.import_module(f"tests.projections.{name}")


# --------------------------------------------------------------------------------------------
# Inputs

#: Words of the OpenAI Chat format, written out; every format's own words are harvested
#: below from what it renders.
_CHAT_WORDS = (
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


def _words(value: Any) -> Iterator[str]:
    """The keys of a JSON value and its short strings: a format's vocabulary."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield from item
            stack += item.values()
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, str) and len(item) <= 40:
            yield item


def _stream_lines(data: bytes) -> list[bytes]:
    return [line + b"\n" for line in data.split(b"\n") if line.strip()]


def _rendered(name: str) -> tuple[list[Any], list[bytes]]:
    """What format ``name`` renders of the fidelity samples: JSON bodies, stream lines."""
    module, bodies, lines = _module(name), [], []
    for feature in fidelity.FEATURES:
        for sample in feature.samples:
            try:
                if feature.kind == "request":
                    bodies.append(module.render_request(sample))
                elif feature.kind == "response":
                    bodies.append(module.render_response(sample))
                else:
                    renderer = module.StreamRenderer(fidelity.STREAM_REQUEST)
                    lines += _stream_lines(b"".join(renderer.render(e) for e in sample))
            except Exception:  # noqa: S112 - a vocabulary, not a test: fidelity tests renders
                continue
    return bodies, lines


_RENDERED = {name: _rendered(name) for name in FORMATS}

#: Words of every format, so that random objects hit real fields and values.
VOCABULARY = tuple(
    sorted(
        set(_CHAT_WORDS)
        | {w for bodies, _ in _RENDERED.values() for body in bodies for w in _words(body)}
    )
)

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


def valid_requests(name: str) -> st.SearchStrategy[Any]:
    """Requests as format ``name`` renders them, as JSON."""
    module = _module(name)
    return strats.requests().map(lambda r: loads(dumps(module.render_request(r))))


def valid_responses(name: str) -> st.SearchStrategy[Any]:
    module = _module(name)
    return strats.responses().map(lambda r: loads(dumps(module.render_response(r))))


def _stream_request(include_usage: bool) -> ir.Request:
    return ir.Request(model="m", stream=True, stream_usage=include_usage)


def _render(name: str, events: Sequence[ir.Event], include_usage: bool) -> bytes:
    renderer = _module(name).StreamRenderer(_stream_request(include_usage))
    return b"".join(renderer.render(e) for e in events)


#: Byte strings that matter to the framings and the formats' chunks, spliced into streams;
#: lines of every format's rendered streams join them.
_FRAGMENTS = (
    b"\n", b"\r", b"\r\n", b"\n\n", b"data: ", b"data:", b": ping\n", b"event: x\n", b"[DONE]",
    b"{", b"}", b"[", b"]", b",", b'"', b"\\", b'{"error":{"message":"x","code":500}}',
    b'{"error":"x"}\n', b'"tool_calls":[{"index":1}]', b'"finish_reason":"stop"', b'"done":true',
    b"\xc3", b"\xff", b"\xef\xbb\xbf",
)  # fmt: skip
_LINES = tuple(line for _, lines in _RENDERED.values() for line in lines)
_SPLICES = st.sampled_from(_FRAGMENTS) | st.binary(min_size=1, max_size=4)
if _LINES:
    _SPLICES |= st.sampled_from(_LINES)


@st.composite
def stream_bytes(draw: st.DrawFn, name: str = "openai_chat") -> bytes:
    """Random bytes, or a stream rendered by format ``name`` with bytes flipped, dropped or
    spliced in."""
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        return draw(st.binary(max_size=200))
    data = bytearray(_render(name, draw(strats.event_streams()), draw(st.booleans())))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        at = draw(st.integers(min_value=0, max_value=len(data)))
        action = draw(st.sampled_from(["insert", "delete", "flip"]))
        if action == "insert":
            data[at:at] = draw(_SPLICES)
        elif action == "delete":
            del data[at : at + draw(st.integers(min_value=1, max_value=8))]
        elif at < len(data):
            data[at] ^= draw(st.integers(min_value=1, max_value=255))
    return bytes(data)


# --------------------------------------------------------------------------------------------
# Checks


def _from_url(name: str, parsed: ir.Request, sent: ir.Request) -> ir.Request:
    fields = {f: getattr(sent, f) for f in _FROM_URL.get(name, ())}
    return attrs.evolve(parsed, **fields) if fields else parsed


def check_request(name: str, body: Any) -> None:
    """parse_request: a request or RequestError; a request round-trips as its projection."""
    module = _module(name)
    try:
        request = module.parse_request(body)
    except RequestError:
        return
    again = _from_url(name, module.parse_request(wire(module.render_request(request))), request)
    expected = _from_url(name, _projection(name).request(request), request)
    assert again == expected, (body, request)


def check_response(name: str, body: Any) -> None:
    """parse_response: a response or UpstreamError; a response round-trips as its projection;
    parse_error never raises."""
    module = _module(name)
    assert isinstance(module.parse_error(502, body), MuxError)
    try:
        response = module.parse_response(body)
    except UpstreamError as error:
        assert error.kind is ir.ErrorKind.UPSTREAM
        return
    again = module.parse_response(wire(module.render_response(response)))
    expected = _projection(name).response(response)
    if expected.created is None and again.created is not None:
        again = attrs.evolve(again, created=None)  # the clock's
    assert again == expected, (body, response)


def _parse_stream(name: str, pieces: Sequence[bytes]) -> list[ir.Event]:
    parser = _module(name).StreamParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    return events + parser.close()


def check_stream(name: str, pieces: Sequence[bytes], include_usage: bool) -> None:
    """StreamParser: grammatical events or UpstreamError; its events round-trip as their
    projection."""
    try:
        events = _parse_stream(name, pieces)
    except UpstreamError as error:
        assert error.kind is ir.ErrorKind.UPSTREAM
        return
    strats.check_stream(events)
    again = _parse_stream(name, [_render(name, events, include_usage)])
    expected = _projection(name).events(events, _stream_request(include_usage))
    start, first = expected[0] if expected else None, again[0] if again else None
    if isinstance(start, ir.StreamStart) and isinstance(first, ir.StreamStart):
        if start.created is None:
            again[0] = attrs.evolve(first, created=None)  # the clock's
    assert again == expected, events


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


def _stream_case(name: str, data: st.DataObject, raw: bytes, include_usage: bool) -> None:
    check_stream(name, data.draw(splits(raw)), include_usage)


def _decoders_case(data: st.DataObject, raw: bytes) -> None:
    check_decoders(data.draw(splits(raw)))


_decoder_input = stream_bytes() | strats.json_values().map(lambda v: dumps([v, v]))

Target = tuple[Callable[..., None], st.SearchStrategy[tuple[Any, ...]]]


def _targets(name: str) -> dict[str, Target]:
    """The three targets of format ``name``: each check, and the strategy of its arguments."""
    requests = json_bodies() | mutated(valid_requests(name))
    responses = json_bodies() | mutated(valid_responses(name))
    return {
        f"{name}.parse_request": (check_request, st.tuples(st.just(name), requests)),
        f"{name}.parse_response": (check_response, st.tuples(st.just(name), responses)),
        f"{name}.stream_parser": (
            _stream_case,
            st.tuples(st.just(name), st.data(), stream_bytes(name), st.booleans()),
        ),
    }


#: Each target: its check, and the strategy of its arguments.
TARGETS: dict[str, Target] = {
    **{target: case for name in FORMATS for target, case in _targets(name).items()},
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
