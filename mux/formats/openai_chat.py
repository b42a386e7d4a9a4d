"""OpenAI Chat Completions (``POST /v1/chat/completions``), both directions.

Client side: :func:`parse_request` reads what an OpenAI client sends, and
:func:`render_response`, :class:`StreamRenderer`, :func:`render_error` and
:func:`render_models` answer it. Upstream side: :func:`render_request` writes what an
OpenAI-compatible upstream receives, and :func:`parse_response`, :class:`StreamParser` and
:func:`parse_error` read its answers. Everything is pure; the stream classes are sans-io.

Mapping notes (protocols.md A and F are the reference):

* ``max_tokens`` and ``max_completion_tokens`` are both read; ``max_completion_tokens`` is
  written. ``reasoning_effort`` is :attr:`ir.ReasoningConfig.effort`, ``"none"`` also meaning
  disabled.
* Reasoning text travels the de-facto way, as ``reasoning_content`` on a message or delta
  (DeepSeek, vLLM); ``reasoning`` (OpenRouter, Ollama) is read too. A refusal becomes text.
* An assistant turn is reasoning, then content, then tool calls: the wire has no order
  between them, and its content is one string. In a request, separate (non-empty) text
  parts, and separate reasoning parts, are joined with a blank line (``"\n\n"``): they are
  separate blocks (Anthropic system or history blocks), and run together they would merge
  words. In a response they are joined as they are: a model's answer split into parts
  (Anthropic's citation blocks, Gemini's parts) is one text.
* A ``file`` part carries inline data (``file_data``) or a ``file_id``, never a URL: a
  document with neither (one known only by its URL) is left out of the request, as OpenAI
  rejects ``{"type": "file", "file": {}}``. It is not turned into a text part holding the
  URL: the model could not read the document anyway, and a bare URL invites it to make up
  what the document says.
* Tool results leave any message as ``tool`` messages, ahead of what else the message says.
* Fields the IR does not model travel in :class:`ir.Extra` and come back only in this format.

Errors: :func:`parse_request` raises only :class:`~mux.errors.RequestError`, naming the field
at fault; the upstream side raises only :class:`~mux.errors.UpstreamError`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from typing import Any

from mux import ir
from mux.errors import MuxError, RequestError, UpstreamError, kind_for_status, status_for_kind
from mux.formats._json import (
    Node,
    extract_extra,
    maybe,
    present,
    request_error,
    upstream_error,
    with_extra,
)
from mux.formats._parts import data_url, effort_for
from mux.framing import FramingError, SSEDecoder, SSEMessage, dumps, loads, sse

__all__ = [
    "NAME",
    "StreamParser",
    "StreamRenderer",
    "parse_error",
    "parse_request",
    "parse_response",
    "parse_usage",
    "render_error",
    "render_model",
    "render_models",
    "render_request",
    "render_response",
    "render_usage",
    "stream_error",
]

NAME = "openai_chat"

# --------------------------------------------------------------------------------------------
# Content parts

_ROLES = ("system", "developer", "user", "assistant", "tool")
# The part types each role's content array may hold (A.1), plus images and files in tool
# results, which OpenAI-compatible servers accept and the IR can carry.
_PART_TYPES = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text", "image_url", "file"),
}


def _parse_content(node: Node, role: str) -> list[Any]:
    """A string or an array of parts, as IR parts."""
    if isinstance(node.value, str):
        return [ir.Text(text=node.value)]
    if not isinstance(node.value, list):
        node.fail("a string or an array of content parts")
    return [_parse_part(part, _PART_TYPES[role]) for part in node.array()]


def _parse_part(node: Node, types: Sequence[str]) -> ir.Part:
    kind = node["type"].choice(types)
    cache = node["cache_control"].optional(Node.free_object)  # OpenRouter's, for Anthropic
    if kind == "text":
        return ir.Text(text=node["text"].string(), cache_control=cache)
    if kind == "refusal":
        return ir.Text(text=node["refusal"].string())
    if kind == "input_audio":
        audio = node["input_audio"]
        return ir.Audio(data=audio["data"].base64(), format=audio["format"].string())
    if kind == "image_url":
        image = node["image_url"]
        url, detail = image["url"], image["detail"].optional(Node.string)
        if not url.string().startswith("data:"):
            return ir.Image(url=url.value, detail=detail, cache_control=cache)
        media_type, data = url.data_url()
        return ir.Image(media_type=media_type, data=data, detail=detail, cache_control=cache)
    return _parse_file(node["file"], cache)


def _parse_file(node: Node, cache: dict[str, Any] | None) -> ir.Document:
    """A ``file`` part's object: ``file_data`` is a data URL (bare base64 is accepted)."""
    node.object()
    media_type: str | None = None
    data: bytes | None = None
    file_data = node["file_data"]
    if not file_data.absent:
        if file_data.string().startswith("data:"):
            media_type, data = file_data.data_url()
        else:
            data = file_data.base64()
    return ir.Document(
        media_type=media_type,
        data=data,
        file_id=node["file_id"].optional(Node.string),
        filename=node["filename"].optional(Node.string),
        cache_control=cache,
    )


def _render_part(part: ir.Part) -> dict[str, Any]:
    """A user or tool content part; the caller passes only those kinds."""
    if isinstance(part, ir.Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, ir.Audio):
        audio = {"data": base64.b64encode(part.data).decode(), "format": part.format}
        return {"type": "input_audio", "input_audio": audio}
    if isinstance(part, ir.Image):
        url = data_url(part.media_type, part.data) if part.data is not None else part.url
        return {"type": "image_url", "image_url": present(url=url or "", detail=part.detail)}
    assert isinstance(part, ir.Document)
    file_data = data_url(part.media_type, part.data) if part.data is not None else None
    file = present(file_data=file_data, file_id=part.file_id, filename=part.filename)
    return {"type": "file", "file": file}


def _has_chat_form(part: ir.Part) -> bool:
    """Whether a user or tool content part can be written: a document needs inline data or
    a file id (Chat's ``file`` part has no URL)."""
    return not isinstance(part, ir.Document) or part.data is not None or part.file_id is not None


def _render_content(parts: Sequence[ir.Part]) -> str | list[dict[str, Any]]:
    """One text part as a string, anything else as an array ("" when there is nothing);
    documents with no Chat form are left out."""
    parts = [part for part in parts if _has_chat_form(part)]
    if not parts:
        return ""
    if len(parts) == 1 and isinstance(parts[0], ir.Text):
        return parts[0].text
    return [_render_part(part) for part in parts]


def _parse_tool_call(node: Node) -> ir.ToolCall:
    node["type"].optional(lambda n: n.choice(("function",)))
    function = node["function"]
    arguments = function["arguments"]
    text = arguments.string() if not isinstance(arguments.value, dict) else arguments.compact("a JSON string or object")
    return ir.ToolCall(id=node["id"].string(), name=function["name"].string(), arguments=text)


def _parse_assistant(node: Node) -> list[ir.Part]:
    """An assistant message (request history or response): reasoning, content, tool calls."""
    parts: list[ir.Part] = []
    reasoning = node["reasoning_content"]
    reasoning = node["reasoning"] if reasoning.absent else reasoning
    if text := reasoning.optional(Node.string):
        parts.append(ir.Reasoning(text=text))
    content = node["content"]
    if not content.absent:
        parts += _parse_content(content, "assistant")
    if refusal := node["refusal"].optional(Node.string):
        parts.append(ir.Text(text=refusal))
    parts += [_parse_tool_call(call) for call in node["tool_calls"].optional(Node.array) or ()]
    return parts


def _joined(parts: Sequence[ir.Part], kind: type[ir.Text | ir.Reasoning], separator: str) -> str:
    """The non-empty texts of the ``kind`` parts, joined with ``separator``."""
    return separator.join(p.text for p in parts if isinstance(p, kind) and p.text)


#: What separates text parts merged into one string in a request (see the module notes).
_REQUEST_SEPARATOR = "\n\n"


def _render_assistant(parts: Sequence[ir.Part], separator: str = "") -> dict[str, Any]:
    """An assistant message: its text joined, its reasoning joined (with ``separator``),
    its tool calls."""
    texts = any(isinstance(part, ir.Text) for part in parts)
    content = _joined(parts, ir.Text, separator) if texts else None
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning := _joined(parts, ir.Reasoning, separator):
        message["reasoning_content"] = reasoning
    calls = [part for part in parts if isinstance(part, ir.ToolCall)]
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ]
    return message


# --------------------------------------------------------------------------------------------
# Requests

_REQUEST_FIELDS = frozenset(
    {
        "model", "messages", "tools", "tool_choice", "parallel_tool_calls", "max_tokens",
        "max_completion_tokens", "temperature", "top_p", "stop", "seed", "frequency_penalty",
        "presence_penalty", "n", "response_format", "reasoning_effort", "stream",
        "stream_options", "user", "metadata",
    }
)  # fmt: skip
_TOOL_CHOICE_MODES = ("none", "auto", "required")


def parse_request(body: object) -> ir.Request:
    """A client's request body (already JSON-decoded) as an IR request.

    Raises:
      RequestError: the body is not a valid Chat Completions request; the message and
        ``param`` name the field at fault.
    """
    root = Node(body, "", request_error)
    root.object()
    model = root["model"].string()
    if not model:
        root["model"].fail("a model name", "an empty string")
    messages = root["messages"].array()
    if not messages:
        root["messages"].fail("a non-empty array", "an empty array")
    stream = bool(root["stream"].optional(Node.boolean))
    options = root["stream_options"]
    if not options.absent and not stream:
        raise RequestError("stream_options: only allowed when stream is true", param=options.path)
    known, tool_choice = _REQUEST_FIELDS, root["tool_choice"]
    if isinstance(tool_choice.value, dict) and tool_choice.value.get("type") != "function":
        # allowed_tools and custom choices have no IR counterpart: they travel in Extra.
        known, tool_choice = known - {"tool_choice"}, Node(None, "", request_error)
    max_tokens = root["max_completion_tokens"]
    max_tokens = root["max_tokens"] if max_tokens.absent else max_tokens
    return ir.Request(
        model=model,
        messages=[_parse_message(message) for message in messages],
        tools=[_parse_tool(tool) for tool in root["tools"].optional(Node.array) or ()],
        tool_choice=tool_choice.optional(_parse_tool_choice),
        parallel_tool_calls=root["parallel_tool_calls"].optional(Node.boolean),
        max_tokens=max_tokens.optional(Node.positive),
        temperature=root["temperature"].optional(Node.number),
        top_p=root["top_p"].optional(Node.number),
        stop=_parse_stop(root["stop"]),
        seed=root["seed"].optional(Node.integer),
        frequency_penalty=root["frequency_penalty"].optional(Node.number),
        presence_penalty=root["presence_penalty"].optional(Node.number),
        n=root["n"].optional(Node.positive),
        response_format=root["response_format"].optional(_parse_response_format),
        reasoning=root["reasoning_effort"].optional(_parse_effort),
        stream=stream,
        stream_usage=bool(options["include_usage"].optional(Node.boolean)),
        user=root["user"].optional(Node.string),
        metadata=root["metadata"].optional(_parse_metadata) or {},
        extra=extract_extra(root, known, NAME),
    )


def _parse_message(node: Node) -> ir.Message:
    node.object()
    role = node["role"].choice(_ROLES)
    if role == "tool":
        call_id = node["tool_call_id"].string()
        content = _parse_content(node["content"], role)
        result = ir.ToolResult(call_id=call_id, content=content)
        return ir.Message(role=ir.Role.TOOL, content=[result])
    if role == "assistant":
        content = _parse_assistant(node)
    else:
        content = _parse_content(node["content"], role)
    name = node["name"].optional(Node.string)
    return ir.Message(role=ir.Role(role), content=content, name=name)


def _parse_tool(node: Node) -> ir.Tool:
    node["type"].choice(("function",))
    function = node["function"]
    return ir.Tool(
        name=function["name"].string(),
        description=function["description"].optional(Node.string),
        parameters=function["parameters"].optional(Node.free_object),
        strict=function["strict"].optional(Node.boolean),
    )


def _parse_tool_choice(node: Node) -> ir.ToolChoice:
    if isinstance(node.value, str):
        return ir.ToolChoice(mode=ir.ToolChoiceMode(node.choice(_TOOL_CHOICE_MODES)))
    if not isinstance(node.value, dict):
        node.fail("a string or an object")
    return ir.ToolChoice(mode=ir.ToolChoiceMode.TOOL, name=node["function"]["name"].string())


def _parse_stop(node: Node) -> tuple[str, ...]:
    if isinstance(node.value, str):
        return (node.value,)
    if not node.absent and not isinstance(node.value, list):
        node.fail("a string or an array of strings")
    return tuple(item.string() for item in node.optional(Node.array) or ())


def _parse_metadata(node: Node) -> dict[str, str]:
    return {key: node[key].string() for key in node.object()}


def _parse_response_format(node: Node) -> ir.ResponseFormat:
    kind = ir.ResponseFormatType(node["type"].choice([t.value for t in ir.ResponseFormatType]))
    if kind is not ir.ResponseFormatType.JSON_SCHEMA:
        return ir.ResponseFormat(type=kind)
    schema = node["json_schema"]
    return ir.ResponseFormat(
        type=kind,
        schema=schema["schema"].optional(Node.free_object),
        name=schema["name"].optional(Node.string),
        description=schema["description"].optional(Node.string),
        strict=schema["strict"].optional(Node.boolean),
    )


def _parse_effort(node: Node) -> ir.ReasoningConfig:
    effort = node.string()
    return ir.ReasoningConfig(effort=effort, enabled=False if effort == "none" else None)


# Token budgets mapped to efforts when a budget is all a request gives (F.6's heuristic):
# the first effort whose ceiling the budget does not exceed.
def render_request(request: ir.Request) -> dict[str, Any]:
    """``request`` as the JSON body an OpenAI-compatible upstream receives."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [m for message in request.messages for m in _render_message(message)],
    }
    if request.tools:
        body["tools"] = [_render_tool(tool) for tool in request.tools]
    if request.stop:
        body["stop"] = list(request.stop)
    if request.metadata:
        body["metadata"] = dict(request.metadata)
    if request.stream:
        body["stream"] = True
        if request.stream_usage:
            body["stream_options"] = {"include_usage": True}
    body |= present(
        tool_choice=maybe(request.tool_choice, _render_tool_choice),
        parallel_tool_calls=request.parallel_tool_calls,
        max_completion_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        frequency_penalty=request.frequency_penalty,
        presence_penalty=request.presence_penalty,
        n=request.n,
        response_format=maybe(request.response_format, _render_format),
        reasoning_effort=maybe(request.reasoning, effort_for),
        user=request.user,
    )
    return with_extra(body, request.extra, NAME)


# What system, developer and user messages can say; anything else in them is dropped.
_RENDERED_PARTS: dict[ir.Role, tuple[type, ...]] = {
    ir.Role.SYSTEM: (ir.Text,),
    ir.Role.DEVELOPER: (ir.Text,),
    ir.Role.USER: (ir.Text, ir.Image, ir.Document, ir.Audio),
}


def _render_message(message: ir.Message) -> list[dict[str, Any]]:
    """One IR message as Chat messages: a ``tool`` message per tool result, then the rest."""
    results = [part for part in message.content if isinstance(part, ir.ToolResult)]
    rendered = [
        {"role": "tool", "tool_call_id": r.call_id, "content": _render_content(r.content)}
        for r in results
    ]
    if message.role is ir.Role.TOOL or (results and len(results) == len(message.content)):
        return rendered
    if message.role is ir.Role.ASSISTANT:
        out = _render_assistant(message.content, _REQUEST_SEPARATOR)
    else:
        kinds = _RENDERED_PARTS[message.role]
        parts = [part for part in message.content if isinstance(part, kinds)]
        out = {"role": message.role.value, "content": _render_content(parts)}
    if message.name is not None:
        out["name"] = message.name
    return [*rendered, out]


def _render_tool(tool: ir.Tool) -> dict[str, Any]:
    function = present(
        name=tool.name, description=tool.description, parameters=tool.parameters, strict=tool.strict
    )
    return {"type": "function", "function": function}


def _render_tool_choice(choice: ir.ToolChoice) -> str | dict[str, Any]:
    if choice.mode is not ir.ToolChoiceMode.TOOL:
        return str(choice.mode.value)
    if choice.name is None:  # "some tool, this one" without a name: the closest is any tool
        return "required"
    return {"type": "function", "function": {"name": choice.name}}


def _render_format(format_: ir.ResponseFormat) -> dict[str, Any]:
    if format_.type is not ir.ResponseFormatType.JSON_SCHEMA:
        return {"type": format_.type.value}
    schema = present(
        name=format_.name,
        description=format_.description,
        schema=format_.schema,
        strict=format_.strict,
    )
    return {"type": "json_schema", "json_schema": schema}


# --------------------------------------------------------------------------------------------
# Responses

_RESPONSE_FIELDS = frozenset({"id", "object", "created", "model", "choices", "usage"})


def _finish_reason(stop: ir.StopReason, tool_calls: bool) -> str:
    """F.2: limits and filters win; then any tool call makes a ``tool_calls`` turn."""
    if stop is ir.StopReason.MAX_TOKENS:
        return "length"
    if stop is ir.StopReason.CONTENT_FILTER:
        return "content_filter"
    return "tool_calls" if tool_calls or stop is ir.StopReason.TOOL_USE else "stop"


def _stop_reason(finish: str | None, tool_calls: bool) -> ir.StopReason:
    """The inverse of :func:`_finish_reason`; ``stop`` with tool calls is a tool turn (F.2)."""
    if finish == "length":
        return ir.StopReason.MAX_TOKENS
    if finish == "content_filter":
        return ir.StopReason.CONTENT_FILTER
    if tool_calls or finish in ("tool_calls", "function_call"):
        return ir.StopReason.TOOL_USE
    return ir.StopReason.END_TURN


def _count(node: Node) -> int:
    return node.optional(lambda n: n.integer(minimum=0)) or 0


def parse_usage(node: Node) -> ir.Usage:
    return ir.Usage(
        input_tokens=_count(node["prompt_tokens"]),
        output_tokens=_count(node["completion_tokens"]),
        cache_read_tokens=_count(node["prompt_tokens_details"]["cached_tokens"]),
        cache_write_tokens=_count(node["prompt_tokens_details"]["cache_write_tokens"]),
        reasoning_tokens=_count(node["completion_tokens_details"]["reasoning_tokens"]),
    )


def render_usage(usage: ir.Usage) -> dict[str, Any]:
    """F.3; ``cache_write_tokens`` only when there are some, as OpenAI reports it."""
    prompt_details = {"cached_tokens": usage.cache_read_tokens}
    if usage.cache_write_tokens:
        prompt_details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def parse_response(body: object) -> ir.Response:
    """An upstream's ``chat.completion`` object as an IR response (its first choice).

    Raises:
      UpstreamError: the body is not a chat completion.
    """
    root = Node(body, "", upstream_error)
    root.object()
    choices = root["choices"].array()
    content: list[ir.Part] = _parse_assistant(choices[0]["message"]) if choices else []
    finish = choices[0]["finish_reason"].optional(Node.string) if choices else None
    tool_calls = any(isinstance(part, ir.ToolCall) for part in content)
    return ir.Response(
        id=root["id"].optional(Node.string) or "",
        model=root["model"].optional(Node.string) or "",
        content=content,
        stop_reason=_stop_reason(finish, tool_calls),
        usage=root["usage"].optional(parse_usage) or ir.Usage(),
        created=root["created"].optional(Node.integer),
        extra=extract_extra(root, _RESPONSE_FIELDS, NAME),
    )


def render_response(response: ir.Response) -> dict[str, Any]:
    """``response`` as a ``chat.completion`` object for an OpenAI client."""
    tool_calls = any(isinstance(part, ir.ToolCall) for part in response.content)
    choice = {
        "index": 0,
        "message": {**_render_assistant(response.content), "refusal": None},
        "logprobs": None,
        "finish_reason": _finish_reason(response.stop_reason, tool_calls),
    }
    body = {
        "id": response.id,
        "object": "chat.completion",
        "created": int(time.time()) if response.created is None else response.created,
        "model": response.model,
        "choices": [choice],
        "usage": render_usage(response.usage),
    }
    return with_extra(body, response.extra, NAME)


# --------------------------------------------------------------------------------------------
# Errors and models

# One error type per kind, so that a mid-stream error (which has no status) keeps its kind.
_ERROR_TYPES = {
    ir.ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ir.ErrorKind.AUTHENTICATION: "authentication_error",
    ir.ErrorKind.PERMISSION: "permission_error",
    ir.ErrorKind.NOT_FOUND: "not_found_error",
    ir.ErrorKind.REQUEST_TOO_LARGE: "request_too_large",
    ir.ErrorKind.RATE_LIMIT: "rate_limit_error",
    ir.ErrorKind.TIMEOUT: "timeout_error",
    ir.ErrorKind.OVERLOADED: "overloaded_error",
    ir.ErrorKind.UPSTREAM: "upstream_error",
    ir.ErrorKind.INTERNAL: "server_error",
}
_ERROR_KINDS = {type_: kind for kind, type_ in _ERROR_TYPES.items()}


def render_error(error: MuxError) -> dict[str, Any]:
    """``error`` in OpenAI's envelope (A.6); the HTTP status is ``error.status``."""
    code = "rate_limit_exceeded" if error.kind is ir.ErrorKind.RATE_LIMIT else None
    if error.kind is ir.ErrorKind.NOT_FOUND and error.param == "model":
        code = "model_not_found"
    type_ = _ERROR_TYPES[error.kind]
    return {"error": {"message": error.message, "type": type_, "param": error.param, "code": code}}


def parse_error(status: int, body: object) -> MuxError:
    """An upstream's error answer (HTTP ``status``, decoded ``body``) as an error to report.

    The kind follows the status; the upstream's message is kept when it has one.
    """
    error = body.get("error") if isinstance(body, dict) else None
    message: object = error.get("message") if isinstance(error, dict) else error
    if isinstance(body, dict) and message is None:
        message = body.get("message")
    elif isinstance(body, str):
        message = body.strip()[:1000]
    param = error.get("param") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        message = f"the upstream answered HTTP {status} without an error message"
    return UpstreamError(
        kind_for_status(status),
        message,
        status=status,
        param=param if isinstance(param, str) else None,
    )


def stream_error(value: object) -> ir.StreamError:
    """A mid-stream ``{"error": ...}`` chunk's error; its kind from ``code`` or ``type``."""
    error = value if isinstance(value, dict) else {"message": value}
    message, code = error.get("message"), error.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        kind, status = kind_for_status(code), code
    else:
        type_ = error.get("type")
        kind = _ERROR_KINDS.get(type_ if isinstance(type_, str) else "", ir.ErrorKind.UPSTREAM)
        status = status_for_kind(kind)
    if not isinstance(message, str) or not message:
        message = "the upstream stream failed without an error message"
    return ir.StreamError(kind=kind, message=message, status=status)


def render_model(model: ir.ModelInfo) -> dict[str, Any]:
    """One model object (A.5)."""
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}


def render_models(models: Sequence[ir.ModelInfo]) -> dict[str, Any]:
    """The model list (A.5)."""
    return {"object": "list", "data": [render_model(model) for model in models]}


# --------------------------------------------------------------------------------------------
# Streams


class StreamRenderer:
    """IR stream events to the SSE bytes an OpenAI client reads (A.3, protocols.md 0).

    The SDK's accumulator concatenates strings, so ``role`` goes out once (in a first chunk
    sent at :class:`ir.StreamStart`) and a tool call's ``id``/``type``/``name`` only in its
    first fragment; every tool-call entry carries its ``index``, counted over tool calls.
    After :class:`ir.Finish` come the finish chunk, the usage chunk (when the request asked
    for usage; every chunk before it then carries ``"usage": null``) and ``[DONE]``. A
    :class:`ir.StreamError` becomes an ``{"error": ...}`` chunk. Events after either end are
    dropped: nothing more can be said to the client.
    """

    def __init__(self, request: ir.Request) -> None:
        self._include_usage = request.stream_usage
        self._head: dict[str, Any] | None = None  # id, object, created, model of every chunk
        self._tool_index: dict[int, int] = {}  # IR part index -> Chat tool-call index
        self._usage = ir.Usage()
        self._ended = False

    def render(self, event: ir.Event) -> bytes:
        """The bytes for ``event``; may be empty.

        Raises:
          ValueError: a content event came before :class:`ir.StreamStart`.
        """
        if self._ended:
            return b""
        match event:
            case ir.StreamStart():
                created = int(time.time()) if event.created is None else event.created
                self._head = {
                    "id": event.id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": event.model,
                }
                return self._chunk({"role": "assistant", "content": ""})
            case ir.TextDelta(text=text) if text:
                return self._chunk({"content": text})
            case ir.ReasoningDelta(text=text) if text:
                return self._chunk({"reasoning_content": text})
            case ir.ToolCallStart():
                index = self._tool_index[event.index] = len(self._tool_index)
                function = {"name": event.name, "arguments": ""}
                call = {"index": index, "id": event.id, "type": "function", "function": function}
                return self._chunk({"tool_calls": [call]})
            case ir.ToolArgsDelta(json=fragment) if fragment:
                index = self._tool_index[event.index]
                call = {"index": index, "function": {"arguments": fragment}}
                return self._chunk({"tool_calls": [call]})
            case ir.UsageUpdate():
                self._usage = event.usage
            case ir.Finish():
                self._ended = True
                reason = _finish_reason(event.stop_reason, bool(self._tool_index))
                out = self._chunk({}, reason)
                if self._include_usage:
                    usage = {**self._start(), "choices": [], "usage": render_usage(self._usage)}
                    out += sse(dumps(usage))
                return out + sse("[DONE]")
            case ir.StreamError():
                self._ended = True
                error = MuxError(event.kind, event.message, status=event.status)
                return sse(dumps(render_error(error)))
        return b""

    def _start(self) -> dict[str, Any]:
        if self._head is None:
            raise ValueError("a stream must begin with StreamStart")
        return self._head

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk = {**self._start(), "choices": [choice]}
        if self._include_usage:
            chunk["usage"] = None
        return sse(dumps(chunk))


class StreamParser:
    """An upstream's SSE bytes (Chat chunks) to IR stream events.

    Each run of text, each run of reasoning and each tool call becomes one part, ended by
    :class:`ir.PartEnd` when the next part begins or the choice finishes. Usage and the
    finish are held until the end (OpenAI sends usage after ``finish_reason``, in a
    ``choices: []`` chunk) and come out as :class:`ir.UsageUpdate` then :class:`ir.Finish`
    at that chunk, at ``[DONE]`` or at :meth:`close`. Only the first choice is read.

    Raises (from :meth:`feed` and :meth:`close`):
      UpstreamError: the bytes are not a Chat Completions stream.
    """

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._started = False
        self._next_index = 0  # the IR index of the next part
        self._part: tuple[str, int] | None = None  # the open part: ("text", 0), ("tool", 3)...
        self._tools: dict[int, int] = {}  # Chat tool-call index -> IR part index
        self._finish: str | None = None  # the finish_reason, once seen
        self._usage: ir.Usage | None = None
        self._done = False

    def feed(self, data: bytes) -> list[ir.Event]:
        """The events the bytes ``data`` completed."""
        return self._decode(self._sse.feed, data)

    def close(self) -> list[ir.Event]:
        """End of the upstream body: the held finish, or an error if the stream broke off."""
        events = self._decode(lambda _: self._sse.close(), b"")
        return events if self._done else events + self._end()

    def _decode(self, decode: Callable[[bytes], list[SSEMessage]], data: bytes) -> list[ir.Event]:
        try:
            messages = decode(data)
        except FramingError as exc:
            message = f"malformed upstream stream: {exc}"
            raise UpstreamError(ir.ErrorKind.UPSTREAM, message) from exc
        return [event for message in messages for event in self._message(message.data)]

    def _message(self, data: str) -> list[ir.Event]:
        if self._done or not data.strip():
            return []
        if data.startswith("[DONE]"):
            return self._end()
        try:
            chunk = Node(loads(data), "", upstream_error)
        except FramingError as exc:
            message = f"malformed upstream chunk: {exc}"
            raise UpstreamError(ir.ErrorKind.UPSTREAM, message) from exc
        chunk.object()
        error = chunk["error"]
        if not error.absent and error.value:  # the SDK's test: a truthy "error"
            self._done = True
            return [stream_error(error.value)]
        events: list[ir.Event] = []
        if not self._started:
            self._started = True
            events.append(
                ir.StreamStart(
                    id=chunk["id"].optional(Node.string) or "",
                    model=chunk["model"].optional(Node.string) or "",
                    created=chunk["created"].optional(Node.integer),
                )
            )
        choices = chunk["choices"].optional(Node.array) or []
        for choice in choices:
            if (choice["index"].optional(Node.integer) or 0) != 0 or self._finish is not None:
                continue
            events += self._choice(choice)
            if finish := choice["finish_reason"].optional(Node.string):
                events += self._close_part()
                self._finish = finish
        if not chunk["usage"].absent:
            self._usage = parse_usage(chunk["usage"])
            if self._finish is not None and not choices:  # OpenAI's closing usage chunk
                events += self._end()
        return events

    def _choice(self, choice: Node) -> list[ir.Event]:
        """The events of the first choice's content in one chunk (Completions overrides it)."""
        return [] if choice["delta"].absent else self._delta(choice["delta"])

    def _delta(self, delta: Node) -> list[ir.Event]:
        events: list[ir.Event] = []
        reasoning = delta["reasoning_content"]
        reasoning = delta["reasoning"] if reasoning.absent else reasoning
        if text := reasoning.optional(Node.string):
            index = self._open("reasoning", events)
            events.append(ir.ReasoningDelta(index=index, text=text))
        for key in ("content", "refusal"):
            if text := delta[key].optional(Node.string):
                events.append(ir.TextDelta(index=self._open("text", events), text=text))
        for call in delta["tool_calls"].optional(Node.array) or ():
            events += self._tool_call(call)
        return events

    def _tool_call(self, call: Node) -> list[ir.Event]:
        events: list[ir.Event] = []
        index = call["index"].optional(Node.integer)
        if index is None:  # some compatible servers omit it: a new id means a new call
            current = [i for i, part in self._tools.items() if ("tool", part) == self._part]
            new = call["id"].optional(Node.string) is not None or not current
            index = max(self._tools, default=-1) + 1 if new else current[0]
        function = call["function"]
        if index not in self._tools:
            name = function["name"].string()
            part = self._tools[index] = self._open("tool", events)
            call_id = call["id"].optional(Node.string) or f"call_{part}"
            events.append(ir.ToolCallStart(index=part, id=call_id, name=name))
        elif self._part != ("tool", self._tools[index]):
            call["index"].fail("the index of the tool call being streamed", str(index))
        if arguments := function["arguments"].optional(Node.string):
            events.append(ir.ToolArgsDelta(index=self._tools[index], json=arguments))
        return events

    def _open(self, kind: str, events: list[ir.Event]) -> int:
        """The index of the open part of ``kind``; another part is ended and one opened if
        need be (a tool call is always a new part)."""
        if self._part is None or self._part[0] != kind or kind == "tool":
            events += self._close_part()
            self._part = (kind, self._next_index)
            self._next_index += 1
        return self._part[1]

    def _close_part(self) -> list[ir.Event]:
        if self._part is None:
            return []
        index, self._part = self._part[1], None
        return [ir.PartEnd(index=index)]

    def _end(self) -> list[ir.Event]:
        self._done = True
        if self._finish is None:
            message = "the upstream stream ended without a finish reason"
            return [ir.StreamError(kind=ir.ErrorKind.UPSTREAM, message=message, status=502)]
        usage = [] if self._usage is None else [ir.UsageUpdate(usage=self._usage)]
        return [*usage, ir.Finish(stop_reason=_stop_reason(self._finish, bool(self._tools)))]
