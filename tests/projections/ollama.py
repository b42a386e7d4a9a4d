"""What the Ollama native API (``/api/chat``) can express of the IR (see
tests/projections/__init__.py).

Assumptions the strategies satisfy: tool-call and tool-result ids are non-empty, and extras
hold no key Ollama models (``options``, ``stream``...), as ``parse_request`` makes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mux import ir
from mux.formats._parts import sniff_image_type
from mux.framing import FramingError, dumps, loads
from tests.strategies import FORMATS

__all__ = ["arguments", "events", "request", "response"]

_OLLAMA = "ollama"
assert _OLLAMA in FORMATS

# Extra fields of /api/generate that /api/chat bodies do not carry.
_GENERATE_ONLY = {"suffix", "template", "raw", "context"}


def request(r: ir.Request) -> ir.Request:
    """What survives ``parse_request(render_request(r))`` in Ollama."""
    return ir.Request(
        model=r.model,
        messages=_messages(r.messages),
        tools=[_tool(tool) for tool in r.tools],
        tool_choice=None,  # loss: Ollama has no tool choice
        parallel_tool_calls=None,  # loss: nor a parallel-calls switch
        max_tokens=r.max_tokens,
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=r.top_k,
        stop=r.stop,
        seed=r.seed,
        frequency_penalty=r.frequency_penalty,
        presence_penalty=r.presence_penalty,
        n=None,  # loss: one answer only
        response_format=_response_format(r.response_format),
        reasoning=_reasoning(r.reasoning),
        stream=r.stream,
        stream_usage=False,  # loss: Ollama always reports usage, there is no switch
        user=None,  # loss: no end-user id
        metadata={},  # loss: no metadata
        extra=_extra(r.extra),
        origin=None,  # the routes set the origin, never a format
    )


def arguments(text: str) -> str:
    """Tool-call arguments after a trip as an object: compact JSON; ``""`` is ``{}``; text
    that is not a JSON object (or that holds numbers JSON cannot write) is wrapped as
    ``{"_raw": text}`` (F.4)."""
    value: Any
    if not text.strip():
        value = {}
    else:
        try:
            value = loads(text)
            dumps(value)  # numbers like 1e999 decode to infinity, which JSON cannot write
        except (FramingError, ValueError):
            value = None
        if not isinstance(value, dict):
            value = {"_raw": text}
    return dumps(value).decode()


def _image(p: ir.Image) -> ir.Image:
    # loss: the media type, sniffed from the bytes; detail; cache_control
    assert p.data is not None
    return ir.Image(media_type=sniff_image_type(p.data), data=p.data)


# Requests join separate text (and reasoning) parts with a blank line; answers as they are.
_REQUEST_SEPARATOR = "\n\n"


def _joined(parts: Sequence[ir.Part], kind: type[ir.Text | ir.Reasoning], separator: str) -> str:
    # loss: separate parts join into one string, the non-empty ones with the separator
    return separator.join(p.text for p in parts if isinstance(p, kind) and p.text)


def _text_and_images(parts: Sequence[ir.Part]) -> list[ir.Part]:
    """A request message's ``content`` and ``images``: text parts joined into one (none when
    empty), then the inline images."""
    # loss: documents, audio, images by URL; the order of text and images
    text = _joined(parts, ir.Text, _REQUEST_SEPARATOR)
    images = [_image(p) for p in parts if isinstance(p, ir.Image) and p.data is not None]
    return [*([ir.Text(text=text)] if text else []), *images]


def _assistant(parts: Sequence[ir.Part], separator: str = "") -> list[ir.Part]:
    """An assistant turn: reasoning, then text, then tool calls; parts of one kind joined
    with ``separator`` (a request's) or as they are (an answer's)."""
    # loss: images, audio, documents and tool results in an assistant turn
    # loss: reasoning signatures and encrypted or redacted reasoning; reasoning parts join
    reasoning = _joined(parts, ir.Reasoning, separator)
    text = _joined(parts, ir.Text, separator)
    calls = [
        # loss: signatures and cache_control; arguments become compact JSON objects
        ir.ToolCall(id=p.id, name=p.name, arguments=arguments(p.arguments))
        for p in parts
        if isinstance(p, ir.ToolCall)
    ]
    return [
        *([ir.Reasoning(text=reasoning)] if reasoning else []),
        *([ir.Text(text=text)] if text else []),
        *calls,
    ]


def _messages(messages: Sequence[ir.Message]) -> list[ir.Message]:
    names: dict[str, str] = {}  # the calls made so far: id -> name
    out: list[ir.Message] = []
    for m in messages:
        results = [p for p in m.content if isinstance(p, ir.ToolResult)]
        # loss: tool results leave their message as tool messages, in front of the rest
        for p in results:
            result = ir.ToolResult(
                call_id=p.call_id,
                content=_text_and_images(p.content),
                is_error=False,  # loss: no error flag
                # a missing name is rebuilt from the call it answers, when that came before
                name=p.name if p.name is not None else names.get(p.call_id),
                cache_control=None,  # loss: cache_control
            )
            out.append(ir.Message(role=ir.Role.TOOL, content=[result]))
        # loss: a tool message's other parts; a message of only tool results (and its name)
        if m.role is ir.Role.TOOL or (results and len(results) == len(m.content)):
            continue
        # loss: every message's name
        if m.role is ir.Role.ASSISTANT:
            content = _assistant(m.content, _REQUEST_SEPARATOR)
            out.append(ir.Message(role=ir.Role.ASSISTANT, content=content))
            names |= {p.id: p.name for p in m.content if isinstance(p, ir.ToolCall)}
        elif m.role is ir.Role.USER:
            out.append(ir.Message(role=ir.Role.USER, content=_text_and_images(m.content)))
        else:
            # loss: developer is system; a system message holds only its text, joined
            text = _joined(m.content, ir.Text, _REQUEST_SEPARATOR)
            content = [ir.Text(text=text)] if text else []
            out.append(ir.Message(role=ir.Role.SYSTEM, content=content))
    return out


def _tool(t: ir.Tool) -> ir.Tool:
    return ir.Tool(
        name=t.name,
        description=t.description,
        parameters=t.parameters,
        strict=None,  # loss: Ollama tools have no strict mode
        cache_control=None,  # loss: cache_control
    )


def _response_format(f: ir.ResponseFormat | None) -> ir.ResponseFormat | None:
    if f is None or f.type is ir.ResponseFormatType.TEXT:
        return None  # loss: "text" is the default, not said
    if f.type is ir.ResponseFormatType.JSON_SCHEMA and f.schema is not None:
        # loss: the schema's name, description and strict flag
        return ir.ResponseFormat(type=ir.ResponseFormatType.JSON_SCHEMA, schema=f.schema)
    # loss: a json_schema format without a schema is plain JSON
    return ir.ResponseFormat(type=ir.ResponseFormatType.JSON_OBJECT)


# The IR's efforts as Ollama ``think`` levels, and back.
_LEVELS: dict[str, bool | str] = {
    "none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
    "xhigh": "max",
}  # fmt: skip


def _reasoning(c: ir.ReasoningConfig | None) -> ir.ReasoningConfig | None:
    """``think`` is a boolean or a level; an effort wins, then enabled, then a budget (as a
    boolean), then include_thoughts."""
    if c is None:
        return None
    think: bool | str | None
    if c.effort is not None:
        think = _LEVELS.get(c.effort, True)  # loss: minimal is low; unknown efforts are true
    elif c.enabled is not None:
        think = c.enabled
    elif c.budget_tokens is not None:
        think = c.budget_tokens > 0  # loss: the budget itself
    else:
        think = True if c.include_thoughts else None
    # loss: summary; enabled, budget and include_thoughts beside what was said
    if think is None:
        return None
    if isinstance(think, bool):
        return ir.ReasoningConfig(enabled=think)
    return ir.ReasoningConfig(effort="xhigh" if think == "max" else think)


def _extra(e: ir.Extra | None) -> ir.Extra | None:
    # loss: another format's extras; generate-only fields; an empty Extra reads back as None
    if e is None or e.format != _OLLAMA:
        return None
    fields = {k: v for k, v in e.fields.items() if k not in _GENERATE_ONLY}
    return ir.Extra(format=_OLLAMA, fields=fields) if fields else None


def _usage(u: ir.Usage) -> ir.Usage:
    # loss: cache reads and writes, reasoning tokens
    return ir.Usage(input_tokens=u.input_tokens, output_tokens=u.output_tokens)


def _stop_reason(reason: ir.StopReason, tool_calls: bool) -> ir.StopReason:
    """F.2 through done_reason: length survives, tool calls make a tool turn."""
    if reason is ir.StopReason.MAX_TOKENS:
        return reason
    # loss: STOP_SEQUENCE, CONTENT_FILTER, PAUSE, ERROR, and TOOL_USE without calls
    return ir.StopReason.TOOL_USE if tool_calls else ir.StopReason.END_TURN


def response(r: ir.Response) -> ir.Response:
    """What survives ``parse_response(render_response(r))`` in Ollama."""
    content = _assistant(r.content)
    return ir.Response(
        id="",  # loss: Ollama answers have no id
        model=r.model,
        content=content,
        stop_reason=_stop_reason(r.stop_reason, any(isinstance(p, ir.ToolCall) for p in content)),
        stop_sequence=None,  # loss: which stop sequence matched
        usage=_usage(r.usage),
        created=r.created,  # filled from the clock when None
        extra=_extra(r.extra),
    )


def events(events: Sequence[ir.Event], request: ir.Request) -> list[ir.Event]:
    """What survives rendering ``events`` for an Ollama chat client and parsing the lines.

    Lines carry no part boundaries: adjacent text parts (or reasoning parts) join into one,
    parts left without content vanish, and a part ends where the next begins or at the done
    line. The stream starts with its first line, so a stream that fails before saying
    anything is only its error. Tool calls go out whole when their part ends.
    """
    out: list[ir.Event] = []
    start: ir.StreamStart | None = None
    started = False
    index, kind, open_ = -1, "", False  # the last projected part: index, kind, still open?
    held: dict[int, tuple[ir.ToolCallStart, list[str]]] = {}
    usage = ir.Usage()
    tool_calls = False

    def line() -> None:
        """A line goes out: the first one starts the parsed stream."""
        nonlocal started
        if not started and start is not None:
            started = True
            out.append(start)

    def part(part_kind: str) -> int:
        nonlocal index, kind, open_
        if part_kind == "tool" or part_kind != kind:  # loss: adjacent text/reasoning join
            if open_:
                out.append(ir.PartEnd(index=index))
            index, kind, open_ = index + 1, part_kind, True
        return index

    def send_call(call_start: ir.ToolCallStart, fragments: list[str]) -> None:
        nonlocal tool_calls
        line()
        tool_calls = True
        at = part("tool")
        # loss: the call's signature
        out.append(ir.ToolCallStart(index=at, id=call_start.id, name=call_start.name))
        out.append(ir.ToolArgsDelta(index=at, json=arguments("".join(fragments))))

    for event in events:
        if isinstance(event, ir.StreamStart):
            start = ir.StreamStart(id="", model=event.model, created=event.created)  # loss: id
        elif isinstance(event, ir.TextDelta):
            if event.text:  # loss: empty deltas, and text parts made only of them
                line()
                out.append(ir.TextDelta(index=part("text"), text=event.text))
        elif isinstance(event, ir.ReasoningDelta):
            # loss: signatures, redacted and encrypted reasoning; parts made only of them
            if event.text:
                line()
                out.append(ir.ReasoningDelta(index=part("reasoning"), text=event.text))
        elif isinstance(event, ir.ToolCallStart):
            held[event.index] = (event, [])
        elif isinstance(event, ir.ToolArgsDelta):
            held[event.index][1].append(event.json)  # loss: the fragmentation
        elif isinstance(event, ir.PartEnd):
            if event.index in held:
                send_call(*held.pop(event.index))
        elif isinstance(event, ir.UsageUpdate):
            usage = event.usage  # loss: all but the last update
        elif isinstance(event, ir.Finish):
            for call in held.values():
                send_call(*call)
            line()
            if open_:
                out.append(ir.PartEnd(index=index))
            out.append(ir.UsageUpdate(usage=_usage(usage)))  # always, zero when none came
            # loss: the stop sequence
            out.append(ir.Finish(stop_reason=_stop_reason(event.stop_reason, tool_calls)))
        elif isinstance(event, ir.StreamError):
            # loss: the kind and status (the line says only the message); usage before the
            # error; a tool call not yet ended. The open part stays open, as in the IR.
            error = ir.StreamError(kind=ir.ErrorKind.UPSTREAM, message=event.message, status=502)
            out.append(error)
    return out
