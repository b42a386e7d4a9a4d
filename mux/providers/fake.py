"""The built-in fake provider: scripted answers for demos, tests and CI pipelines.

It answers with the first ``[[fake.rules]]`` entry whose ``match`` is found in the newest
user turn (the newest message carrying user text or a tool result's content; system
messages, which some clients put last, are skipped), or echoes that text when no rule
matches. A rule can answer with reasoning, text and a tool call, or fail with an HTTP status.
Streams deliver text word by word, after ``first-token-ms`` and ``chunk-ms`` delays.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import attrs
import trio

from mux import ir, streams
from mux.config import FakeConfig, FakeRule
from mux.errors import UpstreamError, kind_for_status

__all__ = ["FakeProvider", "estimate_tokens", "newest_user_text"]

_GLOB_CHARS = re.compile(r"[*?\[]")


def estimate_tokens(text: str) -> int:
    """A plausible token count: about four characters a token, never zero for non-empty text."""
    return math.ceil(len(text) / 4)


def _texts(parts: Sequence[ir.Part]) -> list[str]:
    found = []
    for part in parts:
        if isinstance(part, ir.Text):
            found.append(part.text)
        elif isinstance(part, ir.ToolResult):
            found.extend(_texts(part.content))
    return found


def newest_user_text(messages: Sequence[ir.Message]) -> str:
    """The text of the newest message carrying user text or tool-result content."""
    for message in reversed(messages):
        if message.role in (ir.Role.USER, ir.Role.TOOL):
            texts = _texts(message.content)
            if texts:
                return "\n".join(texts)
    return ""


def _input_tokens(request: ir.Request) -> int:
    """An estimate of a request's input tokens, from all its prompt text; at least 1."""
    texts = []
    for message in request.messages:
        texts.extend(_texts(message.content))
        texts.extend(p.arguments for p in message.content if isinstance(p, ir.ToolCall))
    texts.extend(json.dumps(t.parameters or {}) + t.name for t in request.tools)
    return max(1, estimate_tokens("".join(texts)))


@attrs.frozen
class FakeProvider:
    """Answers every model matching ``config.models`` (or any model when ``serve_all``)."""

    config: FakeConfig
    serve_all: bool = False
    name: str = "fake"

    def serves(self, model: str) -> bool:
        return (
            self.serve_all
            or model.startswith("fake")
            or any(fnmatch.fnmatchcase(model, pattern) for pattern in self.config.models)
        )

    def models(self) -> Sequence[ir.ModelInfo]:
        """``fake``, the literal names in ``[fake] models``, and each pattern's stem if it
        matches the pattern (``fake*`` → ``fake``)."""
        names: dict[str, None] = {"fake": None}
        for pattern in self.config.models:
            stem = _GLOB_CHARS.split(pattern, maxsplit=1)[0].rstrip("-_.:/")
            if stem and fnmatch.fnmatchcase(stem, pattern):
                names[stem] = None
        return [ir.ModelInfo(id=name, owned_by="mux-fake") for name in names]

    def _rule(self, text: str) -> FakeRule | None:
        for rule in self.config.rules:
            if re.search(rule.match, text):
                return rule
        return None

    async def complete(self, request: ir.Request) -> ir.Response:
        return self._answer(request)

    async def count_tokens(self, request: ir.Request) -> int:
        return _input_tokens(request)

    async def stream(self, request: ir.Request) -> AsyncIterator[ir.Event]:
        response = self._answer(request)
        first = True
        for event in streams.split(response):
            if isinstance(event, (ir.TextDelta, ir.ReasoningDelta, ir.ToolCallStart)):
                delay = self.config.first_token_ms if first else self.config.chunk_ms
                first = False
                if delay:
                    await trio.sleep(delay / 1000)
            yield event

    def _answer(self, request: ir.Request) -> ir.Response:
        """The scripted response to ``request``.

        Raises:
          UpstreamError: the matching rule has a ``status``.
        """
        text = newest_user_text(request.messages)
        rule = self._rule(text)
        if rule is not None and rule.status is not None:
            raise UpstreamError(
                kind_for_status(rule.status),
                f"fake provider: the rule matching {rule.match!r} answers with status {rule.status}",
                status=rule.status,
            )
        reply = text if rule is None else rule.reply
        content: list[ir.Part] = []
        reasoning_tokens = 0
        if rule is not None and rule.reasoning:
            # An opaque signature, base64 like Anthropic's and Gemini's, so that clients which
            # insist on one (and replay it) accept the part.
            digest = hashlib.sha256(rule.reasoning.encode()).digest()
            content.append(
                ir.Reasoning(text=rule.reasoning, signature=base64.b64encode(digest).decode())
            )
            reasoning_tokens = estimate_tokens(rule.reasoning)
        stop_reason, stop_sequence = ir.StopReason.END_TURN, None
        if reply:
            reply, stop_reason, stop_sequence = _cut(reply, request)
            if reply:
                content.append(ir.Text(text=reply))
        if rule is not None and rule.tool_call is not None and stop_reason is ir.StopReason.END_TURN:
            content.append(
                ir.ToolCall(
                    id=f"call_{uuid.uuid4().hex[:24]}",
                    name=rule.tool_call.name,
                    arguments=json.dumps(rule.tool_call.arguments, separators=(",", ":")),
                )
            )
            stop_reason = ir.StopReason.TOOL_USE
        output = "".join(
            p.text if isinstance(p, (ir.Text, ir.Reasoning)) else getattr(p, "arguments", "")
            for p in content
        )
        return ir.Response(
            id=f"fake-{uuid.uuid4().hex}",
            model=request.model,
            created=int(time.time()),
            content=content,
            stop_reason=stop_reason,
            stop_sequence=stop_sequence,
            usage=ir.Usage(
                input_tokens=_input_tokens(request),
                output_tokens=estimate_tokens(output),
                reasoning_tokens=reasoning_tokens,
            ),
        )


def _cut(reply: str, request: ir.Request) -> tuple[str, ir.StopReason, str | None]:
    """Apply the request's stop sequences and token limit to a reply, as a model would."""
    for stop in request.stop:
        at = reply.find(stop) if stop else -1
        if at >= 0:
            return reply[:at], ir.StopReason.STOP_SEQUENCE, stop
    if request.max_tokens is not None and estimate_tokens(reply) > request.max_tokens:
        return reply[: request.max_tokens * 4], ir.StopReason.MAX_TOKENS, None
    return reply, ir.StopReason.END_TURN, None
