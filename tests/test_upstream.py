"""mux.upstream over real loopback sockets: pooling, proxies, the three named timeouts, error
mapping, and closing a stream (or cancelling its reader) closing the upstream connection.

Upstreams are mux.server.Server instances on port 0 with handlers written per test; timeouts
are a fraction of a second, and every test runs under ``fail_after`` so a hang fails fast."""

from __future__ import annotations

import contextlib
import datetime
import functools
import ipaddress
import socket
import ssl
import tempfile
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from mux import __version__
from mux.errors import UpstreamError
from mux.ir import ErrorKind
from mux.server import HttpRequest, HttpResponse, Server
from mux.upstream import Reply, Timeouts, Upstreams

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


async def test_the_oauth_client_uses_the_pool_and_refuses_once_closed(
        nursery: trio.Nursery) -> None:
    """``client()`` binds the pool: its calls share the keep-alive connections, send JSON and
    form bodies, and decode JSON answers; a closed Upstreams gives no client."""
    seen: list[HttpRequest] = []

    async def handler(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return HttpResponse(status=200, body=b'{"ok": true}')

    url = await serve(nursery, handler)
    upstreams = Upstreams(trust_env=False)
    with trio.fail_after(STEP):
        async with upstreams:
            client = upstreams.client(None, provider="claude")
            got = await client.post_json(url + "/j", {"a": "é"})
            await client.post_form(url + "/f", {"a": "b c", "d": "&"})
            await upstreams.get(url + "/", provider="test", timeouts=FAST)
    assert got.status == 200 and got.json() == {"ok": True}
    assert [r.headers["content-type"] for r in seen[:2]] == [
        "application/json", "application/x-www-form-urlencoded"]
    assert seen[0].body == '{"a":"é"}'.encode() and seen[1].body == b"a=b+c&d=%26"
    assert len({r.client for r in seen}) == 1  # one pooled connection for all three
    with pytest.raises(RuntimeError, match="closed"):
        upstreams.client(None)


def test_reply_json_raises_value_error_on_a_body_that_is_not_json() -> None:
    with pytest.raises(ValueError):
        Reply(status=200, headers={}, body=b"<html>").json()
    with pytest.raises(ValueError):
        Reply(status=200, headers={}, body=b"\xff\xfe\x00").json()


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


# ---------------------------------------------------------------------------------------------
# TLS, tunnels, proxies from the environment, content-coding, stale pooled connections


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 and localhost signed by a fresh CA,
    and a client context trusting only that CA."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def name(text: str) -> Any:
        return x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, text)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("mux test CA")).issuer_name(name("mux test CA"))
        .public_key(ca_key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as directory:
        cert_file, key_file = Path(directory, "cert.pem"), Path(directory, "key.pem")
        cert_file.write_bytes(leaf.public_bytes(pem))
        key_file.write_bytes(key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))
        server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cadata=ca.public_bytes(pem).decode())
    return server, client


async def serve_tls(nursery: trio.Nursery, handler: Handler, context: ssl.SSLContext) -> int:
    listeners = await nursery.start(
        functools.partial(trio.serve_ssl_over_tcp, Server(handler).handle_connection, 0,
                          context, host="127.0.0.1")
    )
    return int(listeners[0].transport_listener.socket.getsockname()[1])


class ConnectProxy:
    """A CONNECT-only proxy: records each tunnel's request head, then splices bytes."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []

    async def serve(self, nursery: trio.Nursery) -> str:
        listeners = await nursery.start(trio.serve_tcp, self.handle, 0)
        port = listeners[0].socket.getsockname()[1]
        return f"http://user:p%40ss@127.0.0.1:{port}"

    async def handle(self, client: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await client.receive_some(4096)
        self.heads.append(head)
        host, _, port = head.split(b" ")[1].decode().rpartition(":")
        upstream = await trio.open_tcp_stream(host, int(port))
        await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while data := await source.receive_some(65536):
                    await sink.send_all(data)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await sink.send_eof()

        async with upstream, client, trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, upstream)
            nursery.start_soon(pump, upstream, client)


async def test_https_upstreams_are_verified_against_the_trusted_cas(nursery: trio.Nursery) -> None:
    server_context, client_context = tls_contexts()

    async def handler(request: HttpRequest) -> HttpResponse:
        return HttpResponse(status=200, body=b"secure " + request.headers["host"].encode())

    port = await serve_tls(nursery, handler, server_context)
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False, ssl_context=client_context) as upstreams:
            reply = await upstreams.get(f"https://localhost:{port}/", provider="p", timeouts=FAST)
            assert reply.body == f"secure localhost:{port}".encode()
        # The system's CAs do not know the test CA: the handshake fails, naming the cause.
        async with Upstreams(trust_env=False) as upstreams:
            with pytest.raises(UpstreamError) as caught:
                await upstreams.get(f"https://localhost:{port}/", provider="p", timeouts=FAST)
    assert caught.value.status == 502
    assert caught.value.message.startswith("p: localhost: cannot connect (")
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.message


async def test_https_through_a_proxy_is_a_connect_tunnel(nursery: trio.Nursery) -> None:
    """The proxy sees only ``CONNECT host:port`` with the proxy credentials; the request
    inside the tunnel is TLS to the upstream, and the tunnel is pooled like a connection."""
    server_context, client_context = tls_contexts()
    clients: list[str] = []

    async def handler(request: HttpRequest) -> HttpResponse:
        clients.append(request.client)
        return HttpResponse(status=200, body=f"{request.path} {dict(request.query)}".encode())

    port = await serve_tls(nursery, handler, server_context)
    proxy = ConnectProxy()
    proxy_url = await proxy.serve(nursery)
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False, ssl_context=client_context) as upstreams:
            for _ in range(2):
                reply = await upstreams.post(
                    f"https://localhost:{port}/v1/messages?beta=true", b"{}", provider="p",
                    timeouts=FAST, proxy_url=proxy_url,
                    headers={"authorization": "Bearer sk-inside-the-tunnel"},
                )
                assert reply.body == b"/v1/messages {'beta': 'true'}"
    assert len(proxy.heads) == 1 and len(set(clients)) == 1
    head = proxy.heads[0].decode()
    assert head.startswith(f"CONNECT localhost:{port} HTTP/1.1\r\n")
    assert "proxy-authorization: Basic dXNlcjpwQHNz\r\n" in head  # user:p@ss
    assert "sk-inside-the-tunnel" not in head


async def test_the_environment_names_the_proxy_unless_no_proxy_exempts(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    async def proxy(request: HttpRequest) -> HttpResponse:
        seen.append(request.raw_path)
        return HttpResponse(status=200, body=b"proxied")

    async def direct(request: HttpRequest) -> HttpResponse:
        return HttpResponse(status=200, body=b"direct")

    proxy_url = await serve(nursery, proxy)
    direct_url = await serve(nursery, direct)
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY",
                 "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=True) as upstreams:
            exempt = await upstreams.get(direct_url + "/", provider="p", timeouts=FAST)
            proxied = await upstreams.get("http://api.example.invalid:8080/v1/models",
                                          provider="p", timeouts=FAST)
        async with Upstreams(trust_env=False) as upstreams:  # the environment ignored
            ignored = await upstreams.get(direct_url + "/", provider="p", timeouts=FAST)
    assert (exempt.body, proxied.body, ignored.body) == (b"direct", b"proxied", b"direct")
    assert seen == ["http://api.example.invalid:8080/v1/models"]


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_compressed_bodies_are_decoded_as_they_arrive(
    nursery: trio.Nursery, coding: str
) -> None:
    text = b"".join(b"data: {\"n\": %d}\n\n" % i for i in range(2000))
    compressor = zlib.compressobj(wbits=zlib.MAX_WBITS | (16 if coding == "gzip" else 0))
    packed = compressor.compress(text) + compressor.flush()
    accepted: list[str] = []

    async def handler(request: HttpRequest) -> HttpResponse:
        accepted.append(request.headers["accept-encoding"])

        async def body() -> AsyncIterator[bytes]:
            for i in range(0, len(packed), 100):  # many small chunks: a streamed answer
                yield packed[i:i + 100]

        return HttpResponse(status=200, headers=[("content-encoding", coding)], body=body())

    url = await serve(nursery, handler)
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False) as upstreams:
            reply = await upstreams.get(url + "/", provider="p", timeouts=FAST)
    assert reply.body == text
    assert accepted == ["gzip, deflate"]


async def test_a_pooled_connection_the_upstream_closed_is_replaced(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream that closes keep-alive connections without saying so: the closed one is
    noticed before reuse; and when it is not (closed in the instant after the check), the
    request goes again on a new connection, once."""
    served: list[int] = []

    async def one_answer_per_connection(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(4096)
            served.append(len(served))
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    listeners = await nursery.start(trio.serve_tcp, one_answer_per_connection, 0)
    url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False) as upstreams:
            await upstreams.get(url, provider="p", timeouts=FAST)
            await trio.sleep(0.05)  # the upstream's close arrives
            assert (await upstreams.get(url, provider="p", timeouts=FAST)).body == b"ok"
            await trio.sleep(0.05)
            monkeypatch.setattr("mux.upstream._Connection.stale", lambda self, now: False)
            assert (await upstreams.get(url, provider="p", timeouts=FAST)).body == b"ok"
    assert len(served) == 3


async def test_a_connection_closed_before_an_answer_on_a_new_connection_is_502(
    nursery: trio.Nursery,
) -> None:
    """The resend is for reused connections only: a new one that dies is the upstream's
    failure."""

    async def hang_up(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some(4096)

    listeners = await nursery.start(trio.serve_tcp, hang_up, 0)
    url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
    with trio.fail_after(STEP):
        async with Upstreams(trust_env=False) as upstreams:
            with pytest.raises(UpstreamError) as caught:
                await upstreams.post(url, b"{}", provider="p", timeouts=FAST)
    assert caught.value.message.startswith("p: 127.0.0.1: failed while waiting for the answer")
