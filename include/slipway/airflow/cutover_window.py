"""The migration's cut-over waits for its window: the copy and the first volume passes run at
once, the freeze and the traffic switch only inside one of the form's cut-over windows.

The wait is a deferral (a DateTimeTrigger in the triggerer, no worker slot held); on waking the
window is looked at again, so a window closed meanwhile by a changed clock or zone rule sends
the task back to wait for the next one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from slipway.airflow.runbooks import runbook

AWAIT_CUTOVER_WINDOW = runbook(
    "Waits, deferred (no worker slot held), until one of the form's cut-over windows is open; with no "
    "window given it returns at once. Everything after it (the stateful freeze, the final sync, the "
    "traffic switch) starts inside the window; the copy and the first volume passes ran before it.",
    "It fails only when no window opens within 400 days (all of them closed): fix the windows and "
    "trigger again. To cut over now, mark this task success.",
    "Safe: read-only; clearing it looks at the windows again.",
)
# A cut-over window may be days away (a weekly window): the wait counts toward the timeout.
WAIT_LIMIT = timedelta(days=8)


class CutoverWindowOperator(BaseOperator):
    """Returns when the cut-over may start: ``{"waited_until": iso or None}``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("doc_md", AWAIT_CUTOVER_WINDOW)
        kwargs.setdefault("execution_timeout", WAIT_LIMIT)
        super().__init__(**kwargs)

    def execute(self, context: Any) -> dict[str, Any]:
        from slipway.migration.request import cutover_opens, parse_migration_request

        request = parse_migration_request(context["params"])
        try:
            opens = cutover_opens(request.cutover_windows, datetime.now(UTC))
        except LookupError as err:
            raise AirflowFailException(f"cutover_windows: {err}") from err
        if opens is None:
            return {"windows": request.cutover_windows, "opened_at": None}
        self.log.info("cut-over waits for its window, which opens at %s", opens.isoformat())
        self.defer(trigger=DateTimeTrigger(moment=opens), method_name="window_opened")
        return {}  # not reached: defer raises

    def window_opened(self, context: Any, event: Any = None) -> dict[str, Any]:
        found = self.execute(context)  # open now, or (clock or zone rules moved) wait again
        return found | {"opened_at": datetime.now(UTC).isoformat()}
