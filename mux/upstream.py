"""HTTP to the upstreams: pooled clients, named timeouts, and errors that name the provider.

Theory of operation
-------------------
:class:`Upstreams` owns one ``httpx.AsyncClient`` per proxy URL (``None``: direct), made on
first use and closed when the ``async with`` around it ends (the CLI opens it around the
server). httpx runs on trio through anyio and pools keep-alive connections per client.

Every network wait sits under a named timeout from the provider's config (:class:`Timeouts`):

* **connect** (``connect-timeout``): DNS and the TCP/TLS handshake; httpx's own connect
  timeout.
* **first byte** (``first-byte-timeout``): from the moment the request head starts going
  out to the complete response head. A trio cancel scope whose deadline is set by httpcore's
  ``trace`` hook when it starts sending the request, so connect time is not counted twice.
* **idle** (``stream-timeout``): between two chunks of the response body, a
  ``trio.move_on_after`` around each read.

Expiry becomes ``UpstreamError(TIMEOUT, status 504)``; a refused connection, a failed DNS
lookup, a broken connection or a protocol violation becomes ``UpstreamError(UPSTREAM, 502)``.
Messages name the provider and the upstream host, never a credential: the values of credential
headers are scrubbed from any error text quoted, and errors that would quote a header value (h11
does, for an illegal one) carry no detail and no exception chain.

:meth:`Upstreams.open_stream` yields an :class:`UpstreamResponse` whose body is read chunk by
chunk; leaving the ``async with`` (normally, by an error, or by cancellation when the client
went away) closes the response under a shield, and httpcore drops a connection whose response
was not read to its end, so the upstream sees the connection close at once and stops
generating. :meth:`Upstreams.request` is the whole-body shorthand.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import attrs
import httpx
import trio

from mux import __version__
from mux.config import ProviderConfig
from mux.errors import UpstreamError
from mux.ir import ErrorKind

__all__ = [
    "MAX_BODY_SIZE",
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
#: Upper bound on closing a response or a client; it runs shielded.
CLOSE_TIMEOUT = 1.0
#: Idle pooled connections are kept this long (httpx's default is 5 s; the vendors' servers
#: keep connections open for a minute or more, and a new TLS handshake costs a round trip or two).
KEEPALIVE_EXPIRY = 30.0
MAX_KEEPALIVE_CONNECTIONS = 32

# Headers whose values are credentials: scrubbed from every message.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie"}
)


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


@attrs.frozen(kw_only=True)
class Reply:
    """A whole upstream answer. ``headers`` is case-insensitive."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@functools.cache
def _ssl_context(trust_env: bool) -> ssl.SSLContext:
    """The TLS settings every client shares (certifi's CAs, or ``SSL_CERT_FILE``/``_DIR``):
    loading a CA bundle takes tens of milliseconds, so it is done once per process."""
    return httpx.create_ssl_context(trust_env=trust_env)


def _seconds(value: float) -> float | None:
    return None if math.isinf(value) else value


def _where(url: httpx.URL) -> str:
    """``scheme://host:port/path`` of a URL: no userinfo, no query, for messages and logs."""
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


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


@attrs.define(eq=False)
class _Call:
    """What error messages need to know about one upstream call."""

    provider: str
    url: httpx.URL
    timeouts: Timeouts
    secrets: list[str]

    def error(self, kind: ErrorKind, what: str, exc: BaseException | None = None) -> UpstreamError:
        reason = ""
        if exc is not None:
            detail = scrub(str(exc), self.secrets).strip() or type(exc).__name__
            reason = f" ({detail[:300]})"
        message = f"{self.provider}: {self.url.host}: {what}{reason}"
        return UpstreamError(kind, message)

    @contextlib.contextmanager
    def translate(self, phase: str) -> Iterator[None]:
        """httpx's exceptions as UpstreamError (the one place they are converted)."""
        try:
            yield
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            seconds = self.timeouts.connect
            raise self.error(ErrorKind.TIMEOUT, f"could not connect within {seconds:g}s") from exc
        except httpx.TimeoutException as exc:  # read/write timeouts: not set, but be exact
            raise self.error(ErrorKind.TIMEOUT, f"timed out while {phase}") from exc
        except httpx.ConnectError as exc:
            raise self.error(ErrorKind.UPSTREAM, "cannot connect", exc) from exc
        except httpx.LocalProtocolError:
            # No detail: h11 quotes the offending header value, which may hold a key.
            what = "the request is not valid HTTP (check the configured headers and keys)"
            raise self.error(ErrorKind.UPSTREAM, what) from None  # nor in a traceback
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise self.error(ErrorKind.UPSTREAM, f"failed while {phase}", exc) from exc


class UpstreamResponse:
    """An upstream answer whose head has arrived; the body is read with :meth:`chunks` or
    :meth:`read`, each wait under the idle timeout."""

    def __init__(self, response: httpx.Response, call: _Call) -> None:
        self._response = response
        self._call = call
        self.status: int = response.status_code
        #: Case-insensitive.
        self.headers: Mapping[str, str] = response.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (decoded from any content-coding).

        Raises:
          UpstreamError: TIMEOUT (504) when no byte arrives for the idle timeout; UPSTREAM
            (502) when the connection breaks or the framing is wrong.
        """
        call = self._call
        seconds = call.timeouts.idle
        if seconds < 0 or math.isnan(seconds):  # what trio.move_on_after refused
            raise ValueError("the idle timeout must be a non-negative number")
        pieces = self._response.aiter_bytes()
        try:
            while True:
                # A plain deadline scope per wait: the hot path, so no move_on_after wrapper
                # and no translate() context manager (httpx errors are rare; they are
                # converted below, by translate() all the same). One scope for the whole
                # body is not possible: a cancel scope must not stay open across a yield.
                with trio.CancelScope(deadline=trio.current_time() + seconds) as idle:
                    try:
                        chunk = await anext(pieces)
                    except StopAsyncIteration:
                        return
                    except (httpx.HTTPError, httpx.InvalidURL) as exc:
                        with call.translate("reading the answer"):
                            raise exc
                if idle.cancelled_caught:
                    what = f"the answer stalled: nothing arrived for {seconds:g}s"
                    raise call.error(ErrorKind.TIMEOUT, what)
                if chunk:
                    yield chunk
        finally:
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                await pieces.aclose()  # type: ignore[attr-defined]

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
    """The HTTP clients to every upstream, one per proxy URL; an async context manager.

    Args:
      trust_env: honour ``SSL_CERT_FILE``/``SSL_CERT_DIR``, and (for upstreams without a
        ``proxy-url``) ``HTTPS_PROXY``/``NO_PROXY`` and friends, as the vendors' SDKs do.
    """

    def __init__(self, *, trust_env: bool = True) -> None:
        self._trust_env = trust_env
        self._clients: dict[str | None, httpx.AsyncClient] = {}
        self._closed = False

    async def __aenter__(self) -> Upstreams:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every client and its pooled connections (idempotent)."""
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
            for client in clients:
                await client.aclose()

    def client(self, proxy_url: str | None = None) -> httpx.AsyncClient:
        """The client for ``proxy_url`` (made on first use).

        Raises:
          RuntimeError: the Upstreams is closed.
        """
        if self._closed:
            raise RuntimeError("the upstream clients are closed")
        client = self._clients.get(proxy_url)
        if client is None:
            client = self._clients[proxy_url] = httpx.AsyncClient(
                proxy=proxy_url,
                trust_env=self._trust_env,
                verify=_ssl_context(self._trust_env),
                headers={"user-agent": USER_AGENT},
                follow_redirects=False,
                limits=httpx.Limits(
                    max_connections=None,
                    max_keepalive_connections=MAX_KEEPALIVE_CONNECTIONS,
                    keepalive_expiry=KEEPALIVE_EXPIRY,
                ),
            )
        return client

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
        """Send a request; yield the response once its head has arrived.

        Args:
          provider: the name that error messages and logs give the upstream.

        Raises:
          UpstreamError: TIMEOUT (504) when connecting or the response head took too long;
            UPSTREAM (502) when the upstream cannot be reached or breaks the protocol.
        """
        headers = dict(headers or {})
        # The config's base-url and proxy-url; no detail, as a URL may carry a password.
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise UpstreamError(ErrorKind.UPSTREAM, f"{provider}: invalid URL") from None
        try:
            client = self.client(proxy_url)
        except (httpx.InvalidURL, ValueError):
            raise UpstreamError(ErrorKind.UPSTREAM, f"{provider}: invalid proxy-url") from None
        call = _Call(provider, parsed, timeouts, _secrets(headers))
        try:
            with call.translate("preparing the request"):
                request = client.build_request(
                    method,
                    url,
                    headers=headers,
                    content=body,
                    timeout=httpx.Timeout(
                        None, connect=_seconds(timeouts.connect), pool=_seconds(timeouts.connect)
                    ),
                )
        except UnicodeError:  # a header value that is not ASCII; no detail, as above
            what = "a header value is not ASCII (check the configured headers and keys)"
            raise call.error(ErrorKind.UPSTREAM, what) from None
        first_byte = trio.CancelScope()

        async def trace(event: str, info: Mapping[str, Any]) -> None:
            # The request head starts going out: from here on, the first-byte clock runs.
            if event.endswith(".send_request_headers.started"):
                first_byte.deadline = trio.current_time() + timeouts.first_byte

        request.extensions["trace"] = trace
        started = trio.current_time()
        response: httpx.Response | None = None
        with first_byte:
            with call.translate("sending the request"):
                response = await client.send(request, stream=True)
        if response is None:  # the first-byte deadline passed (cancelled_caught)
            what = f"no answer within {timeouts.first_byte:g}s"
            raise call.error(ErrorKind.TIMEOUT, what)
        ms = (trio.current_time() - started) * 1000
        log.debug("%s: %s %s -> %d in %.0fms", provider, method, _where(call.url),
                  response.status_code, ms)
        try:
            yield UpstreamResponse(response, call)
        finally:
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                await response.aclose()

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
