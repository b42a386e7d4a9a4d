"""Loopback fakes of the subscription services: each one's OAuth endpoints and API on one port.

A :class:`FakeService` of kind ``claude`` or ``codex`` checks what the real service checks:

* **authorize** (``GET``, what the browser opens): the client id, the registered redirect
  URI, ``response_type=code``, an S256 ``code_challenge``, the scopes and the kind's extra
  parameters; it redirects (302) to the redirect URI with a one-time code and the state, as
  the real page does once the person approves (``deny`` makes it redirect ``error=``).
* **token**: Claude's takes JSON only, Codex's a form only; the grant type, the client id,
  the redirect URI the code was issued for, and the PKCE verifier against the challenge of
  the authorize URL (RFC 7636 S256). Refresh tokens rotate: each refresh issues a new one
  and kills the old one and the old access token; a dead refresh token answers
  ``invalid_grant``. Codex's access and id tokens are JWTs carrying the account's claims.
* **device flow** (Codex): user code, then ``pending`` 403s until :meth:`approve_device` (or
  a number of polls), then the authorization code and its verifier.
* **API**: the Messages API (Claude) or the ChatGPT Codex Responses API, answered by
  :class:`tests.upstreams.FakeUpstream`'s hand-written wire bytes (script with ``push``),
  after checking the bearer token is the account's current one (401 otherwise) and the
  headers and body rules of the service.

A :class:`FakeCopilot` is GitHub's side of Copilot: the device flow (``/login/device/code``
and ``/login/oauth/access_token``: form bodies, the Copilot app's client id, the scope, the
device grant type and device code, ``Accept: application/json``; a script of
``authorization_pending`` / ``slow_down`` answers, 200s as GitHub sends them), ``/user`` and
the token exchange ``/copilot_internal/v2/token`` (``Authorization: token <github token>``;
401 once the GitHub token is revoked), and the Copilot chat API (``/chat/completions``,
``/models``): the current Copilot token as a Bearer (401 for an old or unknown one) and the
editor headers (``editor-version``, ``editor-plugin-version``, ``copilot-integration-id``,
``openai-intent``, ``x-request-id``).

A :class:`FakeGoogle` of kind ``gemini-cli`` or ``antigravity`` is Google's side of both:
the OAuth endpoints (authorize with the kind's client id, scopes, ``access_type=offline``,
``prompt=consent``, S256 challenge and state; a form-only token endpoint checking the client
id AND secret, the redirect URI and the PKCE verifier; refresh answers without a new refresh
token, as Google's do, and ``invalid_grant`` once revoked; ``/oauth2/v2/userinfo``), and
the Code Assist API (``/v1internal:{loadCodeAssist, onboardUser, generateContent,
streamGenerateContent, countTokens}``, under ``/daily`` and ``/prod`` for antigravity's two
bases): the current access token as Bearer, the kind's headers, the envelope's fields and
the account's project; ``onboardUser`` answers a not-``done`` operation at the first poll;
answers wrapped as ``{"response": ..., "traceId"}``, whole and per SSE event.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import attrs
import trio

from mux.framing import dumps, loads
from mux.providers.catalog import ANTIGRAVITY, CLAUDE, CODEX, COPILOT, GEMINI_CLI, GOOGLE
from mux.server import HttpRequest, HttpResponse, Limits, Server
from tests.upstreams import Answer, Fail, FakeUpstream, Received, _pieces, _Refuse, _sse, _Wire

__all__ = ["FakeCopilot", "FakeGoogle", "FakeService", "Gateway", "GoogleAccount",
           "ServiceAccount", "jwt", "save_account", "save_copilot", "save_google",
           "start_copilot", "start_gateway", "start_google", "start_service"]


def jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT with ``claims`` (enough for clients that read, not verify, claims)."""
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.sig"


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@attrs.define
class ServiceAccount:
    email: str
    account_id: str
    plan: str = "pro"
    #: The current tokens (None: none issued yet).
    access: str | None = None
    refresh: str | None = None


@attrs.define
class _Grant:
    account: ServiceAccount
    challenge: str
    redirect_uri: str
    state: str | None


class _Api(FakeUpstream):
    """The service's API: FakeUpstream's answers behind the service's own checks."""

    def __init__(self, service: FakeService) -> None:
        super().__init__("anthropic" if service.kind == "claude" else "openai-responses",
                         keys=())
        self.service = service

    def _route(self, request: HttpRequest) -> Any:
        if self.service.kind == "codex":
            if (request.method, request.path) == ("POST", "/backend-api/codex/responses"):
                return self._generate
            raise _Refuse(404, f"Unknown request URL: {request.method} {request.path}.")
        if request.query.get("beta") != "true":
            raise _Refuse(404, "OAuth requests go to /v1/messages?beta=true")
        return super()._route(request)

    def _check_auth(self, request: HttpRequest) -> None:
        service = self.service
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        account = service.by_access.get(token) if auth.startswith("Bearer ") else None
        if account is None or account.access != token:
            if service.kind == "claude":
                raise _Refuse(401, "OAuth token has expired. Please obtain a new token or "
                                   "refresh your existing token.")
            raise _Refuse(401, "Your authentication token has expired. Please try signing "
                               "in again.", code="token_expired")
        if service.kind == "claude":
            betas = request.headers.get("anthropic-beta", "").split(",")
            if CLAUDE.OAUTH_BETA not in betas:
                raise _Refuse(401, "OAuth authentication is currently not supported.")
            if "anthropic-version" not in request.headers:
                raise _Refuse(400, "anthropic-version: header is required")
        elif request.headers.get("chatgpt-account-id") != account.account_id:
            raise _Refuse(403, "chatgpt-account-id does not match the token")

    def _validate(self, request: HttpRequest, body: Any) -> bool:
        stream = super()._validate(request, body)
        if self.service.kind == "claude":
            system = body.get("system")
            first = system[0] if isinstance(system, list) and system else {}
            texts = [b.get("text", "") for b in system[:3] if isinstance(b, dict)] \
                if isinstance(system, list) else []
            if not any(t.startswith(CLAUDE.KNOWN_IDENTITIES) for t in texts) or not first:
                raise _Refuse(400, "This credential is only authorized for use with Claude "
                                   "Code and cannot be used for other API requests.")
            user_id = (body.get("metadata") or {}).get("user_id")
            if not isinstance(user_id, str) or not isinstance(json.loads(user_id), dict):
                raise _Refuse(400, "metadata.user_id: expected Claude Code's JSON string")
            return stream
        if body.get("stream") is not True:
            raise _Refuse(400, "Stream must be set to true")
        if body.get("store") is not False:
            raise _Refuse(400, "Store must be set to false")
        if not isinstance(body.get("instructions"), str) or not body["instructions"]:
            raise _Refuse(400, "Instructions are required")
        if "reasoning.encrypted_content" not in (body.get("include") or ()):
            raise _Refuse(400, "include must have reasoning.encrypted_content")
        for key in ("previous_response_id", "max_output_tokens", "temperature", "top_p"):
            if key in body:
                raise _Refuse(400, f"Unsupported parameter: {key}")
        if not isinstance(body.get("input"), list):
            raise _Refuse(400, "Input must be a list")
        if not isinstance(body.get("prompt_cache_key"), str):
            raise _Refuse(400, "prompt_cache_key: expected a string")
        return True


class FakeService:
    """The OAuth endpoints and the API of one subscription kind; see the module docstring."""

    def __init__(self, kind: str, *, expires_in: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        assert kind in ("claude", "codex"), kind
        self.kind = kind
        self.port = 0
        self.expires_in = expires_in
        self.clock = clock
        self.api = _Api(self)
        #: Requests to the OAuth endpoints (the API's are in ``api.requests``).
        self.oauth_requests: list[Received] = []
        self.accounts: dict[str, ServiceAccount] = {}
        self.by_access: dict[str, ServiceAccount] = {}
        self.by_refresh: dict[str, ServiceAccount] = {}
        self._codes: dict[str, _Grant] = {}
        #: Who the next authorize approves as (the first account when None).
        self.login_as: str | None = None
        self.deny = False
        #: The registered redirect URI (tests use a free loopback port).
        self.redirect_uri = CLAUDE.REDIRECT_URI if kind == "claude" else CODEX.REDIRECT_URI
        self.refreshes = 0
        #: Seconds each refresh takes (to make concurrent requests overlap one).
        self.refresh_delay = 0.0
        self.pending_polls = 2
        self.device_polls = 0
        self._devices: dict[str, tuple[str, ServiceAccount]] = {}

    # ----------------------------------------------------------------------------------------
    # Test API

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def urls(self) -> dict[str, str]:
        """The service's URLs under the names mux's config uses."""
        if self.kind == "claude":
            return {"base-url": self.root, "oauth-authorize-url": self.root + "/oauth/authorize",
                    "oauth-token-url": self.root + "/v1/oauth/token",
                    "redirect-uri": self.redirect_uri}
        return {
            "base-url": self.root + "/backend-api/codex",
            "oauth-authorize-url": self.root + "/oauth/authorize",
            "oauth-token-url": self.root + "/oauth/token",
            "redirect-uri": self.redirect_uri,
            "oauth-device-url": self.root + "/api/accounts/deviceauth/usercode",
            "device-token-url": self.root + "/api/accounts/deviceauth/token",
            "device-verification-url": self.root + "/codex/device",
            "device-redirect-uri": self.root + "/deviceauth/callback",
        }

    def entry(self, name: str | None = None, *extra: str) -> str:
        """A ``[[providers]]`` entry (TOML) pointing every URL here."""
        urls = self.urls
        others = ", ".join(f'"{k}" = "{v}"' for k, v in urls.items()
                           if k not in ("base-url", "oauth-authorize-url", "oauth-token-url",
                                        "oauth-device-url"))
        lines = [
            "[[providers]]", f'name = "{name or self.kind}"', f'type = "{self.kind}"',
            f'base-url = "{urls["base-url"]}"',
            f'oauth-authorize-url = "{urls["oauth-authorize-url"]}"',
            f'oauth-token-url = "{urls["oauth-token-url"]}"',
            f"urls = {{ {others} }}",
            "connect-timeout = 2.0", "first-byte-timeout = 5.0", "stream-timeout = 5.0", *extra,
        ]
        if "oauth-device-url" in urls:
            lines.insert(6, f'oauth-device-url = "{urls["oauth-device-url"]}"')
        return "\n".join(lines) + "\n"

    def add_account(self, email: str, account_id: str | None = None) -> ServiceAccount:
        account = ServiceAccount(email=email, account_id=account_id or f"acct-{len(self.accounts)}")
        self.accounts[email] = account
        return account

    def issue(self, email: str) -> dict[str, Any]:
        """New tokens for ``email`` (as a login would); the old ones die."""
        account = self.accounts.get(email) or self.add_account(email)
        return self._issue(account, login=True)

    def expire_access(self, email: str) -> None:
        """The account's access token stops working (the refresh token still does)."""
        account = self.accounts[email]
        self.by_access.pop(account.access or "", None)
        account.access = None

    def revoke(self, email: str) -> None:
        """Every token of the account dies: a refresh answers invalid_grant."""
        self.expire_access(email)
        account = self.accounts[email]
        self.by_refresh.pop(account.refresh or "", None)
        account.refresh = None

    def approve_device(self) -> None:
        self.pending_polls = 0

    # ----------------------------------------------------------------------------------------
    # Serving

    async def handle(self, request: HttpRequest) -> HttpResponse:
        oauth = {
            ("GET", "/oauth/authorize"): self._authorize,
            ("POST", "/v1/oauth/token" if self.kind == "claude" else "/oauth/token"): self._token,
        }
        if self.kind == "codex":
            oauth[("POST", "/api/accounts/deviceauth/usercode")] = self._usercode
            oauth[("POST", "/api/accounts/deviceauth/token")] = self._device_token
        handler = oauth.get((request.method, request.path))
        if handler is None:
            return await self.api.handle(request)
        self.oauth_requests.append(Received.of(request, request.body))
        return await handler(request)

    async def _authorize(self, request: HttpRequest) -> HttpResponse:
        q = request.query
        client_id = CLAUDE.CLIENT_ID if self.kind == "claude" else CODEX.CLIENT_ID
        scopes = CLAUDE.SCOPES if self.kind == "claude" else CODEX.SCOPES
        extra = CLAUDE.AUTHORIZE_PARAMS if self.kind == "claude" else CODEX.AUTHORIZE_PARAMS
        problems = [
            q.get("client_id") != client_id and "client_id",
            q.get("redirect_uri") != self.redirect_uri and "redirect_uri",
            q.get("response_type") != "code" and "response_type",
            q.get("code_challenge_method") != "S256" and "code_challenge_method",
            len(q.get("code_challenge", "")) != 43 and "code_challenge",
            not q.get("state") and "state",
            set(q.get("scope", "").split()) != set(scopes) and "scope",
            *(q.get(k) != v and k for k, v in extra.items()),
        ]
        bad = [p for p in problems if p]
        if bad:
            return _json(400, {"error": "invalid_request", "error_description": f"bad {bad[0]}"})
        target = q["redirect_uri"]
        if self.deny:
            location = _with_query(target, error="access_denied", state=q["state"])
        else:
            email = self.login_as or next(iter(self.accounts))
            code = secrets.token_urlsafe(24)
            self._codes[code] = _Grant(self.accounts[email], q["code_challenge"], target,
                                       q["state"])
            location = _with_query(target, code=code, state=q["state"])
        return HttpResponse(status=302, headers=[("location", location)])

    def _body(self, request: HttpRequest) -> dict[str, Any]:
        """The token request's fields: JSON for Claude, a form for Codex (as the real ones)."""
        content_type = request.headers.get("content-type", "")
        if self.kind == "claude":
            if not content_type.startswith("application/json"):
                raise _Refuse(415, "expected a JSON body")
            body = loads(request.body)
            if not isinstance(body, dict):
                raise _Refuse(400, "expected a JSON object")
            return body
        if not content_type.startswith("application/x-www-form-urlencoded"):
            raise _Refuse(415, "expected a form body")
        return dict(urllib.parse.parse_qsl(request.body.decode()))

    async def _token(self, request: HttpRequest) -> HttpResponse:
        try:
            body = self._body(request)
        except _Refuse as refusal:
            return _json(refusal.status, {"error": "invalid_request",
                                          "error_description": refusal.message})
        client_id = CLAUDE.CLIENT_ID if self.kind == "claude" else CODEX.CLIENT_ID
        if body.get("client_id") != client_id:
            return _json(401, {"error": "invalid_client"})
        grant = body.get("grant_type")
        if grant == "authorization_code":
            found = self._codes.pop(str(body.get("code")), None)
            if found is None:
                return _json(400, {"error": "invalid_grant", "error_description": "bad code"})
            if body.get("redirect_uri") != found.redirect_uri:
                return _json(400, {"error": "invalid_grant",
                                   "error_description": "redirect_uri mismatch"})
            if s256(str(body.get("code_verifier"))) != found.challenge:
                return _json(400, {"error": "invalid_grant",
                                   "error_description": "code_verifier mismatch"})
            if self.kind == "claude" and body.get("state") != found.state:
                return _json(400, {"error": "invalid_request", "error_description": "state"})
            return _json(200, self._issue(found.account, login=True))
        if grant == "refresh_token":
            if self.kind == "codex" and set(body.get("scope", "").split()) != set(
                    CODEX.REFRESH_SCOPES):
                return _json(400, {"error": "invalid_scope"})
            account = self.by_refresh.get(str(body.get("refresh_token")))
            if account is None:
                return _json(400, {"error": "invalid_grant",
                                   "error_description": "Refresh token not found or invalid"})
            self.refreshes += 1
            if self.refresh_delay:
                await trio.sleep(self.refresh_delay)
            return _json(200, self._issue(account, login=False))
        return _json(400, {"error": "unsupported_grant_type"})

    def _issue(self, account: ServiceAccount, *, login: bool) -> dict[str, Any]:
        self.by_access.pop(account.access or "", None)
        self.by_refresh.pop(account.refresh or "", None)
        now = self.clock()
        if self.kind == "claude":
            account.access = "sk-ant-oat01-" + secrets.token_urlsafe(24)
        else:
            account.access = jwt({"exp": int(now + self.expires_in), "jti": secrets.token_hex(8),
                                  CODEX.AUTH_CLAIM: {"chatgpt_account_id": account.account_id}})
        account.refresh = ("sk-ant-ort01-" if self.kind == "claude" else "rt_") + \
            secrets.token_urlsafe(24)
        self.by_access[account.access] = account
        self.by_refresh[account.refresh] = account
        answer: dict[str, Any] = {"access_token": account.access,
                                  "refresh_token": account.refresh,
                                  "expires_in": int(self.expires_in), "token_type": "Bearer"}
        if self.kind == "claude":
            answer["scope"] = " ".join(CLAUDE.SCOPES)
            if login:
                answer["account"] = {"uuid": account.account_id, "email_address": account.email}
                answer["organization"] = {"uuid": "org-1", "name": "Personal"}
        else:
            answer["id_token"] = jwt({"email": account.email, CODEX.AUTH_CLAIM: {
                "chatgpt_account_id": account.account_id, "chatgpt_plan_type": account.plan}})
        return answer

    async def _usercode(self, request: HttpRequest) -> HttpResponse:
        body = loads(request.body) if request.body else None
        if not isinstance(body, dict) or body.get("client_id") != CODEX.CLIENT_ID:
            return _json(400, {"error": "invalid_client"})
        device_id, user_code = "dev_" + secrets.token_hex(6), secrets.token_hex(4).upper()
        email = self.login_as or next(iter(self.accounts))
        self._devices[device_id] = (user_code, self.accounts[email])
        return _json(200, {"device_auth_id": device_id, "user_code": user_code, "interval": "0"})

    async def _device_token(self, request: HttpRequest) -> HttpResponse:
        body = loads(request.body) if request.body else None
        found = self._devices.get(body.get("device_auth_id")) if isinstance(body, dict) else None
        if found is None or body.get("user_code") != found[0]:
            return _json(400, {"error": {"code": "invalid_request", "message": "unknown"}})
        self.device_polls += 1
        if self.pending_polls > 0:
            self.pending_polls -= 1
            return _json(403, {"error": {"code": "deviceauth_authorization_pending",
                                         "message": "pending"}})
        verifier = secrets.token_urlsafe(32)
        code = secrets.token_urlsafe(24)
        redirect = self.urls["device-redirect-uri"]
        self._codes[code] = _Grant(found[1], s256(verifier), redirect, None)
        return _json(200, {"authorization_code": code, "code_challenge": s256(verifier),
                           "code_verifier": verifier})


def _json(status: int, body: Any) -> HttpResponse:
    return HttpResponse(status=status, headers=[("content-type", "application/json")],
                        body=dumps(body))


def _with_query(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params)


async def start_service(nursery: trio.Nursery, kind: str, **options: Any) -> FakeService:
    """A :class:`FakeService` listening on a free loopback port, served in ``nursery``."""
    service = FakeService(kind, **options)
    server = Server(service.handle, limits=Limits(graceful_timeout=0.2, keep_alive_timeout=10))
    service.port = await nursery.start(server.serve, "127.0.0.1", 0)
    return service


# --------------------------------------------------------------------------------------------
# GitHub Copilot


@attrs.define
class CopilotUser:
    login: str
    #: The current GitHub token (None: none issued, or revoked).
    github: str | None = None
    #: The current Copilot token.
    copilot: str | None = None


class _CopilotApi(FakeUpstream):
    """Copilot's chat API: FakeUpstream's OpenAI answers behind Copilot's checks."""

    def __init__(self, service: FakeCopilot) -> None:
        super().__init__("openai", keys=())
        self.service = service
        #: What ``/models`` lists: ``(id, capabilities.type)``.
        self.catalog: list[tuple[str, str]] = [("gpt-4.1", "chat"), ("claude-sonnet-4", "chat"),
                                               ("text-embedding-3-small", "embeddings")]

    def _route(self, request: HttpRequest) -> Any:
        table = {("POST", "/chat/completions"): self._generate, ("GET", "/models"): self._list}
        found = table.get((request.method, request.path))
        if found is None:
            raise _Refuse(404, f"Unknown request URL: {request.method} {request.path}.")
        return found

    def _check_auth(self, request: HttpRequest) -> None:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        user = self.service.by_copilot.get(token) if auth.startswith("Bearer ") else None
        if user is None or user.copilot != token:
            raise _Refuse(401, "unauthorized: token expired")
        for name in ("editor-version", "editor-plugin-version", "copilot-integration-id",
                     "openai-intent", "user-agent"):
            if request.headers.get(name) != COPILOT.HEADERS[name]:
                raise _Refuse(400, f"bad request: missing or unknown {name} header")
        if not request.headers.get("x-request-id"):
            raise _Refuse(400, "bad request: missing x-request-id header")

    async def _list(self, request: HttpRequest, body: Any, action: Any) -> HttpResponse:
        data = [{"id": name, "object": "model", "vendor": "x", "model_picker_enabled": True,
                 "capabilities": {"type": type_, "family": name}} for name, type_ in self.catalog]
        return _json(200, {"object": "list", "data": data})


class FakeCopilot:
    """GitHub's device flow, user and token-exchange endpoints and the Copilot API on one
    port; see the module docstring."""

    kind = "copilot"

    def __init__(self, *, expires_in: float = 1800.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.port = 0
        self.expires_in = expires_in
        self.clock = clock
        self.api = _CopilotApi(self)
        #: Requests to GitHub (the Copilot API's are in ``api.requests``).
        self.github_requests: list[Received] = []
        self.users: dict[str, CopilotUser] = {}
        self.by_github: dict[str, CopilotUser] = {}
        self.by_copilot: dict[str, CopilotUser] = {}
        #: Who the next device flow logs in as (the first user when None).
        self.login_as: str | None = None
        #: The error answers of the next token polls, in order, before the token.
        self.poll_script: list[str] = ["authorization_pending", "slow_down"]
        #: The interval a slow_down answer names (GitHub sends the new interval).
        self.slow_down_interval = 0.3
        self.polls: list[float] = []
        self.exchanges = 0
        #: Seconds each exchange takes (to make concurrent requests overlap one).
        self.exchange_delay = 0.0
        self._devices: dict[str, CopilotUser] = {}

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def urls(self) -> dict[str, str]:
        return {
            "base-url": self.root,
            "oauth-device-url": self.root + "/login/device/code",
            "oauth-token-url": self.root + "/login/oauth/access_token",
            "token-exchange-url": self.root + "/copilot_internal/v2/token",
            "user-url": self.root + "/user",
        }

    def entry(self, name: str = "copilot", *extra: str) -> str:
        """A ``[[providers]]`` entry (TOML) pointing every URL here."""
        urls = self.urls
        return "\n".join([
            "[[providers]]", f'name = "{name}"', 'type = "copilot"',
            f'base-url = "{urls["base-url"]}"',
            f'oauth-device-url = "{urls["oauth-device-url"]}"',
            f'oauth-token-url = "{urls["oauth-token-url"]}"',
            f'urls = {{ "token-exchange-url" = "{urls["token-exchange-url"]}", '
            f'"user-url" = "{urls["user-url"]}" }}',
            "connect-timeout = 2.0", "first-byte-timeout = 5.0", "stream-timeout = 5.0", *extra,
        ]) + "\n"

    def add_user(self, login: str) -> CopilotUser:
        user = self.users[login] = CopilotUser(login=login)
        return user

    def issue_github(self, login: str) -> str:
        """A new GitHub token for ``login`` (as a device login would)."""
        user = self.users.get(login) or self.add_user(login)
        self.by_github.pop(user.github or "", None)
        user.github = "gho_" + secrets.token_urlsafe(27)
        self.by_github[user.github] = user
        return user.github

    def expire_copilot(self, login: str) -> None:
        """The user's Copilot token stops working early (the GitHub token still works)."""
        user = self.users[login]
        self.by_copilot.pop(user.copilot or "", None)
        user.copilot = None

    def revoke(self, login: str) -> None:
        """The GitHub token dies (the app's authorization was removed): exchanges answer 401."""
        self.expire_copilot(login)
        user = self.users[login]
        self.by_github.pop(user.github or "", None)
        user.github = None

    async def handle(self, request: HttpRequest) -> HttpResponse:
        github = {
            ("POST", "/login/device/code"): self._device_code,
            ("POST", "/login/oauth/access_token"): self._access_token,
            ("GET", "/user"): self._user,
            ("GET", "/copilot_internal/v2/token"): self._exchange,
        }
        handler = github.get((request.method, request.path))
        if handler is None:
            return await self.api.handle(request)
        self.github_requests.append(Received.of(request, request.body))
        return await handler(request)

    def _form(self, request: HttpRequest) -> dict[str, str] | None:
        if not request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"):
            return None
        return dict(urllib.parse.parse_qsl(request.body.decode()))

    async def _device_code(self, request: HttpRequest) -> HttpResponse:
        form = self._form(request)
        if form is None or form.get("client_id") != COPILOT.CLIENT_ID:
            return _json(400, {"error": "invalid_client"}) if form is not None else \
                _json(415, {"error": "unsupported_media_type"})
        if set(form.get("scope", "").split()) != set(COPILOT.SCOPES):
            return _json(400, {"error": "invalid_scope"})
        device = secrets.token_hex(20)
        self._devices[device] = self.users[self.login_as or next(iter(self.users))]
        return _json(200, {"device_code": device, "user_code": "WDJB-MJHT",
                           "verification_uri": self.root + "/login/device",
                           "expires_in": 900, "interval": 0})

    async def _access_token(self, request: HttpRequest) -> HttpResponse:
        # Without Accept: application/json GitHub answers form-encoded: mux must ask for JSON.
        if request.headers.get("accept") != "application/json":
            return HttpResponse(status=200, headers=[
                ("content-type", "application/x-www-form-urlencoded")],
                body=b"error=not_json")
        form = self._form(request)
        if form is None or form.get("client_id") != COPILOT.CLIENT_ID:
            return _json(200, {"error": "incorrect_client_credentials"})
        if form.get("grant_type") != COPILOT.DEVICE_GRANT:
            return _json(200, {"error": "unsupported_grant_type"})
        user = self._devices.get(form.get("device_code", ""))
        if user is None:
            return _json(200, {"error": "bad_verification_code"})
        self.polls.append(time.monotonic())
        if self.poll_script:
            error = self.poll_script.pop(0)
            answer: dict[str, Any] = {"error": error, "error_description": error}
            if error == "slow_down":
                answer["interval"] = self.slow_down_interval
            return _json(200, answer)
        del self._devices[form["device_code"]]
        return _json(200, {"access_token": self.issue_github(user.login),
                           "token_type": "bearer", "scope": " ".join(COPILOT.SCOPES)})

    def _github_user(self, request: HttpRequest) -> CopilotUser | None:
        auth = request.headers.get("authorization", "")
        return self.by_github.get(auth.removeprefix("token ")) if auth.startswith("token ") \
            else None

    async def _user(self, request: HttpRequest) -> HttpResponse:
        user = self._github_user(request)
        if user is None:
            return _json(401, {"message": "Bad credentials",
                               "documentation_url": "https://docs.github.com/rest"})
        return _json(200, {"login": user.login, "id": 1000 + len(user.login), "type": "User"})

    async def _exchange(self, request: HttpRequest) -> HttpResponse:
        user = self._github_user(request)
        if user is None:
            return _json(401, {"message": "Bad credentials",
                               "documentation_url": "https://docs.github.com/rest"})
        self.exchanges += 1
        if self.exchange_delay:
            await trio.sleep(self.exchange_delay)
        expires_at = int(self.clock() + self.expires_in)
        self.by_copilot.pop(user.copilot or "", None)
        user.copilot = f"tid={secrets.token_hex(16)};exp={expires_at};sku=copilot_pro"
        self.by_copilot[user.copilot] = user
        return _json(200, {"token": user.copilot, "expires_at": expires_at,
                           "refresh_in": int(self.expires_in) - 300,
                           "endpoints": {"api": self.root}, "sku": "copilot_pro"})


async def start_copilot(nursery: trio.Nursery, **options: Any) -> FakeCopilot:
    """A :class:`FakeCopilot` listening on a free loopback port, served in ``nursery``."""
    service = FakeCopilot(**options)
    server = Server(service.handle, limits=Limits(graceful_timeout=0.2, keep_alive_timeout=10))
    service.port = await nursery.start(server.serve, "127.0.0.1", 0)
    return service


def save_copilot(store: Any, service: FakeCopilot, login: str, *,
                 exchanged: bool = False) -> Any:
    """A GitHub token for ``login`` saved in ``store`` as an import leaves it (no Copilot
    token yet), or with ``exchanged`` as a login leaves it (a current Copilot token)."""
    from mux.auth import Credentials
    from mux.providers.copilot import UNEXCHANGED

    github = service.issue_github(login)
    user = service.users[login]
    access, expires_at = UNEXCHANGED, 0.0
    if exchanged:
        access = user.copilot = f"tid={secrets.token_hex(16)}"
        service.by_copilot[access] = user
        expires_at = time.time() + service.expires_in
    credentials = Credentials(provider="copilot", account=login, access_token=access,
                              refresh_token=github, expires_at=expires_at,
                              extras={"login": login})
    store.save(credentials)
    return credentials


# --------------------------------------------------------------------------------------------
# mux in front of a service: the auth dir, the accounts, the gateway


def save_account(store: Any, service: FakeService, email: str, *,
                 expires_in: float | None = 3600.0) -> Any:
    """Log ``email`` in at the service (fresh tokens) and save it in ``store`` as mux would;
    ``expires_in`` sets the saved expiry (negative: already expired)."""
    from mux.auth import Credentials

    tokens = service.issue(email)
    account = service.accounts[email]
    extras = {"email": email}
    extras |= ({"account_uuid": account.account_id} if service.kind == "claude"
               else {"account_id": account.account_id, "plan": account.plan})
    credentials = Credentials(
        provider=service.kind, account=email, access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        expires_at=None if expires_in is None else time.time() + expires_in, extras=extras,
    )
    store.save(credentials)
    return credentials


@attrs.define(eq=False)
class Gateway:
    """mux in-process (as tests/test_e2e_routing.py starts it) with subscription accounts."""

    url: str
    router: Any
    clock: Any
    accounts: Any
    store: Any
    config: Any

    def state(self, account: str) -> Any:
        (found,) = [s for s in self.router.status() if s.account == account]
        return found.state


async def start_gateway(nursery: trio.Nursery, upstreams: Any, auth_dir: Any, config_text: str,
                        *, poll: float | None = None) -> Gateway:
    """Start mux with ``config_text`` (``[[providers]]`` entries) and the accounts saved in
    ``auth_dir``; with ``poll``, :meth:`Accounts.run` watches the directory too."""
    import tomllib

    from mux.auth import Accounts, AuthStore
    from mux.config import parse_config
    from mux.providers.api import providers_from_config
    from mux.providers.subscriptions import refreshers, subscription_providers
    from mux.router import Router
    from mux.routes import Gateway as Routes
    from tests.test_e2e_routing import Clock

    config = parse_config(tomllib.loads(f'auth-dir = "{auth_dir}"\n' + config_text))
    store = AuthStore.from_config(config)
    accounts = Accounts(store, refreshers(config, upstreams), lead=config.refresh_lead)
    if poll is not None:
        await nursery.start(lambda task_status: accounts.run(poll=poll, task_status=task_status))
    clock = Clock()
    providers = [*subscription_providers(config, upstreams, accounts),
                 *providers_from_config(config, upstreams)]
    router = Router(providers, config.routing, clock=clock)
    server = Server(Routes(providers=[router]).handle, limits=Limits(graceful_timeout=0.5))
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    return Gateway(url=f"http://127.0.0.1:{port}", router=router, clock=clock,
                   accounts=accounts, store=store, config=config)


# --------------------------------------------------------------------------------------------
# Google: Gemini CLI and Antigravity


@attrs.define
class GoogleAccount:
    email: str
    project: str
    #: Has a Code Assist tier (else loadCodeAssist has no currentTier: onboard first).
    onboarded: bool = True
    access: str | None = None
    refresh: str | None = None


class _CodeAssistApi(FakeUpstream):
    """Code Assist's ``v1internal`` methods: FakeUpstream's Gemini answers in the envelope."""

    def __init__(self, service: FakeGoogle) -> None:
        super().__init__("gemini", keys=())
        self.service = service
        #: loadCodeAssist / onboardUser calls (they take no scripted answer).
        self.setup_requests: list[Received] = []

    def _method(self, request: HttpRequest) -> tuple[str, str]:
        """``(base, method)`` of a path ``[/daily|/prod]/v1internal:<method>``."""
        path = request.path
        base = ""
        if self.service.kind == "antigravity":
            base, _, path = path.lstrip("/").partition("/")
            path = "/" + path
            if base not in ("daily", "prod"):
                raise _Refuse(404, f"The requested URL {request.path} was not found.")
        prefix = f"/{GOOGLE.API_VERSION}:"
        if request.method != "POST" or not path.startswith(prefix):
            raise _Refuse(404, f"The requested URL {request.path} was not found.")
        return base, path.removeprefix(prefix)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            _, method = self._method(request)
        except _Refuse as refusal:
            return self._error(refusal.status, refusal.message)
        if method not in ("loadCodeAssist", "onboardUser"):
            return await super().handle(request)
        body = loads(request.body) if request.body else None
        self.setup_requests.append(Received.of(request, body))
        try:
            account = self._check(request)
            if not isinstance(body, dict) or body.get("metadata") != dict(
                    self.service.data.METADATA):
                raise _Refuse(400, "metadata: expected the client's ideType/platform/pluginType")
            if method == "loadCodeAssist":
                return _json(200, self._load(account))
            return _json(200, self._onboard(account, body))
        except _Refuse as refusal:
            return self._error(refusal.status, refusal.message, code=refusal.code)

    def _load(self, account: GoogleAccount) -> dict[str, Any]:
        tiers = [{"id": "free-tier", "name": "Gemini Code Assist for individuals",
                  "isDefault": True, "userDefinedCloudaicompanionProject": False},
                 {"id": "legacy-tier", "name": "Gemini Code Assist",
                  "userDefinedCloudaicompanionProject": True}]
        if not account.onboarded:
            return {"allowedTiers": tiers}
        return {"currentTier": tiers[0], "allowedTiers": tiers,
                "cloudaicompanionProject": account.project, "gcpManaged": False}

    def _onboard(self, account: GoogleAccount, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("tierId") != "free-tier":
            raise _Refuse(400, "tierId: expected the default allowed tier")
        self.service.onboard_polls += 1
        if self.service.onboard_polls < 2:
            return {"name": "operations/onboard-1", "done": False}
        account.onboarded = True
        return {"name": "operations/onboard-1", "done": True, "response": {
            "@type": "type.googleapis.com/google.internal.cloud.code.v1internal."
                     "OnboardUserResponse",
            "cloudaicompanionProject": {"id": account.project, "name": account.project}}}

    def _route(self, request: HttpRequest) -> Any:
        _, method = self._method(request)
        if method in ("generateContent", "streamGenerateContent"):
            return self._generate_envelope
        if method == "countTokens":
            return self._count_envelope
        raise _Refuse(404, f"Method not found: {method}.")

    def _check_auth(self, request: HttpRequest) -> None:
        self._check(request)

    def _check(self, request: HttpRequest) -> GoogleAccount:
        """The account of the request's Bearer, after the kind's header checks."""
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        account = self.service.by_access.get(token) if auth.startswith("Bearer ") else None
        if account is None or account.access != token:
            raise _Refuse(401, "Request had invalid authentication credentials. Expected OAuth "
                               "2 access token, login cookie or other valid authentication "
                               "credential.")
        if self.service.kind == "gemini-cli":
            for name, value in GEMINI_CLI.HEADERS.items():
                if request.headers.get(name) != value:
                    raise _Refuse(400, f"missing or unknown {name} header")
        elif not request.headers.get("user-agent", "").startswith(
                f"antigravity/{ANTIGRAVITY.VERSION} "):
            raise _Refuse(400, "This version of Antigravity is no longer supported.")
        return account

    def _envelope(self, request: HttpRequest, body: Any) -> dict[str, Any]:
        """The Gemini body of a generation envelope, after checking the envelope."""
        if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
            raise _Refuse(400, "request: expected the generateContent body")
        account = self._check(request)
        if body.get("project") != account.project:
            raise _Refuse(403, f"Permission denied on resource project {body.get('project')}.")
        if not isinstance(body.get("model"), str) or not body["model"]:
            raise _Refuse(400, "model: required")
        inner = dict(body["request"])
        if self.service.kind == "antigravity":
            for key, value in ANTIGRAVITY.ENVELOPE.items():
                if body.get(key) != value:
                    raise _Refuse(400, f"{key}: expected {value!r}")
            if not str(body.get("requestId", "")).startswith("agent-"):
                raise _Refuse(400, "requestId: expected agent-<uuid>")
            session = inner.pop("sessionId", None)
            if not (isinstance(session, str) and session.startswith(ANTIGRAVITY.SESSION_PREFIX)):
                raise _Refuse(400, "request.sessionId: expected session-<hash>")
        unknown = set(body) - {"model", "project", "request", "user_prompt_id",
                               *ANTIGRAVITY.ENVELOPE, "requestId"}
        if unknown:
            raise _Refuse(400, "Invalid JSON payload received. Unknown name "
                               f'"{sorted(unknown)[0]}"')
        return inner

    async def _generate_envelope(self, request: HttpRequest, body: Any,
                                 action: Answer | Fail) -> HttpResponse:
        inner = self._envelope(request, body)
        self._check_google(inner)
        stream = request.path.endswith(":streamGenerateContent")
        if stream and request.query.get("alt") != "sse":
            raise _Refuse(400, "the fake serves streams as alt=sse only")
        if isinstance(action, Fail):
            return self._fail(action)
        trace = "a1b2c3d4e5f6"
        if not stream:
            whole = self._google_chunk(action.text, action.tool, action, final=True)
            whole.pop("responseId")
            return _json(200, {"response": whole, "traceId": trace})
        chunks = [self._google_chunk(p, None, action, final=False)
                  for p in _pieces(action.text, action.chunks)]
        if action.tool:
            chunks.append(self._google_chunk("", action.tool, action, final=False))
        last = self._google_chunk("", None, action, final=True)
        last["candidates"][0]["content"]["parts"] = [{"text": ""}]
        wrapped = [_sse({"response": c, "traceId": trace}, crlf=True) for c in chunks]
        error = _sse({"error": {"code": 503, "message": action.error_message,
                                "status": "UNAVAILABLE"}}, crlf=True)
        wire = _Wire([], wrapped, [_sse({"response": last, "traceId": trace}, crlf=True)], error)
        return HttpResponse(status=200, headers=[("content-type", "text/event-stream")],
                            body=self._stream(action, wire))

    async def _count_envelope(self, request: HttpRequest, body: Any,
                              action: Answer | Fail) -> HttpResponse:
        inner = body.get("request") if isinstance(body, dict) else None
        if not isinstance(inner, dict) or set(body) != {"request"}:
            raise _Refuse(400, "expected {request: {model, contents}}")
        if not str(inner.get("model", "")).startswith("models/"):
            raise _Refuse(400, "request.model: expected models/<name>")
        self._check_google({k: v for k, v in inner.items() if k != "model"},
                           allowed={"contents"})
        if isinstance(action, Fail):
            return self._fail(action)
        return _json(200, {"totalTokens": action.input_tokens})


class FakeGoogle:
    """Google's OAuth endpoints and the Code Assist API for one Google kind, on one port; see
    the module docstring."""

    def __init__(self, kind: str, *, expires_in: float = 3599.0,
                 clock: Callable[[], float] = time.time) -> None:
        assert kind in ("gemini-cli", "antigravity"), kind
        self.kind = kind
        self.data = GEMINI_CLI if kind == "gemini-cli" else ANTIGRAVITY
        self.port = 0
        self.expires_in = expires_in
        self.clock = clock
        self.api = _CodeAssistApi(self)
        self.oauth_requests: list[Received] = []
        self.accounts: dict[str, GoogleAccount] = {}
        self.by_access: dict[str, GoogleAccount] = {}
        self.by_refresh: dict[str, GoogleAccount] = {}
        self._codes: dict[str, _Grant] = {}
        self.login_as: str | None = None
        #: Token answers carry an id_token (False: the email comes from userinfo only).
        self.id_tokens = True
        self.redirect_uri = self.data.REDIRECT_URI
        self.refreshes = 0
        self.onboard_polls = 0

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def urls(self) -> dict[str, str]:
        urls = {
            "base-url": self.root,
            "oauth-authorize-url": self.root + "/o/oauth2/v2/auth",
            "oauth-token-url": self.root + "/token",
            "redirect-uri": self.redirect_uri,
            "userinfo-url": self.root + "/oauth2/v2/userinfo",
        }
        if self.kind == "antigravity":
            urls["base-url"] = self.root + "/daily"
            urls["fallback-base-url"] = self.root + "/prod"
        return urls

    def entry(self, name: str | None = None, *extra: str, urls: dict[str, str] | None = None
              ) -> str:
        """A ``[[providers]]`` entry (TOML) pointing every URL here (or at ``urls``)."""
        urls = {**self.urls, **(urls or {})}
        others = ", ".join(f'"{k}" = "{v}"' for k, v in urls.items()
                           if k not in ("base-url", "oauth-authorize-url", "oauth-token-url"))
        return "\n".join([
            "[[providers]]", f'name = "{name or self.kind}"', f'type = "{self.kind}"',
            f'base-url = "{urls["base-url"]}"',
            f'oauth-authorize-url = "{urls["oauth-authorize-url"]}"',
            f'oauth-token-url = "{urls["oauth-token-url"]}"',
            f"urls = {{ {others} }}",
            "connect-timeout = 2.0", "first-byte-timeout = 5.0", "stream-timeout = 5.0", *extra,
        ]) + "\n"

    def add_account(self, email: str, project: str | None = None, *,
                    onboarded: bool = True) -> GoogleAccount:
        account = GoogleAccount(email=email, project=project or f"proj-{email.split('@')[0]}",
                                onboarded=onboarded)
        self.accounts[email] = account
        return account

    def issue(self, email: str) -> dict[str, Any]:
        """New tokens for ``email`` (as a login would)."""
        account = self.accounts.get(email) or self.add_account(email)
        return self._issue(account, login=True)

    def expire_access(self, email: str) -> None:
        account = self.accounts[email]
        self.by_access.pop(account.access or "", None)
        account.access = None

    def revoke(self, email: str) -> None:
        self.expire_access(email)
        account = self.accounts[email]
        self.by_refresh.pop(account.refresh or "", None)
        account.refresh = None

    async def handle(self, request: HttpRequest) -> HttpResponse:
        oauth = {
            ("GET", "/o/oauth2/v2/auth"): self._authorize,
            ("POST", "/token"): self._token,
            ("GET", "/oauth2/v2/userinfo"): self._userinfo,
        }
        handler = oauth.get((request.method, request.path))
        if handler is None:
            return await self.api.handle(request)
        self.oauth_requests.append(Received.of(request, request.body))
        return await handler(request)

    async def _authorize(self, request: HttpRequest) -> HttpResponse:
        q = request.query
        problems = [
            q.get("client_id") != self.data.CLIENT_ID and "client_id",
            q.get("redirect_uri") != self.redirect_uri and "redirect_uri",
            q.get("response_type") != "code" and "response_type",
            q.get("code_challenge_method") != "S256" and "code_challenge_method",
            len(q.get("code_challenge", "")) != 43 and "code_challenge",
            not q.get("state") and "state",
            set(q.get("scope", "").split()) != set(self.data.SCOPES) and "scope",
            q.get("access_type") != "offline" and "access_type",
            q.get("prompt") != "consent" and "prompt",
        ]
        bad = [p for p in problems if p]
        if bad:
            return _json(400, {"error": "invalid_request", "error_description": f"bad {bad[0]}"})
        email = self.login_as or next(iter(self.accounts))
        code = "4/0A" + secrets.token_urlsafe(24)
        self._codes[code] = _Grant(self.accounts[email],  # type: ignore[arg-type]
                                   q["code_challenge"], q["redirect_uri"], q["state"])
        location = _with_query(q["redirect_uri"], state=q["state"], code=code,
                               scope=" ".join(self.data.SCOPES))
        return HttpResponse(status=302, headers=[("location", location)])

    async def _token(self, request: HttpRequest) -> HttpResponse:
        if not request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"):
            return _json(400, {"error": "invalid_request", "error_description": "form only"})
        form = dict(urllib.parse.parse_qsl(request.body.decode()))
        if form.get("client_id") != self.data.CLIENT_ID or \
                form.get("client_secret") != self.data.CLIENT_SECRET:
            return _json(401, {"error": "invalid_client", "error_description": "Unauthorized"})
        grant = form.get("grant_type")
        if grant == "authorization_code":
            found = self._codes.pop(form.get("code", ""), None)
            if found is None:
                return _json(400, {"error": "invalid_grant", "error_description": "Malformed "
                                   "auth code."})
            if form.get("redirect_uri") != found.redirect_uri:
                return _json(400, {"error": "redirect_uri_mismatch", "error_description": "Bad "
                                   "Request"})
            if s256(form.get("code_verifier", "")) != found.challenge:
                return _json(400, {"error": "invalid_grant", "error_description": "Invalid code "
                                   "verifier."})
            return _json(200, self._issue(found.account, login=True))  # type: ignore[arg-type]
        if grant == "refresh_token":
            account = self.by_refresh.get(form.get("refresh_token", ""))
            if account is None:
                return _json(400, {"error": "invalid_grant", "error_description": "Token has "
                                   "been expired or revoked."})
            self.refreshes += 1
            return _json(200, self._issue(account, login=False))
        return _json(400, {"error": "unsupported_grant_type"})

    def _issue(self, account: GoogleAccount, *, login: bool) -> dict[str, Any]:
        self.by_access.pop(account.access or "", None)
        account.access = "ya29.a0" + secrets.token_urlsafe(32)
        self.by_access[account.access] = account
        answer: dict[str, Any] = {"access_token": account.access,
                                  "expires_in": int(self.expires_in), "token_type": "Bearer",
                                  "scope": " ".join(self.data.SCOPES)}
        if login:  # Google issues a refresh token at consent; refreshes keep it
            self.by_refresh.pop(account.refresh or "", None)
            account.refresh = "1//0g" + secrets.token_urlsafe(32)
            self.by_refresh[account.refresh] = account
            answer["refresh_token"] = account.refresh
        if self.id_tokens:
            answer["id_token"] = jwt({"iss": "https://accounts.google.com", "email": account.email,
                                      "email_verified": True, "sub": "1077"})
        return answer

    async def _userinfo(self, request: HttpRequest) -> HttpResponse:
        auth = request.headers.get("authorization", "")
        account = self.by_access.get(auth.removeprefix("Bearer "))
        if account is None:
            return _json(401, {"error": {"code": 401, "message": "Request is missing required "
                               "authentication credential.", "status": "UNAUTHENTICATED"}})
        return _json(200, {"id": "1077", "email": account.email, "verified_email": True,
                           "picture": "https://lh3.googleusercontent.com/a/x"})


async def start_google(nursery: trio.Nursery, kind: str, **options: Any) -> FakeGoogle:
    """A :class:`FakeGoogle` listening on a free loopback port, served in ``nursery``."""
    service = FakeGoogle(kind, **options)
    server = Server(service.handle, limits=Limits(graceful_timeout=0.2, keep_alive_timeout=10))
    service.port = await nursery.start(server.serve, "127.0.0.1", 0)
    return service


def save_google(store: Any, service: FakeGoogle, email: str, *, project: bool = True,
                expires_in: float | None = 3599.0) -> Any:
    """Log ``email`` in at the fake (fresh tokens) and save it in ``store`` as mux would;
    without ``project`` as an import leaves it (no project id yet)."""
    from mux.auth import Credentials

    tokens = service.issue(email)
    account = service.accounts[email]
    extras: dict[str, Any] = {"email": email}
    if project:
        extras["project_id"] = account.project
    credentials = Credentials(
        provider=service.kind, account=email, access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        expires_at=None if expires_in is None else time.time() + expires_in, extras=extras,
    )
    store.save(credentials)
    return credentials
