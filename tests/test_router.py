"""The router: balancing, cooldowns, retries, failover and fallbacks, on scripted providers.

Time is trio's ``autojump_clock`` wherever cooldowns matter: a test sleeps through an hour of
cooldown in no time, and ``trio.current_time()`` says exactly when each attempt was made.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import Any, cast

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from mux import ir, streams
from mux.config import FakeConfig, RoutingConfig
from mux.errors import MuxError, RequestError, UpstreamError, kind_for_status
from mux.providers import Account
from mux.providers.fake import FakeProvider
from mux.router import AccountState, Fault, Router, classify

# --------------------------------------------------------------------------------------------
# A scripted AccountProvider


@attrs.frozen
class Midway:
    """A stream that delivers some content, then fails with ``error`` (raised, or in band)."""

    error: MuxError
    in_band: bool = False


@attrs.frozen
class InBand:
    """A stream whose first event after StreamStart is a StreamError (an error in a 200)."""

    error: MuxError


@attrs.frozen
class Empty:
    """A stream that starts and ends without content."""


@attrs.frozen
class Hang:
    """A stream that delivers content, then waits forever."""


Outcome = None | MuxError | Midway | InBand | Empty | Hang


@attrs.define(eq=False)
class Scripted:
    """An AccountProvider whose accounts answer as scripted, counting calls.

    ``script[account]`` is a queue of outcomes, one taken per call; an empty queue (or
    ``always[account]``) decides the rest. None is a success: the answer's text names the
    provider and account.
    """

    name: str
    account_ids: Sequence[str] = ("1",)
    served: dict[str, str] = attrs.Factory(lambda: {"m": "m"})
    priority: int = 0
    weight: int = 1
    script: dict[str, collections.deque[Outcome]] = attrs.Factory(dict)
    always: dict[str, Outcome] = attrs.Factory(dict)
    #: (account id, upstream model, trio time) per call.
    calls: list[tuple[str, str, float]] = attrs.Factory(list)
    open_streams: int = 0
    closed_streams: int = 0
    #: The quota scope of each upstream model (the AccountProvider default: the model).
    scope: Callable[[str], str | None] = lambda model: model

    def fail(self, account: str, *outcomes: Outcome) -> Scripted:
        self.script.setdefault(account, collections.deque()).extend(outcomes)
        return self

    def accounts(self) -> Sequence[Account]:
        return [Account(provider=self.name, id=i, secret=f"sk-secret-{i}") for i in self.account_ids]

    def models(self) -> Sequence[ir.ModelInfo]:
        return [ir.ModelInfo(id=m, owned_by=self.name) for m in self.served]

    def upstream_model(self, model: str) -> str | None:
        return self.served.get(model)

    def quota_scope(self, model: str) -> str | None:
        return self.scope(model)

    def _outcome(self, request: ir.Request, account: Account) -> Outcome:
        assert account.provider == self.name
        self.calls.append((account.id, request.model, trio.current_time()))
        queue = self.script.get(account.id)
        return queue.popleft() if queue else self.always.get(account.id)

    def _response(self, request: ir.Request, account: Account) -> ir.Response:
        return ir.Response(
            id="r", model=request.model, content=[ir.Text(text=f"{self.name}/{account.id}")]
        )

    async def complete(self, request: ir.Request, account: Account) -> ir.Response:
        outcome = self._outcome(request, account)
        await trio.lowlevel.checkpoint()
        if isinstance(outcome, MuxError):
            raise outcome
        assert outcome is None, "stream outcomes are for streams"
        return self._response(request, account)

    async def count_tokens(self, request: ir.Request, account: Account) -> int:
        outcome = self._outcome(request, account)
        if isinstance(outcome, MuxError):
            raise outcome
        return len(self.name)

    async def stream(self, request: ir.Request, account: Account) -> AsyncIterator[ir.Event]:
        outcome = self._outcome(request, account)
        self.open_streams += 1
        try:
            await trio.lowlevel.checkpoint()
            if isinstance(outcome, MuxError):
                raise outcome
            events = list(streams.split(self._response(request, account)))
            if isinstance(outcome, Empty):
                yield events[0]
                return
            if isinstance(outcome, InBand):
                yield events[0]
                error = outcome.error
                yield ir.StreamError(kind=error.kind, message=error.message, status=error.status)
                return
            if isinstance(outcome, (Midway, Hang)):
                for event in events[:2]:
                    yield event
                if isinstance(outcome, Hang):
                    await trio.sleep_forever()
                error = outcome.error
                if outcome.in_band:
                    yield ir.StreamError(kind=error.kind, message=error.message, status=error.status)
                    return
                raise error
            for event in events:
                yield event
        finally:
            self.closed_streams += 1


@attrs.define(eq=False)
class Slow(Scripted):
    """Scripted, but whole answers for the models in ``slow`` take that many seconds."""

    slow: dict[str, float] = attrs.Factory(dict)

    async def complete(self, request: ir.Request, account: Account) -> ir.Response:
        await trio.sleep(self.slow.get(request.model, 0))
        return await super().complete(request, account)


def error(status: int, retry_after: float | None = None, message: str | None = None) -> MuxError:
    return UpstreamError(
        kind_for_status(status), message or f"upstream says {status}", status=status,
        retry_after=retry_after,
    )


def refused() -> MuxError:
    return UpstreamError(ir.ErrorKind.UPSTREAM, "connection refused by 127.0.0.1:9", status=502)


def request(model: str = "m", **fields: Any) -> ir.Request:
    return ir.Request(
        model=model, messages=[ir.Message(role=ir.Role.USER, content=[ir.Text(text="hi")])],
        **fields,
    )


async def ask(router: Router, model: str = "m") -> str:
    """The provider/account that answers a whole request."""
    response = await router.complete(request(model))
    (text,) = response.content
    assert isinstance(text, ir.Text)
    return text.text


async def ask_stream(router: Router, model: str = "m") -> list[ir.Event]:
    return [event async for event in router.stream(request(model, stream=True))]


def routing(**fields: Any) -> RoutingConfig:
    return RoutingConfig(**fields)


def state_of(router: Router, provider: str, account: str) -> AccountState:
    (found,) = [s for s in router.status() if (s.provider, s.account) == (provider, account)]
    return found.state


# --------------------------------------------------------------------------------------------
# Classification


@pytest.mark.parametrize(
    ("status", "fault"),
    [
        (400, Fault.CLIENT), (404, Fault.CLIENT), (413, Fault.CLIENT), (422, Fault.CLIENT),
        (401, Fault.AUTH), (403, Fault.PERMISSION), (402, Fault.PAYMENT),
        (429, Fault.RATE_LIMIT), (408, Fault.TRANSIENT), (500, Fault.TRANSIENT),
        (502, Fault.TRANSIENT), (503, Fault.TRANSIENT), (504, Fault.TRANSIENT),
        (529, Fault.TRANSIENT),
    ],
)
def test_classify_by_status(status: int, fault: Fault) -> None:
    assert classify(error(status)) is fault


def test_classify_kinds_without_http_status() -> None:
    assert classify(refused()) is Fault.TRANSIENT
    assert classify(UpstreamError(ir.ErrorKind.TIMEOUT, "no first byte in 120 s")) is Fault.TRANSIENT
    assert classify(RequestError("tools: not supported by this provider")) is Fault.CLIENT


# --------------------------------------------------------------------------------------------
# Balancing


async def test_round_robin_alternates_providers_then_accounts() -> None:
    a = Scripted("a", ["a1", "a2"])
    b = Scripted("b", ["b1"])
    router = Router([a, b], routing())
    answers = [await ask(router) for _ in range(8)]
    # Equal weights: providers alternate whatever their account counts; a's accounts take turns.
    assert answers == ["a/a1", "b/b1", "a/a2", "b/b1"] * 2


async def test_weighted_round_robin_is_smooth() -> None:
    heavy = Scripted("heavy", ["h"], weight=3)
    light = Scripted("light", ["l"], weight=1)
    router = Router([heavy, light], routing())
    answers = [await ask(router) for _ in range(8)]
    assert answers == ["heavy/h", "heavy/h", "light/l", "heavy/h"] * 2


async def test_balancing_state_is_per_model() -> None:
    a = Scripted("a", served={"m": "m", "n": "n"})
    b = Scripted("b", served={"m": "m", "n": "n"})
    router = Router([a, b], routing())
    assert [await ask(router, "m"), await ask(router, "n"), await ask(router, "m")] == [
        "a/1", "a/1", "b/1"
    ]


async def test_higher_priority_tier_takes_everything_while_it_can(
    autojump_clock: trio.testing.MockClock,
) -> None:
    low = Scripted("low", ["l1"], priority=-5)
    high = Scripted("high", ["h1", "h2"], priority=10)
    router = Router([low, high], routing())
    assert [await ask(router) for _ in range(4)] == ["high/h1", "high/h2"] * 2
    high.fail("h1", error(429, retry_after=60))
    high.fail("h2", error(429, retry_after=60))
    # The whole top tier cools down: the lower tier answers, at once.
    start = trio.current_time()
    assert await ask(router) == "low/l1"
    assert trio.current_time() == start
    assert await ask(router) == "low/l1"
    await trio.sleep(60)
    assert await ask(router) == "high/h1"


async def test_fill_first_uses_the_first_account_until_it_cools(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = Scripted("a", ["a1", "a2"])
    b = Scripted("b", ["b1"])
    router = Router([a, b], routing(strategy="fill-first"))
    assert [await ask(router) for _ in range(3)] == ["a/a1"] * 3
    a.fail("a1", error(429, retry_after=10))
    assert [await ask(router) for _ in range(3)] == ["a/a2"] * 3
    await trio.sleep(10)
    assert await ask(router) == "a/a1"


async def test_least_busy_prefers_idle_accounts_and_breaks_ties_round_robin() -> None:
    a = Scripted("a", ["a1", "a2", "a3"], always={"a1": Hang(), "a2": Hang(), "a3": Hang()})
    router = Router([a], routing(strategy="least-busy"))
    held = []
    for _ in range(3):
        events = router.stream(request(stream=True))
        await anext(events)  # the stream is open: its account is busy
        held.append(events)
    assert [c[0] for c in a.calls] == ["a1", "a2", "a3"]
    assert {s.account: s.in_flight for s in router.status()} == {"a1": 1, "a2": 1, "a3": 1}
    await held[1].aclose()  # a2 is idle again: it is the least busy
    held[1] = router.stream(request(stream=True))
    await anext(held[1])
    assert a.calls[-1][0] == "a2"
    # All equally busy again: ties go round-robin, after a2.
    held.append(router.stream(request(stream=True)))
    await anext(held[-1])
    assert a.calls[-1][0] == "a3"
    for events in held:
        await events.aclose()
    assert {s.account: s.in_flight for s in router.status()} == {"a1": 0, "a2": 0, "a3": 0}


async def test_least_busy_weighs_load_by_provider_weight() -> None:
    big = Scripted("big", ["b"], weight=2, always={"b": Hang()})
    small = Scripted("small", ["s"], weight=1, always={"s": Hang()})
    router = Router([big, small], routing(strategy="least-busy"))
    held = []
    for _ in range(6):
        events = router.stream(request(stream=True))
        await anext(events)
        held.append(events)
    # Load is in-flight / weight: big carries two streams for each of small's.
    assert len(big.calls) == 4 and len(small.calls) == 2
    for events in held:
        await events.aclose()


# --------------------------------------------------------------------------------------------
# Cooldowns and failover


async def test_429_cools_the_account_until_retry_after_then_reprobes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = Scripted("a", ["a1", "a2"]).fail("a1", error(429, retry_after=30))
    router = Router([a], routing())
    assert await ask(router) == "a/a2"  # a1 failed; failover to a2 at once
    assert [c[0] for c in a.calls] == ["a1", "a2"]
    assert trio.current_time() == 0
    (cooldown,) = next(s for s in router.status() if s.account == "a1").cooldowns
    assert (cooldown.state, cooldown.scope, cooldown.remaining, cooldown.status) == (
        AccountState.COOLING, "m", 30, 429
    )
    await trio.sleep(29)
    assert [await ask(router) for _ in range(3)] == ["a/a2"] * 3  # skipped until then
    await trio.sleep(1)
    assert await ask(router) == "a/a1"  # re-probed; the success clears its state
    assert state_of(router, "a", "a1") is AccountState.OK
    assert await ask(router) == "a/a2"


async def test_429_cooldown_is_per_model(autojump_clock: trio.testing.MockClock) -> None:
    a = Scripted("a", ["a1"], served={"m": "m", "n": "n"}).fail("a1", error(429, retry_after=30))
    b = Scripted("b", ["b1"], served={"m": "m"}, priority=-1)
    router = Router([a, b], routing())
    assert await ask(router, "m") == "b/b1"
    assert await ask(router, "n") == "a/a1"  # the same account still serves another model


def family(model: str) -> str:
    """A quota family as Antigravity's: the name up to its first dash."""
    return model.split("-")[0]


async def test_an_account_wide_429_blocks_every_model_and_fails_over(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = {"sonnet": "sonnet", "opus": "opus"}
    a = Scripted("a", ["a1", "a2"], served=served, scope=lambda model: None)
    a.fail("a1", error(429, retry_after=3600))
    router = Router([a], routing(strategy="fill-first"))
    assert await ask(router, "sonnet") == "a/a2"
    assert await ask(router, "opus") == "a/a2"  # the same quota: not even tried on a1
    assert [account for account, _, _ in a.calls] == ["a1", "a2", "a2"]
    (cooldown,) = next(s for s in router.status() if s.account == "a1").cooldowns
    assert (cooldown.scope, cooldown.remaining, cooldown.status) == (None, 3600, 429)


async def test_a_family_429_blocks_the_family_but_not_another_family(
    autojump_clock: trio.testing.MockClock,
) -> None:
    served = {m: m for m in ("gemini-pro", "gemini-flash", "claude-sonnet")}
    a = Scripted("a", ["a1"], served=served, scope=family).fail("a1", error(429, retry_after=60))
    b = Scripted("b", ["b1"], served=served, priority=-1)
    router = Router([a, b], routing())
    assert await ask(router, "gemini-pro") == "b/b1"
    assert await ask(router, "gemini-flash") == "b/b1"  # same family, same quota
    assert await ask(router, "claude-sonnet") == "a/a1"  # another family's quota is fine
    (cooldown,) = next(s for s in router.status() if s.account == "a1").cooldowns
    assert cooldown.scope == "gemini"


async def test_a_per_model_429_leaves_other_models_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = Scripted("a", ["a1"], served={"m": "m", "n": "n"}).fail("a1", error(429, retry_after=30))
    b = Scripted("b", ["b1"], served={"m": "m"}, priority=-1)
    router = Router([a, b], routing())
    assert await ask(router, "m") == "b/b1"
    assert await ask(router, "n") == "a/a1"  # the same account still serves another model
    (cooldown,) = next(s for s in router.status() if s.account == "a1").cooldowns
    assert cooldown.scope == "m"


async def test_non_quota_faults_keep_their_scopes_on_an_account_wide_provider(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A 5xx is about one model's request, not the account's quota."""
    a = Scripted("a", ["a1"], served={"m": "m", "n": "n"}, scope=lambda model: None)
    a.fail("a1", error(503))
    b = Scripted("b", ["b1"], served={"m": "m"}, priority=-1)
    router = Router([a, b], routing())
    assert await ask(router, "m") == "b/b1"
    assert await ask(router, "n") == "a/a1"


async def test_a_named_reset_days_away_is_honoured_then_reprobed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    days = 3 * 86400
    a = Scripted("a", ["a1", "a2"], scope=lambda model: None)
    a.fail("a1", error(429, retry_after=days))
    router = Router([a], routing(strategy="fill-first", max_cooldown=600))
    assert await ask(router) == "a/a2"
    (cooldown,) = next(s for s in router.status() if s.account == "a1").cooldowns
    assert cooldown.remaining == days  # not max-cooldown's 600 s
    await trio.sleep(days - 1)
    assert await ask(router) == "a/a2"  # still honoured a second before the reset
    await trio.sleep(1)
    a.fail("a1", error(429, retry_after=days))  # the probe finds the quota still exhausted
    assert await ask(router) == "a/a2"
    (cooldown,) = next(s for s in router.status() if s.account == "a1").cooldowns
    assert cooldown.remaining == days  # cooled again for the new named reset
    await trio.sleep(days)
    assert await ask(router) == "a/a1"  # this probe succeeds: the state is cleared
    assert state_of(router, "a", "a1") is AccountState.OK
    assert [t for account, _, t in a.calls if account == "a1"] == [0, days, 2 * days]


async def test_a_named_reset_is_capped_by_max_quota_cooldown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = Scripted("a", ["a1", "a2"]).fail("a1", error(429, retry_after=30 * 86400))
    router = Router([a], routing(max_cooldown=600, max_quota_cooldown=7 * 86400))
    await ask(router)
    (cooldown,) = next(s for s in router.status() if s.account == "a1").cooldowns
    assert cooldown.remaining == 7 * 86400


async def test_a_429_without_a_named_reset_backs_off_capped_by_max_cooldown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Scripted("flaky", ["f"], always={"f": error(429)}, scope=lambda model: None)
    spare = Scripted("spare", ["s"])
    router = Router([flaky, spare], routing(strategy="fill-first", max_cooldown=3))
    lengths = []
    for _ in range(4):
        await ask(router)
        (cooldown,) = next(s for s in router.status() if s.provider == "flaky").cooldowns
        lengths.append(cooldown.remaining)
        await trio.sleep(cooldown.remaining)
    assert lengths == [1, 2, 3, 3]


async def test_a_success_that_started_before_a_quota_429_does_not_clear_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Model n's request was in flight when model m's 429 came: its success says nothing
    about the account's quota since, so the account-wide cooldown stays."""
    a = Slow("a", ["a1"], served={"m": "m", "n": "n"}, scope=lambda model: None, slow={"n": 10})
    a.fail("a1", error(429, retry_after=3600))  # m's answer; n's comes after it: a success
    router = Router([a], routing(request_retry=1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, router, "n")
        await trio.sleep(1)
        with pytest.raises(MuxError, match="429"):
            await ask(router, "m")
    assert trio.current_time() == 10  # n answered after the 429
    (cooldown,) = next(s for s in router.status() if s.account == "a1").cooldowns
    assert (cooldown.scope, cooldown.remaining) == (None, 3600 - 9)


async def test_reset_ends_cooldowns_by_hand(autojump_clock: trio.testing.MockClock) -> None:
    quota = error(429, retry_after=86400)
    a = Scripted("a", ["a1", "a2"], always={"a1": quota, "a2": quota})
    b = Scripted("b", ["b1"], always={"b1": error(500)}, priority=-1)
    router = Router([a, b], routing(strategy="fill-first", request_retry=3))
    with pytest.raises(MuxError):
        await ask(router)
    assert {s.account for s in router.status() if s.cooldowns} == {"a1", "a2", "b1"}
    assert router.reset("a", "a1") == 1
    assert {s.account for s in router.status() if s.cooldowns} == {"a2", "b1"}
    assert router.reset("nobody") == 0
    assert router.reset() == 2
    assert all(s.state is AccountState.OK for s in router.status())


async def test_500_cooldown_grows_exponentially_and_success_resets_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Scripted("flaky", ["f"]).fail("f", *[error(500)] * 4)
    spare = Scripted("spare", ["s"])
    router = Router([flaky, spare], routing(strategy="fill-first"))
    lengths = []
    for _ in range(4):
        assert await ask(router) == "spare/s"  # failover, no client-visible error
        (cooldown,) = next(s for s in router.status() if s.provider == "flaky").cooldowns
        lengths.append(cooldown.remaining)
        await trio.sleep(cooldown.remaining)
    assert lengths == [1, 2, 4, 8]
    assert [t for _, _, t in flaky.calls] == [0, 1, 3, 7]
    assert await ask(router) == "flaky/f"  # the probe succeeds: state cleared
    flaky.fail("f", error(503))
    await ask(router)
    (cooldown,) = next(s for s in router.status() if s.provider == "flaky").cooldowns
    assert cooldown.remaining == 1


async def test_exponential_cooldown_is_capped_by_max_cooldown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Scripted("flaky", ["f"], always={"f": error(502)})
    spare = Scripted("spare", ["s"])
    router = Router([flaky, spare], routing(strategy="fill-first", max_cooldown=5))
    lengths = []
    for _ in range(5):
        await ask(router)
        (cooldown,) = next(s for s in router.status() if s.provider == "flaky").cooldowns
        lengths.append(cooldown.remaining)
        await trio.sleep(cooldown.remaining)
    assert lengths == [1, 2, 4, 5, 5]


async def test_refused_connection_fails_over_and_cools(
    autojump_clock: trio.testing.MockClock,
) -> None:
    down = Scripted("down", ["d"], always={"d": refused()})
    up = Scripted("up", ["u"])
    router = Router([down, up], routing())
    assert [await ask(router) for _ in range(3)] == ["up/u"] * 3
    assert len(down.calls) == 1  # cooling: not asked again within the second
    (status,) = [s for s in router.status() if s.provider == "down"]
    assert status.state is AccountState.COOLING
    assert status.cooldowns[0].reason == "connection refused by 127.0.0.1:9"


async def test_concurrent_failures_of_one_account_do_not_escalate_its_cooldown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    flaky = Scripted("flaky", ["f"], always={"f": error(500)})
    spare = Scripted("spare", ["s"], priority=-1)
    router = Router([flaky, spare], routing())
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(ask, router)
    assert len(flaky.calls) == 4  # all four started before the first failure
    (cooldown,) = next(s for s in router.status() if s.provider == "flaky").cooldowns
    assert (cooldown.failures, cooldown.remaining) == (1, 1)


async def test_401_marks_the_account_auth_failing_for_every_model(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = Scripted("a", ["bad", "good"], served={"m": "m", "n": "n"})
    a.fail("bad", error(401, message="invalid x-api-key"))
    router = Router([a], routing(strategy="fill-first", max_cooldown=1800))
    assert await ask(router, "m") == "a/good"
    assert await ask(router, "n") == "a/good"  # the whole account is out, not just model m
    (status,) = [s for s in router.status() if s.account == "bad"]
    assert status.state is AccountState.AUTH_FAILING
    (cooldown,) = status.cooldowns
    assert (cooldown.scope, cooldown.remaining, cooldown.reason) == (None, 1800, "invalid x-api-key")
    await trio.sleep(1800)
    assert await ask(router, "m") == "a/bad"  # re-probed after max-cooldown
    assert state_of(router, "a", "bad") is AccountState.OK


async def test_403_is_auth_failing_for_that_model_only() -> None:
    a = Scripted("a", ["k"], served={"m": "m", "n": "n"}).fail("k", error(403))
    b = Scripted("b", ["k"], served={"m": "m"}, priority=-1)
    router = Router([a, b], routing())
    assert await ask(router, "m") == "b/k"
    assert state_of(router, "a", "k") is AccountState.AUTH_FAILING
    assert await ask(router, "n") == "a/k"


async def test_auth_failures_that_exhaust_the_attempts_are_a_502_naming_the_accounts() -> None:
    a = Scripted("openai", ["key-1", "key-2"], always={"key-1": error(401), "key-2": error(401)})
    router = Router([a], routing())
    with pytest.raises(MuxError) as caught:
        await ask(router)
    assert caught.value.status == 502
    assert caught.value.kind is ir.ErrorKind.UPSTREAM
    message = caught.value.message
    assert "provider 'openai' account 'key-1'" in message
    assert "provider 'openai' account 'key-2'" in message
    assert "sk-secret" not in message
    assert len(a.calls) == 2
    # A later request finds every account failing auth: a 502 at once, no upstream call.
    with pytest.raises(MuxError) as again:
        await ask(router)
    assert again.value.status == 502 and "failing authentication" in again.value.message
    assert "key-1" in again.value.message
    assert len(a.calls) == 2


async def test_402_cools_the_whole_account() -> None:
    a = Scripted("a", ["k"], served={"m": "m", "n": "n"}).fail("k", error(402))
    b = Scripted("b", ["k"], served={"m": "m", "n": "n"}, priority=-1)
    router = Router([a, b], routing())
    assert await ask(router, "m") == "b/k"
    assert await ask(router, "n") == "b/k"
    assert state_of(router, "a", "k") is AccountState.COOLING


async def test_every_account_cooling_is_a_429_with_the_soonest_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = Scripted("a", ["a1", "a2"])
    a.fail("a1", error(429, retry_after=50)).fail("a2", error(429, retry_after=20))
    router = Router([a], routing(max_retry_interval=5))
    with pytest.raises(MuxError) as caught:
        await ask(router)
    assert (caught.value.status, caught.value.kind) == (429, ir.ErrorKind.RATE_LIMIT)
    assert caught.value.retry_after == 20
    assert trio.current_time() == 0  # 20 s is beyond max-retry-interval: no wait
    await trio.sleep(4.5)
    with pytest.raises(MuxError) as cooling:
        await ask(router)
    assert cooling.value.status == 429
    assert cooling.value.retry_after == 16  # 15.5 s, rounded up to whole seconds
    assert "cooling down" in cooling.value.message
    assert len(a.calls) == 2  # the second request asked no upstream


async def test_a_short_cooldown_is_waited_out_within_max_retry_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = Scripted("a", ["a1"]).fail("a1", error(429, retry_after=4))
    router = Router([a], routing(max_retry_interval=5))
    assert await ask(router) == "a/a1"
    assert [t for _, _, t in a.calls] == [0, 4]


async def test_client_errors_are_not_retried_and_keep_the_upstream_message() -> None:
    for status in (400, 404, 413, 422):
        upstream = error(status, message=f"the upstream's own words ({status})")
        a = Scripted("a", ["a1", "a2"]).fail("a1", upstream)
        router = Router([a], routing())
        with pytest.raises(MuxError) as caught:
            await ask(router)
        assert caught.value is upstream
        assert len(a.calls) == 1
        assert state_of(router, "a", "a1") is AccountState.OK
        assert await ask(router) == "a/a2"  # round-robin moves on; a1 is not cooling


async def test_request_retry_bounds_the_attempts(autojump_clock: trio.testing.MockClock) -> None:
    accounts = [f"k{i}" for i in range(5)]
    a = Scripted("a", accounts, always={k: error(500) for k in accounts})
    router = Router([a], routing(request_retry=3))
    with pytest.raises(MuxError) as caught:
        await ask(router)
    assert len(a.calls) == 3
    assert caught.value.status == 500
    assert caught.value.message.startswith("m: 3 attempts failed: provider 'a' account 'k0': 500")
    assert trio.current_time() == 0  # three different accounts: no waiting


async def test_backoff_waits_grow_and_are_capped_by_max_retry_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = Scripted("a", ["k"], always={"k": error(503)})
    router = Router([a], routing(request_retry=10, max_retry_interval=3))
    with pytest.raises(MuxError) as caught:
        await ask(router)
    # Waits of 1 s and 2 s; the next (4 s) exceeds max-retry-interval: give up instead.
    assert [t for _, _, t in a.calls] == [0, 1, 3]
    assert trio.current_time() == 3
    assert caught.value.status == 503 and caught.value.kind is ir.ErrorKind.OVERLOADED


async def test_exhausted_rate_limits_stay_a_429_with_retry_after() -> None:
    a = Scripted("a", ["k1", "k2"], always={"k1": error(429), "k2": error(429)})
    router = Router([a], routing(request_retry=2))
    with pytest.raises(MuxError) as caught:
        await ask(router)
    assert caught.value.status == 429
    assert caught.value.retry_after == 1  # no Retry-After upstream: the first 1 s cooldown


# --------------------------------------------------------------------------------------------
# Fallbacks and the model registry


async def test_fallbacks_are_tried_in_order_when_every_account_fails() -> None:
    big = Scripted("big", ["k"], served={"big": "big-2025"}, always={"k": error(529)})
    mid = Scripted("mid", ["k"], served={"mid": "mid"}, always={"k": error(500)})
    small = Scripted("small", ["k"], served={"small": "small-v1"})
    router = Router(
        [big, mid, small], routing(fallbacks={"big": ["nowhere", "mid", "small"]})
    )
    response = await router.complete(request("big"))
    assert response.model == "small-v1"  # the upstream's name: the client sees the fallback
    assert [len(p.calls) for p in (big, mid, small)] == [1, 1, 1]
    # Now big and mid cool down: straight to small, no attempt wasted.
    assert await ask(router, "big") == "small/k"
    assert [len(p.calls) for p in (big, mid, small)] == [1, 1, 2]


async def test_fallbacks_apply_when_the_model_is_cooling() -> None:
    big = Scripted("big", ["k"], served={"big": "big"}).fail("k", error(429, retry_after=60))
    small = Scripted("small", ["k"], served={"small": "small"})
    router = Router([big, small], routing(fallbacks={"big": ["small"]}))
    assert await ask(router, "big") == "small/k"
    assert await ask(router, "big") == "small/k"
    assert len(big.calls) == 1


async def test_a_fallback_only_name_is_a_virtual_model() -> None:
    a = Scripted("a", ["k"], served={"real": "real"})
    router = Router([a], routing(fallbacks={"best": ["real"]}))
    assert router.serves("best")
    assert [m.id for m in router.models()] == ["real", "best"]
    assert await ask(router, "best") == "a/k"
    assert a.calls[0][1] == "real"


async def test_aliases_and_provider_pinning() -> None:
    a = Scripted("a", ["k"], served={"fast": "gpt-4o-mini", "org/model": "org/model"})
    b = Scripted("b", ["k"], served={"fast": "claude-haiku"})
    router = Router([a, b], routing())
    assert await ask(router, "fast") == "a/k"
    assert a.calls[-1][1] == "gpt-4o-mini"  # the upstream's name goes upstream
    assert [await ask(router, "b/fast") for _ in range(3)] == ["b/k"] * 3
    assert b.calls[-1][1] == "claude-haiku"
    assert await ask(router, "org/model") == "a/k"  # a slash that names no provider
    assert router.serves("a/fast") and not router.serves("a/claude-haiku")
    assert not router.serves("nobody/fast")
    with pytest.raises(RequestError) as caught:
        await ask(router, "gpt-5")
    assert caught.value.status == 404 and caught.value.param == "model"


def test_models_are_listed_once_in_provider_order() -> None:
    a = Scripted("a", served={"x": "x", "y": "y"})
    b = Scripted("b", served={"y": "y", "z": "z"})
    router = Router([a, b], routing())
    assert [(m.id, m.owned_by) for m in router.models()] == [("x", "a"), ("y", "a"), ("z", "b")]


def test_provider_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match=r"^two providers are named 'a': names must be unique$"):
        Router([Scripted("a"), Scripted("a")], routing())


async def test_providers_without_accounts_are_a_502() -> None:
    router = Router([Scripted("a", [])], routing())
    with pytest.raises(MuxError) as caught:
        await ask(router)
    assert caught.value.status == 502 and "no accounts" in caught.value.message


async def test_count_tokens_fails_over_too() -> None:
    a = Scripted("aa", ["k"]).fail("k", error(500))
    b = Scripted("bbb", ["k"], priority=-1)
    router = Router([a, b], routing())
    assert await router.count_tokens(request()) == 3


# --------------------------------------------------------------------------------------------
# Streams


def text_of(events: Sequence[ir.Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, ir.TextDelta))


@pytest.mark.parametrize(
    "failure",
    [error(503), refused(), InBand(error(529)), Empty()],
    ids=["raised-503", "refused", "error-in-200-stream", "ended-without-content"],
)
async def test_a_stream_failing_before_content_fails_over(failure: Outcome) -> None:
    a = Scripted("a", ["k"]).fail("k", failure)
    b = Scripted("b", ["k"], priority=-1)
    router = Router([a, b], routing())
    events = await ask_stream(router)
    assert text_of(events) == "b/k"
    # One clean stream: the failed attempt's StreamStart was held back and dropped.
    assert [type(e) for e in events].count(ir.StreamStart) == 1
    assert isinstance(events[0], ir.StreamStart) and isinstance(events[-1], ir.Finish)
    assert state_of(router, "a", "k") is AccountState.COOLING
    assert a.closed_streams == a.open_streams == 1


async def test_a_stream_client_error_is_raised_not_retried() -> None:
    upstream = error(400, message="messages.0: bad")
    a = Scripted("a", ["k1", "k2"]).fail("k1", InBand(upstream))
    router = Router([a], routing())
    with pytest.raises(MuxError) as caught:
        await ask_stream(router)
    assert (caught.value.status, caught.value.message) == (400, "messages.0: bad")
    assert len(a.calls) == 1


async def test_no_retry_after_content_the_stream_ends_with_a_stream_error() -> None:
    a = Scripted("a", ["k1", "k2"]).fail("k1", Midway(error(502, message="upstream reset")))
    router = Router([a], routing())
    events = await ask_stream(router)
    assert isinstance(events[-1], ir.StreamError)
    assert (events[-1].status, events[-1].message) == (502, "upstream reset")
    assert sum(isinstance(e, ir.StreamError) for e in events) == 1
    assert len(a.calls) == 1
    assert state_of(router, "a", "k1") is AccountState.COOLING  # still counted against it


async def test_an_in_band_error_after_content_passes_through_once() -> None:
    a = Scripted("a", ["k"]).fail("k", Midway(error(529), in_band=True))
    router = Router([a], routing())
    events = await ask_stream(router)
    assert isinstance(events[-1], ir.StreamError) and events[-1].status == 529
    assert len(a.calls) == 1
    assert state_of(router, "a", "k") is AccountState.COOLING


async def test_stream_errors_before_any_event_reach_the_caller_as_mux_errors() -> None:
    a = Scripted("a", ["k"], always={"k": error(401)})
    router = Router([a], routing())
    events = router.stream(request(stream=True))
    with pytest.raises(MuxError) as caught:
        await anext(events)
    assert caught.value.status == 502
    assert a.closed_streams == a.open_streams == 1


async def test_closing_the_router_stream_closes_the_provider_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = Scripted("a", ["k"], always={"k": Hang()})
    router = Router([a], routing())
    events = router.stream(request(stream=True))
    assert isinstance(await anext(events), ir.StreamStart)
    assert isinstance(await anext(events), ir.TextDelta)
    assert (a.open_streams, a.closed_streams) == (1, 0)
    await events.aclose()
    assert a.closed_streams == 1
    assert router.status()[0].in_flight == 0


async def test_cancelling_a_stream_consumer_closes_the_provider_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = Scripted("a", ["k"], always={"k": Hang()})
    router = Router([a], routing())
    with trio.move_on_after(5):
        async with aclosing(router.stream(request(stream=True))) as events:
            async for _ in events:
                pass
    assert a.closed_streams == 1
    assert trio.current_time() == 5


async def test_closing_a_stream_while_waiting_out_a_cooldown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a = Scripted("a", ["k"]).fail("k", error(500))
    router = Router([a], routing())
    with trio.move_on_after(0.5):
        await ask_stream(router)
    assert len(a.calls) == 1 and a.closed_streams == 1
    assert router.status()[0].in_flight == 0


# --------------------------------------------------------------------------------------------
# Status, reset, and the fake provider behind the router


async def test_status_and_reset(autojump_clock: trio.testing.MockClock) -> None:
    a = Scripted("a", ["k1", "k2"], always={"k1": error(401), "k2": error(429, retry_after=99)})
    b = Scripted("b", ["k"])
    router = Router([a, b], routing(strategy="fill-first"))
    await ask(router)
    await ask(router)
    shown = {(s.provider, s.account): s.state for s in router.status()}
    assert shown == {
        ("a", "k1"): AccountState.AUTH_FAILING,
        ("a", "k2"): AccountState.COOLING,
        ("b", "k"): AccountState.OK,
    }
    assert router.reset("a", "k2") == 1
    assert state_of(router, "a", "k2") is AccountState.OK
    assert router.reset() == 1
    assert all(s.state is AccountState.OK for s in router.status())


async def test_fake_providers_behind_the_router() -> None:
    builtin = FakeProvider(FakeConfig())
    named = FakeProvider(FakeConfig(), name="fake-b", priority=0, models=["gpt-*"])
    router = Router([builtin, named], routing())
    assert [s.account for s in router.status()] == ["fake", "fake-b"]
    assert [m.id for m in router.models()] == ["fake"]
    answer = await router.complete(request("gpt-test"))
    assert answer.model == "gpt-test" and answer.content == (ir.Text(text="hi"),)
    assert text_of(await ask_stream(router, "fake-1")) == "hi"
    assert await router.count_tokens(request("fake/fake-9")) >= 1
    # Pinned: fake-b is asked for "gpt-test" (the builtin would answer the whole name).
    assert (await router.complete(request("fake-b/gpt-test"))).model == "gpt-test"
    assert (await router.complete(request("fake-b/fake-1"))).model == "fake-b/fake-1"


async def test_every_attempt_is_logged_at_debug_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = Scripted("a", ["k1", "k2"]).fail("k1", error(429, retry_after=5))
    router = Router([a], routing())
    with caplog.at_level("DEBUG", logger="mux.router"):
        await ask(router)
    lines = [r.getMessage() for r in caplog.records if r.name == "mux.router"]
    assert len(lines) == 2
    assert "attempt 1/3 via provider 'a' account 'k1' failed (429" in lines[0]
    assert "cooling 5 s" in lines[0]
    assert "attempt 2/3 via provider 'a' account 'k2' answered" in lines[1]
    assert "sk-secret" not in caplog.text


def test_subscriptions_scope_quotas_to_the_whole_account() -> None:
    """Claude's 5 h / 7 d windows, Codex's usage limits and Copilot's premium requests cover
    every model of an account; an API key's limits are per model."""
    from mux.providers.api import ApiProvider
    from mux.providers.claude import ClaudeProvider
    from mux.providers.codex import CodexProvider
    from mux.providers.copilot import CopilotProvider

    for subscription in (ClaudeProvider, CodexProvider, CopilotProvider):
        assert subscription.quota_scope(cast(Any, None), "some-model") is None, subscription
    assert ApiProvider.quota_scope(cast(Any, None), "some-model") == "some-model"
    assert FakeProvider(FakeConfig()).quota_scope("fake-1") == "fake-1"
