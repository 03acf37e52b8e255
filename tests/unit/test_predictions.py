"""Duration predictions per phase: from the cluster's own run history when it has one, from the
stated model otherwise; the report shows them against what the run took."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from slipway.reports.html import render_html
from slipway.reports.prediction import compare, earlier_upgrades, run_figures
from slipway.reports.run import render_markdown, run_verdict
from slipway.windows import (
    DEFAULT_SECONDS_PER_NODE,
    STATED_MODEL,
    RunFigures,
    batch_history,
    predict_duration,
    predict_phases,
)

RECORDED = Path(__file__).with_name("recorded_run.json")


def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORDED.read_text())
    return data


def _shifted(data: dict[str, Any], run_id: str, days: int) -> dict[str, Any]:
    """The same run, as if it had happened ``days`` days earlier (negative: later)."""
    other = copy.deepcopy(data)
    other["run_id"] = run_id
    for event in other["events"]:
        event["at"] = (datetime.fromisoformat(event["at"]) - timedelta(days=days)).isoformat()
    return other


def _figures(workers: float, control_plane: float, *, batches: int = 4, soak: float = 10) -> RunFigures:
    return RunFigures(
        phase_seconds={
            "preparation": 20.0,
            "etcd backup": 5.0,
            "control plane": control_plane,
            "workers": workers,
            "validation": 4.0,
        },
        batches=batches,
        components=6,
        soak_seconds=soak,
    )


def test_without_history_the_stated_model_predicts_and_says_so() -> None:
    found = {p.phase: p for p in predict_phases([], batches=3, components=7, soak_seconds=30)}
    assert found["workers"].seconds == 3 * (DEFAULT_SECONDS_PER_NODE + 30)
    assert found["control plane"].seconds == 7 * STATED_MODEL["control plane"]
    assert found["preparation"].seconds == STATED_MODEL["preparation"]
    assert {p.basis for name, p in found.items() if name != "total"} == {"stated model"}
    assert "between phases" not in found  # only history knows how long the gaps are
    assert found["total"].seconds == pytest.approx(sum(p.seconds for n, p in found.items() if n != "total"))


def test_with_history_each_phase_is_the_median_of_the_clusters_runs_in_its_own_unit() -> None:
    # Per batch net of soak: (100/4 - 10) = 15, (140/4 - 10) = 25, (1000/4 - 10) = 240 -> median 25.
    # Per component: 60/6 = 10, 120/6 = 20, 600/6 = 100 -> median 20.
    history = [_figures(100, 60), _figures(140, 120), _figures(1000, 600)]
    found = {p.phase: p for p in predict_phases(history, batches=5, components=3, soak_seconds=2)}
    assert found["workers"].seconds == pytest.approx(5 * (25 + 2))
    assert found["control plane"].seconds == pytest.approx(3 * 20)
    assert found["preparation"].seconds == 20
    assert found["workers"].basis == "median of 3 earlier runs"
    # The _figures runs have no total: nothing says how long the gaps between phases were.
    assert "between phases" not in found


def test_the_time_between_phases_is_the_median_gap_of_earlier_runs() -> None:
    runs = [
        RunFigures(
            {"preparation": 10.0, "workers": 50.0, "total": 70.0}, batches=1, components=0, soak_seconds=0
        ),
        RunFigures(
            {"preparation": 10.0, "workers": 50.0, "total": 90.0}, batches=1, components=0, soak_seconds=0
        ),
        RunFigures(
            {"preparation": 10.0, "workers": 50.0, "total": 60.0}, batches=1, components=0, soak_seconds=0
        ),
    ]
    found = {p.phase: p for p in predict_phases(runs, batches=1, components=0, soak_seconds=0)}
    assert found["between phases"].seconds == 10  # gaps 10, 30, 0
    assert found["total"].seconds == pytest.approx(sum(p.seconds for n, p in found.items() if n != "total"))


def test_a_phase_no_earlier_run_measured_falls_back_to_the_stated_model() -> None:
    worker_only = RunFigures({"preparation": 30.0, "workers": 80.0}, batches=2, components=0, soak_seconds=0)
    found = {p.phase: p for p in predict_phases([worker_only], batches=2, components=4, soak_seconds=0)}
    assert found["workers"].seconds == 80
    assert found["workers"].basis == "median of 1 earlier run"
    assert found["control plane"].seconds == 4 * STATED_MODEL["control plane"]
    assert found["control plane"].basis == "stated model"


def test_bad_work_figures_are_refused() -> None:
    with pytest.raises(ValueError, match="batches, components, soak_seconds >= 0"):
        predict_phases([], batches=-1, components=0, soak_seconds=0)


def test_batch_history_feeds_the_window_checks_prediction() -> None:
    history = batch_history([_figures(100, 60), _figures(140, 120), _figures(40, 60)])
    # 40/4 - 10 = 0: a run whose batches were all soak says nothing, and predict_duration refuses 0.
    assert history == [15.0, 25.0]
    assert predict_duration(history, nodes=4, batch_size=1, soak_seconds=10) == timedelta(seconds=4 * 30)


def test_the_recorded_run_measures_its_phases_and_work() -> None:
    figures = run_figures(recorded())
    assert figures.batches == 7
    assert figures.components == 7
    assert figures.soak_seconds == 3
    assert figures.phase_seconds["control plane"] == 60
    assert figures.phase_seconds["workers"] == 52


def test_only_earlier_runs_that_upgraded_end_to_end_are_history() -> None:
    data = recorded()
    earlier = _shifted(data, "earlier", days=7)
    later = _shifted(data, "later", days=-7)
    failed = _shifted(data, "failed", days=3)
    failed["worker_phase"] = None  # no worker phase end: the run failed
    preflight = _shifted(data, "preflight", days=2) | {"dag_id": "k8s_upgrade_preflight"}
    found = earlier_upgrades(data, [data, earlier, later, failed, preflight])
    assert found == [run_figures(earlier)]


def test_a_cluster_whose_earlier_run_matched_this_one_predicts_it_exactly() -> None:
    data = recorded()
    comparisons = compare(data, earlier_upgrades(data, [_shifted(data, "earlier", days=7)]))
    assert [c.phase for c in comparisons] == [
        "preparation",
        "etcd backup",
        "control plane",
        "workers",
        "validation",
        "between phases",
        "total",
    ]
    for c in comparisons[:-1]:
        assert c.predicted.seconds == pytest.approx(c.actual)
        assert c.predicted.basis == "median of 1 earlier run"
    # The time between phases (lease, scheduling) is predicted too, so the total matches.
    between = comparisons[-2]
    assert between.actual == pytest.approx(124 - (4 + 1 + 60 + 52 + 3))
    assert comparisons[-1].predicted.seconds == pytest.approx(comparisons[-1].actual)


def test_without_history_the_stated_model_overestimates_the_local_run() -> None:
    data = recorded()
    workers = next(c for c in compare(data, []) if c.phase == "workers")
    assert workers.predicted.basis == "stated model"
    assert workers.ratio is not None
    assert workers.ratio < 0.1  # 52 s against 7 batches x (900 + 3) s: the model is cautious


def test_both_reports_show_predicted_against_actual_per_phase() -> None:
    data = recorded()
    comparisons = compare(data, earlier_upgrades(data, [_shifted(data, "earlier", days=7)]))
    markdown = render_markdown(data, run_verdict(data), comparisons)
    assert "## Time per phase, predicted and actual" in markdown
    assert "| control plane | 1 min | median of 1 earlier run | 1 min |" in markdown
    html = render_html(data, run_verdict(data), comparisons)
    assert "<th>predicted</th><th>predicted from</th><th>actual</th>" in html
    assert "<td>workers</td><td>52 s</td><td>median of 1 earlier run</td><td>52 s</td><td>1.00</td>" in html
