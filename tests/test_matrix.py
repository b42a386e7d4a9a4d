"""The matrix: every client format × every provider type, whole and streamed, through sockets.

One gateway per test (mux in-process, as ``tests/test_e2e_routing.py`` starts it, from one
TOML config) in front of seven loopback fake upstreams (``tests/upstreams.py``), one per
provider type, Vertex AI twice (the express URL form and the project/location form). Each
entry serves one client-facing model, ``model-{provider}``, aliasing an upstream name
``up-{provider}``, with its own API key ``key-{provider}``.

Each case sends one raw HTTP request (httpx) in the client's format and checks, with nothing
but that format's public wire rules (no mux code parses anything here):

1. the fake upstream of that provider, and no other, received exactly one request, on the
   provider's native path, with the configured key in the provider's auth header, and a body
   of the provider's native shape carrying the upstream model name, the user's text (and the
   tool's definition), and asking for a stream exactly when the client did;
2. the client got a 200 answer in its own format carrying the upstream's text (streams are
   decoded as SSE, NDJSON or a JSON array by the client format's rules and their text deltas
   joined), with the upstream's token usage where the client format carries it;
3. in the tool parametrisation, the client sees the upstream's tool call, with its name and
   arguments, in its own format.

A second group sends a tool call's result back (question, the model's call, the result) in
each client format to each provider, and checks the native history the upstream receives:
the call, and the result naming it by the provider's own rules (ids, names, and for Gemini 3
the ``thoughtSignature`` it requires on the call). A last group drives the official SDKs
(openai, anthropic, google-genai, ollama) as clients, each against an upstream of another
format, in worker threads.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import attrs
import httpx
import pytest
import trio

from tests.test_e2e_routing import Mux, in_thread, start_mux, upstream_clients  # noqa: F401
from tests.upstreams import Answer, FakeUpstream
from tests.upstreams import start as start_upstream

# --------------------------------------------------------------------------------------------
# The providers: one fake upstream each, one config entry each


@attrs.frozen
class ProviderSpec:
    name: str  # the config entry's name and the model suffix
    kind: str  # the provider type (and the fake's kind)
    project: str | None = None
    location: str | None = None

    @property
    def model(self) -> str:
        return f"model-{self.name}"

    @property
    def upstream_model(self) -> str:
        return f"up-{self.name}"

    @property
    def key(self) -> str:
        return f"key-{self.name}"


PROVIDERS = {
    spec.name: spec
    for spec in (
        ProviderSpec("openai", "openai"),
        ProviderSpec("openai-responses", "openai-responses"),
        ProviderSpec("anthropic", "anthropic"),
        ProviderSpec("gemini", "gemini"),
        ProviderSpec("vertex-express", "vertex"),
        ProviderSpec("vertex-project", "vertex", project="proj-7", location="europe-west4"),
        ProviderSpec("ollama", "ollama"),
    )
}

USER_TEXT = "What is the weather in Paris, s'il vous plaît?"
#: What the upstreams answer: non-ASCII, so that chunking and re-encoding are exercised.
ANSWER_TEXT = "Héllo from upstream — it is sunny ☀"
TOOL_TEXT = "Let me check."
TOOL_NAME = "get_weather"
TOOL_ARGS = {"city": "Paris", "days": 2}
TOOL_DESCRIPTION = "The weather forecast for a city."
INPUT_TOKENS, OUTPUT_TOKENS = 11, 7


def answer(text: str = ANSWER_TEXT, *, tool: bool = False) -> Answer:
    """What a fake upstream answers next: ``text`` in four chunks, the tool call if asked."""
    return Answer(text=text, tool=(TOOL_NAME, TOOL_ARGS) if tool else None, chunks=4,
                  input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS)


#: A model every Gemini-type entry also serves: Gemini 3 requires a thoughtSignature on
#: the first functionCall of each model turn in the history it is sent.
GEMINI_3 = "gemini-3-pro-preview"


def provider_entry(spec: ProviderSpec, upstream: FakeUpstream) -> str:
    models = f'{{ name = "{spec.upstream_model}", alias = "{spec.model}" }}'
    if spec.kind in ("gemini", "vertex"):
        models += f', {{ name = "{GEMINI_3}", alias = "{spec.name}-3" }}'
    lines = [
        "[[providers]]",
        f'name = "{spec.name}"',
        f'type = "{spec.kind}"',
        f'base-url = "{upstream.base_url}"',
        f'api-keys = ["{spec.key}"]',
        f"models = [{models}]",
        "connect-timeout = 2.0",
        "first-byte-timeout = 5.0",
        "stream-timeout = 5.0",
    ]
    if spec.project:
        lines += [f'project = "{spec.project}"', f'location = "{spec.location}"']
    return "\n".join(lines) + "\n"


@attrs.define(eq=False)
class Matrix:
    mux: Mux
    fakes: dict[str, FakeUpstream]
    http: httpx.AsyncClient


@pytest.fixture
async def matrix(
    nursery: trio.Nursery, start_mux: Callable[[str], Any]  # noqa: F811
) -> AsyncIterator[Matrix]:
    fakes: dict[str, FakeUpstream] = {}
    for spec in PROVIDERS.values():
        fakes[spec.name] = await start_upstream(nursery, spec.kind, keys=(spec.key,))
    config = "".join(provider_entry(PROVIDERS[name], fake) for name, fake in fakes.items())
    mux = await start_mux(config)
    async with httpx.AsyncClient(base_url=mux.url, trust_env=False, timeout=10) as http:
        yield Matrix(mux, fakes, http)


# --------------------------------------------------------------------------------------------
# What the upstream received: each provider's native request


def _texts(content: Any, kinds: tuple[str, ...]) -> str:
    """The text of a message's content: a string, or a list of text blocks of ``kinds``."""
    if isinstance(content, str):
        return content
    assert isinstance(content, list), content
    return "".join(b["text"] for b in content if isinstance(b, dict) and b.get("type") in kinds)


def native_user_text(kind: str, body: dict[str, Any]) -> str:
    """The newest user turn's text, read by the provider's own request rules."""
    if kind in ("openai", "ollama"):
        last = body["messages"][-1]
        assert last["role"] == "user", body
        return _texts(last["content"], ("text",))
    if kind == "openai-responses":
        items = body["input"]
        if isinstance(items, str):
            return items
        last = items[-1]
        assert last.get("type", "message") == "message" and last["role"] == "user", body
        return _texts(last["content"], ("input_text",))
    if kind == "anthropic":
        last = body["messages"][-1]
        assert last["role"] == "user", body
        return _texts(last["content"], ("text",))
    last = body["contents"][-1]  # gemini, vertex
    assert last.get("role", "user") == "user", body
    return "".join(p.get("text", "") for p in last["parts"])


def native_tool(kind: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The one tool declared: its name and its parameters' JSON schema."""
    tools = body.get("tools")
    assert isinstance(tools, list) and len(tools) == 1, body
    (tool,) = tools
    if kind in ("openai", "ollama"):
        assert tool["type"] == "function", tool
        return tool["function"]["name"], tool["function"]["parameters"]
    if kind == "openai-responses":
        assert tool["type"] == "function", tool
        return tool["name"], tool["parameters"]
    if kind == "anthropic":
        return tool["name"], tool["input_schema"]
    declarations = tool.get("functionDeclarations", tool.get("function_declarations"))
    (declaration,) = declarations
    schema = declaration.get("parametersJsonSchema", declaration.get("parameters"))
    return declaration["name"], schema


def check_upstream_request(
    matrix: Matrix, spec: ProviderSpec, *, stream: bool, tools: bool
) -> None:
    """Assertion (1): one request, to this provider's fake only, native in every respect."""
    others = {n: len(f.requests) for n, f in matrix.fakes.items() if n != spec.name}
    assert not any(others.values()), f"other upstreams were called: {others}"
    fake = matrix.fakes[spec.name]
    assert len(fake.requests) == 1, [(r.method, r.path) for r in fake.requests]
    received = fake.requests[0]
    body = received.body
    assert received.method == "POST"
    assert isinstance(body, dict), body
    headers = received.headers
    kind = spec.kind
    if kind in ("openai", "openai-responses", "ollama"):
        assert headers.get("authorization") == f"Bearer {spec.key}"
    elif kind == "anthropic":
        assert headers.get("x-api-key") == spec.key
        assert headers.get("anthropic-version")
        assert "authorization" not in headers
    else:
        assert headers.get("x-goog-api-key") == spec.key
        assert "authorization" not in headers
    assert headers.get("content-type", "").startswith("application/json")

    if kind in ("gemini", "vertex"):
        verb = "streamGenerateContent" if stream else "generateContent"
        if kind == "gemini":
            path = f"/v1beta/models/{spec.upstream_model}:{verb}"
        elif spec.project:
            path = (f"/v1/projects/{spec.project}/locations/{spec.location}/publishers/google/"
                    f"models/{spec.upstream_model}:{verb}")
        else:
            path = f"/v1/publishers/google/models/{spec.upstream_model}:{verb}"
        assert received.path == path
        assert received.query == ({"alt": "sse"} if stream else {})
        assert "model" not in body and "stream" not in body
        if kind == "vertex":
            assert all(c.get("role") in ("user", "model") for c in body["contents"]), body
    else:
        path = {"openai": "/v1/chat/completions", "openai-responses": "/v1/responses",
                "anthropic": "/v1/messages", "ollama": "/api/chat"}[kind]
        assert received.path == path
        assert body["model"] == spec.upstream_model
        if kind == "ollama":
            assert body["stream"] is stream  # Ollama streams unless told not to
        else:
            assert body.get("stream", False) is stream
        if kind == "anthropic":
            assert isinstance(body["max_tokens"], int) and body["max_tokens"] > 0
    assert USER_TEXT in native_user_text(kind, body), body

    if tools:
        name, schema = native_tool(kind, body)
        assert name == TOOL_NAME
        assert "city" in schema["properties"], schema
    else:
        assert not body.get("tools"), body


# --------------------------------------------------------------------------------------------
# What the client got, read by its own format's rules


@attrs.define
class Answered:
    """A client's answer as its format says it: the text, the tool calls, the usage."""

    text: str = ""
    tools: list[tuple[str, Any]] = attrs.field(factory=list)
    usage: tuple[int, int] | None = None
    finish: Any = None


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of each SSE message, by the WHATWG rules (CRLF, CR or LF lines;
    ``data`` lines joined; comments ignored)."""
    text = raw.decode("utf-8")
    lines = re.split(r"\r\n|\r|\n", text)
    events: list[tuple[str | None, str]] = []
    name: str | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                events.append((name, "\n".join(data)))
            name, data = None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if data:
        events.append((name, "\n".join(data)))
    return events


def _openai_sse(raw: bytes) -> list[dict[str, Any]]:
    """Chat and Completions chunks: ``data:`` JSON, and ``[DONE]`` last."""
    events = sse_events(raw)
    assert events and events[-1][1] == "[DONE]", events[-3:]
    chunks = [json.loads(data) for _, data in events[:-1]]
    for chunk in chunks:
        assert "error" not in chunk, chunk
    return chunks


class Client:
    """One client format: its request, and how its whole and streamed answers read."""

    name: str
    tools = True
    stream_modes: tuple[str, ...] = ("whole", "stream")

    def path(self, model: str, mode: str) -> str:
        raise NotImplementedError

    def body(self, model: str, mode: str, tools: bool) -> dict[str, Any]:
        raise NotImplementedError

    def content_type(self, mode: str) -> str:
        return "application/json" if mode == "whole" else "text/event-stream"

    def whole(self, body: Any) -> Answered:
        raise NotImplementedError

    def streamed(self, raw: bytes, mode: str) -> Answered:
        raise NotImplementedError

    async def send(self, http: httpx.AsyncClient, model: str, mode: str, tools: bool
                   ) -> Answered:
        """Send the request; check the status and the content type; read the answer."""
        body = self.body(model, mode, tools)
        async with http.stream("POST", self.path(model, mode), json=body) as response:
            raw = await response.aread()
        assert response.status_code == 200, raw[:2000]
        content_type = response.headers.get("content-type", "")
        assert content_type.split(";")[0].strip() == self.content_type(mode), content_type
        if mode == "whole":
            return self.whole(json.loads(raw))
        return self.streamed(raw, mode)


class OpenAIChat(Client):
    name = "openai_chat"

    def path(self, model: str, mode: str) -> str:
        return "/v1/chat/completions"

    def body(self, model: str, mode: str, tools: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model,
                                "messages": [{"role": "user", "content": USER_TEXT}]}
        if tools:
            body["tools"] = [{"type": "function", "function": {
                "name": TOOL_NAME, "description": TOOL_DESCRIPTION, "parameters": SCHEMA}}]
        if mode == "stream":
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return body

    def whole(self, body: Any) -> Answered:
        assert body["object"] == "chat.completion"
        (choice,) = body["choices"]
        message = choice["message"]
        assert message["role"] == "assistant"
        calls = [(c["function"]["name"], json.loads(c["function"]["arguments"]))
                 for c in message.get("tool_calls") or ()]
        for call in message.get("tool_calls") or ():
            assert call["type"] == "function" and call["id"], call
        usage = body["usage"]
        return Answered(message.get("content") or "", calls,
                        (usage["prompt_tokens"], usage["completion_tokens"]),
                        choice["finish_reason"])

    def streamed(self, raw: bytes, mode: str) -> Answered:
        answered = Answered()
        calls: dict[int, list[str]] = {}
        for chunk in _openai_sse(raw):
            assert chunk["object"] == "chat.completion.chunk", chunk
            if chunk.get("usage"):
                answered.usage = (chunk["usage"]["prompt_tokens"],
                                  chunk["usage"]["completion_tokens"])
            for choice in chunk["choices"]:
                delta = choice["delta"]
                answered.text += delta.get("content") or ""
                for call in delta.get("tool_calls") or ():
                    slot = calls.setdefault(call["index"], ["", ""])
                    function = call.get("function") or {}
                    if "id" in call:
                        assert call["id"] and function.get("name"), call
                    slot[0] += function.get("name") or ""
                    slot[1] += function.get("arguments") or ""
                if choice.get("finish_reason"):
                    answered.finish = choice["finish_reason"]
        answered.tools = [(n, json.loads(a)) for n, a in (calls[i] for i in sorted(calls))]
        return answered


class OpenAICompletions(Client):
    name = "openai_completions"
    tools = False  # the legacy API has no tools

    def path(self, model: str, mode: str) -> str:
        return "/v1/completions"

    def body(self, model: str, mode: str, tools: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "prompt": USER_TEXT, "max_tokens": 100}
        if mode == "stream":
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return body

    def whole(self, body: Any) -> Answered:
        assert body["object"] == "text_completion"
        (choice,) = body["choices"]
        usage = body["usage"]
        return Answered(choice["text"], [], (usage["prompt_tokens"], usage["completion_tokens"]),
                        choice["finish_reason"])

    def streamed(self, raw: bytes, mode: str) -> Answered:
        answered = Answered()
        for chunk in _openai_sse(raw):
            assert chunk["object"] == "text_completion", chunk
            if chunk.get("usage"):
                answered.usage = (chunk["usage"]["prompt_tokens"],
                                  chunk["usage"]["completion_tokens"])
            for choice in chunk["choices"]:
                answered.text += choice.get("text") or ""
                if choice.get("finish_reason"):
                    answered.finish = choice["finish_reason"]
        return answered


class OpenAIResponses(Client):
    name = "openai_responses"

    def path(self, model: str, mode: str) -> str:
        return "/v1/responses"

    def body(self, model: str, mode: str, tools: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "input": USER_TEXT}
        if tools:
            body["tools"] = [{"type": "function", "name": TOOL_NAME,
                              "description": TOOL_DESCRIPTION, "parameters": SCHEMA}]
        if mode == "stream":
            body["stream"] = True
        return body

    @staticmethod
    def _output(response: dict[str, Any]) -> Answered:
        answered = Answered()
        for item in response["output"]:
            if item["type"] == "message":
                answered.text += "".join(p["text"] for p in item["content"]
                                         if p["type"] == "output_text")
            elif item["type"] == "function_call":
                assert item["call_id"], item
                answered.tools.append((item["name"], json.loads(item["arguments"])))
        usage = response.get("usage")
        if usage:
            answered.usage = (usage["input_tokens"], usage["output_tokens"])
        answered.finish = response["status"]
        return answered

    def whole(self, body: Any) -> Answered:
        assert body["object"] == "response"
        return self._output(body)

    def streamed(self, raw: bytes, mode: str) -> Answered:
        events = sse_events(raw)
        datas = [json.loads(data) for _, data in events]
        for (name, _), data in zip(events, datas, strict=True):
            assert name is None or name == data["type"], (name, data)
            assert data["type"] not in ("error", "response.failed"), data
        types = [d["type"] for d in datas]
        assert types[0] == "response.created" and types[-1] == "response.completed", types
        numbers = [d["sequence_number"] for d in datas]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), numbers
        text = "".join(d["delta"] for d in datas if d["type"] == "response.output_text.delta")
        arguments: dict[str, str] = {}
        names: dict[str, str] = {}
        for d in datas:
            if d["type"] == "response.output_item.added" and d["item"]["type"] == "function_call":
                names[d["item"]["id"]] = d["item"]["name"]
                arguments[d["item"]["id"]] = d["item"].get("arguments", "")
            elif d["type"] == "response.function_call_arguments.delta":
                arguments[d["item_id"]] += d["delta"]
        final = self._output(datas[-1]["response"])
        # The deltas and the completed response say the same thing.
        assert text == final.text, (text, final.text)
        streamed_tools = [(names[i], json.loads(arguments[i])) for i in names]
        assert streamed_tools == final.tools, (streamed_tools, final.tools)
        return final


class Anthropic(Client):
    name = "anthropic"

    def path(self, model: str, mode: str) -> str:
        return "/v1/messages"

    def body(self, model: str, mode: str, tools: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "max_tokens": 256,
                                "messages": [{"role": "user", "content": USER_TEXT}]}
        if tools:
            body["tools"] = [{"name": TOOL_NAME, "description": TOOL_DESCRIPTION,
                              "input_schema": SCHEMA}]
        if mode == "stream":
            body["stream"] = True
        return body

    def whole(self, body: Any) -> Answered:
        assert body["type"] == "message" and body["role"] == "assistant"
        answered = Answered(finish=body["stop_reason"])
        for block in body["content"]:
            if block["type"] == "text":
                answered.text += block["text"]
            elif block["type"] == "tool_use":
                assert block["id"], block
                answered.tools.append((block["name"], block["input"]))
        answered.usage = (body["usage"]["input_tokens"], body["usage"]["output_tokens"])
        return answered

    def streamed(self, raw: bytes, mode: str) -> Answered:
        events = [(name, json.loads(data)) for name, data in sse_events(raw)]
        for name, data in events:
            assert name == data["type"], (name, data)
            assert data["type"] != "error", data
        types = [d["type"] for _, d in events]
        assert types[0] == "message_start" and types[-1] == "message_stop", types
        answered = Answered()
        blocks: dict[int, dict[str, Any]] = {}
        input_tokens = events[0][1]["message"]["usage"].get("input_tokens", 0)
        output_tokens = 0
        for _, d in events:
            if d["type"] == "content_block_start":
                assert d["index"] not in blocks, d
                blocks[d["index"]] = {**d["content_block"], "json": "", "open": True}
            elif d["type"] == "content_block_delta":
                block = blocks[d["index"]]
                assert block["open"], d
                delta = d["delta"]
                if delta["type"] == "text_delta":
                    block["text"] += delta["text"]
                elif delta["type"] == "input_json_delta":
                    block["json"] += delta["partial_json"]
            elif d["type"] == "content_block_stop":
                blocks[d["index"]]["open"] = False
            elif d["type"] == "message_delta":
                answered.finish = d["delta"]["stop_reason"]
                usage = d.get("usage") or {}
                output_tokens = usage.get("output_tokens", output_tokens)
                # Newer APIs repeat the (final) input count here; it wins when given.
                input_tokens = usage.get("input_tokens") or input_tokens
        assert not any(b["open"] for b in blocks.values()), blocks
        for index in sorted(blocks):
            block = blocks[index]
            if block["type"] == "text":
                answered.text += block["text"]
            elif block["type"] == "tool_use":
                answered.tools.append((block["name"], json.loads(block["json"] or "{}")))
        answered.usage = (input_tokens, output_tokens)
        return answered


class Gemini(Client):
    name = "gemini"
    #: "stream": ``?alt=sse``; "array": the JSON array a stream is without it.
    stream_modes = ("whole", "stream", "array")

    def path(self, model: str, mode: str) -> str:
        if mode == "whole":
            return f"/v1beta/models/{model}:generateContent"
        query = "?alt=sse" if mode == "stream" else ""
        return f"/v1beta/models/{model}:streamGenerateContent{query}"

    def body(self, model: str, mode: str, tools: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": USER_TEXT}]}]}
        if tools:
            body["tools"] = [{"functionDeclarations": [{
                "name": TOOL_NAME, "description": TOOL_DESCRIPTION, "parameters": GEMINI_SCHEMA,
            }]}]
        return body

    def content_type(self, mode: str) -> str:
        return "text/event-stream" if mode == "stream" else "application/json"

    @staticmethod
    def _chunks(chunks: list[dict[str, Any]]) -> Answered:
        answered = Answered()
        for chunk in chunks:
            assert "error" not in chunk, chunk
            for candidate in chunk.get("candidates") or ():
                for part in (candidate.get("content") or {}).get("parts") or ():
                    if part.get("thought"):
                        continue
                    answered.text += part.get("text", "")
                    if "functionCall" in part:
                        call = part["functionCall"]
                        answered.tools.append((call["name"], call.get("args", {})))
                if candidate.get("finishReason"):
                    answered.finish = candidate["finishReason"]
            usage = chunk.get("usageMetadata")
            if usage and "candidatesTokenCount" in usage:
                answered.usage = (usage["promptTokenCount"], usage["candidatesTokenCount"])
        return answered

    def whole(self, body: Any) -> Answered:
        return self._chunks([body])

    def streamed(self, raw: bytes, mode: str) -> Answered:
        if mode == "array":
            chunks = json.loads(raw)
            assert isinstance(chunks, list), chunks
        else:
            events = sse_events(raw)
            assert all(name is None for name, _ in events), events  # data lines only
            chunks = [json.loads(data) for _, data in events]
        return self._chunks(chunks)


class Ollama(Client):
    name = "ollama"

    def path(self, model: str, mode: str) -> str:
        return "/api/chat"

    def body(self, model: str, mode: str, tools: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "stream": mode == "stream",
                                "messages": [{"role": "user", "content": USER_TEXT}]}
        if tools:
            body["tools"] = [{"type": "function", "function": {
                "name": TOOL_NAME, "description": TOOL_DESCRIPTION, "parameters": SCHEMA}}]
        return body

    def content_type(self, mode: str) -> str:
        return "application/json" if mode == "whole" else "application/x-ndjson"

    @staticmethod
    def _lines(lines: list[dict[str, Any]]) -> Answered:
        answered = Answered()
        for line in lines:
            assert "error" not in line, line
            message = line.get("message") or {}
            answered.text += message.get("content") or ""
            for call in message.get("tool_calls") or ():
                function = call["function"]
                assert isinstance(function["arguments"], dict), call  # an object, not a string
                answered.tools.append((function["name"], function["arguments"]))
        last = lines[-1]
        assert last["done"] is True and not any(line["done"] for line in lines[:-1]), lines
        answered.finish = last.get("done_reason")
        answered.usage = (last["prompt_eval_count"], last["eval_count"])
        return answered

    def whole(self, body: Any) -> Answered:
        return self._lines([body])

    def streamed(self, raw: bytes, mode: str) -> Answered:
        text = raw.decode("utf-8")
        assert text.endswith("\n"), text[-200:]
        return self._lines([json.loads(line) for line in text.splitlines() if line.strip()])


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"},
                                           "days": {"type": "integer"}}, "required": ["city"]}
GEMINI_SCHEMA = {"type": "OBJECT", "properties": {"city": {"type": "STRING"},
                                                  "days": {"type": "INTEGER"}},
                 "required": ["city"]}

CLIENTS: dict[str, Client] = {c.name: c for c in (
    OpenAIChat(), OpenAIResponses(), OpenAICompletions(), Anthropic(), Gemini(), Ollama(),
)}

#: The finish each client format states, for a plain answer and for a tool call.
FINISH = {
    "openai_chat": ("stop", "tool_calls"),
    "openai_completions": ("stop", None),
    "openai_responses": ("completed", "completed"),
    "anthropic": ("end_turn", "tool_use"),
    "gemini": ("STOP", "STOP"),
    "ollama": ("stop", "stop"),
}


# --------------------------------------------------------------------------------------------
# The matrix

def cases(*, tools: bool) -> Iterator[Any]:
    for client in CLIENTS.values():
        if tools and not client.tools:
            continue
        for provider in PROVIDERS:
            for mode in client.stream_modes:
                yield pytest.param(client.name, provider, mode, id=f"{client.name}-{provider}-{mode}")


async def run_case(matrix: Matrix, client_name: str, provider: str, mode: str, *,
                   tools: bool, text: str | None = None) -> Answered:
    spec, client = PROVIDERS[provider], CLIENTS[client_name]
    if text is None:
        text = TOOL_TEXT if tools else ANSWER_TEXT
    matrix.fakes[provider].push(answer(text, tool=tools))
    with trio.fail_after(10):
        answered = await client.send(matrix.http, spec.model, mode, tools)
    check_upstream_request(matrix, spec, stream=mode != "whole", tools=tools)
    assert answered.text == text
    assert answered.usage == (INPUT_TOKENS, OUTPUT_TOKENS)
    return answered


@pytest.mark.parametrize(("client", "provider", "mode"), list(cases(tools=False)))
async def test_text(matrix: Matrix, client: str, provider: str, mode: str) -> None:
    answered = await run_case(matrix, client, provider, mode, tools=False)
    assert answered.tools == []
    assert answered.finish == FINISH[client][0]


@pytest.mark.parametrize("text", [TOOL_TEXT, ""], ids=["with-text", "call-only"])
@pytest.mark.parametrize(("client", "provider", "mode"), list(cases(tools=True)))
async def test_tool_call(matrix: Matrix, client: str, provider: str, mode: str,
                         text: str) -> None:
    answered = await run_case(matrix, client, provider, mode, tools=True, text=text)
    assert answered.tools == [(TOOL_NAME, TOOL_ARGS)]
    assert answered.finish == FINISH[client][1]


# --------------------------------------------------------------------------------------------
# The official SDKs as clients, each against an upstream of another format


async def test_anthropic_sdk_streams_from_a_gemini_upstream(matrix: Matrix) -> None:
    matrix.fakes["gemini"].push(answer())

    def run() -> tuple[str, Any]:
        with matrix.mux.anthropic() as client, client.messages.stream(
            model="model-gemini", max_tokens=256,
            messages=[{"role": "user", "content": USER_TEXT}],
        ) as stream:
            return "".join(stream.text_stream), stream.get_final_message()

    text, message = await in_thread(run)
    check_upstream_request(matrix, PROVIDERS["gemini"], stream=True, tools=False)
    assert text == ANSWER_TEXT
    assert [b.text for b in message.content] == [ANSWER_TEXT]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (INPUT_TOKENS,
                                                                        OUTPUT_TOKENS)


async def test_anthropic_sdk_tool_round_trip_through_a_gemini_3_upstream(matrix: Matrix) -> None:
    """The call comes back as a tool_use block; the tool_result sent after it reaches Gemini
    as the functionCall it answers (with a thoughtSignature, which Gemini 3 requires on it:
    the original cannot survive an Anthropic client, so Google's documented stand-in)
    followed by a functionResponse of the same name."""
    fake = matrix.fakes["gemini"]
    fake.push(answer(TOOL_TEXT, tool=True), answer("It is sunny."))
    tools = [{"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": SCHEMA}]
    question = {"role": "user", "content": USER_TEXT}

    def run() -> tuple[Any, Any]:
        with matrix.mux.anthropic() as client:
            first = client.messages.create(model="gemini-3", max_tokens=256, tools=tools,
                                           messages=[question])
            (call,) = [b for b in first.content if b.type == "tool_use"]
            second = client.messages.create(
                model="gemini-3", max_tokens=256, tools=tools,
                messages=[
                    question,
                    {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                    {"role": "user", "content": [{"type": "tool_result",
                                                  "tool_use_id": call.id,
                                                  "content": "sunny, 21C"}]},
                ],
            )
            return first, second

    first, second = await in_thread(run)
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    assert (call.name, call.input) == (TOOL_NAME, TOOL_ARGS)
    assert second.content[0].text == "It is sunny."
    assert len(fake.requests) == 2
    contents = fake.requests[1].body["contents"]
    assert [c.get("role") for c in contents] == ["user", "model", "user"]
    calls = [p for p in contents[1]["parts"] if "functionCall" in p]
    assert [(p["functionCall"]["name"], p["functionCall"]["args"]) for p in calls] == [
        (TOOL_NAME, TOOL_ARGS)]
    assert calls[0].get("thoughtSignature"), contents[1]
    (result,) = contents[2]["parts"]
    assert result["functionResponse"]["name"] == TOOL_NAME
    assert "sunny, 21C" in json.dumps(result["functionResponse"]["response"])


async def test_google_genai_sdk_streams_from_an_anthropic_upstream(matrix: Matrix) -> None:
    from google import genai
    from google.genai import types

    matrix.fakes["anthropic"].push(answer())

    def run() -> list[Any]:
        client = genai.Client(api_key="unused",
                              http_options=types.HttpOptions(base_url=matrix.mux.url))
        with client:
            return list(client.models.generate_content_stream(
                model="model-anthropic", contents=USER_TEXT,
                config=types.GenerateContentConfig(system_instruction="Be brief."),
            ))

    chunks = await in_thread(run)
    check_upstream_request(matrix, PROVIDERS["anthropic"], stream=True, tools=False)
    assert matrix.fakes["anthropic"].last.body["system"] in (
        "Be brief.", [{"type": "text", "text": "Be brief."}])
    assert "".join(c.text or "" for c in chunks) == ANSWER_TEXT
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    usage = chunks[-1].usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count) == (INPUT_TOKENS,
                                                                      OUTPUT_TOKENS)


async def test_google_genai_sdk_tool_call_from_an_openai_responses_upstream(
    matrix: Matrix,
) -> None:
    from google import genai
    from google.genai import types

    matrix.fakes["openai-responses"].push(answer(TOOL_TEXT, tool=True))
    declaration = types.FunctionDeclaration(
        name=TOOL_NAME, description=TOOL_DESCRIPTION, parameters_json_schema=SCHEMA)
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[declaration])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )

    def run() -> Any:
        client = genai.Client(api_key="unused",
                              http_options=types.HttpOptions(base_url=matrix.mux.url))
        with client:
            return client.models.generate_content(
                model="model-openai-responses", contents=USER_TEXT, config=config)

    response = await in_thread(run)
    check_upstream_request(matrix, PROVIDERS["openai-responses"], stream=False, tools=True)
    (call,) = response.function_calls
    assert (call.name, call.args) == (TOOL_NAME, TOOL_ARGS)
    assert response.text == TOOL_TEXT


async def test_ollama_sdk_streams_from_an_openai_upstream(matrix: Matrix) -> None:
    import ollama

    matrix.fakes["openai"].push(answer())

    def run() -> list[Any]:
        with ollama.Client(host=matrix.mux.url) as client:
            return list(client.chat(model="model-openai", stream=True,
                                    messages=[{"role": "user", "content": USER_TEXT}]))

    parts = await in_thread(run)
    check_upstream_request(matrix, PROVIDERS["openai"], stream=True, tools=False)
    assert "".join(p.message.content or "" for p in parts) == ANSWER_TEXT
    assert parts[-1].done and parts[-1].done_reason == "stop"
    assert (parts[-1].prompt_eval_count, parts[-1].eval_count) == (INPUT_TOKENS, OUTPUT_TOKENS)


async def test_ollama_sdk_tool_call_from_a_vertex_upstream(matrix: Matrix) -> None:
    import ollama

    matrix.fakes["vertex-project"].push(answer(TOOL_TEXT, tool=True))
    tool = {"type": "function", "function": {"name": TOOL_NAME,
                                             "description": TOOL_DESCRIPTION,
                                             "parameters": SCHEMA}}

    def run() -> Any:
        with ollama.Client(host=matrix.mux.url) as client:
            return client.chat(model="model-vertex-project", tools=[tool],
                               messages=[{"role": "user", "content": USER_TEXT}])

    response = await in_thread(run)
    check_upstream_request(matrix, PROVIDERS["vertex-project"], stream=False, tools=True)
    (call,) = response.message.tool_calls
    assert (call.function.name, dict(call.function.arguments)) == (TOOL_NAME, TOOL_ARGS)


async def test_openai_responses_sdk_streams_from_an_anthropic_upstream(matrix: Matrix) -> None:
    matrix.fakes["anthropic"].push(answer())

    def run() -> tuple[str, Any]:
        with matrix.mux.openai() as client, client.responses.stream(
            model="model-anthropic", input=USER_TEXT, instructions="Be brief.",
        ) as stream:
            deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
            return deltas, stream.get_final_response()

    deltas, response = await in_thread(run)
    check_upstream_request(matrix, PROVIDERS["anthropic"], stream=True, tools=False)
    assert deltas == ANSWER_TEXT and response.output_text == ANSWER_TEXT
    assert response.status == "completed"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (INPUT_TOKENS,
                                                                          OUTPUT_TOKENS)


async def test_openai_chat_sdk_streams_a_tool_call_from_an_ollama_upstream(
    matrix: Matrix,
) -> None:
    matrix.fakes["ollama"].push(answer(TOOL_TEXT, tool=True))
    tool = {"type": "function", "function": {"name": TOOL_NAME,
                                             "description": TOOL_DESCRIPTION,
                                             "parameters": SCHEMA}}

    def run() -> Any:
        with matrix.mux.openai() as client, client.chat.completions.stream(
            model="model-ollama", tools=[tool],  # type: ignore[list-item]
            messages=[{"role": "user", "content": USER_TEXT}],
            stream_options={"include_usage": True},
        ) as stream:
            for _ in stream:
                pass
            return stream.get_final_completion()

    completion = await in_thread(run)
    check_upstream_request(matrix, PROVIDERS["ollama"], stream=True, tools=True)
    (choice,) = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == TOOL_TEXT
    (call,) = choice.message.tool_calls
    assert call.function.name == TOOL_NAME
    assert json.loads(call.function.arguments) == TOOL_ARGS
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        INPUT_TOKENS, OUTPUT_TOKENS)


# --------------------------------------------------------------------------------------------
# A tool call's result sent back: the history reaches each upstream in its native shape

RESULT = "sunny, 21C"
#: A Gemini client replays the signature its answer carried (base64).
CLIENT_SIGNATURE = "CpQBAdHtim9kX2VnHvQb"


def history_request(client: str, model: str) -> tuple[str, dict[str, Any]]:
    """A client's follow-up request: the question, the model's tool call, the tool's result."""
    arguments = json.dumps(TOOL_ARGS)
    question = {"role": "user", "content": USER_TEXT}
    openai_tool = {"type": "function", "function": {
        "name": TOOL_NAME, "description": TOOL_DESCRIPTION, "parameters": SCHEMA}}
    if client == "openai_chat":
        return "/v1/chat/completions", {"model": model, "tools": [openai_tool], "messages": [
            question,
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": TOOL_NAME, "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": RESULT},
        ]}
    if client == "openai_responses":
        return "/v1/responses", {"model": model, "tools": [{
            "type": "function", "name": TOOL_NAME, "description": TOOL_DESCRIPTION,
            "parameters": SCHEMA}], "input": [
            {"role": "user", "content": USER_TEXT},
            {"type": "function_call", "call_id": "call_1", "name": TOOL_NAME,
             "arguments": arguments},
            {"type": "function_call_output", "call_id": "call_1", "output": RESULT},
        ]}
    if client == "anthropic":
        return "/v1/messages", {"model": model, "max_tokens": 256, "tools": [{
            "name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": SCHEMA}],
            "messages": [
                question,
                {"role": "assistant", "content": [
                    {"type": "text", "text": TOOL_TEXT},
                    {"type": "tool_use", "id": "toolu_01", "name": TOOL_NAME,
                     "input": TOOL_ARGS}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": RESULT}]},
            ]}
    if client == "gemini":
        return f"/v1beta/models/{model}:generateContent", {
            "tools": [{"functionDeclarations": [{
                "name": TOOL_NAME, "description": TOOL_DESCRIPTION,
                "parameters": GEMINI_SCHEMA}]}],
            "contents": [
                {"role": "user", "parts": [{"text": USER_TEXT}]},
                {"role": "model", "parts": [
                    {"text": TOOL_TEXT},
                    {"functionCall": {"name": TOOL_NAME, "args": TOOL_ARGS},
                     "thoughtSignature": CLIENT_SIGNATURE}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": TOOL_NAME, "response": {"output": RESULT}}}]},
            ]}
    assert client == "ollama"
    return "/api/chat", {"model": model, "stream": False, "tools": [openai_tool], "messages": [
        question,
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": TOOL_NAME, "arguments": TOOL_ARGS}}]},
        {"role": "tool", "tool_name": TOOL_NAME, "content": RESULT},
    ]}


def native_round_trip(kind: str, body: dict[str, Any]) -> tuple[tuple[str, Any], str]:
    """The tool call and the result answering it in a provider's native history, checking
    that the result names the call it answers by the provider's own rules."""
    if kind == "openai":
        messages = body["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "tool"], messages
        (call,) = messages[1]["tool_calls"]
        assert call["type"] == "function" and call["id"], call
        assert messages[2]["tool_call_id"] == call["id"], messages
        function = call["function"]
        return (function["name"], json.loads(function["arguments"])), _texts(
            messages[2]["content"], ("text",))
    if kind == "openai-responses":
        items = body["input"]
        (call,) = [i for i in items if i.get("type") == "function_call"]
        (output,) = [i for i in items if i.get("type") == "function_call_output"]
        assert call["call_id"] and output["call_id"] == call["call_id"], items
        assert items.index(call) < items.index(output), items
        result = output["output"]
        return (call["name"], json.loads(call["arguments"])), _texts(result, ("input_text",))
    if kind == "anthropic":
        messages = body["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "user"], messages
        (use,) = [b for b in messages[1]["content"] if b["type"] == "tool_use"]
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", use["id"]), use  # the API's id pattern
        (result,) = messages[2]["content"]
        assert result["type"] == "tool_result" and result["tool_use_id"] == use["id"], result
        return (use["name"], use["input"]), _texts(result["content"], ("text",))
    if kind == "ollama":
        messages = body["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "tool"], messages
        (call,) = messages[1]["tool_calls"]
        function = call["function"]
        assert isinstance(function["arguments"], dict), call  # an object, not a string
        assert messages[2].get("tool_name", function["name"]) == function["name"], messages
        return (function["name"], function["arguments"]), messages[2]["content"]
    contents = body["contents"]  # gemini, vertex
    assert [c.get("role") for c in contents] == ["user", "model", "user"], contents
    (part,) = [p for p in contents[1]["parts"] if "functionCall" in p]
    call = part["functionCall"]
    (answer_,) = [p for p in contents[2]["parts"] if "functionResponse" in p]
    response = answer_["functionResponse"]
    assert response["name"] == call["name"], contents
    if call.get("id") or response.get("id"):
        assert response.get("id") == call.get("id"), contents
    return (call["name"], call["args"]), json.dumps(response["response"])


def round_trip_cases() -> Iterator[Any]:
    for client in CLIENTS.values():
        if not client.tools:
            continue
        for provider in PROVIDERS:
            yield pytest.param(client.name, provider, id=f"{client.name}-{provider}")


@pytest.mark.parametrize(("client", "provider"), list(round_trip_cases()))
async def test_tool_result_round_trip(matrix: Matrix, client: str, provider: str) -> None:
    spec = PROVIDERS[provider]
    google = spec.kind in ("gemini", "vertex")
    model = f"{spec.name}-3" if google else spec.model
    fake = matrix.fakes[provider]
    fake.push(answer("It is sunny."))
    path, body = history_request(client, model)
    with trio.fail_after(10):
        response = await matrix.http.post(path, json=body)
    assert response.status_code == 200, response.text
    assert CLIENTS[client].whole(response.json()).text == "It is sunny."
    (received,) = fake.requests
    call, result = native_round_trip(spec.kind, received.body)
    assert call == (TOOL_NAME, TOOL_ARGS)
    assert RESULT in result
    native_tool(spec.kind, received.body)  # the tool is still declared
    if google:
        assert GEMINI_3 in received.path
        (part,) = [p for p in received.body["contents"][1]["parts"] if "functionCall" in p]
        expected = CLIENT_SIGNATURE if client == "gemini" else None
        signature = part.get("thoughtSignature")
        assert signature and (expected is None or signature == expected), part
