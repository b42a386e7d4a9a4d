"""mux.fidelity and ``mux fidelity``: the measured matrix, its judges and its command.

The matrix is measured through the translators, never read from the projections; these
tests hold it to the projections on its own samples (the pair law of tests/test_pairs.py,
on fixed values), to known facts, and to its own consistency, and check that a translator
that loses something flips the cell it should.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from mux import cli, fidelity, ir
from mux.fidelity import FEATURES, Cell, Feature, Status
from mux.formats import openai_chat
from tests.test_pairs import (
    PAIR_IDS,
    PAIRS,
    Format,
    client_request_projection,
    load,
    request_projection,
    settle,
)

FEATURE = {(feature.kind, feature.name): feature for feature in FEATURES}
Matrix = dict[tuple[str, str, str, str], Cell]


@pytest.fixture(scope="module")
def matrix() -> Matrix:
    """The whole matrix over the formats that have landed, keyed (client, upstream, kind,
    feature)."""
    return {(c.client, c.upstream, c.kind, c.feature): c for c in fidelity.measure()}


def formats() -> list[str]:
    return fidelity.available_formats()


# --------------------------------------------------------------------------------------------
# The judges


def test_feature_names_are_unique_and_samples_exist() -> None:
    keys = [(feature.kind, feature.name) for feature in FEATURES]
    assert len(keys) == len(set(keys))
    assert all(feature.samples for feature in FEATURES)
    assert {feature.kind for feature in FEATURES} == {"request", "response", "stream"}


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f"{f.kind}: {f.name}")
def test_an_untouched_sample_survives(feature: Feature) -> None:
    """Each judge accepts its own sample unchanged."""
    for sample in feature.samples:
        assert feature.check(sample, sample) == fidelity.Verdict(Status.SURVIVES)


def _emptied(feature: Feature, sample: Any) -> Any:
    """The sample with the feature taken away: a bare question, answer or stream."""
    if feature.kind == "request":
        question = ir.Message(role=ir.Role.USER, content=[ir.Text(text="Hello?")])
        return ir.Request(model=sample.model, messages=[question])
    if feature.kind == "response":
        return ir.Response(id="", model="")
    return [ir.StreamStart(id="", model=""), ir.Finish(stop_reason=ir.StopReason.END_TURN)]


#: Features whose absence is their default value: an emptied sample still has them.
_DEFAULTS = {"tool choice: auto", "stop reason: end_turn", "streaming stop reason: end_turn"}


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f"{f.kind}: {f.name}")
def test_a_sample_without_the_feature_does_not_survive(feature: Feature) -> None:
    """Each judge can fail: the sample stripped of its feature is partial or lost."""
    if feature.name in _DEFAULTS:
        pytest.skip("absent means the default here")
    for sample in feature.samples:
        assert feature.check(sample, _emptied(feature, sample)).status is not Status.SURVIVES


# --------------------------------------------------------------------------------------------
# The matrix against the projections


def _composed(feature: Feature, client: Format, upstream: Format, sample: Any) -> Any:
    """What the projections say the trip of ``fidelity.trip`` gives back."""
    if feature.kind == "request":
        return request_projection(upstream, client_request_projection(client, sample))
    if feature.kind == "response":
        return client.projection.response(upstream.projection.response(sample))
    request = fidelity.STREAM_REQUEST
    return client.projection.events(upstream.projection.events(sample, request), request)


@pytest.mark.parametrize(("client", "upstream"), PAIRS, ids=PAIR_IDS)
def test_trips_agree_with_the_composed_projections(client: str, upstream: str) -> None:
    """Every feature sample's trip through the pair gives the composed projections: the
    pair law on fixed values, so the matrix and the projections cannot disagree."""
    pair = (load(client), load(upstream))
    failures = []
    for feature in FEATURES:
        for sample in feature.samples:
            expected = _composed(feature, *pair, sample)
            try:
                after = settle(fidelity.trip(feature, client, upstream, sample), expected)
            except Exception as exc:
                failures.append(f"{feature.name}: raised {exc!r}")
                continue
            if after != expected:
                failures.append(
                    f"{feature.name}:\n  trip        {after!r}\n  projections {expected!r}"
                )
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(("client", "upstream"), PAIRS, ids=PAIR_IDS)
def test_no_translator_raises_on_a_sample(client: str, upstream: str, matrix: Matrix) -> None:
    """Every sample is valid IR: a cell that records an error is a translator bug."""
    load(client), load(upstream)
    errors = [
        f"{c.feature}: {c.why}"
        for (f, g, _, _), c in matrix.items()
        if (f, g) == (client, upstream) and c.why.startswith("error:")
    ]
    assert not errors, "\n".join(errors)


def test_same_format_hop_keeps_whatever_its_format_can_express(matrix: Matrix) -> None:
    """If a feature survives any pair with F on one side, F can express it, so F -> F keeps
    it; and nothing is better across formats than within one."""
    rank = {Status.SURVIVES: 0, Status.PARTIAL: 1, Status.LOST: 2}
    wrong = []
    for (client, upstream, kind, feature), cell in matrix.items():
        for fmt in {client, upstream}:
            same = matrix[(fmt, fmt, kind, feature)]
            if rank[same.status] > rank[cell.status]:
                wrong.append(
                    f"{feature}: {client}->{upstream} {cell.status.value}, "
                    f"but {fmt}->{fmt} {same.status.value} ({same.why})"
                )
    assert not wrong, "\n".join(wrong)


#: Pairs that lose a feature both their formats keep, on purpose: (kind, feature, client,
#: upstream), each under a comment saying why.
_DELIBERATE = {
    # G.2: Anthropic signatures are Anthropic's; Gemini rejects foreign thoughtSignatures.
    ("request", "reasoning signatures", "anthropic", "gemini"),
    # G.1: Gemini signatures are Gemini's; Anthropic answers 400 "Invalid signature in
    # thinking block", so reasoning not of Anthropic origin is dropped.
    ("request", "reasoning signatures", "gemini", "anthropic"),
}


def test_a_pair_keeps_what_both_its_formats_keep(matrix: Matrix) -> None:
    """Where F -> F and G -> G both keep a feature, F -> G keeps it too, unless the loss is
    deliberate (``_DELIBERATE``): a mapping bug between two formats shows up here."""
    lost = []
    for (client, upstream, kind, feature), cell in matrix.items():
        both = all(
            matrix[(fmt, fmt, kind, feature)].status is Status.SURVIVES
            for fmt in (client, upstream)
        )
        if both and cell.status is not Status.SURVIVES:
            if (kind, feature, client, upstream) not in _DELIBERATE:
                lost.append(
                    f"{kind} {feature}: {client}->{upstream} {cell.status.value} ({cell.why})"
                )
    assert not lost, "\n".join(lost)


#: Opaque reasoning tokens: each is bound to the provider that made it (protocols.md G.1-G.3).
_OPAQUE = (
    "reasoning signatures",
    "redacted reasoning",
    "encrypted reasoning",
    "tool-call signatures",
)


@pytest.mark.parametrize("feature", _OPAQUE)
def test_opaque_tokens_never_reach_another_formats_upstream(feature: str, matrix: Matrix) -> None:
    """A signature, redacted thinking or encrypted content a client of F replays must not be
    sent to an upstream of another format: Anthropic answers 400 "Invalid signature in
    thinking block" (G.1), Gemini rejects foreign thoughtSignatures (G.2), encrypted_content
    works only on OpenAI (G.3)."""
    crossed = [
        f"{c.client}->{c.upstream}: {c.status.value}"
        for (client, upstream, kind, name), c in matrix.items()
        if kind == "request" and name == feature and client != upstream
        if c.status is not Status.LOST
    ]
    assert not crossed, "\n".join(crossed)


# Facts from protocols.md (F and G) that the measurement must find.
_KNOWN: list[tuple[str, str | None, str | None, Status]] = [
    # (feature, client or None for any, upstream or None for any, status)
    ("system prompt", None, None, Status.SURVIVES),
    ("text", None, None, Status.SURVIVES),
    ("streaming text", "openai_chat", "openai_chat", Status.SURVIVES),
    ("temperature", "openai_chat", "openai_chat", Status.SURVIVES),
    ("top_k", "openai_chat", None, Status.LOST),  # Chat has no top_k (G.7)
    ("top_k", None, "openai_chat", Status.LOST),
    ("reasoning signatures", "ollama", None, Status.LOST),  # no slot in Ollama (G.1)
    ("reasoning signatures", None, "ollama", Status.LOST),
    ("streaming reasoning signatures", None, "ollama", Status.LOST),
    ("redacted reasoning", None, "ollama", Status.LOST),  # no counterpart anywhere but Anthropic
    ("redacted reasoning", None, "openai_chat", Status.LOST),
    ("redacted reasoning", "anthropic", "anthropic", Status.SURVIVES),
    ("reasoning signatures", "anthropic", "anthropic", Status.SURVIVES),
    ("encrypted reasoning", "openai_responses", "openai_responses", Status.SURVIVES),
    ("tool-call signatures", "gemini", "gemini", Status.SURVIVES),
    ("images (URL)", None, "ollama", Status.LOST),  # Ollama images are inline only (F.5)
    ("documents (inline)", None, "ollama", Status.LOST),
    ("tool choice: named tool", None, "ollama", Status.LOST),  # Ollama drops tool choice (F.4)
    ("cached-token usage", "openai_chat", "openai_chat", Status.SURVIVES),
    ("cached-token usage", None, "ollama", Status.LOST),  # Ollama reports no cache (F.3)
    ("multiple system messages", "openai_chat", "anthropic", Status.PARTIAL),  # one slot (G.4)
    ("interleaved system messages", "openai_chat", "gemini", Status.PARTIAL),
]


def _known_cells(matrix: Matrix) -> Iterator[tuple[Cell, Status]]:
    """The cells a fact of ``_KNOWN`` speaks of (a name may be a request, a response and a
    stream feature), and the status it says they have."""
    for feature, client, upstream, status in _KNOWN:
        for (f, g, _, name), cell in matrix.items():
            if name == feature and client in (None, f) and upstream in (None, g):
                yield cell, status


def test_known_facts(matrix: Matrix) -> None:
    """The measurement finds what protocols.md says (for the formats that have landed)."""
    wrong = [
        f"{c.feature} {c.client}->{c.upstream}: {c.status.value} ({c.why}), expected {s.value}"
        for c, s in _known_cells(matrix)
        if c.status is not s
    ]
    assert not wrong, "\n".join(wrong)
    assert any(True for _ in _known_cells(matrix))


# --------------------------------------------------------------------------------------------
# A broken translator flips its cell


def _cell(client: str, upstream: str, kind: str, name: str) -> Cell:
    (cell,) = fidelity.measure([client], [upstream], [FEATURE[(kind, name)]])
    return cell


def _drop_temperature(monkeypatch: pytest.MonkeyPatch) -> None:
    render = openai_chat.render_request
    monkeypatch.setattr(
        openai_chat,
        "render_request",
        lambda r: {k: v for k, v in render(r).items() if k != "temperature"},
    )


def _drop_cached_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    parse = openai_chat.parse_response
    monkeypatch.setattr(
        openai_chat,
        "parse_response",
        lambda body: attrs.evolve(
            parse(body), usage=attrs.evolve(parse(body).usage, cache_read_tokens=0)
        ),
    )


def _drop_tool_call_names(monkeypatch: pytest.MonkeyPatch) -> None:
    class Renderer(openai_chat.StreamRenderer):
        def render(self, event: ir.Event) -> bytes:
            if isinstance(event, ir.ToolCallStart):
                event = attrs.evolve(event, name="renamed")
            return super().render(event)

    monkeypatch.setattr(openai_chat, "StreamRenderer", Renderer)


@pytest.mark.parametrize(
    ("kind", "feature", "breaks"),
    [
        ("request", "temperature", _drop_temperature),
        ("response", "cached-token usage", _drop_cached_tokens),
        ("stream", "streaming tool calls", _drop_tool_call_names),
    ],
)
def test_a_broken_translator_flips_its_cell(
    kind: str, feature: str, breaks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A translator monkeypatched to lose the feature turns its survives cell to lost."""
    assert _cell("openai_chat", "openai_chat", kind, feature).status is Status.SURVIVES
    breaks(monkeypatch)
    broken = _cell("openai_chat", "openai_chat", kind, feature)
    assert broken.status is Status.LOST, broken
    assert broken.why and not broken.why.startswith("error:")


def test_a_raising_translator_shows_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(body: object) -> ir.Request:
        raise KeyError("messages")

    monkeypatch.setattr(openai_chat, "parse_request", fail)
    cell = _cell("openai_chat", "openai_chat", "request", "seed")
    assert (cell.status, cell.why) == (Status.LOST, "error: KeyError: 'messages'")


# --------------------------------------------------------------------------------------------
# The command

_CELL = re.compile(r"^(survives|partial \[(\d+)\]|lost \[(\d+)\])$")


def test_command_prints_one_table_per_client(capsys: pytest.CaptureFixture[str]) -> None:
    """Every cell is one of the three values; every note a cell cites is printed below its
    table; each table has a row per feature and a column per upstream."""
    assert cli.main(["fidelity"]) == 0
    out = capsys.readouterr().out
    names = formats()
    tables = out.split("### Client: ")[1:]
    assert [t.split("\n", 1)[0] for t in tables] == names
    for table in tables:
        lines = table.splitlines()
        header = next(line for line in lines if line.startswith("| feature |"))
        assert [c.strip() for c in header.strip("|").split("|")][1:] == names
        rows = [line for line in lines if line.startswith("| ") and line is not header]
        rows = [r for r in rows if not r.startswith("| **")]
        assert len(rows) == len(FEATURES)
        notes = {m[1]: m[2] for line in lines if (m := re.match(r"^\[(\d+)\] (.+)$", line))}
        for row in rows:
            name, *cells = [c.strip() for c in row.strip("|").split("|")]
            assert name in {n for _, n in FEATURE} and len(cells) == len(names), row
            for cell in cells:
                match = _CELL.match(cell)
                assert match, f"{name}: {cell!r}"
                number = match[2] or match[3]
                assert number is None or notes.get(number), f"{name}: note {number} is missing"


def test_command_json() -> None:
    """``mux fidelity --json`` (a real process): every pair, every feature, known statuses."""
    done = subprocess.run(
        [sys.executable, "-m", "mux", "fidelity", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    cells = json.loads(done.stdout)["cells"]
    names = formats()
    assert len(cells) == len(names) ** 2 * len(FEATURES)
    assert {(c["client"], c["upstream"]) for c in cells} == {(f, g) for f in names for g in names}
    assert {c["status"] for c in cells} <= {"survives", "partial", "lost"}
    assert all(bool(c["why"]) == (c["status"] != "survives") for c in cells)


def test_command_filters_and_rejects_unknown_formats(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(["fidelity", "--json", "--client", "openai_chat", "--upstream", "openai_chat"])
        == 0
    )
    cells = json.loads(capsys.readouterr().out)["cells"]
    assert len(cells) == len(FEATURES)
    assert cli.main(["fidelity", "--client", "smoke_signals"]) == 2
    assert "unknown format smoke_signals" in capsys.readouterr().err
