"""The HTTP/1.1 server: trio streams in, h11 events through, one handler call per request.

Theory of operation
-------------------
``Server.serve`` runs ``trio.serve_listeners`` (which already survives EMFILE and friends) with
one task per connection in a connections nursery. Each connection owns an
``h11.Connection(SERVER)`` and loops over request cycles; h11 does all the parsing and framing,
this module only moves bytes and decides *when*. A cycle has three phases:

1. **Idle** - not one byte of the next request yet. The wait is bounded by keep_alive_timeout
   (header_timeout for the first request, which is counted from the connection opening) and is
   the only wait ``shutdown()`` ends at once. Expiry closes silently, except on a connection that
   has not sent a request at all, which gets a 408 as header_timeout promises.
2. **Reading** - the rest of the head under ``fail_at(header_timeout)``, the body under
   ``fail_after(body_timeout)``. Whatever goes wrong here is the client's fault and gets a small
   JSON error (400/405/408/413/431, or h11's 501 for an unknown transfer-coding), then a
   lingering close: we half-close and discard input for a moment, so that a body the client is
   still sending does not turn our close into a TCP reset that destroys the error in flight.
3. **Responding** - the handler and the write of its response run in a per-request nursery next
   to a *watcher* that keeps reading: EOF or a reset cancels the request (the handler, or the
   response stream, whose ``aclose`` always runs). What the watcher reads is the next pipelined
   request; it goes into h11's buffer, and reading stops at max_header_size so a flood stays
   bounded. Only one task reads at a time: the cycle before the handler, the watcher during it.

After a response both sides are DONE -> ``start_next_cycle()`` and back to idle; anything else
(``connection: close``, an HTTP/1.0 peer, a failed write, shutdown) ends the connection. A
write that fails or outlives send_timeout calls ``send_failed()``; h11's state is then ERROR
and the loop never touches the connection again. Every exit goes through a shielded, bounded
``aclose``.

Shutdown stops the accept loop, cancels idle waits, adds ``connection: close`` to responses not
yet started, and gives every connection a deadline of now + graceful_timeout, after which
whatever still runs is cancelled; ``serve()`` returns once its connections nursery is empty.
"""

from __future__ import annotations

import contextlib
import http
import json
import logging
import math
import types
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

import attrs
import h11
import trio

__all__ = ["Handler", "HttpRequest", "HttpResponse", "Limits", "Server"]

logger = logging.getLogger("mux.server")
access_logger = logging.getLogger("mux.access")

#: Bytes asked of the socket per read; hypercorn's trio worker and h11's example use 64 KiB too.
READ_SIZE = 64 * 1024
#: How long a lingering close keeps discarding input after our last byte. Apache's lingering
#: close waits 2 s for the client (SECONDS_TO_LINGER); nginx's lingering_timeout is 5 s.
LINGER_TIMEOUT = 2.0
#: Upper bound on ``aclose()`` (a TLS stream would write close_notify); it runs shielded.
CLOSE_TIMEOUT = 1.0

# The server owns message framing; a handler's own values for these would contradict h11's.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
# RFC 9110 6.4.1: these responses never carry content.
_BODILESS_STATUSES = frozenset({204, 304})
# h11 sends an empty reason phrase unless given one.
_REASONS = {status.value: status.phrase for status in http.HTTPStatus}


@attrs.frozen(kw_only=True)
class HttpRequest:
    """One request with its body read in full."""

    method: str
    #: Percent-decoded path without the query string, e.g. ``/v1/models/org/model``.
    path: str
    #: The path as sent (still percent-encoded), without the query string.
    raw_path: str
    #: Decoded query parameters; the last value of a repeated name wins.
    query: Mapping[str, str]
    #: Lower-cased names; repeated headers joined with ", ".
    headers: Mapping[str, str]
    body: bytes
    #: ``host:port`` of the peer, for logs.
    client: str


@attrs.frozen(kw_only=True)
class HttpResponse:
    """What a handler answers. ``bytes`` bodies get Content-Length; an async iterator's chunks
    are sent chunked, each as soon as it is produced, and the iterator is always ``aclose``d."""

    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes | AsyncIterator[bytes] = b""
    #: The model that answered; only for the access log.
    model: str | None = None


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@attrs.frozen(kw_only=True)
class Limits:
    """Sizes and timeouts (seconds; ``math.inf`` disables one)."""

    #: Request body bytes; above it -> 413. Request bodies with images run to a few MiB.
    max_request_size: int = 50 * 1024 * 1024
    #: h11's max_incomplete_event_size (its default is 16 KiB; nginx allows 4 x 8 KiB) -> 431.
    max_header_size: int = 64 * 1024
    #: Connection open, or first byte of a later request, to the complete head -> 408.
    header_timeout: float = 10.0
    #: Reading the whole body -> 408.
    body_timeout: float = 60.0
    #: Idle keep-alive wait for the next request -> closed silently (hypercorn's default: 5 s).
    keep_alive_timeout: float = 5.0
    #: One write to the client; expiry aborts the connection.
    send_timeout: float = 60.0
    #: On shutdown, in-flight requests get this long before they are cancelled.
    graceful_timeout: float = 10.0


def _error_body(status: int, message: str) -> bytes:
    """The JSON body of an error the server makes itself, in OpenAI's error envelope."""
    kind = "server_error" if status == 500 else "invalid_request_error"
    error = {"message": message, "type": kind, "param": None, "code": None}
    return json.dumps({"error": error}).encode()


class Server:
    """Serves ``handler`` over HTTP/1.1; see the module docstring for how.

    Args:
      handler: called once per request. An exception out of it is a bug: it is logged, and the
        client gets a 500 (or, mid-stream, a dropped connection).
      limits: sizes and timeouts.
    """

    def __init__(self, handler: Handler, *, limits: Limits = Limits()) -> None:
        self.handler = handler
        self.limits = limits
        self._closing = False
        self._grace_deadline = math.inf
        self._accepting = trio.CancelScope()
        self._connections: set[_Connection] = set()

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen (port 0 = pick a free one) and serve until shutdown() has drained.

        Calls ``task_status.started(bound_port)`` once listening. Call it once per Server.

        Raises:
          OSError: the address could not be bound.
        """
        listeners = await trio.open_tcp_listeners(port, host=host)
        try:
            if port == 0:
                # Each address family would pick its own free port; serve one, so "the port" is one.
                for extra in listeners[1:]:
                    await trio.aclose_forcefully(extra)
                del listeners[1:]
            bound: int = listeners[0].socket.getsockname()[1]
            task_status.started(bound)
            async with trio.open_nursery() as connections:
                with self._accepting:
                    await trio.serve_listeners(
                        self.handle_connection, listeners, handler_nursery=connections
                    )
                # Only shutdown() gets here. Each connection already carries the grace deadline;
                # this is the backstop for one that registered late.
                connections.cancel_scope.deadline = self._grace_deadline
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async def handle_connection(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until it closes, then close the stream.

        Used by serve(), by tests over ``trio.testing.memory_stream_pair()`` and by the fuzz
        harness. Never raises except Cancelled (a bug in a cycle is logged, and the connection
        dropped, so that one connection cannot take the server down).
        """
        connection = _Connection(self, stream)
        self._connections.add(connection)
        if self._closing:
            connection.begin_shutdown(self._grace_deadline)
        try:
            with connection.scope:
                await connection.run()
        except Exception:
            logger.exception("Connection from %s failed; dropping it", connection.client)
        finally:
            self._connections.discard(connection)
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                await stream.aclose()

    def shutdown(self) -> None:
        """Begin a graceful shutdown (idempotent; call it from any task of the server's run).

        Stops accepting, closes idle connections at once, answers ``connection: close`` to
        requests in flight, and cancels what still runs after limits.graceful_timeout.
        """
        if self._closing:
            return
        self._closing = True
        self._grace_deadline = trio.current_time() + self.limits.graceful_timeout
        self._accepting.cancel()
        for connection in list(self._connections):
            connection.begin_shutdown(self._grace_deadline)


@attrs.define
class _Refused(Exception):
    """A request the server answers itself, with ``status``, before any handler runs."""

    status: int
    message: str


class _PeerGone(Exception):
    """A write failed or timed out; h11 has been told (``send_failed``), the connection is done."""


@attrs.define(eq=False)
class _Exchange:
    """One request cycle, as the access log sees it."""

    start: float
    method: str = "-"
    path: str = "-"
    status: int | None = None
    model: str | None = None


class _Connection:
    """One client connection: its stream, its h11 state machine and the request-cycle loop."""

    def __init__(self, server: Server, stream: trio.abc.Stream) -> None:
        self.server = server
        self.limits = server.limits
        self.stream = stream
        self.client = _peer_name(stream)
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_size)
        #: Everything on this connection; shutdown gives it the grace deadline.
        self.scope = trio.CancelScope()
        #: Set while waiting idle for a request; shutdown cancels it.
        self.idle_scope: trio.CancelScope | None = None
        #: The client closed or reset the connection, or stopped reading.
        self.peer_gone = False
        #: The current request's method (a response to HEAD carries no body).
        self.method = "GET"

    @property
    def _too_large_head(self) -> str:
        return f"The request head is larger than {self.limits.max_header_size} bytes."

    def begin_shutdown(self, deadline: float) -> None:
        self.scope.deadline = min(self.scope.deadline, deadline)
        if self.idle_scope is not None:
            self.idle_scope.cancel()

    async def run(self) -> None:
        first = True
        while await self._cycle(first):
            self.h11.start_next_cycle()
            first = False

    async def _cycle(self, first: bool) -> bool:
        """Serve one request; return whether the connection may carry another."""
        exchange = _Exchange(start=trio.current_time())
        self.method = "GET"
        try:
            try:
                request = await self._read_request(first, exchange)
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                if status == 431:
                    message = self._too_large_head
                else:
                    message = f"Malformed HTTP/1.1 request: {str(exc)[:200]}"
                return await self._fail(exchange, status, message)
            except trio.TooSlowError:
                return await self._fail(exchange, 408, "The request took too long to arrive.")
            except _Refused as exc:
                return await self._fail(exchange, exc.status, exc.message)
            except _PeerGone:
                return False
            if request is None:
                return False
            await self._respond(request, exchange)
            both_done = self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE
            if both_done and not self.server._closing:
                return True
            if self.h11.our_state in (h11.DONE, h11.MUST_CLOSE):
                await self._linger()
            return False
        finally:
            if exchange.method != "-" or exchange.status is not None:
                self._log(exchange)

    async def _read_request(self, first: bool, exchange: _Exchange) -> HttpRequest | None:
        """Wait for the next request and read it whole.

        Returns None when the connection should close without a word: the peer closed it, the
        keep-alive wait expired, or the server is shutting down.

        Raises:
          h11.RemoteProtocolError: the bytes are not an HTTP/1.1 request we can read.
          trio.TooSlowError: the head or the body did not arrive in time.
          _Refused: the request is too large, or a CONNECT.
          _PeerGone: writing ``100 Continue`` failed.
        """
        limits = self.limits
        head_deadline = exchange.start + limits.header_timeout
        buffered, closed = self.h11.trailing_data
        if not buffered and not closed:  # nothing of the next request (pipelined) yet
            idle_deadline = head_deadline if first else exchange.start + limits.keep_alive_timeout
            idle = self.idle_scope = trio.CancelScope(deadline=idle_deadline)
            try:
                with idle:
                    if self.server._closing:
                        idle.cancel()
                    self.h11.receive_data(await self._receive())
            finally:
                self.idle_scope = None
            if idle.cancelled_caught:
                if first and not self.server._closing:
                    raise trio.TooSlowError
                return None
            exchange.start = trio.current_time()
            if not first:
                head_deadline = exchange.start + limits.header_timeout
        with trio.fail_at(head_deadline):
            head = await self._next_event()
        if isinstance(head, h11.ConnectionClosed):
            return None
        assert isinstance(head, h11.Request)  # the only other event h11 yields in state IDLE
        request = _request(head, self.client)
        exchange.method, exchange.path = request.method, request.raw_path
        self.method = request.method
        if _head_size(head) > limits.max_header_size:
            # h11 only bounds heads that arrive in pieces; one that came in a single read
            # parses whatever its size.
            raise _Refused(431, self._too_large_head)
        if request.method == "CONNECT":
            # h11 would switch protocols on a 2xx answer; a gateway is no tunnel.
            raise _Refused(405, "CONNECT is not supported.")
        length = request.headers.get("content-length")
        if length is not None and int(length) > limits.max_request_size:
            raise _Refused(413, f"The request body is larger than {limits.max_request_size} bytes.")
        chunks: list[bytes] = []
        size = 0
        with trio.fail_after(limits.body_timeout):
            if self.h11.they_are_waiting_for_100_continue:
                await self._send(h11.InformationalResponse(status_code=100, headers=[]))
            while not isinstance(event := await self._next_event(), h11.EndOfMessage):
                assert isinstance(event, h11.Data)  # h11 raises if the body is cut short
                size += len(event.data)
                if size > limits.max_request_size:
                    raise _Refused(
                        413, f"The request body is larger than {limits.max_request_size} bytes."
                    )
                chunks.append(event.data)
        return attrs.evolve(request, body=b"".join(chunks))

    async def _respond(self, request: HttpRequest, exchange: _Exchange) -> None:
        """Run the handler and send its response while a watcher notices the client leaving."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_peer, nursery.cancel_scope, name="mux.server watcher")
            try:
                await self._call_handler(request, exchange)
            except _PeerGone:
                self.peer_gone = True
            nursery.cancel_scope.cancel()

    async def _call_handler(self, request: HttpRequest, exchange: _Exchange) -> None:
        """Raises: _PeerGone when a write fails."""
        try:
            response = await self.server.handler(request)
        except Exception:
            logger.exception("Handler failed on %s %s", request.method, request.raw_path)
            exchange.status = 500
            await self._send_error(500, "The server had an error while handling the request.")
            return
        async with _closing(getattr(response, "body", None)):
            try:
                head = self._response_head(response)
            except Exception:
                logger.exception("Invalid response to %s %s", request.method, request.raw_path)
                exchange.status = 500
                await self._send_error(500, "The server made an invalid response.")
                return
            exchange.status, exchange.model = response.status, response.model
            body = response.body
            if request.method == "HEAD" or response.status in _BODILESS_STATUSES:
                await self._send(head, h11.EndOfMessage())
            elif isinstance(body, bytes | bytearray):
                await self._send(head, h11.Data(data=body), h11.EndOfMessage())
            else:
                # The head goes out with the first chunk, in one write: the routes return a
                # stream only once its first event is there, so this does not delay the head.
                head_out = False
                while True:
                    try:
                        chunk = await anext(body)
                        if not isinstance(chunk, bytes | bytearray):
                            raise TypeError(f"a response stream yielded {type(chunk).__name__}")
                    except StopAsyncIteration:
                        break
                    except Exception:
                        # The response has started: the only way to say "failed" is to cut the
                        # body (after the head, if it is not out yet, as for any stream).
                        where = (request.method, request.raw_path)
                        logger.exception("Response stream failed on %s %s; dropping it", *where)
                        if not head_out:
                            await self._send(head)
                        self.h11.send_failed()
                        return
                    if head_out:
                        await self._send(h11.Data(data=chunk))
                    else:
                        await self._send(head, h11.Data(data=chunk))
                        head_out = True
                if head_out:
                    await self._send(h11.EndOfMessage())
                else:
                    await self._send(head, h11.EndOfMessage())

    def _response_head(self, response: HttpResponse) -> h11.Response:
        """Raises: TypeError, ValueError or h11.LocalProtocolError for a malformed response."""
        if not isinstance(response, HttpResponse):
            raise TypeError(f"the handler returned a {type(response).__name__}")
        headers = [(k, v) for k, v in response.headers if k.lower() not in _FRAMING_HEADERS]
        if not any(k.lower() == "server" for k, _ in headers):
            headers.append(("server", "mux"))
        if isinstance(response.body, bytes | bytearray):
            if response.status not in _BODILESS_STATUSES:
                headers.append(("content-length", str(len(response.body))))
        elif not isinstance(response.body, AsyncIterator):
            raise TypeError(f"response body is a {type(response.body).__name__}")
        if self.server._closing:
            headers.append(("connection", "close"))
        reason = _REASONS.get(response.status, "")
        return h11.Response(status_code=response.status, headers=headers, reason=reason)

    async def _watch_peer(self, request_scope: trio.CancelScope) -> None:
        """Read on while a request runs, so that a client going away cancels it.

        What arrives is the next pipelined request: it goes to h11 for the next cycle. No
        timeout of its own: the request's nursery cancels this as soon as the response is out.
        """
        while True:
            buffered, closed = self.h11.trailing_data
            if closed:
                self.peer_gone = True
                request_scope.cancel()
                return
            if len(buffered) > self.limits.max_header_size:
                await trio.sleep_forever()  # a flood; the next cycle will refuse it
            self.h11.receive_data(await self._receive())

    async def _fail(self, exchange: _Exchange, status: int, message: str) -> bool:
        """Answer an error of the server's own (if a response can still start), then close."""
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            exchange.status = status
            try:
                await self._send_error(status, message, close=True)
            except _PeerGone:
                return False
            await self._linger()
        return False

    async def _send_error(self, status: int, message: str, *, close: bool = False) -> None:
        """Send a JSON error response. Raises: _PeerGone."""
        body = _error_body(status, message)
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("server", "mux"),
        ]
        if close or self.server._closing:
            headers.append(("connection", "close"))
        reason = _REASONS[status]
        head = h11.Response(status_code=status, headers=headers, reason=reason)
        if self.method != "HEAD":
            await self._send(head, h11.Data(data=body), h11.EndOfMessage())
        else:
            await self._send(head, h11.EndOfMessage())

    async def _send(self, *events: h11.Event) -> None:
        """Write events, all in one write.

        Raises:
          _PeerGone: the write failed, or took longer than send_timeout.
        """
        # Passthrough: a body is copied once, by the join, not by h11 and again here.
        pieces: list[bytes] = []
        for event in events:
            pieces.extend(self.h11.send_with_data_passthrough(event) or ())
        data = b"".join(pieces)
        if not data:
            return
        # A plain deadline scope rather than fail_after (a generator-based context manager):
        # this runs for every chunk of every stream.
        deadline = trio.CancelScope(deadline=trio.current_time() + self.limits.send_timeout)
        try:
            with deadline:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.h11.send_failed()
            self.peer_gone = True
            raise _PeerGone from exc
        except BaseException:
            # Cancelled mid-write: part of the message may be out, so the connection is unusable.
            self.h11.send_failed()
            raise
        if deadline.cancelled_caught:  # took longer than send_timeout
            self.h11.send_failed()
            self.peer_gone = True
            raise _PeerGone from trio.TooSlowError()

    async def _receive(self) -> bytes:
        """The peer's next bytes; b"" once it has closed or reset the connection."""
        try:
            # bytes() of a bytes object is the object itself; a bytearray gets copied for h11.
            return bytes(await self.stream.receive_some(READ_SIZE))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    async def _next_event(self) -> h11.Event:
        """The next h11 event, reading as needed.

        Raises:
          h11.RemoteProtocolError: the peer broke the protocol.
        """
        while True:
            event = self.h11.next_event()
            if isinstance(event, h11.Event):
                return event
            # We only ask for events while a request is incoming, so h11 cannot be PAUSED.
            assert event is h11.NEED_DATA, event
            self.h11.receive_data(await self._receive())

    async def _linger(self) -> None:
        """Half-close, then discard input until the peer closes too (for LINGER_TIMEOUT at most).

        Closing a socket with unread input makes the kernel send a reset, and a reset can
        destroy the response before the client has read it.
        """
        if not isinstance(self.stream, trio.abc.HalfCloseableStream):
            return
        with trio.move_on_after(LINGER_TIMEOUT):
            try:
                await self.stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            while await self._receive():
                pass

    def _log(self, exchange: _Exchange) -> None:
        # Never the query string (Gemini clients put keys in ?key=), headers or bodies. The path
        # is logged as sent: percent-encoded, so a decoded %0A cannot forge a log line.
        # Nothing sent: 499 (nginx's "client closed request") or 503 (cancelled by shutdown).
        status = exchange.status if exchange.status is not None else 499 if self.peer_gone else 503
        ms = (trio.current_time() - exchange.start) * 1000
        line = (exchange.method, exchange.path, status, exchange.model or "-", ms)
        access_logger.info("%s %s %d %s %.1fms", *line)


@contextlib.asynccontextmanager
async def _closing(body: object) -> AsyncIterator[None]:
    """Like ``contextlib.aclosing``, for a body that may be bytes or lack ``aclose``."""
    try:
        yield
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()


def _request(head: h11.Request, client: str) -> HttpRequest:
    """An HttpRequest for a head (body still empty)."""
    # h11 allows only visible ASCII in a target, so decoding cannot fail.
    raw_path, _, query = head.target.decode("ascii").partition("?")
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key, text = name.decode("ascii"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return HttpRequest(
        method=head.method.decode("ascii"),
        path=urllib.parse.unquote(raw_path),
        raw_path=raw_path,
        query=types.MappingProxyType(dict(urllib.parse.parse_qsl(query, keep_blank_values=True))),
        headers=types.MappingProxyType(headers),
        body=b"",
        client=client,
    )


def _head_size(head: h11.Request) -> int:
    """The size of a request head on the wire, give or take optional whitespace."""
    request_line = len(head.method) + len(head.target) + len(b"  HTTP/1.1\r\n")
    return request_line + sum(len(k) + len(v) + 4 for k, v in head.headers.raw_items()) + 2


def _peer_name(stream: trio.abc.Stream) -> str:
    """``host:port`` of a socket stream's peer, for logs; ``-`` for anything else."""
    try:
        host, port, *_ = stream.socket.getpeername()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, TypeError):  # not a TCP socket
        return "-"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
