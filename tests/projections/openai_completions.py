"""What OpenAI legacy Completions can express of the IR (see tests/projections/__init__.py).

The format is text in, text out: a request is one prompt, an answer one text. Reasoning,
tool calls, images and roles cannot be expressed.
"""

from __future__ import annotations

from collections.abc import Sequence

from mux import ir
from mux.errors import status_for_kind

__all__ = ["events", "request", "response"]

_NAME = "openai_completions"
_DEFAULT_MAX_TOKENS = 16  # the API's default for max_tokens


def _prompt(messages: Sequence[ir.Message]) -> str:
    """Every message's text (tool results' too), a blank line between messages."""
    texts = []
    for m in messages:
        parts = [
            p.text
            for part in m.content
            for p in (part.content if isinstance(part, ir.ToolResult) else (part,))
            if isinstance(p, ir.Text)
        ]
        if parts:
            texts.append("".join(parts))
    return "\n\n".join(texts)


def request(r: ir.Request) -> ir.Request:
    """What survives ``parse_request(render_request(r))`` in OpenAI Completions."""
    # loss: roles, names, message boundaries, and every part that is not text: the
    # messages become one prompt, read back as one user message
    prompt = ir.Message(role=ir.Role.USER, content=[ir.Text(text=_prompt(r.messages))])
    return ir.Request(
        model=r.model,
        messages=[prompt],
        tools=(),  # loss: no tools
        tool_choice=None,  # loss: no tools
        parallel_tool_calls=None,  # loss: no tools
        # loss: no limit means the API's default, 16
        max_tokens=_DEFAULT_MAX_TOKENS if r.max_tokens is None else r.max_tokens,
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=None,  # loss: no top_k
        stop=r.stop,
        seed=r.seed,
        frequency_penalty=r.frequency_penalty,
        presence_penalty=r.presence_penalty,
        n=r.n,
        response_format=None,  # loss: no structured output
        reasoning=None,  # loss: no reasoning controls
        stream=r.stream,
        stream_usage=r.stream and r.stream_usage,  # loss: stream_options only with stream
        user=r.user,
        metadata={},  # loss: no metadata
        extra=_extra(r.extra),
        origin=None,  # loss: the client's body is the routes' to keep, not the format's
    )


def _extra(e: ir.Extra | None) -> ir.Extra | None:
    # loss: another format's extras; an empty Extra reads back as None
    return e if e is not None and e.format == _NAME and e.fields else None


def _stop_reason(reason: ir.StopReason) -> ir.StopReason:
    """finish_reason: length and content_filter survive, everything else is ``stop``."""
    if reason in (ir.StopReason.MAX_TOKENS, ir.StopReason.CONTENT_FILTER):
        return reason
    return ir.StopReason.END_TURN  # loss: STOP_SEQUENCE, TOOL_USE, PAUSE and ERROR


def response(r: ir.Response) -> ir.Response:
    """What survives ``parse_response(render_response(r))`` in OpenAI Completions."""
    # loss: everything but text; text parts join into one; empty text is no part
    text = "".join(p.text for p in r.content if isinstance(p, ir.Text))
    return ir.Response(
        id=r.id,
        model=r.model,
        content=[ir.Text(text=text)] if text else [],
        stop_reason=_stop_reason(r.stop_reason),
        stop_sequence=None,  # loss: which stop sequence matched
        usage=r.usage,  # lossless: Chat's usage object, details included
        created=r.created,  # filled from the clock when None
        extra=_extra(r.extra),
    )


def events(events: Sequence[ir.Event], request: ir.Request) -> list[ir.Event]:
    """What survives rendering ``events`` for a Completions client of ``request`` and
    parsing them: the text, as one part."""
    out: list[ir.Event] = []
    open_ = False
    usage: ir.Usage | None = None
    for event in events:
        if isinstance(event, ir.StreamStart):
            out.append(event)
        elif isinstance(event, ir.TextDelta):
            if event.text:  # loss: empty deltas; all text parts join into part 0
                open_ = True
                out.append(ir.TextDelta(index=0, text=event.text))
        elif isinstance(event, ir.UsageUpdate):
            usage = event.usage  # loss: all but the last update
        elif isinstance(event, ir.Finish):
            if open_:
                out.append(ir.PartEnd(index=0))
            if request.stream_usage:  # loss: usage unless the client asked for it
                out.append(ir.UsageUpdate(usage=usage or ir.Usage()))
            out.append(ir.Finish(stop_reason=_stop_reason(event.stop_reason)))
        elif isinstance(event, ir.StreamError):
            # loss: usage before the error; the status, which follows from the kind
            status = status_for_kind(event.kind)
            out.append(ir.StreamError(kind=event.kind, message=event.message, status=status))
        # loss: reasoning and tool calls; PartEnd (the text part ends at the finish)
    return out
