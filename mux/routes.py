"""The endpoint table and the handlers behind it.

A request flows one way: HTTP request → the route's format parses the body into the IR → the
provider serving the model answers (whole, or as stream events) → the same format renders the
answer. Every :class:`~mux.errors.MuxError` raised on the way becomes an error body in the
client's format, with its status, at one place (:meth:`Gateway.handle`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from types import ModuleType
from typing import Any

import attrs

from mux import ir
from mux.errors import MuxError, RequestError
from mux.formats import openai_chat
from mux.framing import FramingError, dumps, loads
from mux.providers import Provider
from mux.server import HttpRequest, HttpResponse

__all__ = ["Gateway"]

log = logging.getLogger("mux.routes")

Endpoint = Callable[["Gateway", HttpRequest, "re.Match[str]"], Awaitable[HttpResponse]]


@attrs.frozen
class Route:
    method: str
    pattern: re.Pattern[str]
    endpoint: Endpoint
    #: The wire format of this endpoint's clients: its error envelope is theirs.
    format: ModuleType


_JSON = ("content-type", "application/json")
_SSE_HEADERS = (
    ("content-type", "text/event-stream"),
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


@attrs.define(eq=False)
class Gateway:
    """The application: routes requests to providers through the formats."""

    providers: Sequence[Provider]

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one HTTP request; never raises for anything a client can send."""
        route, match, allowed = _find_route(request)
        if route is None:
            format_ = _format_for_path(request.path)
            if allowed:
                response = error_response(
                    format_,
                    RequestError(
                        f"{request.method} is not allowed on {request.path}; "
                        f"use {', '.join(sorted(allowed))}",
                        status=405,
                    ),
                )
                return attrs.evolve(
                    response, headers=[*response.headers, ("allow", ", ".join(sorted(allowed)))]
                )
            return error_response(
                format_,
                RequestError(
                    f"no such endpoint: {request.method} {request.path}",
                    kind=ir.ErrorKind.NOT_FOUND,
                ),
            )
        assert match is not None
        try:
            return await route.endpoint(self, request, match)
        except MuxError as error:
            return error_response(route.format, error)

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

    async def generate(
        self, format_: ModuleType, request: ir.Request
    ) -> HttpResponse:
        """Answer an IR request in ``format_``, whole or streamed as the request asks."""
        provider = self.provider_for(request.model)
        if not request.stream:
            response = await provider.complete(request)
            return _json_response(format_.render_response(response), model=request.model)
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
            headers=_SSE_HEADERS,
            body=_render_stream(format_.StreamRenderer(request), first, events),
            model=request.model,
        )


async def _render_stream(
    renderer: Any, first: ir.Event, events: AsyncIterator[ir.Event]
) -> AsyncIterator[bytes]:
    async with aclosing(events):
        try:
            yield renderer.render(first)
            async for event in events:
                chunk = renderer.render(event)
                if chunk:
                    yield chunk
        except MuxError as error:
            yield renderer.render(
                ir.StreamError(kind=error.kind, message=error.message, status=error.status)
            )


# --------------------------------------------------------------------------------------------
# Endpoints


async def _healthz(gateway: Gateway, request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    return _json_response({"status": "ok"})


async def _chat_completions(
    gateway: Gateway, request: HttpRequest, match: re.Match[str]
) -> HttpResponse:
    ir_request = openai_chat.parse_request(decode_json(request.body))
    return await gateway.generate(openai_chat, ir_request)


async def _list_models(gateway: Gateway, request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    return _json_response(openai_chat.render_models(gateway.models()))


async def _get_model(gateway: Gateway, request: HttpRequest, match: re.Match[str]) -> HttpResponse:
    model_id = match["model"]
    for model in gateway.models():
        if model.id == model_id:
            return _json_response(openai_chat.render_model(model))
    # A model the providers serve without listing it (any fake* name) still exists.
    gateway.provider_for(model_id)
    return _json_response(openai_chat.render_model(ir.ModelInfo(id=model_id)))


def _route(method: str, path: str, endpoint: Endpoint, format_: ModuleType) -> Route:
    return Route(method, re.compile(path), endpoint, format_)


ROUTES: tuple[Route, ...] = (
    _route("GET", r"/healthz", _healthz, openai_chat),
    _route("POST", r"/v1/chat/completions", _chat_completions, openai_chat),
    _route("GET", r"/v1/models", _list_models, openai_chat),
    _route("GET", r"/v1/models/(?P<model>.+)", _get_model, openai_chat),
)


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


def _format_for_path(path: str) -> ModuleType:
    """The format whose error envelope an unknown path's client most likely reads."""
    return openai_chat
