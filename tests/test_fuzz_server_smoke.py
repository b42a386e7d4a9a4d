"""A few seconds of the server fuzz harness (``fuzz/fuzz_server.py``) on every test run."""

from __future__ import annotations

import hypothesis
import pytest

from fuzz import fuzz_server
from mux.server import Handler, HttpRequest, HttpResponse


def test_fuzz_server_smoke() -> None:
    """Random and mutated requests, whole, split and byte by byte: valid HTTP/1.1 back, no 5xx,
    one access line per request, no hang. Derandomized, so CI sees the same 200 cases."""
    fuzz_server.run(
        max_examples=200,
        settings=hypothesis.settings(deadline=None, derandomize=True, database=None),
    )


def test_fuzz_harness_detects_a_failing_server() -> None:
    """The harness is not vacuous: a handler that crashes (a 500) makes it fail."""

    def crashing_factory() -> Handler:
        async def crash(request: HttpRequest) -> HttpResponse:
            raise RuntimeError("boom")

        return crash

    with pytest.raises(AssertionError, match=r"logged errors|server answered 500"):
        fuzz_server.run(
            crashing_factory,
            max_examples=50,
            settings=hypothesis.settings(derandomize=True, database=None, print_blob=False),
        )


def test_fuzz_the_real_gateway_smoke() -> None:
    """The same inputs against the real application (routes, OpenAI format, fake provider):
    malformed requests get 4xx answers, never a 5xx or a hang."""
    from mux.config import FakeConfig
    from mux.providers.fake import FakeProvider
    from mux.routes import Gateway

    fuzz_server.run(
        lambda: Gateway(providers=[FakeProvider(FakeConfig(), serve_all=True)]).handle,
        max_examples=200,
        settings=hypothesis.settings(deadline=None, derandomize=True, database=None),
    )
