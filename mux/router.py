"""The router: which upstream account answers a request, and what happens when it fails.

Theory of operation
-------------------
The :class:`Router` is the one :class:`~mux.providers.Provider` the routes layer talks to. In
front of it sit the configured upstreams (:class:`~mux.providers.AccountProvider`), each with
its accounts. For every request it:

1. **Resolves the model** into a *chain*: the model itself, then its ``[routing] fallbacks``
   in order (one level: a fallback's own fallbacks are not followed). Each model of the chain
   has *candidates*, the (provider, account) pairs serving it, found by asking every provider's
   ``upstream_model`` (so aliases work; the registry is asked afresh each time, so providers
   that discover models at start-up or gain accounts later need no notice).
   ``provider-name/model`` pins the request to that provider: if the part before the first
   ``/`` names a provider that serves the rest, only that provider is a candidate; otherwise
   the whole name is looked up as usual (model names such as ``meta-llama/llama-3`` contain
   slashes too).

2. **Picks a candidate**: the first model of the chain that has an *available* candidate
   (not cooling down, see below), the highest ``priority`` tier of that model that has one,
   and within the tier by ``[routing] strategy``:

   * ``round-robin`` (the default): smooth weighted round-robin over the tier's providers
     (nginx's algorithm: each pick adds every provider's ``weight`` to its score, takes the
     highest score and subtracts the total, so weights 3:1 give a, a, b, a rather than a, a,
     a, b), then plain round-robin over the chosen provider's accounts. A provider's weight is
     its share of the tier's requests however many accounts it has.
   * ``fill-first``: the first available account in configured order, until it cools down.
   * ``least-busy``: the fewest requests in flight per unit of weight (an account's in-flight
     count covers all models); ties are broken by round-robin as above.

   Balancing state is kept per requested model.

3. **Attempts** the request on it, and on failure classifies the error (:func:`classify`):

   ====================================  ==============================================
   upstream answer                        effect
   ====================================  ==============================================
   400, 404, 413, 422 (any 4xx not        the client's fault: no retry, no cooldown; the
   below), mux's own RequestError, a      client gets the upstream's error unchanged
   ``final`` error (the fake provider's
   scripted failures)
   401                                    the whole account fails authentication:
                                          cooldown ``max-cooldown`` on every model
   403                                    the account may not use this model: failing
                                          auth for (account, model), ``max-cooldown``
   402                                    the account is out of credit: every model,
                                          ``max-cooldown``
   429 (or kind RATE_LIMIT)               (account, quota scope) cools until the
                                          upstream's ``retry_after`` (capped by
                                          ``max-quota-cooldown``); without one, as a
                                          transient failure
   408, 5xx, timeouts, refused or broken  (account, model) cools 1 s, 2 s, 4 s, ... per
   connections (kind UPSTREAM/TIMEOUT)    consecutive failure, capped by ``max-cooldown``
   ====================================  ==============================================

   **Quota scopes.** A rate limit or quota covers what the provider says it covers
   (:meth:`~mux.providers.AccountProvider.quota_scope` of the upstream model): the model
   alone (API keys), a model family (Antigravity), or the whole account (Claude's 5 h and 7 d
   windows, Codex's usage limits, Copilot's premium requests). Cooldowns are kept per
   (provider, account, *scope*), where a scope is None (the whole account), a model, or a
   family name; a candidate is available when none of its account's, its model's and its
   model's quota scope's records runs.

   **Named resets.** A reset time the upstream names (``retry_after`` on a rate limit: from
   ``Retry-After``, Codex's ``resets_at``, Antigravity's ``quotaResetDelay``, Claude's
   ``anthropic-ratelimit-unified-reset``) is honoured as given, even days away, up to
   ``max-quota-cooldown`` (7 days by default) so that a wrong answer cannot bench an account
   for ever; ``max-cooldown`` caps only the lengths mux picks itself (the exponential
   backoff, and authentication and credit failures). :meth:`Router.reset` (``POST
   /mux/reset``, ``mux reset``) ends cooldowns by hand.

   After the cooldown the account is simply eligible again (a *probe*): a success clears its
   state, a failure cools it again (for the new reset time the upstream names, or the next
   step of the exponential sequence). A failure reported while a cooldown is already running
   (a request that started before it) extends the cooldown but does not escalate it, so a
   burst of concurrent failures counts as one. Likewise a success clears only the records
   that were there when its attempt *started* (those of the account, the model and the
   model's quota scope: the success proves each of them is over): a request that started
   before a concurrent 429 and succeeded after it proves nothing about the quota now.

4. **Retries** up to ``request-retry`` attempts in all, across accounts, providers and
   fallback models. Decisions:

   * Moving to a *different available account* happens at once: its state is independent of
     the one that just failed, and the client is waiting.
   * When no candidate is available, the request waits for the soonest cooldown to end, if
     that is at most ``max-retry-interval`` away, and retries. Cooldowns of transient failures
     grow 1, 2, 4 s..., so these waits are the exponential backoff, and ``max-retry-interval``
     caps every wait: a longer one is not made, the client gets the error at once instead.
   * A request that finds every candidate cooling before its *first* attempt gets a 429 at
     once, with ``retry_after`` the seconds until the soonest cooldown ends (rounded up to
     whole seconds: ``Retry-After`` is whole seconds, and a 0 makes clients hammer), or a 502
     if every candidate is failing authentication. Clients' SDKs honour ``retry-after``.
   * When the attempts run out, the client gets the last failure: an authentication failure
     becomes a 502 naming the provider and account (``Account.id``, never the secret) of each
     failed attempt; a 429 stays a 429 whose ``retry_after`` is the soonest cooldown end of
     the chain; anything else keeps the upstream's status and kind. The message lists every
     attempt.

5. **Streams** are held back until their first content event (anything but
   :class:`~mux.ir.StreamStart` and :class:`~mux.ir.UsageUpdate`, which are buffered): a
   :class:`~mux.errors.MuxError` raised before it, a :class:`~mux.ir.StreamError` event before
   it, or a stream that ends before it, is a failed attempt like any other and the next
   attempt starts afresh (the buffered events are dropped). Since the routes layer sends the
   response head only after the router's first event, a retried stream is invisible to the
   client. Once content has been yielded there is no retry: a later failure ends the stream
   with a :class:`~mux.ir.StreamError` (and still cools the account). Closing the router's
   stream (a client that disconnects) closes the provider's stream at once (``aclosing``).

Responses carry the upstream's model name (so a client can see that a fallback answered).
Every attempt's outcome is logged at DEBUG on ``mux.router`` with provider and account ids,
never secrets. :meth:`Router.status` shows each account's state for ``mux status``;
:meth:`Router.reset` clears cooldowns by hand.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import aclosing, contextmanager
from typing import cast

import attrs
import trio

from mux import ir
from mux.config import RoutingConfig
from mux.errors import MuxError, RequestError, UpstreamError
from mux.providers import Account, AccountProvider

__all__ = [
    "BASE_COOLDOWN",
    "AccountState",
    "AccountStatus",
    "Cooldown",
    "Fault",
    "Router",
    "classify",
    "cooldown_length",
]

log = logging.getLogger("mux.router")

#: Seconds: the first cooldown after a transient failure, doubled for each consecutive one.
#: Both gateways mux learns from start their exponential 429 backoff at 1 s (L: 1 s·2^level
#: up to 30 min; C: 1 s → 30 min).
BASE_COOLDOWN = 1.0

#: Events that do not count as content: held back until content arrives, dropped on a retry.
_PREAMBLE = (ir.StreamStart, ir.UsageUpdate)


class Fault(enum.Enum):
    """Who is at fault for an upstream error, which decides retry and cooldown."""

    #: The request itself is wrong (400, 404, 413, 422, ...): no retry, no cooldown.
    CLIENT = "client"
    #: 401: the account's credentials are rejected, for every model.
    AUTH = "auth"
    #: 403: the account may not use this model.
    PERMISSION = "permission"
    #: 402: the account is out of credit, for every model.
    PAYMENT = "payment"
    #: 429: rate limit or quota, for the account's quota scope of this model.
    RATE_LIMIT = "rate-limit"
    #: 408, 5xx, timeouts, unreachable upstreams: likely to pass.
    TRANSIENT = "transient"


def classify(error: MuxError) -> Fault:
    """The fault an error from an upstream attempt reports (see the module docstring)."""
    status = error.status
    if error.final:
        return Fault.CLIENT
    if status == 401:
        return Fault.AUTH
    if status == 403:
        return Fault.PERMISSION
    if status == 402:
        return Fault.PAYMENT
    if status == 429 or error.kind is ir.ErrorKind.RATE_LIMIT:
        return Fault.RATE_LIMIT
    if 400 <= status < 500 and status != 408:
        return Fault.CLIENT
    return Fault.TRANSIENT


def cooldown_length(
    fault: Fault, retry_after: float | None, failures: int, routing: RoutingConfig
) -> float:
    """Seconds a failure cools its scope for (see the module docstring).

    Args:
      fault: the failure's :func:`classify`.
      retry_after: the seconds the upstream named, if any (only a rate limit's count).
      failures: consecutive failures of the scope, this one included (at least 1).
      routing: ``max-cooldown`` and ``max-quota-cooldown``.
    """
    if fault in (Fault.AUTH, Fault.PERMISSION, Fault.PAYMENT):
        return routing.max_cooldown
    if fault is Fault.RATE_LIMIT and retry_after is not None and not math.isnan(retry_after):
        return min(max(retry_after, 0.0), routing.max_quota_cooldown)
    return min(BASE_COOLDOWN * 2 ** min(failures - 1, 64), routing.max_cooldown)


def _scope(candidate: _Candidate, fault: Fault) -> str | None:
    """What a failure of ``candidate`` cools: the whole account (None) for credentials and
    credit, the provider's quota scope for a rate limit, else the upstream model."""
    if fault in (Fault.AUTH, Fault.PAYMENT):
        return None
    if fault is Fault.RATE_LIMIT:
        return candidate.provider.quota_scope(candidate.upstream)
    return candidate.upstream


class AccountState(enum.Enum):
    """What ``mux status`` shows for an account."""

    OK = "ok"
    COOLING = "cooling"
    AUTH_FAILING = "auth-failing"


@attrs.frozen(kw_only=True)
class Cooldown:
    """One running cooldown of an account."""

    #: What it covers: None every model of the account, else an upstream model or (for a
    #: rate limit of a provider that scopes quotas by family) a family name.
    scope: str | None
    state: AccountState
    #: When it ends, on the router's clock; ``remaining`` is the seconds until then.
    until: float
    remaining: float
    #: The upstream status that caused it, and the upstream's message.
    status: int
    reason: str
    #: Consecutive failures so far (the exponent of transient cooldowns).
    failures: int


@attrs.frozen(kw_only=True)
class AccountStatus:
    """One account as :meth:`Router.status` reports it."""

    provider: str
    account: str
    #: AUTH_FAILING if any running cooldown is an authentication failure, else COOLING if
    #: any cooldown runs, else OK.
    state: AccountState
    in_flight: int
    cooldowns: tuple[Cooldown, ...]


@attrs.define(eq=False)
class _Penalty:
    """The failure state of one (account, scope): a model, a quota family, or the whole
    account (scope None)."""

    until: float
    #: When it was last recorded, on the router's clock: a success clears it only if its
    #: attempt started at or after this.
    since: float
    failures: int
    state: AccountState
    status: int
    reason: str


#: (provider name, account id, scope: an upstream model, a quota family, or None for the
#: whole account)
_Key = tuple[str, str, str | None]


@attrs.frozen
class _Candidate:
    """One way to answer a model: this account of this provider, under this upstream name."""

    provider: AccountProvider
    account: Account
    #: The chain's model (the name the client or the fallback table used).
    model: str
    upstream: str

    @property
    def account_key(self) -> tuple[str, str]:
        return (self.provider.name, self.account.id)

    def describe(self) -> str:
        return f"provider {self.provider.name!r} account {self.account.id!r}"

    def keys(self) -> tuple[_Key, ...]:
        """The cooldown records that concern this candidate: its account's, its model's and
        its model's quota scope's (each once)."""
        provider, account = self.account_key
        scopes = dict.fromkeys((None, self.upstream, self.provider.quota_scope(self.upstream)))
        return tuple((provider, account, scope) for scope in scopes)


class Router:
    """Routes IR requests to upstream accounts: balancing, cooldowns, retries, fallbacks.

    Implements :class:`~mux.providers.Provider`; see the module docstring for the rules.

    Args:
      providers: the configured upstreams; their names must be unique.
      routing: the ``[routing]`` table.
      clock: seconds on a monotonic clock (trio's, so tests can use ``autojump_clock``).

    Raises:
      ValueError: two providers share a name.
    """

    name = "router"

    def __init__(
        self,
        providers: Sequence[AccountProvider],
        routing: RoutingConfig,
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        names: dict[str, AccountProvider] = {}
        for provider in providers:
            if provider.name in names:
                raise ValueError(f"two providers are named {provider.name!r}: names must be unique")
            names[provider.name] = provider
        self.providers = tuple(providers)
        self.routing = routing
        self._clock = clock
        self._by_name = names
        self._penalties: dict[_Key, _Penalty] = {}
        self._in_flight: dict[tuple[str, str], int] = {}
        # Smooth weighted round-robin scores: (model, tier) -> provider name -> score.
        self._scores: dict[tuple[str, int], dict[str, int]] = {}
        # The account last used per (model, provider), for round-robin over accounts.
        self._last_account: dict[tuple[str, str], str] = {}

    # ---------------------------------------------------------------------------------------
    # The model registry

    def _candidates(self, model: str) -> list[_Candidate]:
        """Every (provider, account) serving ``model``, in configured order."""
        prefix, slash, rest = model.partition("/")
        pinned = self._by_name.get(prefix) if slash else None
        if pinned is not None:
            upstream = pinned.upstream_model(rest)
            if upstream is not None:
                return [_Candidate(pinned, a, model, upstream) for a in pinned.accounts()]
        found = []
        for provider in self.providers:
            upstream = provider.upstream_model(model)
            if upstream is not None:
                found += [_Candidate(provider, a, model, upstream) for a in provider.accounts()]
        return found

    def _served(self, model: str) -> bool:
        prefix, slash, rest = model.partition("/")
        pinned = self._by_name.get(prefix) if slash else None
        if pinned is not None and pinned.upstream_model(rest) is not None:
            return True
        return any(p.upstream_model(model) is not None for p in self.providers)

    def _chain(self, model: str) -> list[str]:
        chain = [model]
        for fallback in self.routing.fallbacks.get(model, ()):
            if fallback not in chain:
                chain.append(fallback)
        return chain

    def serves(self, model: str) -> bool:
        """Whether some provider serves ``model`` or one of its fallbacks."""
        return any(self._served(m) for m in self._chain(model))

    def models(self) -> Sequence[ir.ModelInfo]:
        """Every provider's models, each name once (the first provider's entry wins), then
        fallback names that are served only through their fallbacks. ``provider/model`` forms
        are served but not listed: they would double every list a client shows."""
        seen: dict[str, ir.ModelInfo] = {}
        for provider in self.providers:
            for info in provider.models():
                seen.setdefault(info.id, info)
        for name in self.routing.fallbacks:
            if name not in seen and self.serves(name):
                seen[name] = ir.ModelInfo(id=name)
        return list(seen.values())

    # ---------------------------------------------------------------------------------------
    # The Provider protocol

    async def complete(self, request: ir.Request) -> ir.Response:
        """Answer ``request`` whole through the first account that succeeds.

        Raises:
          RequestError: no provider serves the model (404).
          MuxError: the client's fault, per the upstream; or every attempt failed.
        """
        attempts = self._attempts(request.model)
        while True:
            candidate = await attempts.next()
            with self._using(candidate):
                try:
                    response = await candidate.provider.complete(
                        attrs.evolve(request, model=candidate.upstream), candidate.account
                    )
                except MuxError as error:
                    attempts.failed(candidate, error)
                    continue
            attempts.succeeded(candidate)
            return response

    async def count_tokens(self, request: ir.Request) -> int:
        """The input tokens of ``request``, counted by the first account that answers.

        Raises:
          As :meth:`complete`.
        """
        attempts = self._attempts(request.model)
        while True:
            candidate = await attempts.next()
            with self._using(candidate):
                try:
                    count = await candidate.provider.count_tokens(
                        attrs.evolve(request, model=candidate.upstream), candidate.account
                    )
                except MuxError as error:
                    attempts.failed(candidate, error)
                    continue
            attempts.succeeded(candidate)
            return count

    async def stream(self, request: ir.Request) -> AsyncGenerator[ir.Event, None]:
        """Answer ``request`` as stream events, failing over until content arrives.

        Errors before the first event raise :class:`MuxError` (as :meth:`complete`); a
        failure after content ends the stream with a :class:`~mux.ir.StreamError`.
        """
        attempts = self._attempts(request.model)
        while True:
            candidate = await attempts.next()
            upstream_request = attrs.evolve(request, model=candidate.upstream)
            with self._using(candidate):
                # The protocol's streams are async generators: they can be closed.
                events = cast(
                    AsyncGenerator[ir.Event, None],
                    candidate.provider.stream(upstream_request, candidate.account),
                )
                async with aclosing(events):
                    held: list[ir.Event] = []
                    try:
                        async for event in events:
                            if isinstance(event, ir.StreamError):
                                raise UpstreamError(event.kind, event.message, status=event.status)
                            if not isinstance(event, _PREAMBLE):
                                break
                            held.append(event)
                        else:
                            raise UpstreamError(
                                ir.ErrorKind.UPSTREAM,
                                "the upstream stream ended before any content",
                            )
                    except MuxError as error:
                        attempts.failed(candidate, error)
                        continue
                    attempts.succeeded(candidate)
                    for early in held:
                        yield early
                    yield event
                    try:
                        async for event in events:
                            yield event
                            if isinstance(event, ir.StreamError):
                                attempts.failed_late(
                                    candidate, event.status, event.message, event.kind
                                )
                                return
                    except MuxError as error:
                        attempts.failed_late(candidate, error.status, error.message, error.kind)
                        yield ir.StreamError(
                            kind=error.kind, message=error.message, status=error.status
                        )
                    return

    # ---------------------------------------------------------------------------------------
    # State

    def status(self) -> list[AccountStatus]:
        """Every account of every provider, with its running cooldowns and load."""
        now = self._clock()
        found = []
        for provider in self.providers:
            for account in provider.accounts():
                cooldowns = tuple(
                    Cooldown(
                        scope=scope,
                        state=penalty.state,
                        until=penalty.until,
                        remaining=penalty.until - now,
                        status=penalty.status,
                        reason=penalty.reason,
                        failures=penalty.failures,
                    )
                    for (p, a, scope), penalty in self._penalties.items()
                    if (p, a) == (provider.name, account.id) and penalty.until > now
                )
                states = {c.state for c in cooldowns}
                state = (
                    AccountState.AUTH_FAILING if AccountState.AUTH_FAILING in states
                    else AccountState.COOLING if cooldowns
                    else AccountState.OK
                )
                found.append(AccountStatus(
                    provider=provider.name,
                    account=account.id,
                    state=state,
                    in_flight=self._in_flight.get((provider.name, account.id), 0),
                    cooldowns=cooldowns,
                ))
        return found

    def reset(self, provider: str | None = None, account: str | None = None) -> int:
        """Clear the cooldowns of an account, a provider's accounts, or (no arguments) all.

        Returns:
          How many cooldown records were cleared.
        """
        doomed = [
            key for key in self._penalties
            if provider in (None, key[0]) and account in (None, key[1])
        ]
        for key in doomed:
            del self._penalties[key]
        return len(doomed)

    def _running(self, candidate: _Candidate, now: float) -> list[_Penalty]:
        """The cooldowns of ``candidate`` that have not ended by ``now``."""
        return [
            penalty for key in candidate.keys()
            if (penalty := self._penalties.get(key)) is not None and penalty.until > now
        ]

    def _available(self, candidate: _Candidate, now: float) -> bool:
        return not self._running(candidate, now)

    def _ready_at(self, candidate: _Candidate, now: float) -> float:
        """When ``candidate`` stops cooling down (``now`` if it is not cooling)."""
        return max((p.until for p in self._running(candidate, now)), default=now)

    @contextmanager
    def _using(self, candidate: _Candidate) -> Iterator[None]:
        key = candidate.account_key
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            yield
        finally:
            self._in_flight[key] -= 1

    def _penalise(self, candidate: _Candidate, error: MuxError, fault: Fault) -> float:
        """Record a failure of ``candidate``; returns the cooldown's length in seconds."""
        now = self._clock()
        provider, account = candidate.account_key
        state = AccountState.COOLING
        if fault in (Fault.AUTH, Fault.PERMISSION):
            state = AccountState.AUTH_FAILING
        key = (provider, account, _scope(candidate, fault))
        penalty = self._penalties.get(key)
        running = penalty is not None and penalty.until > now
        failures = (penalty.failures if penalty else 0) + (0 if running else 1)
        until = now + cooldown_length(fault, error.retry_after, failures, self.routing)
        if penalty is not None and running:
            until = max(until, penalty.until)
        self._penalties[key] = _Penalty(
            until=until, since=now, failures=failures, state=state, status=error.status,
            reason=error.message,
        )
        return until - now

    def _clear(self, candidate: _Candidate, started: float) -> None:
        """Forget the cooldowns a success of ``candidate`` disproves: its account's, its
        model's and its quota scope's, as recorded before its attempt ``started``."""
        for key in candidate.keys():
            penalty = self._penalties.get(key)
            if penalty is not None and penalty.since <= started:
                del self._penalties[key]

    # ---------------------------------------------------------------------------------------
    # Choosing

    def _pick(self, chain: Sequence[tuple[str, list[_Candidate]]]) -> _Candidate | None:
        now = self._clock()
        for model, candidates in chain:
            for tier in sorted({c.provider.priority for c in candidates}, reverse=True):
                in_tier = [c for c in candidates if c.provider.priority == tier]
                available = [c for c in in_tier if self._available(c, now)]
                if available:
                    return self._choose(model, tier, in_tier, available)
        return None

    def _choose(
        self, model: str, tier: int, in_tier: list[_Candidate], available: list[_Candidate]
    ) -> _Candidate:
        if len(in_tier) == 1:
            # Nothing to balance, so no state: names are unbounded (``--fake`` serves any).
            return available[0]
        strategy = self.routing.strategy
        if strategy == "fill-first":
            return available[0]
        if strategy == "least-busy":

            def load(c: _Candidate) -> float:
                return self._in_flight.get(c.account_key, 0) / c.provider.weight

            lightest = min(load(c) for c in available)
            available = [c for c in available if load(c) == lightest]
        return self._round_robin(model, tier, in_tier, available)

    def _round_robin(
        self, model: str, tier: int, in_tier: list[_Candidate], available: list[_Candidate]
    ) -> _Candidate:
        # Smooth weighted round-robin over the providers that have an available account.
        providers: dict[str, int] = {}
        for c in available:
            providers.setdefault(c.provider.name, c.provider.weight)
        scores = self._scores.setdefault((model, tier), {})
        total, best = 0, None
        for name, weight in providers.items():
            scores[name] = scores.get(name, 0) + weight
            total += weight
            if best is None or scores[name] > scores[best]:
                best = name
        assert best is not None
        scores[best] -= total
        # Then the next available account of that provider after the one used last.
        order = [c for c in in_tier if c.provider.name == best]
        last = self._last_account.get((model, best))
        start = next((i + 1 for i, c in enumerate(order) if c.account.id == last), 0)
        ready = {c.account.id for c in available}
        for i in range(len(order)):
            chosen = order[(start + i) % len(order)]
            if chosen.account.id in ready:
                self._last_account[(model, best)] = chosen.account.id
                return next(c for c in available if c.account.id == chosen.account.id
                            and c.provider.name == best)
        raise AssertionError("a provider with an available account has none")

    def _attempts(self, model: str) -> _Attempts:
        """The retry state of one request for ``model``.

        Raises:
          RequestError: no provider serves ``model`` nor any of its fallbacks (404).
        """
        chain = [(m, self._candidates(m)) for m in self._chain(model)]
        if not any(candidates for _, candidates in chain):
            if self.serves(model):
                raise UpstreamError(
                    ir.ErrorKind.UPSTREAM,
                    f"the providers serving {model!r} have no accounts configured",
                    status=502,
                )
            raise RequestError(
                f"the model {model!r} does not exist or is not served by this gateway",
                param="model",
                kind=ir.ErrorKind.NOT_FOUND,
            )
        return _Attempts(self, model, chain)


@attrs.define(eq=False)
class _Attempts:
    """One request's attempts: the next candidate, each outcome, and the final error."""

    router: Router
    model: str
    chain: list[tuple[str, list[_Candidate]]]
    failures: list[tuple[_Candidate, MuxError]] = attrs.Factory(list)
    #: When the current attempt started, on the router's clock.
    started: float = 0.0

    @property
    def _limit(self) -> int:
        return self.router.routing.request_retry

    async def next(self) -> _Candidate:
        """The candidate for the next attempt, after waiting for a cooldown if need be.

        Raises:
          MuxError: no attempt is left, or none can be made soon enough (the final error).
        """
        if len(self.failures) >= self._limit:
            raise self._give_up()
        candidate = self.router._pick(self.chain)
        if candidate is None and self.failures:
            wait = self._soonest() - self.router._clock()
            if wait <= self.router.routing.max_retry_interval:
                log.debug("%s: every account is cooling down; retrying in %.3g s", self.model, wait)
                await trio.sleep(max(wait, 0.0))
                candidate = self.router._pick(self.chain)
        if candidate is None:
            raise self._give_up()
        self.started = self.router._clock()
        return candidate

    def failed(self, candidate: _Candidate, error: MuxError) -> None:
        """Record a failed attempt (before any content reached the client).

        Raises:
          MuxError: ``error`` itself, when it is the client's fault (never retried).
        """
        fault = classify(error)
        number = len(self.failures) + 1
        if fault is Fault.CLIENT:
            log.debug(
                "%s: attempt %d/%d via %s refused the request (%d): not retried",
                self.model, number, self._limit, candidate.describe(), error.status,
            )
            raise error
        cooldown = self.router._penalise(candidate, error, fault)
        self.failures.append((candidate, error))
        log.debug(
            "%s: attempt %d/%d via %s failed (%d %s, %s); cooling %.3g s",
            self.model, number, self._limit, candidate.describe(), error.status,
            error.kind.value, fault.value, cooldown,
        )

    def failed_late(
        self,
        candidate: _Candidate,
        status: int,
        message: str,
        kind: ir.ErrorKind = ir.ErrorKind.UPSTREAM,
    ) -> None:
        """Record a failure after content reached the client: cooldown, no retry."""
        error = MuxError(kind, message, status=status)
        fault = classify(error)
        cooldown = 0.0 if fault is Fault.CLIENT else self.router._penalise(candidate, error, fault)
        log.debug(
            "%s: stream via %s failed after content (%d); cooling %.3g s",
            self.model, candidate.describe(), status, cooldown,
        )

    def succeeded(self, candidate: _Candidate) -> None:
        self.router._clear(candidate, self.started)
        log.debug(
            "%s: attempt %d/%d via %s answered (upstream model %r)",
            self.model, len(self.failures) + 1, self._limit, candidate.describe(),
            candidate.upstream,
        )

    def _soonest(self) -> float:
        """When the first candidate of the chain stops cooling down (now if one is ready)."""
        now = self.router._clock()
        return max(now, min(
            (self.router._ready_at(c, now) for _, candidates in self.chain for c in candidates),
            default=now,
        ))

    def _retry_after(self) -> float:
        """Whole seconds until the soonest cooldown of the chain ends, at least 1."""
        return float(max(1, math.ceil(self._soonest() - self.router._clock())))

    def _give_up(self) -> MuxError:
        """The error the client gets when no further attempt will be made."""
        if not self.failures:
            return self._all_cooling()
        candidate, last = self.failures[-1]
        tried = "; ".join(f"{c.describe()}: {e.status} {e.message}" for c, e in self.failures)
        count = f"{len(self.failures)} attempt{'s' if len(self.failures) > 1 else ''}"
        fault = classify(last)
        if fault in (Fault.AUTH, Fault.PERMISSION):
            return UpstreamError(
                ir.ErrorKind.UPSTREAM,
                f"{self.model}: the upstream rejected the credentials of {candidate.describe()}"
                f" ({count} failed: {tried})",
                status=502,
            )
        message = f"{self.model}: {count} failed: {tried}"
        if fault is Fault.RATE_LIMIT:
            return UpstreamError(
                ir.ErrorKind.RATE_LIMIT, message, status=429, retry_after=self._retry_after()
            )
        return UpstreamError(
            last.kind, message, status=last.status, param=last.param, retry_after=last.retry_after
        )

    def _all_cooling(self) -> MuxError:
        now = self.router._clock()
        candidates = [c for _, cs in self.chain for c in cs]
        states = {p.state for c in candidates for p in self.router._running(c, now)}
        if states == {AccountState.AUTH_FAILING}:
            names = ", ".join(c.describe() for c in candidates)
            return UpstreamError(
                ir.ErrorKind.UPSTREAM,
                f"{self.model}: every account serving it is failing authentication ({names});"
                " check their keys (mux status), or wait for the re-probe",
                status=502,
            )
        retry_after = self._retry_after()
        return UpstreamError(
            ir.ErrorKind.RATE_LIMIT,
            f"{self.model}: every account serving it is cooling down after upstream errors;"
            f" retry in {retry_after:.0f} s",
            status=429,
            retry_after=retry_after,
        )
