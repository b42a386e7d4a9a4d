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
from collections.abc import Sequence
from typing import Any

from mux import ir
from mux.errors import MuxError, RequestError
from mux.formats._json import (
    Node,
    extract_extra,
    present,
    request_error,
    upstream_error,
    with_extra,
)

# Completions shares Chat's usage object, error envelope and stream parser.
from mux.formats.openai_chat import StreamParser as _ChatStreamParser
from mux.formats.openai_chat import parse_error, parse_usage, render_error, render_usage
from mux.framing import dumps, sse

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


class StreamParser(_ChatStreamParser):
    """An upstream's Completions SSE bytes to IR stream events.

    Chat's parser, reading each chunk's ``text`` instead of its ``delta``: the first choice's
    text is one part (index 0), ended at its ``finish_reason``; usage and the finish are held
    until the usage chunk, ``[DONE]`` or :meth:`close`.

    Raises (from :meth:`feed` and :meth:`close`):
      UpstreamError: the bytes are not a Completions stream.
    """

    def _choice(self, choice: Node) -> list[ir.Event]:
        events: list[ir.Event] = []
        if text := choice["text"].optional(Node.string):
            events.append(ir.TextDelta(index=self._open("text", events), text=text))
        return events

