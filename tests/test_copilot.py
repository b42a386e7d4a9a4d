"""The copilot provider, through real sockets: GitHub's device login, import, the Copilot
token exchange (before the first request, before expiry, on a 401, single flight), revocation,
model discovery and every client format.

The service is tests/fake_oauth.py's :class:`FakeCopilot`: GitHub's device flow, ``/user``
and token exchange, and the Copilot chat API, each checking what the real one checks.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from mux.auth import Accounts, AuthFileError, AuthStore, Credentials, RevokedError
from mux.config import parse_config
from mux.oauth import LoginContext, LoginError
from mux.providers import copilot
from mux.providers.catalog import COPILOT
from mux.providers.subscriptions import (
    REGISTRY,
    endpoint_urls,
    refreshers,
    subscription_providers,
)
from mux.upstream import Upstreams
from tests.fake_oauth import FakeCopilot, save_copilot, start_copilot, start_gateway
from tests.test_matrix import CLIENTS, FINISH
from tests.upstreams import Answer

STEP = 10
MODEL = "gpt-4.1"


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    async with Upstreams(trust_env=False) as clients:
        yield clients


@pytest.fixture
async def service(nursery: trio.Nursery) -> FakeCopilot:
    service = await start_copilot(nursery)
    service.add_user("ada")
    service.add_user("bob")
    return service


# --------------------------------------------------------------------------------------------
# Login


async def test_login_with_the_device_flow_pending_then_slow_down(
    service: FakeCopilot, upstreams: Upstreams
) -> None:
    printed: list[str] = []
    ctx = LoginContext(http=upstreams.client(), urls=service.urls, open_browser=False,
                       print=printed.append, timeout=STEP)
    with trio.fail_after(STEP):
        credentials = await copilot.login(ctx)
    ada = service.users["ada"]
    assert credentials.provider == "copilot" and credentials.account == "ada"
    assert credentials.refresh_token == ada.github  # the long-lived GitHub token
    assert credentials.access_token == ada.copilot  # the exchanged Copilot token
    assert credentials.expires_at == pytest.approx(time.time() + 1800, abs=5)
    assert credentials.extras == {"login": "ada"}
    # pending, slow_down, then the token; after slow_down polls wait the interval GitHub named
    first, second, third = service.polls
    assert third - second >= service.slow_down_interval > second - first
    shown = "\n".join(printed)
    assert "WDJB-MJHT" in shown and service.root + "/login/device" in shown
    assert credentials.refresh_token not in shown and credentials.access_token not in shown
    device, *polls, user, exchange = service.github_requests
    assert device.path == "/login/device/code" and len(polls) == 3
    assert dict(_form(device.body)) == {"client_id": COPILOT.CLIENT_ID, "scope": "read:user"}
    assert _form(polls[0].body)["grant_type"] == COPILOT.DEVICE_GRANT
    assert user.headers["authorization"] == exchange.headers["authorization"] == \
        f"token {ada.github}"
    assert REGISTRY["copilot"].login is not None


def _form(body: bytes) -> dict[str, str]:
    import urllib.parse

    return dict(urllib.parse.parse_qsl(body.decode()))


async def test_a_denied_device_login_is_a_login_error(
    service: FakeCopilot, upstreams: Upstreams
) -> None:
    service.poll_script = ["authorization_pending", "access_denied"]
    ctx = LoginContext(http=upstreams.client(), urls=service.urls, open_browser=False,
                       print=lambda _: None, timeout=STEP)
    with trio.fail_after(STEP), pytest.raises(LoginError, match="denied"):
        await copilot.login(ctx)


# --------------------------------------------------------------------------------------------
# Import


def test_import_apps_json_and_hosts_json(tmp_path: Path) -> None:
    (tmp_path / "apps.json").write_text(json.dumps({
        f"github.com:{COPILOT.CLIENT_ID}": {"user": "ada", "oauth_token": "gho_ada",
                                            "githubAppId": COPILOT.CLIENT_ID},
        "ghe.example.com:Iv1.x": {"user": "corp", "oauth_token": "ghu_corp"},
    }))
    (tmp_path / "hosts.json").write_text(json.dumps({
        "github.com": {"user": "bob", "oauth_token": "gho_bob"},
    }))
    # The directory (the default's shape): both files; each file alone too.
    found = REGISTRY["copilot"].import_credentials(tmp_path)
    assert [(c.account, c.refresh_token) for c in found] == [("ada", "gho_ada"),
                                                             ("bob", "gho_bob")]
    (bob,) = copilot.import_credentials(tmp_path / "hosts.json")
    assert bob.provider == "copilot" and bob.extras == {"login": "bob"}
    # No Copilot token yet: already expired, so the first use exchanges the GitHub token.
    assert bob.access_token == copilot.UNEXCHANGED and bob.expires_at == 0.0
    assert [c.account for c in copilot.import_credentials(tmp_path / "apps.json")] == ["ada"]
    assert REGISTRY["copilot"].default_import_path == \
        Path("~/.config/github-copilot").expanduser()
    # What an import saves loads back.
    store = AuthStore(tmp_path / "auth")
    store.save(bob)
    assert store.load_all() == [bob]


@pytest.mark.parametrize(("content", "key"), [
    ('{"github.com": {"user": "ada"}}', "oauth_token"),
    ('{"github.com": {"oauth_token": "gho-secret-1"}}', "user"),
    ('{"ghe.example.com": {"user": "x", "oauth_token": "gho-secret-1"}}', "no github.com"),
    ('["gho-secret-1"]', "top level"),
    ("{", "not JSON"),
])
def test_a_bad_copilot_file_names_the_key_not_the_value(
    tmp_path: Path, content: str, key: str
) -> None:
    path = tmp_path / "hosts.json"
    path.write_text(content)
    with pytest.raises(AuthFileError, match=key) as caught:
        copilot.import_credentials(path)
    assert "gho-secret-1" not in str(caught.value)


def test_an_empty_directory_names_the_files(tmp_path: Path) -> None:
    with pytest.raises(AuthFileError, match="apps.json or hosts.json"):
        copilot.import_credentials(tmp_path)


# --------------------------------------------------------------------------------------------
# Requests: the exchange, 401, revocation


async def gateway(nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path,
                  service: FakeCopilot, *logins: str, exchanged: bool = False,
                  extra: str = "", poll: float | None = None) -> Any:
    store = AuthStore(tmp_path / "auth")
    for login in logins:
        save_copilot(store, service, login, exchanged=exchanged)
    entry = service.entry("copilot", f'models = ["{MODEL}"]', extra)
    return await start_gateway(nursery, upstreams, tmp_path / "auth", entry, poll=poll)


async def chat(url: str, stream: bool = False) -> httpx.Response:
    body = {"model": MODEL, "stream": stream,
            "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=STEP) as http:
        return await http.post("/v1/chat/completions", json=body)


@pytest.mark.parametrize("stream", [False, True])
async def test_the_first_request_exchanges_the_github_token_and_sends_the_editor_headers(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeCopilot,
    stream: bool,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada")
    service.api.push(Answer(text="Sunny", chunks=2))
    with trio.fail_after(STEP):
        answer = await chat(mux.url, stream)
    assert answer.status_code == 200, answer.text
    if stream:
        events = [json.loads(line[6:]) for line in answer.text.splitlines()
                  if line.startswith("data: {")]
        text = "".join(e["choices"][0]["delta"].get("content") or ""
                       for e in events if e.get("choices"))
    else:
        text = answer.json()["choices"][0]["message"]["content"]
    assert text == "Sunny"
    assert service.exchanges == 1
    (received,) = service.api.requests
    ada = service.users["ada"]
    assert received.path == "/chat/completions"
    assert received.headers["authorization"] == f"Bearer {ada.copilot}"
    for name, value in COPILOT.HEADERS.items():
        assert received.headers[name] == value
    assert received.headers["x-request-id"]
    assert received.body["model"] == MODEL and received.body.get("stream", False) is stream
    # The Copilot token was saved with its expiry; the GitHub token stays the refresh token.
    (saved,) = mux.store.load_all()
    assert saved.access_token == ada.copilot and saved.refresh_token == ada.github
    assert saved.expires_at == pytest.approx(time.time() + 1800, abs=5)


async def test_each_request_has_its_own_request_id(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeCopilot,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada", exchanged=True)
    with trio.fail_after(STEP):
        for _ in range(2):
            assert (await chat(mux.url)).status_code == 200
    first, second = service.api.requests
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert service.exchanges == 0  # the saved Copilot token was still good


async def test_concurrent_requests_share_one_exchange(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeCopilot,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada")
    service.exchange_delay = 0.2
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await chat(mux.url)).status_code)

    with trio.fail_after(STEP):
        async with trio.open_nursery() as inner:
            for _ in range(10):
                inner.start_soon(one)
    assert statuses == [200] * 10
    assert service.exchanges == 1


async def test_the_background_task_exchanges_again_before_expiry(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeCopilot,
) -> None:
    service.expires_in = 60  # the saved token expires within refresh-lead (300 s)
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada", exchanged=True,
                        poll=0.02)
    service.expires_in = 1800
    first = service.users["ada"].copilot
    with trio.fail_after(STEP):
        while mux.store.load_all()[0].access_token == first:
            await trio.sleep(0.02)
    assert service.exchanges == 1
    assert mux.store.load_all()[0].access_token == service.users["ada"].copilot
    assert mux.store.load_all()[0].expires_at > time.time() + 1500
    assert not service.api.requests  # no request was needed


async def test_an_upstream_401_exchanges_once_and_retries(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeCopilot,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada", exchanged=True)
    service.expire_copilot("ada")
    with trio.fail_after(STEP):
        answer = await chat(mux.url, stream=True)
    assert answer.status_code == 200, answer.text
    assert service.exchanges == 1
    refused, retried = service.api.requests
    assert retried.headers["authorization"] == f"Bearer {service.users['ada'].copilot}"
    assert refused.headers["authorization"] != retried.headers["authorization"]


async def test_a_revoked_github_token_revokes_the_account_and_routing_skips_it(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeCopilot,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada", "bob")
    service.revoke("ada")
    with trio.fail_after(STEP):
        for _ in range(3):
            answer = await chat(mux.url)
            assert answer.status_code == 200, answer.text
    assert [k.account for k in mux.accounts.keepers("copilot")] == ["bob"]
    (ada,) = [k for k in mux.accounts.all() if k.account == "ada"]
    assert ada.state == "revoked"
    bob = service.users["bob"].copilot
    assert {r.headers["authorization"] for r in service.api.requests} == {f"Bearer {bob}"}
    saved = json.loads(mux.store.path_for("copilot", "ada").read_text())
    assert saved["state"] == "revoked"


async def test_a_failed_exchange_never_shows_the_github_token(
    service: FakeCopilot, upstreams: Upstreams
) -> None:
    config = parse_config(tomllib.loads(service.entry()))
    refresh = refreshers(config, upstreams)["copilot"]
    dead = Credentials(provider="copilot", account="ada", access_token="tid=old",
                       refresh_token="gho_dead_github_token")
    with pytest.raises(RevokedError) as caught:
        await refresh(dead)
    assert "gho_dead_github_token" not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Models and configuration


async def test_discovery_lists_copilots_chat_models(
    service: FakeCopilot, upstreams: Upstreams, tmp_path: Path,
) -> None:
    config = parse_config(tomllib.loads(
        f'auth-dir = "{tmp_path}"\n' + service.entry("gh", "discover = true")))
    store = AuthStore(tmp_path)
    accounts = Accounts(store, refreshers(config, upstreams))
    (provider,) = [p for p in subscription_providers(config, upstreams, accounts)
                   if p.name == "gh"]
    assert await provider.discover() == []  # no account yet: the catalog's models stay
    save_copilot(store, service, "ada")
    accounts.reload()
    assert [m.id for m in provider.models()] == list(COPILOT.MODELS)
    with trio.fail_after(STEP):
        found = await provider.discover()
    assert found == ["gpt-4.1", "claude-sonnet-4"]  # not the embedding model
    assert [m.id for m in provider.models()] == found
    (listing,) = service.api.requests
    assert listing.path == "/models" and listing.headers["editor-version"]


def test_urls_are_overridable_by_config_names() -> None:
    entry = parse_config(tomllib.loads(
        '[[providers]]\nname = "c"\ntype = "copilot"\nbase-url = "http://b"\n'
        'oauth-device-url = "http://d"\noauth-token-url = "http://t"\n'
        'urls = { "token-exchange-url" = "http://x", "user-url" = "http://u" }\n')).providers[0]
    assert endpoint_urls("copilot", entry) == {
        "base-url": "http://b", "oauth-device-url": "http://d", "oauth-token-url": "http://t",
        "token-exchange-url": "http://x", "user-url": "http://u"}
    assert endpoint_urls("copilot") == dict(COPILOT.URLS)


# --------------------------------------------------------------------------------------------
# Every client format


def _client_cases() -> list[Any]:
    return [pytest.param(c.name, mode, tools, id=f"{c.name}-{mode}{'-tool' if tools else ''}")
            for c in CLIENTS.values() for mode in c.stream_modes
            for tools in ((False, True) if c.tools else (False,))]


@pytest.mark.parametrize(("client", "mode", "tools"), _client_cases())
async def test_every_client_format_reaches_copilot(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeCopilot,
    client: str, mode: str, tools: bool,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada")
    tool = ("get_weather", {"city": "Paris", "days": 2}) if tools else None
    service.api.push(Answer(text="Héllo — sunny ☀", tool=tool, chunks=3))
    format_ = CLIENTS[client]
    async with httpx.AsyncClient(base_url=mux.url, trust_env=False, timeout=STEP) as http:
        with trio.fail_after(STEP):
            answered = await format_.send(http, MODEL, mode, tools)
    assert answered.text == "Héllo — sunny ☀"
    assert answered.finish == FINISH[client][1 if tools else 0]
    if tools:
        assert answered.tools == [tool]
    (received,) = service.api.requests
    assert received.path == "/chat/completions"
    assert received.headers["copilot-integration-id"] == COPILOT.HEADERS[
        "copilot-integration-id"]
    assert received.body.get("stream", False) is (mode != "whole")
