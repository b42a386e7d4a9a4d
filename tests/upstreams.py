"""Loopback fake upstreams, one per provider type, speaking each vendor's real wire format.

Every answer here is hand-written JSON and SSE/NDJSON bytes shaped as the real APIs send them
(protocols.md A-E), never produced by mux's format modules: a test that rendered the upstream's
answer with the code under test would prove nothing.

A :class:`FakeUpstream` runs on :class:`mux.server.Server` on port 0 in a test's nursery
(:func:`start`). Like the real service it checks the method and path, the auth header and its
value, the headers the API requires (``anthropic-version``) and that the JSON body is
well-formed for that API (Anthropic: ``max_tokens``, no empty text blocks, no unknown fields;
Gemini: non-empty ``contents`` and ``parts``, no unknown fields...), answering the vendor's own
error body when something is wrong. It records every request (:attr:`FakeUpstream.requests`)
and answers from a script (:meth:`FakeUpstream.push`): :class:`Answer` (text and/or a tool
call, whole or streamed in chunks with a delay, optionally failing inside the 200 stream,
stalling or dropping the connection after some chunks), :class:`Fail` (a status with the
provider's error body and headers) or :class:`Hang` (no answer at all). When a streamed body
ends, completed or cut off because the client went away, :attr:`FakeUpstream.stream_closed`
is set.
"""

from __future__ import annotations

import collections
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
import trio

from mux.config import ModelAlias, ProviderConfig
from mux.framing import dumps, loads
from mux.server import HttpRequest, HttpResponse, Limits, Server

__all__ = ["KINDS", "Answer", "Fail", "FakeUpstream", "Hang", "Received", "start"]

KINDS = ("openai", "openai-responses", "anthropic", "gemini", "vertex", "ollama")

CREATED = 1_730_000_000
CREATED_AT = "2024-10-27T03:33:20.123456Z"


@attrs.frozen(kw_only=True)
class Answer:
    """A 200 answer: text and/or a tool call (name, arguments), whole or streamed.

    ``chunks``: the text is cut into this many stream deltas; ``delay``: seconds before each
    content chunk after the first; ``error_after``: a provider-style error event inside the
    stream after that many content chunks (0: before any content); ``stall_after``: stop
    sending (without closing) after that many; ``drop_after``: cut the connection there.
    """

    text: str = "Hello from upstream"
    tool: tuple[str, dict[str, Any]] | None = None
    reasoning: str | None = None
    chunks: int = 3
    delay: float = 0.0
    error_after: int | None = None
    error_message: str = "The server is overloaded"
    stall_after: int | None = None
    drop_after: int | None = None
    input_tokens: int = 11
    output_tokens: int = 7


@attrs.frozen(kw_only=True)
class Fail:
    """A non-2xx answer: the provider's error body (or ``body`` as given) and ``headers``."""

    status: int
    message: str = "The upstream refused the request"
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: Any = None


@attrs.frozen
class Hang:
    """Never answer: the response head never comes."""


@attrs.frozen(kw_only=True)
class Received:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any
    #: ``host:port`` of the client's end of the connection.
    client: str

    @classmethod
    def of(cls, request: HttpRequest, body: Any) -> Received:
        """What a fake records of ``request``, with its body as the fake reads it."""
        return cls(method=request.method, path=request.path, query=dict(request.query),
                   headers=dict(request.headers), body=body, client=request.client)


class _Refuse(Exception):
    """A check failed: answer with the provider's error ``status`` and ``message``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class _Drop(Exception):
    """Raised inside a response body: the server cuts the connection."""


def _pieces(text: str, n: int) -> list[str]:
    if not text:
        return []
    n = max(1, min(n, len(text)))
    size = -(-len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _sse(data: Any, event: str | None = None, *, crlf: bool = False) -> bytes:
    head = f"event: {event}\n" if event else ""
    text = f"{head}data: {data if isinstance(data, str) else dumps(data).decode()}\n\n"
    return text.replace("\n", "\r\n").encode() if crlf else text.encode()


@attrs.define
class _Wire:
    """A streamed answer as wire pieces: before content, content chunks, after, and the
    error event this API sends inside a 200 stream."""

    prelude: list[bytes]
    content: list[bytes]
    ending: list[bytes]
    error: bytes


class FakeUpstream:
    """One fake upstream of ``kind``; see the module docstring."""

    def __init__(self, kind: str, keys: tuple[str, ...] = ("test-key-1",)) -> None:
        if kind not in KINDS:
            raise ValueError(kind)
        self.kind = kind
        self.keys = keys
        self.port = 0
        self.requests: list[Received] = []
        self.script: collections.deque[Answer | Fail | Hang] = collections.deque()
        #: The models the listing endpoint shows, and how many per page.
        self.listed: list[str] = ["model-a", "model-b"]
        self.page_size = 1000
        self.stream_closed = trio.Event()
        #: Whether the last streamed body was sent to its end (None: none yet).
        self.stream_completed: bool | None = None

    # ----------------------------------------------------------------------------------------
    # Test API

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The service root as the vendor's SDK takes it."""
        return self.root + "/v1" if self.kind.startswith("openai") else self.root

    def push(self, *actions: Answer | Fail | Hang) -> None:
        """Answer the next requests with ``actions``, in order (then the default Answer)."""
        self.script.extend(actions)

    def provider_config(self, name: str | None = None, **overrides: Any) -> ProviderConfig:
        """A ``[[providers]]`` entry pointing here, with short timeouts."""
        fields: dict[str, Any] = {
            "name": name or self.kind,
            "type": self.kind,
            "base_url": self.base_url,
            "api_keys": list(self.keys),
            "models": ["model-a", ModelAlias(name="model-b", alias="b")],
            "connect_timeout": 2.0,
            "first_byte_timeout": 5.0,
            "stream_timeout": 5.0,
        }
        return ProviderConfig(**(fields | overrides))

    @property
    def last(self) -> Received:
        return self.requests[-1]

    # ----------------------------------------------------------------------------------------
    # Serving

    async def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            body = loads(request.body) if request.body else None
        except ValueError:
            body = request.body
        self.requests.append(Received.of(request, body))
        action = self.script.popleft() if self.script else Answer()
        if isinstance(action, Hang):
            await trio.sleep_forever()
        try:
            endpoint = self._route(request)
            self._check_auth(request)
            return await endpoint(request, body, action)
        except _Refuse as refusal:
            return self._error(refusal.status, refusal.message, code=refusal.code)

    def _route(self, request: HttpRequest) -> Any:
        path, method = request.path, request.method
        kind = self.kind
        table: dict[tuple[str, str], Any] = {}
        if kind in ("openai", "openai-responses"):
            endpoint = "/v1/chat/completions" if kind == "openai" else "/v1/responses"
            table = {("POST", endpoint): self._generate, ("GET", "/v1/models"): self._list}
        elif kind == "anthropic":
            table = {
                ("POST", "/v1/messages"): self._generate,
                ("POST", "/v1/messages/count_tokens"): self._count,
                ("GET", "/v1/models"): self._list,
            }
        elif kind == "ollama":
            table = {("POST", "/api/chat"): self._generate, ("GET", "/api/tags"): self._list}
        else:
            if kind == "gemini":
                if (method, path) == ("GET", "/v1beta/models"):
                    return self._list
                found = re.fullmatch(r"/v1beta/models/([^/:]+):(\w+)", path)
            else:
                found = re.fullmatch(
                    r"/v1/(?:projects/[^/]+/locations/[^/]+/)?publishers/google/models/"
                    r"([^/:]+):(\w+)",
                    path,
                )
            if found and method == "POST":
                verb = found[2]
                if verb == "generateContent":
                    return self._generate
                if verb == "streamGenerateContent":
                    return self._generate
                if verb == "countTokens":
                    return self._count
        if (method, path) in table:
            return table[(method, path)]
        if kind in ("gemini", "vertex"):
            raise _Refuse(404, f"The requested URL {path} was not found on this server.")
        raise _Refuse(404, f"Unknown request URL: {method} {path}.")

    def _check_auth(self, request: HttpRequest) -> None:
        headers = request.headers
        if self.kind in ("openai", "openai-responses") or (self.kind == "ollama" and self.keys):
            auth = headers.get("authorization", "")
            if not auth:
                raise _Refuse(401, "You didn't provide an API key.")
            key = auth.removeprefix("Bearer ")
            if not auth.startswith("Bearer ") or key not in self.keys:
                # The real one masks the key; this one echoes it, to prove mux scrubs it.
                raise _Refuse(401, f"Incorrect API key provided: {key}.", code="invalid_api_key")
        elif self.kind == "anthropic":
            key = headers.get("x-api-key")
            if key is None:
                raise _Refuse(401, "x-api-key header is required")
            if key not in self.keys:
                raise _Refuse(401, f"invalid x-api-key {key}")
            if "anthropic-version" not in headers:
                raise _Refuse(400, "anthropic-version: header is required")
        elif self.kind in ("gemini", "vertex"):
            key = headers.get("x-goog-api-key") or request.query.get("key")
            if key is None:
                raise _Refuse(403, "Method doesn't allow unregistered callers (callers without "
                                   "established identity). Please use API Key or other form of "
                                   "API consumer identity to call this API.")
            if key not in self.keys:
                raise _Refuse(400, f"API key not valid. Please pass a valid API key. ({key})",
                              code="API_KEY_INVALID")

    # ----------------------------------------------------------------------------------------
    # Endpoints

    async def _generate(
        self, request: HttpRequest, body: Any, action: Answer | Fail
    ) -> HttpResponse:
        stream = self._validate(request, body)
        if isinstance(action, Fail):
            return self._fail(action)
        if not stream:
            return HttpResponse(status=200, headers=[("content-type", "application/json")],
                                body=dumps(self._whole(action, body)))
        wire = self._wire(action, body, request)
        content_type = "application/x-ndjson" if self.kind == "ollama" else "text/event-stream"
        if self.kind in ("gemini", "vertex") and request.query.get("alt") != "sse":
            content_type = "application/json"
        return HttpResponse(
            status=200,
            headers=[("content-type", content_type)],
            body=self._stream(action, wire),
        )

    async def _stream(self, action: Answer, wire: _Wire) -> AsyncIterator[bytes]:
        self.stream_completed = False
        self.stream_closed = trio.Event()
        try:
            for piece in wire.prelude:
                yield piece
            for i, piece in enumerate(wire.content):
                if action.error_after == i:
                    yield wire.error
                    self.stream_completed = True
                    return
                if action.stall_after == i:
                    await trio.sleep_forever()
                if action.drop_after == i:
                    raise _Drop("dropping the connection, as scripted")
                if i and action.delay:
                    await trio.sleep(action.delay)
                yield piece
            if action.error_after is not None and action.error_after >= len(wire.content):
                yield wire.error
                self.stream_completed = True
                return
            if action.stall_after is not None and action.stall_after >= len(wire.content):
                await trio.sleep_forever()
            for piece in wire.ending:
                yield piece
            self.stream_completed = True
        finally:
            self.stream_closed.set()

    async def _count(self, request: HttpRequest, body: Any, action: Answer | Fail) -> HttpResponse:
        if self.kind == "anthropic":
            _object(body)
            unknown = set(body) - _ANTHROPIC_COUNT_FIELDS
            if unknown:
                raise _Refuse(400, f"{sorted(unknown)[0]}: Extra inputs are not permitted")
            self._check_anthropic_messages(body)
        else:
            _object(body)
            inner = body.get("generateContentRequest")
            if inner is not None:
                if set(body) - {"generateContentRequest"}:
                    raise _Refuse(400, "contents and generateContentRequest are exclusive")
                if not str(inner.get("model", "")).startswith("models/"):
                    raise _Refuse(400, "generateContentRequest.model is required")
                self._check_google({k: v for k, v in inner.items() if k != "model"})
            else:
                allowed = _VERTEX_COUNT_FIELDS if self.kind == "vertex" else {"contents"}
                self._check_google(body, allowed=allowed)
        if isinstance(action, Fail):
            return self._fail(action)
        count = action.input_tokens
        answer = {"input_tokens": count} if self.kind == "anthropic" else {
            "totalTokens": count,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": count}],
        }
        return HttpResponse(status=200, headers=[("content-type", "application/json")],
                            body=dumps(answer))

    async def _list(self, request: HttpRequest, body: Any, action: Answer | Fail) -> HttpResponse:
        if isinstance(action, Fail):
            return self._fail(action)
        names = self.listed
        if self.kind in ("openai", "openai-responses"):
            data = [{"id": n, "object": "model", "created": CREATED, "owned_by": "system"}
                    for n in names]
            answer: dict[str, Any] = {"object": "list", "data": data}
        elif self.kind == "anthropic":
            after = request.query.get("after_id")
            start = names.index(after) + 1 if after in names else 0
            page = names[start : start + self.page_size]
            answer = {
                "data": [{"type": "model", "id": n, "display_name": n.title(),
                          "created_at": "2025-02-19T00:00:00Z"} for n in page],
                "has_more": start + len(page) < len(names),
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        elif self.kind == "ollama":
            answer = {"models": [{
                "name": n, "model": n, "modified_at": CREATED_AT, "size": 2019393189,
                "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                "details": {"parent_model": "", "format": "gguf", "family": "llama",
                            "families": ["llama"], "parameter_size": "3.2B",
                            "quantization_level": "Q4_K_M"},
            } for n in names]}
        else:
            token = request.query.get("pageToken")
            start = int(token) if token else 0
            page = names[start : start + self.page_size]
            answer = {"models": [{
                "name": f"models/{n}", "version": "001", "displayName": n,
                "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
            } for n in page]}
            answer["models"].append({
                "name": "models/embedding-001", "version": "001", "displayName": "Embedding",
                "supportedGenerationMethods": ["embedContent"],
            })
            if start + len(page) < len(names):
                answer["nextPageToken"] = str(start + len(page))
        return HttpResponse(status=200, headers=[("content-type", "application/json")],
                            body=dumps(answer))

    # ----------------------------------------------------------------------------------------
    # Request checks: what each real API refuses

    def _validate(self, request: HttpRequest, body: Any) -> bool:
        """Check a generation request; return whether it asks for a stream."""
        _object(body)
        kind = self.kind
        if kind == "openai":
            _model(body)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise _Refuse(400, "[] is too short - 'messages'")
            for i, message in enumerate(messages):
                if not isinstance(message, dict) or message.get("role") not in _OPENAI_ROLES:
                    raise _Refuse(400, f"Invalid value for 'messages[{i}].role'")
            if "stream_options" in body and body.get("stream") is not True:
                raise _Refuse(400, "The 'stream_options' parameter is only allowed when "
                                   "'stream' is enabled.")
            if "max_tokens" in body and "max_completion_tokens" in body:
                raise _Refuse(400, "max_tokens and max_completion_tokens are exclusive")
            return body.get("stream") is True
        if kind == "openai-responses":
            _model(body)
            if not isinstance(body.get("input"), (str, list)):
                raise _Refuse(400, "Missing required parameter: 'input'.")
            if "stream_options" in body and body.get("stream") is not True:
                raise _Refuse(400, "stream_options requires stream")
            return body.get("stream") is True
        if kind == "anthropic":
            unknown = set(body) - _ANTHROPIC_FIELDS
            if unknown:
                raise _Refuse(400, f"{sorted(unknown)[0]}: Extra inputs are not permitted")
            max_tokens = body.get("max_tokens")
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
                raise _Refuse(400, "max_tokens: Field required")
            self._check_anthropic_messages(body)
            return body.get("stream") is True
        if kind == "ollama":
            _model(body)
            if not isinstance(body.get("messages", []), list):
                raise _Refuse(400, "messages must be an array")
            return body.get("stream", True) is not False  # Ollama streams unless told not to
        self._check_google(body)
        return request.path.endswith(":streamGenerateContent")

    def _check_anthropic_messages(self, body: dict[str, Any]) -> None:
        _model(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _Refuse(400, "messages: at least one message is required")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in _ANTHROPIC_ROLES:
                raise _Refuse(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
            content = message.get("content")
            if isinstance(content, str):
                if not content and i != len(messages) - 1:
                    raise _Refuse(400, f"messages.{i}: all messages must have non-empty content")
                continue
            if not isinstance(content, list) or not content:
                raise _Refuse(400, f"messages.{i}: all messages must have non-empty content")
            for j, block in enumerate(content):
                if not isinstance(block, dict) or "type" not in block:
                    raise _Refuse(400, f"messages.{i}.content.{j}.type: Field required")
                if block["type"] == "text" and not block.get("text"):
                    raise _Refuse(400, f"messages.{i}.content.{j}: text content blocks must be "
                                       "non-empty")

    def _check_google(
        self, body: dict[str, Any], allowed: frozenset[str] | set[str] | None = None
    ) -> None:
        known = _GOOGLE_FIELDS if allowed is None else allowed
        for key in body:
            if key not in known:
                raise _Refuse(400, f'Invalid JSON payload received. Unknown name "{key}": '
                                   "Cannot find field.")
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _Refuse(400, "* GenerateContentRequest.contents: contents is not specified")
        for i, content in enumerate(contents):
            role = content.get("role") if isinstance(content, dict) else None
            if role not in ("user", "model", None) or (self.kind == "vertex" and role is None):
                raise _Refuse(400, "Please use a valid role: user, model.")
            parts = content.get("parts") if isinstance(content, dict) else None
            if not isinstance(parts, list) or not parts:
                raise _Refuse(400, f"* GenerateContentRequest.contents[{i}].parts: contents.parts "
                                   "must not be empty.")
            for j, part in enumerate(parts):
                if not isinstance(part, dict) or not part:
                    raise _Refuse(400, f"* GenerateContentRequest.contents[{i}].parts[{j}].data: "
                                       "required oneof field 'data' must have one initialized "
                                       "field")

    # ----------------------------------------------------------------------------------------
    # Answers, as each vendor writes them

    def _model(self, body: Any, request: HttpRequest | None = None) -> str:
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            return str(body["model"])
        if request is not None:
            found = re.search(r"/models/([^/:]+):", request.path)
            if found:
                return found[1]
        return "model-a"

    def _whole(self, action: Answer, body: Any) -> dict[str, Any]:
        model = self._model(body)
        text, tool = action.text, action.tool
        usage_in, usage_out = action.input_tokens, action.output_tokens
        if self.kind == "openai":
            message: dict[str, Any] = {"role": "assistant", "content": text or None,
                                       "refusal": None, "annotations": []}
            if tool:
                message["tool_calls"] = [{"id": "call_abc123", "type": "function", "function": {
                    "name": tool[0], "arguments": dumps(tool[1]).decode()}}]
            return {
                "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion",
                "created": CREATED, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None,
                             "finish_reason": "tool_calls" if tool else "stop"}],
                "usage": {"prompt_tokens": usage_in, "completion_tokens": usage_out,
                          "total_tokens": usage_in + usage_out,
                          "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                          "completion_tokens_details": {"reasoning_tokens": 0,
                                                        "audio_tokens": 0}},
                "service_tier": "default", "system_fingerprint": "fp_50cad350e4",
            }
        if self.kind == "openai-responses":
            output: list[dict[str, Any]] = []
            if text:
                output.append({"type": "message", "id": "msg_67ccd3acc8d48190", "status":
                               "completed", "role": "assistant", "content": [
                                   {"type": "output_text", "text": text, "annotations": [],
                                    "logprobs": []}]})
            if tool:
                output.append({"type": "function_call", "id": "fc_67ccd3ae",
                               "call_id": "call_abc123", "name": tool[0],
                               "arguments": dumps(tool[1]).decode(), "status": "completed"})
            return {
                "id": "resp_67ccd3a9da748190", "object": "response", "created_at": CREATED,
                "status": "completed", "error": None, "incomplete_details": None,
                "model": model, "output": output, "parallel_tool_calls": True,
                "usage": {"input_tokens": usage_in, "input_tokens_details": {"cached_tokens": 0},
                          "output_tokens": usage_out,
                          "output_tokens_details": {"reasoning_tokens": 0},
                          "total_tokens": usage_in + usage_out},
            }
        if self.kind == "anthropic":
            content: list[dict[str, Any]] = []
            if text:
                content.append({"type": "text", "text": text})
            if tool:
                content.append({"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9",
                                "name": tool[0], "input": tool[1]})
            return {
                "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
                "model": model, "content": content,
                "stop_reason": "tool_use" if tool else "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": usage_in, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": usage_out,
                          "service_tier": "standard"},
            }
        if self.kind == "ollama":
            message = {"role": "assistant", "content": text}
            if tool:
                message["tool_calls"] = [{"id": "call_x1", "function": {
                    "index": 0, "name": tool[0], "arguments": tool[1]}}]
            return {
                "model": model, "created_at": CREATED_AT, "message": message, "done": True,
                "done_reason": "stop", "total_duration": 4883583458, "load_duration": 1334875,
                "prompt_eval_count": usage_in, "prompt_eval_duration": 342546000,
                "eval_count": usage_out, "eval_duration": 4535599000,
            }
        return self._google_chunk(text, tool, action, final=True)

    def _google_chunk(self, text: str, tool: tuple[str, dict[str, Any]] | None, action: Answer,
                      *, final: bool) -> dict[str, Any]:
        parts: list[dict[str, Any]] = []
        if text:
            parts.append({"text": text})
        if tool:
            parts.append({"functionCall": {"name": tool[0], "args": tool[1]},
                          "thoughtSignature": "CpQBAdHtim9kX2VnHvQb"})
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if final:
            candidate["finishReason"] = "STOP"
        chunk: dict[str, Any] = {
            "candidates": [candidate],
            "usageMetadata": {"promptTokenCount": action.input_tokens,
                              "totalTokenCount": action.input_tokens,
                              "promptTokensDetails": [{"modality": "TEXT",
                                                       "tokenCount": action.input_tokens}]},
            "modelVersion": "gemini-2.5-flash", "responseId": "mDdaaNm9GZ2Sz7IP8fGmuAE",
        }
        if final:
            chunk["usageMetadata"]["candidatesTokenCount"] = action.output_tokens
            chunk["usageMetadata"]["totalTokenCount"] = action.input_tokens + action.output_tokens
        if self.kind == "vertex":
            chunk["createTime"] = "2025-07-07T20:22:19.184789Z"
        return chunk

    def _wire(self, action: Answer, body: Any, request: HttpRequest) -> _Wire:
        model = self._model(body, request)
        pieces = _pieces(action.text, action.chunks)
        tool = action.tool
        args = dumps(tool[1]).decode() if tool else ""
        half = len(args) // 2
        if self.kind == "openai":
            include_usage = (body.get("stream_options") or {}).get("include_usage") is True
            head = {"id": "chatcmpl-B9MBs8CjcvOU2jLn", "object": "chat.completion.chunk",
                    "created": CREATED, "model": model, "service_tier": "default",
                    "system_fingerprint": "fp_50cad350e4"}

            def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
                data = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish}]}
                if include_usage:
                    data["usage"] = None
                return _sse(data)

            content = [chunk({"content": p}) for p in pieces]
            if tool:
                content.append(chunk({"tool_calls": [{"index": 0, "id": "call_abc123",
                                                      "type": "function", "function": {
                                                          "name": tool[0], "arguments": ""}}]}))
                content += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]})
                            for a in (args[:half], args[half:])]
            ending = [chunk({}, "tool_calls" if tool else "stop")]
            if include_usage:
                usage = {"prompt_tokens": action.input_tokens,
                         "completion_tokens": action.output_tokens,
                         "total_tokens": action.input_tokens + action.output_tokens,
                         "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                         "completion_tokens_details": {"reasoning_tokens": 0}}
                ending.append(_sse({**head, "choices": [], "usage": usage}))
            ending.append(b"data: [DONE]\n\n")
            error = _sse({"error": {"message": action.error_message, "type": "server_error",
                                    "param": None, "code": None}})
            prelude = [chunk({"role": "assistant", "content": "", "refusal": None})]
            return _Wire(prelude, content, ending, error)
        if self.kind == "openai-responses":
            return self._responses_wire(action, model, pieces, args, half)
        if self.kind == "anthropic":
            return self._anthropic_wire(action, model, pieces, args, half)
        if self.kind == "ollama":
            def line(message: dict[str, Any], **more: Any) -> bytes:
                data = {"model": model, "created_at": CREATED_AT,
                        "message": {"role": "assistant", **message}, "done": False, **more}
                return dumps(data) + b"\n"

            content = [line({"content": p}) for p in pieces]
            if tool:
                content.append(line({"content": "", "tool_calls": [{"id": "call_x1", "function": {
                    "index": 0, "name": tool[0], "arguments": tool[1]}}]}))
            ending = [line({"content": ""}, done=True, done_reason="stop",
                           total_duration=4883583458, load_duration=1334875,
                           prompt_eval_count=action.input_tokens,
                           prompt_eval_duration=342546000, eval_count=action.output_tokens,
                           eval_duration=4535599000)]
            error = dumps({"error": action.error_message}) + b"\n"
            return _Wire([], content, ending, error)
        # Gemini and Vertex, SSE (alt=sse): each chunk a whole GenerateContentResponse.
        sse = request.query.get("alt") == "sse"
        chunks = [self._google_chunk(p, None, action, final=False) for p in pieces]
        if tool:
            chunks.append(self._google_chunk("", tool, action, final=False))
        last = self._google_chunk("", None, action, final=True)
        last["candidates"][0]["content"]["parts"] = [{"text": ""}]  # the finish rides alone
        chunks.append(last)
        status = "UNAVAILABLE"
        error_body = {"error": {"code": 503, "message": action.error_message, "status": status}}
        if sse:
            content = [_sse(c, crlf=True) for c in chunks[:-1]]
            return _Wire([], content, [_sse(chunks[-1], crlf=True)], _sse(error_body, crlf=True))
        # Without alt=sse: one JSON array, written as it grows.
        texts = [dumps(c) for c in chunks]
        content = [(b"[" if i == 0 else b"\r\n,") + t for i, t in enumerate(texts[:-1])]
        error = b",\r\n" + dumps(error_body) + b"]"
        return _Wire([], content, [b"\r\n," + texts[-1] + b"]"], error)

    def _responses_wire(self, action: Answer, model: str, pieces: list[str], args: str,
                        half: int) -> _Wire:
        seq = iter(range(10_000))

        def event(type_: str, **data: Any) -> bytes:
            return _sse({"type": type_, "sequence_number": next(seq), **data}, event=type_)

        response = {"id": "resp_67ccd3a9da748190", "object": "response", "created_at": CREATED,
                    "status": "in_progress", "error": None, "incomplete_details": None,
                    "model": model, "output": [], "usage": None}
        prelude = [event("response.created", response=response),
                   event("response.in_progress", response=response)]
        content: list[bytes] = []
        output: list[dict[str, Any]] = []
        index = 0
        if pieces:
            item = {"id": "msg_67ccd3acc8d4", "type": "message", "status": "in_progress",
                    "role": "assistant", "content": []}
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            opening = [event("response.output_item.added", output_index=0, item=item),
                       event("response.content_part.added", item_id=item["id"], output_index=0,
                             content_index=0, part=part)]
            deltas = [event("response.output_text.delta", item_id=item["id"], output_index=0,
                            content_index=0, delta=p, logprobs=[]) for p in pieces]
            content.append(b"".join(opening) + deltas[0])
            content += deltas[1:]
            text = "".join(pieces)
            done_part = {**part, "text": text}
            done_item = {**item, "status": "completed", "content": [done_part]}
            content[-1] += (
                event("response.output_text.done", item_id=item["id"], output_index=0,
                      content_index=0, text=text, logprobs=[])
                + event("response.content_part.done", item_id=item["id"], output_index=0,
                        content_index=0, part=done_part)
                + event("response.output_item.done", output_index=0, item=done_item)
            )
            output.append(done_item)
            index = 1
        if action.tool:
            name = action.tool[0]
            item = {"id": "fc_67ccd3ae", "type": "function_call", "status": "in_progress",
                    "call_id": "call_abc123", "name": name, "arguments": ""}
            content.append(event("response.output_item.added", output_index=index, item=item))
            content += [event("response.function_call_arguments.delta", item_id=item["id"],
                              output_index=index, delta=a) for a in (args[:half], args[half:])]
            done_item = {**item, "status": "completed", "arguments": args}
            content[-1] += (
                event("response.function_call_arguments.done", item_id=item["id"],
                      output_index=index, name=name, arguments=args)
                + event("response.output_item.done", output_index=index, item=done_item)
            )
            output.append(done_item)
        usage = {"input_tokens": action.input_tokens, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": action.output_tokens,
                 "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": action.input_tokens + action.output_tokens}
        completed = {**response, "status": "completed", "output": output, "usage": usage}
        ending = [event("response.completed", response=completed)]
        error = _sse({"type": "error", "code": "server_error", "message": action.error_message,
                      "param": None, "sequence_number": 99}, event="error")
        return _Wire(prelude, content, ending, error)

    def _anthropic_wire(self, action: Answer, model: str, pieces: list[str], args: str,
                        half: int) -> _Wire:
        def event(type_: str, **data: Any) -> bytes:
            return _sse({"type": type_, **data}, event=type_)

        message = {"id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
                   "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": action.input_tokens,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                             "output_tokens": 1}}
        prelude = [event("message_start", message=message), event("ping")]
        content: list[bytes] = []
        index = 0
        if pieces:
            start = event("content_block_start", index=0,
                          content_block={"type": "text", "text": ""})
            deltas = [event("content_block_delta", index=0,
                            delta={"type": "text_delta", "text": p}) for p in pieces]
            content.append(start + deltas[0])
            content += deltas[1:]
            content[-1] += event("content_block_stop", index=0)
            index = 1
        if action.tool:
            content.append(event("content_block_start", index=index, content_block={
                "type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "name": action.tool[0], "input": {}}))
            content += [event("content_block_delta", index=index,
                              delta={"type": "input_json_delta", "partial_json": a})
                        for a in ("", args[:half], args[half:])]
            content[-1] += event("content_block_stop", index=index)
        ending = [
            event("message_delta", delta={"stop_reason": "tool_use" if action.tool else
                                          "end_turn", "stop_sequence": None},
                  usage={"output_tokens": action.output_tokens}),
            event("message_stop"),
        ]
        error = event("error", error={"type": "overloaded_error", "message": action.error_message})
        return _Wire(prelude, content, ending, error)

    # ----------------------------------------------------------------------------------------
    # Errors, as each vendor writes them

    def _fail(self, fail: Fail) -> HttpResponse:
        response = self._error(fail.status, fail.message, body=fail.body)
        return attrs.evolve(response, headers=[*response.headers, *fail.headers.items()])

    def _error(self, status: int, message: str, *, code: str | None = None,
               body: Any = None) -> HttpResponse:
        if body is None:
            body = self._error_body(status, message, code)
        data = body if isinstance(body, bytes) else dumps(body)
        content_type = "application/json" if not isinstance(body, bytes) else "text/html"
        return HttpResponse(status=status, headers=[("content-type", content_type)], body=data)

    def _error_body(self, status: int, message: str, code: str | None) -> Any:
        if self.kind in ("openai", "openai-responses"):
            type_ = {401: "invalid_request_error", 429: "requests", 500: "server_error"}.get(
                status, "invalid_request_error")
            return {"error": {"message": message, "type": type_, "param": None, "code": code}}
        if self.kind == "anthropic":
            type_ = {400: "invalid_request_error", 401: "authentication_error",
                     403: "permission_error", 404: "not_found_error", 429: "rate_limit_error",
                     500: "api_error", 529: "overloaded_error"}.get(status, "api_error")
            return {"type": "error", "error": {"type": type_, "message": message},
                    "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}
        if self.kind == "ollama":
            return {"error": message}
        google = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                  404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                  503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}.get(status, "UNKNOWN")
        error: dict[str, Any] = {"code": status, "message": message, "status": google}
        if code:
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                 "reason": code, "domain": "googleapis.com",
                                 "metadata": {"service": "generativelanguage.googleapis.com"}}]
        return {"error": error}


_OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_ANTHROPIC_ROLES = ("user", "assistant", "system")
_ANTHROPIC_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
    "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
    "container", "mcp_servers", "context_management", "output_config", "inference_geo",
})  # fmt: skip
_ANTHROPIC_COUNT_FIELDS = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"}
)
_GOOGLE_FIELDS = frozenset({
    "contents", "tools", "toolConfig", "tool_config", "safetySettings", "safety_settings",
    "systemInstruction", "system_instruction", "generationConfig", "generation_config",
    "cachedContent", "cached_content", "labels",
})  # fmt: skip
_VERTEX_COUNT_FIELDS = frozenset({"contents", "systemInstruction", "tools", "generationConfig"})


def _object(body: Any) -> None:
    if not isinstance(body, dict):
        raise _Refuse(400, "the request body must be a JSON object")


def _model(body: dict[str, Any]) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _Refuse(400, "model: Field required")


async def start(
    nursery: trio.Nursery, kind: str, keys: tuple[str, ...] = ("test-key-1",)
) -> FakeUpstream:
    """A fake upstream of ``kind`` listening on a free loopback port, served in ``nursery``."""
    upstream = FakeUpstream(kind, keys)
    server = Server(upstream.handle, limits=Limits(graceful_timeout=0.2, keep_alive_timeout=10))
    upstream.port = await nursery.start(server.serve, "127.0.0.1", 0)
    return upstream
