"""End to end: the official ``ollama`` SDK against a real mux.

Most tests run ``mux serve`` as a process (the ``mux_factory`` fixture) with the fake
provider's scripted rules. The mid-stream error needs an upstream that fails inside a 200
stream: that test runs mux in-process over a loopback fake Ollama server
(``tests/upstreams.py``), as tests/test_e2e_routing.py does, with the SDK in a worker thread.
"""

from __future__ import annotations

import datetime
import json
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import httpx
import ollama
import pytest
import trio

CONFIG = """
[fake]
models = ["fake*", "llama3.2"]

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
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture
def mux(mux_factory: Any) -> Any:
    return mux_factory(CONFIG)


@pytest.fixture
def client(mux: Any) -> Iterator[ollama.Client]:
    with ollama.Client(host=mux.url) as client:
        yield client


def rfc3339(value: str | None) -> datetime.datetime:
    assert value is not None
    moment = datetime.datetime.fromisoformat(value)
    assert moment.tzinfo is not None
    return moment


def test_chat_echoes_the_newest_user_turn(client: ollama.Client) -> None:
    answer = client.chat(
        model="fake-model",
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "say something back"},
        ],
    )
    assert (answer.message.role, answer.message.content) == ("assistant", "say something back")
    assert (answer.done, answer.done_reason, answer.model) == (True, "stop", "fake-model")
    assert answer.eval_count == len("say something back") // 4 + 1
    assert answer.prompt_eval_count is not None and answer.prompt_eval_count > 0
    assert rfc3339(answer.created_at).year >= 2024


def test_chat_stream_arrives_word_by_word(client: ollama.Client) -> None:
    chunks = list(
        client.chat(
            model="llama3.2",
            messages=[{"role": "user", "content": "one two three four"}],
            stream=True,
        )
    )
    deltas = [c.message.content for c in chunks if c.message.content]
    assert deltas == ["one ", "two ", "three ", "four"]
    assert [c.done for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].done_reason == "stop" and chunks[-1].eval_count
    assert {c.message.role for c in chunks} == {"assistant"}
    assert len({c.created_at for c in chunks}) == 1


def test_stream_is_the_default_and_is_ndjson(mux: Any) -> None:
    """A body without ``stream`` streams (Ollama's default), as NDJSON without blank lines,
    under both /api and /ollama/api."""
    for prefix in ("/api", "/ollama/api"):
        with httpx.stream(
            "POST",
            mux.url + prefix + "/chat",
            json={"model": "fake", "messages": [{"role": "user", "content": "a b c"}]},
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/x-ndjson")
            body = response.read()
        lines = body.split(b"\n")
        assert lines[-1] == b"" and all(lines[:-1])
        assert [json.loads(line)["done"] for line in lines[:-1]][-1] is True


def test_max_tokens_is_length(client: ollama.Client) -> None:
    answer = client.chat(
        model="fake",
        messages=[{"role": "user", "content": "a rather long reply that gets cut short"}],
        options={"num_predict": 2},
    )
    assert answer.done_reason == "length"
    assert answer.message.content == "a rather"


def test_tool_call_from_a_rule(client: ollama.Client) -> None:
    answer = client.chat(
        model="fake-model",
        messages=[{"role": "user", "content": "what is the weather in Paris?"}],
        tools=TOOLS,
    )
    assert answer.message.content == "Let me check."
    (call,) = answer.message.tool_calls or ()
    assert call.function.name == "get_weather"
    assert call.function.arguments == {"city": "Paris", "days": 2}  # an object, not text
    assert answer.done_reason == "stop"  # Ollama has no tool-call reason (F.2)

    # Streamed, the call arrives whole in one chunk.
    chunks = list(
        client.chat(
            model="fake-model",
            messages=[{"role": "user", "content": "weather?"}],
            tools=TOOLS,
            stream=True,
        )
    )
    calls = [(i, call) for i, c in enumerate(chunks) for call in c.message.tool_calls or ()]
    assert len(calls) == 1
    assert calls[0][1].function.arguments == {"city": "Paris", "days": 2}
    assert chunks[-1].done and chunks[-1].done_reason == "stop"

    # The tool result, linked by tool_name alone (the SDK sends no ids), is the newest
    # user turn of the next request: it is echoed.
    follow_up = client.chat(
        model="fake-model",
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": "sunny, 21 C", "tool_name": "get_weather"},
        ],
        tools=TOOLS,
    )
    assert follow_up.message.content == "sunny, 21 C"


def test_thinking_rule(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "ponder this"}]
    answer = client.chat(model="fake-model", messages=messages, think=True)
    assert answer.message.thinking == "The user wants a considered answer."
    assert answer.message.content == "Forty-two is the answer."
    chunks = list(client.chat(model="fake-model", messages=messages, think=True, stream=True))
    thinking = [i for i, c in enumerate(chunks) if c.message.thinking]
    content = [i for i, c in enumerate(chunks) if c.message.content]
    assert thinking and content and max(thinking) < min(content), "thinking comes first"
    assert "".join(c.message.thinking or "" for c in chunks) == answer.message.thinking


def test_generate_whole_and_streamed(client: ollama.Client) -> None:
    answer = client.generate(model="fake", prompt="one two three", system="Be terse.")
    assert (answer.response, answer.done, answer.done_reason) == ("one two three", True, "stop")
    assert answer.eval_count and answer.prompt_eval_count
    chunks = list(client.generate(model="fake", prompt="one two three", stream=True))
    assert [c.response for c in chunks if c.response] == ["one ", "two ", "three"]
    assert chunks[-1].done and not any(c.done for c in chunks[:-1])
    thought = client.generate(model="fake", prompt="ponder", think=True)
    assert (thought.thinking, thought.response) == (
        "The user wants a considered answer.",
        "Forty-two is the answer.",
    )


def test_loading_a_model_is_answered_at_once(client: ollama.Client, mux: Any) -> None:
    """``ollama run`` warms a model up with an empty chat (or a generate without a prompt)
    and unloads it with ``keep_alive: 0``: answered ``done_reason`` load / unload without a
    generation, after checking that the model exists."""
    chat = client.chat(model="llama3.2", messages=[])
    assert (chat.done, chat.done_reason, chat.message.content) == (True, "load", "")
    assert (chat.model, chat.message.role) == ("llama3.2", "assistant")
    generate = client.generate(model="llama3.2")
    assert (generate.done, generate.done_reason, generate.response) == (True, "load", "")
    unload = client.generate(model="llama3.2", keep_alive=0)
    assert unload.done_reason == "unload"
    streamed = list(client.chat(model="llama3.2", messages=[], stream=True))
    assert [part.done_reason for part in streamed] == ["load"]
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="no-such-model", messages=[])
    assert caught.value.status_code == 404 and "no-such-model" in caught.value.error


def test_list_show_ps_and_version(client: ollama.Client, mux: Any) -> None:
    listed = client.list()
    names = [m.model for m in listed.models]
    assert "fake" in names and "llama3.2" in names
    assert all(m.modified_at is not None and m.details is not None for m in listed.models)
    shown = client.show("llama3.2")
    assert shown.modelinfo is not None and "general.architecture" in shown.modelinfo
    assert shown.capabilities is not None and "tools" in shown.capabilities
    assert client.show("fake-anything").modelfile  # served though not listed
    running = client.ps()
    assert {m.model for m in running.models} == set(names)
    version = httpx.get(mux.url + "/api/version").json()["version"]
    assert version == httpx.get(mux.url + "/ollama/api/version").json()["version"]
    assert [int(n) for n in version.split(".")] >= [0, 12, 0]


def test_errors_are_response_errors_with_status(client: ollama.Client, mux: Any) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.show("no-such-model")
    assert caught.value.status_code == 404
    assert caught.value.error == "model 'no-such-model' not found"
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="claude-nope", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404 and "claude-nope" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="fake", messages=[{"role": "user", "content": "hit the rate limit"}])
    assert caught.value.status_code == 429
    with pytest.raises(ollama.ResponseError) as caught:
        for _ in client.generate(model="fake", prompt="rate limit please", stream=True):
            pass
    assert caught.value.status_code == 429
    for body in (b"{not json", b"[]", b'{"model": "fake", "messages": [{"role": "wizard"}]}'):
        response = httpx.post(mux.url + "/api/chat", content=body)
        assert response.status_code == 400
        assert set(response.json()) == {"error"} and "Traceback" not in response.text
    wrong = httpx.post(mux.url + "/api/chat", json={"model": "fake", "options": {"top_k": "x"}})
    assert wrong.json() == {"error": "options.top_k: expected an integer, got a string"}
    assert httpx.get(mux.url + "/api/nope").json().keys() == {"error"}


# --------------------------------------------------------------------------------------------
# Through an Ollama upstream, in-process

T = TypeVar("T")


@pytest.fixture
def upstreams() -> Any:
    """The loopback fake upstreams."""
    from tests import upstreams

    return upstreams


@pytest.fixture
async def upstream_clients(upstreams: Any) -> AsyncIterator[Any]:
    from mux.upstream import Upstreams

    async with Upstreams(trust_env=False) as clients:
        yield clients


async def start_mux(nursery: trio.Nursery, upstream_clients: Any, config_text: str) -> str:
    """mux in ``nursery`` from a TOML config; its URL."""
    from mux.config import parse_config
    from mux.providers import api
    from mux.router import Router
    from mux.routes import Gateway
    from mux.server import Limits, Server

    config = parse_config(tomllib.loads(config_text))
    router = Router(api.providers_from_config(config, upstream_clients), config.routing)
    server = Server(Gateway(providers=[router]).handle, limits=Limits(graceful_timeout=0.5))
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    return f"http://127.0.0.1:{port}"


async def in_thread(function: Callable[[], T]) -> T:
    with trio.fail_after(20):
        return await trio.to_thread.run_sync(function)


def ollama_entry(upstream: Any) -> str:
    return (
        f'[[providers]]\nname = "local"\ntype = "ollama"\nbase-url = "{upstream.base_url}"\n'
        'models = ["model-a"]\nfirst-byte-timeout = 5.0\nstream-timeout = 5.0\n'
    )


async def test_a_mid_stream_error_raises_response_error(
    nursery: trio.Nursery, upstreams: Any, upstream_clients: Any
) -> None:
    """An upstream failing inside its 200 stream reaches the client as the final
    ``{"error": ...}`` line, which the SDK raises."""
    up = await upstreams.start(nursery, "ollama", keys=())
    up.push(upstreams.Answer(error_after=1, error_message="overloaded midway"))
    url = await start_mux(nursery, upstream_clients, ollama_entry(up))
    received: list[str] = []

    def stream() -> None:
        with ollama.Client(host=url) as client:
            for chunk in client.chat(
                model="model-a", messages=[{"role": "user", "content": "hi"}], stream=True
            ):
                received.append(chunk.message.content or "")

    with pytest.raises(ollama.ResponseError, match="overloaded midway"):
        await in_thread(stream)
    assert "".join(received) and "".join(received) != "Hello from upstream"


async def test_an_ollama_upstream_tool_call_round_trips(
    nursery: trio.Nursery, upstreams: Any, upstream_clients: Any
) -> None:
    """Ollama client, Ollama upstream: the call and its object arguments come back whole,
    streamed or not."""
    up = await upstreams.start(nursery, "ollama", keys=())
    tool = ("get_weather", {"city": "Tokyo"})
    up.push(upstreams.Answer(tool=tool), upstreams.Answer(tool=tool))
    url = await start_mux(nursery, upstream_clients, ollama_entry(up))

    def ask() -> tuple[Any, list[Any]]:
        messages = [{"role": "user", "content": "weather?"}]
        with ollama.Client(host=url) as client:
            whole = client.chat(model="model-a", messages=messages, tools=TOOLS)
            chunks = list(
                client.chat(model="model-a", messages=messages, tools=TOOLS, stream=True)
            )
        return whole, chunks

    whole, chunks = await in_thread(ask)
    (call,) = whole.message.tool_calls or ()
    assert (call.function.name, call.function.arguments) == tool
    assert whole.message.content == "Hello from upstream"
    streamed = [call for c in chunks for call in c.message.tool_calls or ()]
    assert [(c.function.name, c.function.arguments) for c in streamed] == [tool]
    assert chunks[-1].done and chunks[-1].done_reason == "stop"
