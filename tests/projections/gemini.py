"""What Gemini generateContent can express of the IR (see tests/projections/__init__.py).

Five pure helpers of the format are used as they are, since each has its own tests:
``clean_schema`` (F.7's schema subset), ``arguments_object`` (arguments text as an object),
``signature_out`` (which signatures can be written), ``media_type_of`` (the mimeType of an
inline part) and ``url_media_type`` (the media type a URL's extension says).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mux import ir
from mux.errors import status_for_kind
from mux.formats._parts import arguments_object
from mux.formats.gemini import clean_schema, media_type_of, signature_out, url_media_type
from mux.framing import dumps

__all__ = ["events", "request", "response"]

_GEMINI = "gemini"
_STAND_INS = ("skip_thought_signature_validator", "context_engineering_is_the_way_to_go")


def _gemini_extra(e: ir.Extra | None) -> dict[str, Any]:
    return dict(e.fields) if e is not None and e.format == _GEMINI else {}


def _of_gemini_origin(r: ir.Request) -> bool:
    """Whether render_request may write r's signatures (G.2: only Gemini's own)."""
    origin = r.origin is not None and r.origin.format == _GEMINI
    return origin or (r.extra is not None and r.extra.format == _GEMINI)


# --------------------------------------------------------------------------------------------
# Requests


def request(r: ir.Request) -> ir.Request:
    """What survives ``parse_request(render_request(r))`` in Gemini."""
    extra = _gemini_extra(r.extra)
    signatures = _of_gemini_origin(r)
    # loss: system and developer messages hoist, in order, into one leading system message of
    # their non-empty text parts (developer becomes system; names and other parts go)
    system = [
        ir.Text(text=p.text)
        for m in r.messages
        if m.role in (ir.Role.SYSTEM, ir.Role.DEVELOPER)
        for p in m.content
        if isinstance(p, ir.Text) and p.text
    ]
    messages = [ir.Message(role=ir.Role.SYSTEM, content=system)] if system else []
    contents: list[tuple[str, list[ir.Part]]] = []
    names: dict[str, str] = {}
    for m in r.messages:
        if m.role in (ir.Role.SYSTEM, ir.Role.DEVELOPER):
            continue
        names.update((p.id, p.name) for p in m.content if isinstance(p, ir.ToolCall))
        parts = _parts(m.content, signatures, names)
        if not parts:
            continue  # loss: messages left without parts
        role = "model" if m.role is ir.Role.ASSISTANT else "user"
        if contents and role == "user" == contents[-1][0] and _results(contents[-1][1] + parts):
            contents[-1][1].extend(parts)  # loss: consecutive tool-result turns merge into one
        else:
            contents.append((role, parts))
    for role, parts in contents:
        # loss: message names; TOOL and USER are one role, told apart by the content
        if role == "model":
            messages.append(ir.Message(role=ir.Role.ASSISTANT, content=parts))
        elif _results(parts):
            messages.append(ir.Message(role=ir.Role.TOOL, content=parts))
        else:
            messages.append(ir.Message(role=ir.Role.USER, content=parts))
    return ir.Request(
        model="",  # loss: the model is in the URL
        messages=messages,
        tools=[_tool(t, extra) for t in r.tools],
        tool_choice=_tool_choice(r.tool_choice),
        parallel_tool_calls=None,  # loss: Gemini has no parallel-calls switch
        max_tokens=r.max_tokens,
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=r.top_k,
        stop=r.stop,
        seed=r.seed,
        frequency_penalty=r.frequency_penalty,
        presence_penalty=r.presence_penalty,
        n=r.n,
        response_format=_response_format(r.response_format, extra),
        reasoning=_reasoning(r.reasoning),
        stream=False,  # loss: streaming is chosen by the URL
        stream_usage=False,  # loss: Gemini always reports usage
        user=None,  # loss: no end-user id
        metadata={},  # loss: no metadata
        # loss: another format's extras; the Extra is always there, marking Gemini origin
        extra=ir.Extra(format=_GEMINI, fields=extra),
        origin=None,  # loss: the origin is the routes' to set
    )


def _results(parts: Sequence[ir.Part]) -> bool:
    return bool(parts) and all(isinstance(p, ir.ToolResult) for p in parts)


def _parts(parts: Sequence[ir.Part], signatures: bool, names: dict[str, str]) -> list[ir.Part]:
    """Content parts as written and read back (module notes of mux.formats.gemini)."""
    out: list[ir.Part] = []
    for p in parts:
        signature = getattr(p, "signature", None)
        # loss: signatures not of Gemini origin (Google's stand-ins excepted) or not base64
        signature = signature_out(signature) if signatures or signature in _STAND_INS else None
        if isinstance(p, ir.Text):
            if p.text:  # loss: empty text parts
                out.append(ir.Text(text=p.text))  # loss: cache_control
        elif isinstance(p, ir.Reasoning):
            # loss: redacted and encrypted reasoning (data, redacted). An empty part with a
            # signature rides the text part before it, or is an empty thought part: both read
            # back the same.
            if p.text or signature is not None:
                out.append(ir.Reasoning(text=p.text, signature=signature))
        elif isinstance(p, ir.ToolCall):
            # loss: the arguments' formatting (they travel as an object); cache_control
            arguments = dumps(arguments_object(p.arguments)).decode()
            out.append(ir.ToolCall(id=p.id, name=p.name, arguments=arguments, signature=signature))
        elif isinstance(p, ir.ToolResult):
            out.append(_tool_result(p, names))
        elif (media := _media(p)) is not None:
            out.append(media)  # loss: files known only by a provider's id
    return out


def _media(p: ir.Part) -> ir.Image | ir.Document | ir.Audio | None:
    """An image, document or audio part as inlineData or fileData, read back by its type."""
    assert isinstance(p, ir.Image | ir.Document | ir.Audio)
    if p.data is not None:
        # loss: the kind follows the mimeType (a document of type image/png is an image);
        # an inline part's URL, detail, file id, filename, title and cache_control
        return _inline(media_type_of(p), p.data)
    url = getattr(p, "url", None)
    if url is None:
        return None
    assert isinstance(p, ir.Image | ir.Document)
    media_type = p.media_type or None
    if media_type is None:
        guessed = url_media_type(url)
        if isinstance(p, ir.Image):
            # loss: an image by URL without a type gets the type its URL's extension says,
            # or image/jpeg when that is not an image type (fileData needs a mimeType)
            media_type = guessed if guessed and guessed.startswith("image/") else "image/jpeg"
        else:
            # loss: a document by URL without a type gets the type its URL's extension says
            # (none when it says nothing)
            media_type = guessed
    # loss: a part by URL is an image if its type says so (a document of an image type is
    # an image; an image of another type a document); with no type, a document, unless its
    # URL ends like an image
    name = url.split("?", 1)[0].split("#", 1)[0].rsplit("/", 1)[-1]
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    image = (media_type or "").lower().startswith("image/") or (
        media_type is None
        and extension in {"png", "jpg", "jpeg", "gif", "webp", "heic", "heif", "bmp"}
    )
    if image:
        return ir.Image(media_type=media_type, url=url)
    return ir.Document(media_type=media_type, url=url)


_AUDIO = {"mpeg": "mp3", "x-wav": "wav", "wave": "wav", "vnd.wave": "wav"}


def _inline(media_type: str, data: bytes) -> ir.Image | ir.Document | ir.Audio:
    kind, _, subtype = media_type.partition("/")
    if kind.lower() == "image":
        return ir.Image(media_type=media_type, data=data)
    if kind.lower() == "audio" and subtype:
        return ir.Audio(data=data, format=_AUDIO.get(subtype.lower(), subtype))
    return ir.Document(media_type=media_type, data=data)


def _tool_result(p: ir.ToolResult, names: dict[str, str]) -> ir.ToolResult:
    # loss: the result's text parts join into one, ahead of its images and documents
    text = "".join(c.text for c in p.content if isinstance(c, ir.Text))
    media: list[ir.Text | ir.Image | ir.Document] = []
    for c in p.content:
        if not isinstance(c, ir.Text) and (m := _media(c)) is not None:
            # loss: audio-typed files in a result come back as files of the canonical type
            if isinstance(m, ir.Audio):
                m = ir.Document(media_type=f"audio/{m.format}", data=m.data)
            media.append(m)
    return ir.ToolResult(
        call_id=p.call_id,
        content=[*([ir.Text(text=text)] if text else []), *media],
        is_error=p.is_error,
        # loss: a missing name is the answered call's, found by id (F.4), else "unknown"
        name=p.name or names.get(p.call_id) or "unknown",
        cache_control=None,  # loss: cache_control
    )


def _tool(t: ir.Tool, extra: dict[str, Any]) -> ir.Tool:
    parameters = None
    if t.parameters is not None:
        if t.name in extra.get("@parametersJsonSchema", ()):
            parameters = dict(t.parameters)
        else:
            # loss: the schema is cleaned to Gemini's subset (F.7); a schema declaring no
            # properties is omitted, as for zero-argument functions
            cleaned = clean_schema(t.parameters)
            parameters = cleaned if cleaned.get("properties") or cleaned.get("anyOf") else None
    return ir.Tool(
        name=t.name,
        description=t.description,
        parameters=parameters,
        strict=None,  # loss: no strict mode
        cache_control=None,  # loss: cache_control
    )


def _tool_choice(c: ir.ToolChoice | None) -> ir.ToolChoice | None:
    if c is None:
        return None
    if c.mode is ir.ToolChoiceMode.TOOL and c.name is not None:
        return ir.ToolChoice(mode=ir.ToolChoiceMode.TOOL, name=c.name)
    if c.mode is ir.ToolChoiceMode.TOOL:
        return ir.ToolChoice(mode=ir.ToolChoiceMode.REQUIRED)  # loss: a nameless TOOL choice
    return ir.ToolChoice(mode=c.mode)  # loss: a name on another mode


def _response_format(
    f: ir.ResponseFormat | None, extra: dict[str, Any]
) -> ir.ResponseFormat | None:
    # loss: name, description and strict (Gemini has none of them)
    if f is None:
        return None
    if f.type is ir.ResponseFormatType.TEXT:
        return ir.ResponseFormat(type=ir.ResponseFormatType.TEXT)
    if f.type is ir.ResponseFormatType.JSON_OBJECT or f.schema is None:
        # loss: json_schema without a schema is application/json, i.e. json_object
        return ir.ResponseFormat(type=ir.ResponseFormatType.JSON_OBJECT)
    # loss: a responseSchema is cleaned to Gemini's subset (F.7)
    schema = dict(f.schema) if extra.get("@responseJsonSchema") else clean_schema(f.schema)
    return ir.ResponseFormat(type=ir.ResponseFormatType.JSON_SCHEMA, schema=schema)


_LEVELS = {"minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH",
           "xhigh": "HIGH"}  # fmt: skip


def _reasoning(c: ir.ReasoningConfig | None) -> ir.ReasoningConfig | None:
    """thinkingConfig says one of a budget and a level, and includeThoughts."""
    if c is None:
        return None
    budget: int | None = None
    level: str | None = None
    if c.enabled is False or c.effort == "none":
        budget = 0  # loss: an effort or budget beside "disabled"
    elif c.effort is not None:
        level = _LEVELS.get(c.effort) or c.effort.upper()  # loss: xhigh is HIGH; a budget
    elif c.budget_tokens is not None:
        budget = c.budget_tokens  # loss: a 0 budget is "disabled"
    elif c.enabled:
        budget = -1  # dynamic thinking
    if budget is None and level is None and c.include_thoughts is None:
        return None  # loss: a config saying nothing Gemini can
    return ir.ReasoningConfig(
        # loss: enabled beside a level
        enabled=None if budget is None or budget > 0 else budget < 0,
        effort=level.lower() if level else None,
        budget_tokens=budget if budget is not None and budget > 0 else None,
        summary=None,  # loss: Responses summary mode
        include_thoughts=c.include_thoughts,
    )


# --------------------------------------------------------------------------------------------
# Responses


def _usage(u: ir.Usage) -> ir.Usage:
    return ir.Usage(
        input_tokens=u.input_tokens,
        # loss: reasoning beyond the output (impossible in a consistent Usage) is added to it
        output_tokens=max(0, u.output_tokens - u.reasoning_tokens) + u.reasoning_tokens,
        cache_read_tokens=u.cache_read_tokens,
        cache_write_tokens=0,  # loss: Gemini has no cache-write count (it is in the prompt)
        reasoning_tokens=u.reasoning_tokens,
    )


def _stop_reason(reason: ir.StopReason, tool_calls: bool) -> ir.StopReason:
    """F.2: MAX_TOKENS, SAFETY and OTHER survive; everything else is STOP, a tool turn when
    there are function calls."""
    if reason in (ir.StopReason.MAX_TOKENS, ir.StopReason.CONTENT_FILTER, ir.StopReason.ERROR):
        return reason
    # loss: STOP_SEQUENCE and PAUSE read back as END_TURN; TOOL_USE without calls too
    return ir.StopReason.TOOL_USE if tool_calls else ir.StopReason.END_TURN


def response(r: ir.Response) -> ir.Response:
    """What survives ``parse_response(render_response(r))`` in Gemini."""
    content = _parts(r.content, True, {})
    extra = _gemini_extra(r.extra)
    return ir.Response(
        id=r.id,
        model=r.model,
        content=content,
        stop_reason=_stop_reason(r.stop_reason, any(isinstance(p, ir.ToolCall) for p in content)),
        stop_sequence=None,  # loss: which stop sequence matched
        usage=_usage(r.usage),
        created=r.created,  # as createTime
        # loss: another format's extras; an empty Extra reads back as None
        extra=ir.Extra(format=_GEMINI, fields=extra) if extra else None,
    )


def events(events: Sequence[ir.Event], request: ir.Request) -> list[ir.Event]:
    """What survives rendering ``events`` for a Gemini client and parsing them back.

    Chunks carry no part boundaries: adjacent text parts (or reasoning parts) join, parts
    with nothing written vanish, and a part ends where the next begins or at the finish. A
    tool call goes out whole at its PartEnd. Usage is reported once, with the finish.
    """
    out: list[ir.Event] = []
    index, kind, open_ = -1, "", False  # the last projected part: index, kind, still open?
    written = False  # whether any chunk went out (the first one carries the stream's head)
    call: tuple[ir.ToolCallStart, list[str]] | None = None
    usage: ir.Usage | None = None
    tool_calls = False

    def part(part_kind: str) -> int:
        nonlocal index, kind, open_, written
        written = True
        if not open_ or part_kind != kind:  # loss: adjacent text/reasoning parts join
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
            # loss: redacted and encrypted reasoning; signatures that are not base64
            signature = signature_out(event.signature)
            if event.text or signature is not None:
                out.append(
                    ir.ReasoningDelta(index=part("reasoning"), text=event.text, signature=signature)
                )
        elif isinstance(event, ir.ToolCallStart):
            call = (event, [])
        elif isinstance(event, ir.ToolArgsDelta):
            if call is not None and call[0].index == event.index:
                call[1].append(event.json)
        elif isinstance(event, ir.PartEnd):
            if call is not None and call[0].index == event.index:
                # loss: argument fragments (one whole object, F.4) and their formatting
                start, fragments = call
                call = None
                if open_:
                    out.append(ir.PartEnd(index=index))
                index, kind, open_, written, tool_calls = index + 1, "tool", False, True, True
                arguments = dumps(arguments_object("".join(fragments))).decode()
                out += [
                    ir.ToolCallStart(
                        index=index, id=start.id, name=start.name,
                        signature=signature_out(start.signature),
                    ),  # fmt: skip
                    ir.ToolArgsDelta(index=index, json=arguments),
                    ir.PartEnd(index=index),
                ]
        elif isinstance(event, ir.UsageUpdate):
            usage = event.usage  # loss: all but the last update
        elif isinstance(event, ir.Finish):
            if open_:
                out.append(ir.PartEnd(index=index))
            if usage is not None:
                out.append(ir.UsageUpdate(usage=_usage(usage)))
            # loss: the stop sequence
            out.append(ir.Finish(stop_reason=_stop_reason(event.stop_reason, tool_calls)))
            break
        elif isinstance(event, ir.StreamError):
            # loss: a tool call not yet ended; usage before the error; the open part stays
            # open; a stream that failed before writing anything loses its start
            if not written:
                out = [e for e in out if not isinstance(e, ir.StreamStart)]
            status = event.status if 400 <= event.status <= 599 else status_for_kind(event.kind)
            out.append(ir.StreamError(kind=event.kind, message=event.message, status=status))
            break
    return out
