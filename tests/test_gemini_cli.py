"""The gemini-cli provider (and what it shares with antigravity, mux/providers/code_assist.py),
through real sockets: login with the callback hit, project onboarding, refresh, import, the
v1internal envelope both ways, quota, and every client format.

The service is tests/fake_oauth.py's :class:`FakeGoogle`: Google's OAuth endpoints (client id
AND secret, PKCE, redirect URI, form bodies, non-rotating refresh tokens) and the Code Assist
API (bearer, Gemini CLI's headers, the envelope and the account's project, answers wrapped in
``{"response": ...}`` whole and per SSE event).
"""

from __future__ import annotations

import json
import time
import tomllib
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from mux.auth import AuthFileError, AuthStore, Credentials, RevokedError
from mux.config import parse_config
from mux.oauth import LoginContext
from mux.providers import catalog, code_assist, gemini_cli
from mux.providers.catalog import GEMINI_CLI
from mux.providers.subscriptions import REGISTRY, endpoint_urls, refreshers
from mux.router import AccountState
from mux.upstream import Upstreams
from tests.fake_oauth import FakeGoogle, jwt, save_google, start_gateway, start_google
from tests.test_claude import browse_when_listening, free_port, never
from tests.test_matrix import CLIENTS, FINISH
from tests.upstreams import Answer, Fail

STEP = 10
MODEL = "gemini-2.5-pro"


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    async with Upstreams(trust_env=False) as clients:
        yield clients


@pytest.fixture(autouse=True)
def fast_onboarding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog.GOOGLE, "ONBOARD_POLL", 0.01)


@pytest.fixture
async def service(nursery: trio.Nursery) -> FakeGoogle:
    service = await start_google(nursery, "gemini-cli")
    service.add_account("ada@example.com")
    service.add_account("bob@example.com")
    return service


async def run_login(login: Any, service: FakeGoogle, upstreams: Upstreams,
                    printed: list[str] | None = None) -> tuple[Credentials, str]:
    """Run ``login`` with the browser played by the test: it opens the authorize URL and
    follows the redirect to mux's callback. Returns the credentials and the URL opened."""
    path = urllib.parse.urlsplit(service.data.REDIRECT_URI).path
    service.redirect_uri = f"http://127.0.0.1:{free_port()}{path}"
    opened: list[str] = []
    ctx = LoginContext(http=upstreams.client(), urls=service.urls, input=never,
                       browse=lambda url: opened.append(url) or True,
                       print=(printed if printed is not None else []).append, timeout=STEP)
    result: list[Credentials] = []

    async def run() -> None:
        result.append(await login(ctx))

    with trio.fail_after(STEP):
        async with trio.open_nursery() as inner:
            inner.start_soon(run)
            while not opened:
                await trio.sleep(0.01)
            async with httpx.AsyncClient(trust_env=False) as browser:
                page = await browse_when_listening(opened[0], browser)
                assert page.status_code == 200, page.text
    return result[0], opened[0]


def form(body: bytes) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(body.decode()))


# --------------------------------------------------------------------------------------------
# Login, refresh


async def test_login_through_the_browser_redirect_onboards_the_project(
    service: FakeGoogle, upstreams: Upstreams
) -> None:
    service.accounts["ada@example.com"].onboarded = False
    credentials, opened = await run_login(gemini_cli.login, service, upstreams)
    ada = service.accounts["ada@example.com"]
    assert credentials.provider == "gemini-cli" and credentials.account == "ada@example.com"
    assert credentials.access_token == ada.access and credentials.refresh_token == ada.refresh
    assert credentials.extras == {"email": "ada@example.com", "project_id": ada.project}
    assert credentials.expires_at == pytest.approx(time.time() + 3599, abs=5)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(opened).query))
    assert query["access_type"] == "offline" and query["prompt"] == "consent"
    assert query["client_id"] == GEMINI_CLI.CLIENT_ID
    (exchange,) = [r for r in service.oauth_requests if r.method == "POST"]
    sent = form(exchange.body)
    assert exchange.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert sent["client_secret"] == GEMINI_CLI.CLIENT_SECRET
    assert sent["grant_type"] == "authorization_code" and sent["code_verifier"]
    # loadCodeAssist (no tier), then onboardUser: not done at the first poll, done at the next
    load, *polls = service.api.setup_requests
    assert load.path == "/v1internal:loadCodeAssist"
    assert [p.path for p in polls] == ["/v1internal:onboardUser"] * 2
    assert polls[0].body == {"tierId": "free-tier", "metadata": dict(GEMINI_CLI.METADATA)}
    assert load.headers["authorization"] == f"Bearer {ada.access}"
    assert load.headers["client-metadata"] == GEMINI_CLI.HEADERS["client-metadata"]


async def test_a_failed_project_discovery_still_logs_in(
    service: FakeGoogle, upstreams: Upstreams, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog.GOOGLE, "ONBOARD_TIMEOUT", 0.0)
    service.accounts["ada@example.com"].onboarded = False
    printed: list[str] = []
    credentials, _ = await run_login(gemini_cli.login, service, upstreams, printed)
    assert "project_id" not in credentials.extras  # found at the first request instead
    assert any("onboardUser did not finish" in line for line in printed)


async def test_refresh_keeps_the_refresh_token_google_does_not_rotate(
    service: FakeGoogle, upstreams: Upstreams
) -> None:
    config = parse_config(tomllib.loads(service.entry()))
    refresh = refreshers(config, upstreams)["gemini-cli"]
    tokens = service.issue("ada@example.com")
    old = Credentials(provider="gemini-cli", account="ada@example.com",
                      access_token=tokens["access_token"], refresh_token=tokens["refresh_token"],
                      expires_at=0.0, extras={"email": "ada@example.com", "project_id": "p"})
    new = await refresh(old)
    assert new.refresh_token == old.refresh_token and new.access_token != old.access_token
    assert new.extras == old.extras and new.expires_at > time.time() + 3000
    sent = form(service.oauth_requests[-1].body)
    assert sent == {"grant_type": "refresh_token", "refresh_token": old.refresh_token,
                    "client_id": GEMINI_CLI.CLIENT_ID, "client_secret": GEMINI_CLI.CLIENT_SECRET}
    service.revoke("ada@example.com")
    with pytest.raises(RevokedError) as caught:
        await refresh(old)
    assert old.refresh_token not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Import


def test_import_oauth_creds_json(tmp_path: Path) -> None:
    path = tmp_path / "oauth_creds.json"
    path.write_text(json.dumps({
        "access_token": "ya29.x", "refresh_token": "1//0g-r", "scope": "openid",
        "token_type": "Bearer", "id_token": jwt({"email": "ada@example.com"}),
        "expiry_date": 1_900_000_000_123,
    }))
    (credentials,) = REGISTRY["gemini-cli"].import_credentials(path)
    assert credentials.provider == "gemini-cli" and credentials.account == "ada@example.com"
    assert credentials.access_token == "ya29.x" and credentials.refresh_token == "1//0g-r"
    assert credentials.expires_at == pytest.approx(1_900_000_000.123)
    assert credentials.extras == {"email": "ada@example.com", "scopes": "openid"}
    assert REGISTRY["gemini-cli"].default_import_path == \
        Path("~/.gemini/oauth_creds.json").expanduser()
    # Without an id_token the account is google_accounts.json's active one.
    path.write_text(json.dumps({"access_token": "ya29.x", "refresh_token": "1//0g-r"}))
    (tmp_path / "google_accounts.json").write_text(json.dumps({"active": "bob@example.com",
                                                                "old": []}))
    (credentials,) = gemini_cli.import_credentials(path)
    assert credentials.account == "bob@example.com" and credentials.expires_at is None


@pytest.mark.parametrize(("content", "key"), [
    ('{"refresh_token": "1//secret-1"}', "access_token"),
    ('{"access_token": "ya29.secret-1", "expiry_date": "soon"}', "expiry_date"),
    ('{"access_token": "ya29.secret-1", "refresh_token": 5}', "refresh_token"),
    ('["ya29.secret-1"]', "top level"),
    ("{", "not JSON"),
])
def test_a_bad_gemini_file_names_the_key_not_the_value(
    tmp_path: Path, content: str, key: str
) -> None:
    path = tmp_path / "oauth_creds.json"
    path.write_text(content)
    with pytest.raises(AuthFileError, match=key) as caught:
        gemini_cli.import_credentials(path)
    assert "secret-1" not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Requests


async def gateway(nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path,
                  service: FakeGoogle, *emails: str, project: bool = True,
                  expires_in: float = 3599.0, model: str = MODEL) -> Any:
    store = AuthStore(tmp_path / "auth")
    for email in emails:
        save_google(store, service, email, project=project, expires_in=expires_in)
    return await start_gateway(nursery, upstreams, tmp_path / "auth",
                               service.entry(None, f'models = ["{model}"]'))


async def generate(url: str, model: str = MODEL, *, stream: bool = False,
                   text: str = "Weather in Paris?") -> httpx.Response:
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": text}]}],
            "generationConfig": {"temperature": 0.2}}
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=STEP) as http:
        return await http.post(f"/v1beta/models/{model}:{action}", json=body)


def streamed_text(answer: httpx.Response) -> str:
    chunks = [json.loads(line[6:]) for line in answer.text.splitlines()
              if line.startswith("data: ")]
    assert all("response" not in c for c in chunks)  # unwrapped
    return "".join(p.get("text", "") for c in chunks for cand in c.get("candidates", ())
                   for p in cand.get("content", {}).get("parts", ()))


@pytest.mark.parametrize("stream", [False, True])
async def test_a_gemini_client_goes_out_in_the_envelope_and_comes_back_unwrapped(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeGoogle,
    stream: bool,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    service.api.push(Answer(text="Sunny", chunks=2))
    with trio.fail_after(STEP):
        answer = await generate(mux.url, stream=stream)
    assert answer.status_code == 200, answer.text
    if stream:
        assert streamed_text(answer) == "Sunny"
    else:
        body = answer.json()
        assert "response" not in body
        assert body["candidates"][0]["content"]["parts"][0]["text"] == "Sunny"
    received = service.api.last
    ada = service.accounts["ada@example.com"]
    action = "streamGenerateContent" if stream else "generateContent"
    assert received.path == f"/v1internal:{action}"
    assert received.headers["authorization"] == f"Bearer {ada.access}"
    for name, value in GEMINI_CLI.HEADERS.items():
        assert received.headers[name] == value
    sent = received.body
    assert set(sent) == {"model", "project", "request"}
    assert sent["model"] == MODEL and sent["project"] == ada.project
    assert sent["request"]["contents"] == [{"role": "user",
                                            "parts": [{"text": "Weather in Paris?"}]}]
    assert sent["request"]["generationConfig"] == {"temperature": 0.2}


async def test_token_counts_go_to_count_tokens(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeGoogle,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    service.api.push(Answer(input_tokens=42))
    body = {"contents": [{"role": "user", "parts": [{"text": "How many?"}]}]}
    async with httpx.AsyncClient(base_url=mux.url, trust_env=False, timeout=STEP) as http:
        with trio.fail_after(STEP):
            answer = await http.post(f"/v1beta/models/{MODEL}:countTokens", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["totalTokens"] == 42
    received = service.api.last
    assert received.path == "/v1internal:countTokens"
    assert received.body == {"request": {"model": f"models/{MODEL}",
                                         "contents": body["contents"]}}


async def test_an_imported_account_finds_its_project_once_and_saves_it(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeGoogle,
) -> None:
    service.accounts["ada@example.com"].onboarded = False
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        project=False)
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await generate(mux.url)).status_code)

    with trio.fail_after(STEP):
        async with trio.open_nursery() as inner:
            for _ in range(3):
                inner.start_soon(one)
    assert statuses == [200] * 3
    ada = service.accounts["ada@example.com"]
    # One discovery for the three requests: load, then two onboard polls.
    assert [r.path.rpartition(":")[2] for r in service.api.setup_requests] == [
        "loadCodeAssist", "onboardUser", "onboardUser"]
    assert {r.body["project"] for r in service.api.requests} == {ada.project}
    saved = json.loads(mux.store.path_for("gemini-cli", "ada@example.com").read_text())
    assert saved["extras"]["project_id"] == ada.project
    assert mux.store.path_for("gemini-cli", "ada@example.com").stat().st_mode & 0o777 == 0o600


async def test_an_upstream_401_refreshes_once_and_retries(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeGoogle,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    before = service.accounts["ada@example.com"].refresh
    service.expire_access("ada@example.com")
    with trio.fail_after(STEP):
        answer = await generate(mux.url, stream=True)
    assert answer.status_code == 200, answer.text
    assert service.refreshes == 1 and len(service.api.requests) == 2
    (saved,) = mux.store.load_all()
    assert saved.access_token == service.accounts["ada@example.com"].access
    assert saved.refresh_token == before  # not rotated: kept
    assert saved.extras["project_id"] == service.accounts["ada@example.com"].project


async def test_an_expired_token_is_refreshed_before_the_request(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeGoogle,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        expires_in=-5)
    with trio.fail_after(STEP):
        answer = await generate(mux.url)
    assert answer.status_code == 200, answer.text
    assert service.refreshes == 1 and len(service.api.requests) == 1
    assert mux.accounts.keepers("gemini-cli")[0].credentials.expires_at > time.time() + 3000


async def test_invalid_grant_revokes_the_account_and_routing_skips_it(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeGoogle,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        "bob@example.com")
    service.revoke("ada@example.com")
    with trio.fail_after(STEP):
        for _ in range(3):
            answer = await generate(mux.url)
            assert answer.status_code == 200, answer.text
    assert [k.account for k in mux.accounts.keepers("gemini-cli")] == ["bob@example.com"]
    (ada,) = [k for k in mux.accounts.all() if k.account == "ada@example.com"]
    assert ada.state == "revoked"
    bob = service.accounts["bob@example.com"].access
    assert service.api.last.headers["authorization"] == f"Bearer {bob}"
    saved = json.loads(mux.store.path_for("gemini-cli", "ada@example.com").read_text())
    assert saved["state"] == "revoked"


def quota_body(reason: str, delay: str, message: str = "You have exhausted your capacity on "
               "this model.") -> dict[str, Any]:
    return {"error": {"code": 429, "message": message, "status": "RESOURCE_EXHAUSTED",
                      "details": [
                          {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                           "domain": "cloudcode-pa.googleapis.com",
                           "metadata": {"quotaResetDelay": delay, "model": MODEL}},
                          {"@type": "type.googleapis.com/google.rpc.RetryInfo",
                           "retryDelay": delay}]}}


@pytest.mark.parametrize("stream", [False, True])
async def test_resource_exhausted_cools_the_account_and_fails_over(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeGoogle,
    stream: bool,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        "bob@example.com")
    service.api.push(Fail(status=429, body=quota_body("QUOTA_EXHAUSTED", "29m30s")))
    with trio.fail_after(STEP):
        answer = await generate(mux.url, stream=stream)
    assert answer.status_code == 200, answer.text
    first, second = service.api.requests
    assert first.headers["authorization"] != second.headers["authorization"]
    (cooling,) = [s for s in mux.router.status() if s.state is AccountState.COOLING]
    assert 1760 <= max(c.remaining for c in cooling.cooldowns) <= 1770


def test_quota_delays_are_read_from_each_google_field() -> None:
    from mux.providers.api import retry_after

    assert retry_after(429, {}, quota_body("RATE_LIMIT_EXCEEDED", "2.5s")) == 2.5
    reset = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "QUOTA_EXHAUSTED",
         "metadata": {"quotaResetTimeStamp": "2030-01-01T01:00:00Z"}}]}}
    assert retry_after(429, {}, reset, now=1_893_456_000.0) == 3600.0


def test_urls_are_overridable_by_config_names() -> None:
    entry = parse_config(tomllib.loads(
        '[[providers]]\nname = "g"\ntype = "gemini-cli"\nbase-url = "http://b"\n'
        'oauth-token-url = "http://t"\nurls = { "userinfo-url" = "http://u" }\n')).providers[0]
    urls = endpoint_urls("gemini-cli", entry)
    assert urls["base-url"] == "http://b" and urls["oauth-token-url"] == "http://t"
    assert urls["userinfo-url"] == "http://u"
    assert urls["oauth-authorize-url"] == catalog.GOOGLE.AUTHORIZE_URL
    assert code_assist.base_urls(urls) == ["http://b"]


# --------------------------------------------------------------------------------------------
# Every client format


def client_cases() -> list[Any]:
    return [pytest.param(c.name, mode, tools, id=f"{c.name}-{mode}{'-tool' if tools else ''}")
            for c in CLIENTS.values() for mode in c.stream_modes
            for tools in ((False, True) if c.tools else (False,))]


async def reaches(mux: Any, service: FakeGoogle, client: str, mode: str, tools: bool,
                  model: str) -> Any:
    """Send one request in ``client``'s format and check the answer; return what the fake
    API received."""
    tool = ("get_weather", {"city": "Paris", "days": 2}) if tools else None
    service.api.push(Answer(text="Héllo — sunny ☀", tool=tool, chunks=3))
    format_ = CLIENTS[client]
    async with httpx.AsyncClient(base_url=mux.url, trust_env=False, timeout=STEP) as http:
        with trio.fail_after(STEP):
            answered = await format_.send(http, model, mode, tools)
    assert answered.text == "Héllo — sunny ☀"
    assert answered.finish == FINISH[client][1 if tools else 0]
    if tools:
        assert answered.tools == [tool]
    (received,) = service.api.requests
    return received


@pytest.mark.parametrize(("client", "mode", "tools"), client_cases())
async def test_every_client_format_reaches_gemini_cli(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeGoogle,
    client: str, mode: str, tools: bool,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    received = await reaches(mux, service, client, mode, tools, MODEL)
    streamed = received.path.endswith(":streamGenerateContent")
    assert streamed is (mode != "whole")
    assert received.body["project"] == service.accounts["ada@example.com"].project
