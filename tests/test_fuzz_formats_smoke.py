"""A few seconds of the formats fuzz harness (``fuzz/fuzz_formats.py``) on every test run."""

from __future__ import annotations

import hypothesis
import pytest

from fuzz import fuzz_formats
from mux.formats import openai_chat


@pytest.mark.parametrize("target", sorted(fuzz_formats.TARGETS))
def test_fuzz_formats_smoke(target: str) -> None:
    """Random JSON, mutated valid bodies, random and mutated stream bytes split anywhere:
    only RequestError, UpstreamError or FramingError escape, and what parses round-trips.
    Derandomized, so CI sees the same 300 cases (75 per target)."""
    fuzz_formats.run(
        max_examples=75,
        targets=[target],
        settings=hypothesis.settings(derandomize=True, database=None),
    )


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
            max_examples=50,
            targets=["parse_request"],
            settings=hypothesis.settings(derandomize=True, database=None, print_blob=False),
        )
