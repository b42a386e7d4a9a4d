"""Hypothesis strategies for IR values, shared by every format's tests.

The strategies cover every class, field and enum member of :mod:`mux.ir` (checked by
:func:`features`), keep sizes small so that properties run fast, and produce values a format
could plausibly meet: content parts sit in roles that can hold them, usage counts add up
(cached tokens within input, reasoning within output), and :func:`event_streams` follows the
stream grammar of :mod:`mux.ir` (checked by :func:`check_stream`).
"""

from __future__ import annotations

import base64
import enum
import itertools
import string
from collections.abc import Iterator, Sequence
from typing import Any, cast

import attrs
from hypothesis import strategies as st

from mux import ir
from mux.framing import dumps, loads

__all__ = [
    "feed",
    "splits",
    "wire",
    "FORMATS",
    "all_features",
    "audios",
    "check_stream",
    "documents",
    "event_streams",
    "extras",
    "features",
    "finishes",
    "images",
    "json_objects",
    "json_values",
    "messages",
    "model_infos",
    "parts",
    "reasoning_configs",
    "reasonings",
    "requests",
    "response_formats",
    "responses",
    "schemas",
    "stream_errors",
    "texts",
    "tool_arguments",
    "tool_calls",
    "tool_choices",
    "tool_results",
    "tools",
    "usages",
]

#: Format names that may tag an :class:`ir.Extra`; only the matching format renders it.
FORMATS = ("openai_chat", "openai_responses", "anthropic", "gemini", "ollama")

# --------------------------------------------------------------------------------------------
# Building blocks

short_texts = st.text(max_size=10)
nonempty_texts = st.text(min_size=1, max_size=10)
names = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=10)
call_ids = names.map(lambda s: f"call_{s}")
#: Opaque tokens (signatures, encrypted reasoning): base64, as every provider sends them.
tokens = st.binary(min_size=1, max_size=12).map(lambda b: base64.b64encode(b).decode())
blobs = st.binary(max_size=16)
urls = names.map(lambda s: f"https://example.com/{s}")
cache_controls = st.none() | st.just({"type": "ephemeral"})
counts = st.integers(min_value=0, max_value=5000)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``strategy`` or None."""
    return st.none() | strategy


def json_values() -> st.SearchStrategy[Any]:
    """Small JSON values: scalars, arrays, objects (finite floats only, as JSON has)."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**53), max_value=2**53)
        | st.floats(allow_nan=False, allow_infinity=False)
        | short_texts
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(short_texts, children, max_size=3)
        ),
        max_leaves=6,
    )


def json_objects() -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(short_texts, json_values(), max_size=3)


def tool_arguments() -> st.SearchStrategy[str]:
    """The JSON text of a tool call's arguments object, compact or not."""
    return json_objects().map(lambda obj: dumps(obj).decode()) | st.sampled_from(
        ["{}", '{ "city" : "Paris" }', '{"a":[1,2.5,null],"b":{"c":true}}']
    )


def schemas() -> st.SearchStrategy[dict[str, Any]]:
    """Small JSON Schema objects of the kind tools and structured output use."""
    property_ = st.fixed_dictionaries(
        {"type": st.sampled_from(["string", "number", "integer", "boolean"])},
        optional={"description": short_texts},
    )
    return st.fixed_dictionaries(
        {"type": st.just("object"), "properties": st.dictionaries(names, property_, max_size=2)},
        optional={"required": st.lists(names, max_size=2), "additionalProperties": st.booleans()},
    )


# --------------------------------------------------------------------------------------------
# Content parts


def texts() -> st.SearchStrategy[ir.Text]:
    return st.builds(ir.Text, text=short_texts, cache_control=cache_controls)


def images() -> st.SearchStrategy[ir.Image]:
    """Inline images (media type sometimes unknown, as from Ollama) or images by URL."""
    detail = optional(st.sampled_from(["auto", "low", "high"]))
    inline = st.builds(
        ir.Image,
        media_type=optional(st.sampled_from(["image/png", "image/jpeg", "image/webp"])),
        data=blobs,
        detail=detail,
        cache_control=cache_controls,
    )
    linked = st.builds(ir.Image, url=urls, detail=detail, cache_control=cache_controls)
    return inline | linked


def documents() -> st.SearchStrategy[ir.Document]:
    return st.builds(
        ir.Document,
        media_type=optional(st.sampled_from(["application/pdf", "text/plain"])),
        data=optional(blobs),
        url=optional(urls),
        file_id=optional(names.map(lambda s: f"file-{s}")),
        filename=optional(names.map(lambda s: f"{s}.pdf")),
        title=optional(short_texts),
        cache_control=cache_controls,
    )


def audios() -> st.SearchStrategy[ir.Audio]:
    return st.builds(ir.Audio, data=blobs, format=st.sampled_from(["wav", "mp3"]))


def tool_calls() -> st.SearchStrategy[ir.ToolCall]:
    return st.builds(
        ir.ToolCall,
        id=call_ids,
        name=names,
        arguments=tool_arguments(),
        signature=optional(tokens),
        cache_control=cache_controls,
    )


def tool_results() -> st.SearchStrategy[ir.ToolResult]:
    return st.builds(
        ir.ToolResult,
        call_id=call_ids,
        content=st.lists(texts() | images() | documents(), max_size=2),
        is_error=st.booleans(),
        name=optional(names),
        cache_control=cache_controls,
    )


def reasonings() -> st.SearchStrategy[ir.Reasoning]:
    """Signed thinking, redacted thinking, and summaries with encrypted content."""
    return st.one_of(
        st.builds(ir.Reasoning, text=short_texts, signature=optional(tokens)),
        st.builds(ir.Reasoning, data=tokens, redacted=st.just(True)),
        st.builds(ir.Reasoning, text=short_texts, data=tokens),
    )


def parts(role: ir.Role) -> st.SearchStrategy[ir.Part]:
    """The content parts a message of ``role`` can plausibly hold."""
    if role in (ir.Role.SYSTEM, ir.Role.DEVELOPER):
        return texts()
    if role is ir.Role.USER:  # tool results too: Anthropic and Gemini put them in user turns
        return st.one_of(texts(), images(), documents(), audios(), tool_results())
    if role is ir.Role.ASSISTANT:
        return st.one_of(texts(), reasonings(), tool_calls())
    return tool_results()


@st.composite
def messages(draw: st.DrawFn, roles: Sequence[ir.Role] = tuple(ir.Role)) -> ir.Message:
    role = draw(st.sampled_from(roles))
    tool = role is ir.Role.TOOL
    return ir.Message(
        role=role,
        content=draw(st.lists(parts(role), min_size=1 if tool else 0, max_size=3)),
        name=None if tool else draw(optional(names)),
    )


# --------------------------------------------------------------------------------------------
# Requests


def tools() -> st.SearchStrategy[ir.Tool]:
    return st.builds(
        ir.Tool,
        name=names,
        description=optional(short_texts),
        parameters=optional(schemas()),
        strict=optional(st.booleans()),
        cache_control=cache_controls,
    )


def tool_choices() -> st.SearchStrategy[ir.ToolChoice]:
    modes = [ir.ToolChoiceMode.AUTO, ir.ToolChoiceMode.NONE, ir.ToolChoiceMode.REQUIRED]
    return st.builds(ir.ToolChoice, mode=st.sampled_from(modes)) | st.builds(
        ir.ToolChoice, mode=st.just(ir.ToolChoiceMode.TOOL), name=names
    )


def response_formats() -> st.SearchStrategy[ir.ResponseFormat]:
    plain = [ir.ResponseFormatType.TEXT, ir.ResponseFormatType.JSON_OBJECT]
    return st.builds(ir.ResponseFormat, type=st.sampled_from(plain)) | st.builds(
        ir.ResponseFormat,
        type=st.just(ir.ResponseFormatType.JSON_SCHEMA),
        schema=optional(schemas()),
        name=optional(names),
        description=optional(short_texts),
        strict=optional(st.booleans()),
    )


def reasoning_configs() -> st.SearchStrategy[ir.ReasoningConfig]:
    return st.builds(
        ir.ReasoningConfig,
        enabled=optional(st.booleans()),
        effort=optional(st.sampled_from(["none", "minimal", "low", "medium", "high", "xhigh"])),
        budget_tokens=optional(st.integers(min_value=0, max_value=40000)),
        summary=optional(st.sampled_from(["auto", "concise", "detailed"])),
        include_thoughts=optional(st.booleans()),
    )


def extras() -> st.SearchStrategy[ir.Extra]:
    """Extras of any format; their keys never collide with a field a format models."""
    keys = names.map(lambda s: f"x_{s}")
    return st.builds(
        ir.Extra,
        format=st.sampled_from(FORMATS),
        fields=st.dictionaries(keys, json_values(), max_size=2),
    )


def _floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=low, max_value=high)


def requests() -> st.SearchStrategy[ir.Request]:
    return st.builds(
        ir.Request,
        model=names,
        messages=st.lists(messages(), min_size=1, max_size=4),
        tools=st.lists(tools(), max_size=2),
        tool_choice=optional(tool_choices()),
        parallel_tool_calls=optional(st.booleans()),
        max_tokens=optional(st.integers(min_value=1, max_value=100_000)),
        temperature=optional(_floats(0, 2)),
        top_p=optional(_floats(0, 1)),
        top_k=optional(st.integers(min_value=1, max_value=100)),
        stop=st.lists(nonempty_texts, max_size=3),
        seed=optional(st.integers(min_value=-(2**31), max_value=2**31)),
        frequency_penalty=optional(_floats(-2, 2)),
        presence_penalty=optional(_floats(-2, 2)),
        n=optional(st.integers(min_value=1, max_value=4)),
        response_format=optional(response_formats()),
        reasoning=optional(reasoning_configs()),
        stream=st.booleans(),
        stream_usage=st.booleans(),
        user=optional(names),
        metadata=st.dictionaries(names, short_texts, max_size=2),
        extra=optional(extras()),
    )


# --------------------------------------------------------------------------------------------
# Responses


@st.composite
def usages(draw: st.DrawFn) -> ir.Usage:
    """Usage whose parts add up: cached and cache-write input within input, reasoning within
    output."""
    cache_read, cache_write, reasoning = draw(counts), draw(counts), draw(counts)
    return ir.Usage(
        input_tokens=draw(counts) + cache_read + cache_write,
        output_tokens=draw(counts) + reasoning,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
    )


@st.composite
def _stops(draw: st.DrawFn) -> tuple[ir.StopReason, str | None]:
    reason = draw(st.sampled_from(ir.StopReason))
    sequence = draw(nonempty_texts) if reason is ir.StopReason.STOP_SEQUENCE else None
    return reason, sequence


created_times = optional(st.integers(min_value=0, max_value=2**32))


@st.composite
def responses(draw: st.DrawFn) -> ir.Response:
    stop_reason, stop_sequence = draw(_stops())
    content = st.one_of(texts(), reasonings(), tool_calls(), images(), audios(), documents())
    return ir.Response(
        id=draw(names),
        model=draw(names),
        content=draw(st.lists(content, max_size=4)),
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        usage=draw(usages()),
        created=draw(created_times),
        extra=draw(optional(extras())),
    )


def model_infos() -> st.SearchStrategy[ir.ModelInfo]:
    return st.builds(
        ir.ModelInfo, id=names, owned_by=names, created=st.integers(min_value=0, max_value=2**32)
    )


# --------------------------------------------------------------------------------------------
# Stream events


def stream_errors() -> st.SearchStrategy[ir.StreamError]:
    return st.builds(
        ir.StreamError,
        kind=st.sampled_from(ir.ErrorKind),
        message=nonempty_texts,
        status=st.sampled_from([400, 401, 429, 500, 502, 503, 529]),
    )


@st.composite
def finishes(draw: st.DrawFn) -> ir.Finish:
    stop_reason, stop_sequence = draw(_stops())
    return ir.Finish(stop_reason=stop_reason, stop_sequence=stop_sequence)


@st.composite
def _fragments(draw: st.DrawFn, text: str) -> list[str]:
    """``text`` cut at random places (pieces may be empty)."""
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(text)), max_size=3)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def _reasoning_deltas(index: int) -> st.SearchStrategy[ir.ReasoningDelta]:
    return st.one_of(
        st.builds(ir.ReasoningDelta, index=st.just(index), text=nonempty_texts),
        st.builds(ir.ReasoningDelta, index=st.just(index), signature=tokens),
        st.builds(ir.ReasoningDelta, index=st.just(index), data=tokens, redacted=st.booleans()),
    )


@st.composite
def _part_events(draw: st.DrawFn, index: int) -> list[ir.Event]:
    kind = draw(st.sampled_from(["text", "reasoning", "tool"]))
    events: list[ir.Event]
    if kind == "text":
        events = [
            ir.TextDelta(index=index, text=t)
            for t in draw(st.lists(short_texts, min_size=1, max_size=3))
        ]
    elif kind == "reasoning":
        events = draw(st.lists(_reasoning_deltas(index), min_size=1, max_size=3))
    else:
        call = draw(tool_calls())
        start = ir.ToolCallStart(index=index, id=call.id, name=call.name, signature=call.signature)
        pieces = draw(_fragments(call.arguments))
        events = [start, *(ir.ToolArgsDelta(index=index, json=piece) for piece in pieces)]
    return [*events, ir.PartEnd(index=index)]


def _cumulative(increments: Sequence[ir.Usage]) -> list[ir.Usage]:
    """Running totals of ``increments``: usage updates are cumulative."""
    totals: list[ir.Usage] = []
    for usage in increments:
        if totals:
            fields = attrs.asdict(totals[-1])
            usage = ir.Usage(**{k: v + getattr(usage, k) for k, v in fields.items()})
        totals.append(usage)
    return totals


@st.composite
def event_streams(draw: st.DrawFn, errors: bool = True) -> list[ir.Event]:
    """A stream following the IR grammar: start, parts, usage updates, finish; when
    ``errors``, sometimes cut anywhere after the start and ended by a StreamError."""
    events: list[ir.Event] = [
        ir.StreamStart(id=draw(names), model=draw(names), created=draw(created_times))
    ]
    for index in range(draw(st.integers(min_value=0, max_value=4))):
        events += draw(_part_events(index))
    events += [ir.UsageUpdate(usage=u) for u in _cumulative(draw(st.lists(usages(), max_size=2)))]
    events.append(draw(finishes()))
    if errors and draw(st.booleans()):
        cut = draw(st.integers(min_value=1, max_value=len(events) - 1))
        events = [*events[:cut], draw(stream_errors())]
    return events


_OPENS = {ir.TextDelta: "text", ir.ReasoningDelta: "reasoning", ir.ToolCallStart: "tool"}
_CONTINUES = {ir.TextDelta: "text", ir.ReasoningDelta: "reasoning", ir.ToolArgsDelta: "tool"}


def check_stream(events: Sequence[ir.Event]) -> None:
    """Assert that ``events`` follow the stream grammar of :mod:`mux.ir`.

    One StreamStart; parts in order with dense indices, each opened by its first delta and
    closed by a PartEnd, never interleaved; usage updates; one Finish. A StreamError may end
    the stream anywhere instead, even at once (a stream that failed before it began).
    """
    assert events, "an empty stream"
    if isinstance(events[0], ir.StreamError):
        assert len(events) == 1, f"events after the StreamError: {events}"
        return
    assert isinstance(events[0], ir.StreamStart), f"the first event is {events[0]}"
    open_part: tuple[str, int] | None = None
    next_index, phase = 0, "parts"
    for position, event in enumerate(events[1:], start=1):
        assert phase != "finished", f"an event after Finish: {event}"
        if isinstance(event, ir.StreamError):
            assert position == len(events) - 1, f"events after the StreamError: {events}"
            return
        if type(event) in _OPENS or type(event) in _CONTINUES:
            assert phase == "parts", f"content after usage: {event}"
            index = event.index  # type: ignore[union-attr]
            if open_part is None:
                assert type(event) in _OPENS, f"{event} cannot open a part"
                assert index == next_index, f"{event}: expected index {next_index}"
                open_part, next_index = (_OPENS[type(event)], index), next_index + 1
            else:
                assert (_CONTINUES.get(type(event)), index) == open_part, f"{event} in {open_part}"
        elif isinstance(event, ir.PartEnd):
            assert open_part is not None, f"{event} with no open part"
            assert event.index == open_part[1], f"{event} in part {open_part}"
            open_part = None
        elif isinstance(event, ir.UsageUpdate | ir.Finish):
            assert open_part is None, f"{event} while part {open_part} is open"
            phase = "finished" if isinstance(event, ir.Finish) else "usage"
        else:
            raise AssertionError(f"{event} in the middle of a stream")
    assert phase == "finished", "the stream ends without Finish or StreamError"


# --------------------------------------------------------------------------------------------
# Coverage


def features(value: object) -> set[str]:
    """The IR features ``value`` exercises, as labels.

    ``Class`` for each IR object, ``Class.field`` for each field holding something other than
    its default (required fields always count), ``Enum.MEMBER`` for each enum member, found
    anywhere inside ``value`` (lists and dicts included).
    """
    found: set[str] = set()
    for item in _walk(value):
        if isinstance(item, enum.Enum):
            found.add(f"{type(item).__name__}.{item.name}")
        elif attrs.has(type(item)):
            name = type(item).__name__
            found.add(name)
            for field in attrs.fields(cast("type[attrs.AttrsInstance]", type(item))):
                default = field.default
                if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                    default = default.factory()
                if field.default is attrs.NOTHING or getattr(item, field.name) != default:
                    found.add(f"{name}.{field.name}")
    return found


def _walk(value: object) -> Iterator[object]:
    yield value
    if attrs.has(type(value)):
        for field in attrs.fields(cast("type[attrs.AttrsInstance]", type(value))):
            yield from _walk(getattr(value, field.name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk(item)


#: IR classes no wire format renders or parses: the routes attach a request's origin.
_NOT_WIRE = frozenset({"Origin"})


def all_features() -> set[str]:
    """Every label :func:`features` can give for the classes and enums of :mod:`mux.ir`
    that a wire format carries."""
    labels: set[str] = set()
    for name in ir.__all__:
        if name in _NOT_WIRE:
            continue
        obj = getattr(ir, name)
        if isinstance(obj, type) and issubclass(obj, enum.Enum):
            labels |= {f"{name}.{member.name}" for member in obj}
        elif isinstance(obj, type) and attrs.has(obj):
            labels |= {name, *(f"{name}.{field.name}" for field in attrs.fields(obj))}
    return labels - {"Request.origin"}


# --------------------------------------------------------------------------------------------
# Wire helpers shared by the format tests


def wire(value: Any) -> Any:
    """``value`` as it arrives after a trip over the network (JSON encoded and decoded)."""
    return loads(dumps(value))


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at random places (sometimes byte by byte), as a network delivers it.

    Cuts are drawn as fractions of the length: rendered bytes may hold the clock, and
    hypothesis needs the same draws whatever the length when it replays a case.
    """
    if draw(st.integers(0, 9)) == 0:
        return [data[i : i + 1] for i in range(len(data))]
    scale = 2**16
    fractions = draw(st.lists(st.integers(0, scale), max_size=10))
    cuts = sorted(f * len(data) // scale for f in fractions)
    return [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]


def feed(parser: Any, pieces: Sequence[bytes]) -> list[ir.Event]:
    """Every event a stream parser gives for ``pieces``, then at the end of the body."""
    events = [event for piece in pieces for event in parser.feed(piece)]
    return events + parser.close()
