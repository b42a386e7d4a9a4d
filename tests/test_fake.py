"""The fake provider: rule matching, the newest user turn, streams and their delays."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from mux import ir, streams
from mux.config import FakeConfig, FakeRule, FakeToolCall, ModelAlias
from mux.errors import UpstreamError
from mux.providers import Account
from mux.providers.fake import FakeProvider, estimate_tokens, newest_user_text


def user(text: str) -> ir.Message:
    return ir.Message(role=ir.Role.USER, content=[ir.Text(text=text)])


def request(*messages: ir.Message, **fields: Any) -> ir.Request:
    return ir.Request(model="fake", messages=messages, **fields)


RULES = FakeConfig(rules=[
    FakeRule(match="weather", reply="Checking.", tool_call=FakeToolCall(name="get_weather", arguments={"city": "Paris"})),
    FakeRule(match="busy", status=529),
    FakeRule(match="think", reasoning="Let me think.", reply="Done."),
    FakeRule(match="w", reply="second rule for w"),
])


def test_newest_user_turn_skips_system_and_assistant_messages() -> None:
    messages = [
        user("old"),
        ir.Message(role=ir.Role.ASSISTANT, content=[ir.Text(text="assistant text")]),
        user("new"),
        ir.Message(role=ir.Role.SYSTEM, content=[ir.Text(text="trailing system")]),
    ]
    assert newest_user_text(messages) == "new"
    tool = ir.Message(role=ir.Role.TOOL, content=[ir.ToolResult(call_id="c", content=[ir.Text(text="42")])])
    assert newest_user_text([*messages, tool]) == "42"
    image_only = ir.Message(role=ir.Role.USER, content=[ir.Image(url="http://x/y.png")])
    assert newest_user_text([*messages, image_only]) == "new"


async def test_echo_when_no_rule_matches() -> None:
    response = await FakeProvider(RULES).complete(request(user("hello")))
    assert response.content == (ir.Text(text="hello"),)
    assert response.stop_reason is ir.StopReason.END_TURN
    assert response.usage.output_tokens == estimate_tokens("hello") == 2
    assert response.usage.input_tokens >= 1


async def test_first_matching_rule_wins_and_tool_call_follows_reply() -> None:
    response = await FakeProvider(RULES).complete(request(user("the weather")))
    text, call = response.content
    assert text == ir.Text(text="Checking.")
    assert isinstance(call, ir.ToolCall) and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert response.stop_reason is ir.StopReason.TOOL_USE


async def test_reasoning_comes_first_with_a_signature() -> None:
    response = await FakeProvider(RULES).complete(request(user("think")))
    reasoning, text = response.content
    assert isinstance(reasoning, ir.Reasoning) and reasoning.text == "Let me think."
    assert reasoning.signature
    assert text == ir.Text(text="Done.")
    assert response.usage.reasoning_tokens == estimate_tokens("Let me think.")
    assert response.usage.output_tokens >= response.usage.reasoning_tokens


async def test_status_rule_raises_with_that_status() -> None:
    with pytest.raises(UpstreamError) as caught:
        await FakeProvider(RULES).complete(request(user("busy now")))
    assert caught.value.status == 529
    assert caught.value.kind is ir.ErrorKind.OVERLOADED
    events = FakeProvider(RULES).stream(request(user("busy now")))
    with pytest.raises(UpstreamError):
        await anext(events)


async def test_stop_sequences_and_max_tokens_cut_the_reply() -> None:
    provider = FakeProvider(FakeConfig())
    cut = await provider.complete(request(user("one two STOP three"), stop=["STOP"]))
    assert cut.content == (ir.Text(text="one two "),)
    assert (cut.stop_reason, cut.stop_sequence) == (ir.StopReason.STOP_SEQUENCE, "STOP")
    short = await provider.complete(request(user("x" * 100), max_tokens=2))
    assert short.content == (ir.Text(text="x" * 8),)
    assert short.stop_reason is ir.StopReason.MAX_TOKENS


async def test_stream_is_word_by_word_and_collects_to_the_whole_answer() -> None:
    provider = FakeProvider(RULES)
    events = [e async for e in provider.stream(request(user("alpha beta gamma")))]
    assert [e.text for e in events if isinstance(e, ir.TextDelta)] == ["alpha ", "beta ", "gamma"]
    whole = streams.collect(events)
    assert whole.content == (ir.Text(text="alpha beta gamma"),)
    assert isinstance(events[0], ir.StreamStart) and isinstance(events[-1], ir.Finish)


async def test_stream_delays(autojump_clock: trio.testing.MockClock) -> None:
    provider = FakeProvider(FakeConfig(first_token_ms=500, chunk_ms=100))
    times = []
    start = trio.current_time()
    async for event in provider.stream(request(user("a b c"))):
        if isinstance(event, ir.TextDelta):
            times.append(round(trio.current_time() - start, 3))
    assert times == [0.5, 0.6, 0.7]


def test_which_models_it_serves_and_lists() -> None:
    provider = FakeProvider(FakeConfig(models=["fake*", "gpt-test", "local-*"]))
    assert provider.serves("fake-anything") and provider.serves("gpt-test")
    assert provider.serves("local-llama") and not provider.serves("gpt-4o")
    # Only names a client can actually ask for are listed: "local" does not match "local-*".
    assert [m.id for m in provider.models()] == ["fake", "gpt-test"]
    assert FakeProvider(FakeConfig(models=[]), serve_all=True).serves("gpt-4o")


def test_the_builtin_fake_is_an_account_provider_in_the_lowest_tier() -> None:
    provider = FakeProvider(FakeConfig())
    assert (provider.name, provider.priority, provider.weight) == ("fake", -1000, 1)
    assert provider.accounts() == (Account(provider="fake", id="fake"),)
    assert provider.upstream_model("fake-x") == "fake-x"
    assert provider.upstream_model("gpt-4o") is None
    assert FakeProvider(FakeConfig(), serve_all=True).upstream_model("gpt-4o") == "gpt-4o"


async def test_a_named_fake_serves_only_its_own_models_and_aliases() -> None:
    provider = FakeProvider(
        RULES, name="fake-2", priority=5, weight=3,
        models=["gpt-test", "gpt-*", ModelAlias(name="claude-haiku-4-5", alias="fast")],
    )
    assert (provider.name, provider.priority, provider.weight) == ("fake-2", 5, 3)
    assert [a.id for a in provider.accounts()] == ["fake-2"]
    assert provider.upstream_model("gpt-other") == "gpt-other"
    assert provider.upstream_model("fast") == "claude-haiku-4-5"
    assert provider.upstream_model("claude-haiku-4-5") is None  # only the alias is served
    assert provider.upstream_model("fake") is None  # no implicit fake* for a named provider
    # Listed: literal names and aliases ("gpt" does not match "gpt-*").
    assert [m.id for m in provider.models()] == ["gpt-test", "fast"]
    account = provider.accounts()[0]
    answer = await provider.complete(request(user("hello")), account)
    assert answer.content == (ir.Text(text="hello"),)
    events = [e async for e in provider.stream(request(user("a b")), account)]
    assert streams.collect(events).content == (ir.Text(text="a b"),)
    assert await provider.count_tokens(request(user("hello")), account) >= 1
