"""Maintenance window (§2.1 timing): is there time for the predicted duration?

The whole run need not fit: Slipway pauses when a window closes and resumes in the next one.
What must fit is the next batch — work that cannot finish before the window closes is never
started. So: not even one batch fits → blocker; the whole run does not fit → warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from slipway.checks.result import finding
from slipway.models import CheckResult, UpgradeRequest, WorkerPlan
from slipway.windows import MaintenanceSchedule, predict_duration

NAME = "maintenance-window"
# Room kept at the end of a window for a rollback of the last batch to finish inside it.
DEFAULT_MARGIN = timedelta(minutes=10)


def _window(
    request: UpgradeRequest, schedule: MaintenanceSchedule | None, now: datetime
) -> tuple[datetime, datetime] | None:
    """The window the run works in: the request's own, else the schedule's open or next one;
    None when nothing closes it (no schedule, or a request window without an end)."""
    if request.window_end is not None:
        return request.window_start or now, request.window_end
    if request.window_start is None and schedule is not None:
        return schedule.next_window(now)
    return None


def _clock(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def check_maintenance_window(
    request: UpgradeRequest,
    plan: WorkerPlan,
    now: datetime,
    *,
    schedule: MaintenanceSchedule | None = None,
    history: Sequence[float] = (),
    margin: timedelta = DEFAULT_MARGIN,
) -> CheckResult:
    """``maintenance-window``: the predicted duration against the time the window has left.

    :param plan: the worker plan; each of its batches takes about one node's time plus the soak.
    :param history: past seconds-per-node figures (:func:`slipway.windows.predict_duration`).
    """
    batches = len(plan.batches)
    # predict_duration counts ceil(nodes / batch size) batches; give it the planned batches directly.
    predicted = predict_duration(history, batches, 1, request.soak_seconds)
    per_batch = predict_duration(history, 1, 1, request.soak_seconds)
    evidence: dict[str, object] = {
        "batches": batches,
        "predicted_seconds": int(predicted.total_seconds()),
        "per_batch_seconds": int(per_batch.total_seconds()),
        "margin_seconds": int(margin.total_seconds()),
        "history_samples": len(history),
    }
    window = _window(request, schedule, now)
    if window is None:
        return finding(
            NAME,
            "info",
            f"no maintenance window closes this run; it is predicted to take {predicted}",
            evidence,
        )
    start, end = window
    available = max(end - max(now, start), timedelta(0))
    evidence |= {
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "available_seconds": int(available.total_seconds()),
    }
    when = f"the window {_clock(start)} to {_clock(end)}"
    if now >= end:
        return finding(
            NAME,
            "blocker",
            f"{when} has already closed",
            evidence,
            "Trigger the run with a new window, or let the schedule start it in the next one.",
        )
    if available < per_batch + margin:
        return finding(
            NAME,
            "blocker",
            f"{when} has {available} left: not even one batch ({per_batch} plus {margin} margin) fits",
            evidence,
            "Start in the next window, or shorten batches (smaller soak, faster node upgrades).",
        )
    if available < predicted + margin:
        return finding(
            NAME,
            "warning",
            f"the run needs about {predicted} ({batches} batches) but {when} has {available} left: "
            "it will pause when the window closes and resume in the next one",
            evidence,
            "Accept the pause, use a longer window, or raise the batch size if capacity allows.",
        )
    return finding(NAME, "ok", f"the predicted {predicted} fits in {when} ({available} left)", evidence)
