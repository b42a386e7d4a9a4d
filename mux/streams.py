"""Between whole responses and stream events: folding a stream, and splitting a response.

:func:`collect` folds an event sequence into the :class:`~mux.ir.Response` it describes (a
client that asked for a whole answer from an upstream that only streams); :func:`split` does
the reverse (a provider that has the whole answer, streamed to a client that asked for a
stream). Both keep the event grammar of :mod:`mux.ir`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import attrs

from mux import ir
from mux.errors import MuxError, UpstreamError

__all__ = ["StreamAccumulator", "collect", "split", "words"]

_P = TypeVar("_P", ir.Text, ir.Reasoning, ir.ToolCall)

_WORD = re.compile(r"\S+\s*|\s+")


def words(text: str) -> list[str]:
    """Split text into word-sized pieces that concatenate back to it."""
    return _WORD.findall(text) or [text]


def split(
    response: ir.Response, pieces: Callable[[str], list[str]] = words
) -> Iterator[ir.Event]:
    """The events of a stream that delivers ``response``, text cut by ``pieces``."""
    yield ir.StreamStart(id=response.id, model=response.model, created=response.created)
    for index, part in enumerate(response.content):
        match part:
            case ir.Text(text=text):
                for piece in pieces(text):
                    yield ir.TextDelta(index=index, text=piece)
            case ir.Reasoning():
                for piece in pieces(part.text) if part.text else ():
                    yield ir.ReasoningDelta(index=index, text=piece)
                if part.signature is not None or part.data is not None:
                    yield ir.ReasoningDelta(
                        index=index, signature=part.signature, data=part.data, redacted=part.redacted
                    )
            case ir.ToolCall():
                yield ir.ToolCallStart(
                    index=index, id=part.id, name=part.name, signature=part.signature
                )
                yield ir.ToolArgsDelta(index=index, json=part.arguments)
            case _:
                raise TypeError(f"a response cannot stream a {type(part).__name__} part")
        yield ir.PartEnd(index=index)
    yield ir.UsageUpdate(usage=response.usage)
    yield ir.Finish(stop_reason=response.stop_reason, stop_sequence=response.stop_sequence)


@attrs.define(eq=False)
class StreamAccumulator:
    """Folds events, one at a time, into a response (see :func:`collect`)."""

    _start: ir.StreamStart | None = None
    _parts: list[ir.Part] = attrs.Factory(list)
    _usage: ir.Usage = attrs.Factory(ir.Usage)
    _finish: ir.Finish | None = None

    def add(self, event: ir.Event) -> None:
        """Take one event.

        Raises:
          MuxError: the event is a StreamError (its kind, message and status).
          UpstreamError: the events break the stream grammar.
        """
        match event:
            case ir.StreamStart():
                self._start = event
            case ir.TextDelta(index=index, text=text):
                part = self._part(index, ir.Text(text=""), ir.Text)
                self._parts[index] = attrs.evolve(part, text=part.text + text)
            case ir.ReasoningDelta(index=index):
                part = self._part(index, ir.Reasoning(), ir.Reasoning)
                self._parts[index] = attrs.evolve(
                    part,
                    text=part.text + event.text,
                    signature=event.signature if event.signature is not None else part.signature,
                    data=event.data if event.data is not None else part.data,
                    redacted=part.redacted or event.redacted,
                )
            case ir.ToolCallStart(index=index):
                call = ir.ToolCall(
                    id=event.id, name=event.name, arguments="", signature=event.signature
                )
                if index != len(self._parts):
                    raise UpstreamError(ir.ErrorKind.UPSTREAM, f"tool call {index} opened twice")
                self._parts.append(call)
            case ir.ToolArgsDelta(index=index, json=fragment):
                part = self._part(index, None, ir.ToolCall)
                self._parts[index] = attrs.evolve(part, arguments=part.arguments + fragment)
            case ir.PartEnd():
                pass
            case ir.UsageUpdate(usage=usage):
                self._usage = usage
            case ir.Finish():
                self._finish = event
            case ir.StreamError(kind=kind, message=message, status=status):
                raise MuxError(kind, message, status=status)

    def _part(self, index: int, new: _P | None, kind: type[_P]) -> _P:
        """Part ``index``, which must be a ``kind``, opened as ``new`` if it is the next one."""
        if index < len(self._parts) and isinstance(self._parts[index], kind):
            return self._parts[index]  # type: ignore[return-value]
        if index != len(self._parts) or new is None:
            raise UpstreamError(
                ir.ErrorKind.UPSTREAM, f"stream part {index} arrived out of order or changed type"
            )
        self._parts.append(new)
        return new

    def response(self) -> ir.Response:
        """The response the events so far describe.

        Raises:
          UpstreamError: the stream never started or never finished.
        """
        if self._start is None or self._finish is None:
            raise UpstreamError(ir.ErrorKind.UPSTREAM, "the upstream stream ended before it finished")
        tool_arguments_fixed = [
            attrs.evolve(p, arguments=p.arguments or "{}") if isinstance(p, ir.ToolCall) else p
            for p in self._parts
        ]
        return ir.Response(
            id=self._start.id,
            model=self._start.model,
            created=self._start.created,
            content=tool_arguments_fixed,
            stop_reason=self._finish.stop_reason,
            stop_sequence=self._finish.stop_sequence,
            usage=self._usage,
        )


def collect(events: Iterable[ir.Event]) -> ir.Response:
    """The response a whole event sequence describes.

    Raises:
      MuxError: the stream carried a StreamError.
      UpstreamError: the stream is incomplete or out of order.
    """
    accumulator = StreamAccumulator()
    for event in events:
        accumulator.add(event)
    return accumulator.response()
