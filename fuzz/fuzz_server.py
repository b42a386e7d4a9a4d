"""Fuzz ``mux.server``: whatever bytes a client sends, the server answers valid HTTP/1.1, never
with a 5xx of its own making, logs one access line per request, and finishes.

Inputs are random bytes or mutated valid requests (a seed corpus of GET/POST, chunked,
keep-alive pairs, an OpenAI chat completion, HEAD, HTTP/1.0, ``Expect: 100-continue``), fed to
``Server.handle_connection`` over ``trio.testing.memory_stream_pair()``: whole, split at random
boundaries, or byte at a time, with the odd pause long enough to trip a timeout. Then the
client either closes its sending side at once, closes it once the server has gone quiet, or
holds the connection open until the server's own timeouts close it. A ``MockClock`` with
``autojump_threshold=0`` makes every timeout instant, and a hang a failure.

What the server wrote is parsed with an ``h11.Connection(CLIENT)``; which method each response
answers (HEAD responses have no body) comes from the access log, which doubles as a check that
every response was logged with the status sent.

Run longer by hand::

    python -m fuzz.fuzz_server --examples 20000

or against the real application: ``run(handler_factory=lambda: make_app(...))``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

import attrs
import h11
import hypothesis
import trio
import trio.testing
from hypothesis import HealthCheck
from hypothesis import strategies as st

from mux.server import Handler, HttpRequest, HttpResponse, Limits, Server

__all__ = [
    "SEEDS",
    "Case",
    "cases",
    "check",
    "echo_handler_factory",
    "fuzz_server",
    "make_property",
    "run",
]

#: Small limits so that seeds can cross them; the mock clock makes the timeouts instant.
LIMITS = Limits(
    max_request_size=2048,
    max_header_size=1024,
    header_timeout=1.0,
    body_timeout=1.0,
    keep_alive_timeout=1.0,
    send_timeout=1.0,
    graceful_timeout=1.0,
)
#: Virtual seconds one exchange may take; the worst legitimate case is a few timeouts long.
EXCHANGE_TIMEOUT = 600.0
#: h11 answers an unknown transfer-coding with 501 (RFC 9112 6.1 says SHOULD); that is a
#: deliberate protocol answer, not a server failure.
ALLOWED_5XX = frozenset({501})

_CHAT = json.dumps(
    {"model": "gpt-test", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
).encode()

SEEDS: tuple[bytes, ...] = (
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /v1/models/org%2Fm?alt=sse&key=k HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:8080\r\n"
    b"Content-Type: application/json\r\nAuthorization: Bearer sk-test\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_CHAT), _CHAT),
    b"HEAD /stream HTTP/1.1\r\nHost: h\r\n\r\n"
    b"HEAD / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab",
    b"GET /stream HTTP/1.0\r\n\r\n",
    b"POST /stream HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    # Over the limits: body size by header, body size by chunks, head size; and a CONNECT.
    b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 999999\r\n\r\nxx",
    b"POST /big HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"400\r\n"
    + b"x" * 0x400
    + b"\r\n"
    + b"400\r\n"
    + b"y" * 0x400
    + b"\r\n1\r\nz\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
)

#: Splices that tend to reach interesting parser and server states.
TOKENS: tuple[bytes, ...] = (
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b":",
    b" ",
    b"\t",
    b"\x00",
    b"\xff",
    b"%",
    b"%2",
    b"?",
    b";",
    b"Content-Length: 999999\r\n",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Connection: close\r\n",
    b"Expect: 100-continue\r\n",
    b"Upgrade: h2c\r\nConnection: upgrade\r\n",
    b"HEAD",
    b"CONNECT",
    b"OPTIONS * ",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"fffffff\r\n",
    b"0\r\n\r\n",
    b" folded\r\n",
    b"X" * 1500,
)


@attrs.frozen
class Case:
    """One fuzz exchange: the bytes, how they are cut and paced, and how the client ends."""

    data: bytes
    #: Positions at which ``data`` is split into separate writes.
    cuts: tuple[int, ...]
    #: (chunk index, seconds): sleep that long before sending that chunk.
    pauses: tuple[tuple[int, float], ...]
    #: "eof": close at once; "eof-when-idle": once the server has gone quiet; "hold": never.
    ending: str

    def chunks(self) -> list[bytes]:
        edges = [0, *sorted(set(self.cuts)), len(self.data)]
        return [self.data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """One to three seeds back to back, then a few byte-level mutations."""
    data = bytearray(b"".join(draw(st.lists(st.sampled_from(SEEDS), min_size=1, max_size=3))))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(
            st.sampled_from(
                ["flip", "token", "replace", "bytes", "delete", "duplicate", "truncate"]
            )
        )
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "token":
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif op == "replace":
            data[at : at + draw(st.integers(1, 16))] = draw(st.sampled_from(TOKENS))
        elif op == "bytes":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[at:]
    return bytes(data)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    data = draw(st.one_of(mutated(), st.binary(max_size=300), st.sampled_from(SEEDS)))
    split = draw(st.sampled_from(["whole", "random", "bytewise"]))
    if split == "bytewise" and len(data) <= 200:
        cuts: tuple[int, ...] = tuple(range(1, len(data)))
    elif split == "random" and data:
        cuts = tuple(draw(st.lists(st.integers(1, len(data)), max_size=8)))
    else:
        cuts = ()
    pause = st.tuples(st.integers(0, 300), st.sampled_from([0.3, 1.5, 4.0]))
    pauses = tuple(draw(st.lists(pause, max_size=2)))
    ending = draw(st.sampled_from(["eof", "eof-when-idle", "hold"]))
    return Case(data=data, cuts=cuts, pauses=pauses, ending=ending)


def echo_handler_factory() -> Handler:
    """A handler that answers 200 with the request body (or the path, for an empty one), in
    three chunks under ``/stream``."""

    async def echo(request: HttpRequest) -> HttpResponse:
        body = request.body or request.path.encode()
        if request.path.startswith("/stream"):

            async def pieces() -> AsyncIterator[bytes]:
                for i in range(3):
                    yield body[i::3]
                    await trio.lowlevel.checkpoint()

            return HttpResponse(status=200, body=pieces(), model="echo")
        return HttpResponse(status=200, body=body, model="echo")

    return echo


class _Records(logging.Handler):
    """Collects mux.access lines and mux.server errors during one exchange."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.access: list[tuple[str, int]] = []
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "mux.access":
            method, _path, status, *_ = record.getMessage().split(" ")
            self.access.append((method, int(status)))
        elif record.levelno >= logging.ERROR:
            self.errors.append(self.format(record))


@contextmanager
def _recording() -> Iterator[_Records]:
    records = _Records()
    loggers = [logging.getLogger("mux.access"), logging.getLogger("mux.server")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(records)
        lg.setLevel(logging.INFO)
        lg.propagate = False  # keep thousands of examples out of pytest's log capture
    try:
        yield records
    finally:
        for lg, (level, propagate) in zip(loggers, saved, strict=True):
            lg.removeHandler(records)
            lg.setLevel(level)
            lg.propagate = propagate


async def _exchange(case: Case, handler: Handler) -> bytes:
    """Play ``case`` against a fresh Server; returns all the server wrote."""
    server = Server(handler, limits=LIMITS)
    client, server_end = trio.testing.memory_stream_pair()
    output = bytearray()
    pauses = dict(case.pauses)

    async def send() -> None:
        try:
            for i, chunk in enumerate(case.chunks()):
                if i in pauses:
                    await trio.sleep(pauses[i])
                await client.send_all(chunk)
            if case.ending == "eof-when-idle":
                await trio.testing.wait_all_tasks_blocked()
            if case.ending != "hold":
                await client.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the server has closed the connection: fine, and the end of the input

    with trio.fail_after(EXCHANGE_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            async with trio.open_nursery() as connection:
                # The server runs to its own end (lingering close included), and we read all.
                connection.start_soon(server.handle_connection, server_end)
                while data := await client.receive_some():
                    output += data
            nursery.cancel_scope.cancel()  # a sender still pausing has nobody to talk to
    return bytes(output)


def _responses(output: bytes, methods: list[str]) -> tuple[list[int], bool]:
    """Parse everything the server wrote.

    Returns the status of each response (complete or not) and whether the last one was cut
    short by the end of the connection.

    Raises:
      AssertionError: the output is not a sequence of valid HTTP/1.1 responses.
    """
    parser = h11.Connection(h11.CLIENT)
    parser.receive_data(output)
    statuses: list[int] = []
    while True:
        if statuses:
            if parser.our_state is not h11.DONE or parser.their_state is not h11.DONE:
                # The last response closed the connection: nothing may follow it.
                assert not parser.trailing_data[0], f"bytes after a closing response: {output!r}"
                return statuses, False
            parser.start_next_cycle()
        if not parser.trailing_data[0]:
            return statuses, False
        method = methods[len(statuses)] if len(statuses) < len(methods) else "GET"
        parser.send(h11.Request(method=method, target="/", headers=[("host", "fuzz")]))
        parser.send(h11.EndOfMessage())
        in_response = False
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError as exc:
                if not parser.trailing_data[1]:
                    raise AssertionError(f"invalid HTTP/1.1 from the server: {exc}") from exc
                return statuses, True  # the connection ended mid-response
            if event is h11.NEED_DATA:
                parser.receive_data(b"")  # all the output is in: what is missing never came
            elif isinstance(event, h11.ConnectionClosed):
                assert not in_response
                return statuses, False
            elif isinstance(event, h11.Response):
                statuses.append(event.status_code)
                in_response = True
            elif isinstance(event, h11.EndOfMessage):
                break


#: Status counts over a run, for the command line's summary.
STATUSES: collections.Counter[int | str] = collections.Counter()


def check(case: Case, handler: Handler) -> None:
    """Play one case and assert the server's invariants.

    Raises:
      AssertionError: an invariant does not hold.
      trio.TooSlowError: the exchange did not finish within EXCHANGE_TIMEOUT (virtual) seconds.
    """

    async def guarded(request: HttpRequest) -> HttpResponse:
        # Raising here is a handler bug to the server: a 500 and a logged error, so a failure.
        assert len(request.body) <= LIMITS.max_request_size, "the handler got an oversized body"
        return await handler(request)

    with _recording() as records:
        clock = trio.testing.MockClock(autojump_threshold=0)
        output = trio.run(_exchange, case, guarded, clock=clock)
    assert not records.errors, f"the server logged errors:\n{records.errors[0]}"
    methods = ["GET" if method == "-" else method for method, _ in records.access]
    statuses, truncated = _responses(output, methods)
    STATUSES.update(statuses if statuses else ["no response"])
    for status in statuses:
        assert status < 500 or status in ALLOWED_5XX, f"server answered {status}"
    assert not truncated or case.ending != "hold", "a response was cut short"
    logged = [status for _, status in records.access]
    # One line per request; only the last request may have gone unanswered (client gone).
    assert logged[: len(statuses)] == statuses, (logged, statuses)
    assert len(logged) - len(statuses) in (0, 1), (logged, statuses)


def make_property(handler_factory: Callable[[], Handler] | None = None) -> Callable[[], None]:
    """The fuzz property as a ``@given`` test; a fresh handler per example."""
    factory = handler_factory or echo_handler_factory

    @hypothesis.given(case=cases())
    def fuzz_server(case: Case) -> None:
        check(case, factory())

    return fuzz_server


#: The property with the echo handler, for test runners that collect ``@given`` functions.
fuzz_server = make_property()


def run(
    handler_factory: Callable[[], Handler] | None = None,
    max_examples: int = 1000,
    *,
    settings: hypothesis.settings | None = None,
    seed: int | None = None,
) -> None:
    """Check ``max_examples`` cases against the server with ``handler_factory()``'s handler.

    Args:
      handler_factory: makes the handler under test, once per case; the echo handler if None.
      max_examples: how many cases hypothesis tries.
      settings: parent hypothesis settings (``derandomize=True`` for CI, say).
      seed: replays the run that printed this seed.

    Raises:
      AssertionError (or trio.TooSlowError): the shrunk failing case, as hypothesis reports it.
    """
    prop = make_property(handler_factory)
    if seed is not None:
        prop = hypothesis.seed(seed)(prop)
    hypothesis.settings(
        settings,
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )(prop)()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=5000, help="how many cases (default 5000)")
    parser.add_argument("--seed", type=int, help="hypothesis seed, to replay a run")
    args = parser.parse_args()
    run(max_examples=args.examples, seed=args.seed)
    print(f"ok: {args.examples} examples; statuses: {dict(STATUSES.most_common())}")


if __name__ == "__main__":
    main()
