"""Where a mux process spends its time under load: the top functions and components.

mux runs in its own process under a profiler from the standard library, in front of the
fake upstream of :mod:`bench.latency`, while that module's load generator drives it:

* ``stream``: streams from every client format to both upstreams at once (concurrency 10);
* ``complete``: whole (non-streamed) small requests at saturation (30 connections);
* ``single``: whole requests one at a time, openai_chat to openai: the cost of one request,
  function by function (µs, and with cProfile calls, per request);
* ``translate``: no gateway, the translators alone in this process (the large agent
  requests to every format, and the 2,000-event stream every pair).

Profilers: ``sample`` (default) samples the stack every millisecond of the process's CPU
time (``ITIMER_PROF``): low overhead, CPU time as the process really spends it, a C function
counted in its Python caller. ``cprofile`` is deterministic: exact call counts and C
functions on their own line, but its per-call cost inflates the many small calls of async
code, and its clock is the wall clock (a ``send`` that wakes another process on a busy
machine shows the time this process spent descheduled). Shares are of the *busy* time:
waiting in ``epoll`` is shown apart as idle.

Usage: ``python -m bench.profile [--quick] [--json] [--scenario S] [--profiler P]``.
"""

from __future__ import annotations

import argparse
import cProfile
import collections
import gc
import json
import pstats
import signal
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import attrs
import trio

from bench import latency, translate
from bench._common import (
    FORMATS,
    REPO,
    Column,
    Report,
    Table,
    machine_facts,
    parser,
    percentile,
    raise_open_files,
)
from mux import ir
from mux.framing import dumps, loads

__all__ = ["main"]

#: How the sampler names the time spent in garbage collection.
GC_LINE = "(garbage collection)"
#: CPU seconds between two samples of the sampling profiler.
SAMPLE_INTERVAL = 0.001

# Where a function lives -> the component it is counted in (first match wins).
_COMPONENTS = (
    ("mux/server.py", "mux.server (HTTP server)"),
    ("mux/routes.py", "mux.routes"),
    ("mux/router.py", "mux.router"),
    ("mux/providers/", "mux.providers"),
    ("mux/upstream.py", "mux.upstream"),
    ("mux/formats/", "mux.formats (translators)"),
    ("mux/framing.py", "mux.framing (SSE, JSON)"),
    ("mux/streams.py", "mux.streams"),
    ("mux/", "mux (other)"),
    ("<attrs generated", "attrs (IR objects)"),
    ("attr/", "attrs (IR objects)"),
    ("h11/", "h11"),
    ("httpx/", "httpx"),
    ("httpcore/", "httpcore"),
    ("anyio/", "anyio"),
    ("sniffio/", "anyio"),
    ("trio/", "trio"),
    ("outcome/", "trio"),
    ("logging/", "logging"),
    ("json/", "json"),
    ("_json", "json"),
    ("'_socket.socket'", "socket syscalls"),
    ("'socket'", "socket syscalls"),
    ("contextlib.py", "contextlib"),
    (GC_LINE, "garbage collection"),
)
_IDLE = ("select.epoll", "_io_epoll.py:get_events")


def _component(where: str) -> str:
    for prefix, name in _COMPONENTS:
        if prefix in where:
            return name
    return "other (stdlib, builtins)"


_PREFIXES = sorted(
    {str(Path(p).resolve()) + "/" for p in (*sys.path, sysconfig.get_paths()["stdlib"],
                                             sysconfig.get_paths()["purelib"], str(REPO)) if p},
    key=len, reverse=True,
)


def _short(filename: str) -> str:
    """A file name without the directory it was imported from."""
    for prefix in _PREFIXES:
        if filename.startswith(prefix):
            return filename[len(prefix):]
    return filename


# --------------------------------------------------------------------------------------------
# The profilers (in the profiled process)


class _Sampler:
    """Samples the main thread's Python stack every ``interval`` seconds of the process's
    CPU time (``ITIMER_PROF``): own counts (the innermost frame) and total counts (every
    function on the stack, once per sample).

    The handler runs in the main thread at the next bytecode boundary, so the time of a C
    function (a JSON encoder, a ``send``) counts in its Python caller, and neither time
    spent waiting in ``epoll`` nor time the process spends descheduled is sampled at all.
    (A sampling *thread* would be biased: it gets the GIL mostly when the main thread
    releases it, i.e. in socket calls.)
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.own: collections.Counter[str] = collections.Counter()
        self.total: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self._cpu = 0.0  # CPU seconds of the process while sampling

    def start(self) -> None:
        self._cpu = time.process_time()
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, signal.SIG_IGN)  # SIGPROF's default action kills
        self._cpu = time.process_time() - self._cpu

    def _sample(self, signum: int, frame: FrameType | None) -> None:
        if frame is None:
            return
        self.samples += 1
        self.own[self._where(frame)] += 1
        seen = set()
        while frame is not None:
            name = self._where(frame)
            if name not in seen:
                seen.add(name)
                self.total[name] += 1
            frame = frame.f_back

    @staticmethod
    def _where(frame: FrameType) -> str:
        code = frame.f_code
        if code is _Collections.__call__.__code__:
            # A tick during a collection is handled at the next bytecode: this callback's.
            return GC_LINE
        return f"{_short(code.co_filename)}:{code.co_firstlineno}:{code.co_name}"

    def dump(self, path: Path) -> None:
        data = {"cpu": self._cpu, "samples": self.samples, "own": self.own, "total": self.total}
        path.write_text(json.dumps(data), encoding="utf-8")


class _Collections:
    """Every garbage collection's pause, by generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._started)


def _profiled_mux(profiler: str, out: Path, argv: Sequence[str]) -> int:
    """Run ``mux`` with ``argv`` under ``profiler``; the profile goes to ``out`` on exit, the
    garbage collector's pauses to ``out`` + ``.gc``."""
    from mux.cli import main as mux_main

    collections_ = _Collections()
    gc.callbacks.append(collections_)
    try:
        return _run_profiled(profiler, out, mux_main, argv)
    finally:
        gc.callbacks.remove(collections_)
        Path(f"{out}.gc").write_text(json.dumps(collections_.pauses), encoding="utf-8")


def _run_profiled(profiler: str, out: Path, mux_main: Any, argv: Sequence[str]) -> int:
    if profiler == "cprofile":
        profile = cProfile.Profile()
        profile.enable()
        try:
            return mux_main(argv)
        finally:
            profile.disable()
            profile.dump_stats(out)
    sampler = _Sampler(SAMPLE_INTERVAL)
    sampler.start()
    try:
        return mux_main(argv)
    finally:
        sampler.stop()
        sampler.dump(out)


# --------------------------------------------------------------------------------------------
# Reading a profile


@attrs.define
class _Line:
    """One function: its own and total share of the busy time, and (cProfile) its calls."""

    name: str
    own: float
    total: float
    calls: int | None = None
    own_seconds: float | None = None


def _read_samples(path: Path) -> tuple[list[_Line], float, float]:
    """Lines, busy CPU seconds, the idle share of the samples."""
    data = json.loads(path.read_text(encoding="utf-8"))
    samples = max(data["samples"], 1)
    idle = sum(n for name, n in data["own"].items() if any(i in name for i in _IDLE))
    busy = max(samples - idle, 1)
    lines = [
        _Line(name, own=data["own"].get(name, 0) / busy, total=n / busy)
        for name, n in data["total"].items()
        if not any(i in name for i in _IDLE)
    ]
    return lines, data["cpu"] * busy / samples, idle / samples


def _read_cprofile(path: Path) -> tuple[list[_Line], float, float]:
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    entries = []
    idle = 0.0
    for (filename, line, function), (_, calls, own, total, _) in stats.items():
        if filename == "~":
            name = function  # a built-in: "<method 'send' of '_socket.socket' objects>"
        else:
            name = f"{_short(filename)}:{line}:{function}"
        if any(i in name for i in _IDLE):
            idle += own
            continue
        entries.append((name, calls, own, total))
    busy = sum(own for _, _, own, _ in entries) or 1e-9
    lines = [_Line(name, own=own / busy, total=total / busy, calls=calls, own_seconds=own)
             for name, calls, own, total in entries]
    return lines, busy, idle / (busy + idle)


def _tables(
    scenario: _Scenario, profiler: str, lines: list[_Line], busy: float, idle: float,
    exchanges: int | None, top: int, note: str,
) -> list[Table]:
    """The profile as tables; with ``exchanges`` (requests or streams served), each line's
    own time per exchange too, and (cProfile) its calls per exchange."""
    unit = scenario.unit
    columns = [
        Column("rank", "#"), Column("function", "function (file:line:name)"),
        Column("own", "own % of busy", ".1f"), Column("total", "incl. callees %", ".1f"),
    ]
    if exchanges:
        columns.append(Column("us", f"own µs per {unit}", ",.1f"))
        if profiler == "cprofile":
            columns.append(Column("calls", f"calls per {unit}", ",.1f"))
    functions = Table(f"{scenario.name}: top functions by own time ({profiler})", columns)
    for rank, line in enumerate(sorted(lines, key=lambda x: -x.own)[:top], 1):
        row = {"rank": rank, "function": line.name, "own": line.own * 100,
               "total": line.total * 100}
        if exchanges:
            row["us"] = line.own * busy / exchanges * 1e6
            row["calls"] = line.calls / exchanges if line.calls is not None else None
        functions.rows.append(row)
    functions.notes.append(note)
    per = f", {busy / exchanges * 1e6:,.0f} µs per {unit} ({exchanges:,} served)" if exchanges \
        else ""
    functions.notes.append(f"Busy: {busy:.2f} s of CPU in the profiled thread{per}; waiting in "
                           f"epoll: {idle:.0%} of the samples.")
    components = Table(f"{scenario.name}: own time by component ({profiler})", [
        Column("component", "component"), Column("share", "% of busy", ".1f"),
        *([Column("us", f"µs per {unit}", ",.1f")] if exchanges else []),
    ])
    shares: collections.Counter[str] = collections.Counter()
    for line in lines:
        shares[_component(line.name)] += line.own
    for name, share in shares.most_common():
        components.rows.append({"component": name, "share": share * 100,
                                "us": share * busy / exchanges * 1e6 if exchanges else None})
    mux_lines = Table(f"{scenario.name}: mux functions by time including callees ({profiler})", [
        Column("rank", "#"), Column("function", "function"),
        Column("total", "incl. callees %", ".1f"), Column("own", "own %", ".1f"),
    ])
    ours = [line for line in lines if line.name.startswith("mux/")]
    for rank, line in enumerate(sorted(ours, key=lambda x: -x.total)[:top], 1):
        mux_lines.rows.append({"rank": rank, "function": line.name, "total": line.total * 100,
                               "own": line.own * 100})
    inclusive = Table(
        f"{scenario.name}: other functions by time including callees ({profiler})", [
            Column("rank", "#"), Column("function", "function"),
            Column("total", "incl. callees %", ".1f"), Column("own", "own %", ".1f"),
        ])
    # Entry points (the run loop, the connection task) hold nearly everything: skip them.
    inner = [line for line in lines if line.total < 0.9 and not line.name.startswith("mux/")]
    for rank, line in enumerate(sorted(inner, key=lambda x: -x.total)[:top], 1):
        inclusive.rows.append({"rank": rank, "function": line.name, "total": line.total * 100,
                               "own": line.own * 100})
    return [functions, components, mux_lines, inclusive]


def _gc_table(scenario: _Scenario, path: Path, exchanges: int | None) -> Table:
    """The garbage collector's pauses in the profiled mux, by generation."""
    table = Table(f"{scenario.name}: garbage collection pauses in mux", [
        Column("generation", "generation"), Column("count", "collections"),
        Column("per", f"per 1,000 {scenario.unit}s", ",.1f"),
        Column("total", "total ms", ",.1f"), Column("p50", "p50 ms", ".3f"),
        Column("max", "max ms", ".3f"),
    ])
    pauses = {int(k): v for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
    for generation, times in sorted(pauses.items()):
        table.rows.append({
            "generation": generation, "count": len(times),
            "per": 1000 * len(times) / exchanges if exchanges else 0.0,
            "total": 1000 * sum(times), "p50": 1000 * (percentile(times, 50) or 0.0),
            "max": 1000 * max(times, default=0.0),
        })
    table.notes.append("Pauses under the profiler, so somewhat longer than without it.")
    return table


# --------------------------------------------------------------------------------------------
# The scenarios


@attrs.frozen
class _Scenario:
    name: str
    #: Streams or whole requests; None: the translators in this process, no gateway.
    stream: bool | None
    #: Connections per client -> upstream kind.
    each: int = 1
    #: Only openai_chat -> openai, not every client format to both upstreams.
    single: bool = False

    @property
    def unit(self) -> str:
        return "stream" if self.stream else "request"


SCENARIOS = {
    "stream": _Scenario("stream", stream=True),
    "complete": _Scenario("complete", stream=False, each=3),
    "single": _Scenario("single", stream=False, single=True),
    "translate": _Scenario("translate", stream=None),
}
#: Chunks per stream and the time between two, in the stream scenario.
CHUNKS, CADENCE = 10, 0.01


async def _gateway_scenario(
    scenario: _Scenario, profiler: str, duration: float, clients: list[str], tmp: Path
) -> tuple[Path, str, int]:
    """Run mux under the profiler with one scenario's load; returns the profile's path, a
    description, and the exchanges (requests or streams) it served."""
    out = tmp / f"{scenario.name}.{profiler}"
    upstream = latency.Upstream(await latency.start_upstream())
    kinds = [("openai_chat", "openai")] if scenario.single else [
        (client, kind) for client in clients for kind in latency.MODELS]
    results: list[latency.LoadResult] = []
    mux = None
    try:
        config = latency.write_mux_config(tmp, upstream.port)
        argv = [sys.executable, "-m", "bench.profile", "--child", profiler, "--out", str(out),
                "--", "serve", "--config", str(config), "--port", "0"]
        mux = await latency.start_mux(argv, tmp / "mux.log")
        await latency.wait_healthy(mux.port)
        gateway = latency.GatewayProcess(latency.HOST, mux.port, mux.pid)
        await upstream.control(chunks=CHUNKS, cadence=CADENCE)

        async def load(client: str, kind: str) -> None:
            request = gateway.request(client, kind, stream=bool(scenario.stream))
            if scenario.stream:
                result = await latency.stream_load(
                    gateway.host, gateway.port, request, concurrency=scenario.each,
                    duration=duration, chunks=CHUNKS, spread=CHUNKS * CADENCE)
            else:
                result = await latency.request_load(
                    gateway.host, gateway.port, request, concurrency=scenario.each,
                    duration=duration)
            results.append(result)

        async with trio.open_nursery() as nursery:
            for client, kind in kinds:
                nursery.start_soon(load, client, kind)
    finally:
        if mux is not None:
            await mux.stop()
        await upstream.process.stop()
    exchanges = sum(r.ok + r.failed + scenario.each for r in results)  # warm-ups included
    what = (f"streams of {CHUNKS} chunks at {CADENCE * 1000:g} ms" if scenario.stream
            else "whole small requests")
    pairs = ", ".join(f"{c} -> {k}" for c, k in kinds) if len(kinds) < 3 else (
        f"{', '.join(clients)}, each to openai and anthropic")
    note = (f"{what.capitalize()}, {pairs}, {scenario.each * len(kinds)} connections at once, "
            f"{duration:g} s.")
    return out, note, exchanges


def _translate_scenario(profiler: str, duration: float, tmp: Path) -> tuple[Path, str]:
    """The translators alone, in this process: large requests and the 2,000-event stream."""
    out = tmp / f"translate.{profiler}"
    bodies = translate.large_requests()
    events = translate.stream_events()
    pieces = {name: translate.upstream_stream(module, events) for name, module in FORMATS.items()}
    request = ir.Request(model="m", stream=True, stream_usage=True)

    def work() -> None:
        deadline = time.monotonic() + duration
        for _ in range(100_000):
            if time.monotonic() >= deadline:
                return
            for _, client, body in bodies:
                raw = dumps(body)
                for upstream in FORMATS.values():
                    dumps(translate.translate_request(FORMATS[client], upstream, loads(raw)))
            for client in FORMATS.values():
                for upstream, stream in pieces.items():
                    translate.translate_stream(client, FORMATS[upstream], stream, request)

    if profiler == "cprofile":
        profile = cProfile.Profile()
        profile.runcall(work)
        profile.dump_stats(out)
    else:
        sampler = _Sampler(SAMPLE_INTERVAL)
        sampler.start()
        try:
            work()
        finally:
            sampler.stop()
            sampler.dump(out)
    return out, (f"In this process, {duration:g} s: the two captured agent requests bytes to "
                 "bytes to all five formats, and the 2,000-event stream for all 25 pairs.")


async def _run(args: argparse.Namespace, report: Report) -> None:
    raise_open_files(4096)
    duration = args.duration or (1.0 if args.quick else 10.0)
    top = 12 if args.quick else 25
    clients = list(FORMATS) if not args.quick else ["openai_chat", "anthropic"]
    with tempfile.TemporaryDirectory(prefix="mux-profile-") as directory:
        tmp = Path(directory)
        for name in args.scenario or SCENARIOS:
            scenario = SCENARIOS[name]
            exchanges = None
            if scenario.stream is None:
                path, note = _translate_scenario(args.profiler, duration, tmp)
            else:
                path, note, exchanges = await _gateway_scenario(
                    scenario, args.profiler, duration, clients, tmp)
            read = _read_cprofile if args.profiler == "cprofile" else _read_samples
            lines, busy, idle = read(path)
            report.tables += _tables(scenario, args.profiler, lines, busy, idle, exchanges, top,
                                     note)
            if scenario.stream is not None:
                report.tables.append(_gc_table(scenario, Path(f"{path}.gc"), exchanges))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:  # the profiled mux: --child PROFILER --out FILE -- MUX ARGS
        split = argv.index("--")
        return _profiled_mux(argv[1], Path(argv[3]), argv[split + 1:])
    args_parser = parser("profile", __doc__.split("\n\n")[0])
    args_parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                             help="only this scenario (repeatable; default all)")
    args_parser.add_argument("--profiler", choices=("sample", "cprofile"), default="sample")
    args_parser.add_argument("--duration", type=float, help="seconds of load per scenario")
    args = args_parser.parse_args(argv)
    report = Report("bench.profile", machine_facts())
    trio.run(_run, args, report)
    report.print(as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
