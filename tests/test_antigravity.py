"""The antigravity provider, through real sockets: login (email from userinfo), its envelope
fields and session id, its user agent, base-URL fallback, model-family quota, Claude tool
schemas, import refusal, and every client format.

What it shares with gemini-cli (mux/providers/code_assist.py: refresh, 401, revocation,
onboarding, unwrapping) is tested in tests/test_gemini_cli.py; the service is
tests/fake_oauth.py's :class:`FakeGoogle` of kind antigravity, which serves the Code Assist API
under ``/daily`` and ``/prod`` (the two base URLs).
"""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from mux.auth import AuthStore
from mux.providers import antigravity, catalog
from mux.providers.catalog import ANTIGRAVITY
from mux.providers.subscriptions import REGISTRY
from mux.router import AccountState
from mux.upstream import Upstreams
from tests.fake_oauth import FakeGoogle, save_google, start_gateway, start_google
from tests.test_claude import free_port
from tests.test_gemini_cli import (
    STEP,
    client_cases,
    form,
    generate,
    quota_body,
    reaches,
    run_login,
    streamed_text,
)
from tests.upstreams import Answer, Fail

MODEL = "gemini-3-pro-high"
NO_CAPACITY = "No capacity available for model gemini-3-pro-high on the server"


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    async with Upstreams(trust_env=False) as clients:
        yield clients


@pytest.fixture(autouse=True)
def fast_onboarding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog.GOOGLE, "ONBOARD_POLL", 0.01)


@pytest.fixture
async def service(nursery: trio.Nursery) -> FakeGoogle:
    service = await start_google(nursery, "antigravity")
    service.add_account("ada@example.com")
    service.add_account("bob@example.com")
    return service


async def gateway(nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path,
                  service: FakeGoogle, *emails: str, urls: dict[str, str] | None = None,
                  models: tuple[str, ...] = (MODEL,), routing: str = "") -> Any:
    store = AuthStore(tmp_path / "auth")
    for email in emails:
        save_google(store, service, email)
    listed = ", ".join(f'"{m}"' for m in models)
    entry = service.entry(None, f"models = [{listed}]", urls=urls)
    return await start_gateway(nursery, upstreams, tmp_path / "auth", entry + routing)


# --------------------------------------------------------------------------------------------
# Login, import


async def test_login_with_antigravitys_client_and_the_email_from_userinfo(
    service: FakeGoogle, upstreams: Upstreams
) -> None:
    service.id_tokens = False
    credentials, opened = await run_login(antigravity.login, service, upstreams)
    ada = service.accounts["ada@example.com"]
    assert credentials.provider == "antigravity" and credentials.account == "ada@example.com"
    assert credentials.extras == {"email": "ada@example.com", "project_id": ada.project}
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(opened).query))
    assert query["client_id"] == ANTIGRAVITY.CLIENT_ID
    assert set(query["scope"].split()) == set(ANTIGRAVITY.SCOPES)
    assert {"https://www.googleapis.com/auth/cclog",
            "https://www.googleapis.com/auth/experimentsandconfigs"} <= set(ANTIGRAVITY.SCOPES)
    exchange, userinfo = service.oauth_requests[1:]
    assert form(exchange.body)["client_secret"] == ANTIGRAVITY.CLIENT_SECRET
    assert userinfo.path == "/oauth2/v2/userinfo"
    assert userinfo.headers["authorization"] == f"Bearer {ada.access}"
    (load,) = service.api.setup_requests  # onboarded already: no onboardUser
    assert load.path == "/daily/v1internal:loadCodeAssist"
    assert load.headers["user-agent"] == antigravity.user_agent()


def test_import_says_there_is_no_token_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mux login antigravity"):
        REGISTRY["antigravity"].import_credentials(tmp_path)


def test_the_user_agent_names_the_catalog_version_and_this_machine() -> None:
    agent = antigravity.user_agent()
    assert agent.startswith(f"antigravity/{ANTIGRAVITY.VERSION} ")
    os_name, _, arch = agent.split(" ")[1].partition("/")
    assert os_name in ("linux", "darwin", "windows") and arch


# --------------------------------------------------------------------------------------------
# Requests


@pytest.mark.parametrize("stream", [False, True])
async def test_the_envelope_has_antigravitys_fields_and_a_stable_session(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeGoogle,
    stream: bool,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    service.api.push(Answer(text="Sunny", chunks=2))
    with trio.fail_after(STEP):
        answer = await generate(mux.url, MODEL, stream=stream)
        again = await generate(mux.url, MODEL, stream=stream)
        other = await generate(mux.url, MODEL, stream=stream, text="Something else")
    assert answer.status_code == again.status_code == other.status_code == 200, answer.text
    if stream:
        assert streamed_text(answer) == "Sunny"
    else:
        assert answer.json()["candidates"][0]["content"]["parts"][0]["text"] == "Sunny"
    first, second, third = service.api.requests
    assert first.path.startswith("/daily/v1internal:")
    assert first.headers["user-agent"] == antigravity.user_agent()
    sent = first.body
    assert sent["userAgent"] == "antigravity" and sent["requestType"] == "agent"
    assert sent["model"] == MODEL
    assert sent["project"] == service.accounts["ada@example.com"].project
    assert sent["requestId"].startswith("agent-")
    assert sent["requestId"] != second.body["requestId"]
    digest = hashlib.sha256(b"Weather in Paris?").hexdigest()[:32]
    assert sent["request"]["sessionId"] == f"session-{digest}"
    assert second.body["request"]["sessionId"] == sent["request"]["sessionId"]
    assert third.body["request"]["sessionId"] != sent["request"]["sessionId"]


@pytest.mark.parametrize("stream", [False, True])
async def test_no_capacity_on_the_daily_base_falls_back_to_prod_and_stays(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeGoogle,
    stream: bool,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    service.api.push(Fail(status=503, message=NO_CAPACITY))
    with trio.fail_after(STEP):
        answer = await generate(mux.url, MODEL, stream=stream)
        later = await generate(mux.url, MODEL)
    assert answer.status_code == later.status_code == 200, answer.text
    paths = [r.path.partition("/v1internal")[0] for r in service.api.requests]
    assert paths == ["/daily", "/prod", "/prod"]  # the same account, the next base; sticky
    assert {r.headers["authorization"] for r in service.api.requests} == {
        f"Bearer {service.accounts['ada@example.com'].access}"}
    assert all(s.state is AccountState.OK for s in mux.router.status())


async def test_an_unreachable_base_falls_back_to_the_next(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeGoogle,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/daily"
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        urls={"base-url": dead})
    with trio.fail_after(STEP):
        answer = await generate(mux.url, MODEL, stream=True)
    assert answer.status_code == 200, answer.text
    (received,) = service.api.requests
    assert received.path.startswith("/prod/")


async def test_no_capacity_everywhere_is_overloaded_not_a_quota(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeGoogle,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        routing="[routing]\nrequest-retry = 1\n")
    service.api.push(Fail(status=503, message=NO_CAPACITY),
                     Fail(status=429, message=NO_CAPACITY))
    with trio.fail_after(STEP):
        answer = await generate(mux.url, MODEL)
    assert answer.status_code == 503, answer.text
    assert [r.path.partition("/v1internal")[0] for r in service.api.requests] == [
        "/daily", "/prod"]
    assert "no capacity" in answer.text.lower()
    assert "retry-after" not in {k.lower() for k in answer.headers}


async def test_a_quota_refusal_cools_the_model_family_and_fails_over(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeGoogle,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        "bob@example.com", models=(MODEL, "gemini-3-pro-low"))
    service.api.push(Fail(status=429, body=quota_body("RATE_LIMIT_EXCEEDED", "600s")))
    with trio.fail_after(STEP):
        answer = await generate(mux.url, MODEL)
    assert answer.status_code == 200, answer.text
    first, second = service.api.requests
    assert first.headers["authorization"] != second.headers["authorization"]
    (cooling,) = [s for s in mux.router.status() if s.state is AccountState.COOLING]
    assert 590 <= max(c.remaining for c in cooling.cooldowns) <= 600
    (provider,) = [p for p in mux.router.providers if p.name == "antigravity"]
    assert provider.quota_scope("gemini-3-pro-low") == provider.quota_scope(MODEL) == \
        "gemini-pro"


@pytest.mark.parametrize(("model", "family"), [
    ("gemini-3-pro-high", "gemini-pro"), ("gemini-3-pro-low", "gemini-pro"),
    ("gemini-2.5-flash-lite", "gemini-flash"), ("gemini-3-flash", "gemini-flash"),
    ("claude-sonnet-4-5-thinking", "claude"), ("claude-opus-4-5-thinking", "claude"),
    ("gpt-oss-120b-medium", "gpt-oss"), ("models/gemini-3-pro-high", "gemini-pro"),
    ("something-new", "something-new"),
])
def test_quota_scopes_are_model_families(model: str, family: str) -> None:
    assert antigravity.quota_family(model) == family


async def test_claude_models_get_parameters_not_parameters_json_schema(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeGoogle,
) -> None:
    model = "claude-sonnet-4-5"
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com",
                        models=(model,))
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False, "$schema": "x"}
    body = {"contents": [{"role": "user", "parts": [{"text": "Weather?"}]}],
            "tools": [{"functionDeclarations": [{"name": "get_weather",
                                                 "parametersJsonSchema": schema}]}]}
    async with httpx.AsyncClient(base_url=mux.url, trust_env=False, timeout=STEP) as http:
        with trio.fail_after(STEP):
            answer = await http.post(f"/v1beta/models/{model}:generateContent", json=body)
    assert answer.status_code == 200, answer.text
    (declaration,) = service.api.last.body["request"]["tools"][0]["functionDeclarations"]
    assert "parametersJsonSchema" not in declaration
    assert declaration["parameters"]["properties"] == {"city": {"type": "string"}}
    assert "$schema" not in declaration["parameters"]


# --------------------------------------------------------------------------------------------
# Every client format


@pytest.mark.parametrize(("client", "mode", "tools"), client_cases())
async def test_every_client_format_reaches_antigravity(
    nursery: trio.Nursery, upstreams: Upstreams, tmp_path: Path, service: FakeGoogle,
    client: str, mode: str, tools: bool,
) -> None:
    mux = await gateway(nursery, upstreams, tmp_path, service, "ada@example.com")
    received = await reaches(mux, service, client, mode, tools, MODEL)
    assert received.body["requestType"] == "agent"
    assert received.path.endswith(":streamGenerateContent") is (mode != "whole")
