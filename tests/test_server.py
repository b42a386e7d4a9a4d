"""mux.server over a real loopback socket: a Server on port 0, driven by raw bytes and read back
with an h11 client state machine. Limits are tiny so that every timeout fires in well under a
second; every test runs under ``fail_after`` so that a hang is a failure, not a stuck suite."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs
import h11
import pytest
import trio
import trio.testing

from mux.server import HttpRequest, HttpResponse, Limits, Server

FAST = Limits(
    max_request_size=1024,
    max_header_size=2048,
    header_timeout=0.3,
    body_timeout=0.3,
    keep_alive_timeout=0.3,
    send_timeout=1.0,
    graceful_timeout=0.5,
)
#: Upper bound for any single test step.
STEP = 5.0


@attrs.define
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class Client:
    """Raw bytes out; responses parsed by an h11 CLIENT that is told which method each answers."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def event(self) -> h11.Event:
        while True:
            event = self.h11.next_event()
            if isinstance(event, h11.Event):
                return event
            self.h11.receive_data(await self.stream.receive_some(65536))

    async def head(self, method: str = "GET") -> h11.Response:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        # The bytes already went out raw; this only tells the parser what it answers.
        self.h11.send(h11.Request(method=method, target="/", headers=[("host", "t")]))
        self.h11.send(h11.EndOfMessage())
        while isinstance(event := await self.event(), h11.InformationalResponse):
            pass
        assert isinstance(event, h11.Response), event
        return event

    async def reply(self, method: str = "GET") -> Reply:
        head = await self.head(method)
        chunks = []
        while not isinstance(event := await self.event(), h11.EndOfMessage):
            assert isinstance(event, h11.Data), event
            chunks.append(bytes(event.data))
        headers = {k.decode(): v.decode() for k, v in head.headers}
        return Reply(head.status_code, headers, b"".join(chunks))

    async def wait_closed(self) -> None:
        """Return once the server has closed the connection (EOF or reset; leftovers ignored)."""
        try:
            while await self.stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass


def get(path: str = "/", *extra: str) -> bytes:
    return "\r\n".join([f"GET {path} HTTP/1.1", "host: t", *extra, "", ""]).encode()


def post(path: str, body: bytes, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: t", f"content-length: {len(body)}", *extra, "", ""]
    return "\r\n".join(lines).encode() + body


async def echo(request: HttpRequest) -> HttpResponse:
    """Answers with what it saw, as JSON."""
    seen = {
        "method": request.method,
        "path": request.path,
        "raw_path": request.raw_path,
        "query": dict(request.query),
        "headers": dict(request.headers),
        "body": request.body.decode("latin-1"),
        "client": request.client,
    }
    return HttpResponse(status=200, body=json.dumps(seen).encode(), model="echo-model")


@attrs.define
class Running:
    server: Server
    port: int
    stopped: trio.Event


ServeFn = Callable[..., Awaitable[Running]]


@pytest.fixture
def serve(nursery: trio.Nursery) -> ServeFn:
    """Start a Server on a free loopback port; ``stopped`` is set when serve() returns."""

    async def start(
        handler: Callable[[HttpRequest], Awaitable[HttpResponse]] = echo, limits: Limits = FAST
    ) -> Running:
        server = Server(handler, limits=limits)
        stopped = trio.Event()

        async def run(task_status: trio.TaskStatus[int]) -> None:
            await server.serve("127.0.0.1", 0, task_status=task_status)
            stopped.set()

        port = await nursery.start(run)
        return Running(server, port, stopped)

    return start


async def test_keep_alive_serves_two_requests_on_one_connection(serve: ServeFn) -> None:
    running = await serve()
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(get("/one"))
        first = await client.reply()
        await client.send(post("/two", b"hi"))
        second = await client.reply()
    assert (first.status, second.status) == (200, 200)
    one, two = json.loads(first.body), json.loads(second.body)
    assert (one["path"], two["path"], two["body"]) == ("/one", "/two", "hi")
    # The server saw both on the same socket (same peer port) and did not ask to close.
    assert one["client"] == two["client"] == f"127.0.0.1:{client.stream.socket.getsockname()[1]}"
    assert "connection" not in second.headers


async def test_pipelined_requests_are_answered_in_order(serve: ServeFn) -> None:
    running = await serve()
    client = await Client.connect(running.port)
    chunked = (
        b"POST /two HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    with trio.fail_after(STEP):
        await client.send(get("/one") + chunked + get("/three"))
        replies = [await client.reply() for _ in range(3)]
    seen = [json.loads(reply.body) for reply in replies]
    assert [s["path"] for s in seen] == ["/one", "/two", "/three"]
    assert seen[1]["body"] == "abcde"


async def test_content_length_over_the_limit_is_413_without_reading_the_body(
    serve: ServeFn,
) -> None:
    called = False

    async def handler(request: HttpRequest) -> HttpResponse:
        nonlocal called
        called = True
        return HttpResponse(status=200)

    running = await serve(handler)
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 1025\r\n\r\n"
        )
        reply = await client.reply("POST")
        await client.wait_closed()
    assert reply.status == 413
    assert reply.headers["connection"] == "close"
    assert reply.headers["content-type"] == "application/json"
    assert json.loads(reply.body)["error"]["type"] == "invalid_request_error"
    assert not called


async def test_chunked_body_growing_over_the_limit_is_413(serve: ServeFn) -> None:
    running = await serve()
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(b"POST / HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(3):
            await client.send(b"200\r\n" + b"x" * 0x200 + b"\r\n")  # 3 x 512 > 1024
        reply = await client.reply("POST")
        await client.wait_closed()
    assert reply.status == 413
    assert "1024 bytes" in json.loads(reply.body)["error"]["message"]


async def test_head_that_never_completes_is_408(serve: ServeFn) -> None:
    running = await serve()
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        start = trio.current_time()
        await client.send(b"GET / HTTP/1.1\r\nhost: t\r\n")
        reply = await client.reply()
        elapsed = trio.current_time() - start
        await client.wait_closed()
    assert reply.status == 408
    assert reply.headers["connection"] == "close"
    assert 0.25 <= elapsed < 2


async def test_body_that_stalls_is_408(serve: ServeFn) -> None:
    running = await serve()
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nabc")
        reply = await client.reply("POST")
    assert reply.status == 408


async def test_idle_keep_alive_connection_is_closed_after_keep_alive_timeout(
    serve: ServeFn,
) -> None:
    running = await serve(limits=attrs.evolve(FAST, keep_alive_timeout=0.2, header_timeout=1.5))
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(get())
        assert (await client.reply()).status == 200
        start = trio.current_time()
        assert await client.stream.receive_some(1) == b""  # closed silently: no 408
        elapsed = trio.current_time() - start
    assert 0.15 <= elapsed < 1.0  # keep_alive_timeout, not header_timeout


async def test_connection_that_sends_nothing_gets_408_after_header_timeout(
    serve: ServeFn,
) -> None:
    running = await serve(limits=attrs.evolve(FAST, keep_alive_timeout=0.1, header_timeout=0.4))
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        start = trio.current_time()
        reply = await client.reply()
        elapsed = trio.current_time() - start
    assert reply.status == 408
    assert 0.35 <= elapsed < 2


async def test_garbage_is_400(serve: ServeFn) -> None:
    running = await serve()
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(b"\x16\x03\x01\x02\x00 this is not HTTP\r\n\r\n")
        reply = await client.reply()
        await client.wait_closed()
    assert reply.status == 400
    assert json.loads(reply.body)["error"]["param"] is None


async def test_oversized_head_is_431(serve: ServeFn) -> None:
    running = await serve()
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(get("/", "x-big: " + "a" * 4096))
        reply = await client.reply()
    assert reply.status == 431
    assert "2048 bytes" in json.loads(reply.body)["error"]["message"]


async def test_connect_is_refused_with_405(serve: ServeFn) -> None:
    running = await serve()
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n")
        reply = await client.reply("CONNECT")
    assert reply.status == 405


async def test_streaming_response_sends_each_chunk_as_it_comes(serve: ServeFn) -> None:
    received_first = trio.Event()

    async def handler(request: HttpRequest) -> HttpResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"data: one\n\n"
            await received_first.wait()  # only the client having chunk one lets the stream go on
            yield b"data: two\n\n"
            yield b""  # empty chunks are skipped, not sent as the terminating chunk
            yield b"data: three\n\n"

        return HttpResponse(
            status=200, headers=[("content-type", "text/event-stream")], body=body()
        )

    running = await serve(handler)
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(get("/stream"))
        head = await client.head()
        first = await client.event()
        received_first.set()
        chunks, partial = [], b""
        while not isinstance(event := await client.event(), h11.EndOfMessage):
            assert isinstance(event, h11.Data)
            partial += event.data
            if event.chunk_end:  # h11 marks the wire's chunk boundaries
                chunks.append(partial)
                partial = b""
    assert head.status_code == 200
    assert (b"transfer-encoding", b"chunked") in head.headers
    assert isinstance(first, h11.Data)
    assert first.data == b"data: one\n\n"
    assert chunks == [b"data: two\n\n", b"data: three\n\n"]


async def test_streaming_to_http10_client_is_close_delimited(serve: ServeFn) -> None:
    async def handler(request: HttpRequest) -> HttpResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"a"
            yield b"b"

        return HttpResponse(status=200, body=body())

    running = await serve(handler)
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := await client.stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower()
    assert body == b"ab"


async def test_head_request_gets_headers_only(serve: ServeFn) -> None:
    running = await serve()
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(b"HEAD /x HTTP/1.1\r\nhost: t\r\n\r\n" + get("/after"))
        head = await client.reply("HEAD")
        after = await client.reply()
    assert head.status == 200
    assert head.body == b""
    assert int(head.headers["content-length"]) > 0
    assert json.loads(after.body)["path"] == "/after"


async def test_expect_100_continue_is_answered(serve: ServeFn) -> None:
    running = await serve()
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(
            b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
        )
        interim = await client.stream.receive_some(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        await client.send(b"ok")
        client.h11.receive_data(interim)
        reply = await client.reply("POST")
    assert json.loads(reply.body)["body"] == "ok"


async def disconnect_and_expect_cancel(serve: ServeFn, *, streaming: bool) -> None:
    started = trio.Event()
    cancelled = trio.Event()

    async def handler(request: HttpRequest) -> HttpResponse:
        if not streaming:
            started.set()
            try:
                await trio.sleep_forever()
            finally:
                cancelled.set()

        async def forever() -> AsyncIterator[bytes]:
            try:
                yield b"tick\n"
                # No more writes that could fail: only the watcher can notice the client leave.
                await trio.sleep_forever()
            finally:
                cancelled.set()

        return HttpResponse(status=200, body=forever())

    running = await serve(handler)
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(get())
        if streaming:
            await client.head()
            assert isinstance(await client.event(), h11.Data)
        else:
            await started.wait()
        await client.stream.aclose()
        await cancelled.wait()


async def test_disconnect_mid_stream_cancels_the_request(serve: ServeFn) -> None:
    await disconnect_and_expect_cancel(serve, streaming=True)


async def test_disconnect_while_handler_waits_cancels_it(serve: ServeFn) -> None:
    await disconnect_and_expect_cancel(serve, streaming=False)


async def test_shutdown_lets_in_flight_request_finish_and_refuses_new_ones(
    serve: ServeFn,
) -> None:
    started, release = trio.Event(), trio.Event()

    async def handler(request: HttpRequest) -> HttpResponse:
        if request.path == "/slow":
            started.set()
            await release.wait()
        return HttpResponse(status=200, body=b"done")

    # Long timeouts, so that only shutdown() can explain the closes and serve() returning.
    limits = attrs.evolve(FAST, keep_alive_timeout=30, header_timeout=30, graceful_timeout=30)
    running = await serve(handler, limits)
    busy, idle, silent = [await Client.connect(running.port) for _ in range(3)]
    with trio.fail_after(STEP):
        await idle.send(get("/quick"))
        assert (await idle.reply()).status == 200
        await busy.send(get("/slow"))
        await started.wait()
        running.server.shutdown()
        running.server.shutdown()  # idempotent
    with trio.fail_after(1):  # idle connections close at once, without a word
        assert await idle.stream.receive_some(1) == b""
        await silent.wait_closed()
        # Clients close on EOF; one that had just been answered may be in a lingering close.
        await idle.stream.aclose()
    with trio.fail_after(STEP):
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(OSError, match="connect"):
            await trio.open_tcp_stream("127.0.0.1", running.port)
        assert not running.stopped.is_set()
        release.set()
        reply = await busy.reply()
        await busy.stream.aclose()  # as clients do on "connection: close"; ends the linger
        await running.stopped.wait()
    assert (reply.status, reply.body, reply.headers["connection"]) == (200, b"done", "close")


async def test_shutdown_cancels_requests_after_graceful_timeout(serve: ServeFn) -> None:
    started, cancelled = trio.Event(), trio.Event()

    async def handler(request: HttpRequest) -> HttpResponse:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    running = await serve(handler)
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(get())
        await started.wait()
        start = trio.current_time()
        running.server.shutdown()
        await running.stopped.wait()
        elapsed = trio.current_time() - start
        await client.wait_closed()
    assert cancelled.is_set()
    assert 0.45 <= elapsed < 2  # graceful_timeout is 0.5


async def test_handler_exception_is_500_json_without_traceback(
    serve: ServeFn, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("secret internal detail")

    running = await serve(handler)
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(get("/boom") + get("/boom"))
        reply = await client.reply()
        again = await client.reply()  # the connection survives a handler bug
    assert reply.status == again.status == 500
    assert reply.headers["content-type"] == "application/json"
    error = json.loads(reply.body)["error"]
    assert error["type"] == "server_error"
    assert b"Traceback" not in reply.body
    assert b"secret" not in reply.body
    failures = [r.exc_info[1] for r in caplog.records if r.name == "mux.server" and r.exc_info]
    assert "secret internal detail" in str(failures[0])


async def test_stream_failing_mid_response_drops_the_connection(
    serve: ServeFn, caplog: pytest.LogCaptureFixture
) -> None:
    closed = trio.Event()

    async def handler(request: HttpRequest) -> HttpResponse:
        async def body() -> AsyncIterator[bytes]:
            try:
                yield b"partial"
                raise ValueError("upstream broke")
            finally:
                closed.set()

        return HttpResponse(status=200, body=body())

    running = await serve(handler)
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(get())
        await client.head()
        first = await client.event()
        assert isinstance(first, h11.Data)
        assert first.data == b"partial"
        with pytest.raises(h11.RemoteProtocolError):  # no terminating chunk: cut short
            await client.event()
        await closed.wait()
    assert any(r.name == "mux.server" and r.exc_info for r in caplog.records)


async def test_invalid_response_from_handler_is_500(serve: ServeFn) -> None:
    async def handler(request: HttpRequest) -> HttpResponse:
        return HttpResponse(status=200, headers=[("x-bad", "line\r\nbreak")])

    running = await serve(handler)
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(get())
        reply = await client.reply()
    assert reply.status == 500


async def test_access_log_has_one_line_without_the_query(
    serve: ServeFn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mux.access")
    running = await serve()
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(get("/v1beta/models/g:generate?alt=sse&key=secret", "x-api-key: hdr"))
        await client.reply()
        await trio.testing.wait_all_tasks_blocked()
    lines = [r.getMessage() for r in caplog.records if r.name == "mux.access"]
    assert len(lines) == 1
    method, path, status, model, duration = lines[0].split(" ")
    assert (method, path, status, model) == (
        "GET",
        "/v1beta/models/g:generate",
        "200",
        "echo-model",
    )
    assert duration.endswith("ms")
    assert float(duration[:-2]) >= 0
    assert "secret" not in caplog.text
    assert "hdr" not in caplog.text


async def test_path_is_percent_decoded_and_query_parsed(serve: ServeFn) -> None:
    running = await serve()
    client = await Client.connect(running.port)
    with trio.fail_after(STEP):
        await client.send(
            get("/v1/models/org%2Fmodel%20x?alt=sse&q=a%26b&q=last&empty=", "X-Dup: 1", "x-dup: 2")
        )
        seen = json.loads((await client.reply()).body)
    assert seen["path"] == "/v1/models/org/model x"
    assert seen["raw_path"] == "/v1/models/org%2Fmodel%20x"
    assert seen["query"] == {"alt": "sse", "q": "last", "empty": ""}
    assert seen["headers"]["x-dup"] == "1, 2"
    assert seen["headers"]["host"] == "t"


async def test_handle_connection_over_a_memory_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server(echo, limits=FAST)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_connection, server_stream)
        await client_stream.send_all(get("/mem"))
        data = b""
        while chunk := await client_stream.receive_some():  # keep-alive expiry closes it
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'"path": "/mem"' in data
