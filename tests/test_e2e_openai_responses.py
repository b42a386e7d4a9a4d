"""End to end: the official ``openai`` SDK's Responses and legacy Completions clients against a
real ``mux serve`` process with the fake provider."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

CONFIG = """
[fake]
models = ["fake*", "gpt-test"]

[[fake.rules]]
match = "weather"
reply = "Let me check."
tool-call = { name = "get_weather", arguments = { city = "Paris", days = 2 } }

[[fake.rules]]
match = "rate limit"
status = 429

[[fake.rules]]
match = "ponder"
reasoning = "The user wants a considered answer."
reply = "Forty-two is the answer."
"""

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": False,
    }
]


@pytest.fixture
def mux(mux_factory):
    return mux_factory(CONFIG)


@pytest.fixture
def client(mux):
    with openai.OpenAI(base_url=mux.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_create_echoes_the_input(client) -> None:
    response = client.responses.create(
        model="fake-model", instructions="Be terse.", input="say something back"
    )
    assert response.object == "response" and response.status == "completed"
    assert response.model == "fake-model"
    assert response.output_text == "say something back"
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant"
    assert response.usage is not None
    assert response.usage.output_tokens == len("say something back") // 4 + 1
    assert response.usage.input_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_whole_response_echoes_the_request(client) -> None:
    response = client.responses.create(
        model="fake-model",
        instructions="Be terse.",
        input="hi",
        tool_choice="none",
        temperature=0.5,
    )
    assert (response.instructions, response.tool_choice, response.temperature) == (
        "Be terse.",
        "none",
        0.5,
    )


def test_streamed_response_echoes_the_request(client) -> None:
    with client.responses.stream(
        model="fake-model",
        instructions="Be terse.",
        input="hi",
        tool_choice="none",
        temperature=0.5,
    ) as stream:
        final = stream.get_final_response()
    assert (final.instructions, final.tool_choice, final.temperature) == ("Be terse.", "none", 0.5)


def test_raw_stream_events_in_order(client) -> None:
    events = list(client.responses.create(model="fake-1", input="one two three four", stream=True))
    types = [e.type for e in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "one two three four"
    completed = events[-1].response
    assert completed.output_text == "one two three four"
    assert completed.usage.output_tokens > 0
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1


def test_stream_helper_and_final_response(client) -> None:
    with client.responses.stream(model="fake-model", input="hello there, gateway") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == "hello there, gateway"
    assert final.output_text == "hello there, gateway"
    assert final.status == "completed" and final.usage.total_tokens > 0


def test_function_call_and_its_output(client) -> None:
    response = client.responses.create(
        model="fake-model", input="what is the weather in Paris?", tools=TOOLS
    )
    message, call = response.output
    assert message.type == "message" and response.output_text == "Let me check."
    assert call.type == "function_call" and call.status == "completed"
    assert call.name == "get_weather" and call.call_id.startswith("call_")
    assert json.loads(call.arguments) == {"city": "Paris", "days": 2}

    # The streamed form, through the SDK's accumulator.
    with client.responses.stream(model="fake-model", input="weather?", tools=TOOLS) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    (streamed,) = [item for item in final.output if item.type == "function_call"]
    assert streamed.name == "get_weather"
    assert json.loads(streamed.arguments) == {"city": "Paris", "days": 2}

    # The tool's output is the newest user turn of the next request: the fake echoes it.
    follow_up = client.responses.create(
        model="fake-model",
        input=[
            {"role": "user", "content": "weather?"},
            *[item.model_dump(exclude_none=True) for item in response.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"},
        ],
        tools=TOOLS,
    )
    assert follow_up.output_text == "sunny, 21 C"


def test_reasoning_item(client) -> None:
    response = client.responses.create(
        model="fake-model", input="ponder this", reasoning={"summary": "auto"}
    )
    reasoning, message = response.output
    assert (reasoning.type, message.type) == ("reasoning", "message")
    assert [s.text for s in reasoning.summary] == ["The user wants a considered answer."]
    assert response.output_text == "Forty-two is the answer."
    assert response.usage.output_tokens_details.reasoning_tokens > 0

    with client.responses.stream(model="fake-model", input="ponder this") as stream:
        summary = [e.delta for e in stream if e.type == "response.reasoning_summary_text.delta"]
        final = stream.get_final_response()
    assert "".join(summary) == "The user wants a considered answer."
    assert final.output[0].summary[0].text == "The user wants a considered answer."


def test_codex_like_request_is_accepted(client, mux) -> None:
    """Hosted tools, item ids, store false and encrypted-content includes, as Codex sends."""
    answer = httpx.post(
        mux.url + "/v1/responses",
        json={
            "model": "gpt-test",
            "instructions": "You are Codex.",
            "input": [
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "developer",
                    "content": [{"type": "input_text", "text": "rules"}],
                },
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "say hi"}],
                },
            ],
            "tools": [*TOOLS, {"type": "web_search", "external_web_access": False}],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
            "reasoning": {"summary": "auto"},
            "store": False,
            "stream": True,
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "k",
        },
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.text.startswith("event: response.created\n")
    assert "[DONE]" not in answer.text


def test_errors_raise_the_sdk_classes(client) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model="fake-model", input="hit the rate limit")
    assert caught.value.status_code == 429
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="fake-model", input="rate limit please", stream=True)
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="claude-nope", input="hi")
    assert "claude-nope" in missing.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="fake-model", input=[{"role": "wizard", "content": "x"}])
    assert "input[0].role" in bad.value.message


def test_completions_create(client) -> None:
    completion = client.completions.create(model="fake-model", prompt="complete this")
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "complete this"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens > 0
    # max_tokens defaults to 16, as in the API: the fake cuts the reply there.
    long = client.completions.create(model="fake-model", prompt="word " * 40)
    assert long.choices[0].finish_reason == "length"
    assert len(long.choices[0].text) == 16 * 4


def test_completions_stream(client) -> None:
    chunks = list(
        client.completions.create(
            model="fake-model",
            prompt="one two three",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_completions_errors(client) -> None:
    with pytest.raises(openai.RateLimitError):
        client.completions.create(model="fake-model", prompt="rate limit")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope-model", prompt="hi")
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="fake-model", prompt=["a", "b"])
    assert "prompt" in bad.value.message
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="fake-model", prompt=[1, 2, 3])
