"""A timetable that schedules runs only inside declared maintenance windows.

Each run's data interval *is* its window: tasks read ``data_interval_end`` as the moment
the window closes and refuse to start a batch that cannot finish before it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction, Timetable
from pendulum import UTC, DateTime, instance

from slipway.windows import MaintenanceSchedule, parse_blackouts, parse_windows


class MaintenanceWindowTimetable(Timetable):
    """Runs at the start of every maintenance window that no blackout touches."""

    def __init__(self, windows: list[str], blackouts: list[str] | None = None) -> None:
        # Parsing here refuses a bad window when the DAG file is loaded, naming the entry.
        self._schedule = MaintenanceSchedule(parse_windows(windows), parse_blackouts(blackouts or []))
        self.windows = list(windows)
        self.blackouts = list(blackouts or [])
        self.description = "maintenance windows: " + "; ".join(self.windows)

    @property
    def summary(self) -> str:
        return f"windows: {', '.join(self.windows)}"

    def serialize(self) -> dict[str, Any]:
        return {"windows": self.windows, "blackouts": self.blackouts}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> MaintenanceWindowTimetable:
        return cls(data["windows"], data.get("blackouts", []))

    def window_at(self, moment: datetime) -> tuple[datetime, datetime]:
        return self._schedule.next_window(moment)

    def infer_manual_data_interval(self, *, run_after: DateTime) -> DataInterval:
        # A manual run inside a window gets that window; outside, it gets no window
        # (an empty interval), and the window check then reports it. Blackouts that close
        # every window within the search horizon count as outside, never as an error.
        if self._schedule.is_inside(run_after):
            start, end = self._schedule.next_window(run_after)
            return DataInterval(instance(start), instance(end))
        return DataInterval.exact(run_after)

    def next_dagrun_info(
        self, *, last_automated_data_interval: DataInterval | None, restriction: TimeRestriction
    ) -> DagRunInfo | None:
        if last_automated_data_interval is not None:
            after = last_automated_data_interval.end
        elif restriction.earliest is None:
            return None
        else:
            after = restriction.earliest
            if not restriction.catchup:
                after = max(after, DateTime.now(UTC))
        try:
            start, end = self._schedule.next_window(after)
        except LookupError:
            return None  # no window opens within the search horizon: nothing to schedule
        if restriction.latest is not None and start > restriction.latest:
            return None
        return DagRunInfo.interval(start=instance(start), end=instance(end))
