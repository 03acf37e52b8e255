"""Run reports: a machine-readable JSON and a Markdown page an engineer attaches to a change.

The names below come from :mod:`slipway.reports.run` on first use (PEP 562), so that
importing a submodule (the history DAG's ``maturity``) while a DAG file is parsed does not
load the run report and the kubernetes client with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slipway.reports.run import GREEN_VERDICTS, reports_root, run_verdict, write_run_report

__all__ = ["GREEN_VERDICTS", "reports_root", "run_verdict", "write_run_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from slipway.reports import run

        return getattr(run, name)
    raise AttributeError(f"module 'slipway.reports' has no attribute {name!r}")
