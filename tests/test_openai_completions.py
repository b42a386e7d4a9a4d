"""mux.formats.openai_completions: round trips against the projection, validation, the SDK.

The properties check ``parse(render(x)) == projection(x)`` for generated requests, responses
and streams (the stream's bytes split at random places); the SDK tests drive the real
``openai`` client's ``completions`` over a mock transport; the tables check validation
messages and real upstream chunks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import httpx2
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mux import ir
from mux.errors import MuxError, RequestError, UpstreamError
from mux.formats import openai_chat
from mux.formats import openai_completions as completions
from mux.formats.openai_completions import StreamParser, StreamRenderer
from mux.framing import SSEDecoder, dumps
from tests import strategies as strats
from tests.strategies import feed, splits, wire
from tests.projections import openai_completions as projection

fast = settings(deadline=None)  # examples: the profile's (conftest)


def render_stream(events: Sequence[ir.Event], request: ir.Request) -> bytes:
    renderer = StreamRenderer(request)
    return b"".join(renderer.render(e) for e in events)


def parse_stream(pieces: Sequence[bytes]) -> list[ir.Event]:
    return feed(StreamParser(), pieces)


def stream_request(include_usage: bool) -> ir.Request:
    return ir.Request(model="m", stream=True, stream_usage=include_usage)


# --------------------------------------------------------------------------------------------
# Round trips


@fast
@given(strats.requests())
def test_request_round_trip(request: ir.Request) -> None:
    """parse_request(render_request(r)) is the Completions projection of r."""
    parsed = completions.parse_request(wire(completions.render_request(request)))
    assert parsed == projection.request(request)


@fast
@given(strats.requests())
def test_request_render_is_stable(request: ir.Request) -> None:
    once = projection.request(request)
    assert projection.request(once) == once
    assert completions.parse_request(wire(completions.render_request(once))) == once


@fast
@given(strats.responses())
def test_response_round_trip(response: ir.Response) -> None:
    parsed = completions.parse_response(wire(completions.render_response(response)))
    if response.created is None:
        assert isinstance(parsed.created, int)
        parsed = attrs.evolve(parsed, created=None)
    assert parsed == projection.response(response)


@fast
@given(strats.event_streams(), st.booleans(), st.data())
def test_stream_round_trip(
    events: list[ir.Event], include_usage: bool, data: st.DataObject
) -> None:
    """Rendered, split anywhere and parsed, a stream is its Completions projection."""
    request = stream_request(include_usage)
    pieces = data.draw(splits(render_stream(events, request)))
    parsed = parse_stream(pieces)
    start, original = parsed[0], events[0]
    if isinstance(start, ir.StreamStart) and getattr(original, "created", 0) is None:
        parsed[0] = attrs.evolve(start, created=None)  # the renderer took the clock's
    expected = projection.events(events, request)
    strats.check_stream(parsed)
    assert parsed == expected


# --------------------------------------------------------------------------------------------
# The wire shape and the SDK


def chunks_of(data: bytes) -> list[dict[str, Any]]:
    """The chunks of a rendered stream: ``data:`` lines only, ``[DONE]`` last."""
    messages = SSEDecoder().feed(data)
    assert all(m.event is None for m in messages), "Completions streams never name events"
    assert messages[-1].data == "[DONE]"
    return [json.loads(m.data) for m in messages[:-1]]


@fast
@given(strats.event_streams(errors=False), st.booleans())
def test_stream_chunks_have_the_response_shape(events: list[ir.Event], include_usage: bool) -> None:
    """Every chunk is a ``text_completion`` with the same id; text concatenates to the
    answer's; usage is null until the closing usage chunk when asked for, absent otherwise."""
    chunks = chunks_of(render_stream(events, stream_request(include_usage)))
    assert all(c["object"] == "text_completion" for c in chunks)
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1
    texts = [choice["text"] for c in chunks for choice in c["choices"]]
    assert "".join(texts) == "".join(e.text for e in events if isinstance(e, ir.TextDelta))
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert len(finishes) == 1
    if include_usage:
        assert all(c["usage"] is None for c in chunks[:-1])
        assert chunks[-1]["choices"] == [] and "total_tokens" in chunks[-1]["usage"]
    else:
        assert all("usage" not in c for c in chunks)


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
    id="cmpl-1",
    model="gpt-3.5-turbo-instruct",
    content=[ir.Reasoning(text="hidden"), ir.Text(text="Paris.")],
    stop_reason=ir.StopReason.MAX_TOKENS,
    usage=ir.Usage(input_tokens=5, output_tokens=2),
    created=1741569952,
)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream(body=dumps(completions.render_response(RESPONSE)))


@pytest.fixture
def client(upstream: Upstream) -> Iterator[openai.OpenAI]:
    http = httpx2.Client(transport=httpx2.MockTransport(upstream))
    with openai.OpenAI(
        api_key="k", base_url="http://mux.test/v1", http_client=http, max_retries=0
    ) as client:
        yield client


def test_sdk_reads_a_rendered_completion(client: openai.OpenAI, upstream: Upstream) -> None:
    """The SDK's Completion model reads render_response's body; what it sends parses, the
    integer logprobs and echo in Extra."""
    completion = client.completions.create(
        model="gpt-3.5-turbo-instruct",
        prompt="The capital of France is",
        max_tokens=5,
        logprobs=2,
        echo=False,
        suffix="!",
        best_of=1,
        stop=["\n"],
        temperature=0,
    )
    assert completion.object == "text_completion" and completion.id == "cmpl-1"
    choice = completion.choices[0]
    assert (choice.text, choice.finish_reason, choice.index, choice.logprobs) == (
        "Paris.",
        "length",
        0,
        None,
    )
    assert completion.usage is not None and completion.usage.total_tokens == 7
    request = completions.parse_request(upstream.requests[-1])
    assert request == ir.Request(
        model="gpt-3.5-turbo-instruct",
        messages=[
            ir.Message(role=ir.Role.USER, content=[ir.Text(text="The capital of France is")])
        ],
        max_tokens=5,
        temperature=0,
        stop=["\n"],
        extra=ir.Extra(
            format="openai_completions",
            fields={"logprobs": 2, "echo": False, "suffix": "!", "best_of": 1},
        ),
    )
    assert completions.render_request(request) == upstream.requests[-1]


def test_sdk_streams_with_usage(client: openai.OpenAI, upstream: Upstream) -> None:
    events = [
        ir.StreamStart(id="cmpl-2", model="m", created=5),
        ir.TextDelta(index=0, text="Par"),
        ir.TextDelta(index=0, text="is."),
        ir.PartEnd(index=0),
        ir.UsageUpdate(usage=ir.Usage(input_tokens=3, output_tokens=2)),
        ir.Finish(stop_reason=ir.StopReason.END_TURN),
    ]
    upstream.body = render_stream(events, stream_request(True))
    upstream.content_type = "text/event-stream"
    chunks = list(
        client.completions.create(
            model="m", prompt="x", stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Paris."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5


def test_sdk_raises_a_mid_stream_error(client: openai.OpenAI, upstream: Upstream) -> None:
    events = [
        ir.StreamStart(id="c", model="m", created=1),
        ir.TextDelta(index=0, text="x"),
        ir.StreamError(kind=ir.ErrorKind.OVERLOADED, message="busy", status=529),
    ]
    upstream.body = render_stream(events, stream_request(False))
    upstream.content_type = "text/event-stream"
    with pytest.raises(openai.APIError, match="busy"):
        list(client.completions.create(model="m", prompt="x", stream=True))


def test_render_error_is_chats() -> None:
    """The same envelope as Chat, from Chat's own function."""
    assert completions.render_error is openai_chat.render_error
    assert completions.parse_error is openai_chat.parse_error
    error = MuxError(ir.ErrorKind.RATE_LIMIT, "slow")
    assert set(completions.render_error(error)["error"]) == {"message", "type", "param", "code"}


# --------------------------------------------------------------------------------------------
# Requests


def test_defaults_and_leniencies() -> None:
    """max_tokens defaults to 16 as in the API; an array of one prompt is that prompt; a
    stop string is one stop sequence."""
    request = completions.parse_request({"model": "m", "prompt": ["only"], "stop": "END"})
    assert request.max_tokens == 16
    assert request.messages == (ir.Message(role=ir.Role.USER, content=[ir.Text(text="only")]),)
    assert request.stop == ("END",)
    assert (
        completions.parse_request({"model": "m", "prompt": "x", "max_tokens": None}).max_tokens
        == 16
    )


def test_render_request_joins_a_conversation_into_a_prompt() -> None:
    """Every message's text, tool results included, a blank line between messages; what
    is not text is left out."""
    request = ir.Request(
        model="m",
        messages=[
            ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text="Be brief.")]),
            ir.Message(role=ir.Role.USER, content=[ir.Text(text="Hi"), ir.Image(url="https://x")]),
            ir.Message(
                role=ir.Role.ASSISTANT,
                content=[ir.Reasoning(text="hm"), ir.ToolCall(id="c", name="f")],
            ),
            ir.Message(
                role=ir.Role.TOOL,
                content=[ir.ToolResult(call_id="c", content=[ir.Text(text="42")])],
            ),
        ],
        tools=[ir.Tool(name="f")],
        stream=True,
        stream_usage=True,
    )
    assert completions.render_request(request) == {
        "model": "m",
        "prompt": "Be brief.\n\nHi\n\n42",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


BASE: dict[str, Any] = {"model": "m", "prompt": "hi"}

INVALID: list[tuple[object, str | None, str]] = [
    ([], None, "request body: expected an object, got an array"),
    ({"prompt": "x"}, "model", "model: expected a string, got nothing"),
    (BASE | {"model": ""}, "model", "model: expected a model name, got an empty string"),
    ({"model": "m"}, "prompt", "prompt: expected a string or an array of one string"),
    (
        BASE | {"prompt": ["a", "b"]},
        "prompt",
        (
            "prompt: expected a string or an array of one string (mux answers one prompt per "
            "request), got an array of 2 strings"
        ),
    ),
    (
        BASE | {"prompt": [1, 2, 3]},
        "prompt",
        "(token-id prompts are not supported), got an array",
    ),
    (BASE | {"prompt": [[1, 2]]}, "prompt", "token-id prompts are not supported"),
    (BASE | {"prompt": []}, "prompt", "got an array"),
    (BASE | {"logprobs": True}, "logprobs", "logprobs: expected an integer, got a boolean"),
    (BASE | {"max_tokens": -1}, "max_tokens", "expected an integer of at least 0, got -1"),
    (BASE | {"n": 0}, "n", "n: expected an integer of at least 1, got 0"),
    (BASE | {"stop": 5}, "stop", "stop: expected a string or an array of strings, got a number"),
    (BASE | {"temperature": "hot"}, "temperature", "expected a number, got a string"),
    (
        BASE | {"stream_options": {"include_usage": True}},
        "stream_options",
        "stream_options: only allowed when stream is true",
    ),
    (BASE | {"suffix": float("nan")}, "suffix", "suffix: expected JSON without NaN or Infinity"),
]


@pytest.mark.parametrize(("body", "param", "message"), INVALID)
def test_invalid_requests_name_the_field(body: object, param: str | None, message: str) -> None:
    with pytest.raises(RequestError) as raised:
        completions.parse_request(body)
    assert raised.value.param == param
    assert message in raised.value.message


# --------------------------------------------------------------------------------------------
# Upstream answers


def test_parse_response_reads_the_api_shape() -> None:
    body = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 3,
        "model": "m",
        "system_fingerprint": "fp",
        "choices": [
            {"text": "Hi", "index": 0, "logprobs": None, "finish_reason": "content_filter"},
            {"text": "other", "index": 1, "logprobs": None, "finish_reason": "stop"},
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5},
    }
    assert completions.parse_response(body) == ir.Response(
        id="cmpl-1",
        model="m",
        content=[ir.Text(text="Hi")],
        stop_reason=ir.StopReason.CONTENT_FILTER,
        usage=ir.Usage(input_tokens=4, output_tokens=1),
        created=3,
        extra=ir.Extra(format="openai_completions", fields={"system_fingerprint": "fp"}),
    )


@pytest.mark.parametrize(
    "body", [[], {"choices": {}}, {"choices": [{"text": 3}]}, {"choices": [], "created": "x"}]
)
def test_malformed_responses_are_upstream_errors(body: object) -> None:
    with pytest.raises(UpstreamError):
        completions.parse_response(body)


def chunk(text: str | None = None, finish: str | None = None, **fields: Any) -> bytes:
    choices = [] if text is None else [{"text": text, "index": 0, "finish_reason": finish}]
    body = {"id": "c1", "object": "text_completion", "created": 1, "model": "m", "choices": choices}
    return b"data: " + dumps(body | fields) + b"\n\n"


START = ir.StreamStart(id="c1", model="m", created=1)

STREAM_CASES: list[tuple[str, bytes, list[ir.Event]]] = [
    (
        "text, a finish, OpenAI's usage chunk",
        chunk("Hel")
        + chunk("lo")
        + chunk("", "length")
        + chunk(usage={"prompt_tokens": 2, "completion_tokens": 2})
        + b"data: [DONE]\n\n",
        [
            START,
            ir.TextDelta(index=0, text="Hel"),
            ir.TextDelta(index=0, text="lo"),
            ir.PartEnd(index=0),
            ir.UsageUpdate(usage=ir.Usage(input_tokens=2, output_tokens=2)),
            ir.Finish(stop_reason=ir.StopReason.MAX_TOKENS),
        ],
    ),
    (
        "vLLM: the finish on the last text chunk, no [DONE]",
        chunk("x", "stop"),
        [
            START,
            ir.TextDelta(index=0, text="x"),
            ir.PartEnd(index=0),
            ir.Finish(stop_reason=ir.StopReason.END_TURN),
        ],
    ),
    (
        "an error chunk",
        chunk("x") + b'data: {"error":{"message":"later","code":429}}\n\n',
        [
            START,
            ir.TextDelta(index=0, text="x"),
            ir.StreamError(kind=ir.ErrorKind.RATE_LIMIT, message="later", status=429),
        ],
    ),
    (
        "a stream that breaks off",
        chunk("x"),
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
        b"data: {x\n\n",
        b"data: 3\n\n",
        chunk(usage={"prompt_tokens": -1}),
        b'data: {"choices":[{"text":1}]}\n\n',
    ],
)
def test_stream_parser_rejects_malformed_streams(data: bytes) -> None:
    with pytest.raises(UpstreamError):
        parse_stream([data])
