"""GitHub Copilot subscriptions: GitHub's device flow and the Copilot chat API.

Login is GitHub's device flow (RFC 8628) for the Copilot editor plugins' GitHub app: mux
prints a user code and ``github.com/login/device``, then polls GitHub's token endpoint
(``authorization_pending`` and ``slow_down`` come as 200 answers; :func:`mux.oauth.
poll_device_token` handles both) until the person approves. The GitHub token it gets is
long-lived: it is the account's ``refresh_token``, and the account is named after its GitHub
``login`` (``GET api.github.com/user``).

Copilot does not take the GitHub token itself: the refresher exchanges it for a short-lived
Copilot token (``GET api.github.com/copilot_internal/v2/token`` with ``Authorization: token
<github token>`` → ``{token, expires_at}``), which is the account's ``access_token``. The
auth core refreshes it before ``expires_at``, one exchange at a time per account; an upstream
401 forces one exchange and a retry. A 401 from the exchange means the GitHub token is dead
(revoked, or the app's authorization removed): the account is revoked.

Requests go to ``{base}/chat/completions`` in the OpenAI Chat format (ApiProvider's ``openai``
machinery: every client format is translated to it, an OpenAI client's body forwarded) with
the Copilot token as a Bearer and the editor headers the Copilot plugins send
(:data:`mux.providers.catalog.COPILOT`), plus a fresh ``x-request-id`` per call. The model
list is the catalog's, or with ``discover = true`` Copilot's own ``{base}/models`` (its chat
models).

``mux import copilot`` reads the editor plugins' ``~/.config/github-copilot/apps.json`` and
``hosts.json`` (``{"github.com[:client_id]": {"oauth_token", "user"}}``); an imported account
gets its first Copilot token when it is first used (or by the background refresh).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mux import ir
from mux.auth import AuthFileError, Accounts, Credentials, RefreshError, Refresher, RevokedError
from mux.config import ProviderConfig
from mux.errors import MuxError, UpstreamError
from mux.oauth import (
    LoginContext, LoginError, poll_device_token, post_token, upstream_reason, where,
)
from mux.providers import Account
from mux.providers.catalog import COPILOT
from mux.providers.subscriptions import SubscriptionProvider
from mux.upstream import HttpClient, Upstreams, scrub

__all__ = [
    "UNEXCHANGED",
    "CopilotProvider",
    "exchange",
    "github_login",
    "import_credentials",
    "login",
    "provider",
    "refresher",
]

log = logging.getLogger("mux.providers")

#: The access token of an imported account that has no Copilot token yet (it expired at 0:
#: the first use or the background refresh exchanges the GitHub token first).
UNEXCHANGED = "unexchanged"


# --------------------------------------------------------------------------------------------
# GitHub calls


async def _github_get(http: HttpClient, url: str, github_token: str) -> dict[str, Any]:
    """GET a GitHub API URL with the GitHub token (``Authorization: token``).

    Raises:
      RevokedError: 401: the GitHub token is no longer valid.
      RefreshError: unreachable, another error status, or not a JSON object.
    """
    place = where(url, "the GitHub API")
    headers = {**COPILOT.GITHUB_HEADERS, "authorization": f"token {github_token}"}
    try:
        reply = await http.get(url, headers=headers)
    except UpstreamError as error:
        reason = scrub(upstream_reason(error), [github_token])[:200]
        if error.kind is ir.ErrorKind.TIMEOUT:
            raise RefreshError(f"{place}: {reason}") from None
        raise RefreshError(f"{place}: cannot reach it ({reason})") from None
    try:
        body = reply.json()
    except ValueError:
        body = None
    if reply.status == 401:
        raise RevokedError(f"{place} answered 401: the GitHub token is no longer valid")
    if not 200 <= reply.status < 300 or not isinstance(body, dict):
        message = body.get("message") if isinstance(body, dict) else None
        text = scrub(str(message), [github_token])[:300] if message else "no JSON object"
        raise RefreshError(f"{place} answered {reply.status}: {text}")
    return body


async def github_login(http: HttpClient, url: str, github_token: str) -> str:
    """The GitHub login (user name) of ``github_token``.

    Raises:
      RevokedError, RefreshError: as :func:`_github_get`; RefreshError without a login.
    """
    body = await _github_get(http, url, github_token)
    name = body.get("login")
    if not isinstance(name, str) or not name:
        raise RefreshError(f"{where(url, 'the GitHub API')}: the answer has no login")
    return name


async def exchange(
    http: HttpClient, url: str, github_token: str, *, now: float
) -> tuple[str, float]:
    """A Copilot token for ``github_token``: ``(token, expires_at)``.

    Raises:
      RevokedError: 401: the GitHub token is dead.
      RefreshError: anything else (no Copilot subscription: 403/404, network, 5xx).
    """
    body = await _github_get(http, url, github_token)
    token = body.get("token")
    if not isinstance(token, str) or not token:
        raise RefreshError(f"{where(url, 'the GitHub API')}: the answer has no token")
    expires = body.get("expires_at")
    if isinstance(expires, (int, float)) and not isinstance(expires, bool) and expires > 0:
        return token, float(expires)
    return token, now + COPILOT.DEFAULT_TOKEN_LIFE


# --------------------------------------------------------------------------------------------
# Login and refresh


async def login(ctx: LoginContext, *, clock: Callable[[], float] = time.time) -> Credentials:
    """GitHub's device flow, then the account's name and its first Copilot token.

    Raises:
      LoginError: refused, expired, timed out, no Copilot for this GitHub account, or a
        GitHub call failed.
    """
    urls = {**COPILOT.URLS, **ctx.urls}
    try:
        answer = await post_token(ctx.http, urls["oauth-device-url"], form={
            "client_id": COPILOT.CLIENT_ID,
            "scope": " ".join(COPILOT.SCOPES),
        })
        device_code = answer.get("device_code")
        user_code = answer.get("user_code")
        verification = answer.get("verification_uri")
        if not all(isinstance(v, str) and v for v in (device_code, user_code, verification)):
            raise LoginError("GitHub's device flow answer has no device_code, user_code and "
                             "verification_uri")
        interval = _number(answer.get("interval"), 5.0)
        lifetime = _number(answer.get("expires_in"), COPILOT.DEVICE_TIMEOUT)
        ctx.show(str(verification))
        ctx.print(f"and enter this code: {user_code}\n(it expires in "
                  f"{lifetime / 60:.0f} minutes)")
        token = await poll_device_token(
            ctx.http, urls["oauth-token-url"],
            form={"client_id": COPILOT.CLIENT_ID, "device_code": str(device_code),
                  "grant_type": COPILOT.DEVICE_GRANT},
            interval=interval, timeout=lifetime,
        )
        github_token = token.get("access_token")
        if not isinstance(github_token, str) or not github_token:
            raise LoginError("GitHub's token answer has no access_token")
        name = await github_login(ctx.http, urls["user-url"], github_token)
        copilot_token, expires_at = await exchange(
            ctx.http, urls["token-exchange-url"], github_token, now=clock())
    except (RevokedError, RefreshError) as exc:
        raise LoginError(f"the login failed: {exc.message} (does this GitHub account have "
                         "Copilot?)") from None
    return Credentials(provider="copilot", account=name, access_token=copilot_token,
                       refresh_token=github_token, expires_at=expires_at,
                       extras={"login": name})


def _number(value: object, default: float) -> float:
    if isinstance(value, bool):
        return default
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def refresher(
    http: HttpClient, urls: Mapping[str, str], *, clock: Callable[[], float] = time.time
) -> Refresher:
    """Exchanges the account's GitHub token for a new Copilot token; a 401 (the GitHub token
    is dead) raises RevokedError."""
    exchange_url = {**COPILOT.URLS, **urls}["token-exchange-url"]

    async def refresh(credentials: Credentials) -> Credentials:
        if not credentials.refresh_token:
            raise RevokedError(f"copilot account {credentials.account} has no GitHub token")
        token, expires_at = await exchange(http, exchange_url, credentials.refresh_token,
                                           now=clock())
        return Credentials(provider="copilot", account=credentials.account, access_token=token,
                           refresh_token=credentials.refresh_token, expires_at=expires_at,
                           extras=dict(credentials.extras))

    return refresh


# --------------------------------------------------------------------------------------------
# The editor plugins' own files


def import_credentials(path: Path | None = None) -> list[Credentials]:
    """The GitHub logins the Copilot editor plugins saved: ``apps.json`` and ``hosts.json``
    in ``path`` if it is a directory (default ``~/.config/github-copilot``), else the file.
    Entries for hosts other than github.com (GitHub Enterprise) are skipped.

    Raises:
      AuthFileError: no such file in the directory, not JSON, no github.com login, or a key
        missing or of the wrong type (named, never its value).
      OSError: a file cannot be read.
    """
    path = Path(path or Path(COPILOT.IMPORT_PATH).expanduser())
    if path.is_dir():
        files = [path / name for name in COPILOT.IMPORT_FILES if (path / name).is_file()]
        if not files:
            raise AuthFileError(f"{path}: has no {' or '.join(COPILOT.IMPORT_FILES)}")
    else:
        files = [path]
    found: dict[str, Credentials] = {}
    for file in files:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise AuthFileError(f"{file}: not JSON (line {exc.lineno}, column {exc.colno})"
                                ) from None
        if not isinstance(data, dict):
            raise AuthFileError(f"{file}: (top level): expected an object")
        for key, entry in data.items():
            if key.split(":", 1)[0] != "github.com":
                log.info("%s: %s: not github.com: skipped", file, key)
                continue
            if not isinstance(entry, dict):
                raise AuthFileError(f"{file}: {key!r}: expected an object")
            for field in ("oauth_token", "user"):
                if not isinstance(entry.get(field), str) or not entry[field]:
                    raise AuthFileError(f"{file}: {key!r}.{field}: expected a non-empty string")
            user = entry["user"]
            found.setdefault(user, Credentials(
                provider="copilot", account=user, access_token=UNEXCHANGED,
                refresh_token=entry["oauth_token"], expires_at=0.0, extras={"login": user},
            ))
    if not found:
        raise AuthFileError(f"{path}: no github.com login (is this the Copilot plugins' "
                            "apps.json or hosts.json?)")
    return list(found.values())


# --------------------------------------------------------------------------------------------
# Requests


class CopilotProvider(SubscriptionProvider):
    """GitHub Copilot subscription accounts; see the module docstring."""

    kind = "copilot"
    api = "openai"
    default_models = COPILOT.MODELS

    def quota_scope(self, model: str) -> str | None:
        """The premium-request quota and rate limits are the account's, for every model."""
        return None

    def _generate_url(self, request: ir.Request, *, stream: bool) -> str:
        return self._base + "/chat/completions"

    def _headers(
        self, account: Account, client: Mapping[str, str], *, accept: str
    ) -> dict[str, str]:
        """ApiProvider's headers with the editor's: over the client's, under the entry's."""
        headers = super()._headers(account, client, accept=accept)
        configured = {k.lower() for k in self.config.headers}
        for name, value in COPILOT.HEADERS.items():
            if name not in configured:
                headers[name] = value
        headers["x-request-id"] = str(uuid.uuid4())
        return headers

    async def discover(self) -> list[str]:
        """Copilot's chat models (``{base}/models``), with the first account's token; they
        replace the catalog's defaults when the entry lists none. Without an account, or on
        failure (logged), nothing changes."""
        keepers = self._live.keepers(self.kind)
        if not keepers:
            log.info("%s: no copilot account yet: serving the catalog's models", self.name)
            return []
        account = Account(provider=self.name, id=keepers[0].account)
        try:
            authed = await self._token(account)
            with self._scrubbed(authed):
                names = await self._list_models(authed)
        except MuxError as error:
            log.warning("%s: model discovery failed: %s", self.name, error.message)
            return []
        names = list(dict.fromkeys(names))
        if names and not self.config.models:
            self._models = {}
        self._discovered = tuple(names)
        log.info("%s: discovered %d models", self.name, len(names))
        return names

    async def _list_models(self, account: Account) -> list[str]:
        """Raises: MuxError."""
        reply = await self._upstreams.get(
            self._base + "/models",
            headers=self._headers(account, {}, accept="application/json"),
            provider=self.name, timeouts=self._timeouts, proxy_url=self.config.proxy_url,
        )
        body = self._json(reply)
        names: list[str] = []
        for model in (body.get("data") if isinstance(body, dict) else None) or ():
            if not isinstance(model, dict) or not isinstance(model.get("id"), str):
                continue
            capabilities = model.get("capabilities")
            type_ = capabilities.get("type") if isinstance(capabilities, dict) else None
            if type_ in (None, "chat"):  # not the embedding models
                names.append(model["id"])
        return names


def provider(
    config: ProviderConfig, upstreams: Upstreams, accounts: Accounts
) -> CopilotProvider:
    """The provider of a ``type = "copilot"`` entry."""
    return CopilotProvider(config, upstreams, accounts)
