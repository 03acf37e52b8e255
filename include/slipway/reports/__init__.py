"""Run reports: a machine-readable JSON and a Markdown page an engineer attaches to a change."""

from slipway.reports.run import GREEN_VERDICTS, reports_root, run_verdict, write_run_report

__all__ = ["GREEN_VERDICTS", "reports_root", "run_verdict", "write_run_report"]
