"""Gemini CLI subscriptions (Gemini Code Assist for individuals, Google AI Pro/Ultra): Gemini
CLI's OAuth client and the Code Assist API.

Everything but the data is :mod:`mux.providers.code_assist`'s: Google's installed-app login
(redirect to ``localhost:8085/oauth2callback``), project discovery and onboarding, the
``v1internal`` envelope both ways, quota answers. Gemini CLI's headers
(:data:`mux.providers.catalog.GEMINI_CLI`) go with every call; each model has its own limits
(the default :meth:`quota_scope`).

``mux import gemini-cli`` reads Gemini CLI's ``~/.gemini/oauth_creds.json`` (``access_token``,
``refresh_token``, ``expiry_date`` in milliseconds, ``id_token``, ...); the account is the
id_token's email, else the ``active`` account of ``google_accounts.json`` beside it. An
imported account finds its project at its first request.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mux.auth import AuthFileError, Accounts, Credentials, Refresher, read_json
from mux.config import ProviderConfig
from mux.oauth import LoginContext
from mux.providers import code_assist
from mux.providers.catalog import GEMINI_CLI
from mux.upstream import HttpClient, Upstreams

__all__ = [
    "SERVICE",
    "GeminiCliProvider",
    "import_credentials",
    "login",
    "provider",
    "refresher",
]

SERVICE = code_assist.Service(kind="gemini-cli", data=GEMINI_CLI, headers=GEMINI_CLI.HEADERS)


async def login(ctx: LoginContext, *, clock: Callable[[], float] = time.time) -> Credentials:
    """Google's installed-app login with Gemini CLI's client, then the project.

    Raises:
      LoginError: refused, timed out, or the token exchange failed.
    """
    return await code_assist.login(ctx, SERVICE, clock=clock)


def refresher(
    http: HttpClient, urls: Mapping[str, str], *, clock: Callable[[], float] = time.time
) -> Refresher:
    """Refreshes a Gemini CLI token; ``invalid_grant`` raises RevokedError."""
    return code_assist.refresher(SERVICE, http, urls, clock=clock)


def import_credentials(path: Path | None = None) -> list[Credentials]:
    """The login Gemini CLI saved in ``~/.gemini/oauth_creds.json``.

    Raises:
      AuthFileError: not JSON, not an object, or a key missing or of the wrong type (named,
        never its value).
      OSError: the file cannot be read.
    """
    path = Path(path or Path(GEMINI_CLI.IMPORT_PATH).expanduser())
    data = read_json(path)
    if not isinstance(data, dict):
        raise AuthFileError(f"{path}: (top level): expected an object (is this Gemini CLI's "
                            "oauth_creds.json?)")
    access = data.get("access_token")
    if not isinstance(access, str) or not access:
        raise AuthFileError(f"{path}: access_token: expected a non-empty string")
    refresh = data.get("refresh_token")
    if refresh is not None and (not isinstance(refresh, str) or not refresh):
        raise AuthFileError(f"{path}: refresh_token: expected a non-empty string")
    expiry = data.get("expiry_date")
    if expiry is not None and (isinstance(expiry, bool) or not isinstance(expiry, (int, float))):
        raise AuthFileError(f"{path}: expiry_date: expected milliseconds")
    email = code_assist.email_of(data.get("id_token")) or _active_account(path)
    extras: dict[str, Any] = {"email": email} if email else {}
    if isinstance(data.get("scope"), str):
        extras["scopes"] = data["scope"]
    name = email or "gemini-" + hashlib.sha256((refresh or access).encode()).hexdigest()[:12]
    return [Credentials(
        provider="gemini-cli", account=name, access_token=access, refresh_token=refresh,
        expires_at=None if expiry is None else float(expiry) / 1000, extras=extras,
    )]


def _active_account(credentials_path: Path) -> str | None:
    """``active`` of the ``google_accounts.json`` beside the token file, if any."""
    try:
        data = read_json(credentials_path.parent / GEMINI_CLI.ACCOUNTS_FILE)
    except (OSError, AuthFileError, UnicodeDecodeError):
        return None
    active = data.get("active") if isinstance(data, dict) else None
    return active if isinstance(active, str) and active else None


class GeminiCliProvider(code_assist.CodeAssistProvider):
    """Gemini CLI subscription accounts; see the module docstring."""

    kind = "gemini-cli"
    service = SERVICE
    default_models = GEMINI_CLI.MODELS


def provider(
    config: ProviderConfig, upstreams: Upstreams, accounts: Accounts
) -> GeminiCliProvider:
    """The provider of a ``type = "gemini-cli"`` entry."""
    return GeminiCliProvider(config, upstreams, accounts)
