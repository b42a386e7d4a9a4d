"""Upstream providers: where a request in the IR gets its answer.

Two shapes:

* :class:`Provider` is what the routes layer talks to: something that serves models and answers
  IR requests. The router (``mux.router``) is one, in front of every configured upstream.
* :class:`AccountProvider` is one configured upstream (``[[providers]]``): a vendor's API
  reached with one of several accounts (:class:`Account`), chosen per request by the router.

Providers speak the IR only: turning the IR into a vendor's wire format is the job of that
format's module (``mux.formats``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import attrs

from mux import ir

__all__ = ["Account", "AccountProvider", "Provider"]


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

    async def count_tokens(self, request: ir.Request) -> int:
        """The input tokens ``request`` would use (the provider's own count where it has
        one, else an estimate).

        Raises:
          MuxError: the provider failed or refused.
        """

    def stream(self, request: ir.Request) -> AsyncIterator[ir.Event]:
        """Answer ``request`` as stream events (an async generator; close it to cancel).

        Errors before the first event raise :class:`~mux.errors.MuxError` from the first
        ``__anext__``; later failures arrive as a final :class:`~mux.ir.StreamError`.
        """


@attrs.frozen(kw_only=True)
class Account:
    """One account of a provider: an API key (or an OAuth token, for subscriptions).

    ``id`` names it in logs, errors and status output (``openai#2``, an email); ``secret``
    never appears in any of them (it is left out of ``repr``).
    """

    provider: str
    id: str
    secret: str = attrs.field(default="", repr=False)


class AccountProvider(Protocol):
    """One configured upstream, reached through one of its accounts."""

    #: The ``[[providers]]`` entry's name.
    name: str
    #: Higher tiers are tried first.
    priority: int
    #: Share of requests within a tier.
    weight: int

    def accounts(self) -> Sequence[Account]:
        """The accounts requests may use, in configured order."""

    def models(self) -> Sequence[ir.ModelInfo]:
        """The models clients may ask this provider for (aliases included)."""

    def upstream_model(self, model: str) -> str | None:
        """The upstream's name for the client-facing ``model``, or None if not served here."""

    def quota_scope(self, model: str) -> str | None:
        """What a rate-limit or quota refusal for the upstream ``model`` covers, as the
        provider scopes its limits: ``model`` itself (each model has its own limit), a family
        name (one limit shared by several models), or None (the whole account)."""

    async def complete(self, request: ir.Request, account: Account) -> ir.Response:
        """Answer ``request`` (whose model is already the upstream's name) whole.

        Raises:
          MuxError: the upstream failed or refused; kind, status and retry_after say how.
        """

    def stream(self, request: ir.Request, account: Account) -> AsyncIterator[ir.Event]:
        """Answer ``request`` as stream events; errors as in :meth:`Provider.stream`."""

    async def count_tokens(self, request: ir.Request, account: Account) -> int:
        """The input tokens of ``request``: the upstream's count, or an estimate."""
