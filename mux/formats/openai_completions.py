"""OpenAI legacy Completions (``POST /v1/completions``), both directions.

Client side: :func:`parse_request` reads what a Completions client sends, and
:func:`render_response`, :class:`StreamRenderer` and :func:`render_error` answer it. Upstream
side: :func:`render_request` writes what a Completions upstream (vLLM, llama.cpp,
``gpt-3.5-turbo-instruct``) receives, and :func:`parse_response`, :class:`StreamParser` and
:func:`parse_error` read its answers. Everything is pure; the stream classes are sans-io.

Mapping notes (protocols.md A.4):

* The format is text in, text out. A ``prompt`` is one user message. A batch (an array of
  several prompts, each answered by its own choices) has no IR counterpart and is refused,
  as are token-id prompts; an array of one string is that string.
* ``max_tokens`` defaults to 16, as the API does: a client that leaves it out gets what
  OpenAI would give it.
* Toward an upstream, every message's text (system prompts, tool results included) is
  joined into the one prompt, a blank line between messages: roles, reasoning, tool calls,
  images and the rest have no place in a prompt.
* ``suffix``, ``echo``, ``best_of``, ``logprobs`` (an integer here, unlike Chat's boolean),
  ``logit_bias`` and anything else the IR does not model travel in :class:`ir.Extra`.
* Answers are the first choice's ``text``; reasoning and tool calls cannot be said.

Errors: the envelope is Chat's (:func:`render_error` and :func:`parse_error` are Chat's
own); a failure inside a stream is a ``{"error": ...}`` chunk, as in Chat.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from mux import ir
from mux.errors import MuxError, RequestError, UpstreamError
from mux.formats._json import (
    Node,
    extract_extra,
    present,
    request_error,
    upstream_error,
    with_extra,
)

# Completions shares Chat's usage object, error envelope and mid-stream error chunk.
from mux.formats.openai_chat import (
    parse_usage,
    render_usage,
    stream_error,
    parse_error,
    render_error,
)
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

NAME = "openai_completions"

#: The API's ``max_tokens`` when a request leaves it out.
DEFAULT_MAX_TOKENS = 16

# --------------------------------------------------------------------------------------------
# Requests

_REQUEST_FIELDS = frozenset(
    {
        "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed",
        "frequency_penalty", "presence_penalty", "stream", "stream_options", "user",
    }
)  # fmt: skip


def parse_request(body: object) -> ir.Request:
    """A client's request body (already JSON-decoded) as an IR request.

    Raises:
      RequestError: the body is not a valid Completions request; the message and ``param``
        name the field at fault.
    """
    root = Node(body, "", request_error)
    root.object()
    model = root["model"].string()
    if not model:
        root["model"].fail("a model name", "an empty string")
    prompt = _parse_prompt(root["prompt"])
    stream = bool(root["stream"].optional(Node.boolean))
    options = root["stream_options"]
    if not options.absent and not stream:
        raise RequestError("stream_options: only allowed when stream is true", param=options.path)
    root["logprobs"].optional(lambda n: n.integer(minimum=0))  # an integer here, not a boolean
    max_tokens = root["max_tokens"].optional(lambda n: n.integer(minimum=0))
    return ir.Request(
        model=model,
        messages=[ir.Message(role=ir.Role.USER, content=[ir.Text(text=prompt)])],
        max_tokens=DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        temperature=root["temperature"].optional(Node.number),
        top_p=root["top_p"].optional(Node.number),
        stop=_parse_stop(root["stop"]),
        seed=root["seed"].optional(Node.integer),
        frequency_penalty=root["frequency_penalty"].optional(Node.number),
        presence_penalty=root["presence_penalty"].optional(Node.number),
        n=root["n"].optional(Node.positive),
        stream=stream,
        stream_usage=bool(options["include_usage"].optional(Node.boolean)),
        user=root["user"].optional(Node.string),
        extra=extract_extra(root, _REQUEST_FIELDS, NAME),
    )


def _parse_prompt(node: Node) -> str:
    """The one prompt: a string, or an array holding one string."""
    if isinstance(node.value, str):
        return node.value
    if not isinstance(node.value, list):
        node.fail("a string or an array of one string")
    items = node.array()
    if len(items) == 1 and isinstance(items[0].value, str):
        return items[0].value
    if items and all(isinstance(item.value, str) for item in items):
        node.fail(
            "a string or an array of one string (mux answers one prompt per request)",
            f"an array of {len(items)} strings",
        )
    node.fail("a string or an array of one string (token-id prompts are not supported)")


def _parse_stop(node: Node) -> tuple[str, ...]:
    if isinstance(node.value, str):
        return (node.value,)
    if not node.absent and not isinstance(node.value, list):
        node.fail("a string or an array of strings")
    return tuple(item.string() for item in node.optional(Node.array) or ())


def _prompt(messages: Sequence[ir.Message]) -> str:
    """Every message's text, a blank line between messages (tool results included)."""
    texts = []
    for message in messages:
        parts = [
            p.text
            for part in message.content
            for p in (part.content if isinstance(part, ir.ToolResult) else (part,))
            if isinstance(p, ir.Text)
        ]
        if parts:
            texts.append("".join(parts))
    return "\n\n".join(texts)


def render_request(request: ir.Request) -> dict[str, Any]:
    """``request`` as the JSON body a Completions upstream receives."""
    body: dict[str, Any] = {"model": request.model, "prompt": _prompt(request.messages)}
    if request.stop:
        body["stop"] = list(request.stop)
    if request.stream:
        body["stream"] = True
        if request.stream_usage:
            body["stream_options"] = {"include_usage": True}
    body |= present(
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        frequency_penalty=request.frequency_penalty,
        presence_penalty=request.presence_penalty,
        n=request.n,
        user=request.user,
    )
    return with_extra(body, request.extra, NAME)


# --------------------------------------------------------------------------------------------
# Responses

_RESPONSE_FIELDS = frozenset({"id", "object", "created", "model", "choices", "usage"})


def _finish_reason(stop: ir.StopReason) -> str:
    if stop is ir.StopReason.MAX_TOKENS:
        return "length"
    if stop is ir.StopReason.CONTENT_FILTER:
        return "content_filter"
    return "stop"


def _stop_reason(finish: str | None) -> ir.StopReason:
    if finish == "length":
        return ir.StopReason.MAX_TOKENS
    if finish == "content_filter":
        return ir.StopReason.CONTENT_FILTER
    return ir.StopReason.END_TURN


def _text(parts: Sequence[ir.Part]) -> str:
    return "".join(part.text for part in parts if isinstance(part, ir.Text))


def parse_response(body: object) -> ir.Response:
    """An upstream's ``text_completion`` object as an IR response (its first choice).

    Raises:
      UpstreamError: the body is not a text completion.
    """
    root = Node(body, "", upstream_error)
    root.object()
    choices = root["choices"].array()
    text = choices[0]["text"].optional(Node.string) if choices else None
    finish = choices[0]["finish_reason"].optional(Node.string) if choices else None
    return ir.Response(
        id=root["id"].optional(Node.string) or "",
        model=root["model"].optional(Node.string) or "",
        content=[ir.Text(text=text)] if text else [],
        stop_reason=_stop_reason(finish),
        usage=root["usage"].optional(parse_usage) or ir.Usage(),
        created=root["created"].optional(Node.integer),
        extra=extract_extra(root, _RESPONSE_FIELDS, NAME),
    )


def render_response(response: ir.Response) -> dict[str, Any]:
    """``response`` as a ``text_completion`` object for a Completions client."""
    choice = {
        "text": _text(response.content),
        "index": 0,
        "logprobs": None,
        "finish_reason": _finish_reason(response.stop_reason),
    }
    body = {
        "id": response.id,
        "object": "text_completion",
        "created": int(time.time()) if response.created is None else response.created,
        "model": response.model,
        "choices": [choice],
        "usage": render_usage(response.usage),
    }
    return with_extra(body, response.extra, NAME)


# --------------------------------------------------------------------------------------------
# Streams


class StreamRenderer:
    """IR stream events to the SSE bytes a Completions client reads (A.4).

    Chunks have the response's shape with partial ``text``: an empty one at
    :class:`ir.StreamStart`, then one per text delta (reasoning and tool calls say nothing).
    :class:`ir.Finish` gives a chunk with the ``finish_reason``, then (when the request
    asked for usage, every chunk before it then carrying ``"usage": null``) a usage chunk
    with no choices, then ``[DONE]``. A :class:`ir.StreamError` becomes an
    ``{"error": ...}`` chunk. No ``event:`` lines; events after either end are dropped.
    """

    def __init__(self, request: ir.Request) -> None:
        self._include_usage = request.stream_usage
        self._head: dict[str, Any] | None = None
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
                created = int(time.time()) if event.created is None else event.created
                self._head = {
                    "id": event.id,
                    "object": "text_completion",
                    "created": created,
                    "model": event.model,
                }
                # An empty first chunk says at once which completion this is (and lets a
                # stream that fails before any text still name it).
                return self._chunk("")
            case ir.TextDelta(text=text) if text:
                return self._chunk(text)
            case ir.UsageUpdate():
                self._usage = event.usage
            case ir.Finish():
                self._ended = True
                out = self._chunk("", _finish_reason(event.stop_reason))
                if self._include_usage:
                    usage = {**self._start(), "choices": [], "usage": render_usage(self._usage)}
                    out += sse(dumps(usage))
                return out + sse("[DONE]")
            case ir.StreamError():
                self._ended = True
                error = MuxError(event.kind, event.message, status=event.status)
                return sse(dumps(render_error(error)))
        return b""

    def _start(self) -> dict[str, Any]:
        if self._head is None:
            raise ValueError("a stream must begin with StreamStart")
        return self._head

    def _chunk(self, text: str, finish_reason: str | None = None) -> bytes:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        chunk = {**self._start(), "choices": [choice]}
        if self._include_usage:
            chunk["usage"] = None
        return sse(dumps(chunk))


class StreamParser:
    """An upstream's Completions SSE bytes to IR stream events.

    The first choice's text is one part (index 0), ended at its ``finish_reason``. Usage
    and the finish are held until the usage chunk, ``[DONE]`` or :meth:`close`, and come
    out as :class:`ir.UsageUpdate` then :class:`ir.Finish`.

    Raises (from :meth:`feed` and :meth:`close`):
      UpstreamError: the bytes are not a Completions stream.
    """

    def __init__(self) -> None:
        self._sse = SSEDecoder()
        self._started = False
        self._open = False  # the text part is open
        self._finish: str | None = None
        self._usage: ir.Usage | None = None
        self._done = False

    def feed(self, data: bytes) -> list[ir.Event]:
        """The events the bytes ``data`` completed."""
        return self._decode(self._sse.feed, data)

    def close(self) -> list[ir.Event]:
        """End of the upstream body: the held finish, or an error if the stream broke off."""
        events = self._decode(lambda _: self._sse.close(), b"")
        return events if self._done else events + self._end()

    def _decode(self, decode: Callable[[bytes], list[SSEMessage]], data: bytes) -> list[ir.Event]:
        try:
            messages = decode(data)
        except FramingError as exc:
            message = f"malformed upstream stream: {exc}"
            raise UpstreamError(ir.ErrorKind.UPSTREAM, message) from exc
        return [event for message in messages for event in self._message(message.data)]

    def _message(self, data: str) -> list[ir.Event]:
        if self._done or not data.strip():
            return []
        if data.startswith("[DONE]"):
            return self._end()
        try:
            chunk = Node(loads(data), "", upstream_error)
        except FramingError as exc:
            message = f"malformed upstream chunk: {exc}"
            raise UpstreamError(ir.ErrorKind.UPSTREAM, message) from exc
        chunk.object()
        error = chunk["error"]
        if not error.absent and error.value:  # the SDK's test: a truthy "error"
            self._done = True
            return [stream_error(error.value)]
        events: list[ir.Event] = []
        if not self._started:
            self._started = True
            events.append(
                ir.StreamStart(
                    id=chunk["id"].optional(Node.string) or "",
                    model=chunk["model"].optional(Node.string) or "",
                    created=chunk["created"].optional(Node.integer),
                )
            )
        choices = chunk["choices"].optional(Node.array) or []
        for choice in choices:
            if (choice["index"].optional(Node.integer) or 0) != 0 or self._finish is not None:
                continue
            if text := choice["text"].optional(Node.string):
                self._open = True
                events.append(ir.TextDelta(index=0, text=text))
            if finish := choice["finish_reason"].optional(Node.string):
                events += self._close_part()
                self._finish = finish
        if not chunk["usage"].absent:
            self._usage = parse_usage(chunk["usage"])
            if self._finish is not None and not choices:  # OpenAI's closing usage chunk
                events += self._end()
        return events

    def _close_part(self) -> list[ir.Event]:
        if not self._open:
            return []
        self._open = False
        return [ir.PartEnd(index=0)]

    def _end(self) -> list[ir.Event]:
        self._done = True
        if self._finish is None:
            message = "the upstream stream ended without a finish reason"
            return [ir.StreamError(kind=ir.ErrorKind.UPSTREAM, message=message, status=502)]
        usage = [] if self._usage is None else [ir.UsageUpdate(usage=self._usage)]
        return [*usage, ir.Finish(stop_reason=_stop_reason(self._finish))]
