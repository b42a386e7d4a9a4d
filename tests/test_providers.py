"""mux.providers.api against loopback fake upstreams (tests/upstreams.py) speaking each vendor's
real wire format, through real sockets: every provider type answering whole and streamed, what
the upstream received (auth, path, body), same-format forwarding, errors and Retry-After,
timeouts, secrets kept out of messages and logs, model lists and token counts.

A test whose format module has not landed is skipped (importorskip), and runs once it has."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from mux import ir, streams
from mux.config import Config, FakeConfig, ModelAlias, ProviderConfig
from mux.errors import MuxError
from mux.providers import fake as fake_provider
from mux.providers.api import (
    ApiProvider,
    discover_models,
    providers_from_config,
    retry_after,
    vertex_base_url,
)
from mux.upstream import Upstreams
from tests.upstreams import KINDS, Answer, Fail, FakeUpstream, Hang, start

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real-clients"
FORMAT_OF = {
    "openai": "openai_chat",
    "openai-responses": "openai_responses",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "vertex": "gemini",
    "ollama": "ollama",
}
#: Upper bound for any single test.
STEP = 10.0
KEY = "test-key-1"


def need_format(kind: str) -> Any:
    return pytest.importorskip(f"mux.formats.{FORMAT_OF[kind]}")


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    async with Upstreams(trust_env=False) as shared:
        yield shared


async def setup(
    nursery: trio.Nursery, upstreams: Upstreams, kind: str, *,
    keys: tuple[str, ...] | None = None, **overrides: Any,
) -> tuple[FakeUpstream, ApiProvider]:
    need_format(kind)
    if keys is None:
        keys = () if kind == "ollama" else (KEY,)
    upstream = await start(nursery, kind, keys)
    return upstream, ApiProvider(upstream.provider_config(**overrides), upstreams)


WEATHER = ir.Tool(
    name="get_weather",
    description="The weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}},
                "required": ["city"]},
)


PARIS = ("get_weather", {"city": "Paris"})


def request(model: str = "model-a", **fields: Any) -> ir.Request:
    return ir.Request(
        model=model,
        messages=[
            ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text="Be brief.")]),
            ir.Message(role=ir.Role.USER, content=[ir.Text(text="What is the weather in Paris?")]),
        ],
        tools=[WEATHER],
        max_tokens=200,
        **fields,
    )


def auth_header(kind: str) -> tuple[str, str] | None:
    return {
        "openai": ("authorization", f"Bearer {KEY}"),
        "openai-responses": ("authorization", f"Bearer {KEY}"),
        "anthropic": ("x-api-key", KEY),
        "gemini": ("x-goog-api-key", KEY),
        "vertex": ("x-goog-api-key", KEY),
        "ollama": None,
    }[kind]


def expected_path(kind: str, stream: bool, model: str = "model-a") -> str:
    verb = "streamGenerateContent" if stream else "generateContent"
    return {
        "openai": "/v1/chat/completions",
        "openai-responses": "/v1/responses",
        "anthropic": "/v1/messages",
        "gemini": f"/v1beta/models/{model}:{verb}",
        "vertex": f"/v1/publishers/google/models/{model}:{verb}",
        "ollama": "/api/chat",
    }[kind]


def check_received(upstream: FakeUpstream, kind: str, *, stream: bool) -> None:
    received = upstream.last
    assert (received.method, received.path) == ("POST", expected_path(kind, stream))
    auth = auth_header(kind)
    if auth is not None:
        assert received.headers[auth[0]] == auth[1]
    else:
        assert "authorization" not in received.headers
    assert received.headers["content-type"] == "application/json"
    body = received.body
    if kind in ("gemini", "vertex"):
        assert "model" not in body and "stream" not in body
        assert received.query.get("alt") == ("sse" if stream else None)
        return
    assert body["model"] == "model-a"
    if kind == "ollama":
        assert body["stream"] is stream  # Ollama streams unless told not to
    elif stream:
        assert body["stream"] is True
    else:
        assert "stream" not in body
    if kind == "openai":
        if stream:
            assert body["stream_options"] == {"include_usage": True}
        else:
            assert "stream_options" not in body
    if kind == "anthropic":
        assert received.headers["anthropic-version"] == "2023-06-01"


def texts(content: Sequence[ir.Part]) -> str:
    return "".join(p.text for p in content if isinstance(p, ir.Text))


async def collect(events: AsyncIterator[ir.Event]) -> list[ir.Event]:
    async with aclosing(events):
        return [event async for event in events]


# --------------------------------------------------------------------------------------------
# Every type, whole and streamed


@pytest.mark.parametrize("kind", KINDS)
async def test_complete(nursery: trio.Nursery, upstreams: Upstreams, kind: str) -> None:
    upstream, provider = await setup(nursery, upstreams, kind)
    upstream.push(Answer(text="Sunny, 21 degrees."))
    with trio.fail_after(STEP):
        response = await provider.complete(request(), provider.accounts()[0])
    check_received(upstream, kind, stream=False)
    assert texts(response.content) == "Sunny, 21 degrees."
    assert response.stop_reason is ir.StopReason.END_TURN
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 7)


@pytest.mark.parametrize("kind", KINDS)
async def test_complete_tool_call(nursery: trio.Nursery, upstreams: Upstreams, kind: str) -> None:
    upstream, provider = await setup(nursery, upstreams, kind)
    upstream.push(Answer(text="", tool=("get_weather", {"city": "Paris"})))
    with trio.fail_after(STEP):
        response = await provider.complete(request(), provider.accounts()[0])
    calls = [p for p in response.content if isinstance(p, ir.ToolCall)]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [PARIS]
    assert response.stop_reason is ir.StopReason.TOOL_USE


@pytest.mark.parametrize("kind", KINDS)
async def test_stream(nursery: trio.Nursery, upstreams: Upstreams, kind: str) -> None:
    upstream, provider = await setup(nursery, upstreams, kind)
    upstream.push(Answer(text="Sunny, 21 degrees, light wind.", chunks=4))
    with trio.fail_after(STEP):
        events = await collect(provider.stream(request(stream=True), provider.accounts()[0]))
    check_received(upstream, kind, stream=True)
    assert isinstance(events[0], ir.StreamStart)
    assert len([e for e in events if isinstance(e, ir.TextDelta)]) == 4
    response = streams.collect(events)
    assert texts(response.content) == "Sunny, 21 degrees, light wind."
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 7)
    assert upstream.stream_completed


@pytest.mark.parametrize("kind", KINDS)
async def test_stream_tool_call(nursery: trio.Nursery, upstreams: Upstreams, kind: str) -> None:
    upstream, provider = await setup(nursery, upstreams, kind)
    upstream.push(Answer(text="Let me look.", tool=("get_weather", {"city": "Paris"})))
    with trio.fail_after(STEP):
        events = await collect(provider.stream(request(stream=True), provider.accounts()[0]))
    response = streams.collect(events)
    calls = [p for p in response.content if isinstance(p, ir.ToolCall)]
    assert texts(response.content) == "Let me look."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [PARIS]
    assert response.stop_reason is ir.StopReason.TOOL_USE


@pytest.mark.parametrize("kind", KINDS)
async def test_error_in_a_200_stream_before_content_raises(
    nursery: trio.Nursery, upstreams: Upstreams, kind: str
) -> None:
    """So that the router can retry another account: nothing has reached the client yet."""
    upstream, provider = await setup(nursery, upstreams, kind)
    upstream.push(Answer(error_after=0, error_message="Overloaded, try later"))
    events = provider.stream(request(stream=True), provider.accounts()[0])
    with trio.fail_after(STEP):
        async with aclosing(events):
            with pytest.raises(MuxError) as caught:
                await anext(events)
    assert "Overloaded, try later" in caught.value.message
    assert caught.value.status >= 500


@pytest.mark.parametrize("kind", KINDS)
async def test_error_in_a_200_stream_after_content_is_a_stream_error(
    nursery: trio.Nursery, upstreams: Upstreams, kind: str
) -> None:
    upstream, provider = await setup(nursery, upstreams, kind)
    upstream.push(Answer(text="one two three", chunks=3, error_after=2,
                         error_message="Overloaded midway"))
    with trio.fail_after(STEP):
        events = await collect(provider.stream(request(stream=True), provider.accounts()[0]))
    assert isinstance(events[0], ir.StreamStart)
    assert [e.text for e in events if isinstance(e, ir.TextDelta)] == ["one t", "wo th"]
    assert isinstance(events[-1], ir.StreamError)
    assert "Overloaded midway" in events[-1].message


# --------------------------------------------------------------------------------------------
# Errors


ERROR_CASES = [
    # status, headers, kind, retry_after
    (429, {"retry-after": "7"}, ir.ErrorKind.RATE_LIMIT, 7.0),
    (429, {"retry-after-ms": "1500", "retry-after": "9"}, ir.ErrorKind.RATE_LIMIT, 1.5),
    (403, {}, ir.ErrorKind.PERMISSION, None),
    (401, {}, ir.ErrorKind.AUTHENTICATION, None),
    (400, {}, ir.ErrorKind.INVALID_REQUEST, None),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("status", "headers", "error_kind", "delay"), ERROR_CASES)
async def test_http_errors_keep_status_kind_and_retry_after(
    nursery: trio.Nursery, upstreams: Upstreams, kind: str, status: int,
    headers: dict[str, str], error_kind: ir.ErrorKind, delay: float | None,
) -> None:
    upstream, provider = await setup(nursery, upstreams, kind)
    upstream.push(Fail(status=status, message="No, because reasons", headers=headers),
                  Fail(status=status, message="No, because reasons", headers=headers))
    account = provider.accounts()[0]
    with trio.fail_after(STEP):
        with pytest.raises(MuxError) as whole:
            await provider.complete(request(), account)
        with pytest.raises(MuxError) as streamed:
            await collect(provider.stream(request(stream=True), account))
    for error in (whole.value, streamed.value):
        assert (error.status, error.kind, error.retry_after) == (status, error_kind, delay)
        assert "No, because reasons" in error.message


async def test_gemini_retry_info_in_the_body_is_the_retry_after(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    upstream, provider = await setup(nursery, upstreams, "gemini")
    body = {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                      "status": "RESOURCE_EXHAUSTED", "details": [
                          {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                              {"quotaMetric": "generativelanguage.googleapis.com/"
                                              "generate_content_free_tier_requests"}]},
                          {"@type": "type.googleapis.com/google.rpc.RetryInfo",
                           "retryDelay": "38s"}]}}
    upstream.push(Fail(status=429, body=body))
    with trio.fail_after(STEP), pytest.raises(MuxError) as caught:
        await provider.complete(request(), provider.accounts()[0])
    assert (caught.value.kind, caught.value.retry_after) == (ir.ErrorKind.RATE_LIMIT, 38.0)


async def test_openai_rate_limit_headers_give_the_retry_after(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    upstream, provider = await setup(nursery, upstreams, "openai")
    headers = {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
               "x-ratelimit-reset-requests": "120ms", "x-ratelimit-limit-tokens": "30000",
               "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"}
    upstream.push(Fail(status=429, message="Rate limit reached for gpt-4o", headers=headers))
    with trio.fail_after(STEP), pytest.raises(MuxError) as caught:
        await provider.complete(request(), provider.accounts()[0])
    assert caught.value.retry_after == 360.0


async def test_non_json_error_bodies_keep_their_status(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    """A proxy in front of the upstream answers HTML."""
    upstream, provider = await setup(nursery, upstreams, "openai")
    upstream.push(Fail(status=502, body=b"<html><body>502 Bad Gateway</body></html>"))
    with trio.fail_after(STEP), pytest.raises(MuxError) as caught:
        await provider.complete(request(), provider.accounts()[0])
    assert caught.value.status == 502
    assert "502 Bad Gateway" in caught.value.message


NOW = 1_750_000_000.0

RETRY_AFTER_CASES = [
    # status, headers, body, expected seconds
    (429, {}, None, None),
    (429, {"Retry-After": "30"}, None, 30.0),
    (429, {"retry-after": "1.5"}, None, 1.5),
    (503, {"retry-after": "Wed, 15 Jun 2025 15:06:40 GMT"}, None, 0.0),  # in the past
    (429, {"retry-after": "Sun, 15 Jun 2025 15:07:20 GMT"}, None, 1_750_000_040.0 - NOW),
    (429, {"retry-after-ms": "250"}, None, 0.25),
    (429, {"retry-after-ms": "250", "retry-after": "30"}, None, 0.25),
    (429, {"retry-after": "soon"}, None, None),
    (429, {}, {"error": {"code": 429, "details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "38s"}]}}, 38.0),
    (429, {}, {"error": {"details": [
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.500s"}]}}, 0.5),
    (429, {}, [{"error": {"details": [  # Gemini's array form
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}]}}], 2.0),
    (429, {}, {"error": {"details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                      "reason": "QUOTA_EXHAUSTED", "metadata": {
                                          "quotaResetDelay": "73h5m2.5s"}}]}},
     73 * 3600 + 5 * 60 + 2.5),
    (429, {}, {"error": {"details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                      "metadata": {"quotaResetTimeStamp":
                                                   "2025-06-15T15:10:00Z"}}]}},
     1_750_000_200.0 - NOW),
    (429, {}, {"error": {"type": "usage_limit_reached", "resets_in_seconds": 3600}}, 3600.0),
    (429, {}, {"error": {"type": "usage_limit_reached", "resets_at": NOW + 90}}, 90.0),
    # OpenAI reset headers: the exhausted limit's, else the longest; only on a 429.
    (429, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s",
           "x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "6m0s"}, None, 1.0),
    (429, {"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "1m30.5s"}, None,
     90.5),
    (400, {"x-ratelimit-reset-requests": "20ms"}, None, None),
    # Anthropic reset headers: RFC 3339 instants.
    (429, {"anthropic-ratelimit-requests-remaining": "0",
           "anthropic-ratelimit-requests-reset": "2025-06-15T15:07:00Z",
           "anthropic-ratelimit-tokens-remaining": "5000",
           "anthropic-ratelimit-tokens-reset": "2025-06-15T16:06:40Z"}, None, 20.0),
    (429, {"anthropic-ratelimit-unified-reset": str(int(NOW) + 300)}, None, 300.0),
    (429, {"retry-after": "12", "anthropic-ratelimit-requests-reset": "2025-06-15T16:06:40Z"},
     None, 12.0),
]


@pytest.mark.parametrize(("status", "headers", "body", "expected"), RETRY_AFTER_CASES)
def test_retry_after(
    status: int, headers: dict[str, str], body: Any, expected: float | None
) -> None:
    assert retry_after(status, headers, body, now=NOW) == pytest.approx(expected)


# --------------------------------------------------------------------------------------------
# Secrets


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "ollama"])
async def test_a_refused_key_never_appears_in_errors_or_logs(
    nursery: trio.Nursery, upstreams: Upstreams, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The fake upstreams echo the key they refuse (real ones mask it): mux scrubs it from
    the error message, the stream error and every log line, at every level."""
    caplog.set_level(logging.DEBUG)
    secret = "sk-live-SECRET-0123456789abcdef"
    upstream, provider = await setup(nursery, upstreams, kind, keys=("another-key",),
                                     api_keys=[secret])
    account = provider.accounts()[0]
    assert secret not in repr(account)
    errors: list[MuxError] = []
    with trio.fail_after(STEP):
        # Refused by the upstream's own auth check, which echoes the key.
        for attempt in (provider.complete(request(), account),
                        collect(provider.stream(request(stream=True), account))):
            with pytest.raises(MuxError) as caught:
                await attempt
            errors.append(caught.value)
        assert await provider.discover() == []  # logs a warning
        upstream.keys = (secret,)
        upstream.push(Fail(status=500, message=f"internal error for key {secret}"))
        with pytest.raises(MuxError) as caught:
            await provider.complete(request(), account)
        errors.append(caught.value)
        upstream.push(Answer(text="ok then", error_after=1, error_message=f"bad {secret}"))
        events = await collect(provider.stream(request(stream=True), account))
    assert isinstance(events[-1], ir.StreamError)
    assert secret not in events[-1].message and "<redacted>" in events[-1].message
    for error in errors:
        assert secret not in error.message and secret not in repr(error)
    assert errors[0].kind is ir.ErrorKind.AUTHENTICATION
    assert "<redacted>" in errors[2].message
    assert caplog.records  # discovery's warning at least
    assert secret not in caplog.text
    assert all(secret not in str(r.args) for r in caplog.records)


async def test_config_headers_are_sent_but_cannot_override_auth(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    upstream, provider = await setup(
        nursery, upstreams, "openai",
        headers={"OpenAI-Organization": "org-1", "Authorization": "Bearer not-the-key"},
    )
    with trio.fail_after(STEP):
        await provider.complete(request(), provider.accounts()[0])
    headers = upstream.last.headers
    assert (headers["openai-organization"], headers["authorization"]) == ("org-1", f"Bearer {KEY}")


async def test_each_key_is_an_account(nursery: trio.Nursery, upstreams: Upstreams) -> None:
    upstream, provider = await setup(nursery, upstreams, "anthropic", keys=("k-one", "k-two"),
                                     name="claude")
    accounts = provider.accounts()
    assert [(a.provider, a.id, a.secret) for a in accounts] == [
        ("claude", "claude#1", "k-one"), ("claude", "claude#2", "k-two")]
    with trio.fail_after(STEP):
        await provider.complete(request(), accounts[1])
    assert upstream.last.headers["x-api-key"] == "k-two"


# --------------------------------------------------------------------------------------------
# Same-format hops


def _claude_code() -> tuple[dict[str, Any], dict[str, str]]:
    fixture = json.loads((FIXTURES / "claude-code-messages.json").read_text())
    return fixture["body"], fixture["headers"]


@pytest.mark.parametrize("stream", [False, True])
async def test_claude_code_request_reaches_anthropic_untouched(
    nursery: trio.Nursery, upstreams: Upstreams, stream: bool
) -> None:
    """Fields mux does not model (context_management, output_config, metadata) and the
    anthropic-beta header arrive as Claude Code sent them; only model and stream change."""
    anthropic = need_format("anthropic")
    body, headers = _claude_code()
    assert {"context_management", "output_config", "metadata"} <= set(body)
    upstream, provider = await setup(nursery, upstreams, "anthropic")
    origin = ir.Origin(
        format="anthropic",
        body=body,
        headers={"anthropic-beta": headers["anthropic-beta"],
                 "anthropic-version": headers["anthropic-version"],
                 "x-api-key": "client-key-must-not-travel"},
    )
    parsed = attrs.evolve(anthropic.parse_request(body), model="model-a", origin=origin,
                          stream=stream)
    upstream.push(Answer(text="hi"))
    with trio.fail_after(STEP):
        if stream:
            events = await collect(provider.stream(parsed, provider.accounts()[0]))
            response = streams.collect(events)
        else:
            response = await provider.complete(parsed, provider.accounts()[0])
    assert texts(response.content) == "hi"
    received = upstream.last
    expected = {**body, "model": "model-a"}
    if not stream:
        del expected["stream"]
    assert received.body == expected
    assert received.headers["anthropic-beta"] == headers["anthropic-beta"]
    assert received.headers["x-api-key"] == KEY


async def test_openai_request_keeps_unmodelled_fields(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    """An alias resolves to the upstream's name; fields the IR lacks pass through."""
    openai_chat = need_format("openai")
    body = {
        "model": "b",
        "messages": [{"role": "user", "content": "hi"}],
        "prediction": {"type": "content", "content": "hello"},
        "service_tier": "flex",
        "store": True,
        "stream": True,
        "stream_options": {"include_obfuscation": False},
    }
    upstream, provider = await setup(nursery, upstreams, "openai")
    model = provider.upstream_model("b")
    assert model == "model-b"
    parsed = attrs.evolve(openai_chat.parse_request(body), model=model,
                          origin=ir.Origin(format="openai_chat", body=body))
    with trio.fail_after(STEP):
        await collect(provider.stream(parsed, provider.accounts()[0]))
        await provider.complete(parsed, provider.accounts()[0])
    streamed, whole = (r.body for r in upstream.requests)
    assert streamed == {**body, "model": "model-b",
                        "stream_options": {"include_obfuscation": False, "include_usage": True}}
    rest = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    assert whole == {**rest, "model": "model-b"}


async def test_gemini_cli_request_reaches_gemini_untouched(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    """No model or stream field is added: Gemini refuses unknown fields, and both are in the URL."""
    gemini = need_format("gemini")
    fixture = json.loads((FIXTURES / "gemini-cli-generate.json").read_text())
    body = fixture["body"]
    upstream, provider = await setup(nursery, upstreams, "gemini")
    parsed = attrs.evolve(gemini.parse_request(body), model="model-a",
                          origin=ir.Origin(format="gemini", body=body))
    with trio.fail_after(STEP):
        await collect(provider.stream(parsed, provider.accounts()[0]))
    assert upstream.last.body == body
    assert upstream.last.path == "/v1beta/models/model-a:streamGenerateContent"


async def test_ollama_generate_origin_is_rendered_for_chat(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    """/api/generate bodies are Ollama's format but not /api/chat's: they are rendered."""
    ollama = need_format("ollama")
    body = {"model": "model-a", "prompt": "Say hi", "system": "Be brief.", "stream": False}
    upstream, provider = await setup(nursery, upstreams, "ollama")
    parsed = attrs.evolve(ollama.parse_generate_request(body),
                          origin=ir.Origin(format="ollama", body=body))
    with trio.fail_after(STEP):
        await provider.complete(parsed, provider.accounts()[0])
    received = upstream.last.body
    assert "prompt" not in received
    assert [m["role"] for m in received["messages"]] == ["system", "user"]


async def test_other_format_origin_is_rendered(nursery: trio.Nursery, upstreams: Upstreams) -> None:
    """An OpenAI client's body is not forwarded to Anthropic: the format renders the IR."""
    upstream, provider = await setup(nursery, upstreams, "anthropic")
    origin = ir.Origin(format="openai_chat", body={"model": "x", "messages": [], "store": True},
                       headers={"anthropic-beta": "should-not-travel"})
    with trio.fail_after(STEP):
        await provider.complete(request(origin=origin), provider.accounts()[0])
    assert "store" not in upstream.last.body
    assert "anthropic-beta" not in upstream.last.headers
    assert upstream.last.body["system"] == "Be brief."


# --------------------------------------------------------------------------------------------
# Timeouts and connections


async def test_unreachable_upstream_is_502_quickly(upstreams: Upstreams) -> None:
    need_format("openai")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = ProviderConfig(name="local", type="openai", base_url=f"http://127.0.0.1:{port}/v1",
                            api_keys=["k"], models=["m"])
    provider = ApiProvider(config, upstreams)
    start_time = trio.current_time()
    with trio.fail_after(STEP), pytest.raises(MuxError) as caught:
        await provider.complete(request(), provider.accounts()[0])
    assert (caught.value.status, caught.value.kind) == (502, ir.ErrorKind.UPSTREAM)
    assert caught.value.message.startswith("local: 127.0.0.1: cannot connect")
    assert trio.current_time() - start_time < 1.0


async def test_hanging_upstream_is_504_after_first_byte_timeout(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    upstream, provider = await setup(nursery, upstreams, "anthropic", first_byte_timeout=0.3)
    upstream.push(Hang(), Hang())
    account = provider.accounts()[0]
    with trio.fail_after(STEP):
        start_time = trio.current_time()
        with pytest.raises(MuxError) as whole:
            await provider.complete(request(), account)
        assert 0.3 <= trio.current_time() - start_time < 2
        with pytest.raises(MuxError) as streamed:
            await collect(provider.stream(request(stream=True), account))
    for error in (whole.value, streamed.value):
        assert (error.status, error.kind) == (504, ir.ErrorKind.TIMEOUT)
        assert error.message == "anthropic: 127.0.0.1: no answer within 0.3s"


async def test_stream_stalling_before_content_raises_504(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    upstream, provider = await setup(nursery, upstreams, "openai", stream_timeout=0.3)
    upstream.push(Answer(stall_after=0))
    events = provider.stream(request(stream=True), provider.accounts()[0])
    with trio.fail_after(STEP):
        async with aclosing(events):
            with pytest.raises(MuxError) as caught:
                await anext(events)
    assert (caught.value.status, caught.value.kind) == (504, ir.ErrorKind.TIMEOUT)


async def test_stream_stalling_after_content_ends_with_a_stream_error(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    upstream, provider = await setup(nursery, upstreams, "gemini", stream_timeout=0.3)
    upstream.push(Answer(text="abcdef", chunks=3, stall_after=1))
    with trio.fail_after(STEP):
        events = await collect(provider.stream(request(stream=True), provider.accounts()[0]))
    assert [e.text for e in events if isinstance(e, ir.TextDelta)] == ["ab"]
    error = events[-1]
    assert isinstance(error, ir.StreamError)
    assert (error.kind, error.status) == (ir.ErrorKind.TIMEOUT, 504)
    assert error.message == "gemini: 127.0.0.1: the answer stalled: nothing arrived for 0.3s"


async def test_dropped_connection_mid_stream_is_a_stream_error(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    upstream, provider = await setup(nursery, upstreams, "anthropic")
    upstream.push(Answer(text="abcdef", chunks=3, drop_after=2))
    with trio.fail_after(STEP):
        events = await collect(provider.stream(request(stream=True), provider.accounts()[0]))
    assert isinstance(events[-1], ir.StreamError)
    assert (events[-1].kind, events[-1].status) == (ir.ErrorKind.UPSTREAM, 502)


@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama"])
async def test_closing_a_stream_closes_the_upstream_connection(
    nursery: trio.Nursery, upstreams: Upstreams, kind: str
) -> None:
    """A client that goes away stops the generation upstream, at once."""
    upstream, provider = await setup(nursery, upstreams, kind)
    upstream.push(Answer(text="x" * 200, chunks=200, delay=0.05))
    events = provider.stream(request(stream=True), provider.accounts()[0])
    with trio.fail_after(STEP):
        async with aclosing(events):
            async for event in events:
                if isinstance(event, ir.TextDelta):
                    break
        with trio.fail_after(1.0):
            await upstream.stream_closed.wait()
    assert upstream.stream_completed is False


# --------------------------------------------------------------------------------------------
# Token counts


@pytest.mark.parametrize("kind", ["anthropic", "gemini", "vertex"])
async def test_count_tokens_asks_the_upstream(
    nursery: trio.Nursery, upstreams: Upstreams, kind: str
) -> None:
    upstream, provider = await setup(nursery, upstreams, kind)
    upstream.push(Answer(input_tokens=42))
    with trio.fail_after(STEP):
        count = await provider.count_tokens(request(), provider.accounts()[0])
    assert count == 42
    received = upstream.last
    path = {"anthropic": "/v1/messages/count_tokens",
            "gemini": "/v1beta/models/model-a:countTokens",
            "vertex": "/v1/publishers/google/models/model-a:countTokens"}[kind]
    assert received.path == path
    body = received.body
    if kind == "anthropic":
        assert "max_tokens" not in body and body["system"] == "Be brief."
    elif kind == "gemini":  # the system instruction and tools count too
        inner = body["generateContentRequest"]
        assert inner["model"] == "models/model-a" and "systemInstruction" in inner
    else:
        assert "systemInstruction" in body and "tools" in body


async def test_count_tokens_forwards_a_claude_code_body(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    """A same-format count drops what count_tokens refuses (max_tokens, stream...)."""
    anthropic = need_format("anthropic")
    body, headers = _claude_code()
    upstream, provider = await setup(nursery, upstreams, "anthropic")
    parsed = attrs.evolve(anthropic.parse_count_tokens(body), model="model-a",
                          origin=ir.Origin(format="anthropic", body=body,
                                           headers={"anthropic-beta": headers["anthropic-beta"]}))
    with trio.fail_after(STEP):
        assert await provider.count_tokens(parsed, provider.accounts()[0]) == 11
    assert upstream.last.body["messages"] == body["messages"]
    assert upstream.last.headers["anthropic-beta"] == headers["anthropic-beta"]


@pytest.mark.parametrize("kind", ["openai", "openai-responses", "ollama"])
async def test_count_tokens_estimates_without_an_endpoint(
    nursery: trio.Nursery, upstreams: Upstreams, kind: str
) -> None:
    upstream, provider = await setup(nursery, upstreams, kind)
    ask = request()
    count = await provider.count_tokens(ask, provider.accounts()[0])
    assert count == await fake_provider.FakeProvider(FakeConfig()).count_tokens(ask) > 0
    assert upstream.requests == []


# --------------------------------------------------------------------------------------------
# Models


def test_models_and_aliases() -> None:
    config = ProviderConfig(
        name="oa", type="openai", api_keys=["k"],
        models=["gpt-4o", ModelAlias(name="gpt-4o-mini", alias="mini"), ModelAlias(name="o3")],
    )
    provider = ApiProvider(config, Upstreams())
    assert [m.id for m in provider.models()] == ["gpt-4o", "mini", "gpt-4o-mini", "o3"]
    assert {m.owned_by for m in provider.models()} == {"oa"}
    assert [provider.upstream_model(m) for m in ("gpt-4o", "mini", "gpt-4o-mini", "o3", "x")] == [
        "gpt-4o", "gpt-4o-mini", "gpt-4o-mini", "o3", None]
    assert (provider.name, provider.priority, provider.weight) == ("oa", 0, 1)


def test_keyless_provider_has_one_account() -> None:
    provider = ApiProvider(ProviderConfig(name="local", type="ollama"), Upstreams())
    assert [(a.id, a.secret) for a in provider.accounts()] == [("local#1", "")]


@pytest.mark.parametrize("kind", ["openai", "openai-responses", "anthropic", "gemini", "ollama"])
async def test_discover_lists_the_upstream_models(
    nursery: trio.Nursery, upstreams: Upstreams, kind: str
) -> None:
    upstream, provider = await setup(nursery, upstreams, kind)
    upstream.listed = ["alpha", "beta", "gamma"]
    upstream.page_size = 2  # Anthropic and Gemini page their lists
    with trio.fail_after(STEP):
        found = await provider.discover()
    assert found == ["alpha", "beta", "gamma"]  # Gemini's embedding model is left out
    assert provider.upstream_model("beta") == "beta"
    assert [m.id for m in provider.models()][-3:] == ["alpha", "beta", "gamma"]
    auth = auth_header(kind)
    if auth is not None:
        assert all(r.headers[auth[0]] == auth[1] for r in upstream.requests)
    assert all(r.method == "GET" for r in upstream.requests)


async def test_discover_models_asks_only_providers_that_discover(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    one, discovering = await setup(nursery, upstreams, "openai", discover=True)
    two, silent = await setup(nursery, upstreams, "ollama")
    one.listed = ["found-model"]
    fake = fake_provider.FakeProvider(FakeConfig())
    with trio.fail_after(STEP):
        await discover_models([discovering, silent, fake])
    assert discovering.upstream_model("found-model") == "found-model"
    assert (len(one.requests), len(two.requests)) == (1, 0)


async def test_discovery_failure_is_logged_and_ignored(
    nursery: trio.Nursery, upstreams: Upstreams, caplog: pytest.LogCaptureFixture
) -> None:
    upstream, provider = await setup(nursery, upstreams, "openai")
    upstream.push(Fail(status=503, message="down for maintenance"))
    with trio.fail_after(STEP):
        assert await provider.discover() == []
    assert provider.upstream_model("model-a") == "model-a"
    assert "openai: model discovery failed: down for maintenance" in caplog.text


# --------------------------------------------------------------------------------------------
# Vertex AI URLs


def test_vertex_base_url_follows_the_location() -> None:
    assert vertex_base_url(None) == "https://us-central1-aiplatform.googleapis.com"
    assert vertex_base_url("europe-west4") == "https://europe-west4-aiplatform.googleapis.com"
    assert vertex_base_url("global") == "https://aiplatform.googleapis.com"


async def test_vertex_project_and_location_form(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    upstream, provider = await setup(nursery, upstreams, "vertex", project="my-proj",
                                     location="europe-west4")
    with trio.fail_after(STEP):
        await provider.complete(request(), provider.accounts()[0])
    assert upstream.last.path == ("/v1/projects/my-proj/locations/europe-west4/publishers/google/"
                                  "models/model-a:generateContent")


def test_vertex_default_urls() -> None:
    """Without base-url: express mode on aiplatform.googleapis.com, or the located host."""
    express = ApiProvider(ProviderConfig(name="v", type="vertex", api_keys=["k"]), Upstreams())
    located = ApiProvider(ProviderConfig(name="v", type="vertex", api_keys=["k"], project="p",
                                         location="global"), Upstreams())
    assert express._google_url("gemini-2.5-pro", "generateContent") == (
        "https://aiplatform.googleapis.com/v1/publishers/google/models/"
        "gemini-2.5-pro:generateContent")
    assert located._google_url("gemini-2.5-pro", "countTokens") == (
        "https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/google/"
        "models/gemini-2.5-pro:countTokens")
    default = ApiProvider(ProviderConfig(name="v", type="vertex", project="p"), Upstreams())
    assert default._google_url("m", "generateContent").startswith(
        "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/")


async def test_a_bad_gemini_key_is_an_authentication_error(
    nursery: trio.Nursery, upstreams: Upstreams
) -> None:
    """Google answers 400 API_KEY_INVALID: the account's fault, so the router fails over."""
    upstream, provider = await setup(nursery, upstreams, "gemini", api_keys=["wrong-key"])
    with trio.fail_after(STEP), pytest.raises(MuxError) as caught:
        await provider.complete(request(), provider.accounts()[0])
    assert (caught.value.kind, caught.value.status) == (ir.ErrorKind.AUTHENTICATION, 401)
    assert "wrong-key" not in caught.value.message


# --------------------------------------------------------------------------------------------
# Configuration


def test_providers_from_config() -> None:
    config = Config(providers=[
        ProviderConfig(name="oa", type="openai", api_keys=["a", "b"], priority=5),
        ProviderConfig(name="claude", type="anthropic", api_keys=["c"], priority=-3),
    ])
    providers = providers_from_config(config, Upstreams())
    assert [p.name for p in providers] == ["oa", "claude", "fake"]
    assert isinstance(providers[0], ApiProvider) and isinstance(providers[1], ApiProvider)
    implicit = providers[2]
    assert isinstance(implicit, fake_provider.FakeProvider)
    assert implicit.priority < min(p.priority for p in providers[:2])
    assert implicit.upstream_model("fake-anything") is not None


def test_providers_from_config_with_a_fake_entry() -> None:
    config = Config(providers=[
        ProviderConfig(name="oa", type="openai", api_keys=["a"]),
        ProviderConfig(name="demo", type="fake", priority=2, weight=3, models=["demo-*"]),
    ])
    providers = providers_from_config(config, Upstreams())
    assert [p.name for p in providers] == ["oa", "demo"]  # no implicit fake
    demo = providers[1]
    assert (demo.priority, demo.weight) == (2, 3)
    assert demo.upstream_model("demo-1") is not None


def test_providers_from_config_defaults() -> None:
    providers = providers_from_config(Config(), Upstreams())
    assert [p.name for p in providers] == ["fake"]
    assert providers[0].upstream_model("fake") is not None
