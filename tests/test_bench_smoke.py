"""The bench harnesses run (``--quick``) and print a table with numbers in every row.

Speed is not asserted here: targets live in the benchmarks, never in timed tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: Per harness; the three together take about 30 s on a 2-core machine.
TIMEOUT = 120


def _run(*args: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=TIMEOUT, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _tables(markdown: str) -> dict[str, list[list[str]]]:
    """Every ``### title`` table of a harness's output: its data rows, as cells."""
    tables: dict[str, list[list[str]]] = {}
    title = None
    for line in markdown.splitlines():
        if line.startswith("### "):
            title = line[4:]
            tables[title] = []
        elif line.startswith("|") and title is not None:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if all(set(cell) <= {"-"} for cell in cells):
                continue  # the separator row
            tables[title].append(cells)
    return {name: rows[1:] for name, rows in tables.items()}  # without the header row


def _number(cell: str) -> bool:
    try:
        float(cell.replace(",", "").rstrip("%"))
    except ValueError:
        return False
    return True


def _assert_numbers(markdown: str, expected: int) -> None:
    tables = _tables(markdown)
    assert len(tables) >= expected, list(tables)
    for name, rows in tables.items():
        assert rows, f"table {name!r} has no rows"
        for row in rows:
            assert "n/a" not in row, f"{name}: a row without a number: {row}"
            assert any(_number(cell) for cell in row), f"{name}: no number in {row}"


def test_translate_quick() -> None:
    _assert_numbers(_run("bench.translate", "--quick"), expected=3)


def test_translate_json() -> None:
    output = _run("bench.translate", "--quick", "--json", "--client", "openai_chat",
                  "--upstream", "anthropic")
    tables = json.loads(output)["tables"]
    rows = tables[0]["rows"]
    assert [(r["client"], r["upstream"]) for r in rows] == [("openai_chat", "anthropic")]
    assert rows[0]["small_per_s"] > 0
    assert rows[0]["stream_events_per_s"] > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_latency_quick() -> None:
    _assert_numbers(_run("bench.latency", "--quick"), expected=6)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_profile_quick() -> None:
    _assert_numbers(_run("bench.profile", "--quick"), expected=12)
