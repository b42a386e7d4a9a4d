"""OAuth flows for subscription logins: PKCE, the local callback, pasted codes, device flows,
and token endpoint calls.

Provider modules (``mux.providers.claude``, ...) compose these; what each provider needs (URLs,
client ids, scopes) lives in ``mux.providers.catalog``, not here.

Errors::

    LoginError                          a login did not complete (refused, expired, timed out)
    mux.auth.RevokedError (UpstreamError)   a token endpoint answered invalid_grant
    mux.auth.RefreshError (UpstreamError)   a token endpoint failed otherwise

No message here ever contains a token, a code or a verifier: token endpoint errors are
scrubbed of every value that was sent.

The calls go through mux's own upstream client (:class:`mux.upstream.HttpClient`: the
entry's proxy, mux's TLS settings, :data:`mux.upstream.OAUTH_TIMEOUTS`); its UpstreamErrors
become RefreshError here, and LoginError in the device flow.

Authorization code flow (RFC 6749 4.1 with PKCE, RFC 7636): the provider's registered
redirect URI is a loopback URL on a fixed port, so :func:`wait_for_callback` listens there for
exactly one redirect. Where the browser runs on another machine than mux (a headless
server), that redirect goes nowhere; the user copies the URL from the address bar (or the
code the provider shows) and pastes it: :meth:`LoginContext.receive_code` races the two.

Device flow (RFC 8628): :func:`poll_device_token` polls at the server's interval, adding 5 s
on ``slow_down`` (section 3.5) until the user approves, denies, or the code expires.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import html
import json as jsonlib
import logging
import math
import secrets
import urllib.parse
import webbrowser
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from typing import Any

import attrs
import trio

from mux.auth import RefreshError, RevokedError
from mux.config import ProviderConfig
from mux.errors import UpstreamError
from mux.ir import ErrorKind
from mux.server import HttpRequest, HttpResponse, Limits, Server
from mux.upstream import HttpClient, scrub

__all__ = [
    "LoginContext",
    "LoginError",
    "code_from_pasted",
    "jwt_claims",
    "pkce",
    "poll_device_token",
    "post_token",
    "state_token",
    "upstream_reason",
    "url_overrides",
    "wait_for_callback",
    "where",
]

log = logging.getLogger("mux.oauth")

#: RFC 8628 3.5: "the interval MUST be increased by 5 seconds for this and all subsequent
#: requests" after slow_down.
SLOW_DOWN_STEP = 5.0
#: Token endpoint error codes that mean the grant is dead for good. ``invalid_grant`` is RFC
#: 6749's; OpenAI's auth server names the cases (see the Codex CLI's refresh handling).
REVOKED_CODES = frozenset({
    "invalid_grant", "refresh_token_expired", "refresh_token_reused",
    "refresh_token_invalidated",
})  # fmt: skip

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>mux</title></head>
<body style="font-family: sans-serif; margin: 4em auto; max-width: 40em">
<h1>{title}</h1><p>{text}</p></body></html>
"""


class LoginError(Exception):
    """A login did not complete; the message says why, for a person, without secrets."""


# ------------------------------------------------------------------------------------------
# Small pieces


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pkce() -> tuple[str, str]:
    """A PKCE pair (RFC 7636): ``(verifier, challenge)``, the challenge being
    BASE64URL(SHA256(verifier)) without padding (method ``S256``)."""
    verifier = _b64url(secrets.token_bytes(32))  # 43 characters, the minimum length
    challenge = _b64url(hashlib.sha256(verifier.encode("ascii")).digest())
    return verifier, challenge


def state_token() -> str:
    """A fresh, unguessable ``state`` value (CSRF protection of the redirect)."""
    return secrets.token_urlsafe(32)


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, decoded but NOT verified (for the claims of our own id_token).

    Raises:
      ValueError: the token is not a JWT with a JSON object payload (the message does not
        quote it).
    """
    parts = token.split(".")
    if len(parts) < 2:
        raise ValueError("not a JWT (expected header.payload.signature)")
    payload = parts[1]
    try:
        data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = jsonlib.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not a JWT (the payload is not base64url JSON)") from None
    if not isinstance(claims, dict):
        raise ValueError("not a JWT (the payload is not a JSON object)")
    return claims


def code_from_pasted(text: str, state: str | None) -> str:
    """The authorization code in what a user pasted: the full redirect URL (or its query), a
    ``code#state`` string as Claude's page shows it, or a bare code.

    Raises:
      LoginError: nothing usable, a redirect carrying ``error=``, or a state that is not
        ``state`` (when both are known).
    """
    text = text.strip()
    if not text:
        raise LoginError("nothing was pasted")
    if "code=" in text or "error=" in text or "://" in text:
        parsed = urllib.parse.urlsplit(text if "://" in text else "x://x/?" + text.lstrip("?"))
        params = dict(urllib.parse.parse_qsl(parsed.query))
        params.update(urllib.parse.parse_qsl(parsed.fragment))
        if "error" in params:
            raise LoginError(_refusal(params))
        code = params.get("code", "")
        got_state = params.get("state")
        if not code:
            raise LoginError("the pasted URL has no code= parameter; paste the whole URL")
    else:
        code, _, got_state = text.partition("#")
    if state is not None and got_state and got_state != state:
        raise LoginError("the pasted code belongs to another login attempt (state does not "
                         "match); use the URL printed by this one")
    if not code or any(c.isspace() for c in code):
        raise LoginError("that does not look like an authorization code")
    return code


def _refusal(params: Mapping[str, str]) -> str:
    error = params.get("error", "")
    detail = params.get("error_description", "")
    return f"the provider refused the login: {error}" + (f" ({detail})" if detail else "")


def url_overrides(config: ProviderConfig | None) -> dict[str, str]:
    """The URLs a ``[[providers]]`` entry overrides, by name: ``base-url``,
    ``oauth-authorize-url``, ``oauth-token-url``, ``oauth-device-url``, then its ``urls``."""
    if config is None:
        return {}
    found = {
        "base-url": config.base_url,
        "oauth-authorize-url": config.oauth_authorize_url,
        "oauth-token-url": config.oauth_token_url,
        "oauth-device-url": config.oauth_device_url,
    }
    urls = {name: url for name, url in found.items() if url}
    urls.update(config.urls)
    return urls


# ------------------------------------------------------------------------------------------
# The loopback redirect


@contextlib.contextmanager
def _unwrap_single() -> Iterator[None]:
    """A nursery's group of one plain exception (a port in use) as that exception, so callers
    can catch OSError."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
            raise group.exceptions[0] from None
        raise


async def wait_for_callback(
    port: int,
    path: str,
    *,
    state: str,
    timeout: float,
    host: str = "127.0.0.1",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> str:
    """Serve one OAuth redirect to ``http://{host}:{port}{path}`` and return its code.

    Requests to other paths get 404 and requests whose ``state`` does not match get 400
    (a stale tab, or someone else's redirect): both keep the server waiting. The browser is
    answered with a small page either way. ``task_status.started(port)`` once listening.

    Raises:
      LoginError: the redirect carried ``error=`` (the user declined), or none came within
        ``timeout`` seconds.
      OSError: the port cannot be bound (another program holds it).
    """
    outcome: list[str | LoginError] = []
    done = trio.Event()

    def page(status: int, title: str, text: str) -> HttpResponse:
        body = _PAGE.format(title=html.escape(title), text=html.escape(text)).encode()
        return HttpResponse(status=status, body=body, headers=[
            ("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store")])

    async def handle(request: HttpRequest) -> HttpResponse:
        if request.method != "GET" or request.path != path:
            return page(404, "Not found", "This is mux's login callback; nothing else is here.")
        if done.is_set():
            return page(409, "Already done", "This login has finished; you can close this tab.")
        params = request.query
        if params.get("state") != state:
            return page(400, "Login failed", "The state does not match this login attempt. "
                        "Start again from the URL mux printed.")
        if "error" in params:
            outcome.append(LoginError(_refusal(params)))
            done.set()
            return page(200, "Login failed", _refusal(params) + ". You can close this tab.")
        if not params.get("code"):
            return page(400, "Login failed", "The redirect carries no code.")
        outcome.append(params["code"])
        done.set()
        return page(200, "Logged in", "mux has your login. You can close this tab.")

    server = Server(handle, limits=Limits(keep_alive_timeout=1.0, graceful_timeout=2.0))
    with trio.move_on_after(timeout), _unwrap_single():
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(server.serve, host, port)
            task_status.started(bound)
            await done.wait()
            server.shutdown()  # the answer to the browser still goes out (graceful)
    if not outcome:
        raise LoginError(f"no login arrived at http://{host}:{port}{path} within {timeout:g}s")
    result = outcome[0]
    if isinstance(result, LoginError):
        raise result
    return result


# ------------------------------------------------------------------------------------------
# Token endpoints


#: Request fields that hold secrets, and fields that never do; any other long value is
#: treated as a secret too.
_SECRET_FIELDS = frozenset({
    "code", "code_verifier", "refresh_token", "access_token", "id_token", "device_code",
    "device_auth_id", "client_secret", "assertion", "subject_token", "password",
})  # fmt: skip
_PUBLIC_FIELDS = frozenset({"grant_type", "client_id", "redirect_uri", "scope", "scopes"})


def _sent_secrets(*payloads: Mapping[str, Any] | None) -> list[str]:
    """The values sent that must never appear in a message, longest first."""
    found = {
        value
        for payload in payloads if payload
        for key, value in payload.items()
        if isinstance(value, str) and value
        and (key in _SECRET_FIELDS or (len(value) >= 16 and key not in _PUBLIC_FIELDS))
    }
    return sorted(found, key=len, reverse=True)


def _error_fields(body: Any) -> tuple[str, str]:
    """``(code, description)`` of an OAuth error body (RFC 6749 5.2, or OpenAI's nested
    ``{"error": {"code", "message"}}``)."""
    if not isinstance(body, dict):
        return "", ""
    error = body.get("error")
    if isinstance(error, dict):
        code = error.get("code") or error.get("type") or ""
        detail = error.get("message") or ""
    else:
        code = error or ""
        detail = body.get("error_description") or body.get("message") or ""
    return str(code), str(detail)


def upstream_reason(error: UpstreamError) -> str:
    """What went wrong in ``error`` without the ``provider: host: `` the upstream client puts
    first (callers name the URL themselves): ``no answer within 30s``, ``cannot connect
    (...)``."""
    return error.message.split(": ", 2)[-1]


async def _post(
    client: HttpClient,
    url: str,
    *,
    json: Mapping[str, Any] | None,
    form: Mapping[str, str] | None,
    headers: Mapping[str, str] | None,
) -> tuple[int, Any]:
    """POST and decode; network failures and non-JSON answers raise RefreshError."""
    sent = _sent_secrets(json, form)
    place = where(url)
    request_headers = {"accept": "application/json", **(headers or {})}
    try:
        if form is not None:
            reply = await client.post_form(url, form, headers=request_headers)
        elif json is not None:
            reply = await client.post_json(url, dict(json), headers=request_headers)
        else:
            reply = await client.request("POST", url, headers=request_headers)
    except UpstreamError as error:
        reason = scrub(upstream_reason(error), sent)[:200]
        if error.kind is ErrorKind.TIMEOUT:
            raise RefreshError(f"{place}: {reason}") from None
        raise RefreshError(f"{place}: cannot reach the token endpoint ({reason})") from None
    try:
        body = reply.json()
    except ValueError:
        body = None
    if body is None and 200 <= reply.status < 300:
        raise RefreshError(f"{place}: the token endpoint answered {reply.status} "
                           "without JSON")
    return reply.status, body


def where(url: str, fallback: str = "token endpoint") -> str:
    """``url`` without its query, userinfo or fragment, for messages; ``fallback`` for a URL
    that cannot be read."""
    try:
        parsed = urllib.parse.urlsplit(url)
        port = f":{parsed.port}" if parsed.port else ""
    except ValueError:
        return fallback
    if not parsed.scheme or not parsed.hostname:
        return fallback
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


async def post_token(
    client: HttpClient,
    url: str,
    *,
    json: Mapping[str, Any] | None = None,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Call a token endpoint (JSON or form body) and return its JSON object.

    Raises:
      RevokedError: it answered ``invalid_grant`` (or OpenAI's refresh_token_expired /
        _reused / _invalidated): the grant is dead.
      RefreshError: anything else went wrong (network, 5xx, other errors, not JSON).
    """
    status, body = await _post(client, url, json=json, form=form, headers=headers)
    code, detail = _error_fields(body)
    if 200 <= status < 300 and isinstance(body, dict) and not code:
        return body
    sent = _sent_secrets(json, form)
    place = where(url)
    text = scrub(f"{code or 'error'}" + (f": {detail}" if detail else ""), sent)[:300]
    if code in REVOKED_CODES:
        raise RevokedError(f"{place} answered {status} {text}")
    raise RefreshError(f"{place} answered {status} {text}")


async def poll_device_token(
    client: HttpClient,
    url: str,
    *,
    json: Mapping[str, Any] | None = None,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    interval: float = 5.0,
    timeout: float = 900.0,
    pending_statuses: Collection[int] = (),
) -> dict[str, Any]:
    """Poll a device flow's token endpoint (RFC 8628 3.4-3.5) until the user approves.

    Args:
      interval: seconds between polls, from the device authorization answer.
      timeout: the device code's lifetime (``expires_in``).
      pending_statuses: HTTP statuses that mean "not yet" whatever the body says (OpenAI's
        device endpoint answers 403/404 while pending rather than ``authorization_pending``).

    Returns:
      The JSON object of the successful answer.

    Raises:
      LoginError: denied (``access_denied``), expired (``expired_token`` or ``timeout``), or
        an error answer; network failures too.
    """
    interval = max(float(interval), 0.0)
    with trio.move_on_after(timeout):
        while True:
            await trio.sleep(interval)
            try:
                status, body = await _post(client, url, json=json, form=form, headers=headers)
            except RefreshError as exc:
                raise LoginError(str(exc)) from None
            code, detail = _error_fields(body)
            if 200 <= status < 300 and isinstance(body, dict) and not code:
                return body
            if status in pending_statuses or code == "authorization_pending":
                continue
            if code == "slow_down":
                given = body.get("interval") if isinstance(body, dict) else None
                if isinstance(given, (int, float)) and not isinstance(given, bool) \
                        and math.isfinite(given) and given > interval:
                    interval = float(given)
                else:
                    interval += SLOW_DOWN_STEP
                log.debug("device flow: slow_down, polling every %gs", interval)
                continue
            if code == "expired_token":
                raise LoginError("the device code expired before the login was approved; "
                                 "run the login again")
            if code == "access_denied":
                raise LoginError("the login was denied")
            text = scrub((code or "error") + (f": {detail}" if detail else ""),
                         _sent_secrets(json, form))[:300]
            raise LoginError(f"{where(url)} answered {status} {text}")
    raise LoginError(f"the login was not approved within {timeout:g}s; run it again")


# ------------------------------------------------------------------------------------------
# What a provider's login gets


async def _read_line(prompt: str) -> str:
    # input() blocks: a worker thread, abandoned if the callback wins the race.
    return await trio.to_thread.run_sync(builtins.input, prompt, abandon_on_cancel=True)


@attrs.frozen(kw_only=True)
class LoginContext:
    """What ``mux login`` hands a provider's ``login(ctx)``.

    Attributes:
      http: the HTTP client (the entry's proxy-url applied: :meth:`mux.upstream.Upstreams.
        client`).
      provider: the ``[[providers]]`` entry of this type, if the config has one.
      urls: the URLs that entry overrides (:func:`url_overrides`); empty: the real ones.
      open_browser: open the browser (False: ``--no-browser``, only print the URL).
      device: use the device flow where the provider has one (``--device``).
      print: shows a line to the user.
      input: asks the user for a line (the paste fallback); EOFError/OSError: no terminal.
      browse: opens a URL in a browser; returns False if none could be.
      timeout: seconds the user has to finish in the browser.
    """

    http: HttpClient
    provider: ProviderConfig | None = None
    urls: Mapping[str, str] = attrs.field(factory=dict)
    open_browser: bool = True
    device: bool = False
    print: Callable[[str], None] = builtins.print
    input: Callable[[str], Awaitable[str]] = _read_line
    browse: Callable[[str], bool] = webbrowser.open
    timeout: float = 600.0

    def url(self, name: str, default: str) -> str:
        """The URL called ``name`` (e.g. ``oauth-token-url``), overridden or the default."""
        return self.urls.get(name, default)

    def show(self, url: str) -> None:
        """Open ``url`` in the browser (unless told not to), and print it either way."""
        opened = False
        if self.open_browser:
            try:
                opened = bool(self.browse(url))
            except Exception:  # no browser at all: printing is the fallback
                opened = False
        lead = "Your browser should open; if not, open" if opened else "Open"
        self.print(f"{lead} this URL to log in:\n\n  {url}\n")

    async def receive_code(
        self, authorize_url: str, *, port: int, path: str, state: str, host: str = "127.0.0.1"
    ) -> str:
        """Show ``authorize_url`` and wait for the code: from the redirect to the local
        callback server, or pasted by the user, whichever comes first.

        Raises:
          LoginError: refused, or nothing within ``timeout``.
        """
        self.show(authorize_url)
        outcome: list[str | LoginError] = []

        async with trio.open_nursery() as nursery:

            def finish(result: str | LoginError) -> None:
                outcome.append(result)
                nursery.cancel_scope.cancel()

            async def callback() -> None:
                try:
                    finish(await wait_for_callback(port, path, state=state, timeout=self.timeout,
                                                   host=host))
                except OSError as exc:
                    self.print(f"(cannot listen on {host}:{port} for the redirect: "
                               f"{exc.strerror or exc}; paste it instead)")
                except LoginError as exc:
                    finish(exc)

            async def paste() -> None:
                prompt = ("If the browser is on another machine, paste the URL it was sent to "
                          "(or the code it shows) here: ")
                while True:
                    try:
                        text = await self.input(prompt)
                    except (EOFError, OSError):
                        return  # no terminal: the redirect is the only way
                    try:
                        finish(code_from_pasted(text, state))
                        return
                    except LoginError as exc:
                        self.print(str(exc))

            nursery.start_soon(callback)
            nursery.start_soon(paste)
            nursery.cancel_scope.deadline = trio.current_time() + self.timeout
        if not outcome:
            raise LoginError(f"no login within {self.timeout:g}s")
        result = outcome[0]
        if isinstance(result, LoginError):
            raise result
        return result
