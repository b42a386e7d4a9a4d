"""Cross-format pair properties: every client format F against every upstream format G.

For a format F, ``hop_F(v)`` is ``v`` rendered by F and read back by F:
``F.parse_request(wire(F.render_request(v)))`` for requests,
``F.parse_response(wire(F.render_response(v)))`` for responses, and for streams F's
``StreamRenderer`` bytes, split at random boundaries, fed to F's ``StreamParser``. ``p_F`` is
F's projection (tests/projections/F.py). The law checked, for every ordered pair (F, G)::

    hop_F(hop_G(hop_F(x))) == p_F(p_G(p_F(x)))

that is: a client request in F (``hop_F(x) = p_F(x)``, what mux reads of what an F client
sent) goes through the IR to an upstream speaking G (``hop_G``: what G's API understands),
and back into F; responses and streams take the same three hops. It is checked hop by hop
-- each hop must give its format's projection **of the value it was actually fed** (the
previous translator's output, which no single-format test ever generates) -- and then as a
whole. Streams are also checked against the IR stream grammar after every hop.

The first hop is the client's. ``x`` stands for what a client of F says, so it is rendered
as a request of F's own origin (``x.origin`` set to F: some formats write fields only for
their own requests, Gemini its signatures); and as the routes do, mux keeps the body the
client sent as the parsed request's ``origin`` (:class:`ir.Origin`). Both happen on the hop
and on the projection alike.

A request whose conversation has vanished on the way (a lone empty system message, which
Anthropic, Gemini and Responses drop) is left out: Chat's parser rightly rejects an empty
``messages``, and no provider would answer it.

What is left out is the provider's own doing, not a format's: before rendering for an
upstream, ``mux/providers/api.py`` sets ``stream`` and ``stream_usage`` to how it will
call the upstream, and forwards a same-format client's body as it came (``origin``).

Two things are normalised, as the translators really do them:

* A format that carries a request's model and stream flag in its URL (Gemini:
  ``parse_request`` gives ``model=""`` and ``stream=False``) has them evolved in from the
  value it rendered, on the hop and on the projection alike, as the routes do.
* ``created`` (responses, StreamStart) is filled from the clock when the IR has none; where
  the expected value has None, the clock's value is cleared before comparing.

Examples: the profile's (60 under the default ``ci`` profile; all 75 properties take about
35 s on one core). A pair whose format has not landed yet is skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mux import ir
from tests import strategies as strats
from tests.strategies import splits, wire

FORMATS = ("openai_chat", "openai_responses", "anthropic", "gemini", "ollama")
PAIRS = list(itertools.product(FORMATS, FORMATS))
PAIR_IDS = [f"{f}-to-{g}" for f, g in PAIRS]

#: Request fields a format carries in its URL, not its body (see the module docstring).
FROM_URL = {"gemini": ("model", "stream")}

pair_settings = settings(deadline=None)  # examples: the profile's (conftest)


# --------------------------------------------------------------------------------------------
# Hops


@attrs.frozen
class Format:
    """A format's translators and its projection."""

    name: str
    module: ModuleType
    projection: ModuleType


def load(name: str) -> Format:
    """The format ``name``, with its projection module."""
    return Format(
        name=name,
        module=importlib.import_module(f"mux.formats.{name}"),
        projection=importlib.import_module(f"tests.projections.{name}"),
    )


def from_url(fmt: Format, parsed: ir.Request, sent: ir.Request) -> ir.Request:
    """``parsed`` with what ``fmt``'s URL carries taken from ``sent``."""
    fields = {name: getattr(sent, name) for name in FROM_URL.get(fmt.name, ())}
    return attrs.evolve(parsed, **fields) if fields else parsed


def request_hop(fmt: Format, request: ir.Request) -> ir.Request:
    parsed = fmt.module.parse_request(wire(fmt.module.render_request(request)))
    return from_url(fmt, parsed, request)


def request_projection(fmt: Format, request: ir.Request) -> ir.Request:
    return from_url(fmt, fmt.projection.request(request), request)


def own(fmt: Format, request: ir.Request) -> ir.Request:
    """``request`` as a client of ``fmt`` says it: of ``fmt``'s own origin."""
    return attrs.evolve(request, origin=ir.Origin(format=fmt.module.NAME, body={}))


def with_origin(fmt: Format, parsed: ir.Request, sent: ir.Request) -> ir.Request:
    """``parsed`` with the body a client of ``fmt`` sent for ``sent`` as its origin."""
    body = wire(fmt.module.render_request(own(fmt, sent)))
    return attrs.evolve(parsed, origin=ir.Origin(format=fmt.module.NAME, body=body))


def client_request_hop(fmt: Format, request: ir.Request) -> ir.Request:
    return with_origin(fmt, request_hop(fmt, own(fmt, request)), request)


def client_request_projection(fmt: Format, request: ir.Request) -> ir.Request:
    return with_origin(fmt, request_projection(fmt, own(fmt, request)), request)


def response_hop(fmt: Format, response: ir.Response) -> ir.Response:
    parsed: ir.Response = fmt.module.parse_response(wire(fmt.module.render_response(response)))
    return parsed


def stream_hop(
    fmt: Format, events: Sequence[ir.Event], request: ir.Request, data: st.DataObject
) -> list[ir.Event]:
    renderer = fmt.module.StreamRenderer(request)
    raw = b"".join(renderer.render(event) for event in events)
    parser = fmt.module.StreamParser()
    out = [
        e
        for piece in data.draw(splits(raw), label=f"{fmt.name} pieces")
        for e in parser.feed(piece)
    ]
    return out + parser.close()


def settle(actual: Any, expected: Any) -> Any:
    """``actual`` with a clock-filled ``created`` cleared where ``expected`` has None."""
    if isinstance(actual, ir.Response) and isinstance(expected, ir.Response):
        if expected.created is None and actual.created is not None:
            return attrs.evolve(actual, created=None)
    if isinstance(actual, list) and isinstance(expected, list) and actual and expected:
        start, want = actual[0], expected[0]
        if isinstance(start, ir.StreamStart) and isinstance(want, ir.StreamStart):
            if want.created is None and start.created is not None:
                return [attrs.evolve(start, created=None), *actual[1:]]
    return actual


def difference(actual: Any, expected: Any, path: str = "") -> str:
    """The first place where two IR values differ, as ``path: actual != expected``."""
    if type(actual) is not type(expected):
        return f"{path or 'value'}: {actual!r} != {expected!r}"
    if attrs.has(type(actual)):
        for field in attrs.fields(type(actual)):
            a, e = getattr(actual, field.name), getattr(expected, field.name)
            if a != e:
                return difference(a, e, f"{path}.{field.name}" if path else field.name)
    if isinstance(actual, list | tuple):
        for index, (a, e) in enumerate(zip(actual, expected, strict=False)):
            if a != e:
                return difference(a, e, f"{path}[{index}]")
        if len(actual) != len(expected):
            return f"{path}: {len(actual)} items != {len(expected)}"
    return f"{path or 'value'}: {actual!r} != {expected!r}"


def check_hops(
    kind: str,
    pair: tuple[Format, Format],
    x: Any,
    hop: Callable[[Format, Any], Any],
    project: Callable[[Format, Any], Any],
    client_hop: tuple[Callable[[Format, Any], Any], Callable[[Format, Any], Any]] | None = None,
) -> None:
    """The law of the module docstring: hop by hop, then as a whole. ``client_hop``, when
    given, is the (hop, projection) of the first hop, the client's."""
    client, upstream = pair
    value, composed = x, x
    for step, fmt in enumerate((client, upstream, client), start=1):
        if isinstance(value, ir.Request):
            # A conversation can vanish (one empty system message: Anthropic, Gemini and
            # Responses drop empty text), and Chat cannot say an empty one: no format's API
            # takes it anyway, so such a request is outside the law.
            assume(value.messages)
        step_hop, step_project = client_hop if client_hop and step == 1 else (hop, project)
        expected = step_project(fmt, value)
        after = settle(step_hop(fmt, value), expected)
        assert after == expected, (
            f"{client.name}->{upstream.name} {kind}, hop {step} ({fmt.name}): "
            f"parse(render(v)) is not the {fmt.name} projection of v: "
            f"{difference(after, expected)}\nv = {value!r}"
        )
        value, composed = after, step_project(fmt, composed)
    assert settle(value, composed) == composed, (
        f"{client.name}->{upstream.name} {kind}: the three hops are not the composed "
        f"projections: {difference(settle(value, composed), composed)}"
    )


# --------------------------------------------------------------------------------------------
# Properties


@pytest.mark.parametrize(("client", "upstream"), PAIRS, ids=PAIR_IDS)
def test_request_pair(client: str, upstream: str) -> None:
    """hop_F(hop_G(hop_F(x))) == p_F(p_G(p_F(x))) for requests (see the module docstring)."""
    pair = (load(client), load(upstream))

    @pair_settings
    @given(strats.requests())
    def prop(x: ir.Request) -> None:
        check_hops(
            "request",
            pair,
            x,
            request_hop,
            request_projection,
            client_hop=(client_request_hop, client_request_projection),
        )

    prop()


@pytest.mark.parametrize(("client", "upstream"), PAIRS, ids=PAIR_IDS)
def test_response_pair(client: str, upstream: str) -> None:
    """hop_F(hop_G(hop_F(x))) == p_F(p_G(p_F(x))) for responses."""
    pair = (load(client), load(upstream))

    @pair_settings
    @given(strats.responses())
    def prop(x: ir.Response) -> None:
        check_hops("response", pair, x, response_hop, lambda f, r: f.projection.response(r))

    prop()


@pytest.mark.parametrize(("client", "upstream"), PAIRS, ids=PAIR_IDS)
def test_stream_pair(client: str, upstream: str) -> None:
    """hop_F(hop_G(hop_F(x))) == p_F(p_G(p_F(x))) for event streams, bytes split at random
    boundaries on every hop; every hop's events follow the IR grammar."""
    pair = (load(client), load(upstream))

    @pair_settings
    @given(strats.event_streams(), st.booleans(), st.data())
    def prop(x: list[ir.Event], include_usage: bool, data: st.DataObject) -> None:
        request = ir.Request(model="m", stream=True, stream_usage=include_usage)

        def hop(fmt: Format, events: list[ir.Event]) -> list[ir.Event]:
            out = stream_hop(fmt, events, request, data)
            strats.check_stream(out)
            return out

        def project(fmt: Format, events: list[ir.Event]) -> list[ir.Event]:
            return list(fmt.projection.events(events, request))

        check_hops("stream", pair, x, hop, project)

    prop()


def test_law_detects_a_lossy_hop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not vacuous: a translator that loses what its projection says it keeps fails the law
    on the hop that lost it."""
    chat = load("openai_chat")
    render = chat.module.render_request

    def lossy(request: ir.Request) -> dict[str, Any]:
        body = render(request)
        body.pop("temperature", None)
        return body

    monkeypatch.setattr(chat.module, "render_request", lossy)
    x = ir.Request(model="m", messages=[ir.Message(role=ir.Role.USER)], temperature=0.5)

    @settings(database=None)
    @given(st.just(x))
    def prop(x: ir.Request) -> None:
        check_hops("request", (chat, chat), x, request_hop, request_projection)

    with pytest.raises(AssertionError, match=r"hop 1 \(openai_chat\).*temperature"):
        prop()
