"""What Anthropic Messages can express of the IR (see tests/projections/__init__.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from mux import ir
from mux.errors import status_for_kind
from mux.formats._json import finite
from mux.formats._parts import sniff_image_type
from mux.framing import FramingError, dumps, loads

__all__ = ["arguments", "events", "request", "response", "stream_error"]

# ============================================================================================
# Anthropic Messages

_NAME = "anthropic"
# The constants mux.formats.anthropic documents.
_DEFAULT_MAX_TOKENS = 8192
_MIN_THINKING_BUDGET = 1024

_WIRE_ROLES = {
    ir.Role.SYSTEM: "system",
    ir.Role.DEVELOPER: "system",  # loss: developer reads back as system
    ir.Role.USER: "user",
    ir.Role.TOOL: "user",
    ir.Role.ASSISTANT: "assistant",
}


def request(r: ir.Request) -> ir.Request:
    """What survives ``parse_request(render_request(r))`` in Anthropic Messages."""
    choice, parallel = _tool_choice(r.tool_choice, r.parallel_tool_calls)
    messages = _messages(r.messages, _of_anthropic_origin(r))
    reasoning = _reasoning(r.reasoning)
    extra = _extra_fields(r.extra)
    if reasoning is not None and reasoning.enabled and _unthought_tool_turn(messages):
        # loss: thinking, on a tool loop whose assistant turn does not start with thinking
        # (G.1: the API refuses it), and any keys of it the Extra kept
        reasoning = _reasoning(attrs.evolve(reasoning, enabled=None, budget_tokens=None))
        extra.pop("thinking", None)
    budget = reasoning.budget_tokens if reasoning is not None else None
    return ir.Request(
        model=r.model,
        messages=messages,
        tools=[_tool(tool) for tool in r.tools],
        tool_choice=choice,
        parallel_tool_calls=parallel,
        # loss: no max_tokens becomes the default (plus the thinking budget)
        max_tokens=r.max_tokens
        if r.max_tokens is not None
        else _DEFAULT_MAX_TOKENS + (budget or 0),
        # loss: temperature clamped to Anthropic's [0, 1]
        temperature=None if r.temperature is None else min(max(r.temperature, 0.0), 1.0),
        top_p=r.top_p,
        top_k=r.top_k,
        stop=r.stop,
        seed=None,  # loss: Anthropic has no seed
        frequency_penalty=None,  # loss: no penalties
        presence_penalty=None,  # loss: no penalties
        n=None,  # loss: one choice only
        response_format=_response_format(r.response_format),
        reasoning=reasoning,
        stream=r.stream,
        stream_usage=r.stream,  # loss: Anthropic streams always report usage, so it is read so
        user=r.user,
        metadata={},  # loss: Anthropic's metadata holds only user_id
        # loss: another format's extras; the Extra is always there, marking Anthropic origin
        extra=ir.Extra(format=_NAME, fields=extra),
        origin=None,  # loss: the origin is the routes' to record, not the format's
    )


def _unthought_tool_turn(messages: Sequence[ir.Message]) -> bool:
    """A tool loop (tool results after the last assistant turn) whose assistant turn does
    not start with reasoning."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role is ir.Role.ASSISTANT:
            after = messages[index + 1:]
            first = messages[index].content[0]
            return any(m.role is ir.Role.TOOL for m in after) and not isinstance(
                first, ir.Reasoning
            )
    return False


def _of_anthropic_origin(r: ir.Request) -> bool:
    """Whether render_request may write r's reasoning (G.1: only Anthropic's own)."""
    origin = r.origin is not None and r.origin.format == _NAME
    return origin or (r.extra is not None and r.extra.format == _NAME)


def _messages(messages: Sequence[ir.Message], signed: bool) -> list[ir.Message]:
    """The messages as rendered (parts placed by wire role, empty messages left out, same
    roles merged, tool results first) and read back (user turns split into TOOL + USER)."""
    wire: list[tuple[str, list[ir.Part]]] = []
    for message in messages:  # loss: message names
        role = _WIRE_ROLES[message.role]
        parts = [q for p in message.content if (q := _part(p, role, signed)) is not None]
        if not parts:
            continue  # loss: messages left without content
        if wire and wire[-1][0] == role:
            wire[-1][1].extend(parts)  # loss: consecutive messages of one wire role merge
        else:
            wire.append((role, parts))
    out: list[ir.Message] = []
    for role, parts in wire:
        if role == "system":
            out.append(ir.Message(role=ir.Role.SYSTEM, content=parts))
        elif role == "assistant":
            out.append(ir.Message(role=ir.Role.ASSISTANT, content=parts))
        else:
            # loss: a user turn's tool results move ahead of its other parts
            results = [p for p in parts if isinstance(p, ir.ToolResult)]
            rest = [p for p in parts if not isinstance(p, ir.ToolResult)]
            if results:
                out.append(ir.Message(role=ir.Role.TOOL, content=results))
            if rest:
                out.append(ir.Message(role=ir.Role.USER, content=rest))
    return out


def _part(p: ir.Part, role: str, signed: bool) -> ir.Part | None:
    """A part in a message of wire role ``role`` of a request of Anthropic origin or not
    (``signed``), read back; None when it is left out."""
    if isinstance(p, ir.Text):
        # loss: empty text (the API rejects it)
        return ir.Text(text=p.text, cache_control=p.cache_control) if p.text else None
    if role == "system":
        return None  # loss: anything but text in a system message
    if role == "assistant":
        if isinstance(p, ir.ToolCall):
            return ir.ToolCall(
                id=p.id,
                name=p.name,
                arguments=arguments(p.arguments),  # loss: arguments are re-encoded compactly
                signature=None,  # loss: tool-call signatures (Gemini's)
                cache_control=p.cache_control,
            )
        if isinstance(p, ir.Reasoning):
            if not signed:
                # loss: reasoning of a request not of Anthropic origin, signed or redacted by
                # another provider or not at all (G.1: Anthropic rejects foreign signatures)
                return None
            if p.redacted and p.data is not None:
                return ir.Reasoning(data=p.data, redacted=True)  # loss: text beside redacted data
            if p.signature:  # loss: data beside a signature
                return ir.Reasoning(text=p.text, signature=p.signature)
            return None  # loss: unsigned reasoning cannot be replayed (G.1)
        return None  # loss: images, documents, audio and tool results in an assistant turn
    if isinstance(p, ir.Image):
        return _image(p)
    if isinstance(p, ir.Document):
        return _document(p)
    if isinstance(p, ir.ToolResult):
        return ir.ToolResult(
            call_id=p.call_id,
            content=[q for c in p.content if (q := _part(c, "user", signed)) is not None],
            is_error=p.is_error,
            name=None,  # loss: results link to calls by id only
            cache_control=p.cache_control,
        )
    return None  # loss: audio, and reasoning or tool calls in a user turn


def _image(p: ir.Image) -> ir.Image | None:
    # loss: detail; a url next to inline data
    if p.data is not None:
        # loss: an unknown media type becomes the sniffed one (PNG when nothing matches)
        media_type = p.media_type or sniff_image_type(p.data) or "image/png"
        return ir.Image(media_type=media_type, data=p.data, cache_control=p.cache_control)
    if p.url is not None:
        return ir.Image(url=p.url, cache_control=p.cache_control)
    return None  # loss: an image with neither data nor url


def _document(p: ir.Document) -> ir.Part | None:
    """Data wins over a URL, a URL over a file id; filenames have no Anthropic slot."""
    cache = p.cache_control
    media_type = p.media_type or ""
    if media_type.startswith("image/"):  # an image file: an image block
        if p.data is not None or p.url is not None:
            return _image(
                ir.Image(media_type=p.media_type, data=p.data, url=p.url, cache_control=cache)
            )
        if p.file_id is not None:  # loss: title, filename, the exact image type
            return ir.Document(media_type="image/*", file_id=p.file_id, cache_control=cache)
        return None
    if p.data is not None:
        # loss: url, file_id and filename beside data
        if media_type.startswith("text/"):
            # loss: the text subtype; bytes that are not UTF-8
            text = p.data.decode("utf-8", errors="replace").encode()
            return ir.Document(
                media_type="text/plain", data=text, title=p.title, cache_control=cache
            )
        media_type = p.media_type or "application/pdf"  # loss: an unknown type becomes PDF
        return ir.Document(media_type=media_type, data=p.data, title=p.title, cache_control=cache)
    if p.url is not None:  # loss: media type, file id and filename beside a URL
        return ir.Document(url=p.url, title=p.title, cache_control=cache)
    if p.file_id is not None:  # loss: media type and filename
        return ir.Document(file_id=p.file_id, title=p.title, cache_control=cache)
    return None  # loss: a document with nothing to send


def arguments(text: str) -> str:
    """F.4: the object sent, as compact JSON text; what is not a JSON object is wrapped."""
    if not text.strip():
        return "{}"
    try:
        value: Any = loads(text)
    except FramingError:
        value = None
    if not isinstance(value, dict) or not finite(value):
        value = {"_raw": text}
    return dumps(value).decode()


def _tool(t: ir.Tool) -> ir.Tool:
    return ir.Tool(
        name=t.name,
        description=t.description,
        # loss: no parameters becomes the empty object schema (input_schema is required)
        parameters=t.parameters if t.parameters is not None else {"type": "object"},
        strict=t.strict,
        cache_control=t.cache_control,
    )


def _tool_choice(
    c: ir.ToolChoice | None, parallel: bool | None
) -> tuple[ir.ToolChoice | None, bool | None]:
    """``disable_parallel_tool_use`` needs a tool choice to live in: ``auto`` by default."""
    if c is None and parallel is None:
        return None, None
    mode = c.mode if c is not None else ir.ToolChoiceMode.AUTO
    if mode is ir.ToolChoiceMode.NONE:
        return ir.ToolChoice(mode=mode), None  # loss: parallel_tool_calls beside "none"
    if mode is ir.ToolChoiceMode.TOOL and c is not None and c.name is not None:
        return ir.ToolChoice(mode=mode, name=c.name), parallel
    if mode is ir.ToolChoiceMode.AUTO:
        return ir.ToolChoice(mode=mode), parallel  # loss: a name on AUTO
    # loss: a nameless TOOL choice is REQUIRED; a name on REQUIRED
    return ir.ToolChoice(mode=ir.ToolChoiceMode.REQUIRED), parallel


def _response_format(f: ir.ResponseFormat | None) -> ir.ResponseFormat | None:
    if f is None or f.type is not ir.ResponseFormatType.JSON_SCHEMA or f.schema is None:
        return None  # loss: text, json_object, and a JSON-schema format without a schema
    # loss: name, description and strict
    return ir.ResponseFormat(type=ir.ResponseFormatType.JSON_SCHEMA, schema=f.schema)


def _reasoning(c: ir.ReasoningConfig | None) -> ir.ReasoningConfig | None:
    """``thinking`` (disabled / enabled with a budget / adaptive) and ``output_config.effort``."""
    if c is None:
        return None
    effort = c.effort
    if effort == "minimal":
        effort = "low"  # loss: Anthropic has no "minimal"
    elif effort == "none":
        effort = None  # "none" is thinking disabled
    enabled: bool | None
    budget = c.budget_tokens
    if c.enabled is False or c.effort == "none" or (budget == 0 and c.enabled is not True):
        enabled, budget = False, None  # loss: a budget beside disabled thinking
    elif budget is not None:
        enabled, budget = True, max(budget, _MIN_THINKING_BUDGET)  # loss: budgets below the minimum
    else:
        enabled = True if c.enabled else None
    if enabled is None and effort is None:
        return None
    return ir.ReasoningConfig(
        enabled=enabled,
        effort=effort,
        budget_tokens=budget,
        summary=None,  # loss: Responses summary mode
        include_thoughts=None,  # loss: Gemini's includeThoughts
    )


def _extra_fields(e: ir.Extra | None) -> dict[str, Any]:
    return dict(e.fields) if e is not None and e.format == _NAME else {}


def _extra(e: ir.Extra | None) -> ir.Extra | None:
    # loss: another format's extras; an empty Extra reads back as None
    return e if e is not None and e.format == _NAME and e.fields else None


def _usage(u: ir.Usage) -> ir.Usage:
    """F.3: input goes out without its cache counts, so it cannot be below their sum."""
    return ir.Usage(
        # loss: an input count below the cache counts rises to their sum
        input_tokens=max(u.input_tokens, u.cache_read_tokens + u.cache_write_tokens),
        output_tokens=u.output_tokens,
        cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens,
        reasoning_tokens=u.reasoning_tokens,
    )


def _stop_reason(reason: ir.StopReason, tool_calls: bool) -> ir.StopReason:
    """F.2: a natural stop with tool calls is a tool turn; ERROR has no Anthropic form."""
    if reason in (ir.StopReason.END_TURN, ir.StopReason.ERROR):
        # loss: ERROR reads back as END_TURN (or TOOL_USE)
        return ir.StopReason.TOOL_USE if tool_calls else ir.StopReason.END_TURN
    return reason


def _stop_sequence(reason: ir.StopReason, sequence: str | None) -> str | None:
    # loss: a stop sequence beside another stop reason
    return sequence if reason is ir.StopReason.STOP_SEQUENCE else None


def _response_part(p: ir.Part) -> ir.Part | None:
    if isinstance(p, ir.Text):
        return ir.Text(text=p.text)  # loss: cache_control
    if isinstance(p, ir.ToolCall):
        # loss: signature, cache_control; arguments are re-encoded
        return ir.ToolCall(id=p.id, name=p.name, arguments=arguments(p.arguments))
    if isinstance(p, ir.Reasoning):
        if p.redacted and p.data is not None:
            return ir.Reasoning(data=p.data, redacted=True)  # loss: text beside redacted data
        # loss: encrypted data that is not redacted; an empty signature reads as none
        return ir.Reasoning(text=p.text, signature=p.signature or None)
    return None  # loss: images, audio, documents and tool results in a response


def response(r: ir.Response) -> ir.Response:
    """What survives ``parse_response(render_response(r))`` in Anthropic Messages."""
    content = [q for p in r.content if (q := _response_part(p)) is not None]
    tool_calls = any(isinstance(p, ir.ToolCall) for p in content)
    return ir.Response(
        id=r.id,
        model=r.model,
        content=content,
        stop_reason=_stop_reason(r.stop_reason, tool_calls),
        stop_sequence=_stop_sequence(r.stop_reason, r.stop_sequence),
        usage=_usage(r.usage),
        created=None,  # loss: Anthropic messages carry no creation time
        extra=_extra(r.extra),
    )


# C.5 and the module's rule: the error type for the status, else for the kind; a parsed
# mid-stream error's kind comes from its type and its status from the kind.
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


def stream_error(e: ir.StreamError) -> ir.StreamError:
    """A stream error as the client reads it back: ``event: error`` has a type, no status."""
    type_ = _ERROR_TYPES_BY_STATUS.get(e.status) or _ERROR_TYPES_BY_KIND[e.kind]
    # loss: the kind, where the status names another type (or UPSTREAM, which shares
    # api_error with INTERNAL); the status, which follows from the kind
    kind = _ERROR_KINDS[type_]
    return ir.StreamError(kind=kind, message=e.message, status=status_for_kind(kind))


def events(events: Sequence[ir.Event], request: ir.Request) -> list[ir.Event]:
    """What survives rendering ``events`` for an Anthropic client and parsing them.

    Each part is a content block. A part's events come from its first non-empty delta (or
    its end: a block that said nothing reads back as one empty delta); a reasoning part is
    a redacted block when its first delta is redacted data (and then says nothing more),
    else a thinking block whose signature (the last given) arrives once, just before its
    end. Usage arrives once, before the finish. ``request`` changes nothing here: Anthropic
    streams always report usage.
    """
    out: list[ir.Event] = []
    open_: tuple[int, str] | None = None  # the open part: index and block kind
    said = False  # whether the open part produced an event yet
    signature: str | None = None
    tool_calls = False
    usage: ir.Usage | None = None

    def open_part(index: int, kind: str) -> None:
        nonlocal open_, said, signature
        if open_ is None:
            open_, said, signature = (index, kind), False, None

    def emit(event: ir.Event) -> None:
        nonlocal said
        out.append(event)
        said = True

    def close() -> None:
        nonlocal open_
        if open_ is None:
            return
        index, kind = open_
        if kind == "thinking" and signature is not None:
            emit(ir.ReasoningDelta(index=index, signature=signature))
        if not said:  # loss: a part of empty deltas reads back as one empty delta
            out.append(
                ir.TextDelta(index=index, text="")
                if kind == "text"
                else ir.ReasoningDelta(index=index)
            )
        out.append(ir.PartEnd(index=index))
        open_ = None

    for event in events:
        if isinstance(event, ir.StreamStart):
            # loss: created (Anthropic streams carry no time)
            out.append(ir.StreamStart(id=event.id, model=event.model))
        elif isinstance(event, ir.TextDelta):
            open_part(event.index, "text")
            if event.text:  # loss: empty deltas
                emit(ir.TextDelta(index=event.index, text=event.text))
        elif isinstance(event, ir.ReasoningDelta):
            if open_ is None and event.redacted and event.data is not None:
                open_part(event.index, "redacted")
                emit(ir.ReasoningDelta(index=event.index, data=event.data, redacted=True))
                continue
            open_part(event.index, "thinking")
            if open_ is not None and open_[1] == "thinking":
                # loss: redacted or encrypted data after the first delta; all signatures
                # but the last, which moves to the part's end
                if event.text:
                    emit(ir.ReasoningDelta(index=event.index, text=event.text))
                if event.signature is not None:
                    signature = event.signature
            # loss: anything after a redacted block's data
        elif isinstance(event, ir.ToolCallStart):
            tool_calls = True
            open_part(event.index, "tool")
            # loss: the tool call's signature
            emit(ir.ToolCallStart(index=event.index, id=event.id, name=event.name))
        elif isinstance(event, ir.ToolArgsDelta):
            if event.json:  # loss: empty fragments
                emit(ir.ToolArgsDelta(index=event.index, json=event.json))
        elif isinstance(event, ir.PartEnd):
            close()
        elif isinstance(event, ir.UsageUpdate):
            usage = event.usage  # loss: all but the last update
        elif isinstance(event, ir.Finish):
            close()
            out.append(ir.UsageUpdate(usage=_usage(usage or ir.Usage())))
            out.append(
                ir.Finish(
                    stop_reason=_stop_reason(event.stop_reason, tool_calls),
                    stop_sequence=_stop_sequence(event.stop_reason, event.stop_sequence),
                )
            )
        elif isinstance(event, ir.StreamError):
            # loss: usage before the error; a signature not yet sent; the open part stays
            # open, as in the IR
            out.append(stream_error(event))
    return out
