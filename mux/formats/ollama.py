"""The Ollama native API (``/api/chat``, ``/api/generate`` and the metadata endpoints).

Client side: :func:`parse_request` and :func:`parse_generate_request` read what an Ollama
client sends; :func:`render_response`, :func:`render_generate_response`,
:class:`StreamRenderer`, :class:`GenerateStreamRenderer`, :func:`render_error` and the
metadata renderers (:func:`render_tags`, :func:`render_show`, :func:`render_ps`,
:data:`VERSION`) answer it. Upstream side: :func:`render_request` writes the ``/api/chat``
body an Ollama server receives, and :func:`parse_response`, :class:`StreamParser` and
:func:`parse_error` read its answers. Everything is pure; the stream classes are sans-io.

Mapping notes (protocols.md E, F and G are the reference):

* ``stream`` defaults to **true**, so :func:`render_request` always writes it.
* A message is one ``content`` string, a ``thinking`` string, raw base64 ``images`` and
  ``tool_calls``; an IR message is read back as reasoning, text, images, tool calls, and
  its text parts (and reasoning parts) are joined when written: in a request, the non-empty
  ones with a blank line (``"\n\n"``), as they are separate blocks (Anthropic's system
  blocks would otherwise run together, ``"You are terse.Use metric units."``); in an
  answer, as they are, since a model's answer split into parts (Anthropic's citation
  blocks, Gemini's parts) is one text. Images go out on user and
  tool messages only; documents, audio and images by URL have no Ollama form (a gateway
  must fetch URLs before this module sees them).
* Images carry no media type: it is sniffed from the bytes (PNG, JPEG, GIF, WebP).
* Tool-call ``arguments`` are an object on the wire and JSON text in the IR. Text that is
  not a JSON object goes out as ``{"_raw": text}`` (F.4). Calls without an ``id`` get
  ``call_<n>``, ``n`` counting the calls of the request, response or stream.
* Tool results are ``tool`` messages with ``tool_call_id`` and ``tool_name``; a missing
  name is rebuilt from the assistant call with that id, and a result without an id answers
  the oldest unanswered call of the preceding assistant turn (with that name, if given).
* ``options`` holds the sampling knobs; the ones the IR does not model, ``keep_alive``,
  ``logprobs`` and the other top-level fields travel in :class:`ir.Extra`.
* ``think`` is a boolean or a level; ``"max"`` is the IR's ``xhigh``.
* ``done_reason`` is ``length`` or ``stop``; Ollama has no tool-call reason, so a ``stop``
  turn with tool calls reads as :attr:`ir.StopReason.TOOL_USE` (F.2).
* Usage is ``prompt_eval_count`` and ``eval_count``, omitted when zero as Ollama does;
  Ollama answers have no id, so the IR's is ``""``.

Errors: :func:`parse_request` raises only :class:`~mux.errors.RequestError`, naming the field
at fault; the upstream side raises only :class:`~mux.errors.UpstreamError`.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mux import ir
from mux.errors import MuxError, UpstreamError, kind_for_status
from mux.formats._json import (
    Node,
    extract_extra,
    maybe,
    present,
    request_error,
    upstream_error,
    with_extra,
)
from mux.formats._parts import arguments_object, compact_arguments, sniff_image_type
from mux.framing import FramingError, NDJSONDecoder, dumps, ndjson

__all__ = [
    "CONTENT_TYPE",
    "NAME",
    "VERSION",
    "GenerateStreamRenderer",
    "StreamParser",
    "StreamRenderer",
    "is_load",
    "parse_error",
    "parse_generate_request",
    "parse_request",
    "parse_response",
    "render_error",
    "render_generate_response",
    "render_load",
    "render_ps",
    "render_request",
    "render_response",
    "render_show",
    "render_tags",
]

NAME = "ollama"
#: What ``GET /api/version`` reports. Clients gate features on it (VS Code's Copilot wants
#: 0.6.4 or later), so it names a release that has every field this module speaks:
#: thinking (0.9), tool-call ids and ``tool_name`` (0.12).
VERSION = "0.12.0"
#: The content type of Ollama streams.
CONTENT_TYPE = "application/x-ndjson"

# What /api/show and /api/ps report for every model: the IR knows nothing of sizes or
# architectures. The context length is what clients use to size prompts; 128 Ki is the
# common window of current models.
_ARCHITECTURE = "mux"
_CONTEXT_LENGTH = 131072
_CAPABILITIES = ("completion", "tools", "thinking", "vision")
# /api/ps's expires_at for models that never unload (Ollama's own keep_alive -1 answer is
# a date centuries ahead, too).
_NEVER = "2318-01-01T00:00:00Z"


# --------------------------------------------------------------------------------------------
# Times


def _rfc3339(unix: int) -> str:
    """A Unix time as RFC 3339 UTC, as Ollama writes ``created_at`` (the SDK validates it)."""
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(node: Node) -> int:
    """An RFC 3339 time (Go writes up to nine fractional digits) as whole Unix seconds."""
    try:
        moment = datetime.datetime.fromisoformat(node.string())
    except ValueError:
        node.fail("an RFC 3339 time", repr(node.value[:40]))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() // 1)


# --------------------------------------------------------------------------------------------
# Messages

_ROLES = ("system", "user", "assistant", "tool")


def _parse_images(node: Node) -> list[ir.Image]:
    """Raw base64 images, media type sniffed; a data URL is accepted too."""
    images = []
    for item in node.optional(Node.array) or ():
        if item.string().startswith("data:"):
            media_type, data = item.data_url()
        else:
            data = item.base64()
            media_type = sniff_image_type(data)
        images.append(ir.Image(media_type=media_type, data=data))
    return images


def _texts_and_images(node: Node) -> list[ir.Part]:
    parts: list[ir.Part] = []
    if text := node["content"].optional(Node.string):
        parts.append(ir.Text(text=text))
    return parts + _parse_images(node["images"])


class _Calls:
    """Mints ids for tool calls that come without one, and pairs tool results that come
    without one with the calls they answer."""

    def __init__(self) -> None:
        self.count = 0  # the calls seen so far: the next minted id is call_<count>
        self.unanswered: list[tuple[str, str]] = []  # (id, name) of the last assistant turn

    def call(self, node: Node) -> ir.ToolCall:
        node["type"].optional(lambda n: n.choice(("function",)))
        function = node["function"]
        arguments = function["arguments"]
        if isinstance(arguments.value, str):  # lenient: OpenAI's JSON text
            text = arguments.value
        else:
            try:
                text = compact_arguments(arguments.optional(Node.free_object) or {})
            except (ValueError, TypeError, RecursionError):
                arguments.fail("an object", "an object that cannot be encoded")
        call_id = node["id"].optional(Node.string) or f"call_{self.count}"
        self.count += 1
        return ir.ToolCall(id=call_id, name=function["name"].string(), arguments=text)

    def result(self, node: Node) -> ir.ToolResult:
        name = node["tool_name"].optional(Node.string)
        call_id = node["tool_call_id"].optional(Node.string)
        for position, (pending_id, pending_name) in enumerate(self.unanswered):
            if call_id == pending_id or (call_id is None and name in (None, pending_name)):
                del self.unanswered[position]
                call_id = pending_id
                break
        if call_id is None:  # a result answering no call: it still needs an id
            call_id = f"call_{self.count}"
            self.count += 1
        return ir.ToolResult(call_id=call_id, content=_texts_and_images(node), name=name)


def _parse_assistant(node: Node, calls: _Calls) -> list[ir.Part]:
    """An assistant message (request history or answer): reasoning, text, images, calls."""
    parts: list[ir.Part] = []
    if thinking := node["thinking"].optional(Node.string):
        parts.append(ir.Reasoning(text=thinking))
    parts += _texts_and_images(node)
    return parts + [calls.call(call) for call in node["tool_calls"].optional(Node.array) or ()]


def _parse_message(node: Node, calls: _Calls) -> ir.Message:
    node.object()
    role = node["role"].choice(_ROLES)
    if role == "tool":
        return ir.Message(role=ir.Role.TOOL, content=[calls.result(node)])
    if role == "assistant":
        content = _parse_assistant(node, calls)
        calls.unanswered = [(p.id, p.name) for p in content if isinstance(p, ir.ToolCall)]
        return ir.Message(role=ir.Role.ASSISTANT, content=content)
    return ir.Message(role=ir.Role(role), content=_texts_and_images(node))


#: What separates text parts joined into one string in a request (see the module notes).
_REQUEST_SEPARATOR = "\n\n"


def _joined(
    parts: Iterable[ir.Part], kind: type[ir.Text] | type[ir.Reasoning], separator: str = ""
) -> str:
    """The non-empty texts of the ``kind`` parts, joined with ``separator``."""
    return separator.join(part.text for part in parts if isinstance(part, kind) and part.text)


def _render_images(parts: Iterable[ir.Part]) -> list[str]:
    """Inline images as raw base64; images by URL have no Ollama form and are left out."""
    return [
        base64.b64encode(p.data).decode()
        for p in parts
        if isinstance(p, ir.Image) and p.data is not None
    ]


def _render_tool_call(call: ir.ToolCall, index: int | None = None) -> dict[str, Any]:
    function: dict[str, Any] = {"name": call.name, "arguments": arguments_object(call.arguments)}
    if index is not None:  # answers number their calls, as Ollama's own do
        function = {"index": index, **function}
    return {"id": call.id, "function": function}


def _render_assistant(parts: Sequence[ir.Part]) -> dict[str, Any]:
    """An assistant message of a request's history: its text joined, its reasoning
    joined, its tool calls."""
    text = _joined(parts, ir.Text, _REQUEST_SEPARATOR)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if thinking := _joined(parts, ir.Reasoning, _REQUEST_SEPARATOR):
        message["thinking"] = thinking
    calls = [_render_tool_call(part) for part in parts if isinstance(part, ir.ToolCall)]
    if calls:
        message["tool_calls"] = calls
    return message


def _render_with_images(role: str, parts: Sequence[ir.Part]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": role, "content": _joined(parts, ir.Text, _REQUEST_SEPARATOR)}
    if images := _render_images(parts):
        message["images"] = images
    return message


def _render_messages(messages: Sequence[ir.Message]) -> list[dict[str, Any]]:
    """IR messages as Ollama messages: each tool result its own ``tool`` message, ahead of
    whatever else its message says, named after the call it answers when it has no name."""
    names: dict[str, str] = {}  # the calls made so far: id -> tool name
    out: list[dict[str, Any]] = []
    for message in messages:
        results = [part for part in message.content if isinstance(part, ir.ToolResult)]
        for result in results:
            rendered = _render_with_images("tool", result.content)
            name = result.name if result.name is not None else names.get(result.call_id)
            out.append(rendered | present(tool_name=name, tool_call_id=result.call_id))
        if message.role is ir.Role.TOOL or (results and len(results) == len(message.content)):
            continue
        if message.role is ir.Role.ASSISTANT:
            out.append(_render_assistant(message.content))
            names |= {p.id: p.name for p in message.content if isinstance(p, ir.ToolCall)}
        elif message.role is ir.Role.USER:
            out.append(_render_with_images("user", message.content))
        else:  # system and developer: text only
            text = _joined(message.content, ir.Text, _REQUEST_SEPARATOR)
            out.append({"role": "system", "content": text})
    return out


# --------------------------------------------------------------------------------------------
# Requests

_CHAT_FIELDS = frozenset({"model", "messages", "tools", "format", "options", "stream", "think"})
_GENERATE_FIELDS = frozenset(
    {"model", "prompt", "system", "images", "format", "options", "stream", "think"}
)
# Generate fields kept in Extra that mean nothing to /api/chat: render_request drops them.
_GENERATE_ONLY = frozenset({"suffix", "template", "raw", "context"})
_OPTIONS = frozenset(
    {
        "temperature", "top_p", "top_k", "num_predict", "seed", "stop", "presence_penalty",
        "frequency_penalty",
    }
)  # fmt: skip
_THINK_LEVELS = ("low", "medium", "high", "max")


def parse_request(body: object) -> ir.Request:
    """A client's ``/api/chat`` body (already JSON-decoded) as an IR request.

    An empty or missing ``messages`` is allowed: Ollama clients send one to load a model.

    Raises:
      RequestError: the body is not a valid chat request; the message and ``param`` name
        the field at fault.
    """
    root = Node(body, "", request_error)
    calls = _Calls()
    messages = [_parse_message(m, calls) for m in root["messages"].optional(Node.array) or ()]
    return _request(root, messages, _CHAT_FIELDS)


def parse_generate_request(body: object) -> ir.Request:
    """A client's ``/api/generate`` body as an IR request: ``system`` a system message,
    ``prompt`` and ``images`` one user message (none when both are empty, which is how
    clients load a model).

    Raises:
      RequestError: the body is not a valid generate request, naming the field.
    """
    root = Node(body, "", request_error)
    root.object()
    messages = []
    if system := root["system"].optional(Node.string):
        messages.append(ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text=system)]))
    prompt: list[ir.Part] = []
    if text := root["prompt"].optional(Node.string):
        prompt.append(ir.Text(text=text))
    prompt += _parse_images(root["images"])
    if prompt:
        messages.append(ir.Message(role=ir.Role.USER, content=prompt))
    return _request(root, messages, _GENERATE_FIELDS)


def _request(root: Node, messages: list[ir.Message], known: frozenset[str]) -> ir.Request:
    """The request fields chat and generate share, around ``messages``."""
    root.object()
    model = root["model"].string()
    if not model:
        root["model"].fail("a model name", "an empty string")
    options = root["options"]
    options.optional(Node.object)
    stream = root["stream"].optional(Node.boolean)
    extra = extract_extra(root, known, NAME)
    other_options = extract_extra(options, _OPTIONS, NAME) if not options.absent else None
    if other_options is not None:
        fields = {**(extra.fields if extra else {}), "options": dict(other_options.fields)}
        extra = ir.Extra(format=NAME, fields=fields)
    return ir.Request(
        model=model,
        messages=messages,
        tools=[_parse_tool(tool) for tool in root["tools"].optional(Node.array) or ()],
        max_tokens=_parse_num_predict(options["num_predict"]),
        temperature=options["temperature"].optional(Node.number),
        top_p=options["top_p"].optional(Node.number),
        top_k=options["top_k"].optional(Node.integer),
        stop=_parse_stop(options["stop"]),
        seed=options["seed"].optional(Node.integer),
        frequency_penalty=options["frequency_penalty"].optional(Node.number),
        presence_penalty=options["presence_penalty"].optional(Node.number),
        response_format=root["format"].optional(_parse_format),
        reasoning=root["think"].optional(_parse_think),
        stream=True if stream is None else stream,
        extra=extra,
    )


def _parse_tool(node: Node) -> ir.Tool:
    node["type"].optional(lambda n: n.choice(("function",)))
    function = node["function"]
    return ir.Tool(
        name=function["name"].string(),
        description=function["description"].optional(Node.string),
        parameters=function["parameters"].optional(Node.free_object),
        strict=function["strict"].optional(Node.boolean),  # not Ollama's; kept for others
    )


def _parse_num_predict(node: Node) -> int | None:
    """``num_predict``: a token limit, or -1 (no limit) or -2 (fill the context): None."""
    value = node.optional(Node.integer)
    if value is None or value in (-1, -2):
        return None
    if value < 1:
        node.fail("a positive integer, or -1 (no limit) or -2 (fill the context)", str(value))
    return value


def _parse_stop(node: Node) -> tuple[str, ...]:
    if isinstance(node.value, str):  # lenient: one stop string
        return (node.value,)
    if not node.absent and not isinstance(node.value, list):
        node.fail("an array of strings")
    return tuple(item.string() for item in node.optional(Node.array) or ())


def _parse_format(node: Node) -> ir.ResponseFormat | None:
    """``"json"``, a JSON Schema object, or ``""`` (the SDK's "no format")."""
    if isinstance(node.value, dict):
        return ir.ResponseFormat(type=ir.ResponseFormatType.JSON_SCHEMA, schema=node.free_object())
    if node.value == "json":
        return ir.ResponseFormat(type=ir.ResponseFormatType.JSON_OBJECT)
    if node.value != "":
        got = repr(node.value[:40]) if isinstance(node.value, str) else None
        node.fail('"json" or a JSON Schema object', got)
    return None


def _parse_think(node: Node) -> ir.ReasoningConfig:
    if isinstance(node.value, bool):
        return ir.ReasoningConfig(enabled=node.value)
    if not isinstance(node.value, str):
        node.fail("a boolean or one of 'low', 'medium', 'high', 'max'")
    level = node.choice(_THINK_LEVELS)
    return ir.ReasoningConfig(effort="xhigh" if level == "max" else level)


# The IR's efforts as Ollama levels (F.6); an effort not listed asks for thinking, plainly.
_LEVELS = {
    "none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
    "xhigh": "max", "max": "max",
}  # fmt: skip


def _render_think(config: ir.ReasoningConfig) -> bool | str | None:
    """An explicit effort wins, then enabled, then a budget. Budgets become ``true`` rather
    than levels: only some models (gpt-oss) take levels, and every thinking model takes a
    boolean."""
    if config.effort is not None:
        return _LEVELS.get(config.effort, True)
    if config.enabled is not None:
        return config.enabled
    if config.budget_tokens is not None:
        return config.budget_tokens > 0
    return True if config.include_thoughts else None


def _render_format(format_: ir.ResponseFormat) -> str | dict[str, Any] | None:
    if format_.type is ir.ResponseFormatType.TEXT:
        return None
    if format_.type is ir.ResponseFormatType.JSON_SCHEMA and format_.schema is not None:
        return dict(format_.schema)
    return "json"


def render_request(request: ir.Request) -> dict[str, Any]:
    """``request`` as the ``/api/chat`` body an Ollama server receives."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": _render_messages(request.messages),
        "stream": request.stream,  # Ollama streams unless told not to
    }
    if request.tools:
        body["tools"] = [_render_tool(tool) for tool in request.tools]
    extra = request.extra if request.extra is not None and request.extra.format == NAME else None
    options = present(
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        num_predict=request.max_tokens,
        seed=request.seed,
        stop=list(request.stop) or None,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
    )
    other_options = extra.fields.get("options") if extra is not None else None
    if isinstance(other_options, dict):
        options = {**other_options, **options}
    if options:
        body["options"] = options
    body |= present(
        format=maybe(request.response_format, _render_format),
        think=maybe(request.reasoning, _render_think),
    )
    if extra is not None:
        fields = {k: v for k, v in extra.fields.items() if k not in _GENERATE_ONLY}
        extra = ir.Extra(format=NAME, fields=fields)
    return with_extra(body, extra, NAME)


def _render_tool(tool: ir.Tool) -> dict[str, Any]:
    function = present(name=tool.name, description=tool.description, parameters=tool.parameters)
    return {"type": "function", "function": function}


# --------------------------------------------------------------------------------------------
# Responses

_RESPONSE_FIELDS = frozenset(
    {"model", "created_at", "message", "done", "done_reason", "prompt_eval_count", "eval_count"}
)


def _done_reason(stop: ir.StopReason) -> str:
    """F.2: Ollama says ``length`` or ``stop``, also after tool calls."""
    return "length" if stop is ir.StopReason.MAX_TOKENS else "stop"


def _stop_reason(done_reason: str | None, tool_calls: bool) -> ir.StopReason:
    if done_reason == "length":
        return ir.StopReason.MAX_TOKENS
    return ir.StopReason.TOOL_USE if tool_calls else ir.StopReason.END_TURN


def _metrics(usage: ir.Usage) -> dict[str, int]:
    """The token counts, each omitted when zero (Go's ``omitempty``, which clients expect)."""
    counts = {"prompt_eval_count": usage.input_tokens, "eval_count": usage.output_tokens}
    return {key: count for key, count in counts.items() if count}


def _count(node: Node) -> int:
    return node.optional(lambda n: n.integer(minimum=0)) or 0


def _parse_usage(root: Node) -> ir.Usage:
    return ir.Usage(
        input_tokens=_count(root["prompt_eval_count"]), output_tokens=_count(root["eval_count"])
    )


# How an answer carries its content: a chat ``message`` or a generate ``response``. Both
# the whole-answer renderers and the stream renderers are built on these two.
_Carrier = Callable[[str, str, list[dict[str, Any]]], dict[str, Any]]


def _in_message(text: str, thinking: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}  # role is required by the SDK
    return {"message": message | present(thinking=thinking or None, tool_calls=calls or None)}


def _in_response(text: str, thinking: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    # loss: /api/generate answers have no tool calls
    return {"response": text} | present(thinking=thinking or None)


def _render_whole(response: ir.Response, carry: _Carrier) -> dict[str, Any]:
    created = int(time.time()) if response.created is None else response.created
    calls = [p for p in response.content if isinstance(p, ir.ToolCall)]
    body = {
        "model": response.model,
        "created_at": _rfc3339(created),
        **carry(
            _joined(response.content, ir.Text),
            _joined(response.content, ir.Reasoning),
            [_render_tool_call(call, i) for i, call in enumerate(calls)],
        ),
        "done": True,
        "done_reason": _done_reason(response.stop_reason),
        **_metrics(response.usage),
    }
    return with_extra(body, response.extra, NAME)


def render_response(response: ir.Response) -> dict[str, Any]:
    """``response`` as a ``stream: false`` ``/api/chat`` answer: the final chunk's shape
    with the whole message."""
    return _render_whole(response, _in_message)


def render_generate_response(response: ir.Response) -> dict[str, Any]:
    """``response`` as a ``stream: false`` ``/api/generate`` answer."""
    return _render_whole(response, _in_response)


def is_load(request: ir.Request) -> bool:
    """Whether ``request`` only loads a model: a chat without messages or a generate without a
    prompt, which is how ``ollama run`` warms a model up before the first question."""
    return all(message.role is ir.Role.SYSTEM for message in request.messages)


def render_load(request: ir.Request, *, chat: bool) -> dict[str, Any]:
    """Ollama's answer to a load request (:func:`is_load`): done at once, ``done_reason``
    ``load`` (``unload`` when ``keep_alive`` is zero, which asks Ollama to unload it). A
    gateway has nothing to load; the model is only checked to exist, by the caller."""
    keep_alive = request.extra.fields.get("keep_alive") if request.extra else None
    unload = keep_alive in (0, "0", "0s", "0m")
    body = {"model": request.model, "created_at": _rfc3339(int(time.time()))}
    body |= _in_message("", "", []) if chat else _in_response("", "", [])
    return body | {"done": True, "done_reason": "unload" if unload else "load"}


def parse_response(body: object) -> ir.Response:
    """An upstream's ``/api/chat`` answer (``stream: false``) as an IR response.

    Raises:
      UpstreamError: the body is not a chat answer.
    """
    root = Node(body, "", upstream_error)
    root.object()
    root["message"].object()
    content = _parse_assistant(root["message"], _Calls())
    tool_calls = any(isinstance(part, ir.ToolCall) for part in content)
    return ir.Response(
        id="",  # loss: Ollama answers have no id
        model=root["model"].optional(Node.string) or "",
        content=content,
        stop_reason=_stop_reason(root["done_reason"].optional(Node.string), tool_calls),
        usage=_parse_usage(root),
        created=root["created_at"].optional(_parse_time),
        extra=extract_extra(root, _RESPONSE_FIELDS, NAME),
    )


# --------------------------------------------------------------------------------------------
# Errors and metadata


def render_error(error: MuxError) -> dict[str, Any]:
    """``error`` in Ollama's envelope (E.3); the HTTP status is ``error.status``."""
    return {"error": error.message}


def parse_error(status: int, body: object) -> MuxError:
    """An upstream's error answer (HTTP ``status``, decoded ``body``) as an error to report.

    The kind follows the status; the upstream's message is kept when it has one.
    """
    error = body.get("error") if isinstance(body, dict) else body
    if isinstance(error, dict):  # an OpenAI-style envelope from a compatible server
        error = error.get("message")
    message = error.strip()[:1000] if isinstance(error, str) else None
    if not message:
        message = f"the upstream answered HTTP {status} without an error message"
    return UpstreamError(kind_for_status(status), message, status=status)


def _details(model: ir.ModelInfo) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": _ARCHITECTURE,
        "families": [_ARCHITECTURE],
        "parameter_size": "",
        "quantization_level": "",
    }


def _digest(model: ir.ModelInfo) -> str:
    """A stable stand-in for the model blob's sha256, which clients use as a key."""
    return hashlib.sha256(model.id.encode()).hexdigest()


def _listed(model: ir.ModelInfo) -> dict[str, Any]:
    return {
        "name": model.id,
        "model": model.id,
        "modified_at": _rfc3339(model.created),
        "size": 0,
        "digest": _digest(model),
        "details": _details(model),
    }


def render_tags(models: Sequence[ir.ModelInfo]) -> dict[str, Any]:
    """``GET /api/tags``: the models mux serves."""
    return {"models": [_listed(model) for model in models]}


def render_show(model: ir.ModelInfo) -> dict[str, Any]:
    """``POST /api/show`` for one model; the SDK requires ``model_info``."""
    return {
        "modelfile": f"FROM {model.id}\n",
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": _details(model),
        "model_info": {
            "general.architecture": _ARCHITECTURE,
            f"{_ARCHITECTURE}.context_length": _CONTEXT_LENGTH,
        },
        "capabilities": list(_CAPABILITIES),
        "modified_at": _rfc3339(model.created),
    }


def render_ps(models: Sequence[ir.ModelInfo]) -> dict[str, Any]:
    """``GET /api/ps``: the "running" models, which for a gateway are all it serves."""
    return {
        "models": [
            {
                "name": model.id,
                "model": model.id,
                "size": 0,
                "digest": _digest(model),
                "details": _details(model),
                "expires_at": _NEVER,
                "size_vram": 0,
                "context_length": _CONTEXT_LENGTH,
            }
            for model in models
        ]
    }


# --------------------------------------------------------------------------------------------
# Streams


class StreamRenderer:
    """IR stream events to the NDJSON lines an Ollama ``/api/chat`` client reads (E.1).

    One object per line, never a blank line (the SDK ``json.loads`` every line). Text and
    reasoning deltas go out as they come, as ``content`` and ``thinking``; a tool call is
    held until its part ends and goes out whole, with object arguments (F.4). The final
    line has ``done: true``, the ``done_reason`` and the token counts; the durations are
    left out (Ollama omits zero metrics), which keeps the renderer free of the clock but
    for ``created_at`` when the stream has no time. A :class:`ir.StreamError` becomes a
    last ``{"error": ...}`` line.
    Events after either end are dropped.

    :class:`GenerateStreamRenderer` is the same with ``/api/generate``'s ``response``.
    """

    _carry = staticmethod(_in_message)
    _says_tool_calls = True

    def __init__(self, request: ir.Request) -> None:
        self._head: dict[str, Any] | None = None  # model and created_at of every line
        self._calls: dict[int, tuple[ir.ToolCallStart, list[str]]] = {}  # held tool calls
        self._sent_calls = 0
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
                self._head = {"model": event.model, "created_at": _rfc3339(created)}
            case ir.TextDelta(text=text) if text:
                return self._line(text=text)
            case ir.ReasoningDelta(text=text) if text:
                return self._line(thinking=text)
            case ir.ToolCallStart() if self._says_tool_calls:
                self._start()
                self._calls[event.index] = (event, [])
            case ir.ToolArgsDelta(index=index) if index in self._calls:
                self._calls[index][1].append(event.json)
            case ir.PartEnd(index=index) if index in self._calls:
                return self._send_call(index)
            case ir.UsageUpdate():
                self._usage = event.usage
            case ir.Finish():
                held = b"".join(self._send_call(index) for index in list(self._calls))
                self._ended = True
                return held + self._final(event.stop_reason)
            case ir.StreamError():
                self._ended = True
                return ndjson({"error": event.message})
        return b""

    def _start(self) -> dict[str, Any]:
        if self._head is None:
            raise ValueError("a stream must begin with StreamStart")
        return self._head

    def _line(self, text: str = "", thinking: str = "", calls: Sequence[Any] = ()) -> bytes:
        head = self._start()
        return ndjson({**head, **self._carry(text, thinking, list(calls)), "done": False})

    def _send_call(self, index: int) -> bytes:
        start, fragments = self._calls.pop(index)
        call = ir.ToolCall(id=start.id, name=start.name, arguments="".join(fragments))
        self._sent_calls += 1
        return self._line(calls=[_render_tool_call(call, self._sent_calls - 1)])

    def _final(self, stop: ir.StopReason) -> bytes:
        line = {
            **self._start(),
            **self._carry("", "", []),
            "done": True,
            "done_reason": _done_reason(stop),
            **_metrics(self._usage),
        }
        return ndjson(line)


class GenerateStreamRenderer(StreamRenderer):
    """IR stream events to ``/api/generate`` NDJSON lines: deltas in ``response`` (and
    ``thinking``); tool calls have no place there and are dropped."""

    _carry = staticmethod(_in_response)
    _says_tool_calls = False


class StreamParser:
    """An upstream's ``/api/chat`` NDJSON lines to IR stream events.

    The first line starts the stream. A run of ``thinking`` and a run of ``content`` each
    become one part; each tool call (always whole on Ollama's wire) is a part of its own.
    The ``done`` line ends the open part and gives :class:`ir.UsageUpdate` and
    :class:`ir.Finish`; an ``{"error": ...}`` line gives a :class:`ir.StreamError`.

    Raises (from :meth:`feed` and :meth:`close`):
      UpstreamError: the bytes are not an Ollama chat stream.
    """

    def __init__(self) -> None:
        self._ndjson = NDJSONDecoder()
        self._started = False
        self._next_index = 0
        self._part: tuple[str, int] | None = None  # the open part: ("text", 0)...
        self._calls = _Calls()
        self._done = False

    def feed(self, data: bytes) -> list[ir.Event]:
        """The events the bytes ``data`` completed."""
        return self._decode(self._ndjson.feed, data)

    def close(self) -> list[ir.Event]:
        """End of the upstream body: an error if the stream broke off before ``done``."""
        events = self._decode(lambda _: self._ndjson.close(), b"")
        if self._done:
            return events
        self._done = True
        message = "the upstream stream ended before its done line"
        return [*events, ir.StreamError(kind=ir.ErrorKind.UPSTREAM, message=message, status=502)]

    def _decode(self, decode: Callable[[bytes], list[Any]], data: bytes) -> list[ir.Event]:
        if self._done:
            return []
        try:
            lines = decode(data)
        except FramingError as exc:
            message = f"malformed upstream stream: {exc}"
            raise UpstreamError(ir.ErrorKind.UPSTREAM, message) from exc
        return [event for line in lines for event in self._line(line)]

    def _line(self, value: object) -> list[ir.Event]:
        if self._done:
            return []
        line = Node(value, "", upstream_error)
        line.object()
        error = line["error"]
        if not error.absent and error.value:  # the SDK's test: a truthy "error"
            self._done = True
            message = error.value if isinstance(error.value, str) else dumps(error.value).decode()
            return [ir.StreamError(kind=ir.ErrorKind.UPSTREAM, message=message, status=502)]
        events: list[ir.Event] = []
        if not self._started:
            self._started = True
            events.append(
                ir.StreamStart(
                    id="",  # loss: Ollama streams have no id
                    model=line["model"].optional(Node.string) or "",
                    created=line["created_at"].optional(_parse_time),
                )
            )
        message = line["message"]
        if thinking := message["thinking"].optional(Node.string):
            events.append(ir.ReasoningDelta(index=self._open("reasoning", events), text=thinking))
        if text := message["content"].optional(Node.string):
            events.append(ir.TextDelta(index=self._open("text", events), text=text))
        for node in message["tool_calls"].optional(Node.array) or ():
            call = self._calls.call(node)
            index = self._open("tool", events)
            events += [
                ir.ToolCallStart(index=index, id=call.id, name=call.name),
                ir.ToolArgsDelta(index=index, json=call.arguments),
            ]
        if line["done"].optional(Node.boolean):
            self._done = True
            events += self._close_part()
            reason = _stop_reason(line["done_reason"].optional(Node.string), self._calls.count > 0)
            events += [ir.UsageUpdate(usage=_parse_usage(line)), ir.Finish(stop_reason=reason)]
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
