"""OpenAI Responses (``POST /v1/responses``), both directions.

Client side: :func:`parse_request` reads what a Responses client (the SDK's ``responses``,
Codex) sends, and :func:`render_response`, :class:`StreamRenderer` and :func:`render_error`
answer it. Upstream side: :func:`render_request` writes what a Responses upstream receives,
and :func:`parse_response`, :class:`StreamParser` and :func:`parse_error` read its answers.
Everything is pure; the stream classes are sans-io. protocols.md B is the reference, the
``openai`` SDK's ``types/responses`` and ``lib/streaming/responses`` decide when in doubt.

Mapping notes:

* ``input`` items become messages. User, system and developer ``message`` items are one
  message each; consecutive assistant-side items (assistant messages, ``reasoning``,
  ``function_call``) form one ASSISTANT message, and consecutive ``function_call_output``
  items one TOOL message, as Chat, Anthropic and Gemini need their turns. Rendering writes an
  item per assistant part, so that reading it back rebuilds the same parts.
* ``instructions`` is a leading SYSTEM message; ``call_id`` is :attr:`ir.ToolCall.id`; a
  ``refusal`` part reads as text; ``encrypted_content`` is :attr:`ir.Reasoning.data` and the
  summary texts (joined by a blank line) its ``text``. A reasoning part goes to an upstream
  only with encrypted content (or when a Responses client sent it): OpenAI can replay
  nothing else (protocols.md G.3).
* A function tool whose ``strict`` the IR leaves open is written ``strict: false``: the
  Responses API makes omitted ``strict`` mean "strict where the schema allows", which would
  silently change a tool from another format.
* What the IR does not model travels in :class:`ir.Extra`: unknown top-level fields as they
  came, unknown keys of ``text`` and ``reasoning`` (merged back into those objects), and
  under the key ``"mux:responses"`` this format's own bookkeeping, so that a same-format hop
  restores the request exactly: whether ``instructions`` and a string ``input`` were used,
  each input item's unmodelled fields (``id``, ``status``, ``phase``...) and boundaries,
  an ``input`` left out (``previous_response_id`` holds the conversation),
  items the IR cannot hold (``item_reference``, hosted-tool calls: kept in place, lost to
  other formats), and hosted tools (``web_search``, ``namespace``...) in their place among
  the function tools.
* Responses echo the request's settings (``tools``, ``tool_choice``, ``text``...), which the
  SDK models as fields of the response: :class:`StreamRenderer` takes them from the request;
  :func:`render_response` does when given one, and writes the API's defaults otherwise.
* Output item ids are minted from the response id (``msg_<id>_<n>``), or restored from a
  same-format upstream's answer.

Errors: :func:`parse_request` raises only :class:`~mux.errors.RequestError`, naming the field
at fault; the upstream side raises only :class:`~mux.errors.UpstreamError`. The error
envelope is Chat's (:func:`render_error`, :func:`parse_error`); a failure inside a stream is a
``response.failed`` event, or an ``error`` event when the stream had not begun.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from mux import ir, streams
from mux.errors import MuxError, UpstreamError, status_for_kind
from mux.formats._json import (
    Node,
    extract_extra,
    finite,
    maybe,
    present,
    request_error,
    upstream_error,
)
from mux.formats.openai_chat import parse_error, render_error
from mux.formats._parts import data_url, effort_for
from mux.framing import FramingError, SSEDecoder, SSEMessage, dumps, loads, sse

__all__ = [
    "NAME",
    "StreamParser",
    "StreamRenderer",
    "parse_error",
    "parse_request",
    "parse_response",
    "render_error",
    "render_request",
    "render_response",
]

NAME = "openai_responses"

#: The key of this format's bookkeeping inside :attr:`ir.Extra.fields` (see the module doc).
STATE = "mux:responses"

# A Document standing for an ``input_image`` given by ``file_id`` (ir.Image has no file id).
IMAGE_FILE = "image/*"

# --------------------------------------------------------------------------------------------
# Extra fields


def merge_extra(body: dict[str, Any], extra: ir.Extra | None) -> dict[str, Any]:
    """``body`` plus what ``extra`` kept, if this format parsed it: absent keys are added,
    and objects present on both sides are merged one level deep (``text.verbosity`` next
    to a rendered ``text.format``); the body wins. The bookkeeping key is not written."""
    if extra is None or extra.format != NAME:
        return body
    for key, value in extra.fields.items():
        if key == STATE:
            continue
        if key not in body:
            body[key] = value
        elif isinstance(body[key], dict) and isinstance(value, dict):
            body[key] = {**value, **body[key]}
    return body


def _state(extra: ir.Extra | None) -> dict[str, Any]:
    """This format's bookkeeping in ``extra`` ({} when there is none)."""
    if extra is None or extra.format != NAME:
        return {}
    state = extra.fields.get(STATE)
    return state if isinstance(state, dict) else {}


def _unknown(node: Node, known: frozenset[str]) -> dict[str, Any]:
    """The fields of the object ``node`` outside ``known``."""
    extra = extract_extra(node, known, NAME)
    return dict(extra.fields) if extra is not None else {}


# --------------------------------------------------------------------------------------------
# Content parts

_INPUT_PARTS = ("input_text", "input_image", "input_file")
_OUTPUT_PARTS = ("output_text", "refusal")


def _parse_content(node: Node, types: Sequence[str]) -> list[ir.Part]:
    """A string or an array of content parts, as IR parts."""
    if isinstance(node.value, str):
        return [ir.Text(text=node.value)]
    if not isinstance(node.value, list):
        node.fail("a string or an array of content parts")
    return [_parse_part(part, types) for part in node.array()]


def _parse_part(node: Node, types: Sequence[str]) -> ir.Text | ir.Image | ir.Document:
    kind = node["type"].choice(types)
    if kind in ("input_text", "output_text"):
        return ir.Text(text=node["text"].string())
    if kind == "refusal":
        return ir.Text(text=node["refusal"].string())
    if kind == "input_image":
        detail = node["detail"].optional(Node.string)
        url = node["image_url"]
        if url.absent:
            file_id = node["file_id"]
            if file_id.absent:
                url.fail("an image URL (or a file_id)")
            return ir.Document(file_id=file_id.string(), media_type=IMAGE_FILE)
        if not url.string().startswith("data:"):
            return ir.Image(url=url.value, detail=detail)
        image_type, image = url.data_url()
        return ir.Image(media_type=image_type, data=image, detail=detail)
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
        url=node["file_url"].optional(Node.string),
        file_id=node["file_id"].optional(Node.string),
        filename=node["filename"].optional(Node.string),
    )


def _render_input_part(part: ir.Text | ir.Image | ir.Document) -> dict[str, Any]:
    if isinstance(part, ir.Text):
        return {"type": "input_text", "text": part.text}
    if isinstance(part, ir.Image):
        url = data_url(part.media_type, part.data) if part.data is not None else part.url
        # ``detail`` is required on the wire; "auto" is the API's own default.
        return {"type": "input_image", "image_url": url or "", "detail": part.detail or "auto"}
    if part.media_type == IMAGE_FILE and part.file_id and part.data is None and part.url is None:
        return {"type": "input_image", "file_id": part.file_id, "detail": "auto"}
    file_data = data_url(part.media_type, part.data) if part.data is not None else None
    return {
        "type": "input_file",
        **present(file_data=file_data, file_id=part.file_id, file_url=part.url),
        **present(filename=part.filename),
    }


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def _render_output(parts: Sequence[ir.Part]) -> str | list[dict[str, Any]]:
    """A tool result's content: one text as a string, anything else as parts."""
    if len(parts) == 1 and isinstance(parts[0], ir.Text):
        return parts[0].text
    kinds = (ir.Text, ir.Image, ir.Document)
    return [_render_input_part(p) for p in parts if isinstance(p, kinds)] or ""


# --------------------------------------------------------------------------------------------
# Items (B.2): input items to messages, and IR parts to items


@attrs.frozen
class _Unit:
    """One item an IR part (or a user message) renders as, before item bookkeeping."""

    type: str
    item: dict[str, Any]
    #: Whether the item goes out without bookkeeping saying it came from a client.
    default: bool = True


def _tool_call_item(call: ir.ToolCall) -> dict[str, Any]:
    return {
        "type": "function_call",
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
    }


def _reasoning_item(reasoning: ir.Reasoning) -> dict[str, Any]:
    summary = [{"type": "summary_text", "text": reasoning.text}] if reasoning.text else []
    return {"type": "reasoning", "summary": summary, **present(encrypted_content=reasoning.data)}


def _result_item(result: ir.ToolResult) -> dict[str, Any]:
    output = _render_output(result.content)
    return {"type": "function_call_output", "call_id": result.call_id, "output": output}


def _assistant_units(parts: Sequence[ir.Part]) -> list[_Unit]:
    """An item per part: messages, reasoning, calls (images and audio have no slot)."""
    units = []
    for part in parts:
        if isinstance(part, ir.Text):
            item = {"type": "message", "role": "assistant", "content": [_output_text(part.text)]}
            units.append(_Unit("message", item))
        elif isinstance(part, ir.Reasoning):
            # Only encrypted reasoning can be replayed to OpenAI; summaries and other
            # formats' thinking would be refused (G.3).
            replayable = part.data is not None and not part.redacted
            units.append(_Unit("reasoning", _reasoning_item(part), replayable))
        elif isinstance(part, ir.ToolCall):
            units.append(_Unit("function_call", _tool_call_item(part)))
        elif isinstance(part, ir.ToolResult):
            units.append(_Unit("function_call_output", _result_item(part)))
    return units


def _units(message: ir.Message) -> list[_Unit]:
    """The items ``message`` renders as: tool results first, as in Chat."""
    if message.role is ir.Role.ASSISTANT:
        return _assistant_units(message.content)
    results = [part for part in message.content if isinstance(part, ir.ToolResult)]
    units = [_Unit("function_call_output", _result_item(result)) for result in results]
    if message.role is ir.Role.TOOL or (results and len(results) == len(message.content)):
        return units
    kinds = (ir.Text, ir.Image, ir.Document)
    content = [_render_input_part(p) for p in message.content if isinstance(p, kinds)]
    item = {"type": "message", "role": message.role.value, "content": content}
    return [*units, _Unit("message", item)]


def _render_items(units: Sequence[_Unit], layout: object) -> list[dict[str, Any]]:
    """The items for ``units``, restored as a client sent them when ``layout`` (see
    :func:`_parse_items`) still fits them, else each unit's default item."""
    restored = _restore(units, layout) if isinstance(layout, list) else None
    if restored is not None:
        return restored
    return [unit.item for unit in units if unit.default]


def _restore(units: Sequence[_Unit], layout: list[Any]) -> list[dict[str, Any]] | None:
    out: list[dict[str, Any]] = []
    position = 0
    for entry in layout:
        if not isinstance(entry, dict):
            return None
        if "item" in entry:  # an item the IR cannot hold, kept in its place
            out.append(entry["item"])
            continue
        span, fields = entry.get("span", 1), entry.get("fields", {})
        group = units[position : position + span] if isinstance(span, int) and span > 0 else ()
        if len(group) != span or any(unit.type != entry.get("type") for unit in group):
            return None
        position += span
        if span == 1:
            item = group[0].item
        else:  # one assistant message holding several parts
            if any(unit.item.get("role") != "assistant" for unit in group):
                return None
            content = [c for unit in group for c in unit.item["content"]]
            item = {"type": "message", "role": "assistant", "content": content}
        out.append({**item, **fields} if isinstance(fields, dict) else item)
    return out if position == len(units) else None


_ROLES = ("user", "assistant", "system", "developer")
_KNOWN_ITEM_FIELDS = {
    "message": frozenset({"type", "role", "content"}),
    "function_call": frozenset({"type", "call_id", "name", "arguments"}),
    "function_call_output": frozenset({"type", "call_id", "output"}),
    "reasoning": frozenset({"type", "summary", "encrypted_content", "content"}),
}


@attrs.define(eq=False)
class _Transcript:
    """Messages built from items, grouping assistant-side items and tool outputs."""

    messages: list[ir.Message] = attrs.Factory(list)
    layout: list[dict[str, Any]] = attrs.Factory(list)
    #: The last message takes more items of its role (it came from a groupable item).
    open: bool = False

    def add(self, role: ir.Role, parts: Sequence[ir.Part], groups: bool) -> None:
        if groups and self.open and self.messages[-1].role is role:
            last = self.messages[-1]
            self.messages[-1] = attrs.evolve(last, content=[*last.content, *parts])
        else:
            self.messages.append(ir.Message(role=role, content=parts))
        self.open = groups

    def note(self, type_: str, span: int, fields: dict[str, Any]) -> None:
        entry: dict[str, Any] = {"type": type_}
        if span != 1:
            entry["span"] = span
        if fields:
            entry["fields"] = fields
        self.layout.append(entry)

    def trivial(self) -> bool:
        """Whether rendering without the layout gives the items back: nothing to restore."""
        units = [unit for message in self.messages for unit in _units(message)]
        return all(set(e) == {"type"} for e in self.layout) and all(u.default for u in units)


def _parse_items(node: Node, assistant: bool = False) -> _Transcript:
    """Input items (or, with ``assistant``, output items) as messages and their layout."""
    transcript = _Transcript()
    for item in node.array():
        item.object()
        kind = "message" if item["type"].absent else item["type"].string()
        known = _KNOWN_ITEM_FIELDS.get(kind)
        if known is None:  # item_reference, hosted-tool calls...: kept whole, in place
            if not finite(item.value):
                item.fail("JSON without NaN or Infinity")
            transcript.layout.append({"item": item.value})
            continue
        span = 1
        if kind == "message":
            role = "assistant" if assistant else item["role"].choice(_ROLES)
            if role == "assistant":
                parts = _parse_content(item["content"], _OUTPUT_PARTS)
                if not parts:  # says nothing: kept in place like the items above
                    transcript.layout.append({"item": item.value})
                    continue
                transcript.add(ir.Role.ASSISTANT, parts, groups=True)
                span = len(parts)
            else:
                parts = _parse_content(item["content"], _INPUT_PARTS)
                transcript.add(ir.Role(role), parts, groups=False)
        elif kind == "function_call":
            arguments = item["arguments"]
            text = arguments.compact("a JSON string or object") if isinstance(arguments.value, dict) else None
            call = ir.ToolCall(
                id=item["call_id"].string(),
                name=item["name"].string(),
                arguments=text if text is not None else arguments.string(),
            )
            transcript.add(ir.Role.ASSISTANT, [call], groups=True)
        elif kind == "function_call_output":
            output = _parse_content(item["output"], _INPUT_PARTS)
            result = ir.ToolResult(call_id=item["call_id"].string(), content=output)
            transcript.add(ir.Role.TOOL, [result], groups=True)
        else:
            reasoning, used_content = _parse_reasoning(item)
            transcript.add(ir.Role.ASSISTANT, [reasoning], groups=True)
            known = known if used_content else known - {"content"}
        transcript.note(kind, span, _unknown(item, known))
    return transcript


def _parse_reasoning(item: Node) -> tuple[ir.Reasoning, bool]:
    """A reasoning item, and whether its text came from raw ``content`` (servers such as
    vLLM send raw reasoning and no summary)."""
    texts = [part["text"].string() for part in item["summary"].optional(Node.array) or ()]
    used_content = not texts and not item["content"].absent
    if used_content:
        texts = [part["text"].string() for part in item["content"].array()]
    data = item["encrypted_content"].optional(Node.string)
    return ir.Reasoning(text="\n\n".join(texts), data=data), used_content


# --------------------------------------------------------------------------------------------
# Requests

_REQUEST_FIELDS = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
        "max_output_tokens", "temperature", "top_p", "reasoning", "text", "stream",
        "metadata", "user",
    }
)  # fmt: skip
_TOOL_CHOICE_MODES = ("none", "auto", "required")
# Fields that stand in for ``input`` (state kept upstream).
_STATEFUL = ("previous_response_id", "conversation", "prompt")


def parse_request(body: object) -> ir.Request:
    """A client's request body (already JSON-decoded) as an IR request.

    Raises:
      RequestError: the body is not a valid Responses request; the message and ``param``
        name the field at fault.
    """
    root = Node(body, "", request_error)
    root.object()
    model = root["model"].string()
    if not model:
        root["model"].fail("a model name", "an empty string")
    state: dict[str, Any] = {}
    messages = _parse_conversation(root, state)
    tools, tool_layout = _parse_tools(root["tools"])
    if tool_layout is not None:
        state["tools"] = tool_layout
    known, tool_choice = _REQUEST_FIELDS, root["tool_choice"]
    if isinstance(tool_choice.value, dict) and tool_choice.value.get("type") != "function":
        # allowed_tools and hosted-tool choices have no IR counterpart: they go in Extra.
        known, tool_choice = known - {"tool_choice"}, Node(None, "", request_error)
    fields = _unknown(root, known)
    fields.pop(STATE, None)  # the bookkeeping key is ours: a client cannot set it
    for key, modelled in (("text", {"format"}), ("reasoning", {"effort", "summary"})):
        if not root[key].absent and (rest := _unknown(root[key], frozenset(modelled))):
            fields[key] = rest  # text.verbosity, reasoning.generate_summary...
    if state:
        fields[STATE] = state
    stream = bool(root["stream"].optional(Node.boolean))
    return ir.Request(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=tool_choice.optional(_parse_tool_choice),
        parallel_tool_calls=root["parallel_tool_calls"].optional(Node.boolean),
        max_tokens=root["max_output_tokens"].optional(Node.positive),
        temperature=root["temperature"].optional(Node.number),
        top_p=root["top_p"].optional(Node.number),
        response_format=root["text"]["format"].optional(_parse_format),
        reasoning=root["reasoning"].optional(_parse_reasoning_config),
        stream=stream,
        # Responses always report usage (in response.completed): ask upstreams for it.
        stream_usage=stream,
        user=root["user"].optional(Node.string),
        metadata=root["metadata"].optional(_parse_metadata) or {},
        extra=ir.Extra(format=NAME, fields=fields) if fields else None,
    )


def _parse_conversation(root: Node, state: dict[str, Any]) -> list[ir.Message]:
    """``instructions`` and ``input`` as messages, noting in ``state`` how they came."""
    messages: list[ir.Message] = []
    instructions = root["instructions"].optional(Node.string)
    if instructions is not None:
        messages.append(ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text=instructions)]))
        state["instructions"] = True
    input_ = root["input"]
    if isinstance(input_.value, str):
        messages.append(ir.Message(role=ir.Role.USER, content=[ir.Text(text=input_.value)]))
        state["input"] = "string"
    elif input_.absent and any(not root[key].absent for key in _STATEFUL):
        state["input"] = "absent"  # the upstream holds the conversation
    else:
        if not isinstance(input_.value, list):
            input_.fail("a string or an array of input items")
        transcript = _parse_items(input_)
        messages += transcript.messages
        if not transcript.trivial():
            state["items"] = transcript.layout
    return messages


_TOOL_FIELDS = frozenset({"type", "name", "description", "parameters", "strict"})


def _parse_tools(node: Node) -> tuple[list[ir.Tool], list[dict[str, Any]] | None]:
    """Function tools, and the layout that puts hosted tools and unmodelled tool fields back
    (None when there is nothing to put back)."""
    tools: list[ir.Tool] = []
    layout: list[dict[str, Any]] = []
    for tool in node.optional(Node.array) or ():
        if tool["type"].string() != "function":
            if not finite(tool.value):
                tool.fail("JSON without NaN or Infinity")
            layout.append({"tool": tool.value})
            continue
        tools.append(
            ir.Tool(
                name=tool["name"].string(),
                description=tool["description"].optional(Node.string),
                parameters=tool["parameters"].optional(Node.free_object),
                strict=tool["strict"].optional(Node.boolean),
            )
        )
        entry: dict[str, Any] = {}
        if fields := _unknown(tool, _TOOL_FIELDS):
            entry["fields"] = fields
        if omitted := [key for key in ("parameters", "strict") if key not in tool.value]:
            entry["omit"] = omitted
        layout.append(entry)
    return tools, layout if any(layout) else None


def _render_tool(tool: ir.Tool) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.name,
        **present(description=tool.description),
        "parameters": tool.parameters,
        # Omitted strict means "strict if the schema allows" here, unlike everywhere else.
        "strict": bool(tool.strict),
    }


def _render_tools(tools: Sequence[ir.Tool], layout: object) -> list[dict[str, Any]]:
    rendered = [_render_tool(tool) for tool in tools]
    entries = layout if isinstance(layout, list) else []
    hosted = [e["tool"] for e in entries if isinstance(e, dict) and "tool" in e]
    if len(entries) - len(hosted) != len(rendered):  # the tools changed: append hosted ones
        return rendered + hosted
    out, functions = [], iter(rendered)
    for entry in entries:
        if "tool" in entry:
            out.append(entry["tool"])
            continue
        tool = {**next(functions), **entry.get("fields", {})}
        for key in entry.get("omit", ()):
            tool.pop(key, None)
        out.append(tool)
    return out


def _parse_tool_choice(node: Node) -> ir.ToolChoice:
    if isinstance(node.value, str):
        return ir.ToolChoice(mode=ir.ToolChoiceMode(node.choice(_TOOL_CHOICE_MODES)))
    return ir.ToolChoice(mode=ir.ToolChoiceMode.TOOL, name=node["name"].string())


def _render_tool_choice(choice: ir.ToolChoice) -> str | dict[str, Any]:
    if choice.mode is not ir.ToolChoiceMode.TOOL:
        return str(choice.mode.value)
    if choice.name is None:  # "this tool" without a name: the closest is any tool
        return "required"
    return {"type": "function", "name": choice.name}


def _parse_format(node: Node) -> ir.ResponseFormat:
    kind = ir.ResponseFormatType(node["type"].choice([t.value for t in ir.ResponseFormatType]))
    if kind is not ir.ResponseFormatType.JSON_SCHEMA:
        return ir.ResponseFormat(type=kind)
    return ir.ResponseFormat(
        type=kind,
        schema=node["schema"].optional(Node.free_object),
        name=node["name"].optional(Node.string),
        description=node["description"].optional(Node.string),
        strict=node["strict"].optional(Node.boolean),
    )


def _render_format(format_: ir.ResponseFormat) -> dict[str, Any]:
    if format_.type is not ir.ResponseFormatType.JSON_SCHEMA:
        return {"type": format_.type.value}
    return {
        "type": "json_schema",
        # The API requires a name; other formats may have none.
        "name": format_.name or "response",
        **present(description=format_.description, schema=format_.schema, strict=format_.strict),
    }


def _parse_reasoning_config(node: Node) -> ir.ReasoningConfig:
    node.object()
    effort = node["effort"].optional(Node.string)
    return ir.ReasoningConfig(
        effort=effort,
        enabled=False if effort == "none" else None,
        summary=node["summary"].optional(Node.string),
    )


def _render_reasoning_config(config: ir.ReasoningConfig) -> dict[str, Any]:
    return present(effort=effort_for(config), summary=config.summary)


def _parse_metadata(node: Node) -> dict[str, str]:
    return {key: node[key].string() for key in node.object()}


def _is_text_message(message: ir.Message, role: ir.Role) -> bool:
    return (
        message.role is role
        and message.name is None
        and len(message.content) == 1
        and isinstance(message.content[0], ir.Text)
    )


def _text_of(message: ir.Message) -> str:
    part = message.content[0]
    assert isinstance(part, ir.Text)
    return part.text


def render_request(request: ir.Request) -> dict[str, Any]:
    """``request`` as the JSON body a Responses upstream receives."""
    state = _state(request.extra)
    messages = list(request.messages)
    body: dict[str, Any] = {"model": request.model}
    if state.get("instructions") and messages and _is_text_message(messages[0], ir.Role.SYSTEM):
        body["instructions"] = _text_of(messages.pop(0))
    string_input = state.get("input") == "string" and len(messages) == 1
    if string_input and _is_text_message(messages[0], ir.Role.USER):
        body["input"] = _text_of(messages[0])
    left_out = state.get("input") == "absent" and not messages
    if "input" not in body and not left_out:
        units = [unit for message in messages for unit in _units(message)]
        body["input"] = _render_items(units, state.get("items"))
    if tools := _render_tools(request.tools, state.get("tools")):
        body["tools"] = tools
    if request.metadata:
        body["metadata"] = dict(request.metadata)
    if request.stream:
        body["stream"] = True
    if request.response_format is not None:
        body["text"] = {"format": _render_format(request.response_format)}
    body |= present(
        tool_choice=maybe(request.tool_choice, _render_tool_choice),
        parallel_tool_calls=request.parallel_tool_calls,
        max_output_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        reasoning=maybe(request.reasoning, _render_reasoning_config),
        user=request.user,
    )
    return merge_extra(body, request.extra)


# --------------------------------------------------------------------------------------------
# Responses (B.3)

# The request settings a response echoes (render writes them; parse reads past them).
_ECHO_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": True,
    "temperature": None,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": None,
    "truncation": "disabled",
    "metadata": {},
    "user": None,
}
_RESPONSE_FIELDS = frozenset(
    {"id", "object", "created_at", "status", "error", "incomplete_details", "model", "output",
     "usage", *_ECHO_DEFAULTS}
)  # fmt: skip


def _echo(request: ir.Request | None) -> dict[str, Any]:
    """The settings a response to ``request`` echoes (the API's defaults without one)."""
    echo = dict(_ECHO_DEFAULTS)
    if request is None:
        return echo
    body = render_request(request)
    echo |= {key: body[key] for key in _ECHO_DEFAULTS if key in body}
    if isinstance(echo["reasoning"], dict):
        echo["reasoning"] = {"effort": None, "summary": None} | echo["reasoning"]
    return echo


def _count(node: Node) -> int:
    return node.optional(lambda n: n.integer(minimum=0)) or 0


def _parse_usage(node: Node) -> ir.Usage:
    return ir.Usage(
        input_tokens=_count(node["input_tokens"]),
        output_tokens=_count(node["output_tokens"]),
        cache_read_tokens=_count(node["input_tokens_details"]["cached_tokens"]),
        cache_write_tokens=_count(node["input_tokens_details"]["cache_write_tokens"]),
        reasoning_tokens=_count(node["output_tokens_details"]["reasoning_tokens"]),
    )


def _render_usage(usage: ir.Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


_FAILED = "the model failed to complete the response"


def _status(stop: ir.StopReason) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None]:
    """``status``, ``incomplete_details`` and ``error`` for a stop reason (F.2)."""
    if stop is ir.StopReason.MAX_TOKENS:
        return "incomplete", {"reason": "max_output_tokens"}, None
    if stop is ir.StopReason.CONTENT_FILTER:
        return "incomplete", {"reason": "content_filter"}, None
    if stop is ir.StopReason.ERROR:
        return "failed", None, _error_object(ir.ErrorKind.INTERNAL, _FAILED)
    return "completed", None, None


def _stop_reason(status: str | None, reason: str | None, tool_calls: bool) -> ir.StopReason:
    """The inverse of :func:`_status`; a completed turn with calls is a tool turn."""
    if status == "incomplete":
        return (
            ir.StopReason.CONTENT_FILTER if reason == "content_filter" else ir.StopReason.MAX_TOKENS
        )
    if status in ("failed", "cancelled"):
        return ir.StopReason.ERROR
    return ir.StopReason.TOOL_USE if tool_calls else ir.StopReason.END_TURN


_ID_JUNK = re.compile(r"[^A-Za-z0-9]")


def _item_id(prefix: str, response_id: str, index: int) -> str:
    """An output item id, unique within the response and stable for the same one."""
    return f"{prefix}_{_ID_JUNK.sub('', response_id.removeprefix('resp_'))}_{index}"


def _output_units(parts: Sequence[ir.Part], response_id: str) -> list[_Unit]:
    """An output item per part (images, audio and documents have no slot), with ids."""
    units: list[_Unit] = []
    for part in parts:
        index = len(units)
        if isinstance(part, ir.Text):
            item = _message_item(_item_id("msg", response_id, index), [_output_text(part.text)])
            units.append(_Unit("message", item))
        elif isinstance(part, ir.Reasoning):
            item = {"id": _item_id("rs", response_id, index), **_reasoning_item(part)}
            units.append(_Unit("reasoning", item))
        elif isinstance(part, ir.ToolCall):
            item_id = _item_id("fc", response_id, index)
            units.append(_Unit("function_call", _call_item(item_id, part, part.arguments)))
    return units


def _message_item(
    item_id: str, content: list[dict[str, Any]], status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _call_item(
    item_id: str, call: ir.ToolCall | ir.ToolCallStart, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call.id,
        "name": call.name,
        "arguments": arguments,
    }


def _response_object(
    *,
    id: str,
    model: str,
    created: int | None,
    stop: ir.StopReason | None,
    output: list[dict[str, Any]],
    usage: ir.Usage | None,
    echo: dict[str, Any],
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``response`` object; ``stop`` None means still in progress."""
    status, incomplete = "in_progress", None
    if stop is not None:
        status, incomplete, stop_error = _status(stop)
        error = error or stop_error
    if error is not None:
        status = "failed"
    return {
        "id": id,
        "object": "response",
        "created_at": int(time.time()) if created is None else created,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "model": model,
        "output": output,
        **echo,
        "usage": maybe(usage, _render_usage),
    }


def parse_response(body: object) -> ir.Response:
    """An upstream's ``response`` object as an IR response.

    ``status: failed`` (or ``cancelled``) reads as :attr:`ir.StopReason.ERROR`.

    Raises:
      UpstreamError: the body is not a response object.
    """
    root = Node(body, "", upstream_error)
    root.object()
    output = root["output"]
    transcript = _Transcript() if output.absent else _parse_items(output, assistant=True)
    content = [part for message in transcript.messages for part in message.content]
    tool_calls = any(isinstance(part, ir.ToolCall) for part in content)
    reason = root["incomplete_details"]["reason"].optional(Node.string)
    response_id = root["id"].optional(Node.string) or ""
    fields = _unknown(root, _RESPONSE_FIELDS)
    layout = _prune(transcript.layout, _output_units(content, response_id))
    if any(set(entry) != {"type"} for entry in layout):
        fields[STATE] = {"items": layout}
    return ir.Response(
        id=response_id,
        model=root["model"].optional(Node.string) or "",
        content=content,
        stop_reason=_stop_reason(root["status"].optional(Node.string), reason, tool_calls),
        usage=root["usage"].optional(_parse_usage) or ir.Usage(),
        created=root["created_at"].optional(lambda n: int(n.number())),
        extra=ir.Extra(format=NAME, fields=fields) if fields else None,
    )


def _prune(layout: list[dict[str, Any]], units: Sequence[_Unit]) -> list[dict[str, Any]]:
    """``layout`` without the item fields rendering mints the same anyway (an upstream's
    ``status: completed``, ids equal to the minted ones), so that only what differs is kept
    and a second trip keeps the same."""
    pruned, position = [], 0
    for entry in layout:
        if "item" not in entry:
            span = entry.get("span", 1)
            default = units[position].item if span == 1 and position < len(units) else {}
            position += span
            fields = {k: v for k, v in entry.get("fields", {}).items() if default.get(k) != v}
            entry = {k: v for k, v in entry.items() if k != "fields"}
            entry |= {"fields": fields} if fields else {}
        pruned.append(entry)
    return pruned


def render_response(response: ir.Response, request: ir.Request | None = None) -> dict[str, Any]:
    """``response`` as a ``response`` object for a Responses client.

    Args:
      request: the request answered, whose settings the response echoes; without one the
        API's defaults are echoed.
    """
    units = _output_units(response.content, response.id)
    body = _response_object(
        id=response.id,
        model=response.model,
        created=response.created,
        stop=response.stop_reason,
        output=_render_items(units, _state(response.extra).get("items")),
        usage=response.usage,
        echo={},
    )
    body = merge_extra(body, response.extra)
    return body | {key: value for key, value in _echo(request).items() if key not in body}


# --------------------------------------------------------------------------------------------
# Errors inside streams

# Error codes OpenAI sends that name a kind, beside Chat's error types (which mux sends).
_CODE_KINDS = {
    "rate_limit_exceeded": ir.ErrorKind.RATE_LIMIT,
    "insufficient_quota": ir.ErrorKind.RATE_LIMIT,
    "context_length_exceeded": ir.ErrorKind.INVALID_REQUEST,
    "invalid_prompt": ir.ErrorKind.INVALID_REQUEST,
    "model_not_found": ir.ErrorKind.NOT_FOUND,
    "server_is_overloaded": ir.ErrorKind.OVERLOADED,
}
_TYPE_KINDS = {render_error(MuxError(kind, ""))["error"]["type"]: kind for kind in ir.ErrorKind}


def _error_object(kind: ir.ErrorKind, message: str) -> dict[str, Any]:
    """A ``response.error`` object: OpenAI's code where it has one for the kind, Chat's
    error type otherwise, so that the kind survives a trip."""
    chat = render_error(MuxError(kind, message))["error"]
    return {"code": chat["code"] or chat["type"], "message": message, "type": chat["type"]}


def _stream_error(error: Node) -> ir.StreamError:
    """A ``response.failed`` error or an ``error`` event as a StreamError; never raises."""
    value = error.value if isinstance(error.value, dict) else {}
    kind = ir.ErrorKind.UPSTREAM
    for key in ("type", "code"):
        name = value.get(key)
        if isinstance(name, str) and (name in _TYPE_KINDS or name in _CODE_KINDS):
            kind = _TYPE_KINDS.get(name) or _CODE_KINDS[name]
            break
    message = value.get("message")
    if not isinstance(message, str) or not message:
        message = "the upstream response failed without an error message"
    return ir.StreamError(kind=kind, message=message, status=status_for_kind(kind))


# --------------------------------------------------------------------------------------------
# Streams (B.4)


class StreamRenderer:
    """IR stream events to the SSE bytes a Responses client reads (B.4, protocols.md 0).

    Each event goes out as ``event: <type>`` with the same ``type`` in its data and a
    ``sequence_number`` counting from 0. :class:`ir.StreamStart` gives ``response.created``
    and ``response.in_progress``; each IR part is one output item (text: a message with one
    ``output_text`` part; reasoning: an item with one summary part, and ``encrypted_content``
    when the IR has data; a tool call: a ``function_call``), announced by
    ``output_item.added`` (and ``content_part.added`` / ``reasoning_summary_part.added``)
    before its deltas and closed by the ``.done`` events at :class:`ir.PartEnd`. The one
    terminal event is ``response.completed``, ``response.incomplete`` (the token limit, a
    filter) or ``response.failed`` (an error stop, or a :class:`ir.StreamError`; an error
    before the stream began is an ``error`` event). Events after it are dropped.
    """

    def __init__(self, request: ir.Request) -> None:
        self._echo = _echo(request)
        self._sequence = 0
        self._start: ir.StreamStart | None = None
        self._created = 0
        self._output: list[dict[str, Any]] = []  # finished items
        self._open: _OpenItem | None = None
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
                self._start = event
                self._created = int(time.time()) if event.created is None else event.created
                response = self._response(None)
                return self._emit("response.created", response=response) + self._emit(
                    "response.in_progress", response=response
                )
            case ir.TextDelta(index=index, text=text):
                out = self._part(index, "message")
                return out + self._text(text)
            case ir.ReasoningDelta(index=index):
                out = self._part(index, "reasoning")
                return out + self._reasoning(event)
            case ir.ToolCallStart(index=index):
                return self._part(index, "function_call", event)
            case ir.ToolArgsDelta(index=index, json=fragment):
                out = self._part(index, "function_call")
                return out + self._arguments(fragment)
            case ir.PartEnd():
                return self._close()
            case ir.UsageUpdate(usage=usage):
                self._usage = usage
            case ir.Finish(stop_reason=stop):
                out = self._close()
                self._ended = True
                terminal = f"response.{_status(stop)[0]}"  # completed, incomplete, failed
                final_usage = None if stop is ir.StopReason.ERROR else self._usage
                return out + self._emit(terminal, response=self._response(stop, final_usage))
            case ir.StreamError(kind=kind, message=message):
                self._ended = True
                error = _error_object(kind, message)
                if self._start is None:  # nothing began: no response to fail
                    return self._emit("error", code=error["code"], message=message, param=None)
                response = self._response(ir.StopReason.ERROR, None, error)
                return self._emit("response.failed", response=response)
        return b""

    def _emit(self, type_: str, **fields: Any) -> bytes:
        payload = {"type": type_, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse(dumps(payload), event=type_)

    def _response(
        self,
        stop: ir.StopReason | None,
        usage: ir.Usage | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        start = self._begun()
        return _response_object(
            id=start.id,
            model=start.model,
            created=self._created,
            stop=stop,
            output=list(self._output),
            usage=usage,
            echo=self._echo,
            error=error,
        )

    def _begun(self) -> ir.StreamStart:
        if self._start is None:
            raise ValueError("a stream must begin with StreamStart")
        return self._start

    def _part(self, index: int, kind: str, call: ir.ToolCallStart | None = None) -> bytes:
        """Open IR part ``index`` as an output item of ``kind`` unless it is open already."""
        if self._open is not None and self._open.index == index:
            return b""
        out = self._close()
        start = self._begun()
        output_index = len(self._output)
        prefix = {"message": "msg", "reasoning": "rs", "function_call": "fc"}[kind]
        item_id = _item_id(prefix, start.id, output_index)
        if kind == "function_call" and call is None:  # arguments without a start
            call = ir.ToolCallStart(index=index, id=f"call_{index}", name="")
        self._open = _OpenItem(index, output_index, kind, item_id, call)
        if kind == "message":
            item = _message_item(item_id, [], "in_progress")
            part = _output_text("")
            return (
                out
                + self._emit("response.output_item.added", output_index=output_index, item=item)
                + self._emit("response.content_part.added", **self._where(self._open), part=part)
            )
        if kind == "reasoning":
            item = {"id": item_id, "type": "reasoning", "summary": []}
        else:
            assert call is not None
            item = _call_item(item_id, call, "", "in_progress")
        return out + self._emit("response.output_item.added", output_index=output_index, item=item)

    @staticmethod
    def _where(opened: _OpenItem, content_index: bool = True) -> dict[str, Any]:
        where: dict[str, Any] = {"item_id": opened.item_id, "output_index": opened.output_index}
        return where | ({"content_index": 0} if content_index else {})

    @staticmethod
    def _summary(opened: _OpenItem) -> dict[str, Any]:
        return StreamRenderer._where(opened, content_index=False) | {"summary_index": 0}

    def _text(self, text: str) -> bytes:
        opened = self._open
        assert opened is not None
        if not text:
            return b""
        opened.pieces.append(text)
        where = self._where(opened)
        return self._emit("response.output_text.delta", **where, delta=text, logprobs=[])

    def _reasoning(self, event: ir.ReasoningDelta) -> bytes:
        opened = self._open
        assert opened is not None
        if event.data is not None:
            opened.data = event.data
        if not event.text:
            return b""
        out = b""
        if not opened.pieces:
            part = {"type": "summary_text", "text": ""}
            out = self._emit(
                "response.reasoning_summary_part.added", **self._summary(opened), part=part
            )
        opened.pieces.append(event.text)
        return out + self._emit(
            "response.reasoning_summary_text.delta", **self._summary(opened), delta=event.text
        )

    def _arguments(self, fragment: str) -> bytes:
        opened = self._open
        assert opened is not None
        if not fragment:
            return b""
        opened.pieces.append(fragment)
        where = self._where(opened, content_index=False)
        return self._emit("response.function_call_arguments.delta", **where, delta=fragment)

    def _close(self) -> bytes:
        """The ``.done`` events of the open item, if any."""
        opened, self._open = self._open, None
        if opened is None:
            return b""
        whole = "".join(opened.pieces)
        out = b""
        if opened.kind == "message":
            part = _output_text(whole)
            where = self._where(opened)
            out += self._emit("response.output_text.done", **where, text=whole, logprobs=[])
            out += self._emit("response.content_part.done", **where, part=part)
            item = _message_item(opened.item_id, [part])
        elif opened.kind == "reasoning":
            summary = []
            if opened.pieces:
                part = {"type": "summary_text", "text": whole}
                summary.append(part)
                where = self._summary(opened)
                out += self._emit("response.reasoning_summary_text.done", **where, text=whole)
                out += self._emit("response.reasoning_summary_part.done", **where, part=part)
            item = {"id": opened.item_id, "type": "reasoning", "summary": summary}
            item |= present(encrypted_content=opened.data)
        else:
            assert opened.call is not None
            where = self._where(opened, content_index=False)
            name = opened.call.name
            out += self._emit(
                "response.function_call_arguments.done", **where, name=name, arguments=whole
            )
            item = _call_item(opened.item_id, opened.call, whole)
        self._output.append(item)
        return out + self._emit(
            "response.output_item.done", output_index=opened.output_index, item=item
        )


@attrs.define(eq=False)
class _OpenItem:
    """The output item being streamed."""

    index: int  # the IR part
    output_index: int
    kind: str  # message, reasoning, function_call
    item_id: str
    call: ir.ToolCallStart | None = None
    pieces: list[str] = attrs.Factory(list)  # text, summary text or argument fragments
    data: str | None = None  # encrypted reasoning


class StreamParser:
    """An upstream's Responses SSE bytes to IR stream events.

    Each content part of a message item, each reasoning item and each function call becomes
    one IR part, opened by its first delta (or, for a part that had none, by what its
    ``.done`` event holds) and ended at its ``.done`` event. A reasoning item's summary parts
    join with a blank line; its ``encrypted_content`` (final on ``output_item.done``) is a
    data delta. ``response.completed`` and ``response.incomplete`` give the usage and the
    finish; ``response.failed`` and ``error`` events give a :class:`ir.StreamError`, even
    before anything began (an error inside an HTTP 200 stream). Hosted-tool items and
    annotations are skipped.

    Raises (from :meth:`feed` and :meth:`close`):
      UpstreamError: the bytes are not a Responses stream.
    """

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._started = False
        self._done = False
        self._next_index = 0
        self._parts: dict[tuple[int, int], _SeenPart] = {}  # (output, content index) -> part
        self._open: _SeenPart | None = None
        self._kinds: dict[int, str] = {}  # output index -> item type
        self._tool_calls = False

    def feed(self, data: bytes) -> list[ir.Event]:
        """The events the bytes ``data`` completed."""
        return self._decode(self._sse.feed, data)

    def close(self) -> list[ir.Event]:
        """End of the upstream body: an error if the stream broke off before its end."""
        events = self._decode(lambda _: self._sse.close(), b"")
        if self._done:
            return events
        self._done = True
        message = "the upstream stream ended before the response completed"
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
        type_ = node["type"].optional(Node.string) or message.event or ""
        handler = _HANDLERS.get(type_)
        return handler(self, node) if handler is not None else []

    # -- lifecycle

    def _begin(self, node: Node) -> list[ir.Event]:
        if self._started:
            return []
        self._started = True
        response = node["response"]
        return [
            ir.StreamStart(
                id=response["id"].optional(Node.string) or "",
                model=response["model"].optional(Node.string) or "",
                created=response["created_at"].optional(lambda n: int(n.number())),
            )
        ]

    def _finish(self, node: Node) -> list[ir.Event]:
        events = self._begin(node) + self._close_open()
        response = node["response"]
        if self._next_index == 0:  # a server that sent only the whole response
            events += self._whole(response)
        self._done = True
        usage = response["usage"]
        if not usage.absent:
            events.append(ir.UsageUpdate(usage=_parse_usage(usage)))
        status = response["status"].optional(Node.string)
        if status is None:
            status = "incomplete" if node["type"].value == "response.incomplete" else "completed"
        reason = response["incomplete_details"]["reason"].optional(Node.string)
        return [*events, ir.Finish(stop_reason=_stop_reason(status, reason, self._tool_calls))]

    def _whole(self, response: Node) -> list[ir.Event]:
        output = response["output"]
        transcript = _parse_items(output, True) if isinstance(output.value, list) else None
        parts = [p for m in (transcript.messages if transcript else ()) for p in m.content]
        whole = ir.Response(id="", model="", content=parts)
        events: list[ir.Event] = [
            event
            for event in streams.split(whole, lambda text: [text])
            if not isinstance(event, ir.StreamStart | ir.UsageUpdate | ir.Finish)
        ]
        self._next_index = len(parts)
        self._tool_calls = any(isinstance(p, ir.ToolCall) for p in parts)
        return events

    def _failed(self, node: Node) -> list[ir.Event]:
        self._done = True
        error = node["response"]["error"] if node["type"].value == "response.failed" else node
        return [_stream_error(error)]

    # -- items and parts

    def _item_added(self, node: Node) -> list[ir.Event]:
        output_index = node["output_index"].integer(minimum=0)
        item = node["item"]
        kind = item["type"].optional(Node.string) or ""
        self._kinds[output_index] = kind
        if kind != "function_call":
            return []
        events = self._begin(node)
        call = ir.ToolCallStart(index=0, id=item["call_id"].string(), name=item["name"].string())
        part = self._open_part((output_index, 0), "tool", events)
        self._tool_calls = True
        events.append(attrs.evolve(call, index=part.index))
        arguments = item["arguments"].optional(Node.string)
        if arguments:
            part.deltas = True
            events.append(ir.ToolArgsDelta(index=part.index, json=arguments))
        return events

    def _text_delta(self, node: Node) -> list[ir.Event]:
        key = (node["output_index"].integer(minimum=0), node["content_index"].integer(minimum=0))
        delta = node["delta"].string()
        events = self._begin(node)
        part = self._open_part(key, "text", events)
        if delta:
            part.deltas = True
            events.append(ir.TextDelta(index=part.index, text=delta))
        return events

    def _text_done(self, node: Node) -> list[ir.Event]:
        key = (node["output_index"].integer(minimum=0), node["content_index"].integer(minimum=0))
        part = node["part"]
        if part.absent:
            refusal = node["type"].value == "response.refusal.done"
            text = node["refusal"] if refusal else node["text"]
        elif part["type"].value in ("output_text", "refusal"):
            text = part["refusal"] if part["type"].value == "refusal" else part["text"]
        else:  # raw reasoning_text parts end with their item
            return []
        return self._done_part(key, "text", text.optional(Node.string) or "", node)

    def _summary_part_added(self, node: Node) -> list[ir.Event]:
        if node["summary_index"].integer(minimum=0) == 0:
            return []
        key = (node["output_index"].integer(minimum=0), 0)
        events = self._begin(node)
        part = self._open_part(key, "reasoning", events)
        part.deltas = True
        return [*events, ir.ReasoningDelta(index=part.index, text="\n\n")]

    def _reasoning_delta(self, node: Node) -> list[ir.Event]:
        key = (node["output_index"].integer(minimum=0), 0)
        delta = node["delta"].string()
        events = self._begin(node)
        part = self._open_part(key, "reasoning", events)
        if delta:
            part.deltas = True
            events.append(ir.ReasoningDelta(index=part.index, text=delta))
        return events

    def _arguments_delta(self, node: Node) -> list[ir.Event]:
        key = (node["output_index"].integer(minimum=0), 0)
        part = self._parts.get(key)
        if part is None or part.kind != "tool" or part is not self._open:
            node["output_index"].fail("the index of the function call being streamed")
        delta = node["delta"].string()
        if not delta:
            return []
        part.deltas = True
        return [ir.ToolArgsDelta(index=part.index, json=delta)]

    def _arguments_done(self, node: Node) -> list[ir.Event]:
        key = (node["output_index"].integer(minimum=0), 0)
        part = self._parts.get(key)
        arguments = node["arguments"].optional(Node.string)
        if part is None or part.deltas or not arguments:
            return []
        part.deltas = True
        return [ir.ToolArgsDelta(index=part.index, json=arguments)]

    def _item_done(self, node: Node) -> list[ir.Event]:
        output_index = node["output_index"].integer(minimum=0)
        item = node["item"]
        kind = item["type"].optional(Node.string) or self._kinds.get(output_index, "")
        events = self._begin(node)
        if kind == "message":
            for index, content in enumerate(item["content"].optional(Node.array) or ()):
                text = content["text"] if content["type"].value != "refusal" else content["refusal"]
                events += self._done_part(
                    (output_index, index), "text", text.optional(Node.string) or "", node
                )
        elif kind == "reasoning":
            reasoning, _ = _parse_reasoning(item)
            key = (output_index, 0)
            part = self._parts.get(key)
            if part is None:  # no summary streamed: the item says it all
                part = self._open_part(key, "reasoning", events)
                if reasoning.text or reasoning.data is None:
                    events.append(ir.ReasoningDelta(index=part.index, text=reasoning.text))
            if reasoning.data is not None and not part.closed:
                events.append(ir.ReasoningDelta(index=part.index, data=reasoning.data))
            events += self._close_part(key)
        elif kind == "function_call":
            key = (output_index, 0)
            part = self._parts.get(key)
            arguments = item["arguments"].optional(Node.string)
            if part is not None and not part.deltas and arguments and not part.closed:
                part.deltas = True
                events.append(ir.ToolArgsDelta(index=part.index, json=arguments))
            events += self._close_part(key)
        return events

    def _done_part(self, key: tuple[int, int], kind: str, text: str, node: Node) -> list[ir.Event]:
        """The end of a text part; a part without deltas opens with the whole text."""
        part = self._parts.get(key)
        if part is not None and part.closed:
            return []
        events = self._begin(node)
        if part is None:
            part = self._open_part(key, kind, events)
            events.append(ir.TextDelta(index=part.index, text=text))
        return events + self._close_part(key)

    def _open_part(self, key: tuple[int, int], kind: str, events: list[ir.Event]) -> _SeenPart:
        """The part at ``key``, opened (ending another open one) if it is new."""
        part = self._parts.get(key)
        if part is not None:
            if part.closed or part.kind != kind:
                raise UpstreamError(
                    ir.ErrorKind.UPSTREAM,
                    f"malformed upstream stream: output {key[0]} part {key[1]} "
                    "continued after it ended or changed type",
                )
            if part is not self._open:
                raise UpstreamError(
                    ir.ErrorKind.UPSTREAM,
                    f"malformed upstream stream: output {key[0]} interleaved with another",
                )
            return part
        events += self._close_open()
        part = self._parts[key] = self._open = _SeenPart(index=self._next_index, kind=kind)
        self._next_index += 1
        return part

    def _close_part(self, key: tuple[int, int]) -> list[ir.Event]:
        part = self._parts.get(key)
        if part is None or part.closed:
            return []
        part.closed = True
        if self._open is part:
            self._open = None
        return [ir.PartEnd(index=part.index)]

    def _close_open(self) -> list[ir.Event]:
        part, self._open = self._open, None
        if part is None or part.closed:
            return []
        part.closed = True
        return [ir.PartEnd(index=part.index)]


@attrs.define(eq=False)
class _SeenPart:
    index: int
    kind: str  # text, reasoning, tool
    deltas: bool = False
    closed: bool = False


_HANDLERS: dict[str, Callable[[StreamParser, Node], list[ir.Event]]] = {
    "response.created": StreamParser._begin,
    "response.in_progress": StreamParser._begin,
    "response.queued": StreamParser._begin,
    "response.output_item.added": StreamParser._item_added,
    "response.output_text.delta": StreamParser._text_delta,
    "response.refusal.delta": StreamParser._text_delta,
    "response.output_text.done": StreamParser._text_done,
    "response.refusal.done": StreamParser._text_done,
    "response.content_part.done": StreamParser._text_done,
    "response.reasoning_summary_part.added": StreamParser._summary_part_added,
    "response.reasoning_summary_text.delta": StreamParser._reasoning_delta,
    "response.reasoning_text.delta": StreamParser._reasoning_delta,
    "response.function_call_arguments.delta": StreamParser._arguments_delta,
    "response.function_call_arguments.done": StreamParser._arguments_done,
    "response.output_item.done": StreamParser._item_done,
    "response.completed": StreamParser._finish,
    "response.incomplete": StreamParser._finish,
    "response.failed": StreamParser._failed,
    "error": StreamParser._failed,
}
