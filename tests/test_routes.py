"""The routes layer, driven directly (no socket): which format answers, what a request carries
to the provider, and how a stream that stops short still ends well-formed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence

import attrs
import pytest

from mux import ir
from mux.config import FakeConfig
from mux.framing import loads
from mux.providers.fake import FakeProvider
from mux.routes import Gateway
from mux.server import HttpRequest, HttpResponse


def http(method: str, path: str, body: object = b"", **headers: str) -> HttpRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    path, _, query = path.partition("?")
    pairs = dict(p.split("=", 1) for p in query.split("&") if p)
    return HttpRequest(
        method=method, path=path, raw_path=path, query=pairs,
        headers={k.replace("_", "-"): v for k, v in headers.items()}, body=raw, client="test",
    )


async def body_of(response: HttpResponse) -> bytes:
    if isinstance(response.body, bytes):
        return response.body
    return b"".join([chunk async for chunk in response.body])


@attrs.define
class Recorder:
    """A provider that records what it was asked and streams a scripted list of events."""

    events: Sequence[ir.Event] = ()
    seen: list[ir.Request] = attrs.Factory(list)
    name: str = "recorder"

    def serves(self, model: str) -> bool:
        return True

    def models(self) -> Sequence[ir.ModelInfo]:
        return [ir.ModelInfo(id="m1")]

    async def complete(self, request: ir.Request) -> ir.Response:
        self.seen.append(request)
        return ir.Response(id="r", model=request.model, content=[ir.Text(text="ok")])

    async def count_tokens(self, request: ir.Request) -> int:
        return 7

    async def stream(self, request: ir.Request) -> AsyncIterator[ir.Event]:
        self.seen.append(request)
        for event in self.events:
            yield event


CUT_SHORT = [ir.StreamStart(id="s", model="m"), ir.TextDelta(index=0, text="half")]


@pytest.mark.parametrize(
    ("path", "body", "ends_with"),
    [
        ("/v1/chat/completions",
         {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
         b"}}\n\n"),  # the error chunk, then close: no [DONE] after an error (A.3)
        ("/v1beta/models/m:streamGenerateContent",
         {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}, b"]"),
        ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "x"}]}, b"\n"),
        ("/v1/messages",
         {"model": "m", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "x"}]},
         b"\n\n"),
    ],
)
async def test_a_stream_that_stops_short_still_ends_with_an_error(
    path: str, body: dict, ends_with: bytes
) -> None:
    gateway = Gateway(providers=[Recorder(events=CUT_SHORT)])
    response = await gateway.handle(http("POST", path, body))
    assert response.status == 200
    data = await body_of(response)
    assert b"half" in data
    assert b"ended before it finished" in data
    assert data.endswith(ends_with)
    if path.startswith("/v1beta"):  # the JSON-array form is one valid document
        array = loads(data)
        assert array[-1]["error"]["code"] == 502


async def test_requests_carry_their_origin_for_same_format_hops() -> None:
    recorder = Recorder()
    gateway = Gateway(providers=[recorder])
    body = {"model": "m", "max_tokens": 5, "context_management": {"edits": []},
            "messages": [{"role": "user", "content": "x"}]}
    await gateway.handle(http("POST", "/v1/messages?beta=true", body,
                              anthropic_beta="a,b", x_api_key="secret"))
    (seen,) = recorder.seen
    assert seen.origin == ir.Origin(format="anthropic", body=body, headers={"anthropic-beta": "a,b"})
    # /api/generate bodies are not /api/chat bodies: no origin to forward.
    await gateway.handle(http("POST", "/api/generate", {"model": "m", "prompt": "x", "stream": False}))
    assert recorder.seen[-1].origin is None


@pytest.mark.parametrize(
    ("headers", "query", "shape"),
    [
        ({}, "", "data"),                                   # OpenAI: {"object": "list", "data": [...]}
        ({"anthropic_version": "2023-06-01"}, "", "has_more"),
        ({"x_goog_api_key": "k"}, "", "models"),
        ({}, "?key=k", "models"),
        ({"x_goog_api_client": "google-genai-sdk/1.30.0 gl-node/v20"}, "", "models"),
    ],
)
async def test_shared_model_list_answers_in_the_clients_format(
    headers: dict, query: str, shape: str
) -> None:
    gateway = Gateway(providers=[Recorder()])
    response = await gateway.handle(http("GET", "/v1/models" + query, **headers))
    assert response.status == 200
    assert shape in loads(await body_of(response))


@pytest.mark.parametrize(
    ("method", "path", "check"),
    [
        ("POST", "/v1/messages/nope", lambda b: b["type"] == "error"),
        ("POST", "/v1beta/tunedModels/m:explode", lambda b: b["error"]["status"] == "NOT_FOUND"),
        ("GET", "/api/nothing", lambda b: isinstance(b["error"], str)),
        ("GET", "/v2/whatever", lambda b: b["error"]["type"]),
    ],
)
async def test_unknown_paths_answer_in_the_likely_clients_format(method, path, check) -> None:
    gateway = Gateway(providers=[Recorder()])
    response = await gateway.handle(http(method, path))
    assert response.status == 404
    assert check(loads(await body_of(response)))


async def test_wrong_method_is_405_with_allow() -> None:
    gateway = Gateway(providers=[FakeProvider(FakeConfig())])
    response = await gateway.handle(http("GET", "/api/chat"))
    assert response.status == 405
    assert ("allow", "POST") in response.headers
    assert "error" in loads(await body_of(response))


async def test_count_tokens_endpoints_ask_the_provider() -> None:
    gateway = Gateway(providers=[Recorder()])
    anthropic = await gateway.handle(http(
        "POST", "/v1/messages/count_tokens",
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    ))
    assert loads(await body_of(anthropic)) == {"input_tokens": 7}
    gemini = await gateway.handle(http(
        "POST", "/v1beta/models/m:countTokens",
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    ))
    assert loads(await body_of(gemini))["totalTokens"] == 7
