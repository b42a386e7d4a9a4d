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
from mux.config import FakeConfig, FakeRule, ModelAlias
from mux.errors import UpstreamError, kind_for_status
from mux.providers import Account

__all__ = ["FakeProvider", "estimate_input_tokens", "estimate_tokens", "newest_user_text"]

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


def estimate_input_tokens(request: ir.Request) -> int:
    """An estimate of a request's input tokens, from all its prompt text; at least 1."""
    texts = []
    for message in request.messages:
        texts.extend(_texts(message.content))
        texts.extend(p.arguments for p in message.content if isinstance(p, ir.ToolCall))
    texts.extend(json.dumps(t.parameters or {}) + t.name for t in request.tools)
    return max(1, estimate_tokens("".join(texts)))


def _stem(pattern: str) -> str | None:
    """The name a client can ask for that a glob stands for (``fake*`` → ``fake``), if any."""
    stem = _GLOB_CHARS.split(pattern, maxsplit=1)[0].rstrip("-_.:/")
    return stem if stem and fnmatch.fnmatchcase(stem, pattern) else None


# Not frozen: the AccountProvider protocol declares name, priority and weight as plain
# (settable) attributes, which a frozen class does not satisfy for a type checker.
@attrs.define(eq=False)
class FakeProvider:
    """Answers every model matching its model globs (or any model when ``serve_all``).

    The built-in provider (``[fake]``, no ``models`` given) serves ``config.models`` and any
    ``fake…`` name, and lists ``fake``; it sits in the lowest priority tier so that it never
    takes traffic from a configured upstream. A ``[[providers]]`` entry of type ``fake`` gives
    its own name, tier, weight and models (globs, or ``ModelAlias`` entries, whose ``alias``
    clients ask for and whose ``name`` the fake answers as).

    It is an :class:`~mux.providers.AccountProvider` with one pseudo-account named after it;
    ``account`` is optional in its methods so that it also works as a plain
    :class:`~mux.providers.Provider` (a Gateway without a router, in tests).
    """

    config: FakeConfig
    serve_all: bool = attrs.field(default=False, kw_only=True)
    name: str = attrs.field(default="fake", kw_only=True)
    #: The lowest tier by default: the fake is a last resort, never a competitor.
    priority: int = attrs.field(default=-1000, kw_only=True)
    weight: int = attrs.field(default=1, kw_only=True)
    #: Globs (or aliases) of the models served; None means ``config.models`` plus ``fake*``.
    models_served: Sequence[str | ModelAlias] | None = attrs.field(
        default=None, kw_only=True, alias="models"
    )

    def _patterns(self) -> Sequence[str | ModelAlias]:
        return self.config.models if self.models_served is None else self.models_served

    def accounts(self) -> Sequence[Account]:
        """One pseudo-account, named after the provider."""
        return (Account(provider=self.name, id=self.name),)

    def upstream_model(self, model: str) -> str | None:
        """``model`` itself if served (an alias: its target name), else None."""
        for entry in self._patterns():
            if isinstance(entry, ModelAlias):
                if model == (entry.alias or entry.name):
                    return entry.name
            elif fnmatch.fnmatchcase(model, entry):
                return model
        if self.serve_all or (self.models_served is None and model.startswith("fake")):
            return model
        return None

    def quota_scope(self, model: str) -> str | None:
        """Each model on its own, like an API key's."""
        return model

    def serves(self, model: str) -> bool:
        return self.upstream_model(model) is not None

    def models(self) -> Sequence[ir.ModelInfo]:
        """The names a client can ask for: literal names and aliases, each glob's stem if it
        matches the glob (``fake*`` → ``fake``), and ``fake`` for the built-in provider."""
        names: dict[str, None] = {"fake": None} if self.models_served is None else {}
        for entry in self._patterns():
            if isinstance(entry, ModelAlias):
                names[entry.alias or entry.name] = None
            elif (stem := _stem(entry)) is not None:
                names[stem] = None
        return [ir.ModelInfo(id=name, owned_by="mux-fake") for name in names]

    def _rule(self, text: str) -> FakeRule | None:
        for rule in self.config.rules:
            if re.search(rule.match, text):
                return rule
        return None

    async def complete(self, request: ir.Request, account: Account | None = None) -> ir.Response:
        return self._answer(request)

    async def count_tokens(self, request: ir.Request, account: Account | None = None) -> int:
        return estimate_input_tokens(request)

    async def stream(
        self, request: ir.Request, account: Account | None = None
    ) -> AsyncIterator[ir.Event]:
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
                # The scripted answer to this prompt, not a sign of the account's health:
                # the client gets it at once, and the next prompt is answered as usual.
                final=True,
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
                input_tokens=estimate_input_tokens(request),
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
