"""Predicted against actual time per phase, the prediction made from the cluster's history.

The history is the cluster's own run records (``slipway-run-*``): only runs that upgraded
end to end count, and only those that started before the run being reported, so the
prediction is the one that could have been made when it started.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from slipway.reports.run import phase_timings, run_verdict
from slipway.windows import BETWEEN_PHASES, PhasePrediction, RunFigures, between_phases, predict_phases

UPGRADE_DAGS = ("k8s_cluster_upgrade", "k8s_worker_upgrade")


def run_figures(data: dict[str, Any]) -> RunFigures:
    """The measured figures of one run record."""
    return RunFigures(
        phase_seconds=dict(phase_timings(data.get("events", []))),
        batches=len(data.get("batches", [])),
        components=len((data.get("control_plane") or {}).get("steps") or {}),
        soak_seconds=float((data.get("request") or {}).get("soak_seconds") or 0),
    )


def _started(data: dict[str, Any]) -> str:
    events = data.get("events", [])
    return str(events[0]["at"]) if events else ""


def earlier_upgrades(data: dict[str, Any], records: Iterable[dict[str, Any]]) -> list[RunFigures]:
    """Figures of the runs that upgraded end to end and started before ``data`` did."""
    started = _started(data)
    return [
        run_figures(other)
        for other in records
        if other.get("run_id") != data.get("run_id")
        and other.get("dag_id") in UPGRADE_DAGS
        and run_verdict(other) == "upgraded"
        and _started(other)
        and (not started or _started(other) < started)
    ]


@dataclass(frozen=True)
class PhaseComparison:
    phase: str
    predicted: PhasePrediction
    actual: float | None  # None: the run never finished the phase

    @property
    def ratio(self) -> float | None:
        if self.actual is None or self.predicted.seconds <= 0:
            return None
        return self.actual / self.predicted.seconds


def compare(data: dict[str, Any], history: list[RunFigures]) -> list[PhaseComparison]:
    """Each phase this run did work in: what its history predicted, what it took."""
    figures = run_figures(data)
    predicted = predict_phases(
        history, batches=figures.batches, components=figures.components, soak_seconds=figures.soak_seconds
    )
    actual = dict(figures.phase_seconds)
    gap = between_phases(figures)
    if gap is not None:
        actual[BETWEEN_PHASES] = gap
    # A phase the run did no work in (no control plane in a worker-only run) has nothing to compare.
    done = [
        PhaseComparison(p.phase, p, actual.get(p.phase))
        for p in predicted
        if p.phase != "total" and (p.phase in actual or (p.phase == "workers" and figures.batches))
    ]
    if not done:
        return []
    total = PhasePrediction("total", sum(c.predicted.seconds for c in done), "sum of the phases above")
    return [*done, PhaseComparison("total", total, actual.get("total"))]
