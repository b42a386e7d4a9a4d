"""Claude Pro/Max subscriptions: Claude Code's OAuth login and the Messages API with its token.

Login is OAuth 2 with PKCE (S256) against Claude's authorize page; the redirect goes to the
loopback port registered for Claude Code's client, or the user pastes the ``code#state`` the
page shows. Tokens come from (and refresh at) a JSON token endpoint; the answer names the
account (``account.email_address``). Refresh tokens rotate: :mod:`mux.auth` saves each new one
before it is used.

Requests go to ``{base}/v1/messages?beta=true`` with the token as a Bearer and with what the
OAuth API requires of a Claude Code client (:meth:`ClaudeProvider._shape`):

* ``anthropic-beta`` always includes ``oauth-2025-04-20``: the client's betas (header and the
  body's ``betas``, which move to the header) plus it, or Claude Code's default set;
* the Claude Code identity as the first system block, the caller's system blocks after it
  (a system prompt that already opens with a known Claude Code / Agent SDK identity, as Claude
  Code's own does, is left as it is);
* ``metadata.user_id`` in Claude Code's JSON-string form (a client's own is kept).

Everything else is ApiProvider's same-format forwarding: a Claude Code client's body goes
through byte for byte in every field mux does not have to change, thinking signatures
included. Quota answers (429 with ``retry-after``, the ``anthropic-ratelimit-unified-*-reset``
headers) become the account's cooldown through :func:`mux.providers.api.retry_after`.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mux import ir
from mux.auth import AuthFileError, Accounts, Credentials, RefreshError, Refresher, RevokedError
from mux.auth import read_json
from mux.config import ProviderConfig
from mux.oauth import LoginContext, LoginError, pkce, post_token, state_token
from mux.providers import Account
from mux.providers.catalog import CLAUDE
from mux.providers.subscriptions import SubscriptionProvider
from mux.upstream import HttpClient, Upstreams

__all__ = [
    "ClaudeProvider",
    "authorize_url",
    "import_credentials",
    "login",
    "provider",
    "refresher",
    "with_identity",
]


# --------------------------------------------------------------------------------------------
# Tokens


def _credentials(
    token: Mapping[str, Any], *, now: float, old: Credentials | None = None
) -> Credentials:
    """Credentials from a token endpoint's answer (a login's, or a refresh's of ``old``).

    Raises:
      RefreshError: the answer has no access token.
    """
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise RefreshError("the token endpoint's answer has no access_token")
    refresh = token.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:  # not rotated: the old one stays valid
        refresh = old.refresh_token if old else None
    expires_in = token.get("expires_in")
    expires_at = None
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool):
        expires_at = now + float(expires_in)
    account = token.get("account") if isinstance(token.get("account"), dict) else {}
    organization = token.get("organization") if isinstance(token.get("organization"), dict) else {}
    found = {
        "email": account.get("email_address"),
        "account_uuid": account.get("uuid"),
        "organization_uuid": organization.get("uuid"),
        "organization_name": organization.get("name"),
        "scopes": token.get("scope"),
    }
    extras = dict(old.extras) if old else {}
    extras |= {k: v for k, v in found.items() if isinstance(v, str) and v}
    if old is not None:
        name = old.account
    else:
        name = extras.get("email") or extras.get("account_uuid") or _anonymous(refresh or access)
    return Credentials(provider="claude", account=name, access_token=access,
                       refresh_token=refresh, expires_at=expires_at, extras=extras)


def _anonymous(token: str) -> str:
    """A stable account name when the vendor names none (never the token itself)."""
    return "claude-" + hashlib.sha256(token.encode()).hexdigest()[:12]


def authorize_url(urls: Mapping[str, str], *, challenge: str, state: str) -> str:
    """The authorize page's URL for one login."""
    params = {
        **CLAUDE.AUTHORIZE_PARAMS,
        "client_id": CLAUDE.CLIENT_ID,
        "response_type": "code",
        "redirect_uri": urls["redirect-uri"],
        "scope": " ".join(CLAUDE.SCOPES),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
    }
    base = urls["oauth-authorize-url"]
    return base + ("&" if "?" in base else "?") + urllib.parse.urlencode(params)


async def login(ctx: LoginContext, *, clock: Callable[[], float] = time.time) -> Credentials:
    """Log in in the browser (the redirect, or a pasted ``code#state``).

    Raises:
      LoginError: refused, timed out, or the token exchange failed.
    """
    urls = {**CLAUDE.URLS, **ctx.urls}
    verifier, challenge = pkce()
    state = state_token()
    redirect = urllib.parse.urlsplit(urls["redirect-uri"])
    code = await ctx.receive_code(
        authorize_url(urls, challenge=challenge, state=state),
        port=redirect.port or 80, path=redirect.path or "/", state=state,
    )
    code, _, _ = code.partition("#")  # the page's form is code#state
    try:
        token = await post_token(ctx.http, urls["oauth-token-url"], json={
            "code": code,
            "state": state,
            "grant_type": "authorization_code",
            "client_id": CLAUDE.CLIENT_ID,
            "redirect_uri": urls["redirect-uri"],
            "code_verifier": verifier,
        })
        return _credentials(token, now=clock())
    except (RevokedError, RefreshError) as exc:
        raise LoginError(f"the token exchange failed: {exc.message}") from None


def refresher(
    http: HttpClient, urls: Mapping[str, str], *, clock: Callable[[], float] = time.time
) -> Refresher:
    """Refreshes a Claude token (JSON body); ``invalid_grant`` raises RevokedError."""
    token_url = {**CLAUDE.URLS, **urls}["oauth-token-url"]

    async def refresh(credentials: Credentials) -> Credentials:
        if not credentials.refresh_token:
            raise RevokedError(f"claude account {credentials.account} has no refresh token")
        token = await post_token(http, token_url, json={
            "grant_type": "refresh_token",
            "refresh_token": credentials.refresh_token,
            "client_id": CLAUDE.CLIENT_ID,
        })
        return _credentials(token, now=clock(), old=credentials)

    return refresh


# --------------------------------------------------------------------------------------------
# Claude Code's own files


def import_credentials(path: Path | None = None) -> list[Credentials]:
    """The login Claude Code saved in ``~/.claude/.credentials.json`` (``claudeAiOauth``:
    accessToken, refreshToken, expiresAt in ms, scopes, subscriptionType). The email comes
    from Claude Code's profile ``~/.claude.json`` next to it when there is one.

    Raises:
      AuthFileError: unreadable, not JSON, or a key missing or of the wrong type (named,
        never its value).
      OSError: the file cannot be read.
    """
    path = Path(path or Path(CLAUDE.IMPORT_PATH).expanduser())
    data = read_json(path)
    entry = data.get("claudeAiOauth") if isinstance(data, dict) else None
    if not isinstance(entry, dict):
        raise AuthFileError(f"{path}: claudeAiOauth: expected an object (is this Claude "
                            "Code's .credentials.json?)")
    access = entry.get("accessToken")
    if not isinstance(access, str) or not access:
        raise AuthFileError(f"{path}: claudeAiOauth.accessToken: expected a non-empty string")
    refresh = entry.get("refreshToken")
    if refresh is not None and not isinstance(refresh, str):
        raise AuthFileError(f"{path}: claudeAiOauth.refreshToken: expected a string")
    expires = entry.get("expiresAt")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, (int, float))):
        raise AuthFileError(f"{path}: claudeAiOauth.expiresAt: expected milliseconds")
    extras: dict[str, Any] = {}
    if isinstance(entry.get("subscriptionType"), str):
        extras["plan"] = entry["subscriptionType"]
    if isinstance(entry.get("scopes"), list):
        extras["scopes"] = " ".join(s for s in entry["scopes"] if isinstance(s, str))
    profile = _profile(path)
    extras |= profile
    name = profile.get("email") or profile.get("account_uuid") or _anonymous(refresh or access)
    return [Credentials(
        provider="claude", account=name, access_token=access, refresh_token=refresh or None,
        expires_at=None if expires is None else float(expires) / 1000, extras=extras,
    )]


def _profile(credentials_path: Path) -> dict[str, str]:
    """``oauthAccount`` of the ``.claude.json`` beside ``.claude/`` (email, uuids), if any."""
    if credentials_path.parent.name != ".claude":
        return {}
    try:
        data = read_json(credentials_path.parent.parent / ".claude.json")
    except (OSError, AuthFileError, UnicodeDecodeError):
        return {}
    account = data.get("oauthAccount") if isinstance(data, dict) else None
    if not isinstance(account, dict):
        return {}
    found = {
        "email": account.get("emailAddress"),
        "account_uuid": account.get("accountUuid"),
        "organization_uuid": account.get("organizationUuid"),
    }
    return {k: v for k, v in found.items() if isinstance(v, str) and v}


# --------------------------------------------------------------------------------------------
# Requests


def with_identity(system: Any) -> Any:
    """``system`` with Claude Code's identity block first (see the module docstring)."""
    block = {"type": "text", "text": CLAUDE.IDENTITY}
    if system is None or system == "" or system == []:
        return [block]
    if isinstance(system, str):
        if system.startswith(CLAUDE.KNOWN_IDENTITIES):
            return system
        return [block, {"type": "text", "text": system}]
    if isinstance(system, list):
        for existing in system[:3]:
            text = existing.get("text") if isinstance(existing, dict) else None
            if isinstance(text, str) and text.startswith(CLAUDE.KNOWN_IDENTITIES):
                return system
        return [block, *system]
    return system  # not a Messages API system prompt: the upstream says what is wrong


def _betas(header: str | None, body: Any) -> str:
    betas = [b.strip() for b in (header or "").split(",") if b.strip()]
    if isinstance(body, list):
        betas += [b for b in body if isinstance(b, str) and b]
    if not betas:
        betas = list(CLAUDE.DEFAULT_BETAS)
    if CLAUDE.OAUTH_BETA not in betas:
        betas.append(CLAUDE.OAUTH_BETA)
    return ",".join(dict.fromkeys(betas))


class ClaudeProvider(SubscriptionProvider):
    """Claude subscription accounts; see the module docstring."""

    kind = "claude"
    api = "anthropic"
    default_models = CLAUDE.MODELS

    def __init__(self, config: ProviderConfig, upstreams: Upstreams, accounts: Accounts) -> None:
        super().__init__(config, upstreams, accounts)
        #: Claude Code's session id: one per mux run.
        self._session = str(uuid.uuid4())

    def quota_scope(self, model: str) -> str | None:
        """The 5 h and 7 d usage windows cover the whole account, every model."""
        return None

    def _generate_url(self, request: ir.Request, *, stream: bool) -> str:
        return self._base + "/v1/messages?beta=true"

    def _count_url(self, request: ir.Request) -> str:
        return self._base + "/v1/messages/count_tokens?beta=true"

    def _shape(
        self, body: dict[str, Any], headers: dict[str, str], request: ir.Request,
        account: Account,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        body = dict(body)
        headers = {k.lower(): v for k, v in headers.items()}
        headers["anthropic-beta"] = _betas(headers.get("anthropic-beta"), body.pop("betas", None))
        headers = {**CLAUDE.HEADERS, "x-claude-code-session-id": self._session, **headers}
        body["system"] = with_identity(body.get("system"))
        metadata = dict(body["metadata"]) if isinstance(body.get("metadata"), dict) else {}
        user = metadata.get("user_id")
        if not (isinstance(user, str) and user.startswith("{")):
            metadata["user_id"] = self._user_id(account)
        body["metadata"] = metadata
        return body, headers

    def _user_id(self, account: Account) -> str:
        """Claude Code's ``metadata.user_id``: a JSON string of device, account and session."""
        credentials = self.credentials(account)
        device = hashlib.sha256(f"mux:{credentials.account}".encode()).hexdigest()
        return json.dumps({
            "device_id": device,
            "account_uuid": credentials.extras.get("account_uuid", ""),
            "session_id": self._session,
        }, separators=(",", ":"))


def provider(config: ProviderConfig, upstreams: Upstreams, accounts: Accounts) -> ClaudeProvider:
    """The provider of a ``type = "claude"`` entry."""
    return ClaudeProvider(config, upstreams, accounts)
