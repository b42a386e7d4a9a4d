"""A few seconds of the formats fuzz harness (``fuzz/fuzz_formats.py``) on every test run."""

from __future__ import annotations

import hypothesis
import pytest

from fuzz import fuzz_formats
from mux import ir
from mux.formats import openai_chat

#: Cases per target: with three targets per format and the decoders, the smoke of every
#: format stays within about 15 seconds.
EXAMPLES = 60


def _settings() -> hypothesis.settings:
    return hypothesis.settings(derandomize=True, database=None, print_blob=False)


@pytest.mark.parametrize("target", sorted(fuzz_formats.TARGETS))
def test_fuzz_formats_smoke(target: str) -> None:
    """Random JSON, mutated valid bodies, random and mutated stream bytes split anywhere:
    only RequestError, UpstreamError or FramingError escape, and what parses round-trips as
    its projection. Derandomized, so CI sees the same cases every run."""
    fuzz_formats.run(max_examples=EXAMPLES, targets=[target], settings=_settings())


def test_every_landed_format_is_fuzzed() -> None:
    """Each format with a module and a projection has its three targets."""
    for name in fuzz_formats.FORMATS:
        for target in ("parse_request", "parse_response", "stream_parser"):
            assert f"{name}.{target}" in fuzz_formats.TARGETS
    assert "openai_chat" in fuzz_formats.FORMATS


def test_vocabulary_merges_every_format() -> None:
    """The vocabulary holds words only some formats use (harvested from what they render)."""
    words = set(fuzz_formats.VOCABULARY)
    assert {"messages", "tool_calls", "prompt_tokens"} <= words  # openai_chat
    own = {
        "anthropic": "input_schema",
        "gemini": "functionDeclarations",
        "ollama": "num_predict",
        "openai_responses": "function_call_output",
    }
    for name, word in own.items():
        if name in fuzz_formats.FORMATS:
            assert word in words, name


def test_fuzz_harness_detects_a_leaking_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness is not vacuous: a parser that lets a KeyError out makes it fail."""

    parse = openai_chat.parse_request

    def leaky(body: object) -> object:
        if isinstance(body, dict) and "model" not in body:
            raise KeyError("model")
        return parse(body)

    monkeypatch.setattr(openai_chat, "parse_request", leaky)
    with pytest.raises(KeyError):
        fuzz_formats.run(
            max_examples=50, targets=["openai_chat.parse_request"], settings=_settings()
        )


def test_fuzz_harness_detects_a_leaking_stream_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream parser that lets a ValueError out on some bytes makes the harness fail."""

    class Leaky(openai_chat.StreamParser):
        def feed(self, data: bytes) -> list[ir.Event]:
            if b"\n\n" in data:
                raise ValueError("a blank line")
            return super().feed(data)

    monkeypatch.setattr(openai_chat, "StreamParser", Leaky)
    with pytest.raises(ValueError, match="a blank line"):
        fuzz_formats.run(
            max_examples=50, targets=["openai_chat.stream_parser"], settings=_settings()
        )
