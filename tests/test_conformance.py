"""
The client conformance suite (issue 18 item 6): every scenario of
tests/conformance/scenarios.py with the Twisted, the asyncio and the
JavaScript client, against a scripted server on 127.0.0.1 and a real
C{twistd hub}; and the feature matrix of docs/clients.md, which must be
the one these results make.

The suite runs once for this module (about 15 s: the three drivers run
at the same time).  Like tests/test_javascript.py, it fails, never skips,
when node or npm is missing (.ci/run installs them).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conformance.expect import Between, NonEmpty, OneOf, StartsWith, mismatches
from .conformance.run import (
    SuiteError,
    cell,
    documented_matrix,
    matrix,
    prepare_js,
    run_suite,
    verdict,
)
from .conformance.scenarios import CLIENTS, SCENARIOS, Scenario

#: The suite runs the three clients' drivers as child processes: longer than pytest's default 120 s.
pytestmark = pytest.mark.timeout(400)

CASES = [(s, c) for s in SCENARIOS for c in CLIENTS if c not in s.unsupported]


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict[str, Any]]:
    """What each client observed in each scenario (the suite, run once)."""
    try:
        prepare_js()
        return run_suite()
    except SuiteError as e:
        pytest.fail(str(e))


@pytest.mark.parametrize(("scenario", "client"), CASES, ids=[f"{c}-{s.name}" for s, c in CASES])
def test_scenario(scenario: Scenario, client: str, outcomes: dict[str, dict[str, Any]]) -> None:
    """The client observes what the scenario expects (a listed known failure must still fail)."""
    result = verdict(scenario, client, outcomes)
    if client in scenario.known_failure:
        assert result.status == "fail", f"{scenario.name} passes with {client} now: remove its known_failure"
    else:
        observed = json.dumps(outcomes.get(client, {}).get(scenario.name))
        assert result.status == "pass", (
            f"{scenario.name} [{client}]:\n" + "\n".join(result.problems) + f"\nobserved: {observed[:4000]}"
        )


def test_docs_show_the_matrix_these_results_make(outcomes: dict[str, dict[str, Any]]) -> None:
    """docs/clients.md shows the matrix made from these results (python3 -m tests.conformance.run --write-docs)."""
    assert documented_matrix() == matrix(outcomes), (
        "docs/clients.md's matrix differs from the results: run `python3 -m tests.conformance.run --write-docs`"
    )


def test_every_scenario_runs_with_every_client_or_says_why_not() -> None:
    """Each client not running a scenario has a one-line reason; known failures and variants name real clients."""
    assert len(SCENARIOS) >= 90
    for s in SCENARIOS:
        for declared in (s.unsupported, s.known_failure, s.variants):
            assert set(declared) <= set(CLIENTS), s.name
        assert not set(s.unsupported) & set(s.known_failure), s.name
        for reason in [*s.unsupported.values(), *s.known_failure.values(), *(note for note, _ in s.variants.values())]:
            assert reason.strip() and "\n" not in reason, s.name
        assert set(s.unsupported) != set(CLIENTS), f"{s.name} runs with no client"


def test_matrix_cells_say_what_each_client_did() -> None:
    """The matrix marks a pass, a failure, a missing run, a variant's note and an unsupported client's reason."""
    first = SCENARIOS[0]
    unsupported = next(s for s in SCENARIOS if s.unsupported)
    variant = next(s for s in SCENARIOS if s.variants)
    client = next(iter(variant.variants))
    good = {c: {first.name: {"connect": "ok"}} for c in CLIENTS}
    assert cell(first, "twisted", verdict(first, "twisted", {})) == "**NOT RUN**"
    assert cell(first, "twisted", verdict(first, "twisted", good)) == "**FAIL**"  # connect alone is not enough
    missing = next(c for c in CLIENTS if c in unsupported.unsupported)
    assert cell(unsupported, missing, verdict(unsupported, missing, {})) == "not supported: " + unsupported.unsupported[missing]
    observed = {client: {variant.name: variant.expected_for(client)}}
    assert cell(variant, client, verdict(variant, client, observed)) == "pass: " + variant.variants[client][0]
    known = Scenario("known", "group", "title", [], {"answer": 1}, script=None, known_failure={"js": "a reason"})
    assert cell(known, "js", verdict(known, "js", {"js": {"known": {"answer": 2}}})) == "known failure: a reason"
    assert "listed as a known failure" in cell(known, "js", verdict(known, "js", {"js": {"known": {"answer": 1}}}))
    assert verdict(known, "js", {"js": {"known": {"answer": 1, "error": "the scenario did not finish"}}}).status == "fail"


def test_expectations_compare_strictly() -> None:
    """Subset dicts, exact lists, booleans never equal to numbers, and the matchers."""
    assert mismatches({"a": 1}, {"a": 1, "b": 2}) == []
    assert mismatches({"a": 1}, {"b": 1}) == ["outcome.a: missing (expected 1)"]
    assert mismatches([1, 2], [1, 2, 3])
    assert mismatches({"locally": True}, {"locally": 1})
    assert mismatches({"code": 1}, {"code": True})
    assert mismatches({"x": {"y": None}}, {"x": {"y": None}}) == []
    assert not Between(1, 2).matches(True) and Between(1, 2).matches(1.5) and not Between(1, 2).matches(2.5)
    assert NonEmpty().matches("x") and not NonEmpty().matches("")
    assert OneOf([1, 2], [2, 1]).matches([2, 1]) and not OneOf([1, 2]).matches([1])
    assert StartsWith({"a": 1}).matches([{"a": 1, "b": 2}, {}]) and not StartsWith({"a": 1}).matches([])
