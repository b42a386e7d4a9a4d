"""The claude provider, through real sockets: login, refresh, import, requests, quota.

The service is tests/fake_oauth.py's loopback fake of Claude's OAuth endpoints and its
Messages API (it checks PKCE, the JSON token bodies, the bearer token, the oauth beta, the
Claude Code identity and ``metadata.user_id``). Clients are raw HTTP requests in each format
(tests/test_matrix.py's clients), through mux in-process.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from mux.auth import Accounts, AuthFileError, AuthStore, Credentials
from mux.oauth import LoginContext, LoginError
from mux.providers import claude
from mux.providers.catalog import CLAUDE
from mux.providers.subscriptions import REGISTRY, endpoint_urls, refreshers
from mux.router import AccountState
from mux.upstream import Upstreams
from tests.fake_oauth import FakeService, save_account, start_gateway, start_service
from tests.test_matrix import CLIENTS, FINISH
from tests.upstreams import Answer, Fail

STEP = 10
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real-clients"
USER_TEXT = "What is the weather in Paris?"


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    async with Upstreams(trust_env=False) as clients:
        yield clients


@pytest.fixture
async def service(nursery: trio.Nursery) -> FakeService:
    service = await start_service(nursery, "claude")
    service.add_account("ada@example.com", "uuid-ada")
    service.add_account("bob@example.com", "uuid-bob")
    return service


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------
# Login


async def never(prompt: str) -> str:
    await trio.sleep_forever()
    raise AssertionError  # pragma: no cover


async def browse_when_listening(url: str, http: httpx.AsyncClient) -> httpx.Response:
    """What the browser does: open the authorize URL and follow the redirect to mux's
    callback server (retrying while that server is not listening yet)."""
    for _ in range(200):
        try:
            return await http.get(url, follow_redirects=True)
        except httpx.ConnectError:
            await trio.sleep(0.01)
    raise AssertionError("the callback server never listened")


async def test_login_through_the_browser_redirect(
    nursery: trio.Nursery, service: FakeService, upstreams: Upstreams
) -> None:
    service.redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    opened: list[str] = []
    printed: list[str] = []
    ctx = LoginContext(http=upstreams.client(), urls=service.urls, input=never,
                       browse=lambda url: opened.append(url) or True, print=printed.append,
                       timeout=STEP)
    result: list[Credentials] = []

    async def run_login() -> None:
        result.append(await claude.login(ctx))

    with trio.fail_after(STEP):
        async with trio.open_nursery() as inner:
            inner.start_soon(run_login)
            while not opened:
                await trio.sleep(0.01)
            async with httpx.AsyncClient(trust_env=False) as browser:
                page = await browse_when_listening(opened[0], browser)
    assert page.status_code == 200 and "close this tab" in page.text
    (credentials,) = result
    assert credentials.provider == "claude" and credentials.account == "ada@example.com"
    assert credentials.access_token == service.accounts["ada@example.com"].access
    assert credentials.refresh_token == service.accounts["ada@example.com"].refresh
    assert credentials.extras["account_uuid"] == "uuid-ada"
    assert credentials.expires_at is not None
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(opened[0]).query))
    assert query["code"] == "true" and query["client_id"] == CLAUDE.CLIENT_ID
    # The exchange was JSON, with the verifier the fake checked against the challenge.
    (exchange,) = [r for r in service.oauth_requests if r.method == "POST"]
    assert exchange.headers["content-type"].startswith("application/json")
    assert json.loads(exchange.body)["grant_type"] == "authorization_code"
    assert credentials.access_token not in "".join(printed)


async def test_login_with_a_pasted_code_hash_state(
    service: FakeService, upstreams: Upstreams
) -> None:
    """The page's ``code#state`` pasted in the terminal (a browser on another machine)."""
    service.redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    opened: list[str] = []

    async def paste(prompt: str) -> str:
        while not opened:
            await trio.sleep(0.01)
        async with httpx.AsyncClient(trust_env=False) as browser:
            answer = await browser.get(opened[0])  # the redirect is not followed
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(
            answer.headers["location"]).query))
        return f"{query['code']}#{query['state']}"

    ctx = LoginContext(http=upstreams.client(), urls=service.urls, input=paste,
                       browse=lambda url: opened.append(url) or True, print=lambda _: None,
                       timeout=STEP)
    with trio.fail_after(STEP):
        credentials = await claude.login(ctx)
    assert credentials.account == "ada@example.com"


async def test_a_denied_login_is_a_login_error(
    nursery: trio.Nursery, service: FakeService, upstreams: Upstreams
) -> None:
    service.redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    service.deny = True
    opened: list[str] = []
    ctx = LoginContext(http=upstreams.client(), urls=service.urls, input=never,
                       browse=lambda url: opened.append(url) or True, print=lambda _: None,
                       timeout=STEP)

    async def browser() -> None:
        while not opened:
            await trio.sleep(0.01)
        async with httpx.AsyncClient(trust_env=False) as http:
            await browse_when_listening(opened[0], http)

    nursery.start_soon(browser)
    with trio.fail_after(STEP), pytest.raises(LoginError, match="access_denied"):
        await claude.login(ctx)


# --------------------------------------------------------------------------------------------
# Import


def test_import_claude_code_credentials(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    path = home / ".claude" / ".credentials.json"
    path.write_text(json.dumps({"claudeAiOauth": {
        "accessToken": "sk-ant-oat01-aaa", "refreshToken": "sk-ant-ort01-bbb",
        "expiresAt": 1_900_000_000_000, "scopes": ["user:inference", "user:profile"],
        "subscriptionType": "max"}}))
    (home / ".claude.json").write_text(json.dumps({"oauthAccount": {
        "emailAddress": "ada@example.com", "accountUuid": "uuid-ada"}}))
    (credentials,) = REGISTRY["claude"].import_credentials(path)
    assert credentials == Credentials(
        provider="claude", account="ada@example.com", access_token="sk-ant-oat01-aaa",
        refresh_token="sk-ant-ort01-bbb", expires_at=1_900_000_000.0,
        extras={"plan": "max", "scopes": "user:inference user:profile",
                "email": "ada@example.com", "account_uuid": "uuid-ada"})
    # Without the profile the account gets a stable name that is not the token.
    (home / ".claude.json").unlink()
    (anonymous,) = claude.import_credentials(path)
    assert anonymous.account.startswith("claude-") and "bbb" not in anonymous.account
    default = Path("~/.claude/.credentials.json").expanduser()
    assert REGISTRY["claude"].default_import_path == default


@pytest.mark.parametrize(("content", "key"), [
    ("{", "not JSON"),
    ('{"other": {}}', "claudeAiOauth"),
    ('{"claudeAiOauth": {"refreshToken": "sk-secret-1"}}', "claudeAiOauth.accessToken"),
    ('{"claudeAiOauth": {"accessToken": "sk-secret-1", "expiresAt": "soon"}}',
     "claudeAiOauth.expiresAt"),
])
def test_a_bad_claude_code_file_names_the_key_not_the_value(
    tmp_path: Path, content: str, key: str
) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(content)
    with pytest.raises(AuthFileError, match=key) as caught:
        claude.import_credentials(path)
    assert "sk-secret-1" not in str(caught.value) and str(path) in str(caught.value)


# --------------------------------------------------------------------------------------------
# Requests: shape, refresh, 401, revocation


async def gateway(nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path,
                  service: FakeService, *emails: str, expires_in: float = 3600.0,
                  extra: str = "", poll: float | None = None) -> Any:
    store = AuthStore(tmp_path / "auth")
    for email in emails:
        save_account(store, service, email, expires_in=expires_in)
    entry = service.entry("claude", 'models = ["claude-sonnet-4-5"]', extra)
    return await start_gateway(nursery, upstreams, tmp_path / "auth", entry, poll=poll)


async def ask(url: str, body: dict[str, Any], headers: dict[str, str] | None = None
              ) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=STEP) as http:
        return await http.post("/v1/messages", json=body, headers=headers or {})


def message(stream: bool = False, **more: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": stream,
            "messages": [{"role": "user", "content": USER_TEXT}], **more}


@pytest.mark.parametrize("stream", [False, True])
async def test_an_anthropic_client_gets_the_oauth_shape(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
    stream: bool,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    service.api.push(Answer(text="Sunny", chunks=1))
    with trio.fail_after(STEP):
        body = message(stream, system="Be brief.", betas=["files-api-2025-04-14"])
        answer = await ask(mux.url, body, {"anthropic-beta": "context-1m-2025-08-07"})
    assert answer.status_code == 200, answer.text
    assert "Sunny" in answer.text
    received = service.api.last
    assert received.path == "/v1/messages" and received.query == {"beta": "true"}
    ada = service.accounts["ada@example.com"]
    assert received.headers["authorization"] == f"Bearer {ada.access}"
    assert "x-api-key" not in received.headers
    assert received.headers["anthropic-beta"].split(",") == [
        "context-1m-2025-08-07", "files-api-2025-04-14", CLAUDE.OAUTH_BETA]
    assert received.headers["anthropic-version"] == CLAUDE.ANTHROPIC_VERSION
    assert received.headers["user-agent"].startswith("claude-cli/")
    assert received.body["system"] == [{"type": "text", "text": CLAUDE.IDENTITY},
                                       {"type": "text", "text": "Be brief."}]
    user = json.loads(received.body["metadata"]["user_id"])
    assert set(user) == {"device_id", "account_uuid", "session_id"}
    assert len(user["device_id"]) == 64 and user["account_uuid"] == "uuid-ada"
    assert "betas" not in received.body


@pytest.mark.parametrize("stream", [False, True])
async def test_a_claude_code_body_goes_through_untouched(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
    stream: bool,
) -> None:
    """Claude Code's own body (its system prompt, metadata, thinking settings, unmodelled
    fields) reaches the OAuth API as sent: only model and stream change."""
    fixture = json.loads((FIXTURES / "claude-code-messages.json").read_text())
    body = {**fixture["body"], "model": "claude-sonnet-4-5", "stream": stream}
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    service.api.push(Answer(text="ok"))
    headers = {"anthropic-beta": fixture["headers"]["anthropic-beta"],
               "anthropic-version": "2023-06-01"}
    with trio.fail_after(STEP):
        answer = await ask(mux.url, body, headers)
    assert answer.status_code == 200, answer.text
    received = service.api.last
    expected = dict(body)
    if not stream:
        del expected["stream"]
    assert received.body == expected
    assert received.headers["anthropic-beta"] == (
        fixture["headers"]["anthropic-beta"] + "," + CLAUDE.OAUTH_BETA)


async def test_an_expired_token_is_refreshed_before_the_request_and_saved(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        expires_in=-10)
    old = mux.store.load_all()[0]
    with trio.fail_after(STEP):
        answer = await ask(mux.url, message())
    assert answer.status_code == 200, answer.text
    assert service.refreshes == 1
    (saved,) = mux.store.load_all()
    ada = service.accounts["ada@example.com"]
    # The rotated refresh token reached the file; the request used the new access token.
    assert saved.refresh_token == ada.refresh != old.refresh_token
    assert service.api.last.headers["authorization"] == f"Bearer {ada.access}"
    assert saved.extras["account_uuid"] == "uuid-ada"
    assert stat.S_IMODE(os.stat(mux.store.path_for("claude", "ada@example.com")).st_mode) == 0o600


@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_401_refreshes_once_and_retries(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
    stream: bool,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    service.expire_access("ada@example.com")  # revoked early (another login, say)
    with trio.fail_after(STEP):
        answer = await ask(mux.url, message(stream))
    assert answer.status_code == 200, answer.text
    assert service.refreshes == 1
    assert len(service.api.requests) == 2
    assert mux.state("ada@example.com") is AccountState.OK


async def test_concurrent_requests_share_one_refresh(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        expires_in=-10)
    service.refresh_delay = 0.2
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await ask(mux.url, message())).status_code)

    with trio.fail_after(STEP):
        async with trio.open_nursery() as inner:
            for _ in range(10):
                inner.start_soon(one)
    assert statuses == [200] * 10
    assert service.refreshes == 1


async def test_the_background_task_refreshes_before_expiry(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
) -> None:
    """Within ``refresh-lead`` of expiry the token is refreshed with no request at all."""
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        expires_in=60, poll=0.02)  # the default lead is 300 s
    with trio.fail_after(STEP):
        while service.refreshes == 0:
            await trio.sleep(0.02)
        while mux.store.load_all()[0].refresh_token != service.accounts["ada@example.com"].refresh:
            await trio.sleep(0.02)
    # The new token lives the service's full hour, where the old one had a minute left.
    assert mux.store.load_all()[0].expires_at > time.time() + 3000


async def test_invalid_grant_revokes_the_account_and_routing_skips_it(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        "bob@example.com", extra='priority = 1')
    service.revoke("ada@example.com")
    with trio.fail_after(STEP):
        for _ in range(3):
            answer = await ask(mux.url, message())
            assert answer.status_code == 200, answer.text
    keepers = mux.accounts.keepers("claude")
    assert [k.account for k in keepers] == ["bob@example.com"]
    (ada,) = [k for k in mux.accounts.all() if k.account == "ada@example.com"]
    assert ada.state == "revoked"
    bob = service.accounts["bob@example.com"].access
    assert {r.headers["authorization"] for r in service.api.requests[1:]} == {f"Bearer {bob}"}
    # The file says so (for `mux status`, and for a restarted mux).
    saved = json.loads(mux.store.path_for("claude", "ada@example.com").read_text())
    assert saved["state"] == "revoked"


async def test_a_new_account_file_is_served_without_restart(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, poll=0.02)
    with trio.fail_after(STEP):
        assert (await ask(mux.url, message())).status_code == 404
        save_account(mux.store, service, "ada@example.com")
        while not mux.accounts.keepers("claude"):
            await trio.sleep(0.02)
        answer = await ask(mux.url, message())
    assert answer.status_code == 200, answer.text


# --------------------------------------------------------------------------------------------
# Quota


async def test_a_quota_429_cools_the_account_and_fails_over(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        "bob@example.com", extra="priority = 1")
    reset = int(time.time()) + 4 * 3600
    service.api.push(Fail(status=429, message="Rate limited", headers={
        "anthropic-ratelimit-unified-status": "rejected",
        "anthropic-ratelimit-unified-reset": str(reset)}))
    with trio.fail_after(STEP):
        answer = await ask(mux.url, message())
    assert answer.status_code == 200, answer.text
    first, second = service.api.requests
    assert first.headers["authorization"] != second.headers["authorization"]
    (status,) = [s for s in mux.router.status() if s.account == "ada@example.com"]
    assert status.state is AccountState.COOLING
    remaining = max(c.remaining for c in status.cooldowns)
    assert 4 * 3600 - 60 <= remaining <= 4 * 3600  # the named reset is honoured, not capped


# --------------------------------------------------------------------------------------------
# Every client format


def _client_cases() -> list[Any]:
    return [pytest.param(c.name, mode, id=f"{c.name}-{mode}")
            for c in CLIENTS.values() for mode in c.stream_modes]


@pytest.mark.parametrize(("client", "mode"), _client_cases())
async def test_every_client_format_reaches_claude(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
    client: str, mode: str,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    service.api.push(Answer(text="Héllo — sunny ☀", chunks=3))
    format_ = CLIENTS[client]
    async with httpx.AsyncClient(base_url=mux.url, trust_env=False, timeout=STEP) as http:
        with trio.fail_after(STEP):
            answered = await format_.send(http, "claude-sonnet-4-5", mode, False)
    assert answered.text == "Héllo — sunny ☀"
    assert answered.finish == FINISH[client][0]
    (received,) = service.api.requests
    assert received.body["system"][0] == {"type": "text", "text": CLAUDE.IDENTITY}
    assert received.body.get("stream", False) is (mode != "whole")


async def test_count_tokens_goes_to_the_oauth_endpoint(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    service.api.push(Answer(input_tokens=42))
    async with httpx.AsyncClient(base_url=mux.url, trust_env=False, timeout=STEP) as http:
        answer = await http.post("/v1/messages/count_tokens", json={
            "model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["input_tokens"] == 42
    received = service.api.last
    assert received.path == "/v1/messages/count_tokens" and received.query == {"beta": "true"}
    assert "metadata" not in received.body


# --------------------------------------------------------------------------------------------
# Units


def test_identity_goes_first_and_keeps_the_callers_system() -> None:
    identity = {"type": "text", "text": CLAUDE.IDENTITY}
    assert claude.with_identity(None) == [identity]
    assert claude.with_identity("Be brief.") == [identity, {"type": "text", "text": "Be brief."}]
    blocks = [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}]
    assert claude.with_identity(blocks) == [identity, *blocks]
    own = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=1;"},
           {"type": "text", "text": CLAUDE.KNOWN_IDENTITIES[2]}]
    assert claude.with_identity(own) is own


def test_urls_are_overridable_by_config_names() -> None:
    from mux.config import ProviderConfig

    entry = ProviderConfig(name="c", type="claude", base_url="http://x",
                           oauth_token_url="http://t", urls={"redirect-uri": "http://r"})
    urls = endpoint_urls("claude", entry)
    assert urls["base-url"] == "http://x" and urls["oauth-token-url"] == "http://t"
    assert urls["redirect-uri"] == "http://r"
    assert urls["oauth-authorize-url"] == CLAUDE.URLS["oauth-authorize-url"]


async def test_a_refresh_never_shows_the_tokens(
    service: FakeService, upstreams: Upstreams
) -> None:
    from mux.auth import RevokedError

    refresh = refreshers(_config(service), upstreams)["claude"]
    dead = Credentials(provider="claude", account="ada@example.com", access_token="sk-ant-A",
                       refresh_token="sk-ant-ort01-dead-refresh-token")
    with pytest.raises(RevokedError) as caught:
        await refresh(dead)
    assert "dead-refresh-token" not in str(caught.value)


def _config(service: FakeService) -> Any:
    import tomllib

    from mux.config import parse_config

    return parse_config(tomllib.loads(service.entry()))


def test_account_ids_carry_no_secret(tmp_path: Path) -> None:
    store = AuthStore(tmp_path)
    store.save(Credentials(provider="claude", account="ada@example.com", access_token="sk-1",
                           refresh_token="sk-2"))
    accounts = Accounts(store, {})
    from mux.config import ProviderConfig

    provider = claude.provider(ProviderConfig(name="claude", type="claude"), Upstreams(),
                               accounts)
    (account,) = provider.accounts()
    assert account.id == "ada@example.com" and account.secret == ""
    assert [m.id for m in provider.models()] == list(CLAUDE.MODELS)
    assert provider.upstream_model("claude-sonnet-4-5") == "claude-sonnet-4-5"
