"""Google Antigravity subscriptions: Antigravity's OAuth client and its Code Assist models
(Gemini 3, Claude, GPT-OSS).

Login, refresh, the project and the ``v1internal`` envelope are
:mod:`mux.providers.code_assist`'s, with Antigravity's client, scopes (Gemini CLI's plus
``cclog`` and ``experimentsandconfigs``) and redirect (``localhost:51121/oauth-callback``).
What is Antigravity's own (:data:`mux.providers.catalog.ANTIGRAVITY`):

* the envelope adds ``userAgent: "antigravity"``, ``requestType: "agent"`` and a fresh
  ``requestId: "agent-<uuid>"``; inside ``request``, ``sessionId`` is derived from the
  conversation's first user text (the same for every turn of one conversation, which keeps
  the upstream's prompt cache warm);
* Claude models take a tool's ``parametersJsonSchema`` only as ``parameters`` (cleaned to
  Gemini's schema subset);
* the user agent ``antigravity/<version> <os>/<arch>`` (the catalog's version, this machine's
  OS and architecture);
* two base URLs, daily then prod: a connection failure, a 5xx or "no capacity" moves to the
  next (:meth:`CodeAssistProvider._falling_back`), before any content reached the client;
* its limits cover a model family (:attr:`ANTIGRAVITY.QUOTA_FAMILIES`): a quota refusal for
  ``gemini-3-pro-high`` cools ``gemini-3-pro-low`` too (:meth:`quota_scope`).

Left out on purpose: the gzip of request bodies, the Antigravity identity system prompt, the
generation defaults and stop sequences the app adds, and the paid-credit fallback: none is
needed to be served, and mux sends nothing whose only purpose is to imitate the app.

The Antigravity app keeps its login in the IDE's own state database, not in a token file:
``mux import antigravity`` says so (``mux login antigravity`` it is).
"""

from __future__ import annotations

import platform
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any

from mux import ir
from mux.auth import Accounts, Credentials, Refresher
from mux.config import ProviderConfig
from mux.errors import MuxError
from mux.formats import gemini
from mux.oauth import LoginContext
from mux.providers import Account, code_assist
from mux.providers.catalog import ANTIGRAVITY
from mux.upstream import HttpClient, Upstreams

__all__ = [
    "SERVICE",
    "AntigravityProvider",
    "import_credentials",
    "login",
    "provider",
    "quota_family",
    "refresher",
    "user_agent",
]


def user_agent() -> str:
    """``antigravity/<catalog version> <os>/<arch>`` of this machine."""
    os_name = {"darwin": "darwin", "win32": "windows"}.get(sys.platform, "linux")
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine or "unknown")
    return ANTIGRAVITY.USER_AGENT.format(version=ANTIGRAVITY.VERSION, os=os_name, arch=arch)


SERVICE = code_assist.Service(kind="antigravity", data=ANTIGRAVITY,
                              headers={"user-agent": user_agent()})


async def login(ctx: LoginContext, *, clock: Callable[[], float] = time.time) -> Credentials:
    """Google's installed-app login with Antigravity's client, then the project.

    Raises:
      LoginError: refused, timed out, or the token exchange failed.
    """
    return await code_assist.login(ctx, SERVICE, clock=clock)


def refresher(
    http: HttpClient, urls: Mapping[str, str], *, clock: Callable[[], float] = time.time
) -> Refresher:
    """Refreshes an Antigravity token; ``invalid_grant`` raises RevokedError."""
    return code_assist.refresher(SERVICE, http, urls, clock=clock)


def import_credentials(path: Path | None = None) -> list[Credentials]:
    """Antigravity saves no token file mux can read.

    Raises:
      ValueError: always, saying so.
    """
    raise ValueError("the Antigravity app keeps its login in its own state database, not in "
                     "a token file mux can import; run `mux login antigravity` instead")


def quota_family(model: str) -> str:
    """The family whose limit ``model`` shares (:attr:`ANTIGRAVITY.QUOTA_FAMILIES`), else the
    model itself."""
    name = code_assist.gemini_model(model)
    for prefix, family in ANTIGRAVITY.QUOTA_FAMILIES:
        if name.startswith(prefix):
            return family
    return name


def _claude_tools(tools: Any) -> Any:
    """``tools`` with each declaration's ``parametersJsonSchema`` as (cleaned) ``parameters``:
    Claude models behind Antigravity read only that."""
    if not isinstance(tools, list):
        return tools
    out = []
    for tool in tools:
        declarations = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        if not isinstance(declarations, list):
            out.append(tool)
            continue
        renamed = []
        for declaration in declarations:
            if isinstance(declaration, dict) and "parametersJsonSchema" in declaration:
                declaration = dict(declaration)
                schema = declaration.pop("parametersJsonSchema")
                declaration.setdefault("parameters", gemini.clean_schema(schema))
            renamed.append(declaration)
        out.append({**tool, "functionDeclarations": renamed})
    return out


class AntigravityProvider(code_assist.CodeAssistProvider):
    """Antigravity subscription accounts; see the module docstring."""

    kind = "antigravity"
    service = SERVICE
    default_models = ANTIGRAVITY.MODELS

    def quota_scope(self, model: str) -> str | None:
        return quota_family(model)

    def _envelope(self, body: dict[str, Any], request: ir.Request) -> dict[str, Any]:
        return {**ANTIGRAVITY.ENVELOPE, "requestId": f"agent-{uuid.uuid4()}"}

    def _inner(self, body: dict[str, Any], request: ir.Request) -> dict[str, Any]:
        body = dict(body)
        session = code_assist.session_id(body, ANTIGRAVITY.SESSION_PREFIX)
        if session is not None:
            body["sessionId"] = session
        if code_assist.gemini_model(request.model).startswith("claude") and "tools" in body:
            body["tools"] = _claude_tools(body["tools"])
        return body

    async def complete(self, request: ir.Request, account: Account) -> ir.Response:
        parent = super()
        return await self._falling_back(lambda: parent.complete(request, account))

    async def count_tokens(self, request: ir.Request, account: Account) -> int:
        parent = super()
        return await self._falling_back(lambda: parent.count_tokens(request, account))

    async def stream(self, request: ir.Request, account: Account) -> AsyncIterator[ir.Event]:
        """As the parent's, moving to the next base URL on a base's failure before the first
        event (after it, the client has content: failures are the stream's)."""
        parent = super()
        for i in range(max(len(self._bases), 1)):
            base = self._base
            async with aclosing(parent.stream(request, account)) as events:
                try:
                    first = await anext(events, None)
                except MuxError as error:
                    if not code_assist.base_failure(error):
                        raise
                    if i + 1 >= len(self._bases):
                        raise code_assist.overloaded(error) from None
                    self._next_base(base, error)
                    continue
                if first is None:
                    return
                yield first
                async for event in events:
                    yield event
                return


def provider(
    config: ProviderConfig, upstreams: Upstreams, accounts: Accounts
) -> AntigravityProvider:
    """The provider of a ``type = "antigravity"`` entry."""
    return AntigravityProvider(config, upstreams, accounts)
