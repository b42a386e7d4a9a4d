"""The intermediate representation every wire format translates to and from.

Theory of operation
-------------------
A client request in any format is parsed into a :class:`Request`; a provider answers
with a :class:`Response` or with a sequence of stream events; the client's format renders
those back. Every class here is a frozen, keyword-only attrs class: a value, with no I/O, no
JSON and no knowledge of any wire format. Changed copies are made with ``attrs.evolve``.

Conventions the formats rely on:

* **System prompts are messages.** A message with role ``SYSTEM`` (or ``DEVELOPER``) may stand
  anywhere in :attr:`Request.messages`. Formats with a single system slot (Anthropic's
  ``system``, Gemini's ``systemInstruction``) parse that slot into leading system messages
  and hoist leading system messages back into it.
* **Tool arguments are JSON text.** :attr:`ToolCall.arguments` holds the JSON text of the
  arguments object as the model produced it (OpenAI sends a string; formats that send an
  object serialise it compactly). Keeping the text means a same-format hop loses nothing and a
  stream of argument fragments needs no re-encoding.
* **Usage counts include their parts.** ``input_tokens`` counts every input token, cached or
  not (OpenAI's convention); ``output_tokens`` counts every output token, reasoning included.
  See :class:`Usage`.
* **A stream is a sequence of events** (see :data:`Event`): one :class:`StreamStart`, then the
  content parts in order, each part opened by its first delta and closed by a
  :class:`PartEnd` with the same ``index``, then :class:`UsageUpdate` (any number, each
  cumulative) and one :class:`Finish`. A :class:`StreamError` may end the stream instead.
  Parts never interleave; indices are dense from 0.
* **Fields a format has and the IR does not model** travel in :class:`Extra`, tagged with the
  format that produced them, so that rendering back into that same format restores them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, TypeAlias

import attrs

__all__ = [
    "Audio",
    "Document",
    "ErrorKind",
    "Event",
    "Extra",
    "Finish",
    "Image",
    "Message",
    "Origin",
    "ModelInfo",
    "Part",
    "PartEnd",
    "Reasoning",
    "ReasoningConfig",
    "ReasoningDelta",
    "Request",
    "Response",
    "ResponseFormat",
    "ResponseFormatType",
    "Role",
    "StopReason",
    "StreamError",
    "StreamStart",
    "Text",
    "TextDelta",
    "Tool",
    "ToolArgsDelta",
    "ToolCall",
    "ToolCallStart",
    "ToolChoice",
    "ToolChoiceMode",
    "ToolResult",
    "Usage",
    "UsageUpdate",
]



def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value)


# --------------------------------------------------------------------------------------------
# Enumerations


class Role(enum.Enum):
    """Who speaks a message."""

    SYSTEM = "system"
    #: OpenAI's ``developer`` role: a system prompt for reasoning models. Formats without it
    #: treat it as ``SYSTEM``.
    DEVELOPER = "developer"
    USER = "user"
    ASSISTANT = "assistant"
    #: A message carrying tool results (OpenAI ``tool``; Anthropic and Gemini carry them in
    #: user turns, which their parsers map to this role when a turn holds only results).
    TOOL = "tool"


class StopReason(enum.Enum):
    """Why the model stopped (protocols.md F.2)."""

    END_TURN = "end_turn"
    STOP_SEQUENCE = "stop_sequence"
    MAX_TOKENS = "max_tokens"
    TOOL_USE = "tool_use"
    CONTENT_FILTER = "content_filter"
    #: Anthropic ``pause_turn``: a server tool paused; resend to continue.
    PAUSE = "pause"
    ERROR = "error"


class ErrorKind(enum.Enum):
    """What went wrong, independent of any format's error vocabulary."""

    INVALID_REQUEST = "invalid_request"
    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    NOT_FOUND = "not_found"
    REQUEST_TOO_LARGE = "request_too_large"
    RATE_LIMIT = "rate_limit"
    TIMEOUT = "timeout"
    OVERLOADED = "overloaded"
    UPSTREAM = "upstream"
    INTERNAL = "internal"


class ToolChoiceMode(enum.Enum):
    AUTO = "auto"
    NONE = "none"
    #: The model must call some tool (OpenAI ``required``, Anthropic ``any``, Gemini ``ANY``).
    REQUIRED = "required"
    #: The model must call the tool named in :attr:`ToolChoice.name`.
    TOOL = "tool"


class ResponseFormatType(enum.Enum):
    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


# --------------------------------------------------------------------------------------------
# Content parts


@attrs.frozen(kw_only=True)
class Text:
    """Plain text."""

    text: str
    #: Anthropic prompt-caching breakpoint (``{"type": "ephemeral"}``), kept for Anthropic hops.
    cache_control: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class Image:
    """An image, inline (``data`` with ``media_type``) or by ``url``.

    ``detail`` is OpenAI's resolution hint (``auto``/``low``/``high``), None when not given.
    """

    media_type: str | None = None
    data: bytes | None = None
    url: str | None = None
    detail: str | None = None
    #: Anthropic prompt-caching breakpoint (``{"type": "ephemeral"}``), kept for Anthropic hops.
    cache_control: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class Document:
    """A file: a PDF or other document, inline, by URL, or by a provider's file id."""

    media_type: str | None = None
    data: bytes | None = None
    url: str | None = None
    file_id: str | None = None
    filename: str | None = None
    title: str | None = None
    #: Anthropic prompt-caching breakpoint (``{"type": "ephemeral"}``), kept for Anthropic hops.
    cache_control: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class Audio:
    """Inline audio; ``format`` is the codec name (``wav``, ``mp3``)."""

    data: bytes
    format: str


@attrs.frozen(kw_only=True)
class ToolCall:
    """The model asks for a tool to be run.

    ``arguments`` is the JSON text of the arguments object (see the module docstring).
    ``signature`` carries an opaque replay token some providers attach to calls (Gemini's
    ``thoughtSignature``).
    """

    id: str
    name: str
    arguments: str = "{}"
    signature: str | None = None
    #: Anthropic prompt-caching breakpoint (``{"type": "ephemeral"}``), kept for Anthropic hops.
    cache_control: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class ToolResult:
    """The result of a tool call, sent back to the model.

    ``name`` is the tool's name where the format carries it (Gemini, Ollama); others link
    by ``call_id`` alone.
    """

    call_id: str
    content: tuple[Text | Image | Document, ...] = attrs.field(default=(), converter=_tuple)
    is_error: bool = False
    name: str | None = None
    #: Anthropic prompt-caching breakpoint (``{"type": "ephemeral"}``), kept for Anthropic hops.
    cache_control: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class Reasoning:
    """The model's reasoning ("thinking").

    ``signature`` is an opaque token that proves the text came from the model (Anthropic's
    ``signature``, Gemini's ``thoughtSignature``), kept byte-exact. ``data`` is reasoning the
    provider hides: Anthropic's ``redacted_thinking.data`` (with ``redacted`` true) or
    OpenAI Responses' ``encrypted_content``.
    """

    text: str = ""
    signature: str | None = None
    data: str | None = None
    redacted: bool = False


Part: TypeAlias = Text | Image | Document | Audio | ToolCall | ToolResult | Reasoning


# --------------------------------------------------------------------------------------------
# Requests


@attrs.frozen(kw_only=True)
class Extra:
    """Fields of one wire format that the IR does not model, kept for a same-format hop.

    ``format`` names the format module that parsed them; only that module renders them.
    """

    format: str
    fields: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Message:
    role: Role
    content: tuple[Part, ...] = attrs.field(default=(), converter=_tuple)
    #: The participant's name, where a format carries one (OpenAI ``name``).
    name: str | None = None


@attrs.frozen(kw_only=True)
class Tool:
    """A function the model may call; ``parameters`` is a JSON Schema object."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None
    strict: bool | None = None
    #: Anthropic prompt-caching breakpoint (``{"type": "ephemeral"}``), kept for Anthropic hops.
    cache_control: Mapping[str, Any] | None = None


@attrs.frozen(kw_only=True)
class ToolChoice:
    mode: ToolChoiceMode = ToolChoiceMode.AUTO
    name: str | None = None


@attrs.frozen(kw_only=True)
class ResponseFormat:
    """Structured output: plain text, any JSON object, or JSON matching ``schema``."""

    type: ResponseFormatType
    schema: Mapping[str, Any] | None = None
    name: str | None = None
    description: str | None = None
    strict: bool | None = None


@attrs.frozen(kw_only=True)
class ReasoningConfig:
    """How much the model should think.

    ``effort`` is a level (``none``, ``minimal``, ``low``, ``medium``, ``high``, ``xhigh``);
    ``budget_tokens`` a token budget (Anthropic, Gemini). ``enabled`` False turns thinking
    off where a format can say so. ``summary`` is the Responses API summary mode and
    ``include_thoughts`` Gemini's request for thought summaries.
    """

    enabled: bool | None = None
    effort: str | None = None
    budget_tokens: int | None = None
    summary: str | None = None
    include_thoughts: bool | None = None


@attrs.frozen(kw_only=True)
class Request:
    """A request for a model turn."""

    model: str
    messages: tuple[Message, ...] = attrs.field(default=(), converter=_tuple)
    tools: tuple[Tool, ...] = attrs.field(default=(), converter=_tuple)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    #: Number of choices; only OpenAI Chat/Completions and Gemini can ask for more than one.
    n: int | None = None
    response_format: ResponseFormat | None = None
    reasoning: ReasoningConfig | None = None
    stream: bool = False
    #: Whether a streamed answer should report usage (OpenAI ``stream_options``); formats
    #: that always report usage ignore it.
    stream_usage: bool = False
    #: An end-user id (OpenAI ``user``, Anthropic ``metadata.user_id``).
    user: str | None = None
    metadata: Mapping[str, str] = attrs.field(factory=dict)
    extra: Extra | None = None
    #: The client's request as it arrived, for a same-format hop (see :class:`Origin`).
    origin: Origin | None = None


@attrs.frozen(kw_only=True)
class Origin:
    """A client's request as it arrived: the decoded body and the headers that shape it.

    When the upstream speaks the client's format, the provider forwards ``body`` with only
    the model changed, so that fields mux does not model (Claude Code sends many) arrive
    untouched. ``headers`` holds only headers that change the request's meaning
    (``anthropic-beta``, ``anthropic-version``), never credentials.
    """

    format: str
    body: Mapping[str, Any]
    headers: Mapping[str, str] = attrs.field(factory=dict)


# --------------------------------------------------------------------------------------------
# Responses


@attrs.frozen(kw_only=True)
class Usage:
    """Token counts of one turn.

    ``input_tokens`` counts all input, including ``cache_read_tokens`` and
    ``cache_write_tokens``; ``output_tokens`` counts all output, including
    ``reasoning_tokens``.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@attrs.frozen(kw_only=True)
class Response:
    """A complete model turn."""

    id: str
    model: str
    content: tuple[Part, ...] = attrs.field(default=(), converter=_tuple)
    stop_reason: StopReason = StopReason.END_TURN
    #: The stop sequence that ended the turn, when ``stop_reason`` is ``STOP_SEQUENCE``.
    stop_sequence: str | None = None
    usage: Usage = attrs.field(factory=Usage)
    #: Unix time the response was created, when the format carries one.
    created: int | None = None
    extra: Extra | None = None


# --------------------------------------------------------------------------------------------
# Stream events


@attrs.frozen(kw_only=True)
class StreamStart:
    """The first event of every stream."""

    id: str
    model: str
    created: int | None = None


@attrs.frozen(kw_only=True)
class TextDelta:
    index: int
    text: str


@attrs.frozen(kw_only=True)
class ReasoningDelta:
    """More reasoning for part ``index``.

    A delta may carry only ``signature`` or ``data`` (with ``text`` empty): the signature
    replaces any earlier one (Anthropic's ``signature_delta``).
    """

    index: int
    text: str = ""
    signature: str | None = None
    data: str | None = None
    redacted: bool = False


@attrs.frozen(kw_only=True)
class ToolCallStart:
    """Opens part ``index`` as a tool call; its arguments follow as :class:`ToolArgsDelta`."""

    index: int
    id: str
    name: str
    signature: str | None = None


@attrs.frozen(kw_only=True)
class ToolArgsDelta:
    """A fragment of a tool call's arguments JSON text; fragments concatenate."""

    index: int
    json: str


@attrs.frozen(kw_only=True)
class PartEnd:
    index: int


@attrs.frozen(kw_only=True)
class UsageUpdate:
    """Cumulative usage so far; the last one is the turn's usage."""

    usage: Usage


@attrs.frozen(kw_only=True)
class Finish:
    stop_reason: StopReason
    stop_sequence: str | None = None


@attrs.frozen(kw_only=True)
class StreamError:
    """The stream failed; nothing follows."""

    kind: ErrorKind
    message: str
    status: int = 500


Event: TypeAlias = (
    StreamStart
    | TextDelta
    | ReasoningDelta
    | ToolCallStart
    | ToolArgsDelta
    | PartEnd
    | UsageUpdate
    | Finish
    | StreamError
)


# --------------------------------------------------------------------------------------------
# Model listings


@attrs.frozen(kw_only=True)
class ModelInfo:
    """A model as the model-list endpoints show it."""

    id: str
    owned_by: str = "mux"
    #: Unix time; model lists need one, so it defaults to a fixed date (2024-01-01).
    created: int = 1704067200
