"""HTTP to the upstreams: a keep-alive pool on h11 over trio, named timeouts, and errors that
name the provider.

Theory of operation
-------------------
:class:`Upstreams` is the gateway's HTTP/1.1 client. Every request to a provider goes through
:meth:`Upstreams.open_stream`: h11 (sans-io) makes and reads the bytes, trio moves them.

* **Connections** are kept per origin (scheme, host, port and the proxy in between) in a
  stack of idle connections: a request takes the most recently used one, so a busy origin
  reuses a few warm connections and the rest age out (:data:`KEEPALIVE_EXPIRY`). Before
  reuse, one ``poll()`` on that connection's socket tells whether the upstream closed it while
  idle; should it close it in the instant after, a request that got no byte of answer on a
  reused connection is sent once more on a new one. A response read to its end returns its
  connection to the stack; one abandoned half-way (an error, a client that went away) closes
  it at once, so the upstream sees the close and stops generating.
* **Proxies**: ``proxy-url`` (``http://`` or ``https://``, with ``user:password@`` for basic
  proxy authentication), else, with ``trust_env``, ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``
  as the vendors' SDKs read them. ``https`` upstreams are reached through a ``CONNECT``
  tunnel, ``http`` ones in absolute form.
* **TLS**: one ``ssl.SSLContext`` per process (certifi's CAs, or ``SSL_CERT_FILE``/``_DIR``
  with ``trust_env``), ALPN ``http/1.1``.
* **Bodies** in ``gzip`` or ``deflate`` are decoded as they arrive.

Every network wait sits under a named timeout from the provider's config (:class:`Timeouts`):

* **connect** (``connect-timeout``): DNS, TCP, the proxy tunnel and the TLS handshake.
* **first byte** (``first-byte-timeout``): from the moment the request starts going out to
  the complete response head.
* **idle** (``stream-timeout``): between two reads of the response body.

Expiry becomes ``UpstreamError(TIMEOUT, status 504)``; a refused connection, a failed DNS
lookup, a broken connection or a protocol violation becomes ``UpstreamError(UPSTREAM, 502)``.
Messages name the provider and the upstream host, never a credential: the values of credential
headers are scrubbed from any error text quoted, and errors that would quote a header value (h11
does, for an illegal one) carry no detail and no exception chain.

The OAuth flows (logins, token refreshes, Copilot's token exchange, Code Assist's project
discovery at login: a few calls an hour) go through the same pool, proxies and TLS: an
:class:`HttpClient` from :meth:`Upstreams.client` binds a proxy URL, short timeouts
(:data:`OAUTH_TIMEOUTS`) and a name for messages, and sends JSON and form bodies. Its errors
are the pool's UpstreamError; the callers turn them into their own (RefreshError, LoginError).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import logging
import math
import select
import ssl
import urllib.parse
import urllib.request
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import attrs
import h11
import httpx
import trio

from mux import __version__
from mux.config import ProviderConfig
from mux.errors import UpstreamError
from mux.framing import dumps, loads
from mux.ir import ErrorKind

__all__ = [
    "MAX_BODY_SIZE",
    "OAUTH_TIMEOUTS",
    "Headers",
    "HttpClient",
    "Reply",
    "Timeouts",
    "UpstreamResponse",
    "Upstreams",
    "scrub",
]

log = logging.getLogger("mux.upstream")

USER_AGENT = f"mux/{__version__}"
#: The most a whole (non-streamed) answer or an error body may hold. Answers with inline
#: images run to a few MiB; 64 MiB bounds a misbehaving upstream without refusing real ones.
MAX_BODY_SIZE = 64 * 1024 * 1024
#: Idle pooled connections are kept this long (the vendors' servers keep connections open
#: for a minute or more, and a new TLS handshake costs a round trip or two).
KEEPALIVE_EXPIRY = 30.0
#: Idle connections kept per origin; more than this many at once are closed when released.
#: A busy gateway runs a hundred or more requests to one vendor at once: each would otherwise
#: pay a new TCP and TLS handshake. The stack's unused tail ages out (KEEPALIVE_EXPIRY).
MAX_KEEPALIVE_CONNECTIONS = 128
#: Bytes asked of the socket per read.
READ_SIZE = 65536
#: What mux can decode (:func:`_decoder`); sent on every request.
ACCEPT_ENCODING = "gzip, deflate"

# Headers whose values are credentials: scrubbed from every message.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie"}
)
# Headers the client sets itself (framing and the hop to the upstream).
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


@attrs.frozen(kw_only=True)
class Timeouts:
    """Seconds allowed for each phase of an upstream call (``math.inf`` disables one)."""

    connect: float = 10.0
    first_byte: float = 120.0
    #: Between two chunks of the response body.
    idle: float = 120.0

    @classmethod
    def of(cls, config: ProviderConfig) -> Timeouts:
        """The timeouts a ``[[providers]]`` entry sets."""
        return cls(
            connect=config.connect_timeout,
            first_byte=config.first_byte_timeout,
            idle=config.stream_timeout,
        )


class Headers(Mapping[str, str]):
    """Response headers: names case-insensitive, repeated fields joined with ``", "``."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterator[tuple[str, str]] | list[tuple[str, str]] = ()) -> None:
        found: dict[str, str] = {}
        for name, value in fields:
            name = name.lower()
            found[name] = f"{found[name]}, {value}" if name in found else value
        self._fields = found

    def __getitem__(self, name: str) -> str:
        return self._fields[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"Headers({sorted(self._fields)!r})"


#: The OAuth calls' timeouts (:class:`HttpClient`): a token endpoint answers in a second or
#: two; a login should not hang for the two minutes a model's answer may take.
OAUTH_TIMEOUTS = Timeouts(connect=10.0, first_byte=30.0, idle=30.0)


@attrs.frozen(kw_only=True)
class Reply:
    """A whole upstream answer. ``headers`` is case-insensitive."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON.

        Raises:
          ValueError: the body is not JSON (FramingError: not UTF-8, not JSON, too deep).
        """
        return loads(self.body)


@functools.cache
def _ssl_context(trust_env: bool) -> ssl.SSLContext:
    """The TLS settings every connection shares (certifi's CAs, or ``SSL_CERT_FILE``/``_DIR``):
    loading a CA bundle takes tens of milliseconds, so it is done once per process."""
    context = httpx.create_ssl_context(trust_env=trust_env)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _secrets(headers: Mapping[str, str]) -> list[str]:
    """The credentials in ``headers`` (and the token of ``Bearer <token>``), longest first."""
    found = set()
    for name, value in headers.items():
        if name.lower() in _SECRET_HEADERS and value.strip():
            found.add(value)
            scheme, _, token = value.partition(" ")
            if token.strip():
                found.add(token.strip())
    return sorted(found, key=len, reverse=True)


def scrub(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    """``text`` with every secret in ``secrets`` replaced by ``<redacted>``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


# --------------------------------------------------------------------------------------------
# Where a request goes


@attrs.frozen
class _Proxy:
    """An HTTP proxy; ``authorization`` is the ``Proxy-Authorization`` value, if any."""

    tls: bool
    host: str
    port: int
    authorization: str | None = attrs.field(default=None, repr=False)


@attrs.frozen
class _Origin:
    """Where a connection goes: the pool's key."""

    tls: bool
    host: str
    port: int
    proxy: _Proxy | None


@attrs.frozen
class _Target:
    """A parsed request URL."""

    tls: bool
    host: str
    port: int
    #: ``host[:port]`` as the Host header and a CONNECT name it.
    authority: str
    #: ``/path?query``: the request target.
    path: str
    #: The URL without userinfo or fragment: the target in absolute form (through a proxy).
    absolute: str


def _split(url: str, schemes: tuple[str, ...]) -> urllib.parse.SplitResult:
    """``url`` split, or ValueError when it is not an absolute URL of one of ``schemes``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(url)
    parts.port  # raises ValueError for a port that is not a number or out of range
    return parts


@functools.lru_cache(maxsize=256)
def _target(url: str) -> _Target:
    """Raises ValueError for anything but an absolute ``http``/``https`` URL."""
    parts = _split(url, ("http", "https"))
    tls = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    name = f"[{host}]" if ":" in host else host
    authority = name if port == (443 if tls else 80) else f"{name}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(
        tls=tls, host=host, port=port, authority=authority, path=path,
        absolute=f"{parts.scheme}://{authority}{path}",
    )


@functools.lru_cache(maxsize=64)
def _proxy(url: str) -> _Proxy:
    """Raises ValueError for anything but an ``http``/``https`` proxy URL."""
    parts = _split(url, ("http", "https"))
    tls = parts.scheme == "https"
    authorization = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    port = parts.port or (443 if tls else 80)
    return _Proxy(tls=tls, host=parts.hostname or "", port=port, authorization=authorization)


def _environment_proxy(target: _Target, proxies: Mapping[str, str]) -> str | None:
    """The proxy ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` name for ``target``, unless
    ``NO_PROXY`` exempts it."""
    url = proxies.get("https" if target.tls else "http") or proxies.get("all")
    if not url:
        return None
    if urllib.request.proxy_bypass_environment(target.host, proxies):
        return None
    return url


# --------------------------------------------------------------------------------------------
# Connections


class _Connection:
    """One keep-alive connection: the stream (TLS or not), its socket, and h11's state."""

    __slots__ = ("stream", "socket", "h11", "idle_since", "reused")

    def __init__(self, stream: trio.abc.Stream, socket_stream: trio.SocketStream) -> None:
        self.stream = stream
        self.socket = socket_stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0
        self.reused = False

    def stale(self, now: float) -> bool:
        """Too long idle, or readable while idle (the upstream closed it, or sent garbage)."""
        if now - self.idle_since > KEEPALIVE_EXPIRY:
            return True
        return _readable(self.socket.socket.fileno())

    def close(self) -> None:
        """Close at once, without a TLS goodbye: the socket goes, the upstream sees EOF."""
        self.socket.socket.close()


def _readable(fd: int) -> bool:
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])  # pragma: no cover (Windows)


class _Stale(Exception):
    """A reused connection failed before any byte of the answer: send again on a new one."""


@attrs.define(eq=False)
class _Call:
    """What error messages need to know about one upstream call."""

    provider: str
    host: str
    timeouts: Timeouts
    secrets: list[str]

    def error(self, kind: ErrorKind, what: str, exc: BaseException | None = None) -> UpstreamError:
        reason = ""
        if exc is not None:
            detail = scrub(str(exc), self.secrets).strip() or type(exc).__name__
            reason = f" ({detail[:300]})"
        return UpstreamError(kind, f"{self.provider}: {self.host}: {what}{reason}")

    @contextlib.contextmanager
    def translate(self, what: str) -> Iterator[None]:
        """Transport and protocol exceptions as UpstreamError saying ``what`` failed, with the
        reason (the one place they are converted)."""
        try:
            yield
        except h11.LocalProtocolError:
            # No detail: h11 quotes the offending header value, which may hold a key.
            what = "the request is not valid HTTP (check the configured headers and keys)"
            raise self.error(ErrorKind.UPSTREAM, what) from None  # nor in a traceback
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                h11.RemoteProtocolError, zlib.error) as exc:
            raise self.error(ErrorKind.UPSTREAM, what, _reason(exc)) from exc


def _reason(exc: BaseException) -> BaseException:
    """The error that says why: trio wraps TLS errors (BrokenResourceError) and the failed
    attempts of a connect (an OSError caused by a group of them)."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        return cause.exceptions[-1]
    if isinstance(exc, trio.BrokenResourceError) and cause is not None:
        return cause
    return exc


def _decoder(headers: Headers) -> Callable[[bytes], bytes] | None:
    """The decoder of the body's ``content-encoding`` (None: none needed, or unknown)."""
    coding = headers.get("content-encoding", "").strip().lower()
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 16).decompress
    if coding == "deflate":
        return zlib.decompressobj().decompress
    return None


class UpstreamResponse:
    """An upstream answer whose head has arrived; the body is read with :meth:`chunks` or
    :meth:`read`, each wait under the idle timeout."""

    def __init__(self, connection: _Connection, head: h11.Response, call: _Call) -> None:
        self._connection = connection
        self._call = call
        self.status: int = head.status_code
        #: Case-insensitive.
        self.headers = Headers(
            (name.decode("ascii"), value.decode("latin-1")) for name, value in head.headers
        )
        #: Every byte of the body arrived; the connection may serve another request.
        self.complete = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (decoded from any content-coding).

        Raises:
          UpstreamError: TIMEOUT (504) when no byte arrives for the idle timeout; UPSTREAM
            (502) when the connection breaks or the framing is wrong.
        """
        call = self._call
        seconds = call.timeouts.idle
        if seconds < 0 or math.isnan(seconds):  # what trio.move_on_after refuses
            raise ValueError("the idle timeout must be a non-negative number")
        decode = _decoder(self.headers)
        connection = self._connection.h11
        stream = self._connection.stream
        with call.translate("failed while reading the answer"):
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    # A plain deadline scope per read: the hot path. One scope for the whole
                    # body is not possible: a cancel scope must not stay open across a yield.
                    with trio.CancelScope(deadline=trio.current_time() + seconds) as idle:
                        data = await stream.receive_some(READ_SIZE)
                    if idle.cancelled_caught:
                        what = f"the answer stalled: nothing arrived for {seconds:g}s"
                        raise call.error(ErrorKind.TIMEOUT, what)
                    connection.receive_data(data)
                elif type(event) is h11.Data:
                    chunk = bytes(event.data)
                    if decode is not None:
                        chunk = decode(chunk)
                    if chunk:
                        yield chunk
                elif type(event) is h11.EndOfMessage:
                    self.complete = True
                    return
                else:
                    raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}")

    async def read(self, limit: int = MAX_BODY_SIZE) -> bytes:
        """The whole body.

        Raises:
          UpstreamError: as :meth:`chunks`, or UPSTREAM when the body outgrows ``limit``.
        """
        body = bytearray()
        async with contextlib.aclosing(self.chunks()) as chunks:
            async for chunk in chunks:
                body += chunk
                if len(body) > limit:
                    raise self._call.error(
                        ErrorKind.UPSTREAM, f"the answer is larger than {limit} bytes"
                    )
        return bytes(body)


class Upstreams:
    """Every connection to every upstream; an async context manager.

    Args:
      trust_env: honour ``SSL_CERT_FILE``/``SSL_CERT_DIR``, and (for upstreams without a
        ``proxy-url``) ``HTTPS_PROXY``/``NO_PROXY`` and friends, as the vendors' SDKs do.
      ssl_context: the TLS settings (a private CA, client certificates); default: the
        system's trust as ``trust_env`` says.
    """

    def __init__(
        self, *, trust_env: bool = True, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._trust_env = trust_env
        self._ssl = ssl_context
        self._environment = urllib.request.getproxies_environment() if trust_env else {}
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._closed = False

    async def __aenter__(self) -> Upstreams:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every pooled connection (idempotent)."""
        self._closed = True
        for stack in self._idle.values():
            for connection in stack:
                connection.close()
        self._idle = {}

    def client(self, proxy_url: str | None = None, *, provider: str = "oauth") -> HttpClient:
        """An :class:`HttpClient` for the OAuth flows: through ``proxy_url`` (None: the
        environment's proxy, if ``trust_env``), errors naming ``provider``.

        Raises:
          RuntimeError: the Upstreams is closed.
        """
        if self._closed:
            raise RuntimeError("the upstream clients are closed")
        return HttpClient(upstreams=self, proxy_url=proxy_url, provider=provider)

    # ----------------------------------------------------------------------------------------
    # The pool

    def _origin(self, target: _Target, proxy_url: str | None) -> _Origin:
        if proxy_url is None and self._environment:
            proxy_url = _environment_proxy(target, self._environment)
        proxy = _proxy(proxy_url) if proxy_url else None
        return _Origin(tls=target.tls, host=target.host, port=target.port, proxy=proxy)

    def _checkout(self, origin: _Origin) -> _Connection | None:
        """The most recently used live idle connection to ``origin``, if any."""
        stack = self._idle.get(origin)
        if not stack:
            return None
        now = trio.current_time()
        while stack:
            connection = stack.pop()
            if not connection.stale(now):
                connection.reused = True
                return connection
            connection.close()
        return None

    def _release(self, origin: _Origin, connection: _Connection, complete: bool) -> None:
        """Back to the idle stack when the exchange ended cleanly and both sides keep the
        connection; closed otherwise."""
        h = connection.h11
        if complete and not self._closed and h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
            connection.idle_since = trio.current_time()
            stack = self._idle.setdefault(origin, [])
            stack.append(connection)
            if len(stack) > MAX_KEEPALIVE_CONNECTIONS:
                stack.pop(0).close()
        else:
            connection.close()

    async def _connect(self, origin: _Origin, target: _Target, call: _Call) -> _Connection:
        """A new connection to ``origin`` (through its proxy), under the connect timeout."""
        hop = origin.proxy or origin
        socket_stream: trio.SocketStream | None = None
        with trio.move_on_after(call.timeouts.connect) as scope:
            try:
                with call.translate("cannot connect"):
                    socket_stream = await trio.open_tcp_stream(hop.host, hop.port)
                    stream: trio.abc.Stream = socket_stream
                    if origin.proxy is not None:
                        if origin.proxy.tls:
                            stream = await self._tls(stream, origin.proxy.host)
                        if origin.tls:
                            await _tunnel(stream, target, origin.proxy, call)
                    if origin.tls:
                        stream = await self._tls(stream, origin.host)
                    return _Connection(stream, socket_stream)
            except BaseException:
                if socket_stream is not None:
                    socket_stream.socket.close()
                raise
        assert scope.cancelled_caught
        raise call.error(
            ErrorKind.TIMEOUT, f"could not connect within {call.timeouts.connect:g}s"
        )

    async def _tls(self, stream: trio.abc.Stream, host: str) -> trio.SSLStream:
        context = self._ssl or _ssl_context(self._trust_env)
        wrapped = trio.SSLStream(stream, context, server_hostname=host, https_compatible=True)
        await wrapped.do_handshake()
        return wrapped

    async def _exchange(
        self, connection: _Connection, request: list[h11.Event], call: _Call
    ) -> h11.Response:
        """Send ``request`` and read the answer's head (under the first-byte timeout).

        Raises:
          _Stale: a reused connection failed before any byte of the answer arrived.
        """
        h = connection.h11
        heard = False
        seconds = call.timeouts.first_byte
        with trio.CancelScope(deadline=trio.current_time() + seconds) as scope:
            try:
                with call.translate("failed while sending the request"):
                    data = b"".join(h.send(event) or b"" for event in request)
                    await connection.stream.send_all(data)
                with call.translate("failed while waiting for the answer"):
                    while True:
                        event = h.next_event()
                        if event is h11.NEED_DATA:
                            received = await connection.stream.receive_some(READ_SIZE)
                            heard = heard or bool(received)
                            h.receive_data(received)
                        elif type(event) is h11.Response:
                            return event
                        elif type(event) is not h11.InformationalResponse:
                            raise h11.RemoteProtocolError("the connection closed before an answer")
            except UpstreamError as error:
                if connection.reused and not heard and error.kind is ErrorKind.UPSTREAM:
                    raise _Stale() from error
                raise
        assert scope.cancelled_caught
        raise call.error(ErrorKind.TIMEOUT, f"no answer within {seconds:g}s")

    # ----------------------------------------------------------------------------------------
    # Requests

    @contextlib.asynccontextmanager
    async def open_stream(
        self,
        method: str,
        url: str,
        *,
        provider: str,
        timeouts: Timeouts,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        proxy_url: str | None = None,
    ) -> AsyncIterator[UpstreamResponse]:
        """Send a request; yield the response once its head has arrived. Leaving the block
        before the body's end closes the connection.

        Args:
          provider: the name that error messages and logs give the upstream.

        Raises:
          RuntimeError: the Upstreams is closed.
          UpstreamError: TIMEOUT (504) when connecting or the response head took too long;
            UPSTREAM (502) when the upstream cannot be reached or breaks the protocol.
        """
        if self._closed:
            raise RuntimeError("the upstream clients are closed")
        headers = headers or {}
        # The config's base-url and proxy-url; no detail, as a URL may carry a password.
        try:
            target = _target(url)
        except ValueError:
            raise UpstreamError(ErrorKind.UPSTREAM, f"{provider}: invalid URL") from None
        try:
            origin = self._origin(target, proxy_url)
        except ValueError:
            raise UpstreamError(ErrorKind.UPSTREAM, f"{provider}: invalid proxy-url") from None
        call = _Call(provider, target.host, timeouts, _secrets(headers))
        request = _request(method, target, origin, headers, body, call)
        started = trio.current_time()
        while True:
            connection = self._checkout(origin) or await self._connect(origin, target, call)
            try:
                head = await self._exchange(connection, request, call)
                break
            except _Stale:
                connection.close()  # and again, on a new connection
            except BaseException:
                connection.close()
                raise
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s %s%s -> %d in %.0fms", provider, method, target.authority,
                      urllib.parse.urlsplit(target.path).path, head.status_code,
                      (trio.current_time() - started) * 1000)
        response = UpstreamResponse(connection, head, call)
        try:
            yield response
        finally:
            self._release(origin, connection, response.complete)

    async def request(
        self,
        method: str,
        url: str,
        *,
        provider: str,
        timeouts: Timeouts,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        proxy_url: str | None = None,
    ) -> Reply:
        """Send a request and read the whole answer.

        Raises:
          UpstreamError: as :meth:`open_stream` and :meth:`UpstreamResponse.read`.
        """
        async with self.open_stream(
            method, url, provider=provider, timeouts=timeouts, headers=headers, body=body,
            proxy_url=proxy_url,
        ) as response:
            data = await response.read()
            return Reply(status=response.status, headers=response.headers, body=data)

    async def post(self, url: str, body: bytes, **kwargs: Any) -> Reply:
        """``request("POST", url, body=body, ...)``."""
        return await self.request("POST", url, body=body, **kwargs)

    async def get(self, url: str, **kwargs: Any) -> Reply:
        """``request("GET", url, ...)``."""
        return await self.request("GET", url, **kwargs)


@attrs.frozen(kw_only=True)
class HttpClient:
    """:class:`Upstreams` bound to a proxy, timeouts and a provider name: what the OAuth
    flows call (whole answers, JSON and form bodies). Nothing to close: the connections are
    the pool's.

    Every method raises UpstreamError: TIMEOUT when a phase outlasts its timeout, UPSTREAM
    when the URL is invalid or the host cannot be reached; the message names ``provider`` and
    the host, never a credential header's value (the body is never quoted).
    """

    upstreams: Upstreams
    proxy_url: str | None = None
    timeouts: Timeouts = OAUTH_TIMEOUTS
    provider: str = "oauth"

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Reply:
        """Send a request and read the whole answer (redirects are not followed)."""
        return await self.upstreams.request(
            method, url, provider=self.provider, timeouts=self.timeouts, headers=headers,
            body=body, proxy_url=self.proxy_url,
        )

    async def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> Reply:
        """``GET url``."""
        return await self.request("GET", url, headers=headers)

    async def post_json(
        self, url: str, payload: Any, *, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """``POST url`` with ``payload`` as a JSON body."""
        body = dumps(payload)
        return await self.request(
            "POST", url, body=body,
            headers={"content-type": "application/json", **(headers or {})},
        )

    async def post_form(
        self, url: str, fields: Mapping[str, str], *, headers: Mapping[str, str] | None = None
    ) -> Reply:
        """``POST url`` with ``fields`` as an ``application/x-www-form-urlencoded`` body."""
        body = urllib.parse.urlencode(fields).encode("ascii")
        return await self.request(
            "POST", url, body=body,
            headers={"content-type": "application/x-www-form-urlencoded", **(headers or {})},
        )


def _request(
    method: str,
    target: _Target,
    origin: _Origin,
    headers: Mapping[str, str],
    body: bytes | None,
    call: _Call,
) -> list[h11.Event]:
    """The h11 events of a request: mux's defaults, then the caller's headers, then framing.

    Raises:
      UpstreamError: a header name or value is not valid HTTP (no detail: it may be a key).
    """
    fields = {"host": target.authority, "user-agent": USER_AGENT,
              "accept-encoding": ACCEPT_ENCODING}
    for name, value in headers.items():
        name = name.lower()
        if name not in _OWN_HEADERS:
            fields[name] = value
    if origin.proxy is not None and not origin.tls and origin.proxy.authorization:
        fields["proxy-authorization"] = origin.proxy.authorization
    if body is not None or method in ("POST", "PUT", "PATCH"):
        fields["content-length"] = str(len(body or b""))
    # Through a proxy, a plain-HTTP request goes in absolute form; a tunnel needs none.
    path = target.absolute if origin.proxy is not None and not origin.tls else target.path
    try:
        encoded = [(name.encode("ascii"), value.encode("ascii")) for name, value in fields.items()]
    except UnicodeError:  # no detail, as below
        what = "a header value is not ASCII (check the configured headers and keys)"
        raise call.error(ErrorKind.UPSTREAM, what) from None
    with call.translate("failed while preparing the request"):
        events: list[h11.Event] = [h11.Request(method=method, target=path, headers=encoded)]
    if body:
        events.append(h11.Data(data=body))
    events.append(h11.EndOfMessage())
    return events


async def _tunnel(stream: trio.abc.Stream, target: _Target, proxy: _Proxy, call: _Call) -> None:
    """Ask the proxy for a ``CONNECT`` tunnel to ``target``.

    Raises:
      UpstreamError: the proxy refused (its status is named).
    """
    h = h11.Connection(h11.CLIENT)
    authority = f"{target.host}:{target.port}" if ":" not in target.host else (
        f"[{target.host}]:{target.port}"
    )
    fields = [("host", authority)]
    if proxy.authorization:
        fields.append(("proxy-authorization", proxy.authorization))
    await stream.send_all(
        h.send(h11.Request(method="CONNECT", target=authority, headers=fields)) or b""
    )
    while True:
        event = h.next_event()
        if event is h11.NEED_DATA:
            h.receive_data(await stream.receive_some(READ_SIZE))
        elif type(event) is h11.Response:
            if 200 <= event.status_code < 300:
                return
            what = f"the proxy refused the tunnel ({event.status_code})"
            raise call.error(ErrorKind.UPSTREAM, what)
        elif type(event) is not h11.InformationalResponse:
            raise h11.RemoteProtocolError("the proxy closed the connection")
