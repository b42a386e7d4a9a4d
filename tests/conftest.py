"""Shared fixtures: hypothesis profiles and a real ``mux serve`` process on a free port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import hypothesis
import pytest

# "ci" (the default) keeps the whole suite fast; "thorough" is for a long local run:
#   HYPOTHESIS_PROFILE=thorough pytest
hypothesis.settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
    print_blob=True,
)
hypothesis.settings.register_profile(
    "thorough", max_examples=2000, deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real-clients"

_LISTENING = re.compile(r"listening on (http://\S+)")


@attrs.define(eq=False)
class MuxProcess:
    """A ``mux serve`` subprocess; ``url`` is its base URL, ``output`` what it printed."""

    process: subprocess.Popen[str]
    url: str
    output: list[str]

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then wait for a graceful exit; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def start_mux(config_text: str, tmp_path: Path, *args: str) -> MuxProcess:
    """Start ``python -m mux serve --port 0`` with ``config_text`` and wait until it listens."""
    config = tmp_path / "config.toml"
    config.write_text(config_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    process = subprocess.Popen(
        [sys.executable, "-m", "mux", "serve", "--config", str(config), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    output: list[str] = []
    for line in process.stdout:
        output.append(line)
        found = _LISTENING.search(line)
        if found:
            break
    else:
        process.wait(timeout=10)
        raise AssertionError(f"mux did not start:\n{''.join(output)}")

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)

    threading.Thread(target=drain, daemon=True).start()
    return MuxProcess(process=process, url=found[1], output=output)


@pytest.fixture
def mux_factory(tmp_path: Path) -> Iterator[Callable[..., MuxProcess]]:
    """Start mux processes with a given config; they are stopped (gracefully) afterwards."""
    started: list[MuxProcess] = []

    def factory(config_text: str = "", *args: str) -> MuxProcess:
        started.append(start_mux(config_text, tmp_path, *args))
        return started[-1]

    yield factory
    for mux in started:
        try:
            mux.stop()
        except subprocess.TimeoutExpired:
            mux.process.kill()
            raise
