"""End to end: the official ``anthropic`` SDK (and Claude Code's captured request) against a
real ``mux serve`` process answering from the fake provider."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import anthropic
import httpx
import pytest

from mux import ir, streams
from mux.formats.anthropic import StreamParser
from mux.framing import SSEDecoder
from tests import strategies as strats

FIXTURE = (
    Path(__file__).resolve().parents[2] / "shared/fixtures/real-clients/claude-code-messages.json"
)

REASONING = "The user wants a considered answer."

CONFIG = f"""
[fake]
models = ["fake*", "claude-*"]

[[fake.rules]]
match = "weather"
reply = "Let me check."
tool-call = {{ name = "get_weather", arguments = {{ city = "Paris", days = 2 }} }}

[[fake.rules]]
match = "rate limit"
status = 429

[[fake.rules]]
match = "overload"
status = 529

[[fake.rules]]
match = "ponder"
reasoning = "{REASONING}"
reply = "Forty-two is the answer."
"""

USER = [{"role": "user", "content": "say something back"}]


@pytest.fixture
def mux(mux_factory):
    return mux_factory(CONFIG)


@pytest.fixture
def client(mux):
    with anthropic.Anthropic(base_url=mux.url, api_key="unused", max_retries=0) as client:
        yield client


def test_create_echoes_the_newest_user_turn(client) -> None:
    message = client.messages.create(
        model="claude-test",
        max_tokens=100,
        system="Be terse.",
        messages=[
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": [{"type": "text", "text": "say something back"}]},
            {"role": "system", "content": "a trailing system message is skipped"},
        ],
    )
    assert (message.type, message.role, message.model) == ("message", "assistant", "claude-test")
    (text,) = message.content
    assert (text.type, text.text) == ("text", "say something back")
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens == len("say something back") // 4 + 1


def test_stop_sequence_is_reported(client) -> None:
    message = client.messages.create(
        model="fake", max_tokens=100, messages=USER, stop_sequences=["thing"]
    )
    assert message.content[0].text == "say some"
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "thing")


def test_stream_helper_accumulates_text_and_usage(client) -> None:
    """message_start says zero input tokens (the IR reports usage last); the message_delta's
    cumulative values replace them in the SDK's final message."""
    with client.messages.stream(
        model="fake-model",
        max_tokens=100,
        messages=[{"role": "user", "content": "one two three four"}],
    ) as stream:
        texts = [event.text for event in stream if event.type == "text"]
        final = stream.get_final_message()
    assert texts == ["one ", "two ", "three ", "four"]
    assert final.content[0].text == "one two three four"
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_stream_helper_with_thinking(client) -> None:
    """A reasoning rule: a thinking block first, its text streamed, its signature (the fake's
    base64 digest) set by signature_delta."""
    with client.messages.stream(
        model="fake-model",
        max_tokens=2000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "ponder this"}],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "thinking" in kinds and "signature" in kinds
    thinking, text = final.content
    assert (thinking.type, thinking.thinking) == ("thinking", REASONING)
    digest = hashlib.sha256(REASONING.encode()).digest()
    assert thinking.signature == base64.b64encode(digest).decode()
    assert text.text == "Forty-two is the answer."
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    # The answer replayed as history (thinking block included) is read back.
    follow_up = client.messages.create(
        model="fake-model",
        max_tokens=100,
        messages=[
            {"role": "user", "content": "ponder this"},
            {"role": "assistant", "content": [block.model_dump() for block in final.content]},
            {"role": "user", "content": "thanks"},
        ],
    )
    assert follow_up.content[0].text == "thanks"


def test_tool_use_from_a_rule(client) -> None:
    tools = [
        {
            "name": "get_weather",
            "description": "Weather.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    message = client.messages.create(
        model="claude-test",
        max_tokens=100,
        tools=tools,
        messages=[{"role": "user", "content": "what is the weather in Paris?"}],
    )
    assert message.stop_reason == "tool_use"
    text, call = message.content
    assert text.text == "Let me check."
    assert (call.type, call.name, call.input) == (
        "tool_use",
        "get_weather",
        {"city": "Paris", "days": 2},
    )

    # Streamed: tool_use starts with input {} and the input_json_deltas build it.
    with client.messages.stream(
        model="claude-test",
        max_tokens=100,
        tools=tools,
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    streamed = final.content[-1]
    assert (streamed.type, streamed.name, streamed.input) == (
        "tool_use",
        "get_weather",
        {"city": "Paris", "days": 2},
    )

    # The tool result is the newest user turn of the next request: it is echoed.
    follow_up = client.messages.create(
        model="claude-test",
        max_tokens=100,
        tools=tools,
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [block.model_dump() for block in final.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": streamed.id, "content": "sunny, 21 C"}
                ],
            },
        ],
    )
    assert follow_up.content[0].text == "sunny, 21 C"


def test_count_tokens(client) -> None:
    small = client.messages.count_tokens(
        model="claude-test", messages=[{"role": "user", "content": "hi"}]
    )
    large = client.messages.count_tokens(
        model="claude-test", system="x" * 400, messages=[{"role": "user", "content": "hi " * 100}]
    )
    assert 0 < small.input_tokens < large.input_tokens


def test_errors_raise_the_sdk_classes(client, mux) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(
            model="fake",
            max_tokens=10,
            messages=[{"role": "user", "content": "hit the rate limit"}],
        )
    assert caught.value.status_code == 429
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    with pytest.raises(anthropic.RateLimitError):
        with client.messages.stream(
            model="fake", max_tokens=10, messages=[{"role": "user", "content": "rate limit please"}]
        ) as stream:
            stream.get_final_message()

    # SDK 2.x has OverloadedError for 529, an InternalServerError subclass.
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        client.messages.create(
            model="fake", max_tokens=10, messages=[{"role": "user", "content": "overloaded?"}]
        )
    assert isinstance(overloaded.value, anthropic.InternalServerError)
    assert overloaded.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": overloaded.value.body["error"]["message"]},
    }

    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="gpt-nope", max_tokens=10, messages=USER)
    assert missing.value.body["error"]["type"] == "not_found_error"
    assert "gpt-nope" in missing.value.message

    with pytest.raises(anthropic.BadRequestError) as bad:
        # omit drops the key; an explicit timeout skips the SDK's max_tokens arithmetic
        client.messages.create(model="fake", max_tokens=anthropic.omit, messages=USER, timeout=30)
    assert bad.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: expected an integer, got nothing",
    }

    for body in (b"{not json", b"[]", b""):
        response = httpx.post(
            mux.url + "/v1/messages", content=body, headers={"anthropic-version": "2023-06-01"}
        )
        assert response.status_code == 400
        assert response.json()["type"] == "error"
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_models_list_and_retrieve(client) -> None:
    """With an anthropic-version header, /v1/models answers in Anthropic's shape (C.4)."""
    listed = list(client.models.list())
    ids = [model.id for model in listed]
    assert "fake" in ids
    assert all(model.type == "model" and model.display_name for model in listed)
    assert client.models.retrieve("claude-test").id == "claude-test"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("gpt-nope")


def test_claude_code_request_streams_back(mux) -> None:
    """Claude Code's captured request, POSTed as it sent it (``?beta=true``, its headers),
    streams back a valid Messages SSE answer that our parser and the SDK's accumulator
    both read."""
    captured = json.loads(FIXTURE.read_text())
    headers = {k: v for k, v in captured["headers"].items() if k != "content-length"}
    response = httpx.post(
        mux.url + captured["path"],
        content=json.dumps(captured["body"]),
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    messages = SSEDecoder().feed(response.content)
    names = [m.event for m in messages]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert all(name == json.loads(m.data)["type"] for name, m in zip(names, messages, strict=True))

    parser = StreamParser()
    events = parser.feed(response.content) + parser.close()
    strats.check_stream(events)
    answer = streams.collect(events)
    assert answer.model == "claude-opus-4-8"
    assert answer.stop_reason is ir.StopReason.END_TURN
    (text,) = answer.content
    assert isinstance(text, ir.Text) and text.text.endswith("say hi")
    assert answer.usage.input_tokens > 1000  # the system prompt and 24 tools

    from anthropic.lib.streaming._messages import accumulate_event

    snapshot = None
    for message in messages:
        snapshot = accumulate_event(
            event=json.loads(message.data), current_snapshot=snapshot, json_bufs={}
        )
    assert snapshot is not None and snapshot.content[0].text == text.text
    assert snapshot.usage.input_tokens == answer.usage.input_tokens
