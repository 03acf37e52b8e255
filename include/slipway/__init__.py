"""Slipway: planned, gated, resumable Kubernetes upgrades on Apache Airflow."""

from __future__ import annotations

__version__ = "0.1.0"
