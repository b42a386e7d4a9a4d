"""mux.formats.anthropic: round trips against the projection, validation, SDK constraints.

The properties check ``parse(render(x)) == projection(x)`` for generated requests, responses
and streams (the stream's bytes split at random places); the tables check validation
messages and the shapes of real upstream events; the SDK tests drive the real ``anthropic``
client (and its stream accumulator) against bodies this module renders.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anthropic as sdk
import attrs
import httpx2
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from hypothesis import event, given, settings
from hypothesis import strategies as st

from mux import ir, streams
from mux.errors import MuxError, RequestError, UpstreamError
from mux.formats import anthropic
from mux.formats.anthropic import StreamParser, StreamRenderer
from mux.framing import SSEDecoder, dumps
from tests import strategies as strats
from tests.strategies import feed, splits, wire
from tests.projections import anthropic as projection

fast = settings(deadline=None)  # examples: the profile's (conftest)

FIXTURE = (
    Path(__file__).resolve().parents[2] / "shared/fixtures/real-clients/claude-code-messages.json"
)


def render_stream(events: Sequence[ir.Event], request: ir.Request | None = None) -> bytes:
    renderer = StreamRenderer(request or ir.Request(model="m", stream=True))
    return b"".join(renderer.render(e) for e in events)


def parse_stream(pieces: Sequence[bytes]) -> list[ir.Event]:
    return feed(StreamParser(), pieces)


def note_features(value: object) -> None:
    for label in sorted(strats.features(value)):
        event(label)


# --------------------------------------------------------------------------------------------
# Round trips


@fast
@given(strats.requests())
def test_request_round_trip(request: ir.Request) -> None:
    """parse_request(render_request(r)) is the Anthropic projection of r."""
    note_features(request)
    parsed = anthropic.parse_request(wire(anthropic.render_request(request)))
    assert parsed == projection.request(request)


@fast
@given(strats.requests())
def test_request_render_is_stable(request: ir.Request) -> None:
    """What Anthropic can say survives any number of trips: projecting twice changes
    nothing, and a projected request renders and parses to itself."""
    once = projection.request(request)
    assert projection.request(once) == once
    assert anthropic.parse_request(wire(anthropic.render_request(once))) == once


@fast
@given(strats.requests())
def test_count_tokens_reads_what_render_request_writes(request: ir.Request) -> None:
    """count_tokens bodies parse like message bodies (max_tokens is only optional)."""
    body = wire(anthropic.render_request(request))
    assert anthropic.parse_count_tokens(body) == anthropic.parse_request(body)
    del body["max_tokens"]
    assert anthropic.parse_count_tokens(body) == attrs.evolve(
        projection.request(request), max_tokens=None
    )


@fast
@given(strats.responses())
def test_response_round_trip(response: ir.Response) -> None:
    """parse_response(render_response(r)) is the Anthropic projection of r."""
    note_features(response)
    parsed = anthropic.parse_response(wire(anthropic.render_response(response)))
    assert parsed == projection.response(response)


@fast
@given(strats.event_streams(), st.data())
def test_stream_round_trip(events: list[ir.Event], data: st.DataObject) -> None:
    """Rendered, split anywhere and parsed, a stream is its Anthropic projection, and both
    follow the IR grammar."""
    note_features(events)
    strats.check_stream(events)
    pieces = data.draw(splits(render_stream(events)))
    parsed = parse_stream(pieces)
    strats.check_stream(parsed)
    assert parsed == projection.events(events, ir.Request(model="m"))


# --------------------------------------------------------------------------------------------
# What the SDK's stream dispatch and accumulator need (protocols.md section 0, C.3)


def events_of(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The (event name, data) pairs of a rendered stream, checking the framing: every event
    named, and named by its data's type."""
    messages = SSEDecoder().feed(data)
    assert b"[DONE]" not in data
    pairs = [(m.event, json.loads(m.data)) for m in messages]
    for name, body in pairs:
        assert name is not None and name == body["type"]
    return pairs  # type: ignore[return-value]


@fast
@given(strats.event_streams(errors=False))
def test_stream_meets_sdk_constraints(events: list[ir.Event]) -> None:
    """message_start first; blocks 0, 1, 2... each started, fed and stopped before the
    next, never interleaved; one signature_delta at most, just before its block's stop;
    then one message_delta with cumulative usage, and message_stop last."""
    pairs = events_of(render_stream(events))
    names = [name for name, _ in pairs]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("message_delta") == 1
    message = pairs[0][1]["message"]
    assert message["content"] == [] and set(message["usage"]) >= {"input_tokens", "output_tokens"}
    open_: int | None = None
    starts = 0
    for (name, body), (next_name, next_body) in itertools.pairwise(pairs):
        if name == "content_block_start":
            assert open_ is None and body["index"] == starts
            open_, starts = body["index"], starts + 1
            if body["content_block"]["type"] == "thinking":
                assert body["content_block"] == {
                    "type": "thinking",
                    "thinking": "",
                    "signature": "",
                }
            if body["content_block"]["type"] == "tool_use":
                assert body["content_block"]["input"] == {}
        elif name == "content_block_delta":
            assert body["index"] == open_
            if body["delta"]["type"] == "signature_delta":
                assert next_name == "content_block_stop" and next_body["index"] == open_
        elif name == "content_block_stop":
            assert body["index"] == open_
            open_ = None
    assert open_ is None
    usage = pairs[-2][1]["usage"]
    last = [e.usage for e in events if isinstance(e, ir.UsageUpdate)][-1:] or [ir.Usage()]
    assert usage["output_tokens"] == last[0].output_tokens
    assert usage["cache_read_input_tokens"] == last[0].cache_read_tokens


@fast
@given(strats.event_streams(errors=False))
def test_stream_accumulates_in_the_sdk(events: list[ir.Event]) -> None:
    """The SDK's own accumulator (the one ``messages.stream()`` uses) rebuilds the message
    the projected events describe: content, signatures, tool inputs, stop reason, and the
    usage of message_delta, input and cache counts included."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for _, body in events_of(render_stream(events)):
        snapshot = accumulate_event(event=body, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    final = anthropic.parse_response(snapshot.model_dump(exclude_none=True))
    expected = streams.collect(projection.events(events, ir.Request(model="m")))
    expected = attrs.evolve(
        expected,
        content=[
            attrs.evolve(p, arguments=projection.arguments(p.arguments))
            if isinstance(p, ir.ToolCall)
            else p
            for p in expected.content
        ],
    )
    assert final == expected


def test_stream_error_is_an_error_event_and_nothing_more() -> None:
    """A StreamError renders as ``event: error`` with C.5's envelope; later events say
    nothing."""
    renderer = StreamRenderer(ir.Request(model="m"))
    renderer.render(ir.StreamStart(id="msg_1", model="m"))
    out = renderer.render(ir.StreamError(kind=ir.ErrorKind.OVERLOADED, message="busy", status=529))
    assert out == (
        b"event: error\n"
        b'data: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n'
    )
    assert renderer.render(ir.Finish(stop_reason=ir.StopReason.END_TURN)) == b""


def test_stream_renderer_needs_a_start() -> None:
    with pytest.raises(ValueError, match="StreamStart"):
        StreamRenderer(ir.Request(model="m")).render(ir.TextDelta(index=0, text="x"))


def test_stream_renderer_writes_the_protocols_example() -> None:
    """C.3's text example, event for event (usage in message_delta, zero at the start)."""
    events = [
        ir.StreamStart(id="msg_1", model="claude-x", created=5),
        ir.TextDelta(index=0, text="Hello"),
        ir.PartEnd(index=0),
        ir.UsageUpdate(usage=ir.Usage(input_tokens=25, output_tokens=15)),
        ir.Finish(stop_reason=ir.StopReason.END_TURN),
    ]
    assert events_of(render_stream(events)) == [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-x",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hello"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {
                    "input_tokens": 25,
                    "output_tokens": 15,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]


# --------------------------------------------------------------------------------------------
# The real SDK, over a mock transport


@attrs.define
class Upstream:
    """An httpx2 transport answering the SDK with a canned status and body."""

    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    requests: list[Any] = attrs.Factory(list)
    paths: list[str] = attrs.Factory(list)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.paths.append(str(request.url))
        if request.content:
            self.requests.append(json.loads(request.content))
        headers = {"content-type": self.content_type}
        return httpx2.Response(self.status, content=self.body, headers=headers)


RESPONSE = ir.Response(
    id="msg_01",
    model="claude-test",
    content=[
        ir.Reasoning(text="Think.", signature="c2ln"),
        ir.Text(text="Checking."),
        ir.ToolCall(id="toolu_01", name="get_weather", arguments='{"city": "Paris"}'),
    ],
    stop_reason=ir.StopReason.TOOL_USE,
    usage=ir.Usage(
        input_tokens=20,
        output_tokens=40,
        cache_read_tokens=5,
        cache_write_tokens=3,
        reasoning_tokens=7,
    ),
)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream(body=dumps(anthropic.render_response(RESPONSE)))


@pytest.fixture
def client(upstream: Upstream) -> Iterator[sdk.Anthropic]:
    http = httpx2.Client(transport=httpx2.MockTransport(upstream))
    with sdk.Anthropic(
        api_key="k", base_url="http://mux.test", http_client=http, max_retries=0
    ) as client:
        yield client


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
PDF = base64.b64encode(b"%PDF-1.7").decode()
CACHE = {"type": "ephemeral"}


def test_sdk_request_shapes_parse(client: sdk.Anthropic, upstream: Upstream) -> None:
    """Everything the SDK can put in a request arrives as IR or as Extra, and a same-format
    hop writes it back as it came (modulo the shorthand string)."""
    client.messages.create(
        model="claude-test",
        max_tokens=1000,
        system=[{"type": "text", "text": "Be brief.", "cache_control": CACHE}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/a.png"},
                    },
                    {"type": "image", "source": {"type": "file", "file_id": "file_img"}},
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                        "title": "A",
                        "cache_control": CACHE,
                    },
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "hi"},
                    },
                    {
                        "type": "document",
                        "source": {"type": "url", "url": "https://example.com/a.pdf"},
                    },
                    {"type": "document", "source": {"type": "file", "file_id": "file_1"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Hmm.", "signature": "c2ln"},
                    {"type": "redacted_thinking", "data": "ZGF0YQ=="},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": "42",
                        "is_error": True,
                    },
                    {"type": "text", "text": "Go on."},
                ],
            },
            {"role": "system", "content": "Mid-conversation rule."},
        ],
        tools=[
            {
                "name": "f",
                "description": "F.",
                "input_schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
                "cache_control": CACHE,
                "strict": True,
            },
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
        ],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        thinking={"type": "enabled", "budget_tokens": 2048, "display": "omitted"},
        output_config={
            "effort": "high",
            "format": {"type": "json_schema", "schema": {"type": "object"}},
        },
        stop_sequences=["END"],
        metadata={"user_id": "u-1"},
        service_tier="auto",
        inference_geo="us",
        extra_body={"temperature": 0.5, "top_p": 0.9, "top_k": 5},
    )
    sent = upstream.requests[-1]
    request = anthropic.parse_request(sent)
    assert request == ir.Request(
        model="claude-test",
        messages=[
            ir.Message(
                role=ir.Role.SYSTEM, content=[ir.Text(text="Be brief.", cache_control=CACHE)]
            ),
            ir.Message(
                role=ir.Role.USER,
                content=[
                    ir.Text(text="Look:"),
                    ir.Image(media_type="image/png", data=b"\x89PNG\r\n\x1a\n"),
                    ir.Image(url="https://example.com/a.png"),
                    ir.Document(media_type="image/*", file_id="file_img"),
                    ir.Document(
                        media_type="application/pdf",
                        data=b"%PDF-1.7",
                        title="A",
                        cache_control=CACHE,
                    ),
                    ir.Document(media_type="text/plain", data=b"hi"),
                    ir.Document(url="https://example.com/a.pdf"),
                    ir.Document(file_id="file_1"),
                ],
            ),
            ir.Message(
                role=ir.Role.ASSISTANT,
                content=[
                    ir.Reasoning(text="Hmm.", signature="c2ln"),
                    ir.Reasoning(data="ZGF0YQ==", redacted=True),
                    ir.Text(text="Let me look."),
                    ir.ToolCall(id="toolu_1", name="f", arguments='{"a":1}'),
                ],
            ),
            ir.Message(
                role=ir.Role.TOOL,
                content=[
                    ir.ToolResult(call_id="toolu_1", content=[ir.Text(text="42")], is_error=True)
                ],
            ),
            ir.Message(role=ir.Role.USER, content=[ir.Text(text="Go on.")]),
            ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text="Mid-conversation rule.")]),
        ],
        tools=[
            ir.Tool(
                name="f",
                description="F.",
                parameters={"type": "object", "properties": {"a": {"type": "integer"}}},
                strict=True,
                cache_control=CACHE,
            )
        ],
        tool_choice=ir.ToolChoice(mode=ir.ToolChoiceMode.REQUIRED),
        parallel_tool_calls=False,
        max_tokens=1000,
        temperature=0.5,
        top_p=0.9,
        top_k=5,
        stop=["END"],
        response_format=ir.ResponseFormat(
            type=ir.ResponseFormatType.JSON_SCHEMA, schema={"type": "object"}
        ),
        reasoning=ir.ReasoningConfig(enabled=True, effort="high", budget_tokens=2048),
        user="u-1",
        extra=ir.Extra(
            format="anthropic",
            fields={
                "service_tier": "auto",
                "inference_geo": "us",
                "thinking": {"display": "omitted"},
                "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
            },
        ),
    )
    assert wire(anthropic.render_request(request)) == sent


def test_sdk_reads_a_rendered_response(client: sdk.Anthropic) -> None:
    """The SDK's Message model reads render_response's body: C.2's shape and F.3's usage."""
    message = client.messages.create(
        model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.id == "msg_01" and message.type == "message" and message.role == "assistant"
    thinking, text, tool = message.content
    assert (thinking.type, thinking.thinking, thinking.signature) == ("thinking", "Think.", "c2ln")
    assert (text.type, text.text) == ("text", "Checking.")
    assert (tool.type, tool.id, tool.name, tool.input) == (
        "tool_use",
        "toolu_01",
        "get_weather",
        {"city": "Paris"},
    )
    assert (message.stop_reason, message.stop_sequence) == ("tool_use", None)
    usage = message.usage
    assert (
        usage.input_tokens,
        usage.cache_creation_input_tokens,
        usage.cache_read_input_tokens,
    ) == (12, 3, 5)
    assert usage.output_tokens == 40
    assert (
        usage.output_tokens_details is not None and usage.output_tokens_details.thinking_tokens == 7
    )


STREAM: list[ir.Event] = [
    ir.StreamStart(id="msg_02", model="claude-test"),
    ir.ReasoningDelta(index=0, text="The user "),
    ir.ReasoningDelta(index=0, text="wants weather."),
    ir.ReasoningDelta(index=0, signature="first"),
    ir.ReasoningDelta(index=0, signature="c2lnbmF0dXJl"),
    ir.PartEnd(index=0),
    ir.TextDelta(index=1, text="Let me "),
    ir.TextDelta(index=1, text="check."),
    ir.PartEnd(index=1),
    ir.ToolCallStart(index=2, id="toolu_a", name="get_weather"),
    ir.ToolArgsDelta(index=2, json=""),
    ir.ToolArgsDelta(index=2, json='{"city":'),
    ir.ToolArgsDelta(index=2, json='"Paris"}'),
    ir.PartEnd(index=2),
    ir.UsageUpdate(usage=ir.Usage(input_tokens=100, output_tokens=4, cache_read_tokens=60)),
    ir.UsageUpdate(
        usage=ir.Usage(
            input_tokens=100, output_tokens=9, cache_read_tokens=60, cache_write_tokens=30
        )
    ),
    ir.Finish(stop_reason=ir.StopReason.END_TURN),
]


def test_sdk_stream_helper(client: sdk.Anthropic, upstream: Upstream) -> None:
    """``messages.stream()`` (the accumulating helper) over a rendered stream: the thinking
    signature (the last one), the tool input, the tool_use stop, and the real usage in the
    final message although message_start said zero."""
    upstream.body = render_stream(STREAM)
    upstream.content_type = "text/event-stream"
    with client.messages.stream(
        model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "weather?"}]
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert {"thinking", "signature", "text", "input_json", "message_stop"} <= set(kinds)
    thinking, text, tool = final.content
    assert (thinking.thinking, thinking.signature) == ("The user wants weather.", "c2lnbmF0dXJl")
    assert text.text == "Let me check."
    assert (tool.id, tool.name, tool.input) == ("toolu_a", "get_weather", {"city": "Paris"})
    assert final.stop_reason == "tool_use"
    usage = final.usage
    assert (
        usage.input_tokens,
        usage.cache_read_input_tokens,
        usage.cache_creation_input_tokens,
    ) == (10, 60, 30)
    assert usage.output_tokens == 9
    assert anthropic.parse_request(upstream.requests[-1]).stream is True


def test_sdk_raises_a_mid_stream_error(client: sdk.Anthropic, upstream: Upstream) -> None:
    error = ir.StreamError(kind=ir.ErrorKind.OVERLOADED, message="busy", status=529)
    upstream.body = render_stream([*STREAM[:3], error])
    upstream.content_type = "text/event-stream"
    with pytest.raises(sdk.APIStatusError, match="busy"):
        with client.messages.stream(
            model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            stream.get_final_message()


@pytest.mark.parametrize(
    ("kind", "status", "type_", "exception"),
    [
        (ir.ErrorKind.INVALID_REQUEST, 400, "invalid_request_error", sdk.BadRequestError),
        (ir.ErrorKind.AUTHENTICATION, 401, "authentication_error", sdk.AuthenticationError),
        (ir.ErrorKind.PERMISSION, 403, "permission_error", sdk.PermissionDeniedError),
        (ir.ErrorKind.NOT_FOUND, 404, "not_found_error", sdk.NotFoundError),
        (ir.ErrorKind.REQUEST_TOO_LARGE, 413, "request_too_large", sdk.RequestTooLargeError),
        (ir.ErrorKind.RATE_LIMIT, 429, "rate_limit_error", sdk.RateLimitError),
        (ir.ErrorKind.INTERNAL, 500, "api_error", sdk.InternalServerError),
        (ir.ErrorKind.UPSTREAM, 502, "api_error", sdk.InternalServerError),
        (ir.ErrorKind.OVERLOADED, 503, "overloaded_error", sdk.InternalServerError),
        (ir.ErrorKind.TIMEOUT, 504, "timeout_error", sdk.InternalServerError),
        (ir.ErrorKind.OVERLOADED, 529, "overloaded_error", sdk.OverloadedError),
    ],
)
def test_sdk_raises_rendered_errors(
    client: sdk.Anthropic,
    upstream: Upstream,
    kind: ir.ErrorKind,
    status: int,
    type_: str,
    exception: type[Exception],
) -> None:
    """render_error's envelope (C.5's type for the status), with the error's status, raises
    the SDK's class for it; 529 is OverloadedError, an InternalServerError."""
    error = MuxError(kind, "it went wrong", status=status)
    body = anthropic.render_error(error)
    assert body == {"type": "error", "error": {"type": type_, "message": "it went wrong"}}
    upstream.status, upstream.body = status, dumps(body)
    with pytest.raises(exception) as raised:
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert raised.value.body == body  # type: ignore[attr-defined]
    assert issubclass(sdk.OverloadedError, sdk.InternalServerError)


def test_render_error_types() -> None:
    """C.5's table by status (402 is billing_error); other statuses take the kind's type."""
    cases = {
        (ir.ErrorKind.PERMISSION, 402): "billing_error",
        (ir.ErrorKind.INVALID_REQUEST, 405): "invalid_request_error",
        (ir.ErrorKind.TIMEOUT, 408): "timeout_error",
        (ir.ErrorKind.INVALID_REQUEST, 422): "invalid_request_error",
        (ir.ErrorKind.UPSTREAM, 502): "api_error",
    }
    for (kind, status), type_ in cases.items():
        assert anthropic.render_error(MuxError(kind, "x", status=status))["error"]["type"] == type_
    # Each kind at its own status (mux.errors.status_for_kind).
    by_kind = {
        ir.ErrorKind.INVALID_REQUEST: "invalid_request_error",
        ir.ErrorKind.AUTHENTICATION: "authentication_error",
        ir.ErrorKind.PERMISSION: "permission_error",
        ir.ErrorKind.NOT_FOUND: "not_found_error",
        ir.ErrorKind.REQUEST_TOO_LARGE: "request_too_large",
        ir.ErrorKind.RATE_LIMIT: "rate_limit_error",
        ir.ErrorKind.TIMEOUT: "timeout_error",
        ir.ErrorKind.OVERLOADED: "overloaded_error",
        ir.ErrorKind.UPSTREAM: "api_error",
        ir.ErrorKind.INTERNAL: "api_error",
    }
    assert {k: anthropic.render_error(MuxError(k, "x"))["error"]["type"] for k in ir.ErrorKind} == (
        by_kind
    )


def test_sdk_lists_and_retrieves_models(client: sdk.Anthropic, upstream: Upstream) -> None:
    """C.4's shape: type "model", display_name, created_at in RFC 3339; one page."""
    models = [ir.ModelInfo(id="claude-a"), ir.ModelInfo(id="org/b", owned_by="org", created=3)]
    body = anthropic.render_models(models)
    assert body["has_more"] is False and (body["first_id"], body["last_id"]) == (
        "claude-a",
        "org/b",
    )
    assert body["data"][0]["created_at"] == "2024-01-01T00:00:00Z"
    upstream.body = dumps(body)
    listed = list(client.models.list())
    assert [(m.id, m.type, m.display_name, m.created_at.year) for m in listed] == [
        ("claude-a", "model", "claude-a", 2024),
        ("org/b", "model", "org/b", 1970),
    ]
    upstream.body = dumps(anthropic.render_model(models[0]))
    assert client.models.retrieve("claude-a").id == "claude-a"
    assert anthropic.render_models([]) == {
        "data": [],
        "has_more": False,
        "first_id": None,
        "last_id": None,
    }


def test_sdk_count_tokens(client: sdk.Anthropic, upstream: Upstream) -> None:
    upstream.body = dumps(anthropic.render_count_tokens(42))
    counted = client.messages.count_tokens(
        model="claude-test",
        system="Be brief.",
        messages=[{"role": "user", "content": "hi"}],
        thinking={"type": "adaptive"},
    )
    assert counted.input_tokens == 42
    request = anthropic.parse_count_tokens(upstream.requests[-1])
    assert request.max_tokens is None and request.reasoning == ir.ReasoningConfig(enabled=True)
    assert [m.role for m in request.messages] == [ir.Role.SYSTEM, ir.Role.USER]
    assert upstream.paths[-1].endswith("/v1/messages/count_tokens")


# --------------------------------------------------------------------------------------------
# The real client: Claude Code's captured request


def test_claude_code_request_parses_and_renders_back_as_it_came() -> None:
    """Claude Code's real body (system blocks with cache_control, 24 tools, adaptive
    thinking with an effort, context_management, a trailing system message) parses, and
    renders back JSON-equal: nothing it carried is lost on a same-format hop."""
    captured = json.loads(FIXTURE.read_text())
    body = captured["body"]
    request = anthropic.parse_request(body)
    assert [m.role for m in request.messages] == [ir.Role.SYSTEM, ir.Role.USER, ir.Role.SYSTEM]
    assert [p.cache_control for p in request.messages[0].content] == [None, CACHE, CACHE]
    assert request.reasoning == ir.ReasoningConfig(enabled=True, effort="high")
    assert len(request.tools) == 24 and request.stream is True and request.max_tokens == 64000
    assert request.user is not None and "device_id" in request.user
    assert request.extra is not None and set(request.extra.fields) == {"context_management"}
    assert wire(anthropic.render_request(request)) == body


# --------------------------------------------------------------------------------------------
# Request validation

BASE: dict[str, Any] = {
    "model": "m",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
}


def with_messages(*messages: Any) -> dict[str, Any]:
    return BASE | {"messages": list(messages)}


def user(*blocks: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


INVALID: list[tuple[object, str | None, str]] = [
    ([], None, "request body: expected an object, got an array"),
    (BASE | {"model": 3}, "model", "model: expected a string, got a number"),
    (BASE | {"model": ""}, "model", "model: expected a model name, got an empty string"),
    ({"model": "m", "messages": []}, "max_tokens", "max_tokens: expected an integer, got nothing"),
    (
        BASE | {"max_tokens": 0},
        "max_tokens",
        "max_tokens: expected an integer of at least 1, got 0",
    ),
    (BASE | {"max_tokens": "9"}, "max_tokens", "max_tokens: expected an integer, got a string"),
    ({"model": "m", "max_tokens": 1}, "messages", "messages: expected an array, got nothing"),
    (
        with_messages({"role": "tool", "content": "x"}),
        "messages[0].role",
        "messages[0].role: expected one of 'user', 'assistant', 'system', got 'tool'",
    ),
    (
        with_messages({"role": "user", "content": 3}),
        "messages[0].content",
        "messages[0].content: expected a string or an array of content blocks, got a number",
    ),
    (
        with_messages(user({"type": "video"})),
        "messages[0].content[0].type",
        "expected one of 'text', 'image', 'document', 'tool_result', got 'video'",
    ),
    (
        with_messages({"role": "assistant", "content": [{"type": "image"}]}),
        "messages[0].content[0].type",
        "expected one of 'text', 'thinking', 'redacted_thinking', 'tool_use', got 'image'",
    ),
    (
        with_messages({"role": "system", "content": [{"type": "document"}]}),
        "messages[0].content[0].type",
        "expected one of 'text', got 'document'",
    ),
    (
        with_messages(user({"type": "text"})),
        "messages[0].content[0].text",
        "expected a string, got nothing",
    ),
    (
        with_messages(user({"type": "text", "text": "x", "cache_control": "ephemeral"})),
        "messages[0].content[0].cache_control",
        "expected an object, got a string",
    ),
    (
        with_messages(
            user(
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "!!"},
                }
            )
        ),
        "messages[0].content[0].source.data",
        "expected base64 data, got a string that is not base64",
    ),
    (
        with_messages(user({"type": "image", "source": {"type": "base64", "data": PNG}})),
        "messages[0].content[0].source.media_type",
        "expected a string, got nothing",
    ),
    (
        with_messages(user({"type": "image", "source": {"type": "path"}})),
        "messages[0].content[0].source.type",
        "expected one of 'base64', 'url', 'file', got 'path'",
    ),
    (
        with_messages(user({"type": "document", "source": {"type": "content", "content": []}})),
        "messages[0].content[0].source.type",
        "expected one of 'base64', 'text', 'url', 'file', got 'content'",
    ),
    (
        with_messages(
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}],
            }
        ),
        "messages[0].content[0].input",
        "expected an object, got a string",
    ),
    (
        with_messages(
            {"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}
        ),
        "messages[0].content[0].id",
        "expected a string, got nothing",
    ),
    (
        with_messages({"role": "assistant", "content": [{"type": "thinking", "signature": "s"}]}),
        "messages[0].content[0].thinking",
        "expected a string, got nothing",
    ),
    (
        with_messages({"role": "assistant", "content": [{"type": "redacted_thinking"}]}),
        "messages[0].content[0].data",
        "expected a string, got nothing",
    ),
    (
        with_messages(user({"type": "tool_result", "content": "x"})),
        "messages[0].content[0].tool_use_id",
        "expected a string, got nothing",
    ),
    (
        with_messages(
            user({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "tool_result"}]})
        ),
        "messages[0].content[0].content[0].type",
        "expected one of 'text', 'image', 'document', got 'tool_result'",
    ),
    (
        with_messages(user({"type": "tool_result", "tool_use_id": "t", "is_error": "yes"})),
        "messages[0].content[0].is_error",
        "expected a boolean, got a string",
    ),
    (
        BASE | {"system": 3},
        "system",
        "system: expected a string or an array of content blocks, got a number",
    ),
    (
        BASE | {"system": [{"type": "image"}]},
        "system[0].type",
        "system[0].type: expected one of 'text', got 'image'",
    ),
    (BASE | {"stop_sequences": "END"}, "stop_sequences", "expected an array, got a string"),
    (BASE | {"stop_sequences": [1]}, "stop_sequences[0]", "expected a string, got a number"),
    (BASE | {"temperature": "hot"}, "temperature", "temperature: expected a number, got a string"),
    (BASE | {"top_k": -1}, "top_k", "top_k: expected an integer of at least 0, got -1"),
    (BASE | {"top_p": 10**400}, "top_p", "top_p: expected a finite number"),
    (BASE | {"metadata": "u"}, "metadata", "metadata: expected an object, got a string"),
    (BASE | {"metadata": {"user_id": 1}}, "metadata.user_id", "expected a string, got a number"),
    (BASE | {"tools": {}}, "tools", "tools: expected an array, got an object"),
    (BASE | {"tools": [{"input_schema": {}}]}, "tools[0].name", "expected a string, got nothing"),
    (
        BASE | {"tools": [{"name": "f", "input_schema": []}]},
        "tools[0].input_schema",
        "expected an object, got an array",
    ),
    (
        BASE | {"tool_choice": {"type": "required"}},
        "tool_choice.type",
        "tool_choice.type: expected one of 'auto', 'any', 'none', 'tool', got 'required'",
    ),
    (
        BASE | {"tool_choice": "auto"},
        "tool_choice",
        "tool_choice: expected an object, got a string",
    ),
    (
        BASE | {"tool_choice": {"type": "tool"}},
        "tool_choice.name",
        "expected a string, got nothing",
    ),
    (
        BASE | {"tool_choice": {"type": "auto", "disable_parallel_tool_use": 1}},
        "tool_choice.disable_parallel_tool_use",
        "expected a boolean, got a number",
    ),
    (
        BASE | {"thinking": {"type": "enabled"}},
        "thinking.budget_tokens",
        "expected an integer, got nothing",
    ),
    (BASE | {"thinking": {}}, "thinking.type", "expected a string, got nothing"),
    (
        BASE | {"output_config": {"format": {"type": "json_object"}}},
        "output_config.format.type",
        "expected one of 'json_schema', got 'json_object'",
    ),
    (
        BASE | {"output_config": {"format": {"type": "json_schema"}}},
        "output_config.format.schema",
        "expected an object, got nothing",
    ),
    (
        BASE | {"output_config": {"effort": 3}},
        "output_config.effort",
        "expected a string, got a number",
    ),
    (BASE | {"stream": "yes"}, "stream", "stream: expected a boolean, got a string"),
    (
        BASE | {"service_tier": float("nan")},
        "service_tier",
        "expected JSON without NaN or Infinity",
    ),
]


@pytest.mark.parametrize(("body", "param", "message"), INVALID)
def test_invalid_requests_name_the_field(body: object, param: str | None, message: str) -> None:
    """A malformed request is a 400 RequestError whose message and param name the field."""
    with pytest.raises(RequestError) as raised:
        anthropic.parse_request(body)
    assert raised.value.status == 400
    assert raised.value.param == param
    assert message in raised.value.message


def test_count_tokens_needs_no_max_tokens() -> None:
    request = anthropic.parse_count_tokens({"model": "m", "messages": []})
    assert request == ir.Request(model="m", extra=ir.Extra(format="anthropic"))
    with pytest.raises(RequestError, match="max_tokens: expected an integer of at least 1"):
        anthropic.parse_count_tokens({"model": "m", "messages": [], "max_tokens": 0})


# --------------------------------------------------------------------------------------------
# Reading requests


def test_user_turns_split_into_tool_results_then_the_rest() -> None:
    """A user turn of only tool results is a TOOL message; a mixed one is a TOOL message
    then a USER message, each keeping its order; consecutive turns stay apart."""
    result = {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": [{"type": "text", "text": "a"}],
    }
    request = anthropic.parse_request(
        with_messages(
            user(result),
            user(
                {"type": "text", "text": "x"},
                result | {"tool_use_id": "t2"},
                {"type": "text", "text": "y"},
            ),
            {"role": "user", "content": "z"},
            {"role": "user", "content": []},
        )
    )
    texts = [ir.Text(text="x"), ir.Text(text="y")]
    assert request.messages == (
        ir.Message(
            role=ir.Role.TOOL, content=[ir.ToolResult(call_id="t1", content=[ir.Text(text="a")])]
        ),
        ir.Message(
            role=ir.Role.TOOL, content=[ir.ToolResult(call_id="t2", content=[ir.Text(text="a")])]
        ),
        ir.Message(role=ir.Role.USER, content=texts),
        ir.Message(role=ir.Role.USER, content=[ir.Text(text="z")]),
        ir.Message(role=ir.Role.USER, content=[]),
    )


def test_system_prompt_forms() -> None:
    """``system`` as a string or blocks is one leading SYSTEM message; role "system"
    messages stay in place, even last."""
    for system, parts in [
        ("Be brief.", [ir.Text(text="Be brief.")]),
        (
            [{"type": "text", "text": "A"}, {"type": "text", "text": "B", "cache_control": CACHE}],
            [ir.Text(text="A"), ir.Text(text="B", cache_control=CACHE)],
        ),
    ]:
        request = anthropic.parse_request(
            BASE
            | {
                "system": system,
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "system", "content": "late"},
                ],
            }
        )
        assert request.messages == (
            ir.Message(role=ir.Role.SYSTEM, content=parts),
            ir.Message(role=ir.Role.USER, content=[ir.Text(text="hi")]),
            ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text="late")]),
        )


@pytest.mark.parametrize(
    ("fields", "reasoning", "extra"),
    [
        ({"thinking": {"type": "disabled"}}, ir.ReasoningConfig(enabled=False), None),
        ({"thinking": {"type": "adaptive"}}, ir.ReasoningConfig(enabled=True), None),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 5000}},
            ir.ReasoningConfig(enabled=True, budget_tokens=5000),
            None,
        ),
        ({"output_config": {"effort": "max"}}, ir.ReasoningConfig(effort="max"), None),
        (
            {
                "thinking": {"type": "between_tools"},
                "output_config": {"effort": "low", "task_budget": 3},
            },
            ir.ReasoningConfig(effort="low"),
            {"thinking": {"type": "between_tools"}, "output_config": {"task_budget": 3}},
        ),
        ({"thinking": None, "output_config": {}}, None, None),
    ],
)
def test_reasoning_knobs(
    fields: dict[str, Any], reasoning: ir.ReasoningConfig | None, extra: dict[str, Any] | None
) -> None:
    """thinking and output_config.effort are the reasoning config; what the IR has no word
    for stays in Extra and merges back into its object."""
    body = BASE | fields
    request = anthropic.parse_request(body)
    assert request.reasoning == reasoning
    assert request.extra == ir.Extra(format="anthropic", fields=extra or {})
    rendered = anthropic.render_request(request)
    for key, value in fields.items():
        if value:
            assert rendered[key] == value


def test_tool_choices() -> None:
    """F.4: auto/any/none/tool; disable_parallel_tool_use negates parallel_tool_calls."""
    cases = [
        ({"type": "auto"}, ir.ToolChoice(), None),
        (
            {"type": "any", "disable_parallel_tool_use": False},
            ir.ToolChoice(mode=ir.ToolChoiceMode.REQUIRED),
            True,
        ),
        ({"type": "none"}, ir.ToolChoice(mode=ir.ToolChoiceMode.NONE), None),
        (
            {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
            ir.ToolChoice(mode=ir.ToolChoiceMode.TOOL, name="f"),
            False,
        ),
    ]
    for wire_choice, choice, parallel in cases:
        request = anthropic.parse_request(BASE | {"tool_choice": wire_choice})
        assert (request.tool_choice, request.parallel_tool_calls) == (choice, parallel)
        assert anthropic.render_request(request)["tool_choice"] == wire_choice


def test_request_leniencies_and_extra() -> None:
    """Nulls as absent, an empty messages array, metadata keys beside user_id, custom-typed
    tools, citations and a document's context dropped, unknown fields kept."""
    request = anthropic.parse_request(
        {
            "model": "m",
            "max_tokens": 5.0,
            "messages": [
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "cited", "citations": [{"type": "char_location"}]},
                        {"type": "thinking", "thinking": "x", "signature": ""},
                    ],
                },
                user({"type": "document", "source": {"type": "text", "data": "t"}, "context": "c"}),
            ],
            "temperature": None,
            "metadata": {"user_id": None, "tenant": "acme"},
            "tools": [{"type": "custom", "name": "f", "input_schema": {"type": "object"}}],
            "container": "c-1",
            "mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}],
        }
    )
    assert request.max_tokens == 5 and request.temperature is None and request.user is None
    assert request.messages[0].content == (ir.Text(text="cited"), ir.Reasoning(text="x"))
    assert request.messages[1].content == (ir.Document(media_type="text/plain", data=b"t"),)
    assert request.tools == (ir.Tool(name="f", parameters={"type": "object"}),)
    assert request.extra == ir.Extra(
        format="anthropic",
        fields={
            "container": "c-1",
            "mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}],
            "metadata": {"tenant": "acme"},
        },
    )
    rendered = anthropic.render_request(attrs.evolve(request, user="u"))
    assert rendered["metadata"] == {"tenant": "acme", "user_id": "u"}
    assert rendered["container"] == "c-1"


# --------------------------------------------------------------------------------------------
# Writing requests for the Messages API


def test_render_request_shapes_the_conversation() -> None:
    """Leading system messages (developer too) hoist into ``system``; later ones stay in
    place; tool messages become user turns, merged with their neighbours, tool results
    first; empty text and emptied messages are left out; one plain text is a string."""
    result = ir.ToolResult(call_id="t1", content=[ir.Text(text="")], is_error=True)
    body = anthropic.render_request(
        ir.Request(
            model="m",
            messages=[
                ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text="A")]),
                ir.Message(
                    role=ir.Role.DEVELOPER, content=[ir.Text(text="B", cache_control=CACHE)]
                ),
                ir.Message(
                    role=ir.Role.USER, content=[ir.Text(text="q"), ir.Audio(data=b"", format="wav")]
                ),
                ir.Message(
                    role=ir.Role.ASSISTANT, content=[ir.ToolCall(id="t1", name="f", arguments="")]
                ),
                ir.Message(role=ir.Role.USER, content=[ir.Text(text="")]),
                ir.Message(role=ir.Role.USER, content=[ir.Text(text="and")]),
                ir.Message(role=ir.Role.TOOL, content=[result]),
                ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text="C")]),
            ],
        )
    )
    assert body["system"] == [
        {"type": "text", "text": "A"},
        {"type": "text", "text": "B", "cache_control": CACHE},
    ]
    assert body["messages"] == [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "is_error": True},
                {"type": "text", "text": "and"},
            ],
        },
        {"role": "system", "content": "C"},
    ]


_REPLAYED = ir.Message(
    role=ir.Role.ASSISTANT,
    content=[
        ir.Reasoning(text="from OpenAI"),
        ir.Reasoning(text="encrypted", data="ZW5j"),
        ir.Reasoning(text="signed", signature="c2ln+/="),
        ir.Reasoning(data="cmVk", redacted=True),
        ir.Text(text="Answer."),
        ir.ToolCall(id="t", name="f", arguments="[1, 2]"),
    ],
)
_OWN_ORIGINS = [
    pytest.param({"extra": ir.Extra(format="anthropic")}, id="anthropic-extra"),
    pytest.param({"origin": ir.Origin(format="anthropic", body={})}, id="anthropic-origin"),
]


@pytest.mark.parametrize("own", _OWN_ORIGINS)
def test_render_request_drops_unsigned_reasoning(own: dict[str, Any]) -> None:
    """G.1: signatures cannot be made up, so unsigned reasoning is dropped; in a request of
    Anthropic origin, signed and redacted reasoning go out byte-exact."""
    body = anthropic.render_request(ir.Request(model="m", messages=[_REPLAYED], **own))
    assert body["messages"][0]["content"] == [
        {"type": "thinking", "thinking": "signed", "signature": "c2ln+/="},
        {"type": "redacted_thinking", "data": "cmVk"},
        {"type": "text", "text": "Answer."},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"_raw": "[1, 2]"}},
    ]


@pytest.mark.parametrize(
    "foreign",
    [
        pytest.param({}, id="no-origin"),
        pytest.param({"origin": ir.Origin(format="gemini", body={})}, id="gemini-origin"),
        pytest.param({"extra": ir.Extra(format="gemini")}, id="gemini-extra"),
        pytest.param(
            {"origin": ir.Origin(format="openai_responses", body={})}, id="responses-origin"
        ),
    ],
)
def test_render_request_drops_reasoning_not_of_anthropic_origin(foreign: dict[str, Any]) -> None:
    """G.1: a signature Anthropic did not issue is answered 400 "Invalid signature in thinking
    block", so a request not of Anthropic origin (a Gemini client's thought signatures)
    sends no thinking and no redacted thinking at all."""
    gemini_signed = ir.Message(
        role=ir.Role.ASSISTANT,
        content=[
            ir.Reasoning(text="Gemini thought.", signature="R2VtaW5pIHNpZw=="),
            ir.Text(text="Sunny."),
        ],
    )
    request = ir.Request(
        model="m", messages=[gemini_signed, _REPLAYED, ir.Message(role=ir.Role.USER)], **foreign
    )
    body = anthropic.render_request(request)
    assert body["messages"] == [
        {"role": "assistant", "content": [
            {"type": "text", "text": "Sunny."},
            {"type": "text", "text": "Answer."},
            {"type": "tool_use", "id": "t", "name": "f", "input": {"_raw": "[1, 2]"}},
        ]},
    ]  # fmt: skip
    assert "signature" not in json.dumps(body) and "redacted" not in json.dumps(body)


def test_parse_request_marks_anthropic_origin() -> None:
    """Every parsed request carries an Anthropic Extra (empty when there is nothing to keep),
    so that a client's thinking re-renders byte-exact with no Origin attached."""
    thinking = [
        {"type": "thinking", "thinking": "Hmm.", "signature": "c2ln+/="},
        {"type": "redacted_thinking", "data": "cmVk"},
        {"type": "text", "text": "Hi."},
    ]
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": thinking},
            {"role": "user", "content": "Thanks"},
        ],
    }
    request = anthropic.parse_request(body)
    assert request.origin is None
    assert request.extra == ir.Extra(format="anthropic")
    assert anthropic.render_request(request) == body


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (ir.Request(model="m"), {"max_tokens": 8192}),
        (
            ir.Request(model="m", temperature=1.7, max_tokens=5),
            {"temperature": 1.0, "max_tokens": 5},
        ),
        (
            ir.Request(model="m", reasoning=ir.ReasoningConfig(budget_tokens=500)),
            {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 8192 + 1024},
        ),
        (
            ir.Request(model="m", reasoning=ir.ReasoningConfig(effort="minimal")),
            {"output_config": {"effort": "low"}},
        ),
        (
            ir.Request(model="m", reasoning=ir.ReasoningConfig(effort="none")),
            {"thinking": {"type": "disabled"}},
        ),
        (
            ir.Request(model="m", reasoning=ir.ReasoningConfig(budget_tokens=0)),
            {"thinking": {"type": "disabled"}},
        ),
        (
            ir.Request(model="m", reasoning=ir.ReasoningConfig(enabled=True, effort="xhigh")),
            {"thinking": {"type": "adaptive"}, "output_config": {"effort": "xhigh"}},
        ),
        (
            ir.Request(model="m", parallel_tool_calls=False),
            {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
        ),
        (
            ir.Request(model="m", tool_choice=ir.ToolChoice(mode=ir.ToolChoiceMode.TOOL)),
            {"tool_choice": {"type": "any"}},
        ),
        (
            ir.Request(
                model="m",
                response_format=ir.ResponseFormat(type=ir.ResponseFormatType.JSON_OBJECT),
                tools=[ir.Tool(name="f")],
            ),
            {"tools": [{"name": "f", "input_schema": {"type": "object"}}]},
        ),
    ],
)
def test_render_request_fills_and_fits_knobs(
    request_: ir.Request, expected: dict[str, Any]
) -> None:
    """max_tokens defaults (plus the budget), temperature clamps to [0, 1], budgets rise to
    1024, OpenAI efforts map, parallel_tool_calls needs a tool choice, json_object has no
    Anthropic form, input_schema is required."""
    body = anthropic.render_request(request_)
    assert {key: body.get(key) for key in expected} == expected
    assert "output_config" in body or "output_config" not in expected


def test_render_request_documents_and_images() -> None:
    """Sources by what the part holds; text documents as text; unknown image types
    sniffed; image files as image blocks; parts with nothing to send left out."""
    parts: list[ir.Part] = [
        ir.Image(data=b"\xff\xd8\xff\xe0", detail="low"),
        ir.Image(),
        ir.Document(media_type="text/markdown", data="é".encode(), title="T"),
        ir.Document(data=b"%PDF", filename="a.pdf"),
        ir.Document(media_type="image/png", file_id="file_1"),
        ir.Document(media_type="image/gif", url="https://x/a.gif"),
        ir.Document(filename="nothing"),
    ]
    body = anthropic.render_request(
        ir.Request(model="m", messages=[ir.Message(role=ir.Role.USER, content=parts)])
    )
    assert body["messages"][0]["content"] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4A=="},
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "é"},
            "title": "T",
        },
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERg=="},
        },
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
        {"type": "image", "source": {"type": "url", "url": "https://x/a.gif"}},
    ]


# --------------------------------------------------------------------------------------------
# Upstream answers


def test_parse_response_reads_protocols_example() -> None:
    """C.2's example with cache counts (F.3), thinking tokens, a server tool block (skipped)
    and fields the IR does not model (kept in Extra)."""
    body = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "thinking", "thinking": "…", "signature": "Eq=="},
            {"type": "text", "text": "Checking.", "citations": None},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
            {
                "type": "tool_use",
                "id": "toolu_01",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "output_tokens": 40,
            "cache_creation_input_tokens": 3,
            "cache_read_input_tokens": 5,
            "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 0},
            "output_tokens_details": {"thinking_tokens": 20},
        },
        "container": None,
        "stop_details": None,
    }
    assert anthropic.parse_response(body) == ir.Response(
        id="msg_01",
        model="claude-x",
        content=[
            ir.Reasoning(text="…", signature="Eq=="),
            ir.Text(text="Checking."),
            ir.ToolCall(id="toolu_01", name="get_weather", arguments='{"city":"Paris"}'),
        ],
        stop_reason=ir.StopReason.TOOL_USE,
        usage=ir.Usage(
            input_tokens=20,
            output_tokens=40,
            cache_read_tokens=5,
            cache_write_tokens=3,
            reasoning_tokens=20,
        ),
        extra=ir.Extra(format="anthropic", fields={"container": None, "stop_details": None}),
    )
    assert anthropic.parse_response({"content": []}) == ir.Response(id="", model="")


@pytest.mark.parametrize(
    ("wire_reason", "reason", "back"),
    [
        ("end_turn", ir.StopReason.END_TURN, "end_turn"),
        ("stop_sequence", ir.StopReason.STOP_SEQUENCE, "stop_sequence"),
        ("max_tokens", ir.StopReason.MAX_TOKENS, "max_tokens"),
        ("model_context_window_exceeded", ir.StopReason.MAX_TOKENS, "max_tokens"),
        ("tool_use", ir.StopReason.TOOL_USE, "tool_use"),
        ("refusal", ir.StopReason.CONTENT_FILTER, "refusal"),
        ("pause_turn", ir.StopReason.PAUSE, "pause_turn"),
        (None, ir.StopReason.END_TURN, "end_turn"),
        ("something_new", ir.StopReason.END_TURN, "end_turn"),
    ],
)
def test_stop_reasons(wire_reason: str | None, reason: ir.StopReason, back: str) -> None:
    """F.2 both ways; the matched stop sequence travels with stop_sequence only."""
    parsed = anthropic.parse_response({"stop_reason": wire_reason, "stop_sequence": "END"})
    assert parsed.stop_reason is reason
    rendered = anthropic.render_response(attrs.evolve(parsed, stop_sequence="END"))
    assert rendered["stop_reason"] == back
    assert rendered["stop_sequence"] == ("END" if back == "stop_sequence" else None)


def test_render_response_makes_natural_stops_with_calls_tool_turns() -> None:
    """Gemini and Ollama say STOP for tool turns (F.2); Claude clients loop on tool_use."""
    call = ir.ToolCall(id="c", name="f", arguments='{"a":1}')
    for reason in (ir.StopReason.END_TURN, ir.StopReason.ERROR):
        body = anthropic.render_response(
            ir.Response(id="r", model="m", content=[call], stop_reason=reason)
        )
        assert body["stop_reason"] == "tool_use"
    body = anthropic.render_response(
        ir.Response(
            id="r",
            model="m",
            content=[ir.Reasoning(text="hm"), call],
            stop_reason=ir.StopReason.MAX_TOKENS,
        )
    )
    assert body["stop_reason"] == "max_tokens"
    assert body["content"][0] == {"type": "thinking", "thinking": "hm", "signature": ""}


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"content": {}},
        {"content": [3]},
        {"content": [{"type": "text", "text": 3}]},
        {"content": [{"type": "tool_use", "id": "c", "name": "f", "input": []}]},
        {"usage": {"input_tokens": -1}},
        {"id": 3},
    ],
)
def test_malformed_responses_are_upstream_errors(body: object) -> None:
    with pytest.raises(UpstreamError) as raised:
        anthropic.parse_response(body)
    assert raised.value.kind is ir.ErrorKind.UPSTREAM and raised.value.status == 502


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            ir.ErrorKind.OVERLOADED,
            "Overloaded",
        ),
        (
            429,
            {
                "type": "error",
                "error": {"type": "rate_limit_error", "message": "slow"},
                "request_id": "r",
            },
            ir.ErrorKind.RATE_LIMIT,
            "slow",
        ),
        (413, {"error": "too big"}, ir.ErrorKind.REQUEST_TOO_LARGE, "too big"),
        (404, {"message": "nope"}, ir.ErrorKind.NOT_FOUND, "nope"),
        (500, "  oops  ", ir.ErrorKind.INTERNAL, "oops"),
        (
            401,
            None,
            ir.ErrorKind.AUTHENTICATION,
            "the upstream answered HTTP 401 without an error message",
        ),
        (
            502,
            [1],
            ir.ErrorKind.UPSTREAM,
            "the upstream answered HTTP 502 without an error message",
        ),
        (
            400,
            {"error": {"message": 3}},
            ir.ErrorKind.INVALID_REQUEST,
            "the upstream answered HTTP 400 without an error message",
        ),
    ],
)
def test_parse_error(status: int, body: object, kind: ir.ErrorKind, message: str) -> None:
    """The kind follows the status; the upstream's message is kept; nothing raises."""
    error = anthropic.parse_error(status, body)
    assert isinstance(error, UpstreamError)
    assert (error.kind, error.message, error.status) == (kind, message, status)


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return sse_event(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def block_delta(index: int, delta: dict[str, Any]) -> bytes:
    return sse_event(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )


def block_stop(index: int) -> bytes:
    return sse_event("content_block_stop", {"type": "content_block_stop", "index": index})


def message_start(usage: dict[str, Any] | None = None) -> bytes:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 25, "output_tokens": 1},
    }
    return sse_event("message_start", {"type": "message_start", "message": message})


def message_delta(reason: str = "end_turn", **usage: Any) -> bytes:
    delta = {"stop_reason": reason, "stop_sequence": "END" if reason == "stop_sequence" else None}
    return sse_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})


MESSAGE_STOP = sse_event("message_stop", {"type": "message_stop"})
PING = sse_event("ping", {"type": "ping"})
START = ir.StreamStart(id="msg_1", model="claude-x")


def test_stream_parser_reads_protocols_example() -> None:
    """C.3's example, with a ping, split byte by byte."""
    data = b"".join(
        [
            message_start(),
            block_start(0, {"type": "text", "text": ""}),
            PING,
            block_delta(0, {"type": "text_delta", "text": "Hello"}),
            block_stop(0),
            message_delta(output_tokens=15),
            MESSAGE_STOP,
        ]
    )
    assert parse_stream([data[i : i + 1] for i in range(len(data))]) == [
        START,
        ir.TextDelta(index=0, text="Hello"),
        ir.PartEnd(index=0),
        ir.UsageUpdate(usage=ir.Usage(input_tokens=25, output_tokens=15)),
        ir.Finish(stop_reason=ir.StopReason.END_TURN),
    ]


STREAM_CASES: list[tuple[str, bytes, list[ir.Event]]] = [
    (
        "thinking with its signature, then a tool call whose first fragment is empty",
        message_start({"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 1})
        + block_start(0, {"type": "thinking", "thinking": "", "signature": ""})
        + block_delta(0, {"type": "thinking_delta", "thinking": "Hmm"})
        + block_delta(0, {"type": "signature_delta", "signature": "c2ln"})
        + block_stop(0)
        + block_start(1, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}})
        + block_delta(1, {"type": "input_json_delta", "partial_json": ""})
        + block_delta(1, {"type": "input_json_delta", "partial_json": '{"a":1}'})
        + block_stop(1)
        + message_delta(
            "tool_use",
            input_tokens=10,
            cache_creation_input_tokens=None,
            output_tokens=30,
            output_tokens_details={"thinking_tokens": 12},
        )
        + MESSAGE_STOP,
        [
            START,
            ir.ReasoningDelta(index=0, text="Hmm"),
            ir.ReasoningDelta(index=0, signature="c2ln"),
            ir.PartEnd(index=0),
            ir.ToolCallStart(index=1, id="toolu_1", name="f"),
            ir.ToolArgsDelta(index=1, json='{"a":1}'),
            ir.PartEnd(index=1),
            ir.UsageUpdate(
                usage=ir.Usage(
                    input_tokens=100, output_tokens=30, cache_read_tokens=90, reasoning_tokens=12
                )
            ),
            ir.Finish(stop_reason=ir.StopReason.TOOL_USE),
        ],
    ),
    (
        "redacted thinking, server tool blocks skipped, an empty text block, a citation",
        message_start()
        + block_start(0, {"type": "redacted_thinking", "data": "cmVk"})
        + block_stop(0)
        + block_start(1, {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}})
        + block_delta(1, {"type": "input_json_delta", "partial_json": "{}"})
        + block_stop(1)
        + block_start(2, {"type": "web_search_tool_result", "tool_use_id": "s", "content": []})
        + block_stop(2)
        + block_start(3, {"type": "text", "text": ""})
        + block_delta(
            3, {"type": "citations_delta", "citation": {"type": "web_search_result_location"}}
        )
        + block_stop(3)
        + message_delta("stop_sequence", output_tokens=2)
        + MESSAGE_STOP,
        [
            START,
            ir.ReasoningDelta(index=0, data="cmVk", redacted=True),
            ir.PartEnd(index=0),
            ir.TextDelta(index=1, text=""),
            ir.PartEnd(index=1),
            ir.UsageUpdate(usage=ir.Usage(input_tokens=25, output_tokens=2)),
            ir.Finish(stop_reason=ir.StopReason.STOP_SEQUENCE, stop_sequence="END"),
        ],
    ),
    (
        "events without event: lines, a tool input given whole at the start, refusal",
        b'data: {"type":"message_start","message":{"id":"msg_1","model":"claude-x","usage":{}}}\n\n'
        + b'data: {"type":"content_block_start","index":0,"content_block":'
        + b'{"type":"tool_use","id":"t","name":"f","input":{"x":[1]}}}\n\n'
        + b'data: {"type":"content_block_stop","index":0}\n\n'
        + b'data: {"type":"message_delta","delta":{"stop_reason":"refusal"},'
        + b'"usage":{"output_tokens":3}}\n\n'
        + b'data: {"type":"message_stop"}\n\n',
        [
            START,
            ir.ToolCallStart(index=0, id="t", name="f"),
            ir.ToolArgsDelta(index=0, json='{"x":[1]}'),
            ir.PartEnd(index=0),
            ir.UsageUpdate(usage=ir.Usage(output_tokens=3)),
            ir.Finish(stop_reason=ir.StopReason.CONTENT_FILTER),
        ],
    ),
    (
        "a mid-stream error",
        message_start()
        + block_start(0, {"type": "text", "text": ""})
        + block_delta(0, {"type": "text_delta", "text": "x"})
        + sse_event(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
        + block_delta(0, {"type": "text_delta", "text": "y"}),
        [
            START,
            ir.TextDelta(index=0, text="x"),
            ir.StreamError(kind=ir.ErrorKind.OVERLOADED, message="Overloaded", status=529),
        ],
    ),
    (
        "an error before anything else, of an unknown type",
        sse_event("error", {"type": "error", "error": {"type": "weird", "message": "boom"}}),
        [ir.StreamError(kind=ir.ErrorKind.UPSTREAM, message="boom", status=502)],
    ),
    (
        "a stream that breaks off in a block",
        message_start()
        + block_start(0, {"type": "text", "text": ""})
        + block_delta(0, {"type": "text_delta", "text": "x"}),
        [
            START,
            ir.TextDelta(index=0, text="x"),
            ir.StreamError(
                kind=ir.ErrorKind.UPSTREAM,
                message="the upstream stream ended before message_stop",
                status=502,
            ),
        ],
    ),
    (
        "a stream that ends after message_delta without message_stop",
        message_start() + message_delta(output_tokens=1),
        [
            START,
            ir.UsageUpdate(usage=ir.Usage(input_tokens=25, output_tokens=1)),
            ir.Finish(stop_reason=ir.StopReason.END_TURN),
        ],
    ),
    (
        "an empty body",
        b"",
        [
            ir.StreamError(
                kind=ir.ErrorKind.UPSTREAM,
                message="the upstream stream ended before message_stop",
                status=502,
            )
        ],
    ),
]


@pytest.mark.parametrize(
    ("name", "data", "expected"), STREAM_CASES, ids=[c[0] for c in STREAM_CASES]
)
def test_stream_parser_cases(name: str, data: bytes, expected: list[ir.Event]) -> None:
    events = parse_stream([data])
    assert events == expected
    strats.check_stream(events)


@pytest.mark.parametrize(
    "data",
    [
        b"event: message_start\ndata: {not json\n\n",
        b"data: [1]\n\n",
        block_start(0, {"type": "text", "text": ""}),
        message_start() + block_delta(0, {"type": "text_delta", "text": "x"}),
        message_start()
        + block_start(0, {"type": "text", "text": ""})
        + block_start(1, {"type": "text", "text": ""}),
        message_start()
        + block_start(0, {"type": "text", "text": ""})
        + block_delta(0, {"type": "text_delta", "text": 3}),
        message_start() + block_start(0, {"type": "tool_use", "name": "f", "input": {}}),
        message_start({"input_tokens": "many"}),
    ],
    ids=[
        "not JSON",
        "not an object",
        "a block before message_start",
        "a delta with no open block",
        "interleaved blocks",
        "text not a string",
        "a tool call without an id",
        "bad usage",
    ],
)
def test_stream_parser_rejects_malformed_streams(data: bytes) -> None:
    """Malformed upstream data is an UpstreamError (kind UPSTREAM), nothing else."""
    with pytest.raises(UpstreamError) as raised:
        parse_stream([data])
    assert raised.value.kind is ir.ErrorKind.UPSTREAM


def test_stream_parser_ignores_what_follows_the_end() -> None:
    parser = StreamParser()
    parser.feed(message_start() + message_delta() + MESSAGE_STOP)
    assert parser.feed(b"data: garbage\n\n") == [] and parser.close() == []


def _tool_loop(first: ir.Part, reasoning: ir.ReasoningConfig) -> ir.Request:
    return ir.Request(
        model="m",
        reasoning=reasoning,
        messages=[
            ir.Message(role=ir.Role.USER, content=[ir.Text(text="Weather?")]),
            ir.Message(role=ir.Role.ASSISTANT, content=[
                first, ir.ToolCall(id="t", name="weather", arguments="{}"),
            ]),
            ir.Message(role=ir.Role.TOOL, content=[ir.ToolResult(call_id="t", content=[
                ir.Text(text="sunny")
            ])]),
        ],
        origin=ir.Origin(format="anthropic", body={}),
    )


@pytest.mark.parametrize("reasoning", [
    pytest.param(ir.ReasoningConfig(enabled=True, budget_tokens=2048), id="budget"),
    pytest.param(ir.ReasoningConfig(enabled=True), id="adaptive"),
])
def test_thinking_is_left_off_a_tool_loop_without_a_thinking_turn(
    reasoning: ir.ReasoningConfig,
) -> None:
    """G.1: with thinking on, the API refuses a tool loop whose last assistant turn does not
    start with a thinking block (a history from another model): thinking goes, the request
    stays answerable; a turn that starts with signed thinking keeps it."""
    foreign = anthropic.render_request(_tool_loop(ir.Text(text="Let me look."), reasoning))
    assert "thinking" not in foreign
    assert foreign["max_tokens"] == anthropic.DEFAULT_MAX_TOKENS
    own = anthropic.render_request(_tool_loop(ir.Reasoning(text="Hm.", signature="c2ln"), reasoning))
    assert own["thinking"]["type"] in ("enabled", "adaptive")
    assert own["messages"][1]["content"][0]["type"] == "thinking"
    # A new user turn (not a tool loop) asks nothing of the history.
    fresh = attrs.evolve(
        _tool_loop(ir.Text(text="Let me look."), reasoning),
        messages=[ir.Message(role=ir.Role.USER, content=[ir.Text(text="Hi")])],
    )
    assert anthropic.render_request(fresh)["thinking"]["type"] in ("enabled", "adaptive")
