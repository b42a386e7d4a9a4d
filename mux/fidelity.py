"""Which IR features survive each client -> upstream pair of wire formats, measured.

Theory of operation
-------------------
Every format module translates both ways through the IR, and each loses what its wire
cannot say. What a *pair* loses (a client speaking format F, served by an upstream speaking
format G) is not the sum of two tables: it depends on how each side maps what the other
produced. So nothing here is written by hand or read from the test projections; every cell
is **measured** by running a small, fixed IR sample through the real translators:

* request features: ``x`` -> ``F.render_request`` -> ``F.parse_request`` (the client's
  request as mux reads it, with the client's body as its :class:`ir.Origin`, as the routes
  keep it) -> ``G.render_request`` -> ``G.parse_request`` (what the upstream
  understands). Requests flow one way, so that is where they are judged: going back
  through F would let F's parser re-derive what G dropped (a default, a flag F always
  sets); the trip back is the pair law of tests/test_pairs.py;
* response features: ``x`` -> ``G.render_response`` -> ``G.parse_response`` (the upstream's
  answer as mux reads it) -> ``F.render_response`` -> ``F.parse_response`` (what the client
  reads);
* stream features: ``x`` -> ``G.StreamRenderer`` -> bytes (cut into small pieces) ->
  ``G.StreamParser`` -> ``F.StreamRenderer`` -> ``F.StreamParser``, judged on the events and
  on the response they fold into (:func:`mux.streams.collect`).

Every JSON body crosses a real ``dumps``/``loads``. A format whose URL, not its body, carries
a request's model and stream flag (Gemini) gets them back from the IR it was rendered from,
as the routes do.

On the diagonal (client and upstream in one format) the request rows show what the
translators alone keep: the gateway itself forwards such a client's body as it came
(:class:`ir.Origin`), model aside, so there it keeps every request feature.

Each :class:`Feature` compares the *slice* of the IR it is about, before and after the
trip, and says :attr:`Status.SURVIVES`, :attr:`Status.PARTIAL` (with a short why) or
:attr:`Status.LOST` (with a why). A trip that raises is LOST with the error as its why,
prefixed ``error:`` -- that is a translator bug, not a loss by design.

``mux fidelity`` prints the matrix (``--json`` for machines). This module must not need
hypothesis or the tests: its samples are built here, with the IR classes.
"""

from __future__ import annotations

import base64
import enum
import importlib
import importlib.util
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any

import attrs

from mux import ir
from mux.errors import MuxError
from mux.framing import dumps, loads
from mux.streams import collect

__all__ = [
    "FEATURES",
    "FORMATS",
    "STREAM_REQUEST",
    "Cell",
    "Feature",
    "Status",
    "Verdict",
    "available_formats",
    "client_request_hop",
    "judge",
    "measure",
    "render_json",
    "render_markdown",
    "request_hop",
    "response_hop",
    "stream_hop",
    "trip",
]

#: Every client format mux speaks, in the order the tables show them.
FORMATS = ("openai_chat", "openai_responses", "anthropic", "gemini", "ollama")

#: Request fields a format carries in its URL, not its body: the routes fill them in.
_FROM_URL = {"gemini": ("model", "stream")}

#: Streams are cut into pieces this long before parsing, as a network would cut them.
_PIECE = 7


class Status(enum.Enum):
    """How a feature fares through a pair."""

    SURVIVES = "survives"
    PARTIAL = "partial"
    LOST = "lost"


@attrs.frozen
class Verdict:
    """A judge's finding: a status, and why when it is not SURVIVES."""

    status: Status
    why: str = ""


SURVIVES = Verdict(Status.SURVIVES)


def _partial(why: str) -> Verdict:
    return Verdict(Status.PARTIAL, why)


def _lost(why: str) -> Verdict:
    return Verdict(Status.LOST, why)


@attrs.frozen(kw_only=True)
class Feature:
    """One IR feature: samples to send and a judge of what came back.

    ``kind`` is ``request``, ``response`` or ``stream``: which trip the samples take.
    ``check(sample, after)`` compares the feature's slice of the sample with the value the
    trip gave back (an :class:`ir.Request`, an :class:`ir.Response`, or for streams the
    event list). With several samples the cell is the worst of their verdicts.
    """

    name: str
    kind: str
    samples: tuple[Any, ...]
    check: Callable[[Any, Any], Verdict]


@attrs.frozen(kw_only=True)
class Cell:
    """One cell of the matrix: a feature through a client -> upstream pair."""

    client: str
    upstream: str
    feature: str
    kind: str
    status: Status
    why: str = ""


# ============================================================================================
# Sample values

_PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
_PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
_WAV = b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00D\xac\x00\x00"
_SIGNATURE = base64.b64encode(b"reasoning-signature-1").decode()
_CALL_SIGNATURE = base64.b64encode(b"call-signature-1").decode()
_REDACTED = base64.b64encode(b"redacted-thinking-1").decode()
_ENCRYPTED = base64.b64encode(b"encrypted-content-1").decode()
_IMAGE_URL = "https://example.com/cat.png"
_PDF_URL = "https://example.com/report.pdf"
_CACHE = {"type": "ephemeral"}

_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
    "required": ["city", "celsius"],
}
_WEATHER = ir.Tool(
    name="get_weather",
    description="The current weather in a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city's name."}},
        "required": ["city"],
    },
)
_TIME = ir.Tool(
    name="get_time",
    description="The local time in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
_PARIS = '{"city":"Paris"}'
_LONDON = '{"city":"London"}'


def _user(*parts: ir.Part | str, name: str | None = None) -> ir.Message:
    content = [ir.Text(text=p) if isinstance(p, str) else p for p in parts]
    return ir.Message(role=ir.Role.USER, content=content, name=name)


def _system(text: str, role: ir.Role = ir.Role.SYSTEM) -> ir.Message:
    return ir.Message(role=role, content=[ir.Text(text=text)])


def _assistant(*parts: ir.Part | str) -> ir.Message:
    content = [ir.Text(text=p) if isinstance(p, str) else p for p in parts]
    return ir.Message(role=ir.Role.ASSISTANT, content=content)


def _result(call_id: str, *parts: ir.Text | ir.Image | ir.Document | str, **kw: Any) -> ir.Message:
    content = [ir.Text(text=p) if isinstance(p, str) else p for p in parts]
    return ir.Message(
        role=ir.Role.TOOL, content=[ir.ToolResult(call_id=call_id, content=content, **kw)]
    )


_HI = _user("What is the weather in Paris?")


def _request(*messages: ir.Message, **fields: Any) -> ir.Request:
    return ir.Request(model="test-model", messages=messages or (_HI,), **fields)


def _tool_turn(*calls: ir.ToolCall, results: Sequence[ir.Message] = ()) -> tuple[ir.Message, ...]:
    """A user question, an assistant turn calling ``calls``, and their results."""
    results = results or [_result(c.id, f"{c.arguments} -> sunny, 18 C") for c in calls]
    return (_HI, _assistant(*calls), *results)


def _call(call_id: str = "call_1", arguments: str = _PARIS, **kw: Any) -> ir.ToolCall:
    return ir.ToolCall(id=call_id, name=kw.pop("name", "get_weather"), arguments=arguments, **kw)


def _response(*parts: ir.Part | str, **fields: Any) -> ir.Response:
    content = [ir.Text(text=p) if isinstance(p, str) else p for p in parts]
    defaults: dict[str, Any] = {
        "id": "resp_1",
        "model": "test-model",
        "usage": ir.Usage(input_tokens=12, output_tokens=7),
        "created": 1_700_000_000,
    }
    return ir.Response(content=content, **(defaults | fields))


def _words(text: str) -> list[str]:
    return [text[i : i + 4] for i in range(0, len(text), 4)] or [text]


def _events(response: ir.Response) -> list[ir.Event]:
    """A stream delivering ``response``: text and reasoning in 4-character deltas, tool
    arguments in 4-character fragments, one usage update, the finish."""
    events: list[ir.Event] = [
        ir.StreamStart(id=response.id, model=response.model, created=response.created)
    ]
    for index, part in enumerate(response.content):
        if isinstance(part, ir.Text):
            events += [ir.TextDelta(index=index, text=t) for t in _words(part.text)]
        elif isinstance(part, ir.Reasoning):
            events += [ir.ReasoningDelta(index=index, text=t) for t in _words(part.text) if t]
            if part.signature is not None or part.data is not None:
                events.append(
                    ir.ReasoningDelta(
                        index=index,
                        signature=part.signature,
                        data=part.data,
                        redacted=part.redacted,
                    )
                )
        elif isinstance(part, ir.ToolCall):
            events.append(
                ir.ToolCallStart(index=index, id=part.id, name=part.name, signature=part.signature)
            )
            events += [ir.ToolArgsDelta(index=index, json=j) for j in _words(part.arguments)]
        events.append(ir.PartEnd(index=index))
    events.append(ir.UsageUpdate(usage=response.usage))
    events.append(ir.Finish(stop_reason=response.stop_reason, stop_sequence=response.stop_sequence))
    return events


#: The request every stream sample is rendered for: a client that asked for usage.
STREAM_REQUEST = _request(stream=True, stream_usage=True)


# ============================================================================================
# Slices and judges


def _all_parts(messages: Iterable[ir.Message], roles: Sequence[ir.Role] = ()) -> Iterator[ir.Part]:
    """Every part of ``messages`` (of ``roles``, when given), tool-result content included."""
    for message in messages:
        if roles and message.role not in roles:
            continue
        for part in message.content:
            yield part
            if isinstance(part, ir.ToolResult):
                yield from part.content


def _of(kind: type[Any], parts: Iterable[Any]) -> list[Any]:
    return [p for p in parts if isinstance(p, kind)]


def _text(parts: Iterable[ir.Part]) -> str:
    return "".join(p.text for p in parts if isinstance(p, ir.Text))


def _in_order(needles: Sequence[str], haystack: str) -> bool:
    at = 0
    for needle in needles:
        found = haystack.find(needle, at)
        if found < 0:
            return False
        at = found + len(needle)
    return True


def _json_equal(a: str, b: str) -> bool:
    try:
        return bool(json.loads(a) == json.loads(b))
    except ValueError:
        return a == b


def _missing(names: Iterable[str]) -> str:
    return ", ".join(names)


_SYSTEM_ROLES = (ir.Role.SYSTEM, ir.Role.DEVELOPER)


def _system_layout(r: ir.Request) -> list[tuple[int, str]]:
    """Each system message as (how many other messages precede it, its text)."""
    layout, others = [], 0
    for message in r.messages:
        if message.role in _SYSTEM_ROLES:
            layout.append((others, _text(message.content)))
        else:
            others += 1
    return layout


def _check_system(before: ir.Request, after: ir.Request) -> Verdict:
    was, now = _system_layout(before), _system_layout(after)
    if was == now:
        return SURVIVES
    texts = [text for _, text in was]
    if _in_order(texts, "\n".join(text for _, text in now)):
        if len(now) < len(was):
            return _partial("merged into one system prompt")
        return _partial("moved to the front of the conversation")
    if _in_order(texts, _text(_all_parts(after.messages))):
        return _partial("sent as conversation text, not as a system prompt")
    return _lost("the system prompt is gone")


def _check_developer(before: ir.Request, after: ir.Request) -> Verdict:
    text = _text(before.messages[0].content)
    for message in after.messages:
        if text in _text(message.content):
            if message.role is ir.Role.DEVELOPER:
                return SURVIVES
            if message.role is ir.Role.SYSTEM:
                return _partial("read back as a system message")
            return _partial(f"read back as a {message.role.value} message")
    return _lost("the developer message is gone")


def _check_name(before: ir.Request, after: ir.Request) -> Verdict:
    names = [m.name for m in after.messages if m.role is ir.Role.USER]
    return SURVIVES if "alice" in names else _lost("the participant name is dropped")


def _check_multipart(before: ir.Request, after: ir.Request) -> Verdict:
    wanted = [p.text for p in before.messages[-1].content if isinstance(p, ir.Text)]
    for message in after.messages:
        if message.role is ir.Role.USER:
            texts = [p.text for p in message.content if isinstance(p, ir.Text)]
            if texts == wanted:
                return SURVIVES
    if _in_order(wanted, _text(_all_parts(after.messages, [ir.Role.USER]))):
        return _partial("the parts are joined into one text")
    return _lost("the text parts are gone")


def _blob_parts(parts: Iterable[ir.Part], data: bytes) -> list[ir.Part]:
    return [p for p in parts if getattr(p, "data", None) == data]


def _check_blob(
    kind: type[Any], data: bytes, *, fields: Sequence[str] = (), roles: Sequence[ir.Role] = ()
) -> Callable[[ir.Request, ir.Request], Verdict]:
    """Inline content (image, document, audio): its bytes must come back as the same kind
    of part, with ``fields`` (media type, filename...) unchanged."""

    def check(before: ir.Request, after: ir.Request) -> Verdict:
        original = _blob_parts(_all_parts(before.messages), data)[0]
        found = _blob_parts(_all_parts(after.messages, roles), data)
        same_kind = [p for p in found if isinstance(p, kind)]
        if not same_kind:
            if found:
                return _partial(f"arrives as a {type(found[0]).__name__.lower()}")
            return _lost(f"the {kind.__name__.lower()} is dropped")
        part = same_kind[0]
        changed = [f for f in fields if getattr(part, f) != getattr(original, f)]
        if changed:
            return _partial(", ".join(_changed(f, getattr(part, f)) for f in changed))
        return SURVIVES

    return check


def _changed(field: str, value: Any) -> str:
    label = field.replace("_", " ")
    return f"{label} dropped" if value is None else f"{label} becomes {value!r}"


def _check_by_url(kind: type[Any], url: str) -> Callable[[ir.Request, ir.Request], Verdict]:
    def check(before: ir.Request, after: ir.Request) -> Verdict:
        parts = list(_all_parts(after.messages))
        if any(isinstance(p, kind) and p.url == url for p in parts):
            return SURVIVES
        if any(getattr(p, "url", None) == url for p in parts):
            other = next(p for p in parts if getattr(p, "url", None) == url)
            return _partial(f"arrives as a {type(other).__name__.lower()}")
        if url in _text(parts):
            return _partial("the URL arrives as text")
        return _lost(f"the {kind.__name__.lower()} URL is dropped")

    return check


def _check_field_of(
    kind: type[Any], field: str, value: Any
) -> Callable[[ir.Request, ir.Request], Verdict]:
    """A field of a part (image detail, document file id): some part of ``kind`` keeps it."""

    def check(before: ir.Request, after: ir.Request) -> Verdict:
        parts = [p for p in _all_parts(after.messages) if isinstance(p, kind)]
        if any(getattr(p, field) == value for p in parts):
            return SURVIVES
        what = field.replace("_", " ")
        return _lost(
            f"the {what} is dropped" if parts else f"the {kind.__name__.lower()} is dropped"
        )

    return check


def _check_tools(before: ir.Request, after: ir.Request) -> Verdict:
    problems = []
    for tool in before.tools:
        same = [t for t in after.tools if t.name == tool.name]
        if not same:
            return _lost(f"the tool {tool.name} is dropped")
        if same[0].description != tool.description:
            problems.append(
                "description " + ("dropped" if same[0].description is None else "changed")
            )
        if same[0].parameters != tool.parameters:
            problems.append(
                "parameters " + ("dropped" if same[0].parameters is None else "rewritten")
            )
    return _partial(_missing(dict.fromkeys(problems))) if problems else SURVIVES


def _check_strict(before: ir.Request, after: ir.Request) -> Verdict:
    if any(t.strict for t in after.tools):
        return SURVIVES
    return _lost("the strict flag is dropped")


def _choice(c: ir.ToolChoice | None) -> tuple[ir.ToolChoiceMode, str | None]:
    if c is None:
        return ir.ToolChoiceMode.AUTO, None  # no choice means auto, everywhere
    return c.mode, c.name if c.mode is ir.ToolChoiceMode.TOOL else None


def _check_tool_choice(before: ir.Request, after: ir.Request) -> Verdict:
    was, now = _choice(before.tool_choice), _choice(after.tool_choice)
    if was == now:
        return SURVIVES
    if was[0] is ir.ToolChoiceMode.TOOL and now[0] is ir.ToolChoiceMode.REQUIRED:
        return _partial("becomes 'any tool'")
    if after.tool_choice is None:
        return _lost("dropped (the model chooses freely)")
    return _lost(f"becomes {now[0].value}")


def _check_parallel_off(before: ir.Request, after: ir.Request) -> Verdict:
    if after.parallel_tool_calls is False:
        return SURVIVES
    return _lost("dropped (the model may call tools in parallel)")


def _calls(messages: Iterable[ir.Message]) -> list[tuple[int, ir.ToolCall]]:
    """(message index, call) for every tool call in an assistant message."""
    return [
        (i, p)
        for i, m in enumerate(messages)
        if m.role is ir.Role.ASSISTANT
        for p in m.content
        if isinstance(p, ir.ToolCall)
    ]


def _compare_calls(was: Sequence[ir.ToolCall], now: Sequence[ir.ToolCall]) -> Verdict:
    """Tool calls matched by name and arguments; ids and signatures compared."""
    problems = []
    for call in was:
        same = [c for c in now if c.name == call.name and _json_equal(c.arguments, call.arguments)]
        if not same:
            if any(c.name == call.name for c in now):
                return _partial("the arguments change")
            return _lost("the tool call is dropped")
        if same[0].id != call.id:
            problems.append("call ids are replaced")
    if len(now) > len(was):
        problems.append("extra calls appear")
    return _partial(_missing(dict.fromkeys(problems))) if problems else SURVIVES


def _check_history_calls(before: ir.Request, after: ir.Request) -> Verdict:
    was, now = _calls(before.messages), _calls(after.messages)
    verdict = _compare_calls([c for _, c in was], [c for _, c in now])
    if verdict.status is Status.LOST:
        return verdict
    if len({i for i, _ in now}) > len({i for i, _ in was}):
        split = "the calls are split into separate assistant turns"
        return _partial(f"{verdict.why}, {split}" if verdict.why else split)
    return verdict


def _results(messages: Iterable[ir.Message]) -> list[ir.ToolResult]:
    return [p for m in messages for p in m.content if isinstance(p, ir.ToolResult)]


def _check_results(before: ir.Request, after: ir.Request) -> Verdict:
    call_ids = {c.name: c.id for _, c in _calls(after.messages)}
    named = {c.id: c.name for _, c in _calls(before.messages)}
    now = _results(after.messages)
    problems = []
    for result in _results(before.messages):
        text = _text(result.content)
        same = [r for r in now if text in _text(r.content)]
        if not same:
            return _lost("the tool result is dropped")
        if same[0].call_id == result.call_id:
            continue
        if same[0].call_id == call_ids.get(named.get(result.call_id, "")):
            problems.append("call ids are replaced (the link holds)")
        else:
            return _partial("the result no longer links to its call")
    return _partial(_missing(dict.fromkeys(problems))) if problems else SURVIVES


def _check_result_image(before: ir.Request, after: ir.Request) -> Verdict:
    inside = [
        p for r in _results(after.messages) for p in r.content if getattr(p, "data", None) == _PNG
    ]
    if any(isinstance(p, ir.Image) for p in inside):
        return SURVIVES
    if _blob_parts(_all_parts(after.messages), _PNG):
        return _partial("the image moves out of the tool result")
    return _lost("the image is dropped")


def _check_tool_error(before: ir.Request, after: ir.Request) -> Verdict:
    now = _results(after.messages)
    if any(r.is_error for r in now):
        return SURVIVES
    if now:
        return _lost("the error flag is dropped (the result reads as a success)")
    return _lost("the tool result is dropped")


def _check_call_signature(before: Any, after: Any) -> Verdict:
    calls = (
        _response_calls(after)
        if isinstance(after, ir.Response)
        else [c for _, c in _calls(after.messages)]
    )
    if any(c.signature == _CALL_SIGNATURE for c in calls):
        return SURVIVES
    return _lost("the signature is dropped" if calls else "the tool call is dropped")


def _reasonings(value: ir.Request | ir.Response) -> list[ir.Reasoning]:
    parts = value.content if isinstance(value, ir.Response) else _all_parts(value.messages)
    return _of(ir.Reasoning, parts)


def _all_text(value: ir.Request | ir.Response) -> str:
    parts = value.content if isinstance(value, ir.Response) else _all_parts(value.messages)
    return _text(parts)


def _check_reasoning_text(before: Any, after: Any) -> Verdict:
    text = "".join(r.text for r in _reasonings(before))
    if text in "".join(r.text for r in _reasonings(after)):
        return SURVIVES
    if text in _all_text(after):
        return _partial("the reasoning arrives as plain text")
    return _lost("the reasoning is dropped")


def _check_signature(before: Any, after: Any) -> Verdict:
    now = _reasonings(after)
    if any(r.signature == _SIGNATURE for r in now):
        return SURVIVES
    return _lost("the signature is dropped" if now else "the reasoning is dropped")


def _check_hidden_reasoning(redacted: bool) -> Callable[[Any, Any], Verdict]:
    """Redacted (Anthropic) or encrypted (Responses) reasoning: the opaque data comes back,
    flagged the same way."""
    data = _REDACTED if redacted else _ENCRYPTED

    def check(before: Any, after: Any) -> Verdict:
        same = [r for r in _reasonings(after) if r.data == data]
        if not same:
            return _lost("the opaque reasoning data is dropped")
        if same[0].redacted != redacted:
            return _partial(
                "the data comes back " + ("unflagged" if redacted else "flagged redacted")
            )
        return SURVIVES

    return check


def _check_effort(before: ir.Request, after: ir.Request) -> Verdict:
    config = after.reasoning
    if config is not None and config.effort == "high":
        return SURVIVES
    if config is not None and config.budget_tokens is not None:
        return _partial(f"becomes a budget of {config.budget_tokens} tokens")
    if config is not None and config.effort is not None:
        return _partial(f"becomes effort {config.effort!r}")
    if config is not None and config.enabled:
        return _partial("becomes 'thinking on', without a level")
    return _lost("dropped")


def _check_budget(before: ir.Request, after: ir.Request) -> Verdict:
    config = after.reasoning
    if config is not None and config.budget_tokens == 4096:
        return SURVIVES
    if config is not None and config.budget_tokens is not None:
        return _partial(f"becomes a budget of {config.budget_tokens} tokens")
    if config is not None and config.effort is not None:
        return _partial(f"becomes effort {config.effort!r}")
    if config is not None and config.enabled:
        return _partial("becomes 'thinking on', without a budget")
    return _lost("dropped")


def _check_reasoning_off(before: ir.Request, after: ir.Request) -> Verdict:
    config = after.reasoning
    if config is not None and (
        config.enabled is False or config.effort == "none" or config.budget_tokens == 0
    ):
        return SURVIVES
    if config is not None and config.effort is not None:
        return _lost(f"becomes effort {config.effort!r}")
    return _lost("dropped (the model's default applies)")


def _check_summary(before: ir.Request, after: ir.Request) -> Verdict:
    config = after.reasoning
    if config is not None and config.summary == "detailed":
        return SURVIVES
    if config is not None and config.summary is not None:
        return _partial(f"becomes summary {config.summary!r}")
    if config is not None and config.include_thoughts:
        return _partial("becomes 'include thoughts', without a mode")
    return _lost("dropped")


def _check_include_thoughts(before: ir.Request, after: ir.Request) -> Verdict:
    config = after.reasoning
    if config is not None and config.include_thoughts:
        return SURVIVES
    if config is not None and config.summary is not None:
        return _partial(f"becomes summary {config.summary!r}")
    return _lost("dropped")


def _check_field(field: str) -> Callable[[Any, Any], Verdict]:
    """A scalar field of a request or response that must come back unchanged."""

    def check(before: Any, after: Any) -> Verdict:
        was, now = getattr(before, field), getattr(after, field)
        if now == was:
            return SURVIVES
        if now in (None, (), {}):
            return _lost("dropped")
        return _lost(f"becomes {now!r}")

    return check


def _check_created(before: ir.Response, after: ir.Response) -> Verdict:
    """The creation time; a format without one has it replaced by the time mux answered."""
    if after.created == before.created:
        return SURVIVES
    return _lost("replaced by the time mux answered")


def _check_stop(before: ir.Request, after: ir.Request) -> Verdict:
    if after.stop == before.stop:
        return SURVIVES
    if after.stop and set(after.stop) <= set(before.stop):
        return _partial(f"only {len(after.stop)} of {len(before.stop)} kept")
    return _lost("dropped")


def _check_json_schema(before: ir.Request, after: ir.Request) -> Verdict:
    was, now = before.response_format, after.response_format
    assert was is not None
    if now is None or now.type is ir.ResponseFormatType.TEXT:
        return _lost("dropped")
    if now.type is ir.ResponseFormatType.JSON_OBJECT:
        return _partial("becomes JSON mode, without the schema")
    if now.schema != was.schema:
        return _partial("the schema is rewritten" if now.schema else "the schema is dropped")
    gone = [f for f in ("name", "description", "strict") if getattr(now, f) != getattr(was, f)]
    return _partial(f"{_missing(gone)} dropped") if gone else SURVIVES


def _check_json_object(before: ir.Request, after: ir.Request) -> Verdict:
    now = after.response_format
    if now is not None and now.type is ir.ResponseFormatType.JSON_OBJECT:
        return SURVIVES
    if now is not None and now.type is ir.ResponseFormatType.JSON_SCHEMA:
        return _partial("becomes a JSON schema")
    return _lost("dropped")


def _cache_marks(r: ir.Request) -> dict[str, bool]:
    system = [p for p in _all_parts(r.messages, _SYSTEM_ROLES) if getattr(p, "cache_control", None)]
    user = [p for p in _all_parts(r.messages, [ir.Role.USER]) if getattr(p, "cache_control", None)]
    return {
        "system prompt": bool(system),
        "user text": bool(user),
        "tool definition": any(t.cache_control for t in r.tools),
    }


def _check_cache_control(before: ir.Request, after: ir.Request) -> Verdict:
    marks = _cache_marks(after)
    kept = [where for where, on in marks.items() if on]
    if len(kept) == len(marks):
        return SURVIVES
    if kept:
        return _partial("kept only on the " + _missing(kept))
    return _lost("dropped")


# --------------------------------------------------------------------------------------------
# Responses


def _check_response_text(before: ir.Response, after: ir.Response) -> Verdict:
    text = _text(before.content)
    got = _text(after.content)
    if got == text:
        return SURVIVES
    return _partial("the text changes") if text in got else _lost("the text is dropped")


def _check_response_parts(before: ir.Response, after: ir.Response) -> Verdict:
    wanted = [p.text for p in before.content if isinstance(p, ir.Text)]
    texts = [p.text for p in after.content if isinstance(p, ir.Text)]
    if texts == wanted:
        return SURVIVES
    if _in_order(wanted, "".join(texts)):
        return _partial("the parts are joined into one text")
    return _lost("the text is dropped")


def _response_calls(r: ir.Response) -> list[ir.ToolCall]:
    return _of(ir.ToolCall, r.content)


def _check_response_calls(before: ir.Response, after: ir.Response) -> Verdict:
    return _compare_calls(_response_calls(before), _response_calls(after))


def _check_response_blob(kind: type[Any], data: bytes) -> Callable[[Any, Any], Verdict]:
    def check(before: ir.Response, after: ir.Response) -> Verdict:
        found = _blob_parts(after.content, data)
        if any(isinstance(p, kind) for p in found):
            return SURVIVES
        if found:
            return _partial(f"arrives as a {type(found[0]).__name__.lower()}")
        return _lost(f"the {kind.__name__.lower()} is dropped")

    return check


def _check_stop_reason(before: ir.Response, after: ir.Response) -> Verdict:
    if after.stop_reason is before.stop_reason:
        return SURVIVES
    return _lost(f"reads as {after.stop_reason.value}")


def _check_usage(field: str) -> Callable[[Any, Any], Verdict]:
    """A usage count comes back, with the totals it is part of unchanged (a count that is
    kept but double-counted into the total is only partial)."""

    def check(before: ir.Response, after: ir.Response) -> Verdict:
        was, now = before.usage, after.usage
        totals = [
            f for f in ("input_tokens", "output_tokens") if getattr(now, f) != getattr(was, f)
        ]
        if getattr(now, field) != getattr(was, field):
            if field in totals:
                return _lost(f"reads as {getattr(now, field)}")
            return _lost(
                "dropped" if not getattr(now, field) else f"reads as {getattr(now, field)}"
            )
        if totals:
            return _partial(
                ", ".join(f"{f.replace('_', ' ')} reads as {getattr(now, f)}" for f in totals)
            )
        return SURVIVES

    return check


# --------------------------------------------------------------------------------------------
# Streams


def _as_response(check: Callable[[Any, Any], Verdict]) -> Callable[[Any, Any], Verdict]:
    """A response judge applied to the responses two streams fold into."""

    def judge(before: list[ir.Event], after: list[ir.Event]) -> Verdict:
        try:
            folded = collect(after)
        except MuxError as exc:
            return _lost(f"the stream fails: {exc.message}")
        return check(collect(before), folded)

    return judge


def _pieces(events: Sequence[ir.Event], kind: type[Any]) -> int:
    return sum(1 for e in events if isinstance(e, kind))


def _incremental(
    kind: type[Any], what: str, check: Callable[[Any, Any], Verdict]
) -> Callable[[Any, Any], Verdict]:
    """As ``check``, and the content must still arrive in several deltas."""
    judge = _as_response(check)

    def incremental(before: list[ir.Event], after: list[ir.Event]) -> Verdict:
        verdict = judge(before, after)
        if verdict.status is Status.SURVIVES and _pieces(after, kind) < _pieces(before, kind):
            if _pieces(after, kind) <= 1 or kind is ir.ToolArgsDelta:
                return _partial(f"{what} arrive in one piece")
        return verdict

    return incremental


def _check_stream_error(before: list[ir.Event], after: list[ir.Event]) -> Verdict:
    error = before[-1]
    assert isinstance(error, ir.StreamError)
    last = after[-1] if after else None
    if not isinstance(last, ir.StreamError):
        return _lost("the stream ends without an error")
    problems = []
    if last.kind is not error.kind:
        problems.append(f"the kind becomes {last.kind.value}")
    if last.message != error.message:
        problems.append("the message changes")
    text = "".join(e.text for e in after if isinstance(e, ir.TextDelta))
    if text != "Partial answ":
        problems.append("the text before it is lost")
    return _partial(_missing(problems)) if problems else SURVIVES


# ============================================================================================
# The features


def _req(name: str, check: Callable[[Any, Any], Verdict], *samples: ir.Request) -> Feature:
    return Feature(name=name, kind="request", samples=samples, check=check)


def _resp(name: str, check: Callable[[Any, Any], Verdict], *samples: ir.Response) -> Feature:
    return Feature(name=name, kind="response", samples=samples, check=check)


def _stream(name: str, check: Callable[[Any, Any], Verdict], *samples: ir.Response) -> Feature:
    return Feature(
        name=name, kind="stream", samples=tuple(_events(s) for s in samples), check=check
    )


_TOOLS = (_WEATHER, _TIME)
_CALLED = _tool_turn(_call())
_TWO_CALLS = _tool_turn(_call(), _call("call_2", _LONDON))


def _choice_sample(mode: ir.ToolChoiceMode, name: str | None = None) -> ir.Request:
    return _request(tools=_TOOLS, tool_choice=ir.ToolChoice(mode=mode, name=name))


_REQUEST_FEATURES = (
    _req("system prompt", _check_system, _request(_system("You are terse."), _HI)),
    _req(
        "developer role",
        _check_developer,
        _request(_system("Answer in French.", ir.Role.DEVELOPER), _HI),
    ),
    _req(
        "multiple system messages",
        _check_system,
        _request(_system("You are terse."), _system("Use metric units."), _HI),
    ),
    _req(
        "interleaved system messages",
        _check_system,
        _request(
            _system("You are terse."),
            _HI,
            _assistant("Sunny."),
            _system("Now be verbose."),
            _user("And London?"),
        ),
    ),
    _req("participant names", _check_name, _request(_user("Hello.", name="alice"))),
    _req("multi-part content", _check_multipart, _request(_user("First part. ", "Second part."))),
    _req(
        "images (inline)",
        _check_blob(ir.Image, _PNG, fields=["media_type"]),
        _request(_user("What is this?", ir.Image(media_type="image/png", data=_PNG))),
    ),
    _req(
        "images (URL)",
        _check_by_url(ir.Image, _IMAGE_URL),
        _request(_user("What is this?", ir.Image(url=_IMAGE_URL))),
    ),
    _req(
        "image detail",
        _check_field_of(ir.Image, "detail", "high"),
        _request(_user("Read it.", ir.Image(media_type="image/png", data=_PNG, detail="high"))),
    ),
    _req(
        "documents (inline)",
        _check_blob(ir.Document, _PDF, fields=["media_type", "filename"]),
        _request(
            _user(
                "Summarise.",
                ir.Document(media_type="application/pdf", data=_PDF, filename="report.pdf"),
            )
        ),
    ),
    _req(
        "documents (URL)",
        _check_by_url(ir.Document, _PDF_URL),
        _request(_user("Summarise.", ir.Document(media_type="application/pdf", url=_PDF_URL))),
    ),
    _req(
        "documents (file id)",
        _check_field_of(ir.Document, "file_id", "file-abc123"),
        _request(_user("Summarise.", ir.Document(file_id="file-abc123"))),
    ),
    _req(
        "document titles",
        _check_field_of(ir.Document, "title", "Q3 report"),
        _request(
            _user(
                "Summarise.",
                ir.Document(media_type="application/pdf", data=_PDF, title="Q3 report"),
            )
        ),
    ),
    _req(
        "audio",
        _check_blob(ir.Audio, _WAV, fields=["format"]),
        _request(_user("Transcribe.", ir.Audio(data=_WAV, format="wav"))),
    ),
    _req("tool definitions", _check_tools, _request(tools=_TOOLS)),
    _req("strict tools", _check_strict, _request(tools=[attrs.evolve(_WEATHER, strict=True)])),
    _req("tool choice: auto", _check_tool_choice, _choice_sample(ir.ToolChoiceMode.AUTO)),
    _req("tool choice: none", _check_tool_choice, _choice_sample(ir.ToolChoiceMode.NONE)),
    _req("tool choice: required", _check_tool_choice, _choice_sample(ir.ToolChoiceMode.REQUIRED)),
    _req(
        "tool choice: named tool",
        _check_tool_choice,
        _choice_sample(ir.ToolChoiceMode.TOOL, "get_weather"),
    ),
    _req(
        "parallel tool calls off",
        _check_parallel_off,
        _request(tools=_TOOLS, parallel_tool_calls=False),
    ),
    _req("tool calls", _check_history_calls, _request(*_CALLED, tools=_TOOLS)),
    _req("parallel tool calls", _check_history_calls, _request(*_TWO_CALLS, tools=_TOOLS)),
    _req("tool results", _check_results, _request(*_CALLED, tools=_TOOLS)),
    _req("parallel tool results", _check_results, _request(*_TWO_CALLS, tools=_TOOLS)),
    _req(
        "tool results with images",
        _check_result_image,
        _request(
            *_tool_turn(
                _call(),
                results=[
                    _result("call_1", "The map:", ir.Image(media_type="image/png", data=_PNG))
                ],
            ),
            tools=_TOOLS,
        ),
    ),
    _req(
        "tool errors",
        _check_tool_error,
        _request(
            *_tool_turn(_call(), results=[_result("call_1", "no such city", is_error=True)]),
            tools=_TOOLS,
        ),
    ),
    _req(
        "tool-call signatures",
        _check_call_signature,
        _request(*_tool_turn(_call(signature=_CALL_SIGNATURE)), tools=_TOOLS),
    ),
    _req(
        "reasoning text",
        _check_reasoning_text,
        _request(
            _HI,
            _assistant(ir.Reasoning(text="The user wants the weather."), "Sunny."),
            _user("Thanks."),
        ),
    ),
    _req(
        "reasoning signatures",
        _check_signature,
        _request(
            _HI,
            _assistant(
                ir.Reasoning(text="The user wants the weather.", signature=_SIGNATURE), "Sunny."
            ),
            _user("Thanks."),
        ),
    ),
    _req(
        "redacted reasoning",
        _check_hidden_reasoning(redacted=True),
        _request(
            _HI, _assistant(ir.Reasoning(data=_REDACTED, redacted=True), "Sunny."), _user("Thanks.")
        ),
    ),
    _req(
        "encrypted reasoning",
        _check_hidden_reasoning(redacted=False),
        _request(
            _HI,
            _assistant(ir.Reasoning(text="Weather asked.", data=_ENCRYPTED), "Sunny."),
            _user("Thanks."),
        ),
    ),
    _req("reasoning effort", _check_effort, _request(reasoning=ir.ReasoningConfig(effort="high"))),
    _req(
        "reasoning budget",
        _check_budget,
        _request(reasoning=ir.ReasoningConfig(enabled=True, budget_tokens=4096)),
    ),
    _req(
        "reasoning off", _check_reasoning_off, _request(reasoning=ir.ReasoningConfig(enabled=False))
    ),
    _req(
        "reasoning summary",
        _check_summary,
        _request(reasoning=ir.ReasoningConfig(effort="medium", summary="detailed")),
    ),
    _req(
        "thought summaries",
        _check_include_thoughts,
        _request(reasoning=ir.ReasoningConfig(budget_tokens=2048, include_thoughts=True)),
    ),
    _req("temperature", _check_field("temperature"), _request(temperature=0.7)),
    _req("top_p", _check_field("top_p"), _request(top_p=0.9)),
    _req("top_k", _check_field("top_k"), _request(top_k=40)),
    _req("seed", _check_field("seed"), _request(seed=1234)),
    _req("frequency penalty", _check_field("frequency_penalty"), _request(frequency_penalty=0.5)),
    _req("presence penalty", _check_field("presence_penalty"), _request(presence_penalty=0.25)),
    _req("max tokens", _check_field("max_tokens"), _request(max_tokens=321)),
    _req("stop sequences", _check_stop, _request(stop=["END", "STOP"])),
    _req("choices (n)", _check_field("n"), _request(n=2)),
    _req(
        "JSON-schema output",
        _check_json_schema,
        _request(
            response_format=ir.ResponseFormat(
                type=ir.ResponseFormatType.JSON_SCHEMA,
                schema=_SCHEMA,
                name="weather",
                description="A weather report.",
                strict=True,
            )
        ),
    ),
    _req(
        "JSON-object output",
        _check_json_object,
        _request(response_format=ir.ResponseFormat(type=ir.ResponseFormatType.JSON_OBJECT)),
    ),
    _req(
        "cache_control",
        _check_cache_control,
        _request(
            ir.Message(
                role=ir.Role.SYSTEM, content=[ir.Text(text="You are terse.", cache_control=_CACHE)]
            ),
            _user(ir.Text(text="A long document.", cache_control=_CACHE), "What is it about?"),
            tools=[attrs.evolve(_WEATHER, cache_control=_CACHE)],
        ),
    ),
    _req("streaming", _check_field("stream"), _request(stream=True)),
    _req("end-user id", _check_field("user"), _request(user="user-42")),
    _req("metadata", _check_field("metadata"), _request(metadata={"session": "abc"})),
)

_ANSWER = "It is sunny and 18 C in Paris."


def _stop_sample(reason: ir.StopReason) -> ir.Response:
    if reason is ir.StopReason.TOOL_USE:
        return _response(_call(), stop_reason=reason)
    if reason is ir.StopReason.STOP_SEQUENCE:
        return _response(_ANSWER, stop_reason=reason, stop_sequence="END")
    return _response(_ANSWER, stop_reason=reason)


def _response_samples() -> list[tuple[str, Callable[[Any, Any], Verdict], ir.Response]]:
    """(name, judge, sample) for every response feature; streams reuse them."""
    return [
        ("text", _check_response_text, _response(_ANSWER)),
        ("multiple text parts", _check_response_parts, _response("First part. ", "Second part.")),
        (
            "reasoning text",
            _check_reasoning_text,
            _response(ir.Reasoning(text="The user wants the weather."), _ANSWER),
        ),
        (
            "reasoning signatures",
            _check_signature,
            _response(
                ir.Reasoning(text="The user wants the weather.", signature=_SIGNATURE), _ANSWER
            ),
        ),
        (
            "redacted reasoning",
            _check_hidden_reasoning(redacted=True),
            _response(ir.Reasoning(data=_REDACTED, redacted=True), _ANSWER),
        ),
        (
            "encrypted reasoning",
            _check_hidden_reasoning(redacted=False),
            _response(ir.Reasoning(text="Weather asked.", data=_ENCRYPTED), _ANSWER),
        ),
        (
            "tool calls",
            _check_response_calls,
            _response(_call(), stop_reason=ir.StopReason.TOOL_USE),
        ),
        (
            "parallel tool calls",
            _check_response_calls,
            _response(_call(), _call("call_2", _LONDON), stop_reason=ir.StopReason.TOOL_USE),
        ),
        (
            "tool-call signatures",
            _check_call_signature,
            _response(_call(signature=_CALL_SIGNATURE), stop_reason=ir.StopReason.TOOL_USE),
        ),
        *(
            (f"stop reason: {reason.value}", _check_stop_reason, _stop_sample(reason))
            for reason in ir.StopReason
        ),
        (
            "matched stop sequence",
            _check_field("stop_sequence"),
            _stop_sample(ir.StopReason.STOP_SEQUENCE),
        ),
        (
            "token usage",
            _check_usage("input_tokens"),
            _response(_ANSWER, usage=ir.Usage(input_tokens=100, output_tokens=20)),
        ),
        (
            "cached-token usage",
            _check_usage("cache_read_tokens"),
            _response(
                _ANSWER, usage=ir.Usage(input_tokens=100, output_tokens=20, cache_read_tokens=60)
            ),
        ),
        (
            "cache-write usage",
            _check_usage("cache_write_tokens"),
            _response(
                _ANSWER, usage=ir.Usage(input_tokens=100, output_tokens=20, cache_write_tokens=30)
            ),
        ),
        (
            "reasoning-token usage",
            _check_usage("reasoning_tokens"),
            _response(
                _ANSWER, usage=ir.Usage(input_tokens=100, output_tokens=50, reasoning_tokens=30)
            ),
        ),
    ]


_RESPONSE_FEATURES = (
    *(_resp(name, check, sample) for name, check, sample in _response_samples()),
    _resp(
        "image output",
        _check_response_blob(ir.Image, _PNG),
        _response(ir.Image(media_type="image/png", data=_PNG)),
    ),
    _resp(
        "audio output",
        _check_response_blob(ir.Audio, _WAV),
        _response(ir.Audio(data=_WAV, format="wav")),
    ),
    _resp("response id", _check_field("id"), _response(_ANSWER, id="resp_abc123")),
    _resp("model name", _check_field("model"), _response(_ANSWER, model="test-model-2")),
    _resp("created time", _check_created, _response(_ANSWER, created=1_712_345_678)),
)

_INCREMENTAL = {
    "text": (ir.TextDelta, "the text deltas"),
    "reasoning text": (ir.ReasoningDelta, "the reasoning deltas"),
    "tool calls": (ir.ToolArgsDelta, "the arguments"),
    "parallel tool calls": (ir.ToolArgsDelta, "the arguments"),
}

_STREAM_FEATURES = (
    *(
        _stream(
            f"streaming {name}",
            (
                _incremental(*_INCREMENTAL[name], check)
                if name in _INCREMENTAL
                else _as_response(check)
            ),
            sample,
        )
        for name, check, sample in _response_samples()
    ),
    _stream(
        "streaming model name",
        _as_response(_check_field("model")),
        _response(_ANSWER, model="test-model-2"),
    ),
    Feature(
        name="streaming errors",
        kind="stream",
        samples=(
            [
                ir.StreamStart(id="resp_1", model="test-model", created=1_700_000_000),
                ir.TextDelta(index=0, text="Partial "),
                ir.TextDelta(index=0, text="answ"),
                ir.StreamError(kind=ir.ErrorKind.RATE_LIMIT, message="slow down", status=429),
            ],
        ),
        check=_check_stream_error,
    ),
)

#: Every feature, in the order the tables show them.
FEATURES: tuple[Feature, ...] = (*_REQUEST_FEATURES, *_RESPONSE_FEATURES, *_STREAM_FEATURES)


# ============================================================================================
# Trips


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"mux.formats.{name}")


def available_formats() -> list[str]:
    """The formats of :data:`FORMATS` whose module exists, in that order."""
    return [name for name in FORMATS if importlib.util.find_spec(f"mux.formats.{name}") is not None]


def _wire(body: Any) -> Any:
    """A JSON body as it arrives after a trip over the network."""
    return loads(dumps(body))


def request_hop(name: str, request: ir.Request) -> ir.Request:
    """``request`` rendered in format ``name`` and parsed back, with what that format's URL
    carries (see ``_FROM_URL``) filled in from ``request``."""
    module = _module(name)
    parsed = module.parse_request(_wire(module.render_request(request)))
    url_fields = {f: getattr(request, f) for f in _FROM_URL.get(name, ())}
    return attrs.evolve(parsed, **url_fields) if url_fields else parsed


def client_request_hop(name: str, request: ir.Request) -> ir.Request:
    """``request`` as a client of format ``name`` sends it and mux reads it.

    The sample stands for what such a client says, so it is rendered as a request of that
    format's own origin (a format may write some fields, such as Gemini's signatures, only
    for its own); what mux reads of it keeps the body the client sent as its origin, as the
    routes keep it.
    """
    module = _module(name)
    own = attrs.evolve(request, origin=ir.Origin(format=module.NAME, body={}))
    body = _wire(module.render_request(own))
    parsed = module.parse_request(body)
    url_fields = {f: getattr(request, f) for f in _FROM_URL.get(name, ())}
    return attrs.evolve(parsed, origin=ir.Origin(format=module.NAME, body=body), **url_fields)


def response_hop(name: str, response: ir.Response) -> ir.Response:
    module = _module(name)
    parsed: ir.Response = module.parse_response(_wire(module.render_response(response)))
    return parsed


def stream_hop(
    name: str, events: Sequence[ir.Event], request: ir.Request = STREAM_REQUEST
) -> list[ir.Event]:
    """``events`` rendered for a client of format ``name``, cut into small pieces and read
    back by its stream parser."""
    module = _module(name)
    renderer = module.StreamRenderer(request)
    data = b"".join(renderer.render(event) for event in events)
    parser = module.StreamParser()
    out: list[ir.Event] = []
    for at in range(0, len(data), _PIECE):
        out += parser.feed(data[at : at + _PIECE])
    return out + parser.close()


def trip(feature: Feature, client: str, upstream: str, sample: Any) -> Any:
    """What comes back of ``sample`` through the client -> upstream pair (see the module
    docstring for each kind's path)."""
    if feature.kind == "request":
        return request_hop(upstream, client_request_hop(client, sample))
    if feature.kind == "response":
        return response_hop(client, response_hop(upstream, sample))
    return stream_hop(client, stream_hop(upstream, sample))


_RANK = {Status.SURVIVES: 0, Status.PARTIAL: 1, Status.LOST: 2}


def judge(feature: Feature, client: str, upstream: str) -> Verdict:
    """The feature's verdict for the pair: the worst over its samples."""
    verdicts = []
    for sample in feature.samples:
        try:
            after = trip(feature, client, upstream, sample)
        except Exception as exc:  # a translator bug: show it in the cell, go on measuring
            message = getattr(exc, "message", None) or str(exc)
            verdicts.append(_lost(f"error: {type(exc).__name__}: {message}"[:200]))
            continue
        verdicts.append(feature.check(sample, after))
    return max(verdicts, key=lambda v: _RANK[v.status])


def measure(
    clients: Sequence[str] | None = None,
    upstreams: Sequence[str] | None = None,
    features: Sequence[Feature] = FEATURES,
) -> list[Cell]:
    """Every cell of the matrix: each feature for each client -> upstream pair."""
    formats = available_formats()
    cells = []
    for client in clients or formats:
        for upstream in upstreams or formats:
            for feature in features:
                verdict = judge(feature, client, upstream)
                cells.append(
                    Cell(
                        client=client,
                        upstream=upstream,
                        feature=feature.name,
                        kind=feature.kind,
                        status=verdict.status,
                        why=verdict.why,
                    )
                )
    return cells


# ============================================================================================
# Output

_KINDS = {"request": "Requests", "response": "Responses", "stream": "Streams"}


def render_markdown(cells: Sequence[Cell]) -> str:
    """One table per client format: rows are features, columns upstream formats. A cell is
    ``survives``, ``partial [n]`` or ``lost [n]``; note n, under the table, says why."""
    clients = list(dict.fromkeys(c.client for c in cells))
    upstreams = list(dict.fromkeys(c.upstream for c in cells))
    features = list(dict.fromkeys((c.kind, c.feature) for c in cells))
    by_key = {(c.client, c.upstream, c.kind, c.feature): c for c in cells}
    out = [
        "How each IR feature fares from a client format (one table each) to an upstream "
        "format (columns), measured through the translators by `mux fidelity`. Requests are "
        "judged as the upstream reads them; responses and streams as the client reads them. "
        "On the diagonal, request rows show the translators alone: mux forwards a "
        "same-format client's body as it came.",
        "",
    ]
    for client in clients:
        notes: dict[str, int] = {}
        out += [f"### Client: {client}", ""]
        out.append("| feature | " + " | ".join(upstreams) + " |")
        out.append("|---" * (len(upstreams) + 1) + "|")
        kind = ""
        for feature_kind, feature in features:
            if feature_kind != kind:
                kind = feature_kind
                out.append(f"| **{_KINDS[kind]}** |" + " |" * len(upstreams))
            row = []
            for upstream in upstreams:
                cell = by_key[(client, upstream, feature_kind, feature)]
                if cell.status is Status.SURVIVES:
                    row.append("survives")
                else:
                    number = notes.setdefault(cell.why, len(notes) + 1)
                    row.append(f"{cell.status.value} [{number}]")
            out.append(f"| {feature} | " + " | ".join(row) + " |")
        out.append("")
        out += [f"[{n}] {why}" for why, n in notes.items()]
        out.append("")
    return "\n".join(out)


def render_json(cells: Sequence[Cell]) -> str:
    """The matrix as JSON: ``{"cells": [{client, upstream, feature, kind, status, why}]}``."""
    rows = [attrs.asdict(cell) | {"status": cell.status.value} for cell in cells]
    return json.dumps({"cells": rows}, indent=1)
