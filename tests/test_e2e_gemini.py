"""End to end: the official ``google-genai`` SDK against a real ``mux serve`` process.

google-genai 3.x calls ``/v1`` by default (``GOOGLE_AI_API_DEFAULT_VERSION``); the tests run
against both that and ``api_version="v1beta"``, the path Gemini CLI and older SDKs use.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from google import genai
from google.genai import errors, types

from tests.conftest import start_mux

CONFIG = """
[fake]
models = ["fake*", "gemini-test"]

[[fake.rules]]
match = "weather"
reply = "Let me check."
tool-call = { name = "get_weather", arguments = { city = "Paris", days = 2 } }

[[fake.rules]]
match = "rate limit"
status = 429

[[fake.rules]]
match = "server error"
status = 500

[[fake.rules]]
match = "ponder"
reasoning = "The user wants a considered answer."
reply = "Forty-two is the answer."
"""


@pytest.fixture(scope="module")
def mux(tmp_path_factory: pytest.TempPathFactory):
    """One server for the module (the tests only read from it): starting one per test, as
    ``mux_factory`` does, would cost a process start each."""
    process = start_mux(CONFIG, tmp_path_factory.mktemp("mux"))
    yield process
    process.stop()


@pytest.fixture(params=[None, "v1beta"], ids=["default-v1", "v1beta"])
def client(mux, request: pytest.FixtureRequest) -> genai.Client:
    options = types.HttpOptions(base_url=mux.url, api_version=request.param)
    return genai.Client(api_key="x", http_options=options)


def test_generate_content_echoes_the_newest_user_turn(client: genai.Client) -> None:
    response = client.models.generate_content(
        model="fake-model",
        contents=[
            types.Content(role="user", parts=[types.Part(text="first question")]),
            types.Content(role="model", parts=[types.Part(text="first answer")]),
            types.Content(role="user", parts=[types.Part(text="say something back")]),
        ],
        config=types.GenerateContentConfig(system_instruction="Be terse.", temperature=0.2),
    )
    assert response.text == "say something back"
    assert response.model_version == "fake-model"
    assert response.response_id
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert usage.candidates_token_count == len("say something back") // 4 + 1
    assert usage.prompt_token_count > 0
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count


def test_stream_arrives_in_several_chunks(client: genai.Client) -> None:
    chunks = list(
        client.models.generate_content_stream(model="fake-1", contents="one two three four")
    )
    texts = [c.text for c in chunks if c.text]
    assert len(texts) == 4
    assert "".join(texts) == "one two three four"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count > 0
    assert len({c.response_id for c in chunks}) == 1


WEATHER_TOOL = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="The weather in a city.",
            parameters_json_schema={
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        )
    ]
)


def test_function_call_from_a_rule(client: genai.Client) -> None:
    """The SDK's ``response.function_calls``, then the function's answer sent back (the fake
    echoes the newest tool result)."""
    config = types.GenerateContentConfig(
        tools=[WEATHER_TOOL],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    question = types.Content(role="user", parts=[types.Part(text="what is the weather in Paris?")])
    response = client.models.generate_content(
        model="fake-model", contents=[question], config=config
    )
    (call,) = response.function_calls
    assert (call.name, call.args) == ("get_weather", {"city": "Paris", "days": 2})
    assert call.id and response.text == "Let me check."
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    answer = types.Part.from_function_response(
        name="get_weather", response={"output": "sunny, 21C"}
    )
    follow_up = client.models.generate_content(
        model="fake-model",
        contents=[
            question,
            response.candidates[0].content,
            types.Content(role="user", parts=[answer]),
        ],
        config=config,
    )
    assert follow_up.text == "sunny, 21C"


def test_streamed_function_call_arrives_whole(client: genai.Client) -> None:
    chunks = list(
        client.models.generate_content_stream(
            model="fake-model",
            contents="weather in Paris?",
            config=types.GenerateContentConfig(tools=[WEATHER_TOOL]),
        )
    )
    calls = [call for chunk in chunks for call in chunk.function_calls or ()]
    assert [(c.name, c.args) for c in calls] == [("get_weather", {"city": "Paris", "days": 2})]
    assert "".join(c.text or "" for c in chunks) == "Let me check."


def test_thinking_rule_gives_signed_thought_parts(client: genai.Client) -> None:
    """Thought parts with a thoughtSignature the SDK decodes as base64 bytes."""
    config = types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=1024)
    )
    response = client.models.generate_content(
        model="fake-model", contents="ponder this", config=config
    )
    parts = response.candidates[0].content.parts
    thoughts = [p for p in parts if p.thought]
    assert [p.text for p in thoughts] == ["The user wants a considered answer."]
    signature = thoughts[0].thought_signature
    assert isinstance(signature, bytes) and len(signature) == 32  # the fake's sha256
    assert response.text == "Forty-two is the answer."
    assert response.usage_metadata.thoughts_token_count > 0
    streamed = list(
        client.models.generate_content_stream(model="fake-model", contents="ponder", config=config)
    )
    contents = [c.candidates[0].content for c in streamed if c.candidates[0].content]
    stream_parts = [p for content in contents for p in content.parts or ()]
    signed = [p for p in stream_parts if p.thought_signature]
    assert [p.thought_signature for p in signed] == [thoughts[0].thought_signature]
    assert "".join(p.text for p in stream_parts if p.thought) == thoughts[0].text


def test_count_tokens(client: genai.Client) -> None:
    counted = client.models.count_tokens(model="fake-model", contents="hello there, count me")
    assert counted.total_tokens == len("hello there, count me") // 4 + 1


def test_models_list_and_get(client: genai.Client) -> None:
    listed = list(client.models.list())
    names = [m.name for m in listed]
    assert "models/fake" in names and "models/gemini-test" in names
    assert all("generateContent" in (m.supported_actions or ()) for m in listed)
    model = client.models.get(model="gemini-test")
    assert (model.name, model.display_name) == ("models/gemini-test", "gemini-test")
    assert model.input_token_limit and model.output_token_limit


def test_errors_raise_the_sdk_classes(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as raised:
        client.models.generate_content(model="fake-model", contents="hit the rate limit")
    assert raised.value.code == 429 and raised.value.status == "RESOURCE_EXHAUSTED"
    with pytest.raises(errors.ServerError) as raised_server:
        client.models.generate_content(model="fake-model", contents="a server error please")
    assert raised_server.value.code == 500
    with pytest.raises(errors.ServerError):
        list(client.models.generate_content_stream(model="fake-model", contents="server error"))
    with pytest.raises(errors.ClientError) as missing:
        client.models.generate_content(model="no-such-model", contents="x")
    assert missing.value.code == 404 and missing.value.status == "NOT_FOUND"


def test_invalid_request_names_the_field(mux) -> None:
    response = httpx.post(
        f"{mux.url}/v1beta/models/fake-model:generateContent",
        headers={"x-goog-api-key": "x"},
        json={"contents": [{"role": "user", "parts": [{"text": 3}]}]},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["code"] == 400
    assert error["message"].startswith("contents[0].parts[0].text: expected a string")


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_stream_without_alt_sse_is_a_json_array(mux, version: str) -> None:
    """``:streamGenerateContent`` without ``alt=sse``: one JSON array of chunks, the key in
    the query string."""
    response = httpx.post(
        f"{mux.url}/{version}/models/fake-model:streamGenerateContent",
        params={"key": "x"},
        json={"contents": [{"parts": [{"text": "alpha beta gamma"}]}]},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    chunks = json.loads(response.content)
    assert isinstance(chunks, list) and len(chunks) == 4
    contents = [c["candidates"][0].get("content", {}) for c in chunks]
    texts = [part["text"] for content in contents for part in content.get("parts", [])]
    assert "".join(texts) == "alpha beta gamma"
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["totalTokenCount"] > 0


def test_sse_stream_has_only_data_lines(mux) -> None:
    """protocols.md 0: google-genai fails on any line but ``data: ``: no event names, no
    comments, no terminator."""
    response = httpx.post(
        f"{mux.url}/v1beta/models/fake-model:streamGenerateContent?alt=sse",
        headers={"x-goog-api-key": "x"},
        json={"contents": [{"parts": [{"text": "ponder this"}]}]},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.split("\r\n") if line]
    assert lines and all(line.startswith("data: {") for line in lines)
    signatures = [
        p["thoughtSignature"]
        for line in lines
        for c in json.loads(line[6:]).get("candidates", [])
        for p in c.get("content", {}).get("parts", [])
        if "thoughtSignature" in p
    ]
    assert len(signatures) == 1 and len(base64.b64decode(signatures[0], validate=True)) == 32
