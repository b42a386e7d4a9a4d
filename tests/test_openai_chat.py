"""mux.formats.openai_chat: round trips against the projection, validation, SDK constraints.

The properties check ``parse(render(x)) == projection(x)`` for generated requests, responses
and streams (the stream's bytes split at random places); the tables check validation
messages and the shapes of real upstream chunks; the SDK tests drive the real ``openai``
client (and its stream accumulator) against bodies this module renders.
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
from hypothesis import event, given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from mux import ir
from mux.errors import MuxError, RequestError, UpstreamError
from mux.formats import openai_chat
from mux.formats.openai_chat import StreamParser, StreamRenderer
from mux.framing import SSEDecoder, dumps
from tests.projections import openai_chat as chat_projection
from tests.strategies import feed, splits, wire
from tests import strategies as strats

fast = settings(deadline=None)  # examples: the profile's (conftest)


def render_stream(events: Sequence[ir.Event], request: ir.Request) -> bytes:
    renderer = StreamRenderer(request)
    return b"".join(renderer.render(e) for e in events)


def parse_stream(pieces: Sequence[bytes]) -> list[ir.Event]:
    return feed(StreamParser(), pieces)


def stream_request(include_usage: bool) -> ir.Request:
    return ir.Request(model="m", stream=True, stream_usage=include_usage)


def clear_created(events: list[ir.Event], original: ir.Event) -> list[ir.Event]:
    """Clear the ``created`` the renderer took from the clock, where the IR had none."""
    start = events[0] if events else None
    if isinstance(start, ir.StreamStart) and getattr(original, "created", 0) is None:
        assert isinstance(start.created, int)
        events[0] = attrs.evolve(start, created=None)
    return events


def note_features(value: object) -> None:
    for label in sorted(strats.features(value)):
        event(label)


# --------------------------------------------------------------------------------------------
# Round trips


@fast
@given(strats.requests())
def test_request_round_trip(request: ir.Request) -> None:
    """parse_request(render_request(r)) is the Chat projection of r."""
    note_features(request)
    assert openai_chat.parse_request(wire(openai_chat.render_request(request))) == (
        chat_projection.request(request)
    )


@fast
@given(strats.requests())
def test_request_render_is_stable(request: ir.Request) -> None:
    """What Chat can say survives any number of trips: projecting twice changes nothing."""
    once = chat_projection.request(request)
    assert chat_projection.request(once) == once
    assert openai_chat.parse_request(wire(openai_chat.render_request(once))) == once


@fast
@given(strats.responses())
def test_response_round_trip(response: ir.Response) -> None:
    """parse_response(render_response(r)) is the Chat projection of r."""
    note_features(response)
    parsed = openai_chat.parse_response(wire(openai_chat.render_response(response)))
    if response.created is None:
        assert isinstance(parsed.created, int)
        parsed = attrs.evolve(parsed, created=None)
    assert parsed == chat_projection.response(response)


@fast
@given(strats.event_streams(), st.booleans(), st.data())
def test_stream_round_trip(
    events: list[ir.Event], include_usage: bool, data: st.DataObject
) -> None:
    """Rendered, split anywhere and parsed, a stream is its Chat projection, and both follow
    the IR grammar."""
    note_features(events)
    strats.check_stream(events)
    request = stream_request(include_usage)
    pieces = data.draw(splits(render_stream(events, request)))
    parsed = clear_created(parse_stream(pieces), events[0])
    strats.check_stream(parsed)
    assert parsed == chat_projection.events(events, request)


def test_strategies_cover_every_ir_feature() -> None:
    """The strategies reach every IR class, field and enum member (see strategies.features),
    so the properties above exercise all of the IR. The leaf strategies (errors, tool
    choices, finishes) are swept too: they are where the composites draw the rarer enum members."""
    seen: set[str] = set()
    runs = [
        (strats.requests(), 150),
        (strats.responses(), 150),
        (strats.event_streams(), 200),
        (strats.model_infos(), 5),
        (strats.stream_errors(), 50),
        (strats.finishes(), 30),
        (strats.tool_choices(), 30),
    ]
    for strategy, examples in runs:

        @settings(deadline=None, max_examples=examples, derandomize=True, database=None)
        @given(strategy)
        def sweep(value: object) -> None:
            seen.update(strats.features(value))

        sweep()
    assert strats.all_features() - seen == set()


# --------------------------------------------------------------------------------------------
# What the SDK's stream accumulator needs (protocols.md section 0, A.3)


def chunks_of(data: bytes) -> list[dict[str, Any]]:
    """The chunks of a rendered stream, checking the SSE framing on the way: data lines
    only, and ``[DONE]`` last."""
    messages = SSEDecoder().feed(data)
    assert all(m.event is None for m in messages), "Chat streams never name events"
    assert b"\nevent:" not in data and not data.startswith(b"event:")
    assert messages[-1].data == "[DONE]"
    return [json.loads(m.data) for m in messages[:-1]]


@fast
@given(strats.event_streams(errors=False), st.booleans())
def test_stream_meets_sdk_constraints(events: list[ir.Event], include_usage: bool) -> None:
    """Role once; tool-call id/type/name once per call with an int index counting calls; the
    same id, created and model everywhere; usage null until the usage chunk."""
    chunks = chunks_of(render_stream(events, stream_request(include_usage)))
    head = {k: chunks[0][k] for k in ("id", "created", "model")}
    assert all({k: c[k] for k in head} == head for c in chunks)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [choice["delta"] for c in chunks for choice in c["choices"]]
    assert [("role" in d) for d in deltas] == [True] + [False] * (len(deltas) - 1)
    calls = [call for d in deltas for call in d.get("tool_calls", ())]
    seen: list[int] = []
    for call in calls:
        assert isinstance(call["index"], int)
        first = call["index"] not in seen
        if first:
            assert call["index"] == len(seen), "tool-call indices count calls from 0"
            seen.append(call["index"])
        for key in ("id", "type"):
            assert (key in call) == first
        assert ("name" in call["function"]) == first
    if include_usage:
        assert all(c["usage"] is None for c in chunks[:-1])
        assert chunks[-1]["choices"] == [] and set(chunks[-1]["usage"]) >= {
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
        }
    else:
        assert all("usage" not in c for c in chunks)


@fast
@given(strats.event_streams(errors=False), st.booleans())
def test_stream_accumulates_in_the_sdk(events: list[ir.Event], include_usage: bool) -> None:
    """The SDK's own accumulator rebuilds the completion the events describe."""
    state = ChatCompletionStreamState()
    for chunk in chunks_of(render_stream(events, stream_request(include_usage))):
        list(state.handle_chunk(ChatCompletionChunk.model_validate(chunk)))
    final = state.current_completion_snapshot  # get_final_completion() raises on "length"
    message = final.choices[0].message
    texts = "".join(e.text for e in events if isinstance(e, ir.TextDelta))
    reasoning = "".join(e.text for e in events if isinstance(e, ir.ReasoningDelta))
    assert message.role == "assistant"
    assert message.content == texts
    assert getattr(message, "reasoning_content", "") == reasoning
    starts = [e for e in events if isinstance(e, ir.ToolCallStart)]
    expected_calls = [
        (
            s.id,
            s.name,
            "".join(
                e.json for e in events if isinstance(e, ir.ToolArgsDelta) and e.index == s.index
            ),
        )
        for s in starts
    ]
    calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()]
    assert calls == expected_calls
    finish = events[-1]
    assert isinstance(finish, ir.Finish)
    assert final.choices[0].finish_reason == openai_chat._finish_reason(
        finish.stop_reason, bool(starts)
    )
    assert (final.usage is not None) == include_usage


def test_stream_error_is_an_error_chunk_and_nothing_more() -> None:
    """A StreamError renders as ``data: {"error": ...}``; later events say nothing."""
    renderer = StreamRenderer(stream_request(True))
    renderer.render(ir.StreamStart(id="c", model="m", created=1))
    out = renderer.render(ir.StreamError(kind=ir.ErrorKind.RATE_LIMIT, message="slow", status=429))
    assert out == (
        b'data: {"error":{"message":"slow","type":"rate_limit_error","param":null,'
        b'"code":"rate_limit_exceeded"}}\n\n'
    )
    assert renderer.render(ir.Finish(stop_reason=ir.StopReason.END_TURN)) == b""


def test_stream_renderer_needs_a_start() -> None:
    with pytest.raises(ValueError, match="StreamStart"):
        StreamRenderer(stream_request(False)).render(ir.TextDelta(index=0, text="x"))


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


@pytest.fixture
def upstream() -> Upstream:
    return Upstream(body=dumps(openai_chat.render_response(RESPONSE)))


@pytest.fixture
def client(upstream: Upstream) -> Iterator[openai.OpenAI]:
    http = httpx2.Client(transport=httpx2.MockTransport(upstream))
    with openai.OpenAI(
        api_key="k", base_url="http://mux.test/v1", http_client=http, max_retries=0
    ) as client:
        yield client


RESPONSE = ir.Response(
    id="chatcmpl-1",
    model="gpt-test",
    content=[ir.Reasoning(text="Think."), ir.Text(text='{"city":"Paris"}')],
    usage=ir.Usage(input_tokens=10, output_tokens=5, cache_read_tokens=4, reasoning_tokens=2),
    created=1741569952,
)

IMAGE = "data:image/png;base64,iVBORw0KGgo="


def test_sdk_request_shapes_parse(client: openai.OpenAI, upstream: Upstream) -> None:
    """Everything the SDK can put in a request arrives as IR or as Extra."""
    client.chat.completions.create(
        model="gpt-test",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "system", "content": [{"type": "text", "text": "Be kind."}], "name": "rules"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                    {
                        "type": "file",
                        "file": {
                            "file_data": "data:application/pdf;base64,JVBERg==",
                            "filename": "a.pdf",
                        },
                    },
                    {"type": "file", "file": {"file_id": "file-1"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "refusal": "I won't.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a": 1}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "42"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
        ],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "f",
                    "description": "F.",
                    "parameters": {"type": "object"},
                    "strict": True,
                },
            }
        ],
        tool_choice={"type": "function", "function": {"name": "f"}},
        parallel_tool_calls=False,
        max_completion_tokens=100,
        temperature=0.5,
        top_p=0.9,
        stop=["END"],
        seed=7,
        frequency_penalty=0.1,
        presence_penalty=-0.1,
        n=2,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
        },
        reasoning_effort="low",
        user="u-1",
        metadata={"k": "v"},
        logit_bias={"50256": -100},
        logprobs=True,
        top_logprobs=2,
        store=False,
        service_tier="flex",
        prediction={"type": "content", "content": "x"},
        modalities=["text"],
        verbosity="low",
        prompt_cache_key="pk",
        safety_identifier="s",
    )
    request = openai_chat.parse_request(upstream.requests[-1])
    assert request == ir.Request(
        model="gpt-test",
        messages=[
            ir.Message(role=ir.Role.DEVELOPER, content=[ir.Text(text="Be brief.")]),
            ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text="Be kind.")], name="rules"),
            ir.Message(
                role=ir.Role.USER,
                content=[
                    ir.Text(text="Look:"),
                    ir.Image(media_type="image/png", data=b"\x89PNG\r\n\x1a\n", detail="low"),
                    ir.Image(url="https://example.com/a.png"),
                    ir.Audio(data=b"RIFF", format="wav"),
                    ir.Document(media_type="application/pdf", data=b"%PDF", filename="a.pdf"),
                    ir.Document(file_id="file-1"),
                ],
            ),
            ir.Message(
                role=ir.Role.ASSISTANT,
                content=[
                    ir.Text(text="I won't."),
                    ir.ToolCall(id="call_1", name="f", arguments='{"a": 1}'),
                ],
            ),
            ir.Message(
                role=ir.Role.TOOL,
                content=[ir.ToolResult(call_id="call_1", content=[ir.Text(text="42")])],
            ),
            ir.Message(role=ir.Role.ASSISTANT, content=[ir.Text(text="No.")]),
        ],
        tools=[ir.Tool(name="f", description="F.", parameters={"type": "object"}, strict=True)],
        tool_choice=ir.ToolChoice(mode=ir.ToolChoiceMode.TOOL, name="f"),
        parallel_tool_calls=False,
        max_tokens=100,
        temperature=0.5,
        top_p=0.9,
        stop=["END"],
        seed=7,
        frequency_penalty=0.1,
        presence_penalty=-0.1,
        n=2,
        response_format=ir.ResponseFormat(
            type=ir.ResponseFormatType.JSON_SCHEMA,
            schema={"type": "object"},
            name="out",
            strict=True,
        ),
        reasoning=ir.ReasoningConfig(effort="low"),
        user="u-1",
        metadata={"k": "v"},
        extra=ir.Extra(
            format="openai_chat",
            fields={
                "logit_bias": {"50256": -100},
                "logprobs": True,
                "top_logprobs": 2,
                "store": False,
                "service_tier": "flex",
                "prediction": {"type": "content", "content": "x"},
                "modalities": ["text"],
                "verbosity": "low",
                "prompt_cache_key": "pk",
                "safety_identifier": "s",
            },
        ),
    )
    # A same-format hop restores every field the client sent.
    assert openai_chat.render_request(request) | {"messages": None} == upstream.requests[-1] | {
        "messages": None,
        "max_completion_tokens": 100,
    }


def test_sdk_reads_a_rendered_response(client: openai.OpenAI) -> None:
    """The SDK's ChatCompletion model reads render_response's body, usage details included."""
    completion = client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.id == "chatcmpl-1" and completion.created == 1741569952
    choice = completion.choices[0]
    assert (choice.message.content, choice.finish_reason) == ('{"city":"Paris"}', "stop")
    assert getattr(choice.message, "reasoning_content") == "Think."  # noqa: B009 - undeclared
    assert completion.usage is not None and completion.usage.total_tokens == 15
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 4


class City(pydantic.BaseModel):
    city: str


def test_sdk_parse_helper(client: openai.OpenAI, upstream: Upstream) -> None:
    """``.parse(response_format=Model)`` sends a strict json_schema and reads our answer."""
    completion = client.chat.completions.parse(
        model="gpt-test", messages=[{"role": "user", "content": "Where?"}], response_format=City
    )
    assert completion.choices[0].message.parsed == City(city="Paris")
    request = openai_chat.parse_request(upstream.requests[-1])
    assert request.response_format is not None and request.response_format.strict is True
    assert request.response_format.name == "City"


STREAM: list[ir.Event] = [
    ir.StreamStart(id="chatcmpl-2", model="gpt-test", created=5),
    ir.TextDelta(index=0, text="Let me "),
    ir.TextDelta(index=0, text="check."),
    ir.PartEnd(index=0),
    ir.ToolCallStart(index=1, id="call_a", name="get_weather"),
    ir.ToolArgsDelta(index=1, json='{"city":'),
    ir.ToolArgsDelta(index=1, json='"Paris"}'),
    ir.PartEnd(index=1),
    ir.UsageUpdate(usage=ir.Usage(input_tokens=3, output_tokens=4)),
    ir.Finish(stop_reason=ir.StopReason.TOOL_USE),
]


def test_sdk_stream_helper(client: openai.OpenAI, upstream: Upstream) -> None:
    """``chat.completions.stream()`` (the accumulating helper) over a rendered stream."""
    upstream.body = render_stream(STREAM, stream_request(True))
    upstream.content_type = "text/event-stream"
    with client.chat.completions.stream(
        model="gpt-test",
        messages=[{"role": "user", "content": "weather?"}],
        stream_options={"include_usage": True},
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_completion()
    assert "content.delta" in kinds and "tool_calls.function.arguments.done" in kinds
    message = final.choices[0].message
    assert message.content == "Let me check."
    assert message.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_a", "get_weather", '{"city":"Paris"}')
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.total_tokens == 7
    assert openai_chat.parse_request(upstream.requests[-1]).stream_usage is True


def test_sdk_raises_a_mid_stream_error(client: openai.OpenAI, upstream: Upstream) -> None:
    error = ir.StreamError(kind=ir.ErrorKind.OVERLOADED, message="busy", status=529)
    upstream.body = render_stream([*STREAM[:3], error], stream_request(False))
    upstream.content_type = "text/event-stream"
    stream = client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError, match="busy"):
        for _ in stream:
            pass


@pytest.mark.parametrize(
    ("kind", "exception"),
    [
        (ir.ErrorKind.INVALID_REQUEST, openai.BadRequestError),
        (ir.ErrorKind.AUTHENTICATION, openai.AuthenticationError),
        (ir.ErrorKind.PERMISSION, openai.PermissionDeniedError),
        (ir.ErrorKind.NOT_FOUND, openai.NotFoundError),
        (ir.ErrorKind.RATE_LIMIT, openai.RateLimitError),
        (ir.ErrorKind.OVERLOADED, openai.InternalServerError),
        (ir.ErrorKind.UPSTREAM, openai.InternalServerError),
    ],
)
def test_sdk_raises_rendered_errors(
    client: openai.OpenAI, upstream: Upstream, kind: ir.ErrorKind, exception: type[Exception]
) -> None:
    """render_error's envelope, with the error's status, raises the SDK's class for it."""
    error = MuxError(kind, "it went wrong", param="model")
    upstream.status, upstream.body = error.status, dumps(openai_chat.render_error(error))
    with pytest.raises(exception) as raised:
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "x"}]
        )
    assert raised.value.body == openai_chat.render_error(error)["error"]  # type: ignore[attr-defined]


def test_sdk_lists_models(client: openai.OpenAI, upstream: Upstream) -> None:
    models = [ir.ModelInfo(id="a"), ir.ModelInfo(id="org/b", owned_by="org", created=3)]
    upstream.body = dumps(openai_chat.render_models(models))
    listed = client.models.list()
    assert [(m.id, m.owned_by, m.created, m.object) for m in listed] == [
        ("a", "mux", 1704067200, "model"),
        ("org/b", "org", 3, "model"),
    ]
    upstream.body = dumps(openai_chat.render_model(models[1]))
    assert client.models.retrieve("org/b").id == "org/b"


# --------------------------------------------------------------------------------------------
# Request validation

BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def with_messages(*messages: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages)}


USER = {"role": "user", "content": "hi"}

INVALID: list[tuple[object, str | None, str]] = [
    ([], None, "request body: expected an object, got an array"),
    ({"messages": BASE["messages"]}, "model", "model: expected a string, got nothing"),
    (BASE | {"model": 3}, "model", "model: expected a string, got a number"),
    (BASE | {"model": ""}, "model", "model: expected a model name, got an empty string"),
    ({"model": "m"}, "messages", "messages: expected an array, got nothing"),
    (
        BASE | {"messages": []},
        "messages",
        "messages: expected a non-empty array, got an empty array",
    ),
    (
        BASE | {"messages": {"role": "user"}},
        "messages",
        "messages: expected an array, got an object",
    ),
    (with_messages("hi"), "messages[0]", "messages[0]: expected an object, got a string"),
    (
        with_messages({"content": "x"}),
        "messages[0].role",
        "messages[0].role: expected one of 'system', 'developer', 'user', 'assistant', "
        "'tool', got nothing",
    ),
    (with_messages({"role": "function", "content": "x"}), "messages[0].role", "got 'function'"),
    (
        with_messages(USER, USER, {"role": "user", "content": 3}),
        "messages[2].content",
        "messages[2].content: expected a string or an array of content parts, got a number",
    ),
    (
        with_messages({"role": "user"}),
        "messages[0].content",
        "expected a string or an array of content parts, got nothing",
    ),
    (
        with_messages({"role": "user", "content": [3]}),
        "messages[0].content[0]",
        "messages[0].content[0]: expected an object, got a number",
    ),
    (
        with_messages({"role": "user", "content": [{"type": "video"}]}),
        "messages[0].content[0].type",
        "expected one of 'text', 'image_url', 'input_audio', 'file', got 'video'",
    ),
    (
        with_messages(
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": IMAGE}}]}
        ),
        "messages[0].content[0].type",
        "expected one of 'text', got 'image_url'",
    ),
    (
        with_messages({"role": "user", "content": [{"type": "text"}]}),
        "messages[0].content[0].text",
        "expected a string, got nothing",
    ),
    (
        with_messages(
            {"role": "user", "content": [{"type": "image_url", "image_url": "https://x"}]}
        ),
        "messages[0].content[0].image_url",
        "expected an object, got a string",
    ),
    (
        with_messages(
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,!!"}}
                ],
            }
        ),
        "messages[0].content[0].image_url.url",
        "expected base64 data",
    ),
    (
        with_messages(
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/png"}}],
            }
        ),
        "messages[0].content[0].image_url.url",
        "expected a data URL",
    ),
    (
        with_messages(
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "UklGRg=="}}],
            }
        ),
        "messages[0].content[0].input_audio.format",
        "expected a string, got nothing",
    ),
    (
        with_messages({"role": "user", "content": [{"type": "file", "file": {"file_data": 1}}]}),
        "messages[0].content[0].file.file_data",
        "expected a string, got a number",
    ),
    (
        with_messages(USER, {"role": "tool", "content": "42"}),
        "messages[1].tool_call_id",
        "messages[1].tool_call_id: expected a string, got nothing",
    ),
    (
        with_messages(
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 1}}],
            }
        ),
        "messages[0].tool_calls[0].function.arguments",
        "expected a string, got a number",
    ),
    (
        with_messages(
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]}
        ),
        "messages[0].tool_calls[0].type",
        "got 'custom'",
    ),
    (
        with_messages({"role": "assistant", "content": [{"type": "image_url"}]}),
        "messages[0].content[0].type",
        "expected one of 'text', 'refusal'",
    ),
    (BASE | {"n": 1.5}, "n", "n: expected an integer, got 1.5"),
    (BASE | {"n": 0}, "n", "n: expected an integer of at least 1, got 0"),
    (BASE | {"n": True}, "n", "n: expected an integer, got a boolean"),
    (
        BASE | {"max_tokens": -1},
        "max_tokens",
        "max_tokens: expected an integer of at least 1, got -1",
    ),
    (
        BASE | {"max_completion_tokens": "5"},
        "max_completion_tokens",
        "expected an integer, got a string",
    ),
    (BASE | {"temperature": "hot"}, "temperature", "temperature: expected a number, got a string"),
    (BASE | {"top_p": 10**400}, "top_p", "top_p: expected a finite number"),
    (BASE | {"temperature": float("nan")}, "temperature", "expected a finite number"),
    (BASE | {"stop": 5}, "stop", "stop: expected a string or an array of strings, got a number"),
    (BASE | {"stop": ["a", 1]}, "stop[1]", "stop[1]: expected a string, got a number"),
    (BASE | {"stream": "yes"}, "stream", "stream: expected a boolean, got a string"),
    (
        BASE | {"stream_options": {"include_usage": True}},
        "stream_options",
        "stream_options: only allowed when stream is true",
    ),
    (
        BASE | {"stream": True, "stream_options": 1},
        "stream_options",
        "stream_options: expected an object, got a number",
    ),
    (BASE | {"tools": {}}, "tools", "tools: expected an array, got an object"),
    (
        BASE | {"tools": [{"type": "custom", "custom": {"name": "x"}}]},
        "tools[0].type",
        "tools[0].type: expected one of 'function', got 'custom'",
    ),
    (
        BASE | {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
        "tools[0].function.parameters",
        "expected an object, got an array",
    ),
    (
        BASE | {"tool_choice": "sometimes"},
        "tool_choice",
        "tool_choice: expected one of 'none', 'auto', 'required', got 'sometimes'",
    ),
    (
        BASE | {"tool_choice": 3},
        "tool_choice",
        "tool_choice: expected a string or an object, got a number",
    ),
    (
        BASE | {"tool_choice": {"type": "function", "function": {}}},
        "tool_choice.function.name",
        "expected a string, got nothing",
    ),
    (BASE | {"response_format": {"type": "xml"}}, "response_format.type", "got 'xml'"),
    (
        BASE | {"response_format": "json"},
        "response_format",
        "response_format: expected an object, got a string",
    ),
    (
        BASE | {"reasoning_effort": 3},
        "reasoning_effort",
        "reasoning_effort: expected a string, got a number",
    ),
    (BASE | {"metadata": {"a": 1}}, "metadata.a", "metadata.a: expected a string, got a number"),
    (BASE | {"user": ["u"]}, "user", "user: expected a string, got an array"),
    (
        BASE | {"parallel_tool_calls": "no"},
        "parallel_tool_calls",
        "expected a boolean, got a string",
    ),
]


@pytest.mark.parametrize(("body", "param", "message"), INVALID)
def test_invalid_requests_name_the_field(body: object, param: str | None, message: str) -> None:
    """A malformed request is a 400 RequestError whose message and param name the field."""
    with pytest.raises(RequestError) as raised:
        openai_chat.parse_request(body)
    assert raised.value.status == 400
    assert raised.value.param == param
    assert message in raised.value.message


def test_request_leniencies() -> None:
    """Shapes seen from real clients: nulls as absent, legacy max_tokens, a single stop
    string, arguments as an object, reasoning under either name, cache_control on parts,
    and tool choices the IR cannot model kept in Extra."""
    request = openai_chat.parse_request(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
                    ],
                },
                {
                    "role": "assistant",
                    "reasoning": "hm",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {"a": 1}}}],
                },
            ],
            "max_tokens": 9,
            "stop": "END",
            "temperature": None,
            "n": 2.0,
            "reasoning_effort": "none",
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "auto", "tools": []},
            },
        }
    )
    assert request.messages == (
        ir.Message(
            role=ir.Role.USER, content=[ir.Text(text="x", cache_control={"type": "ephemeral"})]
        ),
        ir.Message(
            role=ir.Role.ASSISTANT,
            content=[ir.Reasoning(text="hm"), ir.ToolCall(id="c", name="f", arguments='{"a":1}')],
        ),
    )
    assert (request.max_tokens, request.stop, request.temperature, request.n) == (
        9,
        ("END",),
        None,
        2,
    )
    assert request.reasoning == ir.ReasoningConfig(enabled=False, effort="none")
    assert request.tool_choice is None
    assert request.extra == ir.Extra(
        format="openai_chat",
        fields={
            "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}
        },
    )
    assert openai_chat.render_request(request)["tool_choice"]["type"] == "allowed_tools"


@pytest.mark.parametrize(
    ("config", "effort"),
    [
        (ir.ReasoningConfig(effort="high", enabled=False), "high"),
        (ir.ReasoningConfig(enabled=False, budget_tokens=5000), "none"),
        (ir.ReasoningConfig(budget_tokens=0), "none"),
        (ir.ReasoningConfig(budget_tokens=1024), "low"),
        (ir.ReasoningConfig(budget_tokens=8192), "medium"),
        (ir.ReasoningConfig(budget_tokens=32000), "high"),
        (ir.ReasoningConfig(enabled=True), None),
    ],
)
def test_reasoning_effort_from_budget(config: ir.ReasoningConfig, effort: str | None) -> None:
    """An explicit effort wins; disabled is "none"; a budget maps by F.6's heuristic."""
    body = openai_chat.render_request(ir.Request(model="m", reasoning=config))
    assert body.get("reasoning_effort") == effort


def test_render_request_leaves_out_documents_with_no_chat_form() -> None:
    """A ``file`` part holds ``file_data`` or a ``file_id``, never a URL: a document known
    only by its URL (or by nothing) is left out, never sent as ``"file": {}`` (which OpenAI
    rejects) nor read back as an empty document."""
    pdf = ir.Document(media_type="application/pdf", url="https://example.com/report.pdf")
    content: list[ir.Part] = [
        ir.Text(text="Summarise."),
        pdf,
        ir.Document(filename="nothing.pdf", title="Nothing"),
        ir.Document(url="https://example.com/a.pdf", file_id="file-1"),
    ]
    result = ir.ToolResult(call_id="call_1", content=[pdf])
    request = ir.Request(
        model="m",
        messages=[
            ir.Message(role=ir.Role.USER, content=content),
            ir.Message(role=ir.Role.USER, content=[pdf]),
            ir.Message(role=ir.Role.TOOL, content=[result]),
        ],
    )
    body = openai_chat.render_request(request)
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Summarise."},
                {"type": "file", "file": {"file_id": "file-1"}},
            ],
        },
        {"role": "user", "content": ""},
        {"role": "tool", "tool_call_id": "call_1", "content": ""},
    ]
    parsed = openai_chat.parse_request(wire(body))
    assert not any(
        isinstance(p, ir.Document) and p.data is None and p.file_id is None
        for m in parsed.messages
        for p in m.content
    )
    assert parsed == chat_projection.request(request)


def test_render_request_joins_separate_text_parts_with_a_blank_line() -> None:
    """An assistant turn's content is one string: separate text parts (and reasoning parts)
    of a request are joined with "\n\n", not run together; empty ones add nothing. A
    response's parts are one answer and join as they are."""
    parts: list[ir.Part] = [
        ir.Reasoning(text="Units?"),
        ir.Reasoning(text="", signature="c2ln"),
        ir.Reasoning(text="Metric."),
        ir.Text(text="You are terse."),
        ir.Text(text=""),
        ir.Text(text="Use metric units."),
    ]
    request = ir.Request(model="m", messages=[ir.Message(role=ir.Role.ASSISTANT, content=parts)])
    (message,) = openai_chat.render_request(request)["messages"]
    assert message["content"] == "You are terse.\n\nUse metric units."
    assert message["reasoning_content"] == "Units?\n\nMetric."
    response = openai_chat.render_response(ir.Response(id="r", model="m", content=parts))
    assert response["choices"][0]["message"]["content"] == "You are terse.Use metric units."
    assert response["choices"][0]["message"]["reasoning_content"] == "Units?Metric."


# --------------------------------------------------------------------------------------------
# Upstream answers


def test_parse_response_reads_protocols_example() -> None:
    """The A.2 example, plus a tool turn, a refusal and DeepSeek's reasoning_content."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1741569952,
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hi",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 19,
            "completion_tokens": 10,
            "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 4, "audio_tokens": 0},
        },
        "system_fingerprint": None,
        "service_tier": "default",
    }
    assert openai_chat.parse_response(body) == ir.Response(
        id="chatcmpl-1",
        model="gpt-x",
        content=[ir.Text(text="Hi")],
        usage=ir.Usage(input_tokens=19, output_tokens=10, cache_read_tokens=3, reasoning_tokens=4),
        created=1741569952,
        extra=ir.Extra(
            format="openai_chat", fields={"system_fingerprint": None, "service_tier": "default"}
        ),
    )
    message = {
        "role": "assistant",
        "content": None,
        "refusal": "No.",
        "reasoning_content": "Hmm.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    tool_turn = openai_chat.parse_response(
        {"id": "x", "model": "m", "choices": [{"message": message, "finish_reason": "stop"}]}
    )
    assert tool_turn.content == (
        ir.Reasoning(text="Hmm."),
        ir.Text(text="No."),
        ir.ToolCall(id="call_1", name="f", arguments="{}"),
    )
    assert tool_turn.stop_reason is ir.StopReason.TOOL_USE  # "stop" with tool calls (F.2)
    assert openai_chat.parse_response({"choices": []}) == ir.Response(id="", model="")


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"choices": {}},
        {"choices": [3]},
        {"choices": [{"message": {"content": 3}}]},
        {"choices": [{"message": {"tool_calls": [{"id": "c"}]}}]},
        {"choices": [], "usage": {"prompt_tokens": -1}},
        {"choices": [], "created": "now"},
    ],
)
def test_malformed_responses_are_upstream_errors(body: object) -> None:
    with pytest.raises(UpstreamError) as raised:
        openai_chat.parse_response(body)
    assert raised.value.kind is ir.ErrorKind.UPSTREAM and raised.value.status == 502


@pytest.mark.parametrize(
    ("status", "body", "kind", "message", "param"),
    [
        (
            429,
            {
                "error": {
                    "message": "slow",
                    "type": "tokens",
                    "param": "x",
                    "code": "rate_limit_exceeded",
                }
            },
            ir.ErrorKind.RATE_LIMIT,
            "slow",
            "x",
        ),
        (400, {"error": "bad"}, ir.ErrorKind.INVALID_REQUEST, "bad", None),
        (404, {"message": "nope"}, ir.ErrorKind.NOT_FOUND, "nope", None),
        (500, "  oops  ", ir.ErrorKind.INTERNAL, "oops", None),
        (
            503,
            None,
            ir.ErrorKind.OVERLOADED,
            "the upstream answered HTTP 503 without an error message",
            None,
        ),
        (
            502,
            [1, 2],
            ir.ErrorKind.UPSTREAM,
            "the upstream answered HTTP 502 without an error message",
            None,
        ),
        (
            401,
            {"error": {"message": 3, "param": 4}},
            ir.ErrorKind.AUTHENTICATION,
            "the upstream answered HTTP 401 without an error message",
            None,
        ),
    ],
)
def test_parse_error(
    status: int, body: object, kind: ir.ErrorKind, message: str, param: str | None
) -> None:
    """The kind follows the status; the upstream's message and param are kept."""
    error = openai_chat.parse_error(status, body)
    assert isinstance(error, UpstreamError)
    assert (error.kind, error.message, error.status, error.param) == (kind, message, status, param)


def test_render_error_has_all_four_keys() -> None:
    """A.6: message, type, param, code, null allowed; a missing model is model_not_found."""
    error = RequestError("no such model", param="model", kind=ir.ErrorKind.NOT_FOUND)
    assert openai_chat.render_error(error) == {
        "error": {
            "message": "no such model",
            "type": "not_found_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    types = {
        openai_chat.render_error(MuxError(kind, "x"))["error"]["type"] for kind in ir.ErrorKind
    }
    assert len(types) == len(ir.ErrorKind), (
        "one type per kind, so a mid-stream error keeps its kind"
    )


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **fields: Any) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": choices,
    } | fields
    return b"data: " + dumps(body) + b"\n\n"


START = ir.StreamStart(id="c1", model="m", created=1)
DONE = b"data: [DONE]\n\n"


def test_stream_parser_reads_protocols_example() -> None:
    """The A.3 tool-call example, with OpenAI's trailing usage chunk and an obfuscation
    field, split byte by byte."""
    data = b"".join(
        [
            b": keep-alive\n\n",
            chunk(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ],
                },
                obfuscation="xyz",
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Pa'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]}),
            chunk({}, "tool_calls"),
            chunk(usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
            DONE,
        ]
    )
    assert parse_stream([data[i : i + 1] for i in range(len(data))]) == [
        START,
        ir.ToolCallStart(index=0, id="call_a", name="get_weather"),
        ir.ToolArgsDelta(index=0, json='{"city":"Pa'),
        ir.ToolArgsDelta(index=0, json='ris"}'),
        ir.PartEnd(index=0),
        ir.UsageUpdate(usage=ir.Usage(input_tokens=5, output_tokens=2)),
        ir.Finish(stop_reason=ir.StopReason.TOOL_USE),
    ]


STREAM_CASES: list[tuple[str, bytes, list[ir.Event]]] = [
    (
        "reasoning then text, OpenRouter's reasoning key, no [DONE]",
        chunk({"role": "assistant", "reasoning": "a"})
        + chunk({"reasoning_content": "b"})
        + chunk({"content": "c"})
        + chunk({}, "length"),
        [
            START,
            ir.ReasoningDelta(index=0, text="a"),
            ir.ReasoningDelta(index=0, text="b"),
            ir.PartEnd(index=0),
            ir.TextDelta(index=1, text="c"),
            ir.PartEnd(index=1),
            ir.Finish(stop_reason=ir.StopReason.MAX_TOKENS),
        ],
    ),
    (
        "calls without an index (Gemini-compatible), repeated names ignored",
        chunk({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{}"}}]})
        + chunk({"tool_calls": [{"function": {"name": "f", "arguments": " "}}]})
        + chunk({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]})
        + chunk({}, "stop")
        + DONE,
        [
            START,
            ir.ToolCallStart(index=0, id="a", name="f"),
            ir.ToolArgsDelta(index=0, json="{}"),
            ir.ToolArgsDelta(index=0, json=" "),
            ir.PartEnd(index=0),
            ir.ToolCallStart(index=1, id="b", name="g"),
            ir.ToolArgsDelta(index=1, json="{}"),
            ir.PartEnd(index=1),
            ir.Finish(stop_reason=ir.StopReason.TOOL_USE),
        ],
    ),
    (
        "usage on every chunk (vLLM), other choices ignored, refusal as text",
        chunk({"content": "x"}, usage={"prompt_tokens": 1, "completion_tokens": 1})
        + b'data: {"choices":[{"index":1,"delta":{"content":"other"}}]}\n\n'
        + chunk(
            {"refusal": "no"}, "content_filter", usage={"prompt_tokens": 1, "completion_tokens": 2}
        )
        + DONE,
        [
            START,
            ir.TextDelta(index=0, text="x"),
            ir.TextDelta(index=0, text="no"),
            ir.PartEnd(index=0),
            ir.UsageUpdate(usage=ir.Usage(input_tokens=1, output_tokens=2)),
            ir.Finish(stop_reason=ir.StopReason.CONTENT_FILTER),
        ],
    ),
    (
        "a mid-stream error with an HTTP code",
        chunk({"content": "x"})
        + b'data: {"error":{"message":"later","code":429}}\n\n'
        + chunk({"content": "y"}),
        [
            START,
            ir.TextDelta(index=0, text="x"),
            ir.StreamError(kind=ir.ErrorKind.RATE_LIMIT, message="later", status=429),
        ],
    ),
    (
        "an error before anything else, with an unknown type",
        b'data: {"error":{"message":"boom","type":"weird"}}\n\n',
        [ir.StreamError(kind=ir.ErrorKind.UPSTREAM, message="boom", status=502)],
    ),
    (
        "a stream that breaks off without a finish reason",
        chunk({"content": "x"}),
        [
            START,
            ir.TextDelta(index=0, text="x"),
            ir.StreamError(
                kind=ir.ErrorKind.UPSTREAM,
                message="the upstream stream ended without a finish reason",
                status=502,
            ),
        ],
    ),
    (
        "[DONE] without a finish reason",
        DONE,
        [
            ir.StreamError(
                kind=ir.ErrorKind.UPSTREAM,
                message="the upstream stream ended without a finish reason",
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
        b"data: {not json\n\n",
        b"data: [1]\n\n",
        chunk({"content": 3}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f"}}]})
        + chunk({"content": "x"})
        + chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        chunk({}, usage={"prompt_tokens": "many"}),
    ],
    ids=[
        "not JSON",
        "not an object",
        "content not a string",
        "a call without a name",
        "interleaved",
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
    parser.feed(chunk({}, "stop") + DONE)
    assert parser.feed(b"data: garbage\n\n") == [] and parser.close() == []
