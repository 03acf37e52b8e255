"""Registers Slipway's timetable with Airflow (the class lives in the installed package)."""

from slipway.airflow.plugin import SlipwayPlugin

__all__ = ["SlipwayPlugin"]
