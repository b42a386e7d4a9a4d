"""The endpoint table and the handlers behind it.

A request flows one way: HTTP request → the route's format parses the body into the IR → the
provider serving the model answers (whole, or as stream events) → the same format renders the
answer. Every :class:`~mux.errors.MuxError` raised on the way becomes an error body in the
client's format, with its status, at one place (:meth:`Gateway.handle`).

Which format a client speaks is the route's, except on the paths several formats share
(``GET /v1/models``): there the client's headers tell (:func:`_client_format`).

Two management endpoints show and change the router's live state (what ``mux status`` and
``mux reset`` ask a running server): ``GET /mux/status`` lists every provider's accounts with
their state, requests in flight and running cooldowns; ``POST /mux/reset`` (optional body
``{"provider": ..., "account": ...}``) ends cooldowns by hand. They answer only loopback
clients (:func:`_check_management_access`), even when the gateway listens on every interface.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from types import ModuleType
from typing import Any

import attrs

from mux import ir
from mux.errors import MuxError, RequestError
from mux.formats import (
    anthropic,
    gemini,
    ollama,
    openai_chat,
    openai_completions,
    openai_responses,
)
from mux.framing import FramingError, dumps, loads
from mux.providers import Provider
from mux.router import AccountStatus, Cooldown, Router
from mux.server import HttpRequest, HttpResponse
from mux.upstream import scrub

__all__ = ["Gateway", "decode_json", "error_response"]

log = logging.getLogger("mux.routes")

_JSON = ("content-type", "application/json")
_SSE = "text/event-stream"
_NDJSON = "application/x-ndjson"


def _stream_headers(content_type: str) -> tuple[tuple[str, str], ...]:
    return (
        ("content-type", content_type),
        ("cache-control", "no-cache"),
        # Tells nginx-style proxies in front of mux not to buffer the stream.
        ("x-accel-buffering", "no"),
    )


def _json_response(body: Any, status: int = 200, model: str | None = None) -> HttpResponse:
    return HttpResponse(status=status, headers=[_JSON], body=dumps(body), model=model)


def error_response(format_: ModuleType, error: MuxError) -> HttpResponse:
    """``error`` as ``format_``'s clients expect it: their envelope, its status."""
    headers = [_JSON]
    if error.retry_after is not None:
        headers.append(("retry-after", str(max(0, round(error.retry_after)))))
    return HttpResponse(
        status=error.status, headers=headers, body=dumps(format_.render_error(error))
    )


def decode_json(body: bytes) -> Any:
    """The request body as JSON.

    Raises:
      RequestError: the body is empty or not JSON.
    """
    if not body.strip():
        raise RequestError("the request body is empty: expected a JSON object")
    try:
        return loads(body)
    except FramingError as exc:
        raise RequestError(f"the request body is not valid JSON ({exc})") from None


@attrs.frozen
class Dialect:
    """How one endpoint's clients want a generation: parsed, answered whole, and streamed."""

    format: ModuleType
    parse: Callable[[object], ir.Request]
    #: Renders a whole answer; the request it answers is there for formats that echo it.
    render_response: Callable[[ir.Response, ir.Request], Any]
    stream_renderer: Callable[[ir.Request], Any]
    stream_content_type: str = _SSE
    #: Whether the body is the format's own request (not e.g. Ollama's /api/generate), so a
    #: same-format upstream can receive it as it came (:class:`ir.Origin`).
    forwardable: bool = True

    def parse_http(self, request: HttpRequest) -> ir.Request:
        """The IR request in an HTTP request's body, with its origin when forwardable.

        Raises:
          RequestError: the body is not JSON or not a valid request of this format.
        """
        body = decode_json(request.body)
        parsed = self.parse(body)
        if not self.forwardable:
            return parsed
        headers = {name: request.headers[name] for name in _ORIGIN_HEADERS if name in request.headers}
        origin = ir.Origin(format=self.format.NAME, body=body, headers=headers)
        return attrs.evolve(parsed, origin=origin)


#: Client headers that change what a request means, kept for a same-format upstream.
_ORIGIN_HEADERS = ("anthropic-beta", "anthropic-version")


def _answer_only(render: Callable[[ir.Response], Any]) -> Callable[[ir.Response, ir.Request], Any]:
    return lambda response, request: render(response)


def _dialect(format_: ModuleType, content_type: str = _SSE, *, echoes: bool = False) -> Dialect:
    """The dialect of a format's own endpoint; ``echoes``: its whole answers repeat the
    request's settings (OpenAI Responses), so its renderer takes the request too."""
    render = format_.render_response if echoes else _answer_only(format_.render_response)
    return Dialect(format_, format_.parse_request, render, format_.StreamRenderer, content_type)


@attrs.define(eq=False)
class Gateway:
    """The application: routes requests to providers through the formats."""

    providers: Sequence[Provider]

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one HTTP request; never raises for anything a client can send."""
        route, match, allowed = _find_route(request)
        if route is None:
            format_ = _client_format(request, _format_for_path(request.path))
            if allowed:
                methods = ", ".join(sorted(allowed))
                message = f"{request.method} is not allowed on {request.path}; use {methods}"
                response = error_response(format_, RequestError(message, status=405))
                return attrs.evolve(response, headers=[*response.headers, ("allow", methods)])
            message = f"no such endpoint: {request.method} {request.path}"
            return error_response(
                format_, RequestError(message, kind=ir.ErrorKind.NOT_FOUND)
            )
        assert match is not None
        try:
            return await route.endpoint(self, request, match)
        except MuxError as error:
            format_ = route.format or _client_format(request, _format_for_path(request.path))
            return error_response(format_, error)

    # ----------------------------------------------------------------------------------------

    def provider_for(self, model: str) -> Provider:
        """The provider serving ``model``.

        Raises:
          RequestError: no provider serves it (404, ``model_not_found``).
        """
        for provider in self.providers:
            if provider.serves(model):
                return provider
        raise RequestError(
            f"the model {model!r} does not exist or is not served by this gateway",
            param="model",
            kind=ir.ErrorKind.NOT_FOUND,
        )

    def models(self) -> list[ir.ModelInfo]:
        seen: dict[str, ir.ModelInfo] = {}
        for provider in self.providers:
            for model in provider.models():
                seen.setdefault(model.id, model)
        return list(seen.values())

    def model(self, model_id: str) -> ir.ModelInfo:
        """The model ``model_id``, listed or merely served (any ``fake*`` name is).

        Raises:
          RequestError: no provider serves it.
        """
        for model in self.models():
            if model.id == model_id:
                return model
        self.provider_for(model_id)
        return ir.ModelInfo(id=model_id)

    async def generate(self, dialect: Dialect, request: ir.Request) -> HttpResponse:
        """Answer an IR request in ``dialect``, whole or streamed as the request asks."""
        provider = self.provider_for(request.model)
        if not request.stream:
            response = await provider.complete(request)
            return _json_response(dialect.render_response(response, request), model=request.model)
        events = provider.stream(request)
        try:
            # Wait for the first event before answering 200: a provider that fails at once
            # must give the client a real error status, not a stream that breaks.
            first = await anext(events)
        except BaseException:
            await events.aclose()
            raise
        return HttpResponse(
            status=200,
            headers=_stream_headers(dialect.stream_content_type),
            body=_render_stream(dialect.stream_renderer(request), first, events),
            model=request.model,
        )

    async def count_tokens(self, request: ir.Request) -> int:
        return await self.provider_for(request.model).count_tokens(request)


async def _render_stream(
    renderer: Any, first: ir.Event, events: AsyncIterator[ir.Event]
) -> AsyncIterator[bytes]:
    """The client's stream bytes. It always ends with a Finish or a StreamError, so that a
    format's closing bytes (Gemini's ``]``, Chat's ``[DONE]``) are written even when the
    provider's events stop short."""
    last: ir.Event = first
    async with aclosing(events):
        try:
            yield renderer.render(first)
            async for last in events:
                chunk = renderer.render(last)
                if chunk:
                    yield chunk
        except MuxError as error:
            last = ir.StreamError(kind=error.kind, message=error.message, status=error.status)
            yield renderer.render(last)
    if not isinstance(last, (ir.Finish, ir.StreamError)):
        message = "the upstream stream ended before it finished"
        yield renderer.render(ir.StreamError(kind=ir.ErrorKind.UPSTREAM, message=message, status=502))


# --------------------------------------------------------------------------------------------
# Endpoints

Endpoint = Callable[[Gateway, HttpRequest, "re.Match[str]"], Awaitable[HttpResponse]]


def _generation(dialect: Dialect) -> Endpoint:
    """The endpoint of a format whose body names the model and whether to stream."""

    async def endpoint(gateway: Gateway, request: HttpRequest, match: re.Match[str]) -> HttpResponse:
        return await gateway.generate(dialect, dialect.parse_http(request))

    return endpoint


async def _healthz(gateway: Gateway, request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    return _json_response({"status": "ok"})


async def _anthropic_count_tokens(
    gateway: Gateway, request: HttpRequest, match: re.Match[str]
) -> HttpResponse:
    ir_request = anthropic.parse_count_tokens(decode_json(request.body))
    return _json_response(anthropic.render_count_tokens(await gateway.count_tokens(ir_request)))


async def _gemini_generate(
    gateway: Gateway, request: HttpRequest, match: re.Match[str]
) -> HttpResponse:
    """``models/{model}:{verb}``: the model and the streaming choice live in the URL."""
    model, verb = match["model"], match["verb"]
    if verb == "countTokens":
        counted = gemini.parse_count_tokens(decode_json(request.body))
        count = await gateway.count_tokens(attrs.evolve(counted, model=model))
        return _json_response(gemini.render_count_tokens(count))
    # Without ?alt=sse a Gemini stream is one JSON array, written as it grows.
    sse = request.query.get("alt") == "sse"
    dialect = Dialect(
        gemini, gemini.parse_request, _answer_only(gemini.render_response),
        lambda r: gemini.StreamRenderer(r, sse=sse), _SSE if sse else "application/json",
    )
    parsed = dialect.parse_http(request)
    stream = verb == "streamGenerateContent"
    return await gateway.generate(dialect, attrs.evolve(parsed, model=model, stream=stream))


async def _list_models(gateway: Gateway, request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    format_ = _client_format(request, _format_for_path(request.path))
    return _json_response(format_.render_models(gateway.models()))


async def _get_model(gateway: Gateway, request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    format_ = _client_format(request, _format_for_path(request.path))
    return _json_response(format_.render_model(gateway.model(match["model"])))


async def _ollama_tags(gateway: Gateway, request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    return _json_response(ollama.render_tags(gateway.models()))


async def _ollama_ps(gateway: Gateway, request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    return _json_response(ollama.render_ps(gateway.models()))


async def _ollama_version(
    gateway: Gateway, request: HttpRequest, match: re.Match[str]
) -> HttpResponse:
    return _json_response({"version": ollama.VERSION})


async def _ollama_show(gateway: Gateway, request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    body = decode_json(request.body)
    name = body.get("model") or body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str):
        raise RequestError("model: expected a model name", param="model")
    try:
        model = gateway.model(name)
    except RequestError:
        raise RequestError(f"model '{name}' not found", kind=ir.ErrorKind.NOT_FOUND) from None
    return _json_response(ollama.render_show(model))


# --------------------------------------------------------------------------------------------
# Management: the router's live state

#: Longest cooldown reason shown (an upstream's message can be a whole HTML page).
_MAX_REASON = 300


def _is_loopback(client: str) -> bool:
    """Whether ``host:port`` (``[v6]:port``) names a loopback peer; False for anything else."""
    host = client[1:].partition("]")[0] if client.startswith("[") else client.rpartition(":")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _check_management_access(request: HttpRequest) -> None:
    """Let a management request through, or say why not.

    Raises:
      RequestError: 403 from a peer that is not loopback.
    """
    if not _is_loopback(request.client):
        raise RequestError(
            f"{request.path} answers only clients on this machine (loopback)",
            kind=ir.ErrorKind.PERMISSION,
        )


def _routers(gateway: Gateway) -> list[Router]:
    return [p for p in gateway.providers if isinstance(p, Router)]


def _cooldown_json(cooldown: Cooldown, secrets: list[str], wall_now: float) -> dict[str, Any]:
    until = wall_now + cooldown.remaining
    reason = scrub(cooldown.reason, secrets)
    if len(reason) > _MAX_REASON:
        reason = reason[: _MAX_REASON - 1] + "…"
    iso = datetime.datetime.fromtimestamp(until, datetime.UTC).isoformat(timespec="seconds")
    return {
        "scope": cooldown.scope,
        "state": cooldown.state.value,
        "until": round(until, 3),
        "until_iso": iso.replace("+00:00", "Z"),
        "remaining": round(max(cooldown.remaining, 0.0), 3),
        "status": cooldown.status,
        "reason": reason,
        "failures": cooldown.failures,
    }


def _account_json(status: AccountStatus, secrets: list[str], wall_now: float) -> dict[str, Any]:
    return {
        "id": status.account,
        "state": status.state.value,
        "in_flight": status.in_flight,
        "cooldowns": [_cooldown_json(c, secrets, wall_now) for c in status.cooldowns],
    }


async def _mux_status(gateway: Gateway, request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    """Every provider's accounts with state, load and cooldowns (``until``: Unix time)."""
    _check_management_access(request)
    wall_now = time.time()
    providers = []
    for router in _routers(gateway):
        by_provider: dict[str, list[AccountStatus]] = {p.name: [] for p in router.providers}
        for status in router.status():
            by_provider[status.provider].append(status)
        for provider in router.providers:
            secrets = [a.secret for a in provider.accounts() if a.secret]
            accounts = [_account_json(s, secrets, wall_now) for s in by_provider[provider.name]]
            providers.append({"name": provider.name, "accounts": accounts})
    return _json_response({"now": round(wall_now, 3), "providers": providers})


def _reset_target(body: bytes) -> tuple[str | None, str | None]:
    """The optional ``provider`` and ``account`` of a reset request's body.

    Raises:
      RequestError: the body is not a JSON object of those (string) fields.
    """
    if not body.strip():
        return None, None
    data = decode_json(body)
    if not isinstance(data, dict):
        raise RequestError("the request body must be a JSON object {provider, account}")
    unknown = sorted(set(data) - {"provider", "account"})
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(unknown)}: expected provider, account")
    for field in ("provider", "account"):
        if data.get(field) is not None and not isinstance(data[field], str):
            raise RequestError(f"{field}: expected a string", param=field)
    return data.get("provider"), data.get("account")


async def _mux_reset(gateway: Gateway, request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    """End the cooldowns of every account, a provider's, or one account; answers the count."""
    _check_management_access(request)
    provider, account = _reset_target(request.body)
    routers = _routers(gateway)
    providers = [p for router in routers for p in router.providers]
    known = [(p.name, a.id) for p in providers for a in p.accounts()]
    if provider is not None and provider not in {name for name, _ in known}:
        names = ", ".join(sorted({p.name for p in providers}))
        raise RequestError(
            f"no provider named {provider!r}; known: {names or '(none)'}",
            param="provider", kind=ir.ErrorKind.NOT_FOUND,
        )
    if account is not None and not any(
        a == account and provider in (None, p) for p, a in known
    ):
        where = f" of provider {provider!r}" if provider else ""
        raise RequestError(
            f"no account {account!r}{where}", param="account", kind=ir.ErrorKind.NOT_FOUND
        )
    cleared = sum(router.reset(provider, account) for router in routers)
    return _json_response({"cleared": cleared})


@attrs.frozen
class Route:
    method: str
    pattern: re.Pattern[str]
    endpoint: Endpoint
    #: The wire format of this endpoint's clients: its error envelope is theirs. None on
    #: paths several formats share, where the client's headers tell.
    format: ModuleType | None


_GEMINI_MODEL = r"/(?P<prefix>v1beta|v1)/models/(?P<model>[^:]+)"


def _openai_routes() -> list[tuple[str, str, Endpoint, ModuleType | None]]:
    return [
        ("GET", r"/healthz", _healthz, openai_chat),
        ("POST", r"/v1/chat/completions", _generation(_dialect(openai_chat)), openai_chat),
        ("GET", r"/(?P<prefix>v1beta|v1)/models", _list_models, None),
        ("GET", _GEMINI_MODEL.replace("[^:]+", ".+"), _get_model, None),
    ]


def _completions_routes() -> list[tuple[str, str, Endpoint, ModuleType | None]]:
    dialect = _dialect(openai_completions)
    return [("POST", r"/v1/completions", _generation(dialect), openai_completions)]


def _responses_routes() -> list[tuple[str, str, Endpoint, ModuleType | None]]:
    dialect = _dialect(openai_responses, echoes=True)
    return [("POST", r"/v1/responses", _generation(dialect), openai_responses)]


def _anthropic_routes() -> list[tuple[str, str, Endpoint, ModuleType | None]]:
    return [
        ("POST", r"/v1/messages", _generation(_dialect(anthropic)), anthropic),
        ("POST", r"/v1/messages/count_tokens", _anthropic_count_tokens, anthropic),
    ]


def _gemini_routes() -> list[tuple[str, str, Endpoint, ModuleType | None]]:
    verbs = r":(?P<verb>generateContent|streamGenerateContent|countTokens)"
    return [("POST", _GEMINI_MODEL + verbs, _gemini_generate, gemini)]


def _ollama_generation(dialect: Dialect, *, chat: bool) -> Endpoint:
    """An Ollama generation endpoint: a load request (``ollama run`` warming a model up) is
    answered at once, once the model is known to exist; the rest are generations."""

    async def endpoint(gateway: Gateway, request: HttpRequest, match: re.Match[str]) -> HttpResponse:
        parsed = dialect.parse_http(request)
        if ollama.is_load(parsed):
            gateway.provider_for(parsed.model)
            return _json_response(ollama.render_load(parsed, chat=chat), model=parsed.model)
        return await gateway.generate(dialect, parsed)

    return endpoint


def _ollama_routes() -> list[tuple[str, str, Endpoint, ModuleType | None]]:
    chat = _ollama_generation(_dialect(ollama, _NDJSON), chat=True)
    generate = _ollama_generation(Dialect(
        ollama, ollama.parse_generate_request, _answer_only(ollama.render_generate_response),
        ollama.GenerateStreamRenderer, _NDJSON, forwardable=False,
    ), chat=False)
    table: list[tuple[str, str, Endpoint, ModuleType | None]] = []
    for prefix in ("/api", "/ollama/api"):
        table += [
            ("POST", prefix + "/chat", chat, ollama),
            ("POST", prefix + "/generate", generate, ollama),
            ("GET", prefix + "/tags", _ollama_tags, ollama),
            ("POST", prefix + "/show", _ollama_show, ollama),
            ("GET", prefix + "/ps", _ollama_ps, ollama),
            ("GET", prefix + "/version", _ollama_version, ollama),
        ]
    return table


def _management_routes() -> list[tuple[str, str, Endpoint, ModuleType | None]]:
    return [
        ("GET", r"/mux/status", _mux_status, openai_chat),
        ("POST", r"/mux/reset", _mux_reset, openai_chat),
    ]


def _routes() -> tuple[Route, ...]:
    groups = (_openai_routes, _completions_routes, _responses_routes, _anthropic_routes,
              _gemini_routes, _ollama_routes, _management_routes)
    return tuple(Route(m, re.compile(p), e, f) for group in groups for m, p, e, f in group())


ROUTES = _routes()


def _find_route(request: HttpRequest) -> tuple[Route | None, re.Match[str] | None, set[str]]:
    """The route for a request, or None and the methods the path allows (for a 405)."""
    path = request.path.rstrip("/") or "/"
    allowed = set()
    for route in ROUTES:
        match = route.pattern.fullmatch(path)
        if match is None:
            continue
        if route.method == request.method:
            return route, match, set()
        allowed.add(route.method)
    return None, None, allowed


def _client_format(request: HttpRequest, default: ModuleType) -> ModuleType:
    """The format a client speaks on a path several formats share (``/v1/models``), by the
    headers its SDK sends; ``default`` when they say nothing."""
    if default is not openai_chat and default is not gemini:
        return default
    headers = request.headers
    if "anthropic-version" in headers:
        return anthropic
    if (
        "x-goog-api-key" in headers
        or "key" in request.query
        or "google-genai" in headers.get("x-goog-api-client", "")
    ):
        return gemini
    return default


def _format_for_path(path: str) -> ModuleType:
    """The format whose error envelope an unknown path's client most likely reads."""
    if path.startswith("/v1/messages"):
        return anthropic
    if path.startswith("/v1beta/") or ":" in path.rsplit("/", 1)[-1]:
        return gemini
    if path.startswith(("/api/", "/ollama/")):
        return ollama
    if path.startswith("/v1/responses"):
        return openai_responses
    return openai_chat
