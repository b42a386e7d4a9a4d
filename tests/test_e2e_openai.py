"""End to end: the official ``openai`` SDK against a real ``mux serve`` process."""

from __future__ import annotations

import json
import subprocess
import sys

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


@pytest.fixture
def mux(mux_factory):
    return mux_factory(CONFIG)


@pytest.fixture
def client(mux):
    with openai.OpenAI(base_url=mux.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_create_echoes_the_newest_user_turn(client) -> None:
    completion = client.chat.completions.create(
        model="fake-model",
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "say something back"},
            {"role": "system", "content": "a trailing system message is skipped"},
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.model == "fake-model"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "say something back"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == len("say something back") // 4 + 1
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_stream_with_usage_arrives_word_by_word(client) -> None:
    stream = client.chat.completions.create(
        model="fake-1",
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) == 4
    assert "".join(deltas) == "one two three four"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert len({c.id for c in chunks}) == 1


def test_stream_helper_accumulates_a_clean_message(client) -> None:
    with client.chat.completions.stream(
        model="fake-model", messages=[{"role": "user", "content": "hello there, gateway"}]
    ) as stream:
        texts = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(texts) == "hello there, gateway"
    assert final.choices[0].message.content == "hello there, gateway"
    # The accumulator concatenates strings: a role sent twice would read "assistantassistant".
    assert final.choices[0].message.role == "assistant"


def test_tool_call_from_a_rule(client) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    completion = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "what is the weather in Paris?"}],
        tools=tools,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 2}
    assert call.id.startswith("call_")

    # The streamed form, through the SDK's accumulator: id and name arrive once.
    with client.chat.completions.stream(
        model="fake-model",
        messages=[{"role": "user", "content": "weather?"}],
        tools=tools,
    ) as stream:
        final = stream.get_final_completion()
    (streamed,) = final.choices[0].message.tool_calls
    assert streamed.function.name == "get_weather"
    assert streamed.id.startswith("call_") and streamed.id.count("call_") == 1
    assert json.loads(streamed.function.arguments) == {"city": "Paris", "days": 2}
    assert final.choices[0].finish_reason == "tool_calls"

    # The tool result is the newest user turn of the next request: it is echoed.
    follow_up = client.chat.completions.create(
        model="fake-model",
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": call.function.arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
        ],
    )
    assert follow_up.choices[0].message.content == "sunny, 21 C"


def test_reasoning_rule(client) -> None:
    completion = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "ponder this"}]
    )
    message = completion.choices[0].message
    assert message.content == "Forty-two is the answer."
    assert message.model_extra["reasoning_content"] == "The user wants a considered answer."
    assert completion.usage.completion_tokens_details.reasoning_tokens > 0


def test_status_rule_raises_rate_limit_error(client) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hit the rate limit"}]
        )
    assert caught.value.status_code == 429
    assert "429" in caught.value.message
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "rate limit please"}],
            stream=True,
        )
    # A scripted failure is the answer to that prompt, not a cooldown of the fake account.
    fine = client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "and now?"}]
    )
    assert fine.choices[0].message.content == "and now?"


def test_models_list_and_retrieve(client) -> None:
    ids = [model.id for model in client.models.list()]
    assert "fake" in ids and "gpt-test" in ids
    assert client.models.retrieve("gpt-test").id == "gpt-test"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("no-such-model")
    assert caught.value.code == "model_not_found"


def test_unknown_model_and_bad_requests_get_openai_errors(client, mux) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="claude-nope", messages=[{"role": "user", "content": "hi"}]
        )
    assert "claude-nope" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="fake-model", messages=[])
    assert "messages" in caught.value.message

    for body in (
        b"{not json",
        b"[]",
        b"",
        b"[" * 100_000,  # nested too deep for the decoder
        b'{"model": "fake", "temperature": NaN, "messages": []}',
        b'{"model": "fake", "messages": [{"role": "wizard"}]}',
    ):
        response = httpx.post(mux.url + "/v1/chat/completions", content=body)
        assert response.status_code == 400
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
        assert "Traceback" not in response.text


def test_curl_like_requests(mux) -> None:
    """The README's curl examples, as raw HTTP."""
    health = httpx.get(mux.url + "/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    answer = httpx.post(
        mux.url + "/v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": "ping"}]},
    )
    assert answer.json()["choices"][0]["message"]["content"] == "ping"
    assert httpx.get(mux.url + "/nope").status_code == 404
    wrong_method = httpx.get(mux.url + "/v1/chat/completions")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"


def test_fake_flag_serves_any_model(mux_factory) -> None:
    mux = mux_factory("", "--fake")
    with openai.OpenAI(base_url=mux.url + "/v1", api_key="x", max_retries=0) as client:
        completion = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "any model works"}]
        )
    assert completion.choices[0].message.content == "any model works"
    assert completion.model == "gpt-4o"


def test_startup_prints_what_a_client_needs(mux) -> None:
    printed = "".join(mux.output)
    assert f"OPENAI_BASE_URL={mux.url}/v1" in printed
    assert f"ANTHROPIC_BASE_URL={mux.url}" in printed
    assert "fake" in printed and "gpt-test" in printed


def test_graceful_exit_on_sigterm(mux) -> None:
    assert mux.stop() == 0


def test_bad_config_stops_startup_naming_the_key(tmp_path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('port = "eighty"\n[fake]\nchunk-mss = 3\n')
    result = subprocess.run(
        [sys.executable, "-m", "mux", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "port: expected an integer" in result.stderr
    assert "fake: unknown key(s) chunk-mss" in result.stderr
    assert "Traceback" not in result.stderr
