"""The codex provider, through real sockets: login (browser and device), refresh, import,
requests (always streamed upstream), quota.

The service is tests/fake_oauth.py's loopback fake of OpenAI's auth server (form-encoded
token calls, JWT id and access tokens, the Codex device flow) and the ChatGPT Codex Responses
API (bearer, ``chatgpt-account-id``, ``store: false``, ``instructions``, ``include``, a
stream always).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from mux.auth import AuthFileError, AuthStore
from mux.oauth import LoginContext
from mux.providers import codex
from mux.providers.catalog import CODEX
from mux.providers.subscriptions import REGISTRY
from mux.router import AccountState
from mux.upstream import Upstreams
from tests.fake_oauth import FakeService, jwt, save_account, start_gateway, start_service
from tests.test_claude import browse_when_listening, free_port, never
from tests.test_matrix import CLIENTS, FINISH
from tests.upstreams import Answer, Fail

STEP = 10
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real-clients"
MODEL = "gpt-5-codex"


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    async with Upstreams(trust_env=False) as clients:
        yield clients


@pytest.fixture
async def service(nursery: trio.Nursery) -> FakeService:
    service = await start_service(nursery, "codex")
    service.add_account("ada@example.com", "acct-ada")
    service.add_account("bob@example.com", "acct-bob")
    return service


# --------------------------------------------------------------------------------------------
# Login


async def test_login_through_the_browser_redirect(
    service: FakeService, upstreams: Upstreams
) -> None:
    service.redirect_uri = f"http://127.0.0.1:{free_port()}/auth/callback"
    opened: list[str] = []
    ctx = LoginContext(http=upstreams.client(), urls=service.urls, input=never,
                       browse=lambda url: opened.append(url) or True, print=lambda _: None,
                       timeout=STEP)
    result: list[Any] = []

    async def run_login() -> None:
        result.append(await codex.login(ctx))

    with trio.fail_after(STEP):
        async with trio.open_nursery() as inner:
            inner.start_soon(run_login)
            while not opened:
                await trio.sleep(0.01)
            async with httpx.AsyncClient(trust_env=False) as browser:
                await browse_when_listening(opened[0], browser)
    (credentials,) = result
    assert credentials.provider == "codex" and credentials.account == "ada@example.com"
    assert credentials.extras == {"email": "ada@example.com", "account_id": "acct-ada",
                                  "plan": "pro"}
    assert credentials.expires_at == pytest.approx(time.time() + 3600, abs=5)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(opened[0]).query))
    assert query["codex_cli_simplified_flow"] == "true"
    (exchange,) = [r for r in service.oauth_requests if r.method == "POST"]
    assert exchange.headers["content-type"].startswith("application/x-www-form-urlencoded")


async def test_login_with_the_device_flow(service: FakeService, upstreams: Upstreams) -> None:
    printed: list[str] = []
    ctx = LoginContext(http=upstreams.client(), urls=service.urls, device=True,
                       open_browser=False, print=printed.append, timeout=STEP)
    with trio.fail_after(STEP):
        credentials = await codex.login(ctx)
    assert credentials.account == "ada@example.com"
    assert service.device_polls == 3  # pending, pending, approved
    assert any(service.urls["device-verification-url"] in line for line in printed)


# --------------------------------------------------------------------------------------------
# Import


def test_import_codex_auth_json(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    id_token = jwt({"email": "ada@example.com", CODEX.AUTH_CLAIM: {
        "chatgpt_account_id": "acct-ada", "chatgpt_plan_type": "plus"}})
    access = jwt({"exp": 1_900_000_000})
    path.write_text(json.dumps({"OPENAI_API_KEY": None, "tokens": {
        "id_token": id_token, "access_token": access, "refresh_token": "rt_abc",
        "account_id": "acct-ada"}, "last_refresh": "2025-09-01T00:00:00Z"}))
    (credentials,) = REGISTRY["codex"].import_credentials(path)
    assert credentials.account == "ada@example.com"
    assert credentials.access_token == access and credentials.refresh_token == "rt_abc"
    assert credentials.expires_at == 1_900_000_000
    assert credentials.extras == {"email": "ada@example.com", "account_id": "acct-ada",
                                  "plan": "plus"}
    assert REGISTRY["codex"].default_import_path == Path("~/.codex/auth.json").expanduser()


@pytest.mark.parametrize(("content", "key"), [
    ('{"OPENAI_API_KEY": "sk-secret-1"}', "API key"),
    ('{"tokens": {"access_token": "sk-secret-1"}}', "tokens.refresh_token"),
    ('{"tokens": {"access_token": "x.y", "refresh_token": "sk-secret-1"}}', "tokens.id_token"),
    ("[]", "tokens"),
])
def test_a_bad_codex_file_names_the_key_not_the_value(
    tmp_path: Path, content: str, key: str
) -> None:
    path = tmp_path / "auth.json"
    path.write_text(content)
    with pytest.raises(AuthFileError, match=key) as caught:
        codex.import_credentials(path)
    assert "sk-secret-1" not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Requests


async def gateway(nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path,
                  service: FakeService, *emails: str, expires_in: float = 3600.0) -> Any:
    store = AuthStore(tmp_path / "auth")
    for email in emails:
        save_account(store, service, email, expires_in=expires_in)
    return await start_gateway(nursery, upstreams, tmp_path / "auth",
                               service.entry("codex", f'models = ["{MODEL}"]'))


async def responses(url: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=STEP) as http:
        return await http.post("/v1/responses", json=body)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_responses_client_gets_the_codex_shape(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
    stream: bool,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    service.api.push(Answer(text="Sunny", chunks=1))
    body = {"model": MODEL, "input": "Weather?", "stream": stream, "max_output_tokens": 100,
            "temperature": 0.2, "previous_response_id": "resp_1", "include": ["x.y"]}
    with trio.fail_after(STEP):
        answer = await responses(mux.url, body)
    assert answer.status_code == 200, answer.text
    if not stream:  # assembled from the upstream's stream
        assert answer.json()["output"][0]["content"][0]["text"] == "Sunny"
    received = service.api.last
    assert received.path == "/backend-api/codex/responses"
    ada = service.accounts["ada@example.com"]
    assert received.headers["authorization"] == f"Bearer {ada.access}"
    assert received.headers["chatgpt-account-id"] == "acct-ada"
    assert received.headers["originator"] == CODEX.HEADERS["originator"]
    sent = received.body
    assert sent["stream"] is True and sent["store"] is False
    assert sent["instructions"] == CODEX.DEFAULT_INSTRUCTIONS
    assert sent["include"] == ["x.y", "reasoning.encrypted_content"]
    assert not {"previous_response_id", "max_output_tokens", "temperature"} & set(sent)
    assert received.headers["session_id"] == sent["prompt_cache_key"]


async def test_the_prompt_cache_key_is_stable_through_a_conversation(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    first = [{"role": "user", "content": "Hi"}]
    later = [*first, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "?"}]
    with trio.fail_after(STEP):
        for items in (first, later, [{"role": "user", "content": "Other"}]):
            assert (await responses(mux.url, {"model": MODEL, "input": items})).status_code == 200
        own = await responses(mux.url, {"model": MODEL, "input": "x", "prompt_cache_key": "k1",
                                         "instructions": "Mine."})
    assert own.status_code == 200
    keys = [r.body["prompt_cache_key"] for r in service.api.requests]
    assert keys[0] == keys[1] != keys[2] and keys[3] == "k1"
    assert service.api.last.body["instructions"] == "Mine."


async def test_a_codex_cli_body_keeps_its_own_fields(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
) -> None:
    fixture = json.loads((FIXTURES / "codex-responses.json").read_text())
    body = {**fixture["body"], "model": MODEL}
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    with trio.fail_after(STEP):
        answer = await responses(mux.url, body)
    assert answer.status_code == 200, answer.text
    sent = service.api.last.body
    for key in ("input", "tools", "reasoning", "client_metadata", "prompt_cache_key"):
        assert sent[key] == body[key], key


async def test_an_upstream_401_refreshes_once_and_retries(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    service.expire_access("ada@example.com")
    with trio.fail_after(STEP):
        answer = await responses(mux.url, {"model": MODEL, "input": "hi"})
    assert answer.status_code == 200, answer.text
    assert service.refreshes == 1 and len(service.api.requests) == 2
    (saved,) = mux.store.load_all()
    assert saved.refresh_token == service.accounts["ada@example.com"].refresh
    assert saved.extras["account_id"] == "acct-ada"


async def test_an_expired_token_is_refreshed_first(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        expires_in=-5)
    with trio.fail_after(STEP):
        answer = await responses(mux.url, {"model": MODEL, "input": "hi", "stream": True})
    assert answer.status_code == 200, answer.text
    assert service.refreshes == 1 and len(service.api.requests) == 1
    assert mux.accounts.keepers("codex")[0].credentials.expires_at > time.time() + 3000


async def test_usage_limit_reached_cools_the_account_and_fails_over(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        "bob@example.com")
    service.api.push(Fail(status=429, body={"error": {
        "type": "usage_limit_reached", "message": "The usage limit has been reached",
        "plan_type": "pro", "resets_in_seconds": 1800}}))
    with trio.fail_after(STEP):
        answer = await responses(mux.url, {"model": MODEL, "input": "hi"})
    assert answer.status_code == 200, answer.text
    first, second = service.api.requests
    assert first.headers["chatgpt-account-id"] != second.headers["chatgpt-account-id"]
    (cooling,) = [s for s in mux.router.status() if s.state is AccountState.COOLING]
    assert 1790 <= max(c.remaining for c in cooling.cooldowns) <= 1800


async def test_an_overload_inside_the_200_stream_fails_over(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        "bob@example.com")
    service.api.push(Answer(error_after=0, error_message="server_is_overloaded"))
    with trio.fail_after(STEP):
        answer = await responses(mux.url, {"model": MODEL, "input": "hi"})
    assert answer.status_code == 200, answer.text
    assert len(service.api.requests) == 2


# --------------------------------------------------------------------------------------------
# Every client format


def _client_cases() -> list[Any]:
    return [pytest.param(c.name, mode, tools, id=f"{c.name}-{mode}{'-tool' if tools else ''}")
            for c in CLIENTS.values() for mode in c.stream_modes
            for tools in ((False, True) if c.tools else (False,))]


@pytest.mark.parametrize(("client", "mode", "tools"), _client_cases())
async def test_every_client_format_reaches_codex(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeService,
    client: str, mode: str, tools: bool,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
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
    assert received.body["stream"] is True and received.body["store"] is False
