"""The durable record of one run, kept in the cluster it changes.

A ConfigMap ``slipway-run-<id>`` in ``slipway-system`` holds the request, the batches
opened so far with their verdicts, the adaptive batcher's state and a timeline of
events. A cleared task or a resumed run reads it back: the cluster, not XCom or
memory, is the source of truth for progress. Writes carry the resourceVersion they
were based on, so concurrent mapped tasks never lose each other's events.

Nothing secret is written: every value and event message goes through
:func:`slipway.redact.redact_value` on its way to the cluster.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.redact import redact_value

NAMESPACE = "slipway-system"
CONFLICT = 409
NOT_FOUND = 404
MAX_RETRIES = 8
# A ConfigMap holds at most 1 MiB; the timeline keeps the newest events under this.
MAX_EVENTS = 2000


def record_name(run_id: str) -> str:
    """A DNS-safe, stable name for any Airflow run id."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
    return f"slipway-run-{slug}-{digest}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunRecord:
    """Read and update one run's record; every method re-reads the cluster first."""

    def __init__(self, api: client.ApiClient, run_id: str) -> None:
        self.core = client.CoreV1Api(api)
        self.run_id = run_id
        self.name = record_name(run_id)

    def _read(self) -> client.V1ConfigMap | None:
        try:
            return self.core.read_namespaced_config_map(self.name, NAMESPACE)
        except ApiException as err:
            if err.status == NOT_FOUND:
                return None
            raise

    def load(self) -> dict[str, Any]:
        cm = self._read()
        if cm is None:
            return {}
        return {key: json.loads(value) for key, value in (cm.data or {}).items()}

    def get(self, key: str, default: Any = None) -> Any:
        return self.load().get(key, default)

    def update(self, **values: Any) -> dict[str, Any]:
        """Set top-level keys (JSON values) atomically."""
        return self._mutate(lambda data: data.update(values))

    def event(self, kind: str, message: str, **details: Any) -> None:
        """Append one line to the run's timeline (what happened, when, to what)."""
        entry = {"at": _now(), "kind": kind, "message": message, **details}

        def add(data: dict[str, Any]) -> None:
            data["events"] = ([*data.get("events", []), entry])[-MAX_EVENTS:]

        self._mutate(add)

    def _mutate(self, change: Any) -> dict[str, Any]:
        for _ in range(MAX_RETRIES):
            cm = self._read()
            data = {k: json.loads(v) for k, v in ((cm.data or {}) if cm else {}).items()}
            data.setdefault("run_id", self.run_id)
            change(data)
            # Redacted here, on the one way into the cluster: also what callers get back.
            data = {k: redact_value(v) for k, v in data.items()}
            body: dict[str, Any] = {
                "metadata": {
                    "name": self.name,
                    "namespace": NAMESPACE,
                    "labels": {"app.kubernetes.io/managed-by": "slipway"},
                },
                "data": {k: json.dumps(v, sort_keys=True) for k, v in data.items()},
            }
            try:
                if cm is None:
                    self.core.create_namespaced_config_map(NAMESPACE, body)
                else:
                    body["metadata"]["resourceVersion"] = cm.metadata.resource_version
                    self.core.replace_namespaced_config_map(self.name, NAMESPACE, body)
                return data
            except ApiException as err:
                # 409: someone wrote first (or created it); 404: deleted under us. Re-read.
                if err.status not in (CONFLICT, NOT_FOUND):
                    raise
        raise RuntimeError(f"run record {NAMESPACE}/{self.name} kept changing under {MAX_RETRIES} updates")
