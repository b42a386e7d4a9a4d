"""What the harnesses share: the command line, result tables, machine facts, timing loops,
the formats under test, and reading a process's memory and CPU time from ``/proc``."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

from mux import ir
from mux.formats import anthropic, gemini, ollama, openai_chat, openai_responses

__all__ = [
    "CAPTURES",
    "FORMATS",
    "REPO",
    "Column",
    "Report",
    "Table",
    "child_environment",
    "chosen",
    "cpu_seconds",
    "machine_cpu_seconds",
    "machine_facts",
    "parser",
    "peak_rss_bytes",
    "percentile",
    "raise_open_files",
    "rate",
    "rss_bytes",
    "stream_parser",
    "stream_renderer",
]

#: The repository root: harnesses run child processes from here.
REPO = Path(__file__).resolve().parent.parent
#: Requests captured from real clients (Claude Code, Codex, Gemini CLI).
CAPTURES = Path(os.environ.get("MUX_BENCH_CAPTURES", "/work/shared/fixtures/real-clients"))

#: The five client formats, by module name, in the order every table shows them.
FORMATS: dict[str, ModuleType] = {
    "openai_chat": openai_chat,
    "openai_responses": openai_responses,
    "anthropic": anthropic,
    "gemini": gemini,
    "ollama": ollama,
}


def stream_renderer(module: ModuleType, request: ir.Request) -> Any:
    """The format's stream renderer as the routes make it (Gemini: ``alt=sse``)."""
    if module is gemini:
        return module.StreamRenderer(request, sse=True)
    return module.StreamRenderer(request)


def stream_parser(module: ModuleType) -> Any:
    """The format's stream parser as a provider makes it (Gemini: ``alt=sse``)."""
    if module is gemini:
        return module.StreamParser(sse=True)
    return module.StreamParser()


# --------------------------------------------------------------------------------------------
# Statistics and timing


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values``, interpolated linearly; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    at = (len(ordered) - 1) * q / 100
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def rate(work: Callable[[], object], *, seconds: float, rounds: int = 3) -> float:
    """Calls of ``work`` per second: the best of ``rounds`` rounds of about ``seconds`` in all.

    The best round is the one least disturbed by the rest of the machine (``timeit``'s
    rule). Each round doubles its batch until it has run for its share of the time, so a
    round stops by itself whatever ``work`` costs.
    """
    work()  # warm caches and lazy imports outside the clock
    share = seconds / rounds
    best = 0.0
    for _ in range(rounds):
        calls, elapsed, batch = 0, 0.0, 1
        while elapsed < share:
            start = time.perf_counter()
            for _ in range(batch):
                work()
            elapsed += time.perf_counter() - start
            calls += batch
            batch *= 2
        best = max(best, calls / elapsed)
    return best


# --------------------------------------------------------------------------------------------
# Processes


def rss_bytes(pid: int) -> int | None:
    """The resident set size of process ``pid`` (``VmRSS``), or None if it is gone."""
    return _status_kib(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int | None:
    """The peak resident set size of process ``pid`` (``VmHWM``), or None if it is gone."""
    return _status_kib(pid, "VmHWM")


def _status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds process ``pid`` has run (all its threads), or None if it is gone.

    From the scheduler's own nanosecond count (``/proc/<pid>/task/*/schedstat``) where the
    kernel keeps one: ``utime``/``stime`` are sampled at timer ticks, and a tickless kernel
    charges a whole tick to a process that wakes for a moment, overstating the CPU of a
    lightly loaded one several times over.
    """
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total, found = 0, False
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as schedstat:
                total += int(schedstat.read().split()[0])
                found = True
        except (OSError, ValueError, IndexError):
            continue  # a thread that has just ended, or a kernel without schedstat
    if found:
        return total / 1e9
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: count fields after its closing paren.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU seconds every CPU of the machine has been busy (``/proc/stat``: all but idle
    and iowait), to tell how much of a run's CPU went to other work."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user .. steal, minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def raise_open_files(wanted: int) -> int:
    """Raise this process's open-files limit towards ``wanted`` (children inherit it);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def child_environment() -> dict[str, str]:
    """The environment for child processes: the repository importable, and no proxy, so
    that nothing leaves 127.0.0.1 (httpx honours ``*_PROXY``)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{path}" if path else str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------------------------
# Machine facts


def machine_facts() -> dict[str, Any]:
    """What a reader needs to compare two runs: CPUs, Python, load, the commit measured."""
    model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
            timeout=5, check=False,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "loadavg": os.getloadavg()[0],
        "commit": commit,
    }


# --------------------------------------------------------------------------------------------
# Tables


@attrs.frozen
class Column:
    """One column: the key of its values in each row, its heading, and how numbers show."""

    key: str
    title: str
    #: A format spec for numbers (``",.0f"``); text, booleans and None have their own look.
    spec: str = ""


@attrs.define
class Table:
    """Rows of one measurement. Values stay raw (floats, None) for ``--json``; markdown
    formats them per column: None shows ``n/a``, a boolean ``pass`` or ``FAIL``."""

    title: str
    columns: Sequence[Column]
    rows: list[dict[str, Any]] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(c.title for c in self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            cells = (_cell(row.get(c.key), c.spec) for c in self.columns)
            lines.append("| " + " | ".join(cells) + " |")
        if self.notes:
            lines.append("")
            lines += self.notes
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": {c.key: c.title for c in self.columns},
            "rows": [{c.key: row.get(c.key) for c in self.columns} for row in self.rows],
            "notes": self.notes,
        }


def _cell(value: Any, spec: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "pass" if value else "FAIL"
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    if isinstance(value, int | float) and spec:
        return format(value, spec)
    return str(value)


@attrs.define
class Report:
    """A harness's output: machine facts, then its tables."""

    harness: str
    facts: dict[str, Any]
    tables: list[Table] = attrs.Factory(list)

    def print(self, *, as_json: bool) -> None:
        if as_json:
            body = {"harness": self.harness, "machine": self.facts,
                    "tables": [t.as_json() for t in self.tables]}
            print(json.dumps(body, indent=1, default=str))
            return
        facts = self.facts
        print(f"## {self.harness}\n")
        load = f"load average {facts['loadavg']:.2f} at start"
        if "loadavg_end" in facts:
            load += f", {facts['loadavg_end']:.2f} at end"
        print(
            f"Machine: {facts['nproc']} CPU ({facts['cpu_model']}), {facts['python']}, "
            f"{facts['platform']}, {load}, mux commit {facts['commit']}.\n"
        )
        print("\n\n".join(t.markdown() for t in self.tables))


def parser(name: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every harness has."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description)
    parser.add_argument("--json", action="store_true", help="print JSON, not markdown tables")
    parser.add_argument("--quick", action="store_true",
                        help="a seconds-long smoke run (what CI runs), not a measurement")
    return parser


def chosen(values: Iterable[str] | None, known: Sequence[str], what: str) -> list[str]:
    """The formats named on the command line, checked, in table order; all when none."""
    if not values:
        return list(known)
    unknown = sorted(set(values) - set(known))
    if unknown:
        sys.exit(f"unknown {what} {', '.join(unknown)}; known: {', '.join(known)}")
    return [name for name in known if name in set(values)]
