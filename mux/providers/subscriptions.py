"""Subscription providers: Claude Pro/Max, ChatGPT (Codex), Copilot, Gemini CLI and Antigravity
plans as upstreams.

Each kind of subscription (:data:`REGISTRY`) is a :class:`SubscriptionKind`: how to log in
(``mux login``), how to refresh a token, how to import what the vendor's own CLI saved
(``mux import``), and the provider that answers requests with the accounts of that kind.

Theory of operation
-------------------
* **Accounts are files.** The accounts live in the auth dir (:class:`mux.auth.Accounts`); a
  :class:`SubscriptionProvider` holds none of its own. Its :meth:`~SubscriptionProvider.accounts`
  are read live from ``accounts.keepers(kind)`` at each call, so a login, an import, a copied
  file or a removed one changes what the router sees at once. An :class:`~mux.providers.Account`
  carries the account's name (email or id) and no secret: the token is fetched per call with
  :meth:`~mux.auth.TokenKeeper.fresh`, which refreshes it first when it is due.
* **Refusals.** An upstream 401 means the token died early (revoked by another login, rotated
  elsewhere): the provider forces one refresh (:meth:`~mux.auth.TokenKeeper.refresh`, single
  flight: concurrent requests share it) and retries once. A refresh answering
  ``invalid_grant`` raises :class:`~mux.auth.RevokedError`, an AUTHENTICATION error naming the
  account; the router cools the account and ``keepers`` no longer lists it.
* **Wire.** Everything else (rendering, same-format forwarding, streams held back until the
  first content event, errors and their ``retry_after``, secret scrubbing: the token is the
  account's secret for the length of the call) is :class:`~mux.providers.api.ApiProvider`'s;
  each kind's module adds its URLs, headers and body rules through ApiProvider's hooks.
* **Configuration.** A ``[[providers]]`` entry of a subscription type is optional: it names
  the kind's accounts for routing (priority, weight, models, proxy-url, timeouts) and may
  point its URLs elsewhere (:func:`endpoint_urls`). Every registered kind without an entry
  gets a provider with defaults, named after the kind; a provider without accounts serves
  and lists no model.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any, ClassVar

import attrs

from mux import ir
from mux.auth import Accounts, Credentials, Refresher, TokenKeeper
from mux.config import SUBSCRIPTION_TYPES, Config, ProviderConfig
from mux.errors import MuxError, UpstreamError
from mux.providers import Account, AccountProvider
from mux.providers import catalog
from mux.providers.api import ApiProvider
from mux.oauth import LoginContext, url_overrides
from mux.upstream import HttpClient, Upstreams

__all__ = [
    "REGISTRY",
    "SubscriptionKind",
    "SubscriptionProvider",
    "config_entry",
    "endpoint_urls",
    "refreshers",
    "subscription_providers",
]

log = logging.getLogger("mux.providers")


@attrs.frozen(kw_only=True)
class SubscriptionKind:
    """One kind of subscription: its login, refresh, import and provider."""

    name: str
    #: Logs in interactively (:class:`mux.oauth.LoginContext`; its ``urls`` override the
    #: kind's); returns the new account's credentials, not yet saved.
    login: Callable[[LoginContext], Awaitable[Credentials]]
    #: The token refresher for :class:`mux.auth.Accounts`, given the HTTP client and URLs.
    refresher: Callable[[HttpClient, Mapping[str, str]], Refresher]
    #: Reads the vendor CLI's own token file (None: :attr:`default_import_path`).
    #: Raises ValueError naming the file and the bad key (never a value).
    import_credentials: Callable[[Path | None], list[Credentials]]
    #: None: the vendor's tool saves no token file mux can read.
    default_import_path: Path | None
    #: The provider serving this kind's accounts under a ``[[providers]]`` entry.
    provider: Callable[[ProviderConfig, Upstreams, Accounts], AccountProvider]
    #: The catalog's default URLs (the names a config's ``urls`` may override).
    urls: Mapping[str, str] = attrs.field(factory=dict)


def _late(module: str, name: str) -> Callable[..., Any]:
    """``mux.providers.<module>.<name>``, imported at the first call: the kinds' modules
    import this one, and a kind is loaded only when used."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(f"mux.providers.{module}"), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = f"{module}.{name}"
    return call


def _kind(name: str, module: str, data: type) -> SubscriptionKind:
    return SubscriptionKind(
        name=name,
        login=_late(module, "login"),
        refresher=_late(module, "refresher"),
        import_credentials=_late(module, "import_credentials"),
        default_import_path=(
            Path(data.IMPORT_PATH).expanduser()  # type: ignore[attr-defined]
            if data.IMPORT_PATH is not None else None  # type: ignore[attr-defined]
        ),
        provider=_late(module, "provider"),
        urls=dict(data.URLS),  # type: ignore[attr-defined]
    )


#: The kinds mux can log in to and serve.
REGISTRY: dict[str, SubscriptionKind] = {
    "claude": _kind("claude", "claude", catalog.CLAUDE),
    "codex": _kind("codex", "codex", catalog.CODEX),
    "copilot": _kind("copilot", "copilot", catalog.COPILOT),
    "gemini-cli": _kind("gemini-cli", "gemini_cli", catalog.GEMINI_CLI),
    "antigravity": _kind("antigravity", "antigravity", catalog.ANTIGRAVITY),
}


def endpoint_urls(kind: str, entry: ProviderConfig | None = None) -> dict[str, str]:
    """The kind's URLs by name (the catalog's ``URLS``), overridden by the entry's
    ``base-url``, ``oauth-authorize-url``, ``oauth-token-url``, ``oauth-device-url`` and
    ``urls`` (:func:`mux.oauth.url_overrides`).

    Raises:
      KeyError: ``kind`` is not in :data:`REGISTRY`.
    """
    return dict(REGISTRY[kind].urls) | url_overrides(entry)


def config_entry(config: Config, kind: str) -> ProviderConfig | None:
    """The first ``[[providers]]`` entry of type ``kind`` (it sets the kind's URLs)."""
    return next((e for e in config.providers if e.type == kind), None)


def refreshers(config: Config, upstreams: Upstreams) -> dict[str, Refresher]:
    """A token refresher per registered kind, for :class:`mux.auth.Accounts`: each uses the
    URLs and proxy of the kind's first ``[[providers]]`` entry, if it has one."""
    found = {}
    for name, kind in REGISTRY.items():
        entry = config_entry(config, name)
        http = upstreams.client(entry.proxy_url if entry else None, provider=name)
        found[name] = kind.refresher(http, endpoint_urls(name, entry))
    return found


def subscription_providers(
    config: Config, upstreams: Upstreams, accounts: Accounts
) -> list[AccountProvider]:
    """One provider per ``[[providers]]`` entry of a registered subscription type, in order,
    then one with defaults (named after the kind) for each kind without an entry. Entries of
    subscription types mux cannot serve yet are logged and skipped."""
    providers: list[AccountProvider] = []
    for entry in config.providers:
        if entry.type in REGISTRY:
            providers.append(REGISTRY[entry.type].provider(entry, upstreams, accounts))
        elif entry.type in SUBSCRIPTION_TYPES:
            log.warning("%s: %s subscriptions are not supported yet: the entry is ignored",
                        entry.name, entry.type)
    taken = {entry.name for entry in config.providers}
    for name, kind in REGISTRY.items():
        if any(entry.type == name for entry in config.providers):
            continue
        default = ProviderConfig(name=name if name not in taken else f"mux-{name}", type=name)
        providers.append(kind.provider(default, upstreams, accounts))
    return providers


class SubscriptionProvider(ApiProvider):
    """A ``[[providers]]`` entry of a subscription type, serving the auth dir's accounts of
    that kind; see the module docstring. Subclasses set :attr:`kind`, :attr:`api` and
    :attr:`default_models` and shape requests through ApiProvider's hooks.

    Args:
      config: the entry (or a default one).
      upstreams: the shared HTTP clients.
      accounts: the live accounts of the auth dir.
    """

    #: The kind of subscription (a REGISTRY key).
    kind: ClassVar[str]
    #: The API the service speaks (an ApiProvider type).
    api: ClassVar[str]
    #: Served when the entry lists no models.
    default_models: ClassVar[Sequence[str]] = ()

    def __init__(self, config: ProviderConfig, upstreams: Upstreams, accounts: Accounts) -> None:
        super().__init__(config, upstreams, api=self.api)
        self._live = accounts
        self.urls = endpoint_urls(self.kind, config)
        self._base = self.urls["base-url"].rstrip("/")
        if not self._models:
            self._models = {name: name for name in self.default_models}
        self._accounts = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # ----------------------------------------------------------------------------------------
    # Accounts and models: live from the auth dir

    def accounts(self) -> Sequence[Account]:
        return [Account(provider=self.name, id=k.account) for k in self._live.keepers(self.kind)]

    def models(self) -> Sequence[ir.ModelInfo]:
        return super().models() if self._live.keepers(self.kind) else []

    def upstream_model(self, model: str) -> str | None:
        return super().upstream_model(model) if self._live.keepers(self.kind) else None

    async def discover(self) -> list[str]:
        log.warning("%s: %s subscriptions have no model listing", self.name, self.kind)
        return []

    def keeper(self, account: Account) -> TokenKeeper:
        """The live keeper of ``account``.

        Raises:
          UpstreamError: AUTHENTICATION: the account is gone (its file was removed) or revoked.
        """
        for keeper in self._live.keepers(self.kind):
            if keeper.account == account.id:
                return keeper
        raise UpstreamError(
            ir.ErrorKind.AUTHENTICATION,
            f"{self.name}: {self.kind} account {account.id} is no longer usable (removed or "
            f"revoked): run `mux login {self.kind}`",
        )

    def credentials(self, account: Account) -> Credentials:
        """The newest credentials of ``account`` (for the extras a request needs)."""
        return self.keeper(account).credentials

    # ----------------------------------------------------------------------------------------
    # Every call with a fresh token; a 401 refreshes once and retries

    async def _token(self, account: Account, *, stale: str | None = None) -> Account:
        """``account`` carrying a fresh access token as its secret (scrubbed from errors).

        Raises:
          RevokedError: AUTHENTICATION, naming the account (routing skips it from now on).
          RefreshError: UPSTREAM: the token expired and the refresh failed (retried later).
        """
        keeper = self.keeper(account)
        if stale is None:
            credentials = await keeper.fresh()
        else:
            credentials = await keeper.refresh(stale=stale)
        return attrs.evolve(account, secret=credentials.access_token)

    async def complete(self, request: ir.Request, account: Account) -> ir.Response:
        authed = await self._token(account)
        try:
            return await super().complete(request, authed)
        except MuxError as error:
            if not _unauthorized(error):
                raise
        authed = await self._token(account, stale=authed.secret)
        return await super().complete(request, authed)

    async def stream(self, request: ir.Request, account: Account) -> AsyncIterator[ir.Event]:
        authed = await self._token(account)
        for retry in (False, True):
            async with aclosing(super().stream(request, authed)) as events:
                try:
                    first = await anext(events, None)
                except MuxError as error:
                    if retry or not _unauthorized(error):
                        raise
                    authed = await self._token(account, stale=authed.secret)
                    continue
                if first is None:
                    return
                yield first
                async for event in events:
                    yield event
                return

    async def count_tokens(self, request: ir.Request, account: Account) -> int:
        authed = await self._token(account)
        try:
            return await super().count_tokens(request, authed)
        except MuxError as error:
            if not _unauthorized(error):
                raise
        authed = await self._token(account, stale=authed.secret)
        return await super().count_tokens(request, authed)

    def _auth_headers(self, account: Account) -> dict[str, str]:
        return {"authorization": f"Bearer {account.secret}"} if account.secret else {}


def _unauthorized(error: MuxError) -> bool:
    """An upstream's 401: the token is no longer accepted."""
    return error.status == 401 and error.kind is ir.ErrorKind.AUTHENTICATION
