"""What OpenAI Responses can express of the IR (see tests/projections/__init__.py).

A request parsed from a Responses client carries the format's bookkeeping in its Extra (the
``"mux:responses"`` key: see mux/formats/openai_responses.py). Rendering follows it where it
still fits the request, and two of its effects reach the IR: reasoning the client sent
comes back even without encrypted content, and a tool whose ``strict`` the client left out
keeps it open. :func:`request` models both, and which bookkeeping a second parse keeps;
the item fields it restores (ids, ``phase``) are wire-only, checked in the format's tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from mux import ir
from mux.errors import status_for_kind

__all__ = ["events", "request", "response"]

_NAME = "openai_responses"
_STATE = "mux:responses"
# What mux.formats.openai_responses writes for an input_image given by file id.
_IMAGE_FILE = "image/*"
# The message of the response.failed that an ERROR stop becomes.
_FAILED = "the model failed to complete the response"


def request(r: ir.Request) -> ir.Request:
    """What survives ``parse_request(render_request(r))`` in OpenAI Responses."""
    state = _state(r.extra)
    messages, state_after = _conversation(r.messages, state)
    tools, tool_layout = _tools(r.tools, state.get("tools"))
    if tool_layout is not None:
        state_after["tools"] = tool_layout
    return ir.Request(
        model=r.model,
        messages=messages,
        tools=tools,
        tool_choice=_tool_choice(r.tool_choice),
        parallel_tool_calls=r.parallel_tool_calls,
        max_tokens=r.max_tokens,
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=None,  # loss: no top_k
        stop=(),  # loss: no stop sequences (G.7)
        seed=None,  # loss: no seed
        frequency_penalty=None,  # loss: no penalties
        presence_penalty=None,  # loss: no penalties
        n=None,  # loss: one answer per request
        response_format=_response_format(r.response_format),
        reasoning=_reasoning(r.reasoning, r.extra),
        stream=r.stream,
        stream_usage=r.stream,  # loss: a stream always reports usage, so it is always asked
        user=r.user,
        metadata=r.metadata,
        extra=_extra(r.extra, state_after),
        origin=None,  # loss: the client's body is the routes' to keep, not the format's
    )


def _state(e: ir.Extra | None) -> dict[str, Any]:
    state = e.fields.get(_STATE) if e is not None and e.format == _NAME else None
    return state if isinstance(state, dict) else {}


def _extra(e: ir.Extra | None, state: dict[str, Any] | None = None) -> ir.Extra | None:
    """The Extra read back: this format's own, with the bookkeeping a second parse makes."""
    if e is None or e.format != _NAME:
        return None  # loss: another format's extras
    fields = {k: v for k, v in e.fields.items() if k != _STATE}
    if state:
        fields[_STATE] = state
    return ir.Extra(format=_NAME, fields=fields) if fields else None  # loss: an empty Extra


# --------------------------------------------------------------------------------------------
# Messages: IR parts to items, items grouped back into messages


def _single_text(m: ir.Message, role: ir.Role) -> bool:
    return (
        m.role is role
        and m.name is None
        and len(m.content) == 1
        and isinstance(m.content[0], ir.Text)
    )


def _conversation(
    messages: Sequence[ir.Message], state: dict[str, Any]
) -> tuple[list[ir.Message], dict[str, Any]]:
    """The messages read back, and the bookkeeping the second parse notes: instructions, a
    string input and a left-out input where they still fit; the item layout where it still
    fits the items (then all reasoning comes back: the client sent it)."""
    after: dict[str, Any] = {}
    rest = list(messages)
    head: list[ir.Message] = []
    if state.get("instructions") and rest and _single_text(rest[0], ir.Role.SYSTEM):
        head, rest = _messages(rest[:1], keep_reasoning=False), rest[1:]  # instructions
        after["instructions"] = True
    if state.get("input") == "string" and len(rest) == 1 and _single_text(rest[0], ir.Role.USER):
        after["input"] = "string"
        return [*head, *_messages(rest, keep_reasoning=False)], after
    if state.get("input") == "absent" and not rest:
        after["input"] = "absent"
        return head, after
    layout = state.get("items")
    units = [unit for m in rest for unit in _unit_types(m)]
    fits = isinstance(layout, list) and _fits(units, layout)
    if fits:
        after["items"] = layout
    return [*head, *_messages(rest, keep_reasoning=fits)], after


def _unit_types(m: ir.Message) -> list[tuple[str, bool]]:
    """The items a message renders as, before bookkeeping: (type, an assistant message?)."""
    if m.role is ir.Role.ASSISTANT:
        types = {ir.Text: "message", ir.Reasoning: "reasoning", ir.ToolCall: "function_call"}
        types[ir.ToolResult] = "function_call_output"
        return [(types[type(p)], type(p) is ir.Text) for p in m.content if type(p) in types]
    results = [("function_call_output", False) for p in m.content if isinstance(p, ir.ToolResult)]
    if m.role is ir.Role.TOOL or (results and len(results) == len(m.content)):
        return results
    return [*results, ("message", False)]


def _fits(units: Sequence[tuple[str, bool]], layout: list[Any]) -> bool:
    """Whether the layout's items cover exactly the items (``units``) rendered."""
    position = 0
    for entry in layout:
        if not isinstance(entry, dict):
            return False
        if "item" in entry:  # an item kept whole: nothing in the IR
            continue
        span = entry.get("span", 1)
        group = units[position : position + span]
        if len(group) != span or any(kind != entry.get("type") for kind, _ in group):
            return False
        if span != 1 and not all(assistant for _, assistant in group):
            return False
        position += span
    return position == len(units)


def _messages(messages: Sequence[ir.Message], keep_reasoning: bool) -> list[ir.Message]:
    """Each message as the items it renders as, read back: assistant-side items gather into
    one ASSISTANT message and function_call_output items into one TOOL message while they
    follow each other; user, system and developer items are one message each."""
    out: list[ir.Message] = []
    groupable = False  # whether the last message takes more items of its role
    for message in messages:
        for role, parts, groups in _items(message, keep_reasoning):
            if groups and groupable and out[-1].role is role:
                # loss: consecutive assistant (or tool) messages merge into one
                out[-1] = attrs.evolve(out[-1], content=[*out[-1].content, *parts])
            else:
                out.append(ir.Message(role=role, content=parts))  # loss: the name
            groupable = groups
    return out


def _items(m: ir.Message, keep_reasoning: bool) -> list[tuple[ir.Role, list[ir.Part], bool]]:
    """The items one IR message becomes, read back as (role, parts, groups)."""
    if m.role is ir.Role.ASSISTANT:
        items: list[tuple[ir.Role, list[ir.Part], bool]] = []
        for p in m.content:  # one item per part
            if isinstance(p, ir.Text):
                items.append((ir.Role.ASSISTANT, [ir.Text(text=p.text)], True))  # loss: cache
            elif isinstance(p, ir.Reasoning):
                # loss: reasoning without encrypted content, and redacted (Anthropic) data:
                # OpenAI cannot replay them (unless a Responses client sent them);
                # loss: signatures and the redacted flag
                if keep_reasoning or (p.data is not None and not p.redacted):
                    items.append(
                        (ir.Role.ASSISTANT, [ir.Reasoning(text=p.text, data=p.data)], True)
                    )
            elif isinstance(p, ir.ToolCall):
                # loss: the call's signature and cache_control
                call = ir.ToolCall(id=p.id, name=p.name, arguments=p.arguments)
                items.append((ir.Role.ASSISTANT, [call], True))
            elif isinstance(p, ir.ToolResult):
                items.append((ir.Role.TOOL, [_tool_result(p)], True))
            # loss: images, audio and documents in an assistant turn
        return items
    results = [p for p in m.content if isinstance(p, ir.ToolResult)]
    # loss: tool results leave their message as function_call_output items, in front
    items = [(ir.Role.TOOL, [_tool_result(p)], True) for p in results]
    # loss: a tool message's other parts; a message of only tool results
    if m.role is ir.Role.TOOL or (results and len(results) == len(m.content)):
        return items
    # loss: audio (Responses messages take text, images and files)
    kept = [_input_part(p) for p in m.content if isinstance(p, ir.Text | ir.Image | ir.Document)]
    return [*items, (m.role, kept, False)]


def _input_part(p: ir.Text | ir.Image | ir.Document) -> ir.Part:
    if isinstance(p, ir.Text):
        return ir.Text(text=p.text)  # loss: cache_control
    if isinstance(p, ir.Image):
        detail = p.detail or "auto"  # loss: an unset detail is written as the default, auto
        if p.data is not None:  # loss: a url next to inline data
            return ir.Image(media_type=p.media_type, data=p.data, detail=detail)
        return ir.Image(url=p.url or "", detail=detail)  # loss: cache_control; no url is ""
    if p.media_type == _IMAGE_FILE and p.file_id and p.data is None and p.url is None:
        # An image by file id (an input_image): loss: its filename and title
        return ir.Document(file_id=p.file_id, media_type=_IMAGE_FILE)
    return ir.Document(
        media_type=p.media_type if p.data is not None else None,  # loss: type without data
        data=p.data,
        url=p.url,
        file_id=p.file_id,
        filename=p.filename,
        title=None,  # loss: no title
        cache_control=None,  # loss: cache_control
    )


def _tool_result(p: ir.ToolResult) -> ir.ToolResult:
    if len(p.content) == 1 and isinstance(p.content[0], ir.Text):
        content: list[ir.Part] = [ir.Text(text=p.content[0].text)]
    else:
        # loss: empty content is sent as "" and read back as one empty text part
        content = [_input_part(c) for c in p.content] or [ir.Text(text="")]
    return ir.ToolResult(
        call_id=p.call_id,
        content=content,
        is_error=False,  # loss: no error flag
        name=None,  # loss: results link by call_id only
        cache_control=None,  # loss: cache_control
    )


# --------------------------------------------------------------------------------------------
# Settings


def _tools(
    tools: Sequence[ir.Tool], layout: object
) -> tuple[list[ir.Tool], list[dict[str, Any]] | None]:
    """The tools read back, and the tool layout the second parse notes. A layout that still
    fits (one entry per function tool) puts back what the client left out; one that does
    not leaves hosted tools after the function tools."""
    entries = layout if isinstance(layout, list) else []
    hosted = [e for e in entries if "tool" in e]
    if len(entries) - len(hosted) != len(tools):
        after = [*({} for _ in tools), *hosted]
        return [_tool(t, ()) for t in tools], after if any(after) else None
    functions = [e for e in entries if "tool" not in e]
    read = [_tool(t, e.get("omit", ())) for t, e in zip(tools, functions, strict=True)]
    return read, entries if any(entries) else None


def _tool(t: ir.Tool, omitted: Sequence[str]) -> ir.Tool:
    return ir.Tool(
        name=t.name,
        description=t.description,
        parameters=None if "parameters" in omitted else t.parameters,
        # loss: an open strict is written false (omitted means strict-if-possible here),
        # unless the client itself left it out
        strict=None if "strict" in omitted else bool(t.strict),
        cache_control=None,  # loss: cache_control
    )


def _tool_choice(c: ir.ToolChoice | None) -> ir.ToolChoice | None:
    if c is None:
        return None
    if c.mode is ir.ToolChoiceMode.TOOL and c.name is None:
        return ir.ToolChoice(mode=ir.ToolChoiceMode.REQUIRED)  # loss: a nameless TOOL choice
    # loss: a name on a mode other than TOOL
    return ir.ToolChoice(mode=c.mode, name=c.name if c.mode is ir.ToolChoiceMode.TOOL else None)


def _response_format(f: ir.ResponseFormat | None) -> ir.ResponseFormat | None:
    if f is None:
        return None
    if f.type is not ir.ResponseFormatType.JSON_SCHEMA:
        return ir.ResponseFormat(type=f.type)  # loss: schema details on text/json_object
    return ir.ResponseFormat(
        type=f.type,
        schema=f.schema,
        name=f.name or "response",  # loss: a missing name becomes "response" (required)
        description=f.description,
        strict=f.strict,
    )


# F.6's budget heuristic, as openai_chat applies it (the Responses format shares it).
_EFFORT_CEILINGS = ((0, "none"), (2048, "low"), (8192, "medium"))


def _reasoning(c: ir.ReasoningConfig | None, e: ir.Extra | None) -> ir.ReasoningConfig | None:
    """``reasoning: {effort, summary}``; any config, even an empty one, is an object."""
    if c is None:
        # Keys of ``reasoning`` kept in Extra make the object exist, so it reads back.
        kept = e.fields.get("reasoning") if e is not None and e.format == _NAME else None
        return ir.ReasoningConfig() if isinstance(kept, dict) else None
    effort = c.effort
    if effort is None and c.enabled is False:
        effort = "none"
    elif effort is None and c.budget_tokens is not None:  # loss: budgets become efforts
        effort = next((e for top, e in _EFFORT_CEILINGS if c.budget_tokens <= top), "high")
    return ir.ReasoningConfig(
        enabled=False if effort == "none" else None,  # loss: enabled beside an effort
        effort=effort,
        budget_tokens=None,  # loss: token budgets
        summary=c.summary,
        include_thoughts=None,  # loss: Gemini's includeThoughts
    )


# --------------------------------------------------------------------------------------------
# Responses


def _output(parts: Sequence[ir.Part]) -> list[ir.Part]:
    """An output item per part: messages, reasoning, function calls."""
    out: list[ir.Part] = []
    for p in parts:
        if isinstance(p, ir.Text):
            out.append(ir.Text(text=p.text))  # loss: cache_control
        elif isinstance(p, ir.Reasoning):
            # loss: signatures; redacted reads back as plain encrypted content
            out.append(ir.Reasoning(text=p.text, data=p.data))
        elif isinstance(p, ir.ToolCall):
            out.append(ir.ToolCall(id=p.id, name=p.name, arguments=p.arguments))  # loss: sig.
        # loss: images, audio, documents and tool results in an answer
    return out


def _stop_reason(reason: ir.StopReason, tool_calls: bool) -> ir.StopReason:
    """F.2 through status: incomplete (limit, filter) and failed survive; a completed turn
    is a tool turn when it holds calls."""
    if reason in (ir.StopReason.MAX_TOKENS, ir.StopReason.CONTENT_FILTER, ir.StopReason.ERROR):
        return reason
    # loss: STOP_SEQUENCE and PAUSE read as END_TURN, TOOL_USE without calls too
    return ir.StopReason.TOOL_USE if tool_calls else ir.StopReason.END_TURN


def response(r: ir.Response) -> ir.Response:
    """What survives ``parse_response(render_response(r))`` in OpenAI Responses."""
    content = _output(r.content)
    calls = any(isinstance(p, ir.ToolCall) for p in content)
    return ir.Response(
        id=r.id,
        model=r.model,
        content=content,
        stop_reason=_stop_reason(r.stop_reason, calls),
        stop_sequence=None,  # loss: which stop sequence matched
        usage=r.usage,  # lossless: input_tokens_details carries both cache counts
        created=r.created,  # filled from the clock when None
        extra=_extra(r.extra, _response_state(r, content)),
    )


def _response_state(r: ir.Response, content: Sequence[ir.Part]) -> dict[str, Any]:
    """The output layout (item ids, ``phase``, hosted-tool items) survives where it fits."""
    layout = _state(r.extra).get("items")
    units = [(_OUTPUT_TYPES[type(p)], isinstance(p, ir.Text)) for p in content]
    return {"items": layout} if isinstance(layout, list) and _fits(units, layout) else {}


_OUTPUT_TYPES = {ir.Text: "message", ir.Reasoning: "reasoning", ir.ToolCall: "function_call"}


def events(events: Sequence[ir.Event], request: ir.Request) -> list[ir.Event]:
    """What survives rendering ``events`` for a Responses client and parsing them.

    Every IR part is one output item, so parts keep their boundaries and indices. Usage is
    reported once, in the terminal event. An ERROR stop is a ``response.failed``: it reads
    back as a StreamError.
    """
    out: list[ir.Event] = []
    seen: dict[int, bool] = {}  # open part index -> whether it said anything
    data: dict[int, str] = {}  # reasoning part -> its last encrypted content
    kinds: dict[int, str] = {}
    usage = ir.Usage()
    tool_calls = False
    for event in events:
        if isinstance(event, ir.StreamStart):
            out.append(event)
        elif isinstance(event, ir.TextDelta):
            kinds[event.index] = "text"
            seen.setdefault(event.index, False)
            if event.text:  # loss: empty deltas
                seen[event.index] = True
                out.append(event)
        elif isinstance(event, ir.ReasoningDelta):
            kinds[event.index] = "reasoning"
            seen.setdefault(event.index, False)
            if event.data is not None:  # loss: all but the last data, which comes at the end
                data[event.index] = event.data
            if event.text:  # loss: signatures and the redacted flag
                seen[event.index] = True
                out.append(ir.ReasoningDelta(index=event.index, text=event.text))
        elif isinstance(event, ir.ToolCallStart):
            kinds[event.index] = "tool"
            seen[event.index] = True
            tool_calls = True
            # loss: the call's signature
            out.append(ir.ToolCallStart(index=event.index, id=event.id, name=event.name))
        elif isinstance(event, ir.ToolArgsDelta):
            if event.json:  # loss: empty fragments
                out.append(event)
        elif isinstance(event, ir.PartEnd):
            index = event.index
            if kinds.get(index) == "reasoning" and index in data:
                out.append(ir.ReasoningDelta(index=index, data=data[index]))
            elif not seen.get(index, True):  # a part that said nothing is read as ""
                empty = ir.TextDelta if kinds[index] == "text" else ir.ReasoningDelta
                out.append(empty(index=index, text=""))
            out.append(event)
        elif isinstance(event, ir.UsageUpdate):
            usage = event.usage  # loss: all but the last update
        elif isinstance(event, ir.Finish):
            if event.stop_reason is ir.StopReason.ERROR:
                # loss: usage; a failed response reads as an error
                kind = ir.ErrorKind.INTERNAL
                out.append(ir.StreamError(kind=kind, message=_FAILED, status=status_for_kind(kind)))
            else:
                out.append(ir.UsageUpdate(usage=usage))  # loss: none; zero when none came
                # loss: the stop sequence
                out.append(ir.Finish(stop_reason=_stop_reason(event.stop_reason, tool_calls)))
        elif isinstance(event, ir.StreamError):
            # loss: the status, which follows from the kind; the open part stays open
            status = status_for_kind(event.kind)
            out.append(ir.StreamError(kind=event.kind, message=event.message, status=status))
    return out
