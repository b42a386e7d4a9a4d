"""What each wire format can express of the IR: one module per format, named like the format.

A projection maps an IR value to the IR value that survives a trip through the format,
``parse(render(x))``. The round-trip properties check ``parse(render(x)) == project(x)``, so
each projection is the exact statement of what its format loses. Every module defines
``request(r)``, ``response(r)`` and ``events(events, request)``; every field is written out,
and every loss has a comment starting ``# loss:``.

Values a format fills in from the clock (``created`` when the IR has none) cannot be
predicted; projections keep them as they are and the tests compare after clearing them.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def for_format(name: str) -> ModuleType:
    """The projection module of the format ``name`` (``mux.formats.<name>.NAME``)."""
    return importlib.import_module(f"tests.projections.{name}")
