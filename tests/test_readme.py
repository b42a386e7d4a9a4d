"""The README stays true: its commands and its fidelity tables match the code."""

from __future__ import annotations

import re
from pathlib import Path

from mux import fidelity

README = Path(__file__).resolve().parents[1] / "README.md"


def _table_lines(text: str) -> list[str]:
    """The rows and notes of markdown tables, in order."""
    return [line for line in text.splitlines() if line.startswith("|") or re.match(r"\[\d+\] ", line)]


def test_fidelity_tables_are_current() -> None:
    readme = README.read_text()
    section = readme.split("<!-- fidelity:start -->")[1].split("<!-- fidelity:end -->")[0]
    measured = fidelity.render_markdown(fidelity.measure(None, None))
    assert _table_lines(section) == _table_lines(measured), (
        "the README's fidelity tables are stale: regenerate them with `mux fidelity`"
    )
    for client in fidelity.available_formats():
        assert f"<b>Client: {client}</b>" in section


def test_readme_opens_with_the_two_commands() -> None:
    first_blocks = re.findall(r"```sh\n(.*?)\n```", README.read_text(), re.DOTALL)[:2]
    assert first_blocks[0].endswith("mux serve")
    assert first_blocks[1].endswith("python -m pytest")
    ci = (README.parent / ".ci" / "run").read_text()
    assert ".venv/bin/python -m pytest" in ci
