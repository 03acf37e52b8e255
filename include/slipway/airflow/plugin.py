"""The Airflow plugin that registers Slipway's timetable (needed for DAG serialisation)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from slipway.airflow.timetable import MaintenanceWindowTimetable


class SlipwayPlugin(AirflowPlugin):
    name = "slipway"
    timetables = [MaintenanceWindowTimetable]  # noqa: RUF012 (AirflowPlugin declares it so)
