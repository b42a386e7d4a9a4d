"""Config: TOML in and out, kebab-case keys, errors naming the key path."""

from __future__ import annotations

import tomllib
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given

from mux.config import (
    Config,
    ConfigError,
    FakeConfig,
    FakeRule,
    FakeToolCall,
    dump_config,
    find_config_path,
    load_config,
    parse_config,
    write_new_config,
)


def test_defaults() -> None:
    config = parse_config({})
    assert (config.host, config.port, config.max_request_size) == ("127.0.0.1", 8317, 50 << 20)
    assert config.fake.models == ["fake*"]
    assert config.fake.rules == []


def test_kebab_case_keys_structure() -> None:
    config = parse_config(tomllib.loads("""
        max-request-size = 1024
        [fake]
        first-token-ms = 12
        chunk-ms = 1.5
        [[fake.rules]]
        match = "weather"
        reply = "Checking."
        tool-call = { name = "get_weather", arguments = { city = "Paris" } }
        [[fake.rules]]
        match = "busy"
        status = 529
    """))
    assert config.max_request_size == 1024
    assert config.fake.first_token_ms == 12.0 and config.fake.chunk_ms == 1.5
    assert config.fake.rules[0].tool_call == FakeToolCall(name="get_weather", arguments={"city": "Paris"})
    assert config.fake.rules[1].status == 529


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"prot": 1}, "config: (top level): unknown key(s) prot"),
        ({"port": "80"}, "config: port: expected an integer"),
        ({"port": True}, "config: port: expected an integer"),
        ({"port": 70000}, "config: port: expected a port number from 0 to 65535, got 70000"),
        ({"fake": 3}, "config: fake: expected a table"),
        ({"fake": {"models": "fake*"}}, "config: fake.models: expected an array"),
        ({"fake": {"models": ["a", 1]}}, "config: fake.models[1]: expected a string"),
        ({"fake": {"chunk-ms": -1}}, "config: fake.chunk-ms: expected a number of milliseconds >= 0, got -1.0"),
        ({"fake": {"rules": [{"reply": "x"}]}}, "config: fake.rules[0].match: required key is missing"),
        ({"fake": {"rules": [{"match": "("}]}}, "config: fake.rules[0].match: expected a regular expression"),
        ({"fake": {"rules": [{"match": "a", "status": 200}]}}, "config: fake.rules[0].status: expected an HTTP error status from 400 to 599, got 200"),
        ({"fake": {"rules": [{"match": "a", "tool-call": {"name": "f", "arguments": 3}}]}}, "config: fake.rules[0].tool-call.arguments: expected a table"),
        ({"fake": {"rules": [{"match": "a", "tool_call": {}}]}}, "config: fake.rules[0]: unknown key(s) tool_call"),
    ],
)
def test_errors_name_the_key_and_the_expectation(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert str(caught.value).startswith(message)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"port": "x", "host": 3})
    lines = str(caught.value).splitlines()
    assert sorted(lines) == ["config: host: expected a string", "config: port: expected an integer"]


rules = st.builds(
    FakeRule,
    match=st.sampled_from(["a", "^hi$", "x|y", r"\d+"]),
    reply=st.none() | st.text(max_size=20),
    reasoning=st.none() | st.text(max_size=20),
    tool_call=st.none() | st.builds(
        FakeToolCall, name=st.text("abc_", min_size=1, max_size=8),
        arguments=st.dictionaries(st.text("xyz", min_size=1, max_size=3), st.integers() | st.text(max_size=5), max_size=3),
    ),
    status=st.none() | st.integers(400, 599),
)
configs = st.builds(
    Config,
    host=st.sampled_from(["127.0.0.1", "::1", "0.0.0.0"]),
    port=st.integers(0, 65535),
    max_request_size=st.integers(1, 1 << 40),
    fake=st.builds(
        FakeConfig,
        models=st.lists(st.text("fake*-?", min_size=1, max_size=6), max_size=3),
        first_token_ms=st.floats(0, 1e4),
        chunk_ms=st.floats(0, 1e4),
        rules=st.lists(rules, max_size=3),
    ),
)


@given(configs)
def test_dump_then_parse_round_trips(config: Config) -> None:
    assert parse_config(tomllib.loads(dump_config(config))) == config


def test_find_config_path_order(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    assert find_config_path(None, env) is None  # no default file: defaults
    default = tmp_path / "mux" / "config.toml"
    default.parent.mkdir()
    default.write_text("")
    assert find_config_path(None, env) == default
    assert find_config_path(None, {**env, "MUX_CONFIG": "/x.toml"}) == Path("/x.toml")
    assert find_config_path("/y.toml", {**env, "MUX_CONFIG": "/x.toml"}) == Path("/y.toml")


def test_load_config_reports_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    assert load_config(None) == Config()


def test_write_new_config_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.toml"
    write_new_config(path, Config())
    assert load_config(path) == Config()
    path.write_text("port = 1\n")
    with pytest.raises(FileExistsError):
        write_new_config(path, Config())
    assert path.read_text() == "port = 1\n"
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]
