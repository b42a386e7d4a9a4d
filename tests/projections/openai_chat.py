"""What OpenAI Chat Completions can express of the IR (see tests/projections/__init__.py)."""

from __future__ import annotations

from collections.abc import Sequence

from mux import ir
from mux.errors import status_for_kind

__all__ = ["events", "request", "response"]

# ============================================================================================
# OpenAI Chat Completions

_CHAT = "openai_chat"


def request(r: ir.Request) -> ir.Request:
    """What survives ``parse_request(render_request(r))`` in OpenAI Chat."""
    return ir.Request(
        model=r.model,
        messages=[m for message in r.messages for m in _chat_message(message)],
        tools=[_chat_tool(tool) for tool in r.tools],
        tool_choice=_chat_tool_choice(r.tool_choice),
        parallel_tool_calls=r.parallel_tool_calls,
        max_tokens=r.max_tokens,
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=None,  # loss: Chat has no top_k
        stop=r.stop,
        seed=r.seed,
        frequency_penalty=r.frequency_penalty,
        presence_penalty=r.presence_penalty,
        n=r.n,
        response_format=_chat_response_format(r.response_format),
        reasoning=_chat_reasoning(r.reasoning),
        stream=r.stream,
        stream_usage=r.stream and r.stream_usage,  # loss: stream_options only with stream
        user=r.user,
        metadata=r.metadata,
        extra=_chat_extra(r.extra),
    )


_CHAT_USER_PARTS = (ir.Text, ir.Image, ir.Document, ir.Audio)


def _chat_message(m: ir.Message) -> list[ir.Message]:
    """One IR message as the Chat messages it becomes, read back."""
    results = [p for p in m.content if isinstance(p, ir.ToolResult)]
    # loss: tool results leave their message as separate tool messages, in front of the rest
    out = [ir.Message(role=ir.Role.TOOL, content=[_chat_tool_result(p)]) for p in results]
    # loss: a tool message's other parts; a message of only tool results (and its name)
    if m.role is ir.Role.TOOL or (results and len(results) == len(m.content)):
        return out
    if m.role is ir.Role.ASSISTANT:
        content = _chat_assistant(m.content, _REQUEST_SEPARATOR)
    else:
        # loss: parts the role cannot hold (system and developer messages hold only text)
        kinds = _CHAT_USER_PARTS if m.role is ir.Role.USER else (ir.Text,)
        content = _chat_content([p for p in m.content if isinstance(p, kinds)])
    return [*out, ir.Message(role=m.role, content=content, name=m.name)]


def _chat_content(parts: Sequence[ir.Part]) -> list[ir.Part]:
    # loss: documents with neither inline data nor a file id (known only by URL, or by
    # nothing): Chat's file part cannot carry a URL, so they are left out
    parts = [
        p
        for p in parts
        if not isinstance(p, ir.Document) or p.data is not None or p.file_id is not None
    ]
    # loss: empty content is sent as "" and read back as one empty text part
    return [_chat_part(p) for p in parts] or [ir.Text(text="")]


def _chat_part(p: ir.Part) -> ir.Part:
    if isinstance(p, ir.Text):
        return ir.Text(text=p.text)  # loss: cache_control
    if isinstance(p, ir.Image):
        if p.data is not None:  # loss: a url next to inline data
            return ir.Image(media_type=p.media_type, data=p.data, detail=p.detail)
        # loss: cache_control; an image with neither data nor url gets url ""
        return ir.Image(url=p.url or "", detail=p.detail)
    if isinstance(p, ir.Document):
        return ir.Document(
            media_type=p.media_type if p.data is not None else None,  # loss: type without data
            data=p.data,
            url=None,  # loss: Chat files have no URL
            file_id=p.file_id,
            filename=p.filename,
            title=None,  # loss: no title
            cache_control=None,  # loss: cache_control
        )
    assert isinstance(p, ir.Audio)
    return ir.Audio(data=p.data, format=p.format)


def _chat_tool_result(p: ir.ToolResult) -> ir.ToolResult:
    return ir.ToolResult(
        call_id=p.call_id,
        content=_chat_content(p.content),
        is_error=False,  # loss: Chat tool messages have no error flag
        name=None,  # loss: Chat links results by id only
        cache_control=None,  # loss: cache_control
    )


# Requests join separate text (and reasoning) parts with a blank line; responses as they are.
_REQUEST_SEPARATOR = "\n\n"


def _chat_assistant(parts: Sequence[ir.Part], separator: str = "") -> list[ir.Part]:
    """An assistant turn: reasoning, then text, then tool calls (no order on the wire)."""
    # loss: images, audio, documents and tool results in an assistant turn
    # loss: reasoning signatures and encrypted or redacted reasoning; reasoning parts merge,
    # the non-empty ones joined with the separator
    reasoning = separator.join(p.text for p in parts if isinstance(p, ir.Reasoning) and p.text)
    texts = [p.text for p in parts if isinstance(p, ir.Text)]
    calls = [
        # loss: tool-call signatures (Gemini thoughtSignature) and cache_control
        ir.ToolCall(id=p.id, name=p.name, arguments=p.arguments)
        for p in parts
        if isinstance(p, ir.ToolCall)
    ]
    return [
        *([ir.Reasoning(text=reasoning)] if reasoning else []),
        # loss: text parts merge into one, the non-empty ones joined with the separator
        *([ir.Text(text=separator.join(t for t in texts if t))] if texts else []),
        *calls,
    ]


def _chat_tool(t: ir.Tool) -> ir.Tool:
    return ir.Tool(
        name=t.name,
        description=t.description,
        parameters=t.parameters,
        strict=t.strict,
        cache_control=None,  # loss: cache_control
    )


def _chat_tool_choice(c: ir.ToolChoice | None) -> ir.ToolChoice | None:
    if c is None:
        return None
    if c.mode is ir.ToolChoiceMode.TOOL and c.name is None:
        return ir.ToolChoice(mode=ir.ToolChoiceMode.REQUIRED)  # loss: a nameless TOOL choice
    # loss: a name on a mode other than TOOL
    return ir.ToolChoice(mode=c.mode, name=c.name if c.mode is ir.ToolChoiceMode.TOOL else None)


def _chat_response_format(f: ir.ResponseFormat | None) -> ir.ResponseFormat | None:
    if f is None or f.type is ir.ResponseFormatType.JSON_SCHEMA:
        return f
    return ir.ResponseFormat(type=f.type)  # loss: schema details on text/json_object


# F.6's budget heuristic, as openai_chat applies it when a budget is all there is.
_EFFORT_CEILINGS = ((0, "none"), (2048, "low"), (8192, "medium"))


def _chat_reasoning(c: ir.ReasoningConfig | None) -> ir.ReasoningConfig | None:
    """Chat says only ``reasoning_effort``; "none" reads back as disabled."""
    if c is None:
        return None
    effort = c.effort
    if effort is None and c.enabled is False:
        effort = "none"
    elif effort is None and c.budget_tokens is not None:  # loss: budgets become efforts
        effort = next((e for top, e in _EFFORT_CEILINGS if c.budget_tokens <= top), "high")
    if effort is None:
        return None  # loss: enabled=True alone, summary, include_thoughts
    return ir.ReasoningConfig(
        enabled=False if effort == "none" else None,  # loss: enabled beside an effort
        effort=effort,
        budget_tokens=None,  # loss: token budgets
        summary=None,  # loss: Responses summary mode
        include_thoughts=None,  # loss: Gemini's includeThoughts
    )


def _chat_extra(e: ir.Extra | None) -> ir.Extra | None:
    # loss: another format's extras; an empty Extra reads back as None
    return e if e is not None and e.format == _CHAT and e.fields else None


def _chat_usage(u: ir.Usage) -> ir.Usage:
    """Lossless: prompt_tokens_details carries cached_tokens and cache_write_tokens."""
    return ir.Usage(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=u.cache_write_tokens,
        reasoning_tokens=u.reasoning_tokens,
    )


def _chat_stop_reason(reason: ir.StopReason, tool_calls: bool) -> ir.StopReason:
    """F.2 through finish_reason: length and content_filter survive, tool calls make a tool
    turn, everything else is a natural stop."""
    if reason in (ir.StopReason.MAX_TOKENS, ir.StopReason.CONTENT_FILTER):
        return reason
    if tool_calls or reason is ir.StopReason.TOOL_USE:
        return ir.StopReason.TOOL_USE
    return ir.StopReason.END_TURN  # loss: STOP_SEQUENCE, PAUSE and ERROR read back as END_TURN


def _has_calls(parts: Sequence[ir.Part]) -> bool:
    return any(isinstance(p, ir.ToolCall) for p in parts)


def response(r: ir.Response) -> ir.Response:
    """What survives ``parse_response(render_response(r))`` in OpenAI Chat."""
    content = _chat_assistant(r.content)
    return ir.Response(
        id=r.id,
        model=r.model,
        content=content,
        stop_reason=_chat_stop_reason(r.stop_reason, _has_calls(content)),
        stop_sequence=None,  # loss: which stop sequence matched
        usage=_chat_usage(r.usage),
        created=r.created,  # filled from the clock when None
        extra=_chat_extra(r.extra),
    )


def events(events: Sequence[ir.Event], request: ir.Request) -> list[ir.Event]:
    """What survives rendering ``events`` for a Chat client of ``request`` and parsing them.

    Chat chunks carry no part boundaries: adjacent text parts (or reasoning parts) join into
    one, parts left without content vanish, and a part ends where the next one begins or at
    the finish. Usage is reported once, after the finish.
    """
    out: list[ir.Event] = []
    index, kind, open_ = -1, "", False  # the last projected part: index, kind, still open?
    usage: ir.Usage | None = None
    tool_calls = False

    def part(part_kind: str) -> int:
        """The index of the part a delta of ``part_kind`` lands in, opening it if need be."""
        nonlocal index, kind, open_
        if part_kind == "tool" or part_kind != kind:  # loss: adjacent text/reasoning parts join
            if open_:
                out.append(ir.PartEnd(index=index))
            index, kind, open_ = index + 1, part_kind, True
        return index

    for event in events:
        if isinstance(event, ir.StreamStart):
            out.append(event)
        elif isinstance(event, ir.TextDelta):
            if event.text:  # loss: empty deltas, and text parts made only of them
                out.append(ir.TextDelta(index=part("text"), text=event.text))
        elif isinstance(event, ir.ReasoningDelta):
            # loss: signatures, redacted and encrypted reasoning; parts made only of them
            if event.text:
                out.append(ir.ReasoningDelta(index=part("reasoning"), text=event.text))
        elif isinstance(event, ir.ToolCallStart):
            tool_calls = True
            # loss: the tool call's signature
            out.append(ir.ToolCallStart(index=part("tool"), id=event.id, name=event.name))
        elif isinstance(event, ir.ToolArgsDelta):
            if event.json:  # loss: empty fragments
                out.append(ir.ToolArgsDelta(index=index, json=event.json))
        elif isinstance(event, ir.UsageUpdate):
            usage = event.usage  # loss: all but the last update
        elif isinstance(event, ir.Finish):
            if open_:
                out.append(ir.PartEnd(index=index))
            if request.stream_usage:  # loss: usage unless the client asked for it
                out.append(ir.UsageUpdate(usage=_chat_usage(usage or ir.Usage())))
            reason = _chat_stop_reason(event.stop_reason, tool_calls)
            out.append(ir.Finish(stop_reason=reason))  # loss: the stop sequence
        elif isinstance(event, ir.StreamError):
            # loss: usage before the error; the status, which follows from the kind; the
            # open part stays open, as in the IR
            status = status_for_kind(event.kind)
            out.append(ir.StreamError(kind=event.kind, message=event.message, status=status))
        # PartEnd: Chat has none; parts end where the next begins or at the finish.
    return out
