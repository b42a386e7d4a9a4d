"""Google's Code Assist backend (``v1internal``): what the gemini-cli and antigravity kinds share.

Both kinds are a Google account logged in with an installed app's OAuth client (Gemini CLI's
or Antigravity's), talking to ``{base}/v1internal:{method}`` with a Gemini
``generateContent`` body inside an envelope. The kinds' modules
(:mod:`mux.providers.gemini_cli`, :mod:`mux.providers.antigravity`) are thin: a
:class:`Service` (their catalog data and headers) and a :class:`CodeAssistProvider` subclass.

Theory of operation
-------------------
* **Login** is Google's installed-app flow (:func:`login`): the authorize page with PKCE
  (S256), ``state``, ``access_type=offline`` and ``prompt=consent`` (so that Google issues a
  refresh token every time), redirected to the loopback port registered for the client (or
  the redirect URL pasted); the code is exchanged at Google's token endpoint with a form
  carrying the client id and the client's public secret. The account is the ``email`` claim
  of the id_token, else the userinfo endpoint's. Google does not rotate refresh tokens: a
  refresh answer without one keeps the old one (:func:`refresher`); ``invalid_grant`` means
  revoked (:func:`mux.oauth.post_token`).
* **Project.** Every call names the user's Code Assist project. :func:`discover_project`
  asks ``loadCodeAssist``; a user without a current tier is onboarded (``onboardUser`` with
  the default allowed tier, else ``legacy-tier``), a long-running operation polled until
  ``done`` under :data:`~mux.providers.catalog.GOOGLE` ``ONBOARD_TIMEOUT``. The project id is
  the account's ``extras["project_id"]``: found at login, or (an imported account, a login
  whose discovery failed) at the first request, then saved atomically in the account's file.
* **Envelope.** A request goes out as ``{model, project, request: <the Gemini body>}`` plus
  the kind's own fields (:meth:`CodeAssistProvider._envelope`); answers come back as
  ``{"response": <GenerateContentResponse>, "traceId"}``, whole (:func:`unwrap`) and per SSE
  event (:class:`EnvelopeStreamParser`). Token counts go to ``:countTokens`` as
  ``{request: {model: "models/<m>", contents}}`` and answer ``{totalTokens}`` unwrapped.
  Errors are Google's ``{"error": {...}}``, not wrapped: the Gemini format reads them, and
  :func:`mux.providers.api.retry_after` reads the quota signals (``RetryInfo.retryDelay``,
  ``ErrorInfo.metadata.quotaResetDelay`` / ``quotaResetTimeStamp``).
* **Base URLs.** A kind may list a fallback (``fallback-base-url``): a connection failure, a
  5xx or a "no capacity" answer moves the provider to the next base (sticky: later calls
  start there) and retries, before any content reached the client; a "no capacity" left
  after every base is reported as OVERLOADED (503: a short transient cooldown, not a quota).
"""

from __future__ import annotations

import hashlib
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, ClassVar, TypeVar

import attrs
import trio

from mux import ir
from mux.auth import Credentials, RefreshError, Refresher, RevokedError
from mux.errors import MuxError, UpstreamError
from mux.formats import gemini
from mux.framing import FramingError, SSEDecoder, dumps, loads, sse
from mux.oauth import LoginContext, LoginError, jwt_claims, pkce, post_token
from mux.oauth import state_token, upstream_reason
from mux.providers import Account
from mux.providers.api import ApiCall
from mux.providers.catalog import GOOGLE
from mux.providers.subscriptions import SubscriptionProvider
from mux.upstream import HttpClient, scrub

__all__ = [
    "Caller",
    "CodeAssistProvider",
    "EnvelopeStreamParser",
    "Service",
    "authorize_url",
    "base_urls",
    "discover_project",
    "email_of",
    "gemini_model",
    "login",
    "overloaded",
    "refresher",
    "session_id",
    "unwrap",
]

log = logging.getLogger("mux.providers")

T = TypeVar("T")

#: Calls one ``v1internal`` method with a JSON body and returns the decoded answer.
Caller = Callable[[str, dict[str, Any]], Awaitable[Any]]


@attrs.frozen(kw_only=True)
class Service:
    """One Google kind: its name, its catalog class and the headers of its API calls."""

    kind: str
    #: The catalog class (CLIENT_ID, CLIENT_SECRET, SCOPES, URLS, METADATA, ...).
    data: Any
    headers: Mapping[str, str]


def base_urls(urls: Mapping[str, str]) -> list[str]:
    """The API bases in the order to try: ``base-url``, then ``fallback-base-url``."""
    found = [urls.get("base-url"), urls.get("fallback-base-url")]
    return list(dict.fromkeys(u.rstrip("/") for u in found if u))


def method_url(base: str, method: str) -> str:
    """``{base}/v1internal:{method}``."""
    return f"{base}/{GOOGLE.API_VERSION}:{method}"


# --------------------------------------------------------------------------------------------
# Tokens


def email_of(id_token: object) -> str | None:
    """The ``email`` claim of an id_token (not verified: our own token), or None."""
    if not isinstance(id_token, str) or not id_token:
        return None
    try:
        email = jwt_claims(id_token).get("email")
    except ValueError:
        return None
    return email if isinstance(email, str) and email else None


def _credentials(
    kind: str, token: Mapping[str, Any], *, now: float, old: Credentials | None = None,
    email: str | None = None,
) -> Credentials:
    """Credentials from a token endpoint's answer (a login's, or a refresh's of ``old``).

    Raises:
      RefreshError: the answer has no access token.
    """
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise RefreshError("the token endpoint's answer has no access_token")
    refresh = token.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:  # Google does not rotate them
        refresh = old.refresh_token if old else None
    expires_in = token.get("expires_in")
    expires_at = None
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool):
        expires_at = now + float(expires_in)
    extras = dict(old.extras) if old else {}
    email = email_of(token.get("id_token")) or email
    if email:
        extras["email"] = email
    name = old.account if old else extras.get("email")
    if not name:
        raise RefreshError("the login names no account (no email in the id_token or userinfo)")
    return Credentials(provider=kind, account=name, access_token=access, refresh_token=refresh,
                       expires_at=expires_at, extras=extras)


def authorize_url(service: Service, urls: Mapping[str, str], *, challenge: str,
                  state: str) -> str:
    """Google's authorize page for one login."""
    params = {
        "client_id": service.data.CLIENT_ID,
        "redirect_uri": urls["redirect-uri"],
        "response_type": "code",
        "scope": " ".join(service.data.SCOPES),
        **GOOGLE.AUTHORIZE_PARAMS,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
    }
    base = urls["oauth-authorize-url"]
    return base + ("&" if "?" in base else "?") + urllib.parse.urlencode(params)


async def login(
    ctx: LoginContext, service: Service, *, clock: Callable[[], float] = time.time
) -> Credentials:
    """Log in in the browser (the redirect, or the pasted redirect URL), then find the
    account's Code Assist project (onboarding it if needed). A project discovery that fails
    is reported and left to the first request.

    Raises:
      LoginError: refused, timed out, the token exchange failed, or no account is named.
    """
    data = service.data
    urls = {**data.URLS, **ctx.urls}
    verifier, challenge = pkce()
    state = state_token()
    redirect = urls["redirect-uri"]
    where = urllib.parse.urlsplit(redirect)
    code = await ctx.receive_code(
        authorize_url(service, urls, challenge=challenge, state=state),
        port=where.port or 80, path=where.path or "/", state=state,
    )
    try:
        token = await post_token(ctx.http, urls["oauth-token-url"], form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "client_id": data.CLIENT_ID,
            "client_secret": data.CLIENT_SECRET,
            "code_verifier": verifier,
        })
        email = None
        if not email_of(token.get("id_token")) and isinstance(token.get("access_token"), str):
            email = await _userinfo(ctx.http, urls["userinfo-url"], token["access_token"])
        credentials = _credentials(service.kind, token, now=clock(), email=email)
    except (RevokedError, RefreshError) as exc:
        raise LoginError(f"the token exchange failed: {exc.message}") from None
    try:
        project = await _discover_on(base_urls(urls), lambda base: _http_caller(
            ctx.http, base, credentials.access_token, service.headers), data)
    except MuxError as exc:
        ctx.print(f"(could not find the Code Assist project yet: {exc.message}; mux tries "
                  "again at the first request)")
        return credentials
    return attrs.evolve(credentials, extras={**credentials.extras, "project_id": project})


async def _userinfo(http: HttpClient, url: str, access: str) -> str | None:
    """The email of the token's account (userinfo), or None if it cannot be had."""
    try:
        reply = await http.get(url, headers={"authorization": f"Bearer {access}",
                                             "accept": "application/json"})
        body = reply.json() if 200 <= reply.status < 300 else None
    except (UpstreamError, ValueError):
        return None
    email = body.get("email") if isinstance(body, dict) else None
    return email if isinstance(email, str) and email else None


def refresher(
    service: Service, http: HttpClient, urls: Mapping[str, str], *,
    clock: Callable[[], float] = time.time,
) -> Refresher:
    """Refreshes a Google token (form body with the client secret); ``invalid_grant`` raises
    RevokedError; the refresh token stays (Google does not rotate it)."""
    data = service.data
    token_url = {**data.URLS, **urls}["oauth-token-url"]

    async def refresh(credentials: Credentials) -> Credentials:
        if not credentials.refresh_token:
            raise RevokedError(f"{service.kind} account {credentials.account} has no refresh "
                               "token")
        token = await post_token(http, token_url, form={
            "grant_type": "refresh_token",
            "refresh_token": credentials.refresh_token,
            "client_id": data.CLIENT_ID,
            "client_secret": data.CLIENT_SECRET,
        })
        return _credentials(service.kind, token, now=clock(), old=credentials)

    return refresh


# --------------------------------------------------------------------------------------------
# The project


def _project_id(value: object) -> str | None:
    """A ``cloudaicompanionProject``: a string, or an object with an ``id``."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _onboard_tier(load: Mapping[str, Any]) -> str:
    tiers = load.get("allowedTiers")
    for tier in tiers if isinstance(tiers, list) else ():
        if isinstance(tier, dict) and tier.get("isDefault") is True \
                and isinstance(tier.get("id"), str):
            return str(tier["id"])
    return GOOGLE.LEGACY_TIER


async def discover_project(call: Caller, data: Any) -> str:
    """The account's Code Assist project: ``loadCodeAssist``, and ``onboardUser`` (polled
    until ``done``) for an account that has no tier yet.

    Raises:
      UpstreamError: a call failed, the answers name no project (a Workspace account that
        needs a Google Cloud project of its own), or onboarding did not finish in time.
    """
    metadata = dict(data.METADATA)
    load = await call("loadCodeAssist", {"metadata": metadata})
    load = load if isinstance(load, dict) else {}
    project = _project_id(load.get("cloudaicompanionProject"))
    if project and load.get("currentTier"):
        return project
    if load.get("currentTier"):
        raise UpstreamError(ir.ErrorKind.PERMISSION, "loadCodeAssist names no project for this "
                            "account (a Workspace account needs Gemini Code Assist set up on a "
                            "Google Cloud project)", status=403)
    body: dict[str, Any] = {"tierId": _onboard_tier(load), "metadata": metadata}
    if project:
        body["cloudaicompanionProject"] = project
    with trio.move_on_after(GOOGLE.ONBOARD_TIMEOUT):
        while True:
            operation = await call("onboardUser", body)
            if isinstance(operation, dict) and operation.get("done") is True:
                response = operation.get("response")
                found = _project_id(response.get("cloudaicompanionProject")
                                    if isinstance(response, dict) else None) or project
                if not found:
                    raise UpstreamError(ir.ErrorKind.PERMISSION, "onboardUser finished without "
                                        "a project for this account", status=403)
                return found
            await trio.sleep(GOOGLE.ONBOARD_POLL)
    raise UpstreamError(ir.ErrorKind.TIMEOUT, "onboardUser did not finish within "
                        f"{GOOGLE.ONBOARD_TIMEOUT:g}s", status=504)


async def _discover_on(
    bases: Sequence[str], caller: Callable[[str], Caller], data: Any
) -> str:
    """:func:`discover_project` on the first base that answers (see :func:`base_failure`)."""
    for i, base in enumerate(bases):
        try:
            return await discover_project(caller(base), data)
        except MuxError as error:
            if i + 1 == len(bases) or not base_failure(error):
                raise
    raise UpstreamError(ir.ErrorKind.UPSTREAM, "no base URL is configured")


def _http_caller(http: HttpClient, base: str, access: str,
                 headers: Mapping[str, str]) -> Caller:
    """A :data:`Caller` on the login's HTTP client, with ``access`` as Bearer."""

    async def call(method: str, body: dict[str, Any]) -> Any:
        url = method_url(base, method)
        where = urllib.parse.urlsplit(url)
        name = f"{where.scheme}://{where.netloc}{where.path}"
        try:
            reply = await http.request("POST", url, body=dumps(body), headers={
                **headers, "authorization": f"Bearer {access}", "accept": "application/json",
                "content-type": "application/json"})
        except UpstreamError as error:
            reason = scrub(upstream_reason(error), [access])[:200]
            if error.kind is ir.ErrorKind.TIMEOUT:
                raise UpstreamError(error.kind, f"{name}: {reason}", status=error.status) \
                    from None
            raise UpstreamError(ir.ErrorKind.UPSTREAM, f"{name}: cannot reach it ({reason})",
                                status=502) from None
        try:
            answer: Any = loads(reply.body)
        except FramingError:
            answer = reply.body.decode("utf-8", "replace")
        if not 200 <= reply.status < 300:
            error = gemini.parse_error(reply.status, answer)
            raise UpstreamError(error.kind, f"{name}: {scrub(error.message, [access])[:300]}",
                                status=error.status)
        return answer

    return call


# --------------------------------------------------------------------------------------------
# The envelope


def unwrap(body: Any) -> Any:
    """The ``GenerateContentResponse`` inside a Code Assist answer ``{"response": ...,
    "traceId"}`` (the trace id stands in for a missing ``responseId``); anything else (an
    error) as it is."""
    if not isinstance(body, dict) or not isinstance(body.get("response"), dict):
        return body
    inner = dict(body["response"])
    trace = body.get("traceId")
    if isinstance(trace, str) and trace and not inner.get("responseId"):
        inner["responseId"] = trace
    return inner


class EnvelopeStreamParser:
    """A Code Assist SSE stream (each event's data ``{"response": {...}}``) to IR events:
    each event unwrapped and handed to :class:`mux.formats.gemini.StreamParser`.

    Raises (from :meth:`feed` and :meth:`close`):
      UpstreamError: the bytes are not an SSE stream of Gemini chunks.
    """

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._inner = gemini.StreamParser()

    def feed(self, data: bytes) -> list[ir.Event]:
        return self._pass(self._decode(lambda: self._decoder.feed(data)))

    def close(self) -> list[ir.Event]:
        return [*self._pass(self._decode(self._decoder.close)), *self._inner.close()]

    @staticmethod
    def _decode(decode: Callable[[], list[Any]]) -> list[Any]:
        try:
            return decode()
        except FramingError as exc:
            raise UpstreamError(ir.ErrorKind.UPSTREAM,
                                f"malformed upstream stream: {exc}") from exc

    def _pass(self, messages: list[Any]) -> list[ir.Event]:
        events: list[ir.Event] = []
        for message in messages:
            if not message.data.strip():
                continue
            try:
                chunk = unwrap(loads(message.data))
            except FramingError:
                events += self._inner.feed(sse(message.data))  # the inner parser says what
                continue
            events += self._inner.feed(sse(dumps(chunk)))
        return events


def base_failure(error: MuxError) -> bool:
    """A failure of the base URL rather than of the request: another base may answer."""
    return error.status >= 500 or _no_capacity(error)


def _no_capacity(error: MuxError) -> bool:
    return "no capacity" in error.message.lower()


# --------------------------------------------------------------------------------------------
# The provider


class CodeAssistProvider(SubscriptionProvider):
    """A Google kind's accounts on Code Assist; see the module docstring. Subclasses set
    :attr:`service` (and :attr:`kind`, :attr:`default_models`)."""

    api = "gemini"
    service: ClassVar[Service]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bases = base_urls(self.urls)
        self._base = self._bases[0] if self._bases else self._base
        #: One project discovery per account at a time.
        self._discovering: dict[str, trio.Lock] = {}

    # ----------------------------------------------------------------------------------------
    # Calls

    def _generate_url(self, request: ir.Request, *, stream: bool) -> str:
        return method_url(self._base, "streamGenerateContent?alt=sse" if stream
                          else "generateContent")

    def _shape(
        self, body: dict[str, Any], headers: dict[str, str], request: ir.Request,
        account: Account,
    ) -> tuple[dict[str, Any], dict[str, str]]:
        project = self._project(account)
        envelope = {"model": gemini_model(request.model), "project": project,
                    **self._envelope(body, request)}
        envelope["request"] = self._inner(body, request)
        return envelope, headers

    def _envelope(self, body: dict[str, Any], request: ir.Request) -> dict[str, Any]:
        """The kind's own envelope fields (besides model, project and request)."""
        return {}

    def _inner(self, body: dict[str, Any], request: ir.Request) -> dict[str, Any]:
        """The Gemini body as the kind sends it inside the envelope."""
        return body

    def _unwrap(self, body: Any) -> Any:
        return unwrap(body)

    def _stream_parser(self) -> EnvelopeStreamParser:
        return EnvelopeStreamParser()

    def _count(self, request: ir.Request, account: Account) -> ApiCall:
        body, _ = self._body(request, stream=False)
        inner = body.get("generateContentRequest")
        if isinstance(inner, dict):  # a Gemini client's countTokens body, forwarded
            body = inner
        contents = body.get("contents") if isinstance(body.get("contents"), list) else []
        count = {"request": {"model": f"models/{gemini_model(request.model)}",
                             "contents": contents}}
        return ApiCall(method_url(self._base, "countTokens"), count,
                     self._headers(account, {}, accept="application/json"))

    def _headers(
        self, account: Account, client: Mapping[str, str], *, accept: str
    ) -> dict[str, str]:
        """ApiProvider's headers with the kind's: over the client's, under the entry's."""
        headers = super()._headers(account, client, accept=accept)
        configured = {k.lower() for k in self.config.headers}
        for name, value in self.service.headers.items():
            if name not in configured:
                headers[name] = value
        return headers

    # ----------------------------------------------------------------------------------------
    # Every answer once the account's project is known

    async def complete(self, request: ir.Request, account: Account) -> ir.Response:
        await self._ensure_project(account)
        return await super().complete(request, account)

    async def stream(self, request: ir.Request, account: Account) -> AsyncIterator[ir.Event]:
        await self._ensure_project(account)
        async with aclosing(super().stream(request, account)) as events:
            async for event in events:
                yield event

    # ----------------------------------------------------------------------------------------
    # The project

    def _project(self, account: Account) -> str | None:
        project = self.credentials(account).extras.get("project_id")
        return project if isinstance(project, str) and project else None

    async def _ensure_project(self, account: Account) -> None:
        """Discover and save the account's project if it has none (one discovery per
        account at a time; a 401 refreshes the token once).

        Raises:
          MuxError: the discovery failed (the account is not usable now).
        """
        if self._project(account):
            return
        lock = self._discovering.setdefault(account.id, trio.Lock())
        async with lock:
            if self._project(account):
                return
            authed = await self._token(account)
            try:
                with self._scrubbed(authed):
                    project = await discover_project(self._caller(authed), self.service.data)
            except MuxError as error:
                if error.status != 401:
                    raise
                authed = await self._token(account, stale=authed.secret)
                with self._scrubbed(authed):
                    project = await discover_project(self._caller(authed), self.service.data)
            self._save_project(account, project)

    def _caller(self, account: Account) -> Caller:
        async def call(method: str, body: dict[str, Any]) -> Any:
            reply = await self._upstreams.post(
                method_url(self._base, method), dumps(body),
                headers=self._headers(account, {}, accept="application/json"),
                provider=self.name, timeouts=self._timeouts, proxy_url=self.config.proxy_url,
            )
            return self._json(reply)

        return call

    def _save_project(self, account: Account, project: str) -> None:
        """Record the project in the account's credentials and its file (atomically)."""
        keeper = self.keeper(account)
        credentials = keeper.credentials
        updated = attrs.evolve(credentials, extras={**credentials.extras, "project_id": project})
        keeper.credentials = updated
        try:
            self._live.store.save(updated)
        except OSError as exc:
            # The project works for this run; the next one discovers it again.
            log.warning("%s account %s: cannot save its project id: %s", self.kind,
                        account.id, exc.strerror)

    # ----------------------------------------------------------------------------------------
    # Base URLs

    async def _falling_back(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, moved to the next base URL after a base's failure."""
        for i in range(len(self._bases)):
            base = self._base
            try:
                return await attempt()
            except MuxError as error:
                if not base_failure(error):
                    raise
                if i + 1 == len(self._bases):
                    raise overloaded(error) from None
                self._next_base(base, error)
        return await attempt()  # no base at all: the call says what is wrong

    def _next_base(self, failed: str, error: MuxError) -> None:
        if self._base != failed or failed not in self._bases:
            return  # another call moved on already
        self._base = self._bases[(self._bases.index(failed) + 1) % len(self._bases)]
        log.warning("%s: %s failed (%s); using %s", self.name, failed, error.message[:200],
                    self._base)


def overloaded(error: MuxError) -> MuxError:
    """A "no capacity" answer as OVERLOADED (retry soon elsewhere, not a quota cooldown)."""
    if not _no_capacity(error):
        return error
    return UpstreamError(ir.ErrorKind.OVERLOADED, error.message, status=503)


def gemini_model(model: str) -> str:
    """The model's name without Gemini's ``models/`` prefix."""
    return model.removeprefix("models/")


def session_id(body: Mapping[str, Any], prefix: str) -> str | None:
    """``prefix`` + the first 32 hex digits of the SHA-256 of the first user text of a
    Gemini body (None without one)."""
    for content in body.get("contents") or ():
        if not isinstance(content, dict) or content.get("role", "user") != "user":
            continue
        for part in content.get("parts") or ():
            text = part.get("text") if isinstance(part, dict) else None
            if isinstance(text, str) and text:
                return prefix + hashlib.sha256(text.encode()).hexdigest()[:32]
    return None
