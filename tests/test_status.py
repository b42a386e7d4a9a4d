"""The management endpoints, ``GET /mux/status`` and ``POST /mux/reset``, over real sockets.

mux runs in-process (a Gateway over a Router over ``providers_from_config``, served on port 0)
in front of the loopback fake upstreams of ``tests/upstreams.py``, so a cooldown comes from a
real 429 of an openai-type upstream, as in ``test_e2e_routing.py``. The access rules (loopback
only, or the API keys) are checked on :meth:`Gateway.handle` too, where a test can say which
peer asks.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import pytest
import trio

import mux.upstream as upstream_module
from mux.config import parse_config
from mux.providers import AccountProvider, api
from mux.router import Router
from mux.routes import Gateway
from mux.server import HttpRequest, Limits, Server
from tests import upstreams

THREE_DAYS = 3 * 86400


@attrs.define(eq=False)
class Served:
    """An in-process mux: its URL, its router and its gateway."""

    url: str
    port: int
    router: Router
    gateway: Gateway


async def serve(
    nursery: trio.Nursery, providers: list[AccountProvider], config_text: str = ""
) -> Served:
    """Serve a Gateway over a Router of ``providers`` on a free loopback port."""
    config = parse_config(tomllib.loads(config_text))
    router = Router(providers, config.routing)
    gateway = Gateway(providers=[router])
    server = Server(gateway.handle, limits=Limits(graceful_timeout=0.5))
    port = await nursery.start(server.serve, "127.0.0.1", 0)
    return Served(url=f"http://127.0.0.1:{port}", port=port, router=router, gateway=gateway)


def openai_entry(upstream: Any) -> str:
    keys = ", ".join(f'"{k}"' for k in upstream.keys)
    return (
        '[routing]\nstrategy = "fill-first"\n[[providers]]\nname = "up"\ntype = "openai"\n'
        f'base-url = "{upstream.base_url}"\napi-keys = [{keys}]\nmodels = ["model-a"]\n'
    )


@pytest.fixture
async def upstream_clients() -> AsyncIterator[Any]:
    async with upstream_module.Upstreams(trust_env=False) as clients:
        yield clients


async def cooling_mux(nursery: trio.Nursery, clients: Any) -> Served:
    """mux over an openai upstream with two keys, the first cooling for three days after a
    real 429 whose ``retry-after`` says so."""
    up = await upstreams.start(nursery, "openai", keys=("sk-live-key-1", "sk-live-key-2"))
    up.push(upstreams.Fail(status=429, message="Rate limit reached for requests",
                           headers={"retry-after": str(THREE_DAYS)}))
    config = parse_config(tomllib.loads(openai_entry(up)))
    served = await serve(nursery, api.providers_from_config(config, clients), openai_entry(up))
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        answer = await client.post("/v1/chat/completions", json={
            "model": "model-a", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text  # failed over to the second key
    return served


async def get(served: Served, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        return await client.get(path, headers=headers)


async def post(served: Served, path: str, body: Any = None, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        content = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body)
        return await client.post(path, content=content, headers=headers)


# --------------------------------------------------------------------------------------------


async def test_status_lists_a_cooling_account_with_scope_until_and_reason(
    nursery: trio.Nursery, upstream_clients: Any,
) -> None:
    served = await cooling_mux(nursery, upstream_clients)
    before = time.time()
    answer = await get(served, "/mux/status")
    assert answer.status_code == 200, answer.text
    assert "sk-live-key" not in answer.text
    body = answer.json()
    assert abs(body["now"] - before) < 5
    (up,) = [p for p in body["providers"] if p["name"] == "up"]
    first, second = up["accounts"]
    assert (second["id"], second["state"], second["cooldowns"]) == ("up#2", "ok", [])
    assert (first["id"], first["state"], first["in_flight"]) == ("up#1", "cooling", 0)
    (cooldown,) = first["cooldowns"]
    assert cooldown["scope"] == "model-a"  # an API key's limits are per model
    assert (cooldown["status"], cooldown["state"], cooldown["failures"]) == (429, "cooling", 1)
    assert cooldown["reason"] == "Rate limit reached for requests"
    assert THREE_DAYS - 10 < cooldown["remaining"] <= THREE_DAYS  # honoured, not capped at 1 h
    assert abs(cooldown["until"] - (before + THREE_DAYS)) < 10
    iso = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(cooldown["until"]))
    assert cooldown["until_iso"].startswith(iso) and cooldown["until_iso"].endswith("Z")
    # The built-in fake provider is listed too, with its pseudo-account.
    assert any(p["name"] == "fake" and p["accounts"][0]["state"] == "ok" for p in body["providers"])


async def test_reset_clears_cooldowns_and_answers_the_count(
    nursery: trio.Nursery, upstream_clients: Any,
) -> None:
    served = await cooling_mux(nursery, upstream_clients)
    answer = await post(served, "/mux/reset", {"provider": "up", "account": "up#2"})
    assert (answer.status_code, answer.json()) == (200, {"cleared": 0})  # up#2 was not cooling
    answer = await post(served, "/mux/reset", {"provider": "up", "account": "up#1"})
    assert (answer.status_code, answer.json()) == (200, {"cleared": 1})
    assert all(s.state.value == "ok" for s in served.router.status())
    assert (await post(served, "/mux/reset")).json() == {"cleared": 0}  # no body: everything


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"[1]", 400, "must be a JSON object"),
        (b"{not json", 400, "not valid JSON"),
        ({"provider": 3}, 400, "provider: expected a string"),
        ({"providr": "up"}, 400, "unknown field(s) providr"),
        ({"provider": "nope"}, 404, "no provider named 'nope'; known: fake, up"),
        ({"provider": "up", "account": "up#9"}, 404, "no account 'up#9' of provider 'up'"),
    ],
)
async def test_reset_refuses_bad_bodies_naming_the_problem(
    nursery: trio.Nursery, upstream_clients: Any, body: Any, status: int, says: str,
) -> None:
    served = await cooling_mux(nursery, upstream_clients)
    answer = await post(served, "/mux/reset", body)
    assert answer.status_code == status
    assert says in answer.json()["error"]["message"]
    assert any(s.cooldowns for s in served.router.status())  # nothing was cleared


def management(client: str, method: str = "GET", path: str = "/mux/status") -> HttpRequest:
    return HttpRequest(method=method, path=path, raw_path=path, query={}, headers={}, body=b"",
                       client=client)


@pytest.mark.parametrize(
    ("client", "allowed"),
    [
        ("127.0.0.1:50000", True), ("127.8.9.1:1", True), ("[::1]:50000", True),
        ("[::ffff:127.0.0.1]:5", True), ("192.168.1.20:50000", False), ("[fe80::1]:5", False),
        ("10.0.0.1:5", False), ("-", False), ("", False),
    ],
)
async def test_only_loopback_peers_are_answered(
    client: str, allowed: bool
) -> None:
    gateway = Gateway(providers=[Router([], parse_config({}).routing)])
    for method, path in (("GET", "/mux/status"), ("POST", "/mux/reset")):
        answer = await gateway.handle(management(client, method, path))
        assert answer.status == (200 if allowed else 403), (client, path)
        if not allowed:
            assert isinstance(answer.body, bytes) and b"loopback" in answer.body


async def test_a_gateway_without_a_router_has_nothing_to_show() -> None:
    answer = await Gateway(providers=[]).handle(management("127.0.0.1:1"))
    assert answer.status == 200 and isinstance(answer.body, bytes)
    assert json.loads(answer.body)["providers"] == []


def test_a_real_mux_serve_answers_its_status_and_reset(mux_factory: Any) -> None:
    mux = mux_factory("", "--fake")
    answer = httpx.get(mux.url + "/mux/status", timeout=10, trust_env=False)
    assert answer.status_code == 200, answer.text
    (fake,) = answer.json()["providers"]
    assert fake["name"] == "fake" and fake["accounts"][0]["state"] == "ok"
    answer = httpx.post(mux.url + "/mux/reset", json={"provider": "fake"}, timeout=10,
                        trust_env=False)
    assert (answer.status_code, answer.json()) == (200, {"cleared": 0})
