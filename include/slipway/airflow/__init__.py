"""Airflow adapters: operators, sensors, triggers, the timetable and task factories.

Thin on purpose: they turn Airflow context into core calls and core results into
task outcomes. The core (``slipway``) never imports Airflow.
"""
