"""mux.formats.openai_responses: round trips against the projection, validation, the SDK.

The properties check ``parse(render(x)) == projection(x)`` for generated requests, responses
and streams (the stream's bytes split at random places); the SDK tests feed rendered
streams to the ``openai`` SDK's own Responses stream accumulator and drive the real client
over a mock transport; the tables check validation messages and real upstream streams; the
captured Codex request must come back field for field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import httpx2
import openai
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai._models import construct_type
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent

from mux import ir
from mux.errors import MuxError, RequestError, UpstreamError
from mux.formats import openai_responses as responses
from mux.formats.openai_responses import STATE, StreamParser, StreamRenderer
from mux.framing import SSEDecoder, dumps
from mux.streams import collect, split
from tests import strategies as strats
from tests.strategies import feed, splits, wire
from tests.conftest import FIXTURES
from tests.projections import openai_responses as projection

fast = settings(deadline=None)  # examples: the profile's (conftest)
NAME = "openai_responses"


def render_stream(events: Sequence[ir.Event], request: ir.Request) -> bytes:
    renderer = StreamRenderer(request)
    return b"".join(renderer.render(e) for e in events)


def parse_stream(pieces: Sequence[bytes]) -> list[ir.Event]:
    return feed(StreamParser(), pieces)


def clear_created(events: list[ir.Event], original: ir.Event) -> list[ir.Event]:
    """Clear the ``created`` the renderer took from the clock, where the IR had none."""
    start = events[0] if events else None
    if isinstance(start, ir.StreamStart) and getattr(original, "created", 0) is None:
        assert isinstance(start.created, int)
        events[0] = attrs.evolve(start, created=None)
    return events


STREAM_REQUEST = ir.Request(model="m", stream=True, stream_usage=True)


# --------------------------------------------------------------------------------------------
# Round trips


@fast
@given(strats.requests())
def test_request_round_trip(request: ir.Request) -> None:
    """parse_request(render_request(r)) is the Responses projection of r."""
    parsed = responses.parse_request(wire(responses.render_request(request)))
    assert parsed == projection.request(request)


@fast
@given(strats.requests())
def test_request_render_is_stable(request: ir.Request) -> None:
    """What Responses can say survives any number of trips: projecting twice changes nothing."""
    once = projection.request(request)
    assert projection.request(once) == once
    assert responses.parse_request(wire(responses.render_request(once))) == once


@fast
@given(strats.responses())
def test_response_round_trip(response: ir.Response) -> None:
    """parse_response(render_response(r)) is the Responses projection of r."""
    parsed = responses.parse_response(wire(responses.render_response(response)))
    if response.created is None:
        assert isinstance(parsed.created, int)
        parsed = attrs.evolve(parsed, created=None)
    assert parsed == projection.response(response)


@fast
@given(strats.event_streams(), st.data())
def test_stream_round_trip(events: list[ir.Event], data: st.DataObject) -> None:
    """Rendered, split anywhere and parsed, a stream is its Responses projection, and both
    follow the IR grammar."""
    strats.check_stream(events)
    pieces = data.draw(splits(render_stream(events, STREAM_REQUEST)))
    parsed = clear_created(parse_stream(pieces), events[0])
    strats.check_stream(parsed)
    assert parsed == projection.events(events, STREAM_REQUEST)


def test_a_stream_that_failed_before_it_began() -> None:
    """A lone StreamError is an ``error`` event (there is no response to fail), read back
    as the same error."""
    error = ir.StreamError(kind=ir.ErrorKind.RATE_LIMIT, message="slow down", status=429)
    data = render_stream([error], STREAM_REQUEST)
    assert data.startswith(b"event: error\n")
    assert parse_stream([data]) == [error]


# --------------------------------------------------------------------------------------------
# What the SDK's Responses stream helper needs (protocols.md section 0, B.4)


def sse_events(data: bytes) -> list[dict[str, Any]]:
    """The events of a rendered stream, checking the framing: ``event:`` equals ``type``,
    sequence numbers count from 0, no ``[DONE]``."""
    messages = SSEDecoder().feed(data)
    events = [json.loads(m.data) for m in messages]
    assert [m.event for m in messages] == [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}


@fast
@given(strats.event_streams())
def test_stream_meets_sdk_constraints(events: list[ir.Event]) -> None:
    """``response.created`` first; exactly one terminal event, last; output indices dense
    from 0, each announced by ``output_item.added`` before its deltas, and content parts
    by ``content_part.added``."""
    wire_events = sse_events(render_stream(events, STREAM_REQUEST))
    types = [e["type"] for e in wire_events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert [t for t in types if t in TERMINAL] == [types[-1]]
    announced: list[int] = []
    parts: set[tuple[int, int]] = set()
    for e in wire_events:
        if e["type"] == "response.output_item.added":
            assert e["output_index"] == len(announced)
            announced.append(e["output_index"])
        elif e["type"] == "response.content_part.added":
            parts.add((e["output_index"], e["content_index"]))
        elif "output_index" in e:
            assert e["output_index"] in announced
            if e["type"].startswith("response.output_text"):
                assert (e["output_index"], e["content_index"]) in parts
    ids = {e["response"]["id"] for e in wire_events if "response" in e}
    assert len(ids) == 1, "the SDK refuses a response whose identity changes"


def accumulate(data: bytes) -> tuple[ResponseStreamState[Any], list[Any]]:
    """Feed rendered events to the SDK's own stream accumulator (``responses.stream()``),
    built from the JSON the way the SDK builds them (leniently, by ``construct_type``)."""
    state: ResponseStreamState[Any] = ResponseStreamState(
        input_tools=openai.omit, text_format=openai.omit
    )
    fired = []
    for raw in sse_events(data):
        fired += state.handle_event(construct_type(type_=ResponseStreamEvent, value=raw))
    return state, fired


def unique_calls(events: list[ir.Event]) -> bool:
    """Whether every tool call has its own id, as in any real answer (the SDK tells output
    items apart by call id)."""
    ids = [e.id for e in events if isinstance(e, ir.ToolCallStart)]
    return len(ids) == len(set(ids))


@fast
@given(strats.event_streams(errors=False).filter(unique_calls))
def test_stream_accumulates_in_the_sdk(events: list[ir.Event]) -> None:
    """The SDK's accumulator rebuilds the answer the events describe: text, reasoning
    summaries, calls, usage, and the status. (Like OpenAI, an incomplete answer ends with
    ``response.incomplete``, which ``get_final_response()`` does not accept: its response
    is read from that event.)"""
    finish = events[-1]
    assert isinstance(finish, ir.Finish)
    state, fired = accumulate(render_stream(events, STREAM_REQUEST))
    status = responses._status(finish.stop_reason)[0]
    if status == "failed":
        assert state._completed_response is None and fired[-1].type == "response.failed"
        return
    if status == "incomplete":
        assert state._completed_response is None and fired[-1].type == "response.incomplete"
        final = fired[-1].response
    else:
        final = state._completed_response  # what get_final_response() returns
    assert final is not None and final.status == status
    expected = collect(events)
    texts = [p.text for p in expected.content if isinstance(p, ir.Text)]
    assert final.output_text == "".join(texts)
    summaries = [
        "".join(s.text for s in item.summary) for item in final.output if item.type == "reasoning"
    ]
    assert summaries == [p.text for p in expected.content if isinstance(p, ir.Reasoning)]
    calls = [(c.call_id, c.name, c.arguments) for c in final.output if c.type == "function_call"]
    assert calls == [
        (p.id, p.name, p.arguments if p.arguments != "{}" or has_args(events, i) else "")
        for i, p in enumerate(expected.content)
        if isinstance(p, ir.ToolCall)
    ]
    assert final.usage is not None and final.usage.total_tokens == expected.usage.total_tokens
    deltas = [e.delta for e in fired if e.type == "response.output_text.delta"]
    assert "".join(deltas) == final.output_text


def has_args(events: list[ir.Event], index: int) -> bool:
    return any(isinstance(e, ir.ToolArgsDelta) and e.index == index and e.json for e in events)


def test_stream_error_fails_the_response() -> None:
    """A StreamError after the start is a ``response.failed`` carrying the error; later
    events say nothing."""
    renderer = StreamRenderer(STREAM_REQUEST)
    renderer.render(ir.StreamStart(id="resp_1", model="m", created=1))
    renderer.render(ir.TextDelta(index=0, text="Hi"))
    out = renderer.render(ir.StreamError(kind=ir.ErrorKind.OVERLOADED, message="busy", status=529))
    (failed,) = [json.loads(m.data) for m in SSEDecoder().feed(out)]
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {
        "code": "overloaded_error",
        "message": "busy",
        "type": "overloaded_error",
    }
    assert renderer.render(ir.Finish(stop_reason=ir.StopReason.END_TURN)) == b""


def test_stream_renderer_needs_a_start() -> None:
    with pytest.raises(ValueError, match="StreamStart"):
        StreamRenderer(STREAM_REQUEST).render(ir.TextDelta(index=0, text="x"))


def test_streamed_response_echoes_the_request() -> None:
    """The response objects in the stream carry the request's settings, as OpenAI's do."""
    request = responses.parse_request(
        {
            "model": "m",
            "input": "hi",
            "instructions": "Be brief.",
            "tools": [
                {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True},
                {"type": "web_search"},
            ],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "temperature": 0.5,
            "top_p": 0.9,
            "max_output_tokens": 50,
            "text": {"format": {"type": "json_object"}, "verbosity": "low"},
            "reasoning": {"effort": "low"},
            "store": False,
            "metadata": {"k": "v"},
            "stream": True,
        }
    )
    data = render_stream([ir.StreamStart(id="r", model="m", created=1)], request)
    created = sse_events(data)[0]["response"]
    assert {k: created[k] for k in ("instructions", "tool_choice", "parallel_tool_calls")} == {
        "instructions": "Be brief.",
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    assert created["tools"][1] == {"type": "web_search"}
    assert created["text"] == {"format": {"type": "json_object"}, "verbosity": "low"}
    assert created["reasoning"] == {"effort": "low", "summary": None}
    assert (created["temperature"], created["top_p"], created["max_output_tokens"]) == (
        0.5,
        0.9,
        50,
    )
    assert (created["store"], created["metadata"], created["status"]) == (
        False,
        {"k": "v"},
        "in_progress",
    )


# --------------------------------------------------------------------------------------------
# The real SDK, over a mock transport


@attrs.define
class Upstream:
    """An httpx2 transport answering the SDK with a canned status and body."""

    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    requests: list[Any] = attrs.Factory(list)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.content:
            self.requests.append(json.loads(request.content))
        headers = {"content-type": self.content_type}
        return httpx2.Response(self.status, content=self.body, headers=headers)


RESPONSE = ir.Response(
    id="resp_1",
    model="gpt-test",
    content=[
        ir.Reasoning(text="Think.", data="ZW5j"),
        ir.Text(text="Let me check."),
        ir.ToolCall(id="call_a", name="get_weather", arguments='{"city":"Paris"}'),
    ],
    stop_reason=ir.StopReason.TOOL_USE,
    usage=ir.Usage(input_tokens=10, output_tokens=5, cache_read_tokens=4, reasoning_tokens=2),
    created=1741290958,
)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream(body=dumps(responses.render_response(RESPONSE)))


@pytest.fixture
def client(upstream: Upstream) -> Iterator[openai.OpenAI]:
    http = httpx2.Client(transport=httpx2.MockTransport(upstream))
    with openai.OpenAI(
        api_key="k", base_url="http://mux.test/v1", http_client=http, max_retries=0
    ) as client:
        yield client


def test_sdk_reads_a_rendered_response(client: openai.OpenAI) -> None:
    """``responses.create`` reads render_response's body: output_text, items, usage."""
    response = client.responses.create(model="gpt-test", input="weather?")
    assert response.id == "resp_1" and response.status == "completed"
    assert response.output_text == "Let me check."
    reasoning, message, call = response.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Think."
    assert reasoning.encrypted_content == "ZW5j"
    assert message.type == "message" and message.content[0].annotations == []
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == (
        "call_a",
        "get_weather",
        '{"city":"Paris"}',
    )
    assert response.usage is not None and response.usage.total_tokens == 15
    assert response.usage.input_tokens_details.cached_tokens == 4
    assert response.usage.output_tokens_details.reasoning_tokens == 2


def test_sdk_stream_helper(client: openai.OpenAI, upstream: Upstream) -> None:
    """``responses.stream()`` and ``get_final_response()`` over a rendered stream."""
    upstream.body = render_stream(list(split(RESPONSE)), STREAM_REQUEST)
    upstream.content_type = "text/event-stream"
    with client.responses.stream(model="gpt-test", input="weather?") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.reasoning_summary_text.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    assert final.output_text == "Let me check."
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call"]
    assert final.output[2].arguments == '{"city":"Paris"}'
    assert final.usage is not None and final.usage.output_tokens == 5


class City(pydantic.BaseModel):
    city: str


def test_sdk_parse_helper(client: openai.OpenAI, upstream: Upstream) -> None:
    """``responses.parse(text_format=Model)`` sends a strict json_schema and reads ours."""
    answer = attrs.evolve(RESPONSE, content=[ir.Text(text='{"city":"Paris"}')])
    upstream.body = dumps(responses.render_response(answer))
    parsed = client.responses.parse(model="gpt-test", input="Where?", text_format=City)
    assert parsed.output_parsed == City(city="Paris")
    request = responses.parse_request(upstream.requests[-1])
    assert request.response_format is not None and request.response_format.strict is True
    assert request.response_format.name == "City"


@pytest.mark.parametrize(
    ("kind", "exception"),
    [
        (ir.ErrorKind.INVALID_REQUEST, openai.BadRequestError),
        (ir.ErrorKind.NOT_FOUND, openai.NotFoundError),
        (ir.ErrorKind.RATE_LIMIT, openai.RateLimitError),
        (ir.ErrorKind.OVERLOADED, openai.InternalServerError),
    ],
)
def test_sdk_raises_rendered_errors(
    client: openai.OpenAI, upstream: Upstream, kind: ir.ErrorKind, exception: type[Exception]
) -> None:
    error = MuxError(kind, "it went wrong", param="model")
    upstream.status, upstream.body = error.status, dumps(responses.render_error(error))
    with pytest.raises(exception):
        client.responses.create(model="gpt-test", input="x")


def test_sdk_request_shapes_parse(client: openai.OpenAI, upstream: Upstream) -> None:
    """What the SDK sends for a tool loop arrives as IR, the rest as Extra, and renders
    back unchanged."""
    client.responses.create(
        model="gpt-test",
        instructions="Be brief.",
        input=[
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "Use tools."}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Look:"},
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,iVBORw0KGgo=",
                        "detail": "low",
                    },
                    {
                        "type": "input_file",
                        "file_data": "data:application/pdf;base64,JVBERg==",
                        "filename": "a.pdf",
                    },
                ],
            },
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "Hm."}],
                "encrypted_content": "ZW5j",
            },
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "phase": "commentary",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
            },
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": "f",
                "arguments": '{"a": 1}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "42"},
            {"type": "item_reference", "id": "msg_0"},
        ],
        tools=[
            {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True},
            {"type": "web_search"},
        ],
        tool_choice={"type": "function", "name": "f"},
        parallel_tool_calls=False,
        max_output_tokens=100,
        temperature=0.5,
        top_p=0.9,
        reasoning={"effort": "high", "summary": "auto"},
        text={
            "format": {
                "type": "json_schema",
                "name": "out",
                "schema": {"type": "object"},
                "strict": True,
            },
            "verbosity": "low",
        },
        metadata={"k": "v"},
        user="u-1",
        store=False,
        include=["reasoning.encrypted_content"],
        prompt_cache_key="pk",
        service_tier="flex",
        truncation="auto",
    )
    sent = upstream.requests[-1]
    request = responses.parse_request(sent)
    assert request.messages == (
        ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text="Be brief.")]),
        ir.Message(role=ir.Role.DEVELOPER, content=[ir.Text(text="Use tools.")]),
        ir.Message(
            role=ir.Role.USER,
            content=[
                ir.Text(text="Look:"),
                ir.Image(media_type="image/png", data=b"\x89PNG\r\n\x1a\n", detail="low"),
                ir.Document(media_type="application/pdf", data=b"%PDF", filename="a.pdf"),
            ],
        ),
        ir.Message(
            role=ir.Role.ASSISTANT,
            content=[
                ir.Reasoning(text="Hm.", data="ZW5j"),
                ir.Text(text="Checking."),
                ir.ToolCall(id="call_1", name="f", arguments='{"a": 1}'),
            ],
        ),
        ir.Message(
            role=ir.Role.TOOL,
            content=[ir.ToolResult(call_id="call_1", content=[ir.Text(text="42")])],
        ),
    )
    assert request.tools == (ir.Tool(name="f", parameters={"type": "object"}, strict=True),)
    assert request.tool_choice == ir.ToolChoice(mode=ir.ToolChoiceMode.TOOL, name="f")
    assert (
        request.parallel_tool_calls,
        request.max_tokens,
        request.temperature,
        request.top_p,
    ) == (
        False,
        100,
        0.5,
        0.9,
    )
    assert request.reasoning == ir.ReasoningConfig(effort="high", summary="auto")
    assert request.response_format == ir.ResponseFormat(
        type=ir.ResponseFormatType.JSON_SCHEMA, schema={"type": "object"}, name="out", strict=True
    )
    assert (request.user, request.metadata) == ("u-1", {"k": "v"})
    assert request.extra is not None
    fields = {k: v for k, v in request.extra.fields.items() if k != STATE}
    assert fields == {
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "pk",
        "service_tier": "flex",
        "truncation": "auto",
        "text": {"verbosity": "low"},
    }
    # A same-format hop restores every field the client sent.
    assert responses.render_request(request) == sent


# --------------------------------------------------------------------------------------------
# The real Codex request


def test_codex_request_comes_back_whole() -> None:
    """The captured Codex request: developer and user messages with ids, function tools
    among a namespace and web_search, reasoning summary, encrypted-content include,
    store false, prompt_cache_key, client_metadata. It parses, and renders back equal."""
    captured = json.loads((FIXTURES / "codex-responses.json").read_text())
    body = captured["body"]
    request = responses.parse_request(body)
    assert request.stream and request.stream_usage
    assert [m.role for m in request.messages] == [
        ir.Role.DEVELOPER,
        ir.Role.DEVELOPER,
        ir.Role.USER,
        ir.Role.USER,
    ]
    assert request.messages[-1].content == (ir.Text(text="say hi"),)
    assert [t.name for t in request.tools][:4] == [
        "exec_command",
        "write_stdin",
        "request_user_input",
        "view_image",
    ]
    assert len(request.tools) == sum(t["type"] == "function" for t in body["tools"])
    assert request.reasoning == ir.ReasoningConfig(summary="auto")
    assert request.extra is not None
    assert {"store", "include", "prompt_cache_key", "client_metadata"} <= set(request.extra.fields)
    assert responses.render_request(request) == body
    # And a trip through the wire changes nothing.
    assert responses.parse_request(wire(responses.render_request(request))) == request


# --------------------------------------------------------------------------------------------
# Same-format bookkeeping


def hop(body: dict[str, Any]) -> dict[str, Any]:
    return responses.render_request(responses.parse_request(body))


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "input": "hi"},
        {"model": "m", "input": "hi", "instructions": ""},
        {"model": "m", "input": [{"role": "user", "content": "plain"}]},
        {
            "model": "m",
            "previous_response_id": "resp_0",
            "input": [{"type": "item_reference", "id": "msg_1"}],
        },
        {"model": "m", "previous_response_id": "resp_0"},
        {
            "model": "m",
            "input": [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [
                        {"type": "output_text", "text": "a", "annotations": []},
                        {"type": "output_text", "text": "b", "annotations": []},
                    ],
                },
                {"type": "message", "role": "assistant", "content": []},
                {
                    "type": "web_search_call",
                    "id": "ws_1",
                    "status": "completed",
                    "action": {"type": "search"},
                },
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "f",
                    "arguments": "{}",
                    "status": "completed",
                },
                {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "c1",
                    "output": [
                        {"type": "input_text", "text": "x"},
                        {
                            "type": "input_image",
                            "image_url": "https://example.com/a.png",
                            "detail": "auto",
                        },
                    ],
                },
                {"type": "function_call_output", "call_id": "c2", "output": "y", "id": "fco_1"},
            ],
            "tools": [
                {"type": "function", "name": "f", "description": "F", "defer_loading": True},
                {"type": "mcp", "server_label": "s"},
                {"type": "function", "name": "g", "parameters": None, "strict": False},
            ],
            "reasoning": {"effort": "none", "generate_summary": "auto"},
            "text": {"verbosity": "high"},
            "tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []},
        },
    ],
    ids=[
        "string input",
        "empty instructions",
        "type omitted",
        "item_reference",
        "no input",
        "everything",
    ],
)
def test_same_format_hop_restores_the_request(body: dict[str, Any]) -> None:
    """Item boundaries, unmodelled item fields, items and tools the IR cannot hold, and
    omitted tool fields all come back; ``type`` left out of a message comes back written.
    Read back, the request is its projection (which models the bookkeeping)."""
    parsed = responses.parse_request(body)
    assert responses.parse_request(wire(responses.render_request(parsed))) == (
        projection.request(parsed)
    )
    expected = json.loads(json.dumps(body))
    for item in expected.get("input", ()) if isinstance(expected.get("input"), list) else ():
        item.setdefault("type", "message")
        if item["type"] == "message" and isinstance(item["content"], str):
            item["content"] = [{"type": "input_text", "text": item["content"]}]
    assert hop(body) == expected


def test_grouping_builds_chat_shaped_turns() -> None:
    """Assistant-side items gather into one assistant turn and outputs into one tool turn,
    as Chat needs (an assistant message holding every parallel call, then their results)."""
    request = responses.parse_request(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "go"},
                {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "b", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "a", "output": "1"},
                {"type": "function_call_output", "call_id": "b", "output": "2"},
                {"role": "user", "content": "and?"},
                {"role": "user", "content": "well?"},
            ],
        }
    )
    assert [(m.role, len(m.content)) for m in request.messages] == [
        (ir.Role.USER, 1),
        (ir.Role.ASSISTANT, 2),
        (ir.Role.TOOL, 2),
        (ir.Role.USER, 1),
        (ir.Role.USER, 1),
    ]
    assert request.extra is None  # nothing to restore: the default rendering is the same


def test_foreign_reasoning_and_tools_go_upstream_safely() -> None:
    """Reasoning OpenAI cannot replay (no encrypted content, or Anthropic's redacted data)
    is left out; a tool without strict is sent non-strict; a nameless schema gets a name."""
    request = ir.Request(
        model="m",
        messages=[
            ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text="sys")]),
            ir.Message(
                role=ir.Role.ASSISTANT,
                content=[
                    ir.Reasoning(text="claude thinking", signature="c2ln"),
                    ir.Reasoning(data="cmVk", redacted=True),
                    ir.Reasoning(text="openai", data="ZW5j"),
                    ir.Text(text="ok"),
                ],
            ),
        ],
        tools=[ir.Tool(name="f")],
        response_format=ir.ResponseFormat(type=ir.ResponseFormatType.JSON_SCHEMA, schema={}),
    )
    body = responses.render_request(request)
    assert body["input"] == [
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "sys"}]},
        {
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "openai"}],
            "encrypted_content": "ZW5j",
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "ok", "annotations": []}],
        },
    ]
    assert body["tools"] == [{"type": "function", "name": "f", "parameters": None, "strict": False}]
    assert body["text"] == {"format": {"type": "json_schema", "name": "response", "schema": {}}}


def test_bookkeeping_is_dropped_when_the_request_changed() -> None:
    """A layout that no longer fits the messages (a router added one) is ignored rather
    than misapplied: the default items go out."""
    request = responses.parse_request(
        {
            "model": "m",
            "input": [{"type": "message", "id": "msg_1", "role": "user", "content": "a"}],
        }
    )
    grown = attrs.evolve(
        request,
        messages=[*request.messages, ir.Message(role=ir.Role.USER, content=[ir.Text(text="b")])],
    )
    assert [item.get("id") for item in responses.render_request(grown)["input"]] == [None, None]
    assert responses.render_request(request)["input"][0]["id"] == "msg_1"
    # A client cannot smuggle bookkeeping in.
    smuggled = responses.parse_request({"model": "m", "input": "x", STATE: {"instructions": True}})
    assert smuggled.extra is not None and smuggled.extra.fields == {STATE: {"input": "string"}}


# --------------------------------------------------------------------------------------------
# Request validation

BASE: dict[str, Any] = {"model": "m", "input": "hi"}


def with_input(*items: Any) -> dict[str, Any]:
    return {"model": "m", "input": list(items)}


INVALID: list[tuple[object, str | None, str]] = [
    ([], None, "request body: expected an object, got an array"),
    ({"input": "hi"}, "model", "model: expected a string, got nothing"),
    (BASE | {"model": ""}, "model", "model: expected a model name, got an empty string"),
    ({"model": "m"}, "input", "input: expected a string or an array of input items, got nothing"),
    (
        BASE | {"input": 3},
        "input",
        "input: expected a string or an array of input items, got a number",
    ),
    (with_input(3), "input[0]", "input[0]: expected an object, got a number"),
    (
        with_input({"content": "x"}),
        "input[0].role",
        "input[0].role: expected one of 'user', 'assistant', 'system', 'developer', got nothing",
    ),
    (with_input({"type": 1}), "input[0].type", "input[0].type: expected a string, got a number"),
    (
        with_input({"role": "user"}),
        "input[0].content",
        "input[0].content: expected a string or an array of content parts, got nothing",
    ),
    (
        with_input({"role": "user", "content": [{"type": "output_text", "text": "x"}]}),
        "input[0].content[0].type",
        "expected one of 'input_text', 'input_image', 'input_file', got 'output_text'",
    ),
    (
        with_input({"role": "assistant", "content": [{"type": "input_text", "text": "x"}]}),
        "input[0].content[0].type",
        "expected one of 'output_text', 'refusal', got 'input_text'",
    ),
    (
        with_input({"role": "user", "content": [{"type": "input_image", "detail": "auto"}]}),
        "input[0].content[0].image_url",
        "input[0].content[0].image_url: expected an image URL (or a file_id), got nothing",
    ),
    (
        with_input(
            {
                "role": "user",
                "content": [{"type": "input_image", "image_url": "data:image/png;base64,!!"}],
            }
        ),
        "input[0].content[0].image_url",
        "expected base64 data",
    ),
    (
        with_input({"role": "user", "content": [{"type": "input_file", "file_data": 1}]}),
        "input[0].content[0].file_data",
        "expected a string, got a number",
    ),
    (
        with_input({"type": "function_call", "name": "f", "arguments": "{}"}),
        "input[0].call_id",
        "input[0].call_id: expected a string, got nothing",
    ),
    (
        with_input({"type": "function_call", "call_id": "c", "name": "f", "arguments": 1}),
        "input[0].arguments",
        "expected a string, got a number",
    ),
    (
        with_input({"type": "function_call_output", "call_id": "c"}),
        "input[0].output",
        "input[0].output: expected a string or an array of content parts, got nothing",
    ),
    (
        with_input({"type": "reasoning", "summary": [{"type": "summary_text"}]}),
        "input[0].summary[0].text",
        "expected a string, got nothing",
    ),
    (
        with_input({"type": "item_reference", "id": float("nan")}),
        "input[0]",
        "input[0]: expected JSON without NaN or Infinity",
    ),
    (
        BASE | {"instructions": ["x"]},
        "instructions",
        "instructions: expected a string, got an array",
    ),
    (BASE | {"tools": {}}, "tools", "tools: expected an array, got an object"),
    (
        BASE | {"tools": [{"name": "f"}]},
        "tools[0].type",
        "tools[0].type: expected a string, got nothing",
    ),
    (
        BASE | {"tools": [{"type": "function", "name": "f", "parameters": []}]},
        "tools[0].parameters",
        "expected an object, got an array",
    ),
    (
        BASE | {"tool_choice": "sometimes"},
        "tool_choice",
        "tool_choice: expected one of 'none', 'auto', 'required', got 'sometimes'",
    ),
    (
        BASE | {"tool_choice": {"type": "function"}},
        "tool_choice.name",
        "expected a string, got nothing",
    ),
    (
        BASE | {"max_output_tokens": 0},
        "max_output_tokens",
        "expected an integer of at least 1, got 0",
    ),
    (BASE | {"temperature": "hot"}, "temperature", "temperature: expected a number, got a string"),
    (BASE | {"reasoning": "high"}, "reasoning", "reasoning: expected an object, got a string"),
    (BASE | {"reasoning": {"effort": 3}}, "reasoning.effort", "expected a string, got a number"),
    (BASE | {"text": {"format": {"type": "xml"}}}, "text.format.type", "got 'xml'"),
    (BASE | {"text": "json"}, "text", "text: expected an object, got a string"),
    (BASE | {"metadata": {"k": 1}}, "metadata.k", "metadata.k: expected a string, got a number"),
    (BASE | {"stream": "yes"}, "stream", "stream: expected a boolean, got a string"),
    (BASE | {"store": float("inf")}, "store", "store: expected JSON without NaN or Infinity"),
]


@pytest.mark.parametrize(("body", "param", "message"), INVALID)
def test_invalid_requests_name_the_field(body: object, param: str | None, message: str) -> None:
    with pytest.raises(RequestError) as raised:
        responses.parse_request(body)
    assert raised.value.param == param
    assert message in raised.value.message
    assert raised.value.status == 400


# --------------------------------------------------------------------------------------------
# Upstream answers


def test_parse_response_reads_protocols_example() -> None:
    """B.3's example with a reasoning item, a message (ids, phase) and a call; a same-format
    render restores the items as they were."""
    body = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1741290958.5,
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "model": "gpt-x",
        "output": [
            {
                "id": "rs_1",
                "type": "reasoning",
                "summary": [
                    {"type": "summary_text", "text": "A"},
                    {"type": "summary_text", "text": "B"},
                ],
                "encrypted_content": "ZW5j",
            },
            {
                "id": "msg_1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "phase": "final_answer",
                "content": [{"type": "output_text", "text": "Hi", "annotations": []}],
            },
            {
                "id": "fc_1",
                "type": "function_call",
                "status": "completed",
                "call_id": "call_1",
                "name": "f",
                "arguments": "{}",
            },
        ],
        "parallel_tool_calls": True,
        "tools": [],
        "service_tier": "default",
        "usage": {
            "input_tokens": 36,
            "input_tokens_details": {"cached_tokens": 6},
            "output_tokens": 87,
            "output_tokens_details": {"reasoning_tokens": 20},
            "total_tokens": 123,
        },
    }
    response = responses.parse_response(body)
    assert response.content == (
        ir.Reasoning(text="A\n\nB", data="ZW5j"),
        ir.Text(text="Hi"),
        ir.ToolCall(id="call_1", name="f", arguments="{}"),
    )
    assert (response.id, response.model, response.created) == ("resp_1", "gpt-x", 1741290958)
    assert response.stop_reason is ir.StopReason.TOOL_USE
    assert response.usage == ir.Usage(
        input_tokens=36, output_tokens=87, cache_read_tokens=6, reasoning_tokens=20
    )
    rendered = responses.render_response(response)
    assert responses.parse_response(wire(rendered)) == projection.response(response)
    assert [item["id"] for item in rendered["output"]] == ["rs_1", "msg_1", "fc_1"]
    assert rendered["output"][1]["phase"] == "final_answer"
    assert rendered["service_tier"] == "default"


@pytest.mark.parametrize(
    ("status", "details", "reason"),
    [
        ("incomplete", {"reason": "max_output_tokens"}, ir.StopReason.MAX_TOKENS),
        ("incomplete", {"reason": "content_filter"}, ir.StopReason.CONTENT_FILTER),
        ("failed", None, ir.StopReason.ERROR),
        ("completed", None, ir.StopReason.END_TURN),
    ],
)
def test_parse_response_status(status: str, details: object, reason: ir.StopReason) -> None:
    body = {"id": "r", "model": "m", "status": status, "incomplete_details": details, "output": []}
    assert responses.parse_response(body).stop_reason is reason


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"output": {}},
        {"output": [3]},
        {"output": [{"type": "message", "content": 3}]},
        {"output": [{"type": "function_call", "call_id": "c"}]},
        {"usage": {"input_tokens": -1}},
        {"created_at": "now"},
    ],
)
def test_malformed_responses_are_upstream_errors(body: object) -> None:
    with pytest.raises(UpstreamError) as raised:
        responses.parse_response(body)
    assert raised.value.kind is ir.ErrorKind.UPSTREAM and raised.value.status == 502


def test_errors_use_the_openai_envelope() -> None:
    error = RequestError("no such model", param="model", kind=ir.ErrorKind.NOT_FOUND)
    assert responses.render_error(error)["error"]["code"] == "model_not_found"
    parsed = responses.parse_error(429, {"error": {"message": "slow", "type": "tokens"}})
    assert (parsed.kind, parsed.message) == (ir.ErrorKind.RATE_LIMIT, "slow")


def event(type_: str, **fields: Any) -> bytes:
    return b"event: " + type_.encode() + b"\ndata: " + dumps({"type": type_, **fields}) + b"\n\n"


RESP = {
    "id": "resp_9",
    "object": "response",
    "created_at": 7,
    "model": "gpt-x",
    "status": "in_progress",
    "output": [],
}
START = ir.StreamStart(id="resp_9", model="gpt-x", created=7)

OPENAI_STREAM = b"".join(
    [
        b": keep-alive\n\n",
        event("response.created", response=RESP, sequence_number=0),
        event("response.in_progress", response=RESP, sequence_number=1),
        event(
            "response.output_item.added",
            output_index=0,
            item={"id": "rs_1", "type": "reasoning", "summary": []},
        ),
        event(
            "response.reasoning_summary_part.added",
            item_id="rs_1",
            output_index=0,
            summary_index=0,
            part={"type": "summary_text", "text": ""},
        ),
        event(
            "response.reasoning_summary_text.delta",
            item_id="rs_1",
            output_index=0,
            summary_index=0,
            delta="One.",
        ),
        event(
            "response.reasoning_summary_text.done",
            item_id="rs_1",
            output_index=0,
            summary_index=0,
            text="One.",
        ),
        event(
            "response.reasoning_summary_part.done",
            item_id="rs_1",
            output_index=0,
            summary_index=0,
            part={"type": "summary_text", "text": "One."},
        ),
        event(
            "response.reasoning_summary_part.added",
            item_id="rs_1",
            output_index=0,
            summary_index=1,
            part={"type": "summary_text", "text": ""},
        ),
        event(
            "response.reasoning_summary_text.delta",
            item_id="rs_1",
            output_index=0,
            summary_index=1,
            delta="Two.",
        ),
        event(
            "response.output_item.done",
            output_index=0,
            item={"id": "rs_1", "type": "reasoning", "summary": [], "encrypted_content": "ZW5j"},
        ),
        event(
            "response.output_item.added",
            output_index=1,
            item={"id": "ws_1", "type": "web_search_call", "status": "in_progress"},
        ),
        event(
            "response.output_item.done",
            output_index=1,
            item={"id": "ws_1", "type": "web_search_call", "status": "completed"},
        ),
        event(
            "response.output_item.added",
            output_index=2,
            item={
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            },
        ),
        event(
            "response.content_part.added",
            item_id="msg_1",
            output_index=2,
            content_index=0,
            part={"type": "output_text", "text": "", "annotations": []},
        ),
        event(
            "response.output_text.delta",
            item_id="msg_1",
            output_index=2,
            content_index=0,
            delta="Hel",
            logprobs=[],
        ),
        event(
            "response.output_text.annotation.added",
            item_id="msg_1",
            output_index=2,
            content_index=0,
            annotation_index=0,
            annotation={},
        ),
        event(
            "response.output_text.delta",
            item_id="msg_1",
            output_index=2,
            content_index=0,
            delta="lo",
            logprobs=[],
        ),
        event(
            "response.output_text.done",
            item_id="msg_1",
            output_index=2,
            content_index=0,
            text="Hello",
            logprobs=[],
        ),
        event(
            "response.content_part.done",
            item_id="msg_1",
            output_index=2,
            content_index=0,
            part={"type": "output_text", "text": "Hello", "annotations": []},
        ),
        event(
            "response.output_item.done",
            output_index=2,
            item={"id": "msg_1", "type": "message", "content": []},
        ),
        event(
            "response.output_item.added",
            output_index=3,
            item={
                "id": "fc_1",
                "type": "function_call",
                "call_id": "call_1",
                "name": "f",
                "arguments": "",
            },
        ),
        event(
            "response.function_call_arguments.delta", item_id="fc_1", output_index=3, delta='{"a":'
        ),
        event("response.function_call_arguments.delta", item_id="fc_1", output_index=3, delta="1}"),
        event(
            "response.function_call_arguments.done",
            item_id="fc_1",
            output_index=3,
            arguments='{"a":1}',
        ),
        event(
            "response.output_item.done",
            output_index=3,
            item={
                "id": "fc_1",
                "type": "function_call",
                "call_id": "call_1",
                "name": "f",
                "arguments": '{"a":1}',
            },
        ),
        event(
            "response.completed",
            response=RESP
            | {
                "status": "completed",
                "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7},
            },
        ),
    ]
)


def test_stream_parser_reads_an_openai_stream() -> None:
    """A stream shaped like OpenAI's, split byte by byte: summary parts join with a blank
    line, the encrypted content arrives at the item's end, hosted-tool items and
    annotations are skipped."""
    data = OPENAI_STREAM
    events = parse_stream([data[i : i + 1] for i in range(len(data))])
    assert events == [
        START,
        ir.ReasoningDelta(index=0, text="One."),
        ir.ReasoningDelta(index=0, text="\n\n"),
        ir.ReasoningDelta(index=0, text="Two."),
        ir.ReasoningDelta(index=0, data="ZW5j"),
        ir.PartEnd(index=0),
        ir.TextDelta(index=1, text="Hel"),
        ir.TextDelta(index=1, text="lo"),
        ir.PartEnd(index=1),
        ir.ToolCallStart(index=2, id="call_1", name="f"),
        ir.ToolArgsDelta(index=2, json='{"a":'),
        ir.ToolArgsDelta(index=2, json="1}"),
        ir.PartEnd(index=2),
        ir.UsageUpdate(usage=ir.Usage(input_tokens=5, output_tokens=2)),
        ir.Finish(stop_reason=ir.StopReason.TOOL_USE),
    ]
    strats.check_stream(events)


FAILED = {"code": "rate_limit_exceeded", "message": "slow down"}

STREAM_CASES: list[tuple[str, bytes, list[ir.Event]]] = [
    (
        "an error event inside an HTTP 200 stream, before anything",
        event(
            "error", code="rate_limit_exceeded", message="slow down", param=None, sequence_number=0
        ),
        [ir.StreamError(kind=ir.ErrorKind.RATE_LIMIT, message="slow down", status=429)],
    ),
    (
        "response.failed after some text",
        event("response.created", response=RESP)
        + event("response.output_text.delta", output_index=0, content_index=0, delta="x")
        + event(
            "response.failed",
            response=RESP
            | {"status": "failed", "error": {"code": "server_error", "message": "boom"}},
        ),
        [
            START,
            ir.TextDelta(index=0, text="x"),
            ir.StreamError(kind=ir.ErrorKind.INTERNAL, message="boom", status=500),
        ],
    ),
    (
        "response.failed without an error",
        event("response.failed", response=RESP | {"status": "failed"}),
        [
            ir.StreamError(
                kind=ir.ErrorKind.UPSTREAM,
                message="the upstream response failed without an error message",
                status=502,
            )
        ],
    ),
    (
        "incomplete at the token limit",
        event("response.created", response=RESP)
        + event("response.output_text.delta", output_index=0, content_index=0, delta="x")
        + event(
            "response.incomplete",
            response=RESP
            | {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}},
        ),
        [
            START,
            ir.TextDelta(index=0, text="x"),
            ir.PartEnd(index=0),
            ir.Finish(stop_reason=ir.StopReason.MAX_TOKENS),
        ],
    ),
    (
        "a server that sends only the whole response",
        event(
            "response.completed",
            response=RESP
            | {
                "status": "completed",
                "output": [
                    {"type": "message", "content": [{"type": "output_text", "text": "all"}]},
                ],
            },
        ),
        [
            START,
            ir.TextDelta(index=0, text="all"),
            ir.PartEnd(index=0),
            ir.Finish(stop_reason=ir.StopReason.END_TURN),
        ],
    ),
    (
        "parts announced by their done events only; a refusal",
        event("response.created", response=RESP)
        + event("response.output_text.done", output_index=0, content_index=0, text="done text")
        + event("response.refusal.delta", output_index=0, content_index=1, delta="no")
        + event(
            "response.output_item.done",
            output_index=0,
            item={
                "type": "message",
                "content": [
                    {"type": "output_text", "text": "done text"},
                    {"type": "refusal", "refusal": "no"},
                ],
            },
        )
        + event(
            "response.output_item.added",
            output_index=1,
            item={"type": "function_call", "call_id": "c", "name": "f", "arguments": ""},
        )
        + event("response.function_call_arguments.done", output_index=1, arguments="{}")
        + event(
            "response.output_item.done",
            output_index=1,
            item={"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        )
        + event(
            "response.output_item.done", output_index=2, item={"type": "reasoning", "summary": []}
        )
        + event("response.completed", response=RESP | {"status": "completed"}),
        [
            START,
            ir.TextDelta(index=0, text="done text"),
            ir.PartEnd(index=0),
            ir.TextDelta(index=1, text="no"),
            ir.PartEnd(index=1),
            ir.ToolCallStart(index=2, id="c", name="f"),
            ir.ToolArgsDelta(index=2, json="{}"),
            ir.PartEnd(index=2),
            ir.ReasoningDelta(index=3, text=""),
            ir.PartEnd(index=3),
            ir.Finish(stop_reason=ir.StopReason.TOOL_USE),
        ],
    ),
    (
        "a stream that breaks off",
        event("response.created", response=RESP)
        + event("response.output_text.delta", output_index=0, content_index=0, delta="x"),
        [
            START,
            ir.TextDelta(index=0, text="x"),
            ir.StreamError(
                kind=ir.ErrorKind.UPSTREAM,
                message="the upstream stream ended before the response completed",
                status=502,
            ),
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
        b"data: {not json\n\n",
        b"data: [1]\n\n",
        event("response.output_text.delta", output_index=0, content_index=0, delta=3),
        event("response.output_text.delta", output_index=-1, content_index=0, delta="x"),
        event("response.function_call_arguments.delta", output_index=0, delta="{}"),
        event("response.output_text.delta", output_index=0, content_index=0, delta="x")
        + event("response.output_text.done", output_index=0, content_index=0, text="x")
        + event("response.output_text.delta", output_index=0, content_index=0, delta="y"),
        event(
            "response.output_item.added",
            output_index=0,
            item={"type": "function_call", "name": "f"},
        ),
        event("response.completed", response={"usage": {"input_tokens": "many"}}),
    ],
    ids=[
        "not JSON",
        "not an object",
        "delta not a string",
        "negative index",
        "arguments without a call",
        "a part continued after its end",
        "a call without call_id",
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
    parser.feed(event("response.completed", response=RESP | {"status": "completed"}))
    assert parser.feed(b"data: garbage\n\n") == [] and parser.close() == []
