"""ChatGPT (Codex) subscriptions: the Codex CLI's OAuth login and the ChatGPT Responses API.

Login is OAuth 2 with PKCE against ``auth.openai.com`` (form-encoded token exchange and
refresh), redirected to the loopback port registered for the Codex CLI's client; or, with
``mux login codex --device``, the Codex CLI's device flow: a user code to enter at
``auth.openai.com/codex/device``, polled until approved, then exchanged like a redirect's
code with the verifier the server hands back. The account (``chatgpt_account_id``), email
and plan are claims of the id_token.

Requests go to ``{base}/responses``, which only streams: a whole answer is assembled from
the stream (:func:`mux.streams.StreamAccumulator`). The body is a Responses API body with the
backend's rules applied (:meth:`CodexProvider._shape`): ``store: false``; ``instructions``
required (the client's, else the catalog's short default); ``include`` always has
``reasoning.encrypted_content`` (reasoning round-trips encrypted, as nothing is stored);
``previous_response_id`` and the parameters the backend refuses are removed; a stable
``prompt_cache_key`` (the client's, else derived from the conversation's start, so that each
turn of one conversation hits the same cache). Headers: the token as a Bearer, the
``chatgpt-account-id``, and the Codex CLI's ``originator``/``version``. A
``usage_limit_reached`` 429 carries ``resets_in_seconds``/``resets_at``, which become the
account's cooldown (:func:`mux.providers.api.retry_after`); an error inside the 200 stream
before content (``server_is_overloaded``) fails over like any other.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any

from mux import ir
from mux.auth import AuthFileError, Accounts, Credentials, RefreshError, Refresher, RevokedError
from mux.config import ProviderConfig
from mux.framing import dumps
from mux.oauth import LoginContext, LoginError, jwt_claims, pkce, poll_device_token, post_token
from mux.oauth import state_token
from mux.providers import Account
from mux.providers.catalog import CODEX
from mux.providers.subscriptions import SubscriptionProvider
from mux.streams import StreamAccumulator
from mux.upstream import HttpClient, Upstreams

__all__ = [
    "CodexProvider",
    "authorize_url",
    "import_credentials",
    "login",
    "provider",
    "refresher",
]

#: prompt_cache_key namespace (uuid5): keys derived here never collide with clients' uuids.
_CACHE_NAMESPACE = uuid.UUID("6f1c3d8e-2b1a-4f0e-9a57-6d7a3c0b9e21")


# --------------------------------------------------------------------------------------------
# Tokens


def _claims(token: object) -> dict[str, Any]:
    if not isinstance(token, str) or not token:
        return {}
    try:
        return jwt_claims(token)
    except ValueError:
        return {}


def _identity(id_token: object, access_token: str) -> dict[str, str]:
    """Email, account id and plan from the id_token's claims (else the access token's)."""
    found: dict[str, str] = {}
    for claims in (_claims(access_token), _claims(id_token)):  # the id_token's win
        auth = claims.get(CODEX.AUTH_CLAIM)
        auth = auth if isinstance(auth, dict) else {}
        profile = claims.get("https://api.openai.com/profile")
        email = claims.get("email") or (profile.get("email") if isinstance(profile, dict) else None)
        for key, value in (("email", email), ("account_id", auth.get("chatgpt_account_id")),
                           ("plan", auth.get("chatgpt_plan_type"))):
            if isinstance(value, str) and value:
                found[key] = value
    return found


def _expiry(access_token: str, token: Mapping[str, Any], now: float) -> float | None:
    exp = _claims(access_token).get("exp")
    if isinstance(exp, (int, float)) and not isinstance(exp, bool):
        return float(exp)
    expires_in = token.get("expires_in")
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool):
        return now + float(expires_in)
    return None


def _credentials(
    token: Mapping[str, Any], *, now: float, old: Credentials | None = None
) -> Credentials:
    """Credentials from a token endpoint's answer (a login's, or a refresh's of ``old``).

    Raises:
      RefreshError: the answer has no access token, or (at login) names no account.
    """
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise RefreshError("the token endpoint's answer has no access_token")
    refresh = token.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        refresh = old.refresh_token if old else None
    extras = dict(old.extras) if old else {}
    extras |= _identity(token.get("id_token"), access)
    if old is not None:
        name = old.account
    else:
        name = extras.get("email") or extras.get("account_id")
        if not name:
            raise RefreshError("the token endpoint's answer names no account (no id_token)")
    return Credentials(provider="codex", account=name, access_token=access,
                       refresh_token=refresh, expires_at=_expiry(access, token, now),
                       extras=extras)


def authorize_url(urls: Mapping[str, str], *, challenge: str, state: str) -> str:
    """The authorize page's URL for one login."""
    params = {
        "response_type": "code",
        "client_id": CODEX.CLIENT_ID,
        "redirect_uri": urls["redirect-uri"],
        "scope": " ".join(CODEX.SCOPES),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **CODEX.AUTHORIZE_PARAMS,
        "state": state,
    }
    base = urls["oauth-authorize-url"]
    return base + ("&" if "?" in base else "?") + urllib.parse.urlencode(params)


async def login(ctx: LoginContext, *, clock: Callable[[], float] = time.time) -> Credentials:
    """Log in in the browser (the redirect or a pasted URL), or with ``ctx.device`` by the
    device flow.

    Raises:
      LoginError: refused, expired, timed out, or the token exchange failed.
    """
    urls = {**CODEX.URLS, **ctx.urls}
    try:
        if ctx.device:
            code, verifier, redirect = await _device_code(ctx, urls)
        else:
            verifier, challenge = pkce()
            state = state_token()
            redirect = urls["redirect-uri"]
            where = urllib.parse.urlsplit(redirect)
            code = await ctx.receive_code(
                authorize_url(urls, challenge=challenge, state=state),
                port=where.port or 80, path=where.path or "/", state=state,
            )
        token = await post_token(ctx.http, urls["oauth-token-url"], form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "client_id": CODEX.CLIENT_ID,
            "code_verifier": verifier,
        })
        return _credentials(token, now=clock())
    except (RevokedError, RefreshError) as exc:
        raise LoginError(f"the token exchange failed: {exc.message}") from None


async def _device_code(ctx: LoginContext, urls: Mapping[str, str]) -> tuple[str, str, str]:
    """The device flow up to the authorization code: ``(code, verifier, redirect_uri)``."""
    answer = await post_token(ctx.http, urls["oauth-device-url"],
                              json={"client_id": CODEX.CLIENT_ID})
    device_id = answer.get("device_auth_id")
    user_code = answer.get("user_code") or answer.get("usercode")
    if not isinstance(device_id, str) or not isinstance(user_code, str):
        raise LoginError("the device flow's answer has no device_auth_id and user_code")
    try:
        interval = float(answer.get("interval", 5))
    except (TypeError, ValueError):
        interval = 5.0
    ctx.show(urls["device-verification-url"])
    ctx.print(f"and enter this code: {user_code}\n(it expires in "
              f"{CODEX.DEVICE_TIMEOUT / 60:.0f} minutes)")
    approved = await poll_device_token(
        ctx.http, urls["device-token-url"],
        json={"device_auth_id": device_id, "user_code": user_code},
        interval=interval, timeout=CODEX.DEVICE_TIMEOUT, pending_statuses=(403, 404),
    )
    code, verifier = approved.get("authorization_code"), approved.get("code_verifier")
    if not isinstance(code, str) or not isinstance(verifier, str):
        raise LoginError("the approved device flow's answer has no authorization_code and "
                         "code_verifier")
    return code, verifier, urls["device-redirect-uri"]


def refresher(
    http: HttpClient, urls: Mapping[str, str], *, clock: Callable[[], float] = time.time
) -> Refresher:
    """Refreshes a Codex token (form body); a dead refresh token raises RevokedError."""
    token_url = {**CODEX.URLS, **urls}["oauth-token-url"]

    async def refresh(credentials: Credentials) -> Credentials:
        if not credentials.refresh_token:
            raise RevokedError(f"codex account {credentials.account} has no refresh token")
        token = await post_token(http, token_url, form={
            "grant_type": "refresh_token",
            "refresh_token": credentials.refresh_token,
            "client_id": CODEX.CLIENT_ID,
            "scope": " ".join(CODEX.REFRESH_SCOPES),
        })
        return _credentials(token, now=clock(), old=credentials)

    return refresh


# --------------------------------------------------------------------------------------------
# The Codex CLI's own file


def import_credentials(path: Path | None = None, *, clock: Callable[[], float] = time.time
                       ) -> list[Credentials]:
    """The login the Codex CLI saved in ``~/.codex/auth.json`` (``tokens``: id_token,
    access_token, refresh_token, account_id).

    Raises:
      AuthFileError: unreadable, not JSON, an API-key login (no ChatGPT account), or a key
        missing or of the wrong type (named, never its value).
      OSError: the file cannot be read.
    """
    path = Path(path or Path(CODEX.IMPORT_PATH).expanduser())
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthFileError(f"{path}: not JSON (line {exc.lineno}, column {exc.colno})") from None
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, dict):
        if isinstance(data, dict) and data.get("OPENAI_API_KEY"):
            raise AuthFileError(f"{path}: tokens: the Codex CLI is logged in with an API key, "
                                "not a ChatGPT account (use an openai-responses provider)")
        raise AuthFileError(f"{path}: tokens: expected an object (is this the Codex CLI's "
                            "auth.json?)")
    for key in ("access_token", "refresh_token"):
        if not isinstance(tokens.get(key), str) or not tokens[key]:
            raise AuthFileError(f"{path}: tokens.{key}: expected a non-empty string")
    access = tokens["access_token"]
    extras = _identity(tokens.get("id_token"), access)
    if isinstance(tokens.get("account_id"), str) and tokens["account_id"]:
        extras.setdefault("account_id", tokens["account_id"])
    name = extras.get("email") or extras.get("account_id")
    if not name:
        raise AuthFileError(f"{path}: tokens.id_token: names no account, and there is no "
                            "tokens.account_id")
    credentials = Credentials(
        provider="codex", account=name, access_token=access,
        refresh_token=tokens["refresh_token"], expires_at=_expiry(access, {}, clock()),
        extras=extras,
    )
    return [credentials]


# --------------------------------------------------------------------------------------------
# Requests


def _cache_key(body: Mapping[str, Any]) -> str:
    """A prompt_cache_key from what stays fixed through a conversation: the model, the
    instructions and the first input item."""
    items = body.get("input")
    first = items[0] if isinstance(items, list) and items else items
    seed = dumps([body.get("model"), body.get("instructions"), first])
    return str(uuid.uuid5(_CACHE_NAMESPACE, hashlib.sha256(seed).hexdigest()))


def _input(items: Any) -> Any:
    """The input as a list of items (the backend refuses a bare string), with ``system``
    messages as ``developer`` ones (the backend refuses the system role)."""
    if isinstance(items, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": items}]}]
    if not isinstance(items, list):
        return items
    return [{**item, "role": "developer"}
            if isinstance(item, dict) and item.get("role") == "system" else item
            for item in items]


class CodexProvider(SubscriptionProvider):
    """ChatGPT (Codex) subscription accounts; see the module docstring."""

    kind = "codex"
    api = "openai-responses"
    default_models = CODEX.MODELS

    def quota_scope(self, model: str) -> str | None:
        """The plan's usage limits (``usage_limit_reached``) cover the whole account."""
        return None

    def _generate_url(self, request: ir.Request, *, stream: bool) -> str:
        return self._base + "/responses"

    def _shape(
        self, body: dict[str, Any], headers: dict[str, str], request: ir.Request,
        account: Account,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        body = {k: v for k, v in body.items() if k not in CODEX.UNSUPPORTED}
        body["stream"] = True
        body["store"] = False
        instructions = body.get("instructions")
        if not isinstance(instructions, str) or not instructions.strip():
            body["instructions"] = CODEX.DEFAULT_INSTRUCTIONS
        include = body.get("include") if isinstance(body.get("include"), list) else []
        body["include"] = list(dict.fromkeys([*include, *CODEX.INCLUDE]))
        body["input"] = _input(body.get("input"))
        key = body.get("prompt_cache_key")
        if not isinstance(key, str) or not key:
            key = body["prompt_cache_key"] = _cache_key(body)
        headers = {**CODEX.HEADERS, **{k.lower(): v for k, v in headers.items()},
                   "session_id": key}
        account_id = self.credentials(account).extras.get("account_id")
        if isinstance(account_id, str) and account_id:
            headers["chatgpt-account-id"] = account_id
        return body, headers

    async def complete(self, request: ir.Request, account: Account) -> ir.Response:
        """The backend only streams: the answer is assembled from the stream."""
        accumulator = StreamAccumulator()
        events: AsyncIterator[ir.Event] = self.stream(request, account)
        async with aclosing(events):  # type: ignore[type-var]
            async for event in events:
                accumulator.add(event)
        return accumulator.response()


def provider(config: ProviderConfig, upstreams: Upstreams, accounts: Accounts) -> CodexProvider:
    """The provider of a ``type = "codex"`` entry."""
    return CodexProvider(config, upstreams, accounts)
