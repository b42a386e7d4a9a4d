"""Anthropic Messages (``POST /v1/messages``), both directions.

Client side: :func:`parse_request` (and :func:`parse_count_tokens`) read what an Anthropic
client sends, and :func:`render_response`, :class:`StreamRenderer`, :func:`render_error`,
:func:`render_models`, :func:`render_model` and :func:`render_count_tokens` answer it.
Upstream side: :func:`render_request` writes what the Messages API receives, and
:func:`parse_response`, :class:`StreamParser` and :func:`parse_error` read its answers.
Everything is pure; the stream classes are sans-io.

Mapping notes (protocols.md C, F and G are the reference):

* **System prompts.** The top-level ``system`` (a string or text blocks) is one leading
  SYSTEM message, a part per block. ``role: "system"`` messages inside ``messages`` (the
  2026 mid-conversation form; Claude Code sends them, even last) are SYSTEM messages in
  place. Rendering hoists the leading system messages into ``system`` and leaves later ones
  as ``role: "system"`` messages. DEVELOPER is SYSTEM.
* **Tool results** live in user messages. A user message is read as a TOOL message holding
  its ``tool_result`` blocks, followed by a USER message holding the rest (either may be
  absent). Rendering turns TOOL messages into user messages, merges consecutive messages of
  the same wire role (as the API itself does) and puts ``tool_result`` blocks first in each
  user message, as the API requires.
* **Content.** A content that is one text block without ``cache_control`` is written as a
  string, anything else as blocks. Empty text blocks are left out (the API rejects them),
  and so is a message left with no content. ``cache_control`` is kept on every block and
  tool. Images by ``file`` source are :class:`ir.Document` parts with media type
  ``image/*`` (the IR's images have no file id); documents are PDFs (base64), plain text
  (a ``text`` source), URLs or files. Audio has no Anthropic form and is left out.
  ``citations`` on text blocks and a document's ``context`` and ``citations`` are dropped:
  the IR has no slot for them.
* **Tool calls.** ``tool_use.input`` is an object on the wire and compact JSON text in the
  IR; text that is not a JSON object goes out as ``{"_raw": text}`` (F.4).
* **Reasoning.** ``thinking`` (text and signature, byte-exact) and ``redacted_thinking``
  (data) are :class:`ir.Reasoning` parts. A signature cannot be made up, and Anthropic
  rejects any it did not issue (400 "Invalid signature in thinking block", G.1), so
  :func:`render_request` writes thinking and redacted thinking only for a request of
  Anthropic origin (parsed by this module, or with an Anthropic :class:`ir.Origin`) and
  **drops** all other reasoning: unsigned reasoning, and reasoning signed by another
  provider (a Gemini ``thoughtSignature``). Turning it into text would put words in the
  assistant's mouth that it never said. On the client side, unsigned reasoning is written
  with ``"signature": ""``.
* **Knobs.** ``thinking`` ``enabled`` (with ``budget_tokens``) / ``adaptive`` / ``disabled``
  and ``output_config.effort`` are :class:`ir.ReasoningConfig` (``adaptive`` is enabled
  without a budget); ``output_config.format`` is a JSON-schema
  :class:`ir.ResponseFormat`. ``metadata.user_id`` is :attr:`ir.Request.user`.
  ``tool_choice.disable_parallel_tool_use`` is :attr:`ir.Request.parallel_tool_calls`
  negated. Temperature is clamped to [0, 1]; ``max_tokens``, required here, defaults to
  :data:`DEFAULT_MAX_TOKENS` (plus the thinking budget) when the IR has none; budgets are
  raised to :data:`MIN_THINKING_BUDGET`.
* **Fields the IR does not model** travel in :class:`ir.Extra`: unknown top-level fields
  (``context_management``, ``service_tier``, ``container``, ``mcp_servers``...), server
  tools (a ``tools`` entry whose ``type`` is not ``custom``, written back after the others),
  and the unknown keys of ``metadata``, ``thinking`` and ``output_config`` (merged back
  into those objects). :func:`parse_request` always attaches one (empty when there is
  nothing to keep), which also marks the request as of Anthropic origin.
* **Answers.** Usage follows F.3: the IR's ``input_tokens`` is ``input_tokens +
  cache_creation_input_tokens + cache_read_input_tokens``. Stop reasons follow F.2:
  ``refusal`` is CONTENT_FILTER, ``pause_turn`` is PAUSE, ``model_context_window_exceeded``
  is MAX_TOKENS; a natural stop with tool calls is written ``tool_use``. Response blocks of
  kinds the IR has no part for (server tool use and results) are skipped.

Errors: :func:`parse_request` raises only :class:`~mux.errors.RequestError`, naming the field
at fault; the upstream side raises only :class:`~mux.errors.UpstreamError`.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable, Sequence
from typing import Any

from mux import ir
from mux.errors import MuxError, UpstreamError, kind_for_status, status_for_kind
from mux.formats._json import (
    Node,
    extract_extra,
    finite,
    maybe,
    present,
    request_error,
    upstream_error,
    with_extra,
)
from mux.formats._parts import arguments_object, compact_arguments, sniff_image_type
from mux.framing import FramingError, SSEDecoder, SSEMessage, dumps, loads, sse

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "MIN_THINKING_BUDGET",
    "NAME",
    "StreamParser",
    "StreamRenderer",
    "parse_count_tokens",
    "parse_error",
    "parse_request",
    "parse_response",
    "render_count_tokens",
    "render_error",
    "render_model",
    "render_models",
    "render_request",
    "render_response",
]

NAME = "anthropic"

#: ``max_tokens`` when the IR has none (the API requires one). 8192 is the output ceiling of
#: the smallest current Claude models (Haiku 3.5), so no model rejects it; a thinking
#: budget is added on top, since ``max_tokens`` counts thinking too.
DEFAULT_MAX_TOKENS = 8192
#: The smallest ``thinking.budget_tokens`` the API accepts (C.1).
MIN_THINKING_BUDGET = 1024

# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Content blocks

# The block types each role's content may hold (C.1); tool results hold the last entry.
_BLOCK_TYPES = {
    "system": ("text",),
    "user": ("text", "image", "document", "tool_result"),
    "assistant": ("text", "thinking", "redacted_thinking", "tool_use"),
    "tool_result": ("text", "image", "document"),
}
# Images by file id become documents with this media type (see the module docstring).
_IMAGE_FILE = "image/*"


def _parse_content(node: Node, role: str) -> list[ir.Part]:
    """A string or an array of blocks, as IR parts."""
    if isinstance(node.value, str):
        return [ir.Text(text=node.value)]
    if not isinstance(node.value, list):
        node.fail("a string or an array of content blocks")
    return [_parse_block(block, _BLOCK_TYPES[role]) for block in node.array()]


def _cache(node: Node) -> dict[str, Any] | None:
    return node["cache_control"].optional(Node.free_object)


def _parse_block(node: Node, types: Sequence[str]) -> ir.Part:
    kind = node["type"].choice(types)
    if kind == "text":  # citations: no IR slot
        return ir.Text(text=node["text"].string(), cache_control=_cache(node))
    if kind == "image":
        return _parse_image(node)
    if kind == "document":
        return _parse_document(node)
    if kind == "tool_use":
        return ir.ToolCall(
            id=node["id"].string(),
            name=node["name"].string(),
            arguments=compact_arguments(node["input"].free_object()),
            cache_control=_cache(node),
        )
    if kind == "tool_result":
        content = node["content"]
        return ir.ToolResult(
            call_id=node["tool_use_id"].string(),
            content=[] if content.absent else _parse_content(content, "tool_result"),
            is_error=bool(node["is_error"].optional(Node.boolean)),
            cache_control=_cache(node),
        )
    if kind == "thinking":
        return ir.Reasoning(
            text=node["thinking"].string(),
            signature=node["signature"].optional(Node.string) or None,
        )
    return ir.Reasoning(data=node["data"].string(), redacted=True)  # redacted_thinking


def _parse_image(node: Node) -> ir.Image | ir.Document:
    source = node["source"]
    kind = source["type"].choice(("base64", "url", "file"))
    cache = _cache(node)
    if kind == "base64":
        media_type = source["media_type"].string()
        return ir.Image(media_type=media_type, data=source["data"].base64(), cache_control=cache)
    if kind == "url":
        return ir.Image(url=source["url"].string(), cache_control=cache)
    file_id = source["file_id"].string()
    return ir.Document(media_type=_IMAGE_FILE, file_id=file_id, cache_control=cache)


def _parse_document(node: Node) -> ir.Document:
    """A document block; its ``context`` and ``citations`` have no IR slot."""
    source = node["source"]
    kind = source["type"].choice(("base64", "text", "url", "file"))
    title = node["title"].optional(Node.string)
    cache = _cache(node)
    if kind == "base64":
        media_type = source["media_type"].string()
        data = source["data"].base64()
        return ir.Document(media_type=media_type, data=data, title=title, cache_control=cache)
    if kind == "text":
        media_type = source["media_type"].optional(Node.string) or "text/plain"
        data = source["data"].string().encode()
        return ir.Document(media_type=media_type, data=data, title=title, cache_control=cache)
    if kind == "url":
        return ir.Document(url=source["url"].string(), title=title, cache_control=cache)
    return ir.Document(file_id=source["file_id"].string(), title=title, cache_control=cache)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _with_cache(block: dict[str, Any], cache: Any) -> dict[str, Any]:
    if cache is not None:
        block["cache_control"] = dict(cache)
    return block


def _render_image(part: ir.Image) -> dict[str, Any] | None:
    if part.data is not None:
        media_type = part.media_type or sniff_image_type(part.data) or "image/png"
        source = {"type": "base64", "media_type": media_type, "data": _b64(part.data)}
    elif part.url is not None:
        source = {"type": "url", "url": part.url}
    else:
        return None  # nothing to show
    return _with_cache({"type": "image", "source": source}, part.cache_control)


def _render_document(part: ir.Document) -> dict[str, Any] | None:
    """A document block, or an image block for an image file; None when there is nothing to
    send (no data, URL or file id). Data wins over a URL, a URL over a file id."""
    media_type = part.media_type or ""
    if media_type.startswith("image/"):
        if part.data is None and part.url is None:
            if part.file_id is None:
                return None
            source: dict[str, Any] = {"type": "file", "file_id": part.file_id}
            return _with_cache({"type": "image", "source": source}, part.cache_control)
        cache = part.cache_control
        return _render_image(
            ir.Image(media_type=part.media_type, data=part.data, url=part.url, cache_control=cache)
        )
    if part.data is not None and media_type.startswith("text/"):
        text = part.data.decode("utf-8", errors="replace")
        source = {"type": "text", "media_type": "text/plain", "data": text}
    elif part.data is not None:
        source = {"type": "base64", "media_type": media_type or "application/pdf"}
        source["data"] = _b64(part.data)
    elif part.url is not None:
        source = {"type": "url", "url": part.url}
    elif part.file_id is not None:
        source = {"type": "file", "file_id": part.file_id}
    else:
        return None
    block = {"type": "document", "source": source} | present(title=part.title)
    return _with_cache(block, part.cache_control)


def _render_tool_use(part: ir.ToolCall) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_use", "id": part.id, "name": part.name}
    block["input"] = arguments_object(part.arguments)
    return _with_cache(block, part.cache_control)


def _render_block(part: ir.Part, role: str, signed: bool) -> dict[str, Any] | None:
    """``part`` as a block of a ``role`` message (request side), or None when it has no place
    there: empty text, audio, parts the role cannot hold, and reasoning that is unsigned or,
    unless ``signed`` (the request is of Anthropic origin), not known to be Anthropic's."""
    if isinstance(part, ir.Text):
        if not part.text:
            return None
        return _with_cache({"type": "text", "text": part.text}, part.cache_control)
    if role == "system":
        return None
    if role == "assistant":
        if isinstance(part, ir.ToolCall):
            return _render_tool_use(part)
        if isinstance(part, ir.Reasoning) and signed:  # G.1: only Anthropic's own replays
            if part.redacted and part.data is not None:
                return {"type": "redacted_thinking", "data": part.data}
            if part.signature:  # G.1: unsigned reasoning cannot be replayed
                return {"type": "thinking", "thinking": part.text, "signature": part.signature}
        return None
    if isinstance(part, ir.Image):
        return _render_image(part)
    if isinstance(part, ir.Document):
        return _render_document(part)
    if isinstance(part, ir.ToolResult):
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.call_id}
        content = [b for p in part.content if (b := _render_block(p, "user", signed)) is not None]
        if content:
            block["content"] = _content(content)
        if part.is_error:
            block["is_error"] = True
        return _with_cache(block, part.cache_control)
    return None


def _content(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """One plain text block as a string (the shorthand), anything else as the blocks."""
    if len(blocks) == 1 and blocks[0].keys() == {"type", "text"} and blocks[0]["type"] == "text":
        return str(blocks[0]["text"])
    return blocks


def _render_response_block(part: ir.Part) -> dict[str, Any] | None:
    """``part`` as a response content block, or None for parts a response cannot hold."""
    if isinstance(part, ir.Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, ir.ToolCall):
        return {
            "type": "tool_use",
            "id": part.id,
            "name": part.name,
            "input": arguments_object(part.arguments),
        }
    if isinstance(part, ir.Reasoning):
        if part.redacted and part.data is not None:
            return {"type": "redacted_thinking", "data": part.data}
        return {"type": "thinking", "thinking": part.text, "signature": part.signature or ""}
    return None


# --------------------------------------------------------------------------------------------
# Requests

_REQUEST_FIELDS = frozenset(
    {
        "model", "messages", "system", "max_tokens", "stop_sequences", "temperature", "top_p",
        "top_k", "metadata", "tools", "tool_choice", "thinking", "output_config", "stream",
    }
)  # fmt: skip
# Objects whose unknown keys are kept in Extra under the object's name and merged back.
_NESTED_EXTRA = ("metadata", "thinking", "output_config")
_WIRE_ROLES = {
    ir.Role.SYSTEM: "system",
    ir.Role.DEVELOPER: "system",
    ir.Role.USER: "user",
    ir.Role.TOOL: "user",
    ir.Role.ASSISTANT: "assistant",
}
_TOOL_CHOICES = {
    "auto": ir.ToolChoiceMode.AUTO,
    "any": ir.ToolChoiceMode.REQUIRED,
    "none": ir.ToolChoiceMode.NONE,
    "tool": ir.ToolChoiceMode.TOOL,
}
# OpenAI's efforts Anthropic lacks, as the nearest Anthropic one.
_EFFORTS = {"minimal": "low"}


def parse_request(body: object) -> ir.Request:
    """A client's request body (already JSON-decoded) as an IR request.

    Raises:
      RequestError: the body is not a valid Messages request (``max_tokens`` is required);
        the message and ``param`` name the field at fault.
    """
    return _parse_request(body, count_tokens=False)


def parse_count_tokens(body: object) -> ir.Request:
    """A ``/v1/messages/count_tokens`` body as an IR request (``max_tokens`` optional).

    Raises:
      RequestError: as :func:`parse_request`.
    """
    return _parse_request(body, count_tokens=True)


def _parse_request(body: object, *, count_tokens: bool) -> ir.Request:
    root = Node(body, "", request_error)
    root.object()
    model = root["model"].string()
    if not model:
        root["model"].fail("a model name", "an empty string")
    max_tokens = root["max_tokens"]
    system = root["system"]
    messages = [] if system.absent else [_parse_system(system)]
    for message in root["messages"].array():
        messages += _parse_message(message)
    tools, server_tools = _parse_tools(root["tools"])
    tool_choice, parallel = root["tool_choice"].optional(_parse_tool_choice) or (None, None)
    nested: dict[str, Any] = {}
    user = root["metadata"].optional(lambda node: _parse_metadata(node, nested))
    reasoning, response_format = _parse_reasoning(root["thinking"], root["output_config"], nested)
    stream = bool(root["stream"].optional(Node.boolean))
    extra = extract_extra(root, _REQUEST_FIELDS, NAME)
    fields = {**(extra.fields if extra else {}), **nested}
    if server_tools:
        fields["tools"] = server_tools
    return ir.Request(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        max_tokens=max_tokens.optional(Node.positive) if count_tokens else max_tokens.positive(),
        temperature=root["temperature"].optional(Node.number),
        top_p=root["top_p"].optional(Node.number),
        top_k=root["top_k"].optional(lambda node: node.integer(minimum=0)),
        stop=[s.string() for s in root["stop_sequences"].optional(Node.array) or ()],
        response_format=response_format,
        reasoning=reasoning,
        stream=stream,
        stream_usage=stream,  # Anthropic streams always report usage
        user=user,
        # Always there: it marks the request as of Anthropic origin (see render_request).
        extra=ir.Extra(format=NAME, fields=fields),
    )


def _parse_system(node: Node) -> ir.Message:
    return ir.Message(role=ir.Role.SYSTEM, content=_parse_content(node, "system"))


def _parse_message(node: Node) -> list[ir.Message]:
    """A message as IR messages: a user message splits into its tool results (a TOOL
    message) and the rest (a USER message)."""
    node.object()
    role = node["role"].choice(("user", "assistant", "system"))
    parts = _parse_content(node["content"], role)
    if role != "user":
        return [ir.Message(role=ir.Role(role), content=parts)]
    results = [part for part in parts if isinstance(part, ir.ToolResult)]
    rest = [part for part in parts if not isinstance(part, ir.ToolResult)]
    messages = [ir.Message(role=ir.Role.TOOL, content=results)] if results else []
    if rest or not results:
        messages.append(ir.Message(role=ir.Role.USER, content=rest))
    return messages


def _parse_tools(node: Node) -> tuple[list[ir.Tool], list[dict[str, Any]]]:
    """Custom tools as IR tools, and server tools (versioned ``type``) as they came."""
    tools: list[ir.Tool] = []
    server: list[dict[str, Any]] = []
    for tool in node.optional(Node.array) or ():
        tool.object()
        if tool["type"].optional(Node.string) not in (None, "custom"):
            server.append(tool.free_object())
            continue
        tools.append(
            ir.Tool(
                name=tool["name"].string(),
                description=tool["description"].optional(Node.string),
                parameters=tool["input_schema"].optional(Node.free_object),
                strict=tool["strict"].optional(Node.boolean),
                cache_control=_cache(tool),
            )
        )
    return tools, server


def _parse_tool_choice(node: Node) -> tuple[ir.ToolChoice, bool | None]:
    mode = _TOOL_CHOICES[node["type"].choice(tuple(_TOOL_CHOICES))]
    name = node["name"].string() if mode is ir.ToolChoiceMode.TOOL else None
    disable = node["disable_parallel_tool_use"].optional(Node.boolean)
    return ir.ToolChoice(mode=mode, name=name), None if disable is None else not disable


def _unknown(node: Node, known: Sequence[str]) -> dict[str, Any]:
    unknown = {k: v for k, v in node.object().items() if k not in known}
    if not finite(unknown):
        node.fail("JSON without NaN or Infinity")
    return unknown


def _parse_metadata(node: Node, nested: dict[str, Any]) -> str | None:
    if rest := _unknown(node, ("user_id",)):
        nested["metadata"] = rest
    return node["user_id"].optional(Node.string)


def _parse_reasoning(
    thinking: Node, output: Node, nested: dict[str, Any]
) -> tuple[ir.ReasoningConfig | None, ir.ResponseFormat | None]:
    """``thinking`` and ``output_config`` as the IR's reasoning config and response format;
    the keys (or thinking types) the IR does not model go in ``nested``."""
    enabled: bool | None = None
    budget: int | None = None
    if not thinking.absent:
        kind = thinking["type"].string()
        known: tuple[str, ...] = ("type",)
        if kind == "enabled":
            enabled, known = True, ("type", "budget_tokens")
            budget = thinking["budget_tokens"].integer(minimum=0)
        elif kind in ("adaptive", "disabled"):
            enabled = kind == "adaptive"
        else:  # a type the IR has no word for ("between_tools"): kept whole
            known = ()
        if rest := _unknown(thinking, known):
            nested["thinking"] = rest
    effort: str | None = None
    response_format: ir.ResponseFormat | None = None
    if not output.absent:
        effort = output["effort"].optional(Node.string)
        format_ = output["format"]
        if not format_.absent:
            format_["type"].choice(("json_schema",))
            schema = format_["schema"].free_object()
            json_schema = ir.ResponseFormatType.JSON_SCHEMA
            response_format = ir.ResponseFormat(type=json_schema, schema=schema)
        if rest := _unknown(output, ("effort", "format")):
            nested["output_config"] = rest
    if enabled is None and budget is None and effort is None:
        return None, response_format
    return ir.ReasoningConfig(enabled=enabled, effort=effort, budget_tokens=budget), response_format


def _anthropic_origin(request: ir.Request) -> bool:
    """Whether the request came from an Anthropic client, so that its reasoning signatures
    and redacted thinking are Anthropic's (G.1)."""
    origin = request.origin
    extra = request.extra
    return (origin is not None and origin.format == NAME) or (
        extra is not None and extra.format == NAME
    )


def render_request(request: ir.Request) -> dict[str, Any]:
    """``request`` as the JSON body the Messages API receives.

    Thinking and redacted thinking are written only for a request of Anthropic origin
    (:func:`parse_request` marks its requests with an Anthropic :class:`ir.Extra`; the
    routes add an Anthropic :class:`ir.Origin`): another provider's signature would be
    rejected (G.1). For the same reason, thinking is left off a request that continues a
    tool loop whose assistant turn has no thinking block to start it.
    """
    signed = _anthropic_origin(request)
    wire: list[tuple[str, list[dict[str, Any]]]] = []  # (role, blocks), same roles merged
    for message in request.messages:
        role = _WIRE_ROLES[message.role]
        blocks = [
            b for part in message.content if (b := _render_block(part, role, signed)) is not None
        ]
        if not blocks:
            continue
        if wire and wire[-1][0] == role:
            wire[-1][1].extend(blocks)
        else:
            wire.append((role, blocks))
    for role, blocks in wire:
        if role == "user":  # tool results first (C.1); sort is stable
            blocks.sort(key=lambda block: block["type"] != "tool_result")
    body: dict[str, Any] = {"model": request.model}
    if wire and wire[0][0] == "system":
        body["system"] = _content(wire.pop(0)[1])
    body["messages"] = [{"role": role, "content": _content(blocks)} for role, blocks in wire]
    thinking, effort = _render_reasoning(request.reasoning)
    # G.1: the API would refuse the request; it is answered without thinking.
    unthought = thinking is not None and thinking["type"] != "disabled" and (
        _unthought_tool_turn(wire)
    )
    if unthought:
        thinking = None
    max_tokens = request.max_tokens
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS + (thinking or {}).get("budget_tokens", 0)
    body["max_tokens"] = max_tokens
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.tools:
        body["tools"] = [_render_tool(tool) for tool in request.tools]
    output_config = present(effort=effort)
    if format_ := request.response_format:
        if format_.type is ir.ResponseFormatType.JSON_SCHEMA and format_.schema is not None:
            output_config["format"] = {"type": "json_schema", "schema": dict(format_.schema)}
    body |= present(
        temperature=maybe(request.temperature, lambda t: min(max(t, 0.0), 1.0)),
        top_p=request.top_p,
        top_k=request.top_k,
        metadata=maybe(request.user, lambda user: {"user_id": user}),
        tool_choice=_render_tool_choice(request.tool_choice, request.parallel_tool_calls),
        thinking=thinking,
        output_config=output_config or None,
    )
    if request.stream:
        body["stream"] = True
    body = _with_request_extra(body, request.extra)
    if unthought:
        body.pop("thinking", None)  # with any keys of it the Extra kept
    return body


def _unthought_tool_turn(wire: list[tuple[str, list[dict[str, Any]]]]) -> bool:
    """Whether the request continues a tool loop (tool results after the last assistant
    turn) whose assistant turn does not start with a thinking block: with thinking on, the
    API refuses it ("a final assistant message must start with a thinking block", G.1). So
    it goes for a history from another provider, or one whose unsigned thinking was left out.
    """
    results = False
    for role, blocks in reversed(wire):
        if role == "assistant":
            return results and blocks[0]["type"] not in ("thinking", "redacted_thinking")
        results = results or any(block["type"] == "tool_result" for block in blocks)
    return False


def _with_request_extra(body: dict[str, Any], extra: ir.Extra | None) -> dict[str, Any]:
    """``body`` plus what :func:`parse_request` kept in Extra: nested keys merge into their
    objects (the IR's values win), server tools follow the custom ones, the rest is added."""
    if extra is None or extra.format != NAME:
        return body
    fields = dict(extra.fields)
    for key in _NESTED_EXTRA:
        if isinstance(fields.get(key), dict):
            body[key] = {**fields.pop(key), **body.get(key, {})}
    if isinstance(fields.get("tools"), list):
        body["tools"] = [*body.get("tools", []), *fields.pop("tools")]
    return with_extra(body, ir.Extra(format=NAME, fields=fields), NAME)


def _render_tool(tool: ir.Tool) -> dict[str, Any]:
    schema = dict(tool.parameters) if tool.parameters is not None else {"type": "object"}
    rendered = {"name": tool.name} | present(description=tool.description)
    rendered |= {"input_schema": schema} | present(strict=tool.strict)
    return _with_cache(rendered, tool.cache_control)


def _render_tool_choice(choice: ir.ToolChoice | None, parallel: bool | None) -> Any:
    if choice is None and parallel is None:
        return None
    mode = choice.mode if choice is not None else ir.ToolChoiceMode.AUTO
    if mode is ir.ToolChoiceMode.NONE:
        return {"type": "none"}  # disable_parallel_tool_use has no place on "none"
    rendered: dict[str, Any]
    if mode is ir.ToolChoiceMode.TOOL and choice is not None and choice.name is not None:
        rendered = {"type": "tool", "name": choice.name}
    elif mode is ir.ToolChoiceMode.AUTO:
        rendered = {"type": "auto"}
    else:  # REQUIRED, or TOOL without a name: the closest is any tool
        rendered = {"type": "any"}
    if parallel is not None:
        rendered["disable_parallel_tool_use"] = not parallel
    return rendered


def _render_reasoning(
    config: ir.ReasoningConfig | None,
) -> tuple[dict[str, Any] | None, str | None]:
    """The ``thinking`` object and ``output_config.effort`` for ``config``.

    Off (``enabled`` False, effort ``none``, or a zero budget not explicitly enabled) is
    ``disabled``; a budget is ``enabled`` (raised to the API's minimum); enabled without a
    budget is ``adaptive``; an effort alone sets only ``output_config.effort``.
    """
    if config is None:
        return None, None
    effort = None if config.effort in (None, "none") else _EFFORTS.get(config.effort, config.effort)
    budget = config.budget_tokens
    if (
        config.enabled is False
        or config.effort == "none"
        or (budget == 0 and config.enabled is not True)
    ):
        return {"type": "disabled"}, effort
    if budget is not None:
        return {"type": "enabled", "budget_tokens": max(budget, MIN_THINKING_BUDGET)}, effort
    return ({"type": "adaptive"} if config.enabled else None), effort


# --------------------------------------------------------------------------------------------
# Responses

_RESPONSE_FIELDS = frozenset(
    {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
)
_STOP_REASONS = {
    "end_turn": ir.StopReason.END_TURN,
    "stop_sequence": ir.StopReason.STOP_SEQUENCE,
    "max_tokens": ir.StopReason.MAX_TOKENS,
    "model_context_window_exceeded": ir.StopReason.MAX_TOKENS,
    "tool_use": ir.StopReason.TOOL_USE,
    "refusal": ir.StopReason.CONTENT_FILTER,
    "pause_turn": ir.StopReason.PAUSE,
}
_RENDERED_STOP_REASONS = {
    ir.StopReason.END_TURN: "end_turn",
    ir.StopReason.STOP_SEQUENCE: "stop_sequence",
    ir.StopReason.MAX_TOKENS: "max_tokens",
    ir.StopReason.TOOL_USE: "tool_use",
    ir.StopReason.CONTENT_FILTER: "refusal",
    ir.StopReason.PAUSE: "pause_turn",
    ir.StopReason.ERROR: "end_turn",  # Anthropic has no error stop
}
_RESPONSE_BLOCK_TYPES = _BLOCK_TYPES["assistant"]


def _stop_reason(reason: str | None) -> ir.StopReason:
    return _STOP_REASONS.get(reason or "", ir.StopReason.END_TURN)


def _render_stop_reason(reason: ir.StopReason, tool_calls: bool) -> str:
    """F.2; a natural stop with tool calls is a tool turn (Gemini and Ollama say STOP)."""
    if tool_calls and reason in (ir.StopReason.END_TURN, ir.StopReason.ERROR):
        return "tool_use"
    return _RENDERED_STOP_REASONS[reason]


def _stop_sequence(reason: ir.StopReason, sequence: str | None) -> str | None:
    return sequence if reason is ir.StopReason.STOP_SEQUENCE else None


def _count(node: Node) -> int:
    return node.optional(lambda n: n.integer(minimum=0)) or 0


def _parse_usage(node: Node) -> ir.Usage:
    """F.3: the IR's input counts the cache reads and writes Anthropic counts apart."""
    cache_write = _count(node["cache_creation_input_tokens"])
    cache_read = _count(node["cache_read_input_tokens"])
    return ir.Usage(
        input_tokens=_count(node["input_tokens"]) + cache_write + cache_read,
        output_tokens=_count(node["output_tokens"]),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=_count(node["output_tokens_details"]["thinking_tokens"]),
    )


def _render_usage(usage: ir.Usage) -> dict[str, Any]:
    """F.3: ``input_tokens`` without the cache reads and writes; thinking tokens (the
    2026 ``output_tokens_details``) only when there are some."""
    uncached = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
    rendered: dict[str, Any] = {
        "input_tokens": max(uncached, 0),
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
    }
    if usage.reasoning_tokens:
        rendered["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return rendered


def parse_response(body: object) -> ir.Response:
    """An upstream's ``message`` object as an IR response.

    Raises:
      UpstreamError: the body is not a message.
    """
    root = Node(body, "", upstream_error)
    root.object()
    content = [
        _parse_block(block, _RESPONSE_BLOCK_TYPES)
        for block in root["content"].optional(Node.array) or ()
        if block["type"].value in _RESPONSE_BLOCK_TYPES  # server tool blocks: no IR part
    ]
    return ir.Response(
        id=root["id"].optional(Node.string) or "",
        model=root["model"].optional(Node.string) or "",
        content=content,
        stop_reason=_stop_reason(root["stop_reason"].optional(Node.string)),
        stop_sequence=root["stop_sequence"].optional(Node.string),
        usage=root["usage"].optional(_parse_usage) or ir.Usage(),
        extra=extract_extra(root, _RESPONSE_FIELDS, NAME),
    )


def render_response(response: ir.Response) -> dict[str, Any]:
    """``response`` as a ``message`` object for an Anthropic client (C.2)."""
    content = [b for p in response.content if (b := _render_response_block(p)) is not None]
    tool_calls = any(block["type"] == "tool_use" for block in content)
    body = {
        "id": response.id,
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": _render_stop_reason(response.stop_reason, tool_calls),
        "stop_sequence": _stop_sequence(response.stop_reason, response.stop_sequence),
        "usage": _render_usage(response.usage),
    }
    return with_extra(body, response.extra, NAME)


def render_count_tokens(count: int) -> dict[str, Any]:
    """The answer of ``/v1/messages/count_tokens`` (C.4)."""
    return {"input_tokens": count}


# --------------------------------------------------------------------------------------------
# Errors and models

# C.5: the error type for each status; statuses not listed take their kind's type.
_ERROR_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ERROR_TYPES_BY_KIND = {
    ir.ErrorKind.INVALID_REQUEST: "invalid_request_error",
    ir.ErrorKind.AUTHENTICATION: "authentication_error",
    ir.ErrorKind.PERMISSION: "permission_error",
    ir.ErrorKind.NOT_FOUND: "not_found_error",
    ir.ErrorKind.REQUEST_TOO_LARGE: "request_too_large",
    ir.ErrorKind.RATE_LIMIT: "rate_limit_error",
    ir.ErrorKind.TIMEOUT: "timeout_error",
    ir.ErrorKind.OVERLOADED: "overloaded_error",
    ir.ErrorKind.UPSTREAM: "api_error",
    ir.ErrorKind.INTERNAL: "api_error",
}
# A mid-stream error has no status: its type gives the kind.
_ERROR_KINDS = {
    "invalid_request_error": ir.ErrorKind.INVALID_REQUEST,
    "authentication_error": ir.ErrorKind.AUTHENTICATION,
    "billing_error": ir.ErrorKind.PERMISSION,
    "permission_error": ir.ErrorKind.PERMISSION,
    "not_found_error": ir.ErrorKind.NOT_FOUND,
    "request_too_large": ir.ErrorKind.REQUEST_TOO_LARGE,
    "rate_limit_error": ir.ErrorKind.RATE_LIMIT,
    "api_error": ir.ErrorKind.INTERNAL,
    "timeout_error": ir.ErrorKind.TIMEOUT,
    "overloaded_error": ir.ErrorKind.OVERLOADED,
}


def _error_type(kind: ir.ErrorKind, status: int) -> str:
    return _ERROR_TYPES_BY_STATUS.get(status) or _ERROR_TYPES_BY_KIND[kind]


def render_error(error: MuxError) -> dict[str, Any]:
    """``error`` in Anthropic's envelope (C.5); the HTTP status is ``error.status``."""
    type_ = _error_type(error.kind, error.status)
    return {"type": "error", "error": {"type": type_, "message": error.message}}


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
    if not isinstance(message, str) or not message:
        message = f"the upstream answered HTTP {status} without an error message"
    return UpstreamError(kind_for_status(status), message, status=status)


def _stream_error(value: object) -> ir.StreamError:
    """An ``event: error``'s data as a stream error, its kind from ``error.type``."""
    error = value.get("error") if isinstance(value, dict) else None
    error = error if isinstance(error, dict) else {}
    type_, message = error.get("type"), error.get("message")
    kind = _ERROR_KINDS.get(type_ if isinstance(type_, str) else "", ir.ErrorKind.UPSTREAM)
    if not isinstance(message, str) or not message:
        message = "the upstream stream failed without an error message"
    return ir.StreamError(kind=kind, message=message, status=status_for_kind(kind))


def _rfc3339(unix: int) -> str:
    moment = datetime.datetime.fromtimestamp(unix, datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def render_model(model: ir.ModelInfo) -> dict[str, Any]:
    """One model object (C.4); ``lifecycle`` is required by 2026 SDKs' ``ModelInfo``."""
    return {
        "type": "model",
        "id": model.id,
        "display_name": model.id,
        "created_at": _rfc3339(model.created),
        "lifecycle": "active",
    }


def render_models(models: Sequence[ir.ModelInfo]) -> dict[str, Any]:
    """The model list (C.4), all on one page."""
    return {
        "data": [render_model(model) for model in models],
        "has_more": False,
        "first_id": models[0].id if models else None,
        "last_id": models[-1].id if models else None,
    }


# --------------------------------------------------------------------------------------------
# Streams


class StreamRenderer:
    """IR stream events to the SSE bytes an Anthropic client reads (C.3, protocols.md 0).

    Every event has an ``event:`` line (the SDK drops events without one). Each IR part is
    the content block of the same index, started by its first event: text and tool use as
    C.3 shows them; reasoning as a ``thinking`` block whose signature (the last one given)
    goes out as one ``signature_delta`` just before the block stops, or, when its first
    delta is redacted data, as a complete ``redacted_thinking`` block (later deltas of that
    part are dropped). ``message_start`` cannot know the usage yet (the IR reports it last),
    so it says zero and the ``message_delta`` sent at :class:`ir.Finish` carries the
    cumulative usage, input and cache counts included: the SDK's accumulator replaces its
    values with non-null ones there. A :class:`ir.StreamError` becomes ``event: error``.
    Events after either end are dropped.
    """

    def __init__(self, request: ir.Request) -> None:
        self._started = False
        self._ended = False
        self._block: tuple[int, str] | None = None  # the open block: (index, kind)
        self._signature: str | None = None  # the open thinking block's signature
        self._usage = ir.Usage()
        self._tool_calls = False

    def render(self, event: ir.Event) -> bytes:
        """The bytes for ``event``; may be empty.

        Raises:
          ValueError: a content event came before :class:`ir.StreamStart`.
        """
        if self._ended:
            return b""
        if isinstance(event, ir.StreamError):
            self._ended = True
            error = {"type": _error_type(event.kind, event.status), "message": event.message}
            return _event("error", {"type": "error", "error": error})
        if isinstance(event, ir.StreamStart):
            self._started = True
            message: dict[str, Any] = {
                "id": event.id,
                "type": "message",
                "role": "assistant",
                "model": event.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
            return _event("message_start", {"type": "message_start", "message": message})
        if not self._started:
            raise ValueError("a stream must begin with StreamStart")
        match event:
            case ir.TextDelta(index=index, text=text):
                out = self._start(index, "text", {"type": "text", "text": ""})
                delta = {"type": "text_delta", "text": text} if text else None
                return out + self._delta(index, delta)
            case ir.ReasoningDelta(index=index):
                return self._reasoning(event, index)
            case ir.ToolCallStart(index=index):
                self._tool_calls = True
                block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
                return self._start(index, "tool_use", block)
            case ir.ToolArgsDelta(index=index, json=fragment) if fragment:
                return self._delta(index, {"type": "input_json_delta", "partial_json": fragment})
            case ir.PartEnd():
                return self._stop()
            case ir.UsageUpdate(usage=usage):
                self._usage = usage
            case ir.Finish():
                self._ended = True
                stop = {
                    "stop_reason": _render_stop_reason(event.stop_reason, self._tool_calls),
                    "stop_sequence": _stop_sequence(event.stop_reason, event.stop_sequence),
                }
                data = {"type": "message_delta", "delta": stop, "usage": _render_usage(self._usage)}
                return (
                    self._stop()
                    + _event("message_delta", data)
                    + _event("message_stop", {"type": "message_stop"})
                )
        return b""

    def _reasoning(self, event: ir.ReasoningDelta, index: int) -> bytes:
        out = b""
        if self._block is None:
            if event.redacted and event.data is not None:
                block = {"type": "redacted_thinking", "data": event.data}
                return self._start(index, "redacted_thinking", block)
            thinking = {"type": "thinking", "thinking": "", "signature": ""}
            out = self._start(index, "thinking", thinking)
        if self._block != (index, "thinking"):
            return out  # a redacted block is complete
        if event.signature is not None:
            self._signature = event.signature
        delta = {"type": "thinking_delta", "thinking": event.text} if event.text else None
        return out + self._delta(index, delta)

    def _start(self, index: int, kind: str, block: dict[str, Any]) -> bytes:
        if self._block is not None:
            return b""  # the part is open already
        self._block, self._signature = (index, kind), None
        data = {"type": "content_block_start", "index": index, "content_block": block}
        return _event("content_block_start", data)

    def _delta(self, index: int, delta: dict[str, Any] | None) -> bytes:
        if delta is None:
            return b""
        data = {"type": "content_block_delta", "index": index, "delta": delta}
        return _event("content_block_delta", data)

    def _stop(self) -> bytes:
        if self._block is None:
            return b""
        (index, kind), self._block = self._block, None
        out = b""
        if kind == "thinking" and self._signature is not None:
            out = self._delta(index, {"type": "signature_delta", "signature": self._signature})
        return out + _event("content_block_stop", {"type": "content_block_stop", "index": index})


def _event(name: str, data: dict[str, Any]) -> bytes:
    return sse(dumps(data), event=name)


class StreamParser:
    """An upstream's SSE bytes (Messages stream events) to IR stream events.

    Events are told apart by their data's ``type`` (the ``event:`` name when it has none);
    ``ping`` and unknown events are ignored. Blocks of the kinds the IR has parts for become
    parts, renumbered densely (server tool blocks are skipped); a part's first event comes
    with its first non-empty delta, or with its stop for a block that said nothing (an empty
    text or reasoning delta). Usage is the ``message_start`` usage, its values replaced by
    the non-null ones of ``message_delta`` (as the SDK does); it comes out as one
    :class:`ir.UsageUpdate` before the :class:`ir.Finish`, at ``message_stop``, or at
    :meth:`close` when the stream ended after its ``message_delta``.

    Raises (from :meth:`feed` and :meth:`close`):
      UpstreamError: the bytes are not a Messages stream.
    """

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._started = False
        self._done = False
        self._next_index = 0  # the IR index of the next part
        self._skipped: set[int] = set()  # Anthropic indices of blocks with no IR part
        # The open block: Anthropic index, IR index, kind, whether an event was emitted.
        self._block: tuple[int, int, str] | None = None
        self._said = False
        self._usage: dict[str, int] = {}
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None
        self._stopped = False  # a message_delta with a stop reason arrived

    def feed(self, data: bytes) -> list[ir.Event]:
        """The events the bytes ``data`` completed."""
        return self._decode(self._sse.feed, data)

    def close(self) -> list[ir.Event]:
        """End of the upstream body: the finish, or an error if the stream broke off."""
        events = self._decode(lambda _: self._sse.close(), b"")
        if self._done:
            return events
        self._done = True
        if self._stopped:
            return events + self._finish()
        message = "the upstream stream ended before message_stop"
        return [*events, ir.StreamError(kind=ir.ErrorKind.UPSTREAM, message=message, status=502)]

    def _decode(self, decode: Callable[[bytes], list[SSEMessage]], data: bytes) -> list[ir.Event]:
        try:
            messages = decode(data)
        except FramingError as exc:
            message = f"malformed upstream stream: {exc}"
            raise UpstreamError(ir.ErrorKind.UPSTREAM, message) from exc
        return [event for message in messages for event in self._message(message)]

    def _message(self, message: SSEMessage) -> list[ir.Event]:
        if self._done or not message.data.strip():
            return []
        try:
            node = Node(loads(message.data), "", upstream_error)
        except FramingError as exc:
            raise UpstreamError(ir.ErrorKind.UPSTREAM, f"malformed upstream event: {exc}") from exc
        node.object()
        kind = node["type"].optional(Node.string) or message.event or ""
        if kind == "error":
            self._done = True
            return [_stream_error(node.value)]
        if kind == "message_start":
            return self._message_start(node["message"])
        if kind not in (
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ):
            return []  # ping, and events this parser does not know
        if not self._started:
            node["type"].fail("message_start first", repr(kind))
        if kind == "content_block_start":
            return self._block_start(node["index"].integer(minimum=0), node["content_block"])
        if kind == "content_block_delta":
            return self._block_delta(node["index"].integer(minimum=0), node["delta"])
        if kind == "content_block_stop":
            return self._block_stop(node["index"])
        if kind == "message_delta":
            self._message_delta(node)
            return []
        self._done = True  # message_stop
        return self._finish()

    def _message_start(self, message: Node) -> list[ir.Event]:
        if self._started:
            return []
        self._started = True
        self._read_usage(message["usage"])
        return [
            ir.StreamStart(
                id=message["id"].optional(Node.string) or "",
                model=message["model"].optional(Node.string) or "",
            )
        ]

    def _read_usage(self, usage: Node) -> None:
        """Take the non-null counts of a usage object (C.3: they are cumulative)."""
        for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                    "cache_read_input_tokens"):  # fmt: skip
            if (count := usage[key].optional(lambda n: n.integer(minimum=0))) is not None:
                self._usage[key] = count
        details = usage["output_tokens_details"]["thinking_tokens"]
        if (count := details.optional(lambda n: n.integer(minimum=0))) is not None:
            self._usage["thinking_tokens"] = count

    def _block_start(self, index: int, block: Node) -> list[ir.Event]:
        if self._block is not None:
            block.fail("a block start after the open block's stop", f"block {index} started")
        kind = block["type"].string()
        if kind not in _RESPONSE_BLOCK_TYPES:
            self._skipped.add(index)
            return []
        part = self._next_index
        self._next_index += 1
        self._block, self._said = (index, part, kind), False
        events: list[ir.Event] = []
        if kind == "text":
            if text := block["text"].optional(Node.string):
                events.append(ir.TextDelta(index=part, text=text))
        elif kind == "thinking":
            text = block["thinking"].optional(Node.string) or ""
            signature = block["signature"].optional(Node.string) or None
            if text or signature:
                events.append(ir.ReasoningDelta(index=part, text=text, signature=signature))
        elif kind == "redacted_thinking":
            data = block["data"].string()
            events.append(ir.ReasoningDelta(index=part, data=data, redacted=True))
        else:  # tool_use
            call_id, name = block["id"].string(), block["name"].string()
            events.append(ir.ToolCallStart(index=part, id=call_id, name=name))
            if arguments := block["input"].optional(Node.free_object):
                events.append(ir.ToolArgsDelta(index=part, json=compact_arguments(arguments)))
        self._said = bool(events)
        return events

    def _open_part(self, index: int, node: Node) -> tuple[int, str] | None:
        """The IR index and kind of the open block ``index``; None for a skipped block."""
        if index in self._skipped:
            return None
        if self._block is None or self._block[0] != index:
            node.fail("an event of the open content block", f"block {index}")
        return self._block[1], self._block[2]

    def _block_delta(self, index: int, delta: Node) -> list[ir.Event]:
        open_ = self._open_part(index, delta)
        if open_ is None:
            return []
        part, kind = open_
        type_ = delta["type"].string()
        event: ir.Event | None = None
        if type_ == "text_delta" and kind == "text":
            if text := delta["text"].string():
                event = ir.TextDelta(index=part, text=text)
        elif type_ == "thinking_delta" and kind == "thinking":
            if text := delta["thinking"].string():
                event = ir.ReasoningDelta(index=part, text=text)
        elif type_ == "signature_delta" and kind == "thinking":
            event = ir.ReasoningDelta(index=part, signature=delta["signature"].string())
        elif type_ == "input_json_delta" and kind == "tool_use":
            if fragment := delta["partial_json"].string():
                event = ir.ToolArgsDelta(index=part, json=fragment)
        # citations_delta, and deltas that do not fit their block, have no IR form
        if event is None:
            return []
        self._said = True
        return [event]

    def _block_stop(self, index: Node) -> list[ir.Event]:
        if self._open_part(index.integer(minimum=0), index) is None:
            return []
        return self._close_block()

    def _close_block(self) -> list[ir.Event]:
        if self._block is None:
            return []
        _, part, kind = self._block
        self._block = None
        events: list[ir.Event] = []
        if not self._said:  # a block that said nothing is still a part
            empty = ir.TextDelta(index=part, text="") if kind == "text" else None
            events.append(empty or ir.ReasoningDelta(index=part))
        return [*events, ir.PartEnd(index=part)]

    def _message_delta(self, node: Node) -> None:
        delta = node["delta"]
        if (reason := delta["stop_reason"].optional(Node.string)) is not None:
            self._stop_reason, self._stopped = reason, True
            self._stop_sequence = delta["stop_sequence"].optional(Node.string)
        self._read_usage(node["usage"])

    def _finish(self) -> list[ir.Event]:
        usage = self._usage
        cache_write = usage.get("cache_creation_input_tokens", 0)
        cache_read = usage.get("cache_read_input_tokens", 0)
        total = ir.Usage(
            input_tokens=usage.get("input_tokens", 0) + cache_write + cache_read,
            output_tokens=usage.get("output_tokens", 0),
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            reasoning_tokens=usage.get("thinking_tokens", 0),
        )
        reason = _stop_reason(self._stop_reason)
        finish = ir.Finish(stop_reason=reason, stop_sequence=self._stop_sequence)
        return [*self._close_block(), ir.UsageUpdate(usage=total), finish]
