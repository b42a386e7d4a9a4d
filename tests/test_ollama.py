"""mux.formats.ollama: round trips against the projection, validation, SDK constraints.

The properties check ``parse(render(x)) == projection(x)`` for generated requests, responses
and streams (the stream's bytes split at random places); the tables check validation
messages and real Ollama lines; the SDK tests drive the real ``ollama`` client (its
pydantic models and its NDJSON loop) against bodies this module renders.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import httpx
import ollama
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from mux import ir
from mux.errors import MuxError, RequestError, UpstreamError
from mux.formats import anthropic
from mux.formats import ollama as fmt
from mux.formats.ollama import GenerateStreamRenderer, StreamParser, StreamRenderer
from mux.framing import dumps
from tests import strategies as strats
from tests.strategies import feed, splits, wire
from tests.projections import ollama as projection

fast = settings(deadline=None)  # examples: the profile's (conftest)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
PNG64 = base64.b64encode(PNG).decode()


def render_stream(
    events: Sequence[ir.Event], renderer: type[StreamRenderer] = StreamRenderer
) -> bytes:
    render = renderer(ir.Request(model="m", stream=True))
    return b"".join(render.render(e) for e in events)


def parse_stream(pieces: Sequence[bytes]) -> list[ir.Event]:
    return feed(StreamParser(), pieces)


def clear_created(events: list[ir.Event], original: ir.Event) -> list[ir.Event]:
    """Clear the ``created`` the renderer took from the clock, where the IR had none."""
    start = events[0] if events else None
    if isinstance(start, ir.StreamStart) and getattr(original, "created", 0) is None:
        assert isinstance(start.created, int)
        events[0] = attrs.evolve(start, created=None)
    return events


def lines_of(data: bytes) -> list[dict[str, Any]]:
    """The objects of a rendered stream, checking the framing: one object per
    LF-terminated line, never a blank line (the SDK ``json.loads`` every line)."""
    if not data:
        return []
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    assert all(line.strip() for line in lines), "a blank line breaks the SDK"
    return [json.loads(line) for line in lines]


# --------------------------------------------------------------------------------------------
# Round trips


@fast
@given(strats.requests())
def test_request_round_trip(request: ir.Request) -> None:
    """parse_request(render_request(r)) is the Ollama projection of r."""
    for label in sorted(strats.features(request)):
        event(label)
    assert fmt.parse_request(wire(fmt.render_request(request))) == projection.request(request)


@fast
@given(strats.requests())
def test_request_render_is_stable(request: ir.Request) -> None:
    """What Ollama can say survives any number of trips: projecting twice changes nothing."""
    once = projection.request(request)
    assert projection.request(once) == once
    assert fmt.parse_request(wire(fmt.render_request(once))) == once


@fast
@given(strats.responses())
def test_response_round_trip(response: ir.Response) -> None:
    """parse_response(render_response(r)) is the Ollama projection of r."""
    parsed = fmt.parse_response(wire(fmt.render_response(response)))
    if response.created is None:
        assert isinstance(parsed.created, int)
        parsed = attrs.evolve(parsed, created=None)
    assert parsed == projection.response(response)


@fast
@given(strats.event_streams(), st.data())
def test_stream_round_trip(events: list[ir.Event], data: st.DataObject) -> None:
    """Rendered, split anywhere and parsed, a stream is its Ollama projection, and both
    follow the IR grammar."""
    strats.check_stream(events)
    pieces = data.draw(splits(render_stream(events)))
    parsed = clear_created(parse_stream(pieces), events[0])
    expected = projection.events(events, ir.Request(model="m", stream=True))
    strats.check_stream(expected)
    assert parsed == expected


@fast
@given(strats.event_streams())
def test_generate_stream_is_the_chat_stream_reshaped(events: list[ir.Event]) -> None:
    """/api/generate lines say what the chat lines say, with ``response`` for
    ``message.content`` and without tool calls: one renderer, two carriers."""
    chat = lines_of(render_stream(events))
    generate = lines_of(render_stream(events, GenerateStreamRenderer))
    chat = [line for line in chat if "tool_calls" not in line.get("message", {})]
    clock = {"created_at"}
    for c, g in zip(chat, generate, strict=True):
        if "error" in c:
            assert g == c
            continue
        message = c.pop("message")
        expected = c | {"response": message["content"]}
        if "thinking" in message:
            expected["thinking"] = message["thinking"]
        assert {k: v for k, v in g.items() if k not in clock} == {
            k: v for k, v in expected.items() if k not in clock
        }


def test_generate_response_carries_response_and_thinking() -> None:
    response = ir.Response(
        id="x",
        model="m",
        content=[ir.Reasoning(text="hm"), ir.Text(text="Hi"), ir.ToolCall(id="c", name="f")],
        stop_reason=ir.StopReason.MAX_TOKENS,
        usage=ir.Usage(input_tokens=3, output_tokens=0),
        created=1751919739,
    )
    assert fmt.render_generate_response(response) == {
        "model": "m",
        "created_at": "2025-07-07T20:22:19Z",
        "response": "Hi",
        "thinking": "hm",
        "done": True,
        "done_reason": "length",
        "prompt_eval_count": 3,
    }


# --------------------------------------------------------------------------------------------
# What the SDK needs (protocols.md section 0, E.1)


@fast
@given(strats.event_streams(), st.booleans())
def test_stream_lines_meet_sdk_constraints(events: list[ir.Event], generate: bool) -> None:
    """Every line validates as the SDK's ChatResponse (message with role) or
    GenerateResponse; arguments are objects; times are RFC 3339; ``done`` only on the last
    line; a stream error is a last ``{"error": ...}`` line."""
    renderer = GenerateStreamRenderer if generate else StreamRenderer
    data = render_stream(events, renderer)
    lines = lines_of(data)
    end = events[-1]
    for position, line in enumerate(lines):
        last = position == len(lines) - 1
        if "error" in line:
            assert last and isinstance(end, ir.StreamError) and line == {"error": end.message}
            continue
        model = ollama.GenerateResponse(**line) if generate else ollama.ChatResponse(**line)
        if model.done:
            assert last and isinstance(end, ir.Finish)
        assert datetime.datetime.fromisoformat(line["created_at"]).tzinfo is not None
        if not generate:
            assert line["message"]["role"] == "assistant"
            for call in line["message"].get("tool_calls", ()):
                assert isinstance(call["function"]["arguments"], dict)
    if isinstance(end, ir.Finish):
        assert lines[-1]["done"] is True
        length = end.stop_reason is ir.StopReason.MAX_TOKENS
        assert lines[-1]["done_reason"] == ("length" if length else "stop")


@fast
@given(strats.event_streams(errors=False))
def test_stream_accumulates_in_the_sdk(events: list[ir.Event]) -> None:
    """Concatenating the SDK's chunks (as its users do) rebuilds the turn: text, thinking,
    whole tool calls with object arguments, and the final counts."""
    chunks = [ollama.ChatResponse(**line) for line in lines_of(render_stream(events))]
    content = "".join(c.message.content or "" for c in chunks)
    thinking = "".join(c.message.thinking or "" for c in chunks)
    calls = [
        (call.function.name, dict(call.function.arguments))
        for c in chunks
        for call in c.message.tool_calls or ()
    ]
    assert content == "".join(e.text for e in events if isinstance(e, ir.TextDelta))
    assert thinking == "".join(e.text for e in events if isinstance(e, ir.ReasoningDelta))
    starts = [e for e in events if isinstance(e, ir.ToolCallStart)]
    expected = [
        (
            s.name,
            json.loads(
                projection.arguments(
                    "".join(
                        e.json
                        for e in events
                        if isinstance(e, ir.ToolArgsDelta) and e.index == s.index
                    )
                )
            ),
        )
        for s in starts
    ]
    assert calls == expected
    usage = ([ir.Usage()] + [e.usage for e in events if isinstance(e, ir.UsageUpdate)])[-1]
    assert (chunks[-1].prompt_eval_count or 0, chunks[-1].eval_count or 0) == (
        usage.input_tokens,
        usage.output_tokens,
    )


def test_stream_error_is_an_error_line_and_nothing_more() -> None:
    renderer = StreamRenderer(ir.Request(model="m"))
    assert renderer.render(ir.StreamStart(id="c", model="m", created=1)) == b""
    out = renderer.render(ir.StreamError(kind=ir.ErrorKind.RATE_LIMIT, message="slow", status=429))
    assert out == b'{"error":"slow"}\n'
    assert renderer.render(ir.Finish(stop_reason=ir.StopReason.END_TURN)) == b""


def test_stream_renderer_needs_a_start() -> None:
    with pytest.raises(ValueError, match="StreamStart"):
        StreamRenderer(ir.Request(model="m")).render(ir.TextDelta(index=0, text="x"))


def test_tool_calls_are_held_until_whole() -> None:
    """F.4: argument fragments never reach an Ollama client; the call goes out at its end,
    as one line with an object, invalid JSON wrapped as ``_raw``."""
    renderer = StreamRenderer(ir.Request(model="m"))
    renderer.render(ir.StreamStart(id="c", model="m", created=0))
    assert renderer.render(ir.ToolCallStart(index=0, id="call_a", name="f")) == b""
    assert renderer.render(ir.ToolArgsDelta(index=0, json='{"city":')) == b""
    assert renderer.render(ir.ToolArgsDelta(index=0, json='"Paris"}')) == b""
    assert json.loads(renderer.render(ir.PartEnd(index=0)))["message"]["tool_calls"] == [
        {"id": "call_a", "function": {"index": 0, "name": "f", "arguments": {"city": "Paris"}}}
    ]
    renderer.render(ir.ToolCallStart(index=1, id="call_b", name="g"))
    renderer.render(ir.ToolArgsDelta(index=1, json="{oops"))
    (call,) = json.loads(renderer.render(ir.PartEnd(index=1)))["message"]["tool_calls"]
    assert call["function"] == {"index": 1, "name": "g", "arguments": {"_raw": "{oops"}}


# --------------------------------------------------------------------------------------------
# The real SDK, over a mock transport


@attrs.define
class Upstream:
    """An httpx transport answering the SDK with a canned status and body."""

    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    requests: list[Any] = attrs.Factory(list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.content:
            self.requests.append(json.loads(request.content))
        headers = {"content-type": self.content_type}
        return httpx.Response(self.status, content=self.body, headers=headers)


RESPONSE = ir.Response(
    id="x",
    model="llama3.2",
    content=[
        ir.Reasoning(text="Think."),
        ir.Text(text="Let me check."),
        ir.ToolCall(id="call_a", name="get_weather", arguments='{"city":"Paris"}'),
    ],
    stop_reason=ir.StopReason.TOOL_USE,
    usage=ir.Usage(input_tokens=10, output_tokens=5),
    created=1751919739,
)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream(body=dumps(fmt.render_response(RESPONSE)))


@pytest.fixture
def client(upstream: Upstream) -> Iterator[ollama.Client]:
    with ollama.Client(host="http://mux.test", transport=httpx.MockTransport(upstream)) as c:
        yield c


def get_weather(city: str) -> str:
    """Get the weather.

    Args:
      city: The city.
    """
    return "sunny"


def test_sdk_chat_request_parses_and_renders_back(
    client: ollama.Client, upstream: Upstream
) -> None:
    """Everything the SDK can put in a chat request arrives as IR or Extra, and a same-format
    hop restores it (plus the tool-call id mux minted, and the result's link to it)."""
    client.chat(
        model="llama3.2",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?", "images": [PNG]},
            {
                "role": "assistant",
                "content": "Checking.",
                "thinking": "They want weather.",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                ],
            },
            {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        ],
        tools=[get_weather],
        format={"type": "object", "properties": {"a": {"type": "string"}}},
        options={
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 40,
            "num_predict": 100,
            "seed": 7,
            "stop": ["END"],
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
            "num_ctx": 8192,
            "min_p": 0.05,
        },
        think="high",
        keep_alive="5m",
        logprobs=True,
        top_logprobs=2,
    )
    sent = upstream.requests[-1]
    request = fmt.parse_request(sent)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city."}},
        "required": ["city"],
    }
    assert request == ir.Request(
        model="llama3.2",
        messages=[
            ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text="Be brief.")]),
            ir.Message(
                role=ir.Role.USER,
                content=[ir.Text(text="Weather?"), ir.Image(media_type="image/png", data=PNG)],
            ),
            ir.Message(
                role=ir.Role.ASSISTANT,
                content=[
                    ir.Reasoning(text="They want weather."),
                    ir.Text(text="Checking."),
                    ir.ToolCall(id="call_0", name="get_weather", arguments='{"city":"Paris"}'),
                ],
            ),
            ir.Message(
                role=ir.Role.TOOL,
                content=[
                    ir.ToolResult(
                        call_id="call_0", content=[ir.Text(text="sunny")], name="get_weather"
                    )
                ],
            ),
        ],
        tools=[ir.Tool(name="get_weather", description="Get the weather.", parameters=schema)],
        max_tokens=100,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        stop=["END"],
        seed=7,
        frequency_penalty=0.2,
        presence_penalty=0.1,
        response_format=ir.ResponseFormat(
            type=ir.ResponseFormatType.JSON_SCHEMA,
            schema={"type": "object", "properties": {"a": {"type": "string"}}},
        ),
        reasoning=ir.ReasoningConfig(effort="high"),
        stream=False,
        extra=ir.Extra(
            format="ollama",
            fields={
                "keep_alive": "5m",
                "logprobs": True,
                "top_logprobs": 2,
                "options": {"num_ctx": 8192, "min_p": 0.05},
            },
        ),
    )
    back = fmt.render_request(request)
    sent["messages"][2]["tool_calls"][0]["id"] = "call_0"
    sent["messages"][3]["tool_call_id"] = "call_0"
    assert back == sent


def test_sdk_generate_request_parses(client: ollama.Client, upstream: Upstream) -> None:
    upstream.body = dumps(fmt.render_generate_response(RESPONSE))
    answer = client.generate(
        model="llama3.2",
        prompt="Why?",
        suffix="END",
        system="Be brief.",
        template="{{ .Prompt }}",
        context=[1, 2],
        raw=True,
        images=[PNG],
        format="json",
        options={"num_predict": -1, "temperature": 0},
        keep_alive=0,
        think=True,
    )
    assert (answer.response, answer.thinking, answer.done_reason) == (
        "Let me check.",
        "Think.",
        "stop",
    )
    request = fmt.parse_generate_request(upstream.requests[-1])
    assert request == ir.Request(
        model="llama3.2",
        messages=[
            ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text="Be brief.")]),
            ir.Message(
                role=ir.Role.USER,
                content=[ir.Text(text="Why?"), ir.Image(media_type="image/png", data=PNG)],
            ),
        ],
        temperature=0,
        response_format=ir.ResponseFormat(type=ir.ResponseFormatType.JSON_OBJECT),
        reasoning=ir.ReasoningConfig(enabled=True),
        stream=False,
        extra=ir.Extra(
            format="ollama",
            fields={
                "suffix": "END",
                "template": "{{ .Prompt }}",
                "context": [1, 2],
                "raw": True,
                "keep_alive": 0,
            },
        ),
    )
    # /api/chat has no place for the generate-only fields.
    assert fmt.render_request(request)["keep_alive"] == 0
    assert not {"suffix", "template", "context", "raw"} & set(fmt.render_request(request))


def test_sdk_reads_a_rendered_chat_response(client: ollama.Client) -> None:
    answer = client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert answer.message.role == "assistant"
    assert (answer.message.content, answer.message.thinking) == ("Let me check.", "Think.")
    (call,) = answer.message.tool_calls or ()
    assert (call.function.name, call.function.arguments) == ("get_weather", {"city": "Paris"})
    assert (answer.done, answer.done_reason) == (True, "stop")  # "stop" after tool calls
    assert (answer.prompt_eval_count, answer.eval_count) == (10, 5)
    assert answer.created_at == "2025-07-07T20:22:19Z"


STREAM: list[ir.Event] = [
    ir.StreamStart(id="s", model="llama3.2", created=5),
    ir.ReasoningDelta(index=0, text="Hmm, "),
    ir.ReasoningDelta(index=0, text="weather."),
    ir.PartEnd(index=0),
    ir.TextDelta(index=1, text="Let me "),
    ir.TextDelta(index=1, text="check."),
    ir.PartEnd(index=1),
    ir.ToolCallStart(index=2, id="call_a", name="get_weather"),
    ir.ToolArgsDelta(index=2, json='{"city":'),
    ir.ToolArgsDelta(index=2, json='"Paris"}'),
    ir.PartEnd(index=2),
    ir.UsageUpdate(usage=ir.Usage(input_tokens=3, output_tokens=4)),
    ir.Finish(stop_reason=ir.StopReason.TOOL_USE),
]


def test_sdk_streams_chat(client: ollama.Client, upstream: Upstream) -> None:
    upstream.body = render_stream(STREAM)
    upstream.content_type = fmt.CONTENT_TYPE
    chunks = list(
        client.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}], stream=True)
    )
    assert [c.message.thinking for c in chunks[:2]] == ["Hmm, ", "weather."]
    assert "".join(c.message.content or "" for c in chunks) == "Let me check."
    (call,) = [call for c in chunks for call in c.message.tool_calls or ()]
    assert call.function.arguments == {"city": "Paris"}
    assert [c.done for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert (chunks[-1].done_reason, chunks[-1].eval_count) == ("stop", 4)
    assert upstream.requests[-1]["stream"] is True


def test_sdk_streams_generate(client: ollama.Client, upstream: Upstream) -> None:
    upstream.body = render_stream(STREAM, GenerateStreamRenderer)
    upstream.content_type = fmt.CONTENT_TYPE
    chunks = list(client.generate(model="llama3.2", prompt="x", stream=True))
    assert "".join(c.response or "" for c in chunks) == "Let me check."
    assert "".join(c.thinking or "" for c in chunks) == "Hmm, weather."
    assert chunks[-1].done and chunks[-1].prompt_eval_count == 3


def test_sdk_raises_a_mid_stream_error(client: ollama.Client, upstream: Upstream) -> None:
    error = ir.StreamError(kind=ir.ErrorKind.OVERLOADED, message="busy", status=529)
    upstream.body = render_stream([*STREAM[:5], error])
    upstream.content_type = fmt.CONTENT_TYPE
    stream = client.chat(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(ollama.ResponseError) as raised:
        for _ in stream:
            pass
    assert raised.value.error == "busy"


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 502, 529])
def test_sdk_raises_rendered_errors(
    client: ollama.Client, upstream: Upstream, status: int
) -> None:
    """E.3: ``{"error": message}`` with the status; the SDK reads both."""
    error = MuxError(ir.ErrorKind.INTERNAL, "model 'x' not found", status=status)
    upstream.status, upstream.body = status, dumps(fmt.render_error(error))
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model="x", messages=[{"role": "user", "content": "x"}])
    assert (raised.value.error, raised.value.status_code) == ("model 'x' not found", status)


MODELS = [ir.ModelInfo(id="fake"), ir.ModelInfo(id="org/b:latest", owned_by="org", created=3)]


def test_sdk_reads_metadata(client: ollama.Client, upstream: Upstream) -> None:
    """list, show and ps validate in the SDK's models (RFC 3339 times, model_info)."""
    upstream.body = dumps(fmt.render_tags(MODELS))
    listed = client.list()
    assert [m.model for m in listed.models] == ["fake", "org/b:latest"]
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    assert listed.models[1].modified_at == epoch + datetime.timedelta(seconds=3)
    assert listed.models[0].details is not None and listed.models[0].details.format == "gguf"
    assert len({m.digest for m in listed.models}) == 2
    upstream.body = dumps(fmt.render_show(MODELS[1]))
    shown = client.show("org/b:latest")
    assert shown.modelinfo is not None
    architecture = shown.modelinfo["general.architecture"]
    assert shown.modelinfo[f"{architecture}.context_length"] > 0
    assert shown.capabilities == ["completion", "tools", "thinking", "vision"]
    assert upstream.requests[-1] == {"model": "org/b:latest"}
    upstream.body = dumps(fmt.render_ps(MODELS))
    running = client.ps()
    assert [m.name for m in running.models] == ["fake", "org/b:latest"]
    assert all(m.expires_at is not None and m.context_length for m in running.models)


def test_version_looks_like_a_release() -> None:
    assert [int(n) for n in fmt.VERSION.split(".")] >= [0, 12, 0]


# --------------------------------------------------------------------------------------------
# Request validation and leniencies

BASE: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def with_messages(*messages: Any) -> dict[str, Any]:
    return {"model": "m", "messages": list(messages)}


def options(**values: Any) -> dict[str, Any]:
    return BASE | {"options": values}


INVALID: list[tuple[object, str | None, str]] = [
    ([], None, "request body: expected an object, got an array"),
    ({"messages": []}, "model", "model: expected a string, got nothing"),
    (BASE | {"model": ""}, "model", "model: expected a model name, got an empty string"),
    (BASE | {"messages": {}}, "messages", "messages: expected an array, got an object"),
    (with_messages("hi"), "messages[0]", "messages[0]: expected an object, got a string"),
    (
        with_messages({"role": "developer", "content": "x"}),
        "messages[0].role",
        "messages[0].role: expected one of 'system', 'user', 'assistant', 'tool', "
        "got 'developer'",
    ),
    (
        with_messages({"role": "user", "content": [{"type": "text", "text": "x"}]}),
        "messages[0].content",
        "messages[0].content: expected a string, got an array",
    ),
    (
        with_messages({"role": "user", "images": PNG64}),
        "messages[0].images",
        "messages[0].images: expected an array, got a string",
    ),
    (
        with_messages({"role": "user", "images": ["!!"]}),
        "messages[0].images[0]",
        "messages[0].images[0]: expected base64 data, got a string that is not base64",
    ),
    (
        with_messages({"role": "assistant", "thinking": 3}),
        "messages[0].thinking",
        "messages[0].thinking: expected a string, got a number",
    ),
    (
        with_messages({"role": "assistant", "tool_calls": {}}),
        "messages[0].tool_calls",
        "expected an array, got an object",
    ),
    (
        with_messages({"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}),
        "messages[0].tool_calls[0].function.name",
        "messages[0].tool_calls[0].function.name: expected a string, got nothing",
    ),
    (
        with_messages(
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 3}}]}
        ),
        "messages[0].tool_calls[0].function.arguments",
        "expected an object, got a number",
    ),
    (
        with_messages({"role": "assistant", "tool_calls": [{"id": 3, "function": {"name": "f"}}]}),
        "messages[0].tool_calls[0].id",
        "expected a string, got a number",
    ),
    (
        with_messages({"role": "tool", "content": "x", "tool_name": 3}),
        "messages[0].tool_name",
        "messages[0].tool_name: expected a string, got a number",
    ),
    (
        with_messages({"role": "tool", "content": "x", "tool_call_id": []}),
        "messages[0].tool_call_id",
        "expected a string, got an array",
    ),
    (
        BASE | {"tools": [{"type": "custom"}]},
        "tools[0].type",
        "tools[0].type: expected one of 'function', got 'custom'",
    ),
    (
        BASE | {"tools": [{"function": {"name": "f", "parameters": []}}]},
        "tools[0].function.parameters",
        "expected an object, got an array",
    ),
    (BASE | {"format": "xml"}, "format", """format: expected "json" or a JSON Schema object, \
got 'xml'"""),
    (BASE | {"format": 3}, "format", 'expected "json" or a JSON Schema object, got a number'),
    (BASE | {"options": []}, "options", "options: expected an object, got an array"),
    (
        options(temperature="hot"),
        "options.temperature",
        "options.temperature: expected a number, got a string",
    ),
    (
        options(num_predict=0),
        "options.num_predict",
        "options.num_predict: expected a positive integer, or -1 (no limit) or -2 (fill the "
        "context), got 0",
    ),
    (options(num_predict=1.5), "options.num_predict", "expected an integer, got 1.5"),
    (options(top_k="40"), "options.top_k", "options.top_k: expected an integer, got a string"),
    (options(seed=True), "options.seed", "options.seed: expected an integer, got a boolean"),
    (options(stop=5), "options.stop", "options.stop: expected an array of strings, got a number"),
    (options(stop=["a", 1]), "options.stop[1]", "options.stop[1]: expected a string, got a number"),
    (options(num_ctx=float("inf")), "options.num_ctx", "expected JSON without NaN or Infinity"),
    (BASE | {"stream": "yes"}, "stream", "stream: expected a boolean, got a string"),
    (
        BASE | {"think": "extreme"},
        "think",
        "think: expected one of 'low', 'medium', 'high', 'max', got 'extreme'",
    ),
    (
        BASE | {"think": 1},
        "think",
        "think: expected a boolean or one of 'low', 'medium', 'high', 'max', got a number",
    ),
    (BASE | {"keep_alive": float("nan")}, "keep_alive", "expected JSON without NaN or Infinity"),
]


@pytest.mark.parametrize(("body", "param", "message"), INVALID)
def test_invalid_requests_name_the_field(body: object, param: str | None, message: str) -> None:
    """A malformed request is a 400 RequestError whose message and param name the field."""
    with pytest.raises(RequestError) as raised:
        fmt.parse_request(body)
    assert raised.value.status == 400
    assert raised.value.param == param
    assert message in raised.value.message


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"model": "m", "prompt": 3}, "prompt", "prompt: expected a string, got a number"),
        ({"model": "m", "system": []}, "system", "system: expected a string, got an array"),
        ({"model": "m", "images": [1]}, "images[0]", "images[0]: expected a string, got a number"),
        ({"model": "m", "options": {"top_p": "x"}}, "options.top_p", "expected a number"),
        ({"prompt": "x"}, "model", "model: expected a string, got nothing"),
        ("x", None, "request body: expected an object, got a string"),
    ],
)
def test_invalid_generate_requests_name_the_field(
    body: object, param: str | None, message: str
) -> None:
    with pytest.raises(RequestError) as raised:
        fmt.parse_generate_request(body)
    assert raised.value.param == param
    assert message in raised.value.message


def test_request_defaults_and_leniencies() -> None:
    """``stream`` defaults to true; nulls are absent; ``format: ""`` is no format;
    ``num_predict: -1`` is no limit; one stop string; string arguments; data-URL images;
    results without ids answer the calls of the turn before, by name, then in order;
    empty ``messages`` loads a model."""
    request = fmt.parse_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "", "images": [f"data:image/png;base64,{PNG64}"]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"function": {"name": "f", "arguments": '{"a": 1}'}},
                        {"id": "given", "type": "function", "function": {"name": "g"}},
                        {"function": {"name": "f", "arguments": {}}},
                    ],
                },
                {"role": "tool", "content": "G", "tool_name": "g"},
                {"role": "tool", "content": "F"},
                {"role": "tool", "content": "F2", "tool_call_id": "call_2"},
                {"role": "tool", "content": "stray"},
            ],
            "format": "",
            "options": {"num_predict": -1, "stop": "END", "temperature": None},
            "think": False,
            "tools": [],
        }
    )
    assert request.stream is True
    assert (request.max_tokens, request.stop, request.temperature) == (None, ("END",), None)
    assert request.response_format is None and request.extra is None
    assert request.reasoning == ir.ReasoningConfig(enabled=False)
    user, assistant, *results = request.messages
    assert user.content == (ir.Image(media_type="image/png", data=PNG),)
    assert assistant.content == (
        ir.ToolCall(id="call_0", name="f", arguments='{"a": 1}'),
        ir.ToolCall(id="given", name="g", arguments="{}"),
        ir.ToolCall(id="call_2", name="f", arguments="{}"),
    )
    answered = [
        (p.call_id, p.name) for m in results for p in m.content if isinstance(p, ir.ToolResult)
    ]
    assert answered == [("given", "g"), ("call_0", None), ("call_2", None), ("call_3", None)]
    assert fmt.parse_request({"model": "m"}).messages == ()
    assert fmt.parse_request({"model": "m", "messages": []}).stream is True


@pytest.mark.parametrize(
    ("think", "config"),
    [
        (True, ir.ReasoningConfig(enabled=True)),
        (False, ir.ReasoningConfig(enabled=False)),
        ("low", ir.ReasoningConfig(effort="low")),
        ("max", ir.ReasoningConfig(effort="xhigh")),
    ],
)
def test_think_values(think: bool | str, config: ir.ReasoningConfig) -> None:
    request = fmt.parse_request(BASE | {"think": think})
    assert request.reasoning == config
    assert fmt.render_request(request)["think"] == think


@pytest.mark.parametrize(
    ("config", "think"),
    [
        (ir.ReasoningConfig(effort="none", enabled=True), False),
        (ir.ReasoningConfig(effort="minimal"), "low"),
        (ir.ReasoningConfig(effort="xhigh"), "max"),
        (ir.ReasoningConfig(effort="turbo"), True),
        (ir.ReasoningConfig(enabled=True, budget_tokens=0), True),
        (ir.ReasoningConfig(budget_tokens=0), False),
        (ir.ReasoningConfig(budget_tokens=30000), True),
        (ir.ReasoningConfig(include_thoughts=True), True),
        (ir.ReasoningConfig(summary="auto"), None),
    ],
)
def test_think_from_other_formats(config: ir.ReasoningConfig, think: bool | str | None) -> None:
    """An effort wins, then enabled, then a budget (as a boolean: levels are gpt-oss only)."""
    assert fmt.render_request(ir.Request(model="m", reasoning=config)).get("think") == think


def test_render_request_tool_results() -> None:
    """Tool results leave their message as tool messages named after the call they answer;
    unknown ids get no name; arguments are objects, invalid text wrapped as ``_raw``."""
    body = fmt.render_request(
        ir.Request(
            model="m",
            messages=[
                ir.Message(
                    role=ir.Role.ASSISTANT,
                    content=[ir.ToolCall(id="c1", name="f", arguments="not json")],
                ),
                ir.Message(
                    role=ir.Role.USER,
                    content=[
                        ir.ToolResult(call_id="c1", content=[ir.Text(text="1")]),
                        ir.ToolResult(call_id="c9", content=[ir.Text(text="2")], is_error=True),
                        ir.Text(text="and now?"),
                        ir.Document(data=b"%PDF", media_type="application/pdf"),
                        ir.Image(url="https://example.com/a.png"),
                    ],
                ),
            ],
            stream=False,
        )
    )
    assert body == {
        "model": "m",
        "messages": [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c1", "function": {"name": "f", "arguments": {"_raw": "not json"}}}
                ],
            },
            {"role": "tool", "content": "1", "tool_name": "f", "tool_call_id": "c1"},
            {"role": "tool", "content": "2", "tool_call_id": "c9"},
            {"role": "user", "content": "and now?"},
        ],
        "stream": False,
    }


def test_render_request_joins_separate_text_parts_with_a_blank_line() -> None:
    """Separate text parts (Anthropic's system blocks, a user turn's blocks, a replayed
    assistant turn's) and reasoning parts become one string joined with "\n\n", never run
    together; empty parts add nothing. An answer's parts join as they are."""
    anthropic_client = {
        "model": "m",
        "max_tokens": 100,
        "system": [
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Use metric units."},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>Be kind.</system-reminder>"},
                    {"type": "text", "text": "How warm is it?"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "t1", "name": "temp", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [
                            {"type": "text", "text": "21"},
                            {"type": "text", "text": "celsius"},
                        ],
                    }
                ],
            },
        ],
    }
    request = anthropic.parse_request(anthropic_client)
    history = ir.Message(
        role=ir.Role.ASSISTANT,
        content=[
            ir.Reasoning(text="Metric."),
            ir.Reasoning(text="", signature="c2ln"),
            ir.Reasoning(text="Celsius."),
            ir.Text(text="It is"),
            ir.Text(text=""),
            ir.Text(text="21 °C."),
        ],
    )
    request = attrs.evolve(request, messages=[*request.messages, history])
    assert fmt.render_request(request)["messages"] == [
        {"role": "system", "content": "You are terse.\n\nUse metric units."},
        {
            "role": "user",
            "content": "<system-reminder>Be kind.</system-reminder>\n\nHow warm is it?",
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [{"id": "t1", "function": {"name": "temp", "arguments": {}}}],
        },
        {"role": "tool", "content": "21\n\ncelsius", "tool_name": "temp", "tool_call_id": "t1"},
        {"role": "assistant", "content": "It is\n\n21 °C.", "thinking": "Metric.\n\nCelsius."},
    ]
    answer = fmt.render_response(ir.Response(id="", model="m", content=history.content))
    assert answer["message"]["content"] == "It is21 °C."
    assert answer["message"]["thinking"] == "Metric.Celsius."


# --------------------------------------------------------------------------------------------
# Upstream answers

CREATED = 1751919739  # 2025-07-07T20:22:19Z


def test_parse_response_reads_an_ollama_answer() -> None:
    body = {
        "model": "llama3.2",
        "created_at": "2025-07-07T20:22:19.184789Z",
        "message": {
            "role": "assistant",
            "content": "Hi",
            "thinking": "hm",
            "tool_calls": [
                {"function": {"name": "f", "arguments": {"a": 1}}},
                {"id": "call_x", "function": {"index": 1, "name": "g", "arguments": {}}},
            ],
        },
        "done": True,
        "done_reason": "stop",
        "total_duration": 4883583458,
        "load_duration": 1334875,
        "prompt_eval_count": 26,
        "prompt_eval_duration": 342546000,
        "eval_count": 282,
        "eval_duration": 4535599000,
    }
    response = fmt.parse_response(body)
    assert response == ir.Response(
        id="",
        model="llama3.2",
        content=[
            ir.Reasoning(text="hm"),
            ir.Text(text="Hi"),
            ir.ToolCall(id="call_0", name="f", arguments='{"a":1}'),
            ir.ToolCall(id="call_x", name="g", arguments="{}"),
        ],
        stop_reason=ir.StopReason.TOOL_USE,
        usage=ir.Usage(input_tokens=26, output_tokens=282),
        created=CREATED,
        extra=ir.Extra(
            format="ollama",
            fields={
                "total_duration": 4883583458,
                "load_duration": 1334875,
                "prompt_eval_duration": 342546000,
                "eval_duration": 4535599000,
            },
        ),
    )
    # A same-format hop gives the client Ollama's own durations back.
    assert fmt.render_response(response)["total_duration"] == 4883583458
    load = {"model": "m", "created_at": "2025-07-07T13:22:19.1-07:00", "message": {}, "done": True}
    assert fmt.parse_response(load | {"done_reason": "load"}) == ir.Response(
        id="", model="m", created=CREATED
    )
    length = fmt.parse_response(load | {"done_reason": "length"})
    assert length.stop_reason is ir.StopReason.MAX_TOKENS


@pytest.mark.parametrize(
    "body",
    [
        [],
        {},
        {"message": "hi"},
        {"message": {"content": 3}},
        {"message": {"tool_calls": [{"function": {"arguments": {}}}]}},
        {"message": {}, "created_at": "yesterday"},
        {"message": {}, "prompt_eval_count": -1},
        {"message": {}, "x": float("nan")},
    ],
)
def test_malformed_responses_are_upstream_errors(body: object) -> None:
    with pytest.raises(UpstreamError) as raised:
        fmt.parse_response(body)
    assert raised.value.kind is ir.ErrorKind.UPSTREAM and raised.value.status == 502


NO_MESSAGE = "the upstream answered HTTP %d without an error message"


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (404, {"error": "model 'x' not found"}, ir.ErrorKind.NOT_FOUND, "model 'x' not found"),
        (429, {"error": {"message": "slow"}}, ir.ErrorKind.RATE_LIMIT, "slow"),
        (500, "  oops  ", ir.ErrorKind.INTERNAL, "oops"),
        (503, None, ir.ErrorKind.OVERLOADED, NO_MESSAGE % 503),
        (400, {"error": ""}, ir.ErrorKind.INVALID_REQUEST, NO_MESSAGE % 400),
    ],
)
def test_parse_error(status: int, body: object, kind: ir.ErrorKind, message: str) -> None:
    error = fmt.parse_error(status, body)
    assert isinstance(error, UpstreamError)
    assert (error.kind, error.message, error.status) == (kind, message, status)


def test_render_error() -> None:
    error = RequestError("model 'x' not found", kind=ir.ErrorKind.NOT_FOUND)
    assert fmt.render_error(error) == {"error": "model 'x' not found"}


def line(**fields: Any) -> bytes:
    head = {"model": "llama3.2", "created_at": "2025-07-07T20:22:19.184789Z"}
    return dumps(head | fields) + b"\n"


START = ir.StreamStart(id="", model="llama3.2", created=CREATED)


def test_stream_parser_reads_protocols_example() -> None:
    """The E.1 example, split byte by byte."""
    data = b"".join(
        [
            line(message={"role": "assistant", "content": "The"}, done=False),
            line(
                message={
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "call_x",
                            "function": {
                                "index": 0,
                                "name": "get_weather",
                                "arguments": {"city": "Tokyo"},
                            },
                        }
                    ],
                },
                done=False,
            ),
            line(
                message={"role": "assistant", "content": ""},
                done=True,
                done_reason="stop",
                total_duration=4883583458,
                prompt_eval_count=26,
                eval_count=282,
            ),
        ]
    )
    assert parse_stream([data[i : i + 1] for i in range(len(data))]) == [
        START,
        ir.TextDelta(index=0, text="The"),
        ir.PartEnd(index=0),
        ir.ToolCallStart(index=1, id="call_x", name="get_weather"),
        ir.ToolArgsDelta(index=1, json='{"city":"Tokyo"}'),
        ir.PartEnd(index=1),
        ir.UsageUpdate(usage=ir.Usage(input_tokens=26, output_tokens=282)),
        ir.Finish(stop_reason=ir.StopReason.TOOL_USE),
    ]


UPSTREAM_FAILED = "the upstream stream ended before its done line"

STREAM_CASES: list[tuple[str, bytes, list[ir.Event]]] = [
    (
        "thinking then content, CRLF lines, length, calls without ids, and no trailing LF",
        line(message={"role": "assistant", "content": "", "thinking": "a"}, done=False)
        .replace(b"\n", b"\r\n")
        + line(message={"thinking": "b", "content": "c"}, done=False)
        + line(
            message={"tool_calls": [{"function": {"name": "f", "arguments": {}}}]}, done=False
        )
        + line(message={"content": ""}, done=True, done_reason="length").rstrip(b"\n"),
        [
            START,
            ir.ReasoningDelta(index=0, text="a"),
            ir.ReasoningDelta(index=0, text="b"),
            ir.PartEnd(index=0),
            ir.TextDelta(index=1, text="c"),
            ir.PartEnd(index=1),
            ir.ToolCallStart(index=2, id="call_0", name="f"),
            ir.ToolArgsDelta(index=2, json="{}"),
            ir.PartEnd(index=2),
            ir.UsageUpdate(usage=ir.Usage()),
            ir.Finish(stop_reason=ir.StopReason.MAX_TOKENS),
        ],
    ),
    (
        "a mid-stream error",
        line(message={"content": "x"}, done=False) + b'{"error":"runner died"}\n' + line(done=True),
        [
            START,
            ir.TextDelta(index=0, text="x"),
            ir.StreamError(kind=ir.ErrorKind.UPSTREAM, message="runner died", status=502),
        ],
    ),
    (
        "an error before anything else",
        b'{"error":"boom"}\n',
        [ir.StreamError(kind=ir.ErrorKind.UPSTREAM, message="boom", status=502)],
    ),
    (
        "a stream that breaks off before done",
        line(message={"content": "x"}, done=False),
        [
            START,
            ir.TextDelta(index=0, text="x"),
            ir.StreamError(kind=ir.ErrorKind.UPSTREAM, message=UPSTREAM_FAILED, status=502),
        ],
    ),
    (
        "a done line alone, with a load reason",
        line(message={}, done=True, done_reason="load"),
        [START, ir.UsageUpdate(usage=ir.Usage()), ir.Finish(stop_reason=ir.StopReason.END_TURN)],
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
        b"{not json\n",
        b"[1]\n",
        line(message={"content": 3}),
        line(message={"tool_calls": [{"function": {"arguments": {}}}]}),
        line(message={}, done=True, eval_count="many"),
        line(created_at="noon"),
    ],
    ids=[
        "not JSON",
        "not an object",
        "content not a string",
        "a call without a name",
        "bad usage",
        "bad time",
    ],
)
def test_stream_parser_rejects_malformed_streams(data: bytes) -> None:
    """Malformed upstream data is an UpstreamError (kind UPSTREAM), nothing else."""
    with pytest.raises(UpstreamError) as raised:
        parse_stream([data])
    assert raised.value.kind is ir.ErrorKind.UPSTREAM


def test_stream_parser_ignores_what_follows_done() -> None:
    parser = StreamParser()
    assert parser.feed(line(message={}, done=True))[-1] == ir.Finish(
        stop_reason=ir.StopReason.END_TURN
    )
    assert parser.feed(b"garbage\n") == [] and parser.close() == []
