"""End to end: routing through real sockets, with the official SDKs as clients.

mux runs in-process here (the Gateway over a Router over ``providers_from_config``, served by
:class:`mux.server.Server` on port 0, from a TOML config as ``mux serve`` reads it), because
the tests need two things a subprocess would hide: the router's :meth:`~mux.router.Router.status`
and its clock, which a test moves forward instead of sleeping through cooldowns. The upstreams
are the loopback fakes of ``tests/upstreams.py``, speaking the vendors' real wire formats.
The SDKs are synchronous; they run in worker threads so that the trio loop serving mux and the
fake upstreams keeps running.
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import anthropic
import attrs
import openai
import pytest
import trio

from mux.config import Config, parse_config
from mux.router import AccountState, Router
from mux.routes import Gateway
from mux.server import Limits, Server

import mux.upstream as upstream_module
from mux.providers import api
from tests import upstreams

T = TypeVar("T")


class Clock:
    """trio's clock plus an offset a test advances: cooldowns pass without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return trio.current_time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@attrs.define(eq=False)
class Mux:
    url: str
    router: Router
    clock: Clock

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0)

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key="unused", max_retries=0)

    def state(self, account: str) -> AccountState:
        (found,) = [s for s in self.router.status() if s.account == account]
        return found.state

    def remaining(self, account: str) -> float:
        (found,) = [s for s in self.router.status() if s.account == account]
        return max(c.remaining for c in found.cooldowns)


@pytest.fixture
async def upstream_clients() -> AsyncIterator[Any]:
    async with upstream_module.Upstreams(trust_env=False) as clients:
        yield clients


@pytest.fixture
def start_mux(nursery: trio.Nursery, upstream_clients: Any) -> Callable[[str], Any]:
    """Start mux in ``nursery`` with a TOML config (what ``mux serve`` would read)."""

    async def start(config_text: str) -> Mux:
        config: Config = parse_config(tomllib.loads(config_text))
        clock = Clock()
        router = Router(
            api.providers_from_config(config, upstream_clients), config.routing, clock=clock
        )
        server = Server(Gateway(providers=[router]).handle, limits=Limits(graceful_timeout=0.5))
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        return Mux(url=f"http://127.0.0.1:{port}", router=router, clock=clock)

    return start


async def in_thread(function: Callable[[], T]) -> T:
    with trio.fail_after(20):
        return await trio.to_thread.run_sync(function)


def ask(mux: Mux, model: str = "model-a", text: str = "hello") -> Any:
    with mux.openai() as client:
        return client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}]
        )


def keys_used(upstream: Any) -> list[str]:
    return [r.headers["authorization"].removeprefix("Bearer ") for r in upstream.requests]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def openai_entry(name: str, upstream: Any, *extra: str, models: str = '["model-a"]') -> str:
    keys = ", ".join(f'"{k}"' for k in upstream.keys)
    lines = [
        "[[providers]]", f'name = "{name}"', 'type = "openai"',
        f'base-url = "{upstream.base_url}"', f"api-keys = [{keys}]", f"models = {models}",
        "first-byte-timeout = 5.0", "stream-timeout = 5.0", *extra,
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------


async def test_429_with_retry_after_fails_over_and_reprobes_after_it(
    nursery: trio.Nursery, start_mux: Any
) -> None:
    up = await upstreams.start(nursery, "openai", keys=("key-1", "key-2"))
    up.push(upstreams.Fail(status=429, message="Rate limit reached", headers={"retry-after": "30"}))
    mux = await start_mux('[routing]\nstrategy = "fill-first"\n' + openai_entry("up", up))
    completion = await in_thread(lambda: ask(mux))
    assert completion.choices[0].message.content == "Hello from upstream"
    assert keys_used(up) == ["key-1", "key-2"]  # the client never saw the 429
    assert mux.state("up#1") is AccountState.COOLING
    assert 29 < mux.remaining("up#1") <= 30
    await in_thread(lambda: ask(mux))
    assert keys_used(up)[-1] == "key-2"  # skipped while cooling
    mux.clock.advance(30)
    await in_thread(lambda: ask(mux))
    assert keys_used(up)[-1] == "key-1"  # re-probed, and cleared
    assert mux.state("up#1") is AccountState.OK


async def test_500_fails_over_with_a_growing_cooldown(
    nursery: trio.Nursery, start_mux: Any
) -> None:
    up = await upstreams.start(nursery, "openai", keys=("key-1", "key-2"))
    mux = await start_mux('[routing]\nstrategy = "fill-first"\n' + openai_entry("up", up))
    cooldowns = []
    for _ in range(3):
        up.push(upstreams.Fail(status=500, message="The server had an error"))
        completion = await in_thread(lambda: ask(mux))
        assert completion.choices[0].message.content == "Hello from upstream"
        cooldowns.append(round(mux.remaining("up#1")))
        mux.clock.advance(cooldowns[-1])
    assert cooldowns == [1, 2, 4]
    assert keys_used(up) == ["key-1", "key-2"] * 3


async def test_a_refused_connection_fails_over_to_the_next_tier(
    nursery: trio.Nursery, start_mux: Any
) -> None:
    live = await upstreams.start(nursery, "openai")
    dead = (
        "[[providers]]\nname = \"dead\"\ntype = \"openai\"\npriority = 10\n"
        f"base-url = \"http://127.0.0.1:{closed_port()}/v1\"\napi-keys = [\"k\"]\n"
        "models = [\"model-a\"]\nconnect-timeout = 2.0\n"
    )
    mux = await start_mux(dead + openai_entry("live", live))
    for _ in range(2):
        completion = await in_thread(lambda: ask(mux))
        assert completion.choices[0].message.content == "Hello from upstream"
    assert len(live.requests) == 2
    (status,) = [s for s in mux.router.status() if s.provider == "dead"]
    assert status.state is AccountState.COOLING
    (cooldown,) = status.cooldowns
    assert cooldown.failures == 1  # the second request did not try it
    assert "k" not in cooldown.reason.split()


async def test_an_error_inside_a_200_stream_before_content_fails_over(
    nursery: trio.Nursery, start_mux: Any
) -> None:
    up = await upstreams.start(nursery, "openai", keys=("key-1", "key-2"))
    up.push(upstreams.Answer(error_after=0))
    mux = await start_mux('[routing]\nstrategy = "fill-first"\n' + openai_entry("up", up))

    def stream() -> str:
        with mux.openai() as client:
            chunks = client.chat.completions.create(
                model="model-a", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert await in_thread(stream) == "Hello from upstream"
    assert keys_used(up) == ["key-1", "key-2"]
    assert mux.state("up#1") is AccountState.COOLING


async def test_an_error_after_content_ends_the_stream_without_a_retry(
    nursery: trio.Nursery, start_mux: Any
) -> None:
    up = await upstreams.start(nursery, "openai", keys=("key-1", "key-2"))
    up.push(upstreams.Answer(error_after=1, error_message="overloaded midway"))
    mux = await start_mux(openai_entry("up", up))
    received: list[str] = []

    def stream() -> None:
        with mux.openai() as client:
            chunks = client.chat.completions.create(
                model="model-a", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            for chunk in chunks:
                received.extend(c.delta.content or "" for c in chunk.choices)

    with pytest.raises(openai.APIError, match="overloaded midway"):
        await in_thread(stream)
    assert "".join(received) and "".join(received) != "Hello from upstream"
    assert len(up.requests) == 1


async def test_every_account_cooling_is_a_429_with_retry_after_in_the_clients_format(
    nursery: trio.Nursery, start_mux: Any
) -> None:
    up = await upstreams.start(nursery, "openai")
    up.push(upstreams.Fail(status=429, message="Rate limit reached", headers={"retry-after": "120"}))
    mux = await start_mux("[routing]\nmax-retry-interval = 5.0\n" + openai_entry("up", up))
    with pytest.raises(openai.RateLimitError) as first:
        await in_thread(lambda: ask(mux))
    # Whole seconds until the cooldown ends, rounded up (a moment has passed since the 429).
    assert 118 <= int(first.value.response.headers["retry-after"]) <= 120
    assert "up#1" in first.value.message and "test-key-1" not in first.value.message

    with pytest.raises(openai.RateLimitError) as cooling:  # not even tried upstream
        await in_thread(lambda: ask(mux))
    assert 118 <= int(cooling.value.response.headers["retry-after"]) <= 120
    assert "cooling down" in cooling.value.message

    def ask_anthropic() -> Any:
        with mux.anthropic() as client:
            return client.messages.create(
                model="model-a", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            )

    with pytest.raises(anthropic.RateLimitError) as claude:
        await in_thread(ask_anthropic)
    assert 118 <= int(claude.value.response.headers["retry-after"]) <= 120
    assert claude.value.response.json()["error"]["type"] == "rate_limit_error"
    assert len(up.requests) == 1

    mux.clock.advance(120)
    completion = await in_thread(lambda: ask(mux))
    assert completion.choices[0].message.content == "Hello from upstream"


async def test_auth_failure_of_every_account_is_a_502_naming_them(
    nursery: trio.Nursery, start_mux: Any
) -> None:
    up = await upstreams.start(nursery, "openai", keys=("good",))
    entry = openai_entry("up", up).replace('api-keys = ["good"]', 'api-keys = ["bad-1", "bad-2"]')
    mux = await start_mux(entry)
    with pytest.raises(openai.APIStatusError) as caught:
        await in_thread(lambda: ask(mux))
    assert caught.value.status_code == 502
    assert "'up#1'" in caught.value.message and "'up#2'" in caught.value.message
    assert "bad-1" not in caught.value.message and "bad-2" not in caught.value.message
    assert [s.state for s in mux.router.status() if s.provider == "up"] == [
        AccountState.AUTH_FAILING, AccountState.AUTH_FAILING
    ]


async def test_fallback_models_answer_when_every_account_of_the_first_fails(
    nursery: trio.Nursery, start_mux: Any
) -> None:
    up = await upstreams.start(nursery, "openai")
    up.push(upstreams.Fail(status=503, message="Service unavailable"))
    config = '[routing]\nfallbacks = { "model-a" = ["fake-small"] }\n' + openai_entry("up", up)
    mux = await start_mux(config)
    completion = await in_thread(lambda: ask(mux, text="echo me"))
    assert completion.model == "fake-small"
    assert completion.choices[0].message.content == "echo me"
    assert len(up.requests) == 1


async def test_several_fake_providers_share_a_model_round_robin(
    nursery: trio.Nursery, start_mux: Any
) -> None:
    config = """
[[providers]]
name = "fake-a"
type = "fake"
models = [{ name = "answer-a", alias = "shared" }]

[[providers]]
name = "fake-b"
type = "fake"
weight = 2
models = [{ name = "answer-b", alias = "shared" }]
"""
    mux = await start_mux(config)
    models = [(await in_thread(lambda: ask(mux, "shared"))).model for _ in range(6)]
    assert models == ["answer-b", "answer-a", "answer-b"] * 2
    pinned = await in_thread(lambda: ask(mux, "fake-a/shared"))
    assert pinned.model == "answer-a"
    with mux.openai() as client:
        listed = [m.id for m in await in_thread(lambda: list(client.models.list()))]
    assert "shared" in listed and "fake-a/shared" not in listed


async def test_a_client_that_disconnects_mid_stream_closes_the_upstream_stream(
    nursery: trio.Nursery, start_mux: Any
) -> None:
    up = await upstreams.start(nursery, "openai")
    up.push(upstreams.Answer(text="word " * 200, chunks=200, delay=0.05))
    mux = await start_mux(openai_entry("up", up))

    def read_a_little() -> str:
        with mux.openai() as client:
            chunks = client.chat.completions.create(
                model="model-a", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            first = next(c for c in chunks if c.choices and c.choices[0].delta.content)
            chunks.close()
            return str(first.choices[0].delta.content)

    assert await in_thread(read_a_little)
    with trio.fail_after(3):
        await up.stream_closed.wait()
    assert up.stream_completed is False
    with trio.fail_after(3):
        while mux.router.status()[0].in_flight:
            await trio.sleep(0.01)
