"""Upstream providers: where a request in the IR gets its answer.

A provider is anything with this shape (:class:`Provider`); the routes layer picks the one that
serves the request's model and never looks inside it. Providers speak the IR only: turning
the IR into a vendor's wire format is the job of that format's module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from mux import ir

__all__ = ["Provider"]


class Provider(Protocol):
    """An upstream that answers IR requests."""

    #: A name for logs and error messages (never a secret).
    name: str

    def models(self) -> Sequence[ir.ModelInfo]:
        """The models to show in model lists."""

    def serves(self, model: str) -> bool:
        """Whether a request for ``model`` should come here."""

    async def complete(self, request: ir.Request) -> ir.Response:
        """Answer ``request`` whole.

        Raises:
          MuxError: the provider failed or refused; the error says how.
        """

    def stream(self, request: ir.Request) -> AsyncIterator[ir.Event]:
        """Answer ``request`` as stream events (an async generator; close it to cancel).

        Errors before the first event raise :class:`~mux.errors.MuxError` from the first
        ``__anext__``; later failures arrive as a final :class:`~mux.ir.StreamError`.
        """
