"""mux.upstream over real loopback sockets: pooling, proxies, the three named timeouts, error
mapping, and closing a stream (or cancelling its reader) closing the upstream connection.

Upstreams are mux.server.Server instances on port 0 with handlers written per test; timeouts
are a fraction of a second, and every test runs under ``fail_after`` so a hang fails fast."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio

from mux import __version__
from mux.errors import UpstreamError
from mux.ir import ErrorKind
from mux.server import HttpRequest, HttpResponse, Server
from mux.upstream import Timeouts, Upstreams

FAST = Timeouts(connect=1.0, first_byte=0.3, idle=0.3)
#: Upper bound for any single test.
STEP = 5.0

Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


async def serve(nursery: trio.Nursery, handler: Handler) -> str:
    port = await nursery.start(Server(handler).serve, "127.0.0.1", 0)
    return f"http://127.0.0.1:{port}"


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Tracker:
    """A streamed response body that records how it ended."""

    def __init__(self) -> None:
        self.closed = trio.Event()
        self.completed = False

    async def body(self, chunks: int, delay: float) -> AsyncIterator[bytes]:
        try:
            for i in range(chunks):
                if i:
                    await trio.sleep(delay)
                yield f"chunk {i}\n".encode()
            self.completed = True
        finally:
            self.closed.set()


async def test_post_sends_headers_and_body_and_returns_the_answer(nursery: trio.Nursery) -> None:
    """The request arrives as sent (with mux's user agent); the reply carries status, headers
    (case-insensitive) and the whole body."""
    seen: list[HttpRequest] = []

    async def handler(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return HttpResponse(status=201, headers=[("X-Answer", "yes")], body=b"x" * 100_000)

    url = await serve(nursery, handler)
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False) as upstreams:
            reply = await upstreams.post(
                url + "/v1/things?a=1", b'{"q":1}', headers={"x-custom": "v"},
                provider="test", timeouts=FAST,
            )
    assert (reply.status, reply.headers["x-answer"], reply.body) == (201, "yes", b"x" * 100_000)
    request = seen[0]
    assert (request.method, request.path, dict(request.query)) == ("POST", "/v1/things", {"a": "1"})
    assert request.body == b'{"q":1}'
    assert request.headers["x-custom"] == "v"
    assert request.headers["user-agent"] == f"mux/{__version__}"


async def test_connections_are_pooled(nursery: trio.Nursery) -> None:
    """Sequential requests to one upstream reuse one keep-alive connection."""
    clients: list[str] = []

    async def handler(request: HttpRequest) -> HttpResponse:
        clients.append(request.client)
        return HttpResponse(status=200, body=b"{}")

    url = await serve(nursery, handler)
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False) as upstreams:
            for _ in range(3):
                await upstreams.get(url + "/", provider="test", timeouts=FAST)
    assert len(clients) == 3 and len(set(clients)) == 1


async def test_one_client_per_proxy_url_closed_on_exit() -> None:
    upstreams = Upstreams(trust_env=False)
    async with upstreams:
        direct = upstreams.client(None)
        proxied = upstreams.client("http://127.0.0.1:3128")
        assert upstreams.client(None) is direct
        assert upstreams.client("http://127.0.0.1:3128") is proxied
        assert proxied is not direct
    assert direct.is_closed and proxied.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        upstreams.client(None)


async def test_requests_go_through_the_proxy_url(nursery: trio.Nursery) -> None:
    """With ``proxy-url``, the request goes to the proxy in absolute form."""
    targets: list[str] = []

    async def proxy(request: HttpRequest) -> HttpResponse:
        targets.append(request.raw_path)
        return HttpResponse(status=200, body=b"via proxy")

    proxy_url = await serve(nursery, proxy)
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False) as upstreams:
            reply = await upstreams.post(
                "http://api.example.invalid/v1/chat/completions", b"{}", provider="test",
                timeouts=FAST, proxy_url=proxy_url,
            )
    assert reply.body == b"via proxy"
    assert targets == ["http://api.example.invalid/v1/chat/completions"]


async def test_refused_connection_is_502_naming_the_provider() -> None:
    port = free_port()
    start = trio.current_time()
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False) as upstreams:
            with pytest.raises(UpstreamError) as caught:
                await upstreams.post(
                    f"http://127.0.0.1:{port}/v1/x", b"{}", provider="my-openai",
                    timeouts=FAST, headers={"authorization": "Bearer sk-secret-123"},
                )
    error = caught.value
    assert (error.kind, error.status) == (ErrorKind.UPSTREAM, 502)
    assert error.message.startswith("my-openai: 127.0.0.1: cannot connect")
    assert "sk-secret-123" not in error.message
    assert trio.current_time() - start < 1.0


async def test_hanging_upstream_is_504_after_the_first_byte_timeout(nursery: trio.Nursery) -> None:
    async def hang(request: HttpRequest) -> HttpResponse:
        await trio.sleep_forever()
        raise AssertionError

    url = await serve(nursery, hang)
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False) as upstreams:
            start = trio.current_time()
            with pytest.raises(UpstreamError) as caught:
                await upstreams.post(url + "/", b"{}", provider="slow", timeouts=FAST)
            elapsed = trio.current_time() - start
    error = caught.value
    assert (error.kind, error.status) == (ErrorKind.TIMEOUT, 504)
    assert error.message == "slow: 127.0.0.1: no answer within 0.3s"
    assert 0.3 <= elapsed < 1.5


async def test_stalled_stream_times_out_after_the_idle_timeout(nursery: trio.Nursery) -> None:
    async def stall(request: HttpRequest) -> HttpResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first"
            await trio.sleep_forever()

        return HttpResponse(status=200, body=body())

    url = await serve(nursery, stall)
    received = []
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False) as upstreams:
            async with upstreams.open_stream("POST", url + "/", provider="p", timeouts=FAST,
                                             body=b"{}") as response:
                assert response.status == 200
                with pytest.raises(UpstreamError) as caught:
                    async for chunk in response.chunks():
                        received.append(chunk)
    assert received == [b"first"]
    assert (caught.value.kind, caught.value.status) == (ErrorKind.TIMEOUT, 504)
    assert caught.value.message == "p: 127.0.0.1: the answer stalled: nothing arrived for 0.3s"


async def test_idle_timeout_is_per_chunk_not_per_stream(nursery: trio.Nursery) -> None:
    """A stream that keeps talking may last longer than the idle timeout."""
    tracker = Tracker()

    async def steady(request: HttpRequest) -> HttpResponse:
        return HttpResponse(status=200, body=tracker.body(chunks=6, delay=0.1))

    url = await serve(nursery, steady)
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False) as upstreams:
            start = trio.current_time()
            reply = await upstreams.get(url + "/", provider="p", timeouts=FAST)
            assert trio.current_time() - start > FAST.idle
    assert reply.body == b"".join(f"chunk {i}\n".encode() for i in range(6))


async def test_broken_stream_is_502(nursery: trio.Nursery) -> None:
    async def broken(request: HttpRequest) -> HttpResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"partial"
            raise RuntimeError("the upstream died")  # the server cuts the connection

        return HttpResponse(status=200, body=body())

    url = await serve(nursery, broken)
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False) as upstreams:
            with pytest.raises(UpstreamError) as caught:
                await upstreams.get(url + "/", provider="p", timeouts=FAST)
    assert (caught.value.kind, caught.value.status) == (ErrorKind.UPSTREAM, 502)
    assert caught.value.message.startswith("p: 127.0.0.1: failed while reading the answer (")


async def test_closing_a_stream_closes_the_upstream_connection(nursery: trio.Nursery) -> None:
    tracker = Tracker()

    async def endless(request: HttpRequest) -> HttpResponse:
        return HttpResponse(status=200, body=tracker.body(chunks=1000, delay=0.05))

    url = await serve(nursery, endless)
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False) as upstreams:
            async with upstreams.open_stream("GET", url + "/", provider="p",
                                             timeouts=FAST) as response:
                chunks = response.chunks()
                assert await anext(chunks) == b"chunk 0\n"
            # Leaving the block closed the connection, though the reader is still alive.
            with trio.fail_after(1.0):
                await tracker.closed.wait()
            del chunks
    assert not tracker.completed


async def test_cancelling_the_reader_closes_the_upstream_connection(nursery: trio.Nursery) -> None:
    """A client that disconnects cancels the request: the upstream sees the close."""
    tracker = Tracker()

    async def endless(request: HttpRequest) -> HttpResponse:
        return HttpResponse(status=200, body=tracker.body(chunks=1000, delay=0.05))

    url = await serve(nursery, endless)
    got_one = trio.Event()
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False) as upstreams:
            async with trio.open_nursery() as inner:

                async def read() -> None:
                    async with upstreams.open_stream("GET", url + "/", provider="p",
                                                     timeouts=FAST) as response:
                        async for _ in response.chunks():
                            got_one.set()

                inner.start_soon(read)
                await got_one.wait()
                inner.cancel_scope.cancel()
            with trio.fail_after(1.0):
                await tracker.closed.wait()
    assert not tracker.completed


async def test_invalid_header_values_fail_without_showing_them(nursery: trio.Nursery) -> None:
    """h11 quotes an illegal header value in its error; a key must not reach the message."""

    async def ok(request: HttpRequest) -> HttpResponse:
        return HttpResponse(status=200)

    url = await serve(nursery, ok)
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False) as upstreams:
            for value in ("Bearer sk-secret\x00", "Bearer sk-secret\n", "Bearer sk-secrët"):
                with pytest.raises(UpstreamError) as caught:
                    await upstreams.post(url + "/", b"{}", provider="p", timeouts=FAST,
                                         headers={"authorization": value})
                assert caught.value.status == 502
                assert "secret" not in caught.value.message
                assert caught.value.__cause__ is None  # nor in a logged traceback


async def test_invalid_urls_are_502() -> None:
    async with Upstreams(trust_env=False) as upstreams:
        with pytest.raises(UpstreamError, match=r"^p: invalid URL$"):
            await upstreams.get("http://[::1", provider="p", timeouts=FAST)
        with pytest.raises(UpstreamError, match=r"^p: invalid proxy-url$"):
            await upstreams.get("http://127.0.0.1:1/", provider="p", timeouts=FAST,
                                proxy_url="gopher://proxy")
