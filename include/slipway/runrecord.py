"""The durable record of one run, kept in the cluster it changes.

A ConfigMap ``slipway-run-<id>`` in ``slipway-system`` holds the request, the batches
opened so far with their verdicts and the adaptive batcher's state. A cleared task or a
resumed run reads it back: the cluster, not XCom or memory, is the source of truth for
progress. Writes carry the resourceVersion they were based on, so concurrent mapped tasks
never lose each other's writes (409: re-read and retry).

The timeline (``"events"``) lives beside it, in chunk ConfigMaps of at most
:data:`CHUNK_EVENTS` events (``<record>-events-<uid>-<k>``, labelled with the record's uid and
owned by it, so deleting a record deletes its chunks). An event is one guarded replace of
the current chunk: the bytes written per event are bounded by the chunk size, whatever the
number of events before it, and nothing is dropped. The record's ``timeline_chunk`` key
says which chunk is current; it is written only when a chunk fills. :meth:`RunRecord.load`
puts the timeline back together as ``"events"``, the full ordered list; records written
before chunking (events inside the record itself) still load, their events first.

Nothing secret is written: every value and event goes through
:func:`slipway.redact.redact_value` on its way to the cluster.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.redact import redact, redact_value

NAMESPACE = "slipway-system"
RECORD_PREFIX = "slipway-run-"
CONFLICT = 409
NOT_FOUND = 404
MAX_RETRIES = 8
# Mapped tasks append at the same moment: an append retries (jittered) until it lands.
EVENT_RETRIES = 64
# A chunk's size bounds the bytes one append writes; 100 events of ~250 bytes is ~25 KiB.
CHUNK_EVENTS = 100
# A ConfigMap holds at most 1 MiB: a chunk this big is full whatever its count.
CHUNK_BYTES = 256 * 1024
# One event larger than this keeps its short fields only (see _fit).
MAX_EVENT_BYTES = 16 * 1024
MANAGED_BY = {"app.kubernetes.io/managed-by": "slipway"}
# On chunks: the uid of the record they belong to, and their place in its timeline.
TIMELINE_OF = "slipway.dev/timeline-of"
CHUNK_INDEX = "slipway.dev/timeline-chunk"
# In the record: the newest chunk a writer created (a hint for writers; readers list chunks).
CURSOR = "timeline_chunk"
EVENTS = "events"


def record_name(run_id: str) -> str:
    """A DNS-safe, stable name for any Airflow run id."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
    return f"{RECORD_PREFIX}{slug}-{digest}"


def chunk_name(name: str, uid: str, index: int) -> str:
    """The uid keeps a record recreated under the same name away from its predecessor's chunks
    (the garbage collector removes those a little later)."""
    return f"{name}-events-{uid[:8]}-{index}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _decode(cm: client.V1ConfigMap) -> dict[str, Any]:
    return {key: json.loads(value) for key, value in (cm.data or {}).items()}


def _fit(entry: dict[str, Any]) -> dict[str, Any]:
    """An event that would crowd a chunk keeps its short fields and names the ones dropped."""
    if len(json.dumps(entry)) <= MAX_EVENT_BYTES:
        return entry
    limit = MAX_EVENT_BYTES // 8
    kept = {k: v for k, v in entry.items() if len(json.dumps(v)) <= limit}
    kept["message"] = str(entry.get("message", ""))[:limit]
    kept["truncated"] = sorted(k for k in entry if k not in kept)
    return kept


def _line(entry: dict[str, Any]) -> str:
    """One event as a chunk stores it: a JSON line, redacted on its way into the cluster."""
    return json.dumps(_fit(redact_value(entry)), sort_keys=True, separators=(",", ":")) + "\n"


def _full(text: str, chunk_events: int) -> bool:
    # Judged on what the chunk holds, never on the next event: a full chunk stays full, so
    # every writer moves on from the same chunk and the order stays that of the appends.
    return text.count("\n") >= chunk_events or len(text.encode()) >= CHUNK_BYTES


def _chunk_events(chunks: Iterable[client.V1ConfigMap]) -> list[dict[str, Any]]:
    ordered = sorted(chunks, key=lambda cm: int((cm.metadata.labels or {}).get(CHUNK_INDEX, "0")))
    text = "".join((cm.data or {}).get(EVENTS, "") for cm in ordered)
    return [json.loads(line) for line in text.splitlines() if line]


def _assemble(main: client.V1ConfigMap, chunks: list[client.V1ConfigMap]) -> dict[str, Any]:
    data = _decode(main)
    data.pop(CURSOR, None)
    if EVENTS in data or chunks:
        # Events of a record written before chunking come first: they happened first.
        data[EVENTS] = [*data.get(EVENTS, []), *_chunk_events(chunks)]
    return data


def records_from(maps: Iterable[client.V1ConfigMap]) -> list[dict[str, Any]]:
    """Every run record among ``maps`` (one list of ``slipway-system``), timelines included."""
    mains: list[client.V1ConfigMap] = []
    chunks: dict[str, list[client.V1ConfigMap]] = defaultdict(list)
    for cm in maps:
        owner = (cm.metadata.labels or {}).get(TIMELINE_OF)
        if owner:
            chunks[owner].append(cm)
        elif cm.metadata.name.startswith(RECORD_PREFIX):
            mains.append(cm)
    return [_assemble(cm, chunks.get(cm.metadata.uid, [])) for cm in mains]


@dataclass(frozen=True)
class _Chunk:
    index: int
    text: str
    version: str | None  # None: not created yet


class RunRecord:
    """Read and update one run's record. Reads go to the cluster; an appender remembers only
    the chunk it wrote last, and any conflict sends it back to the cluster."""

    def __init__(self, api: client.ApiClient, run_id: str, *, chunk_events: int = CHUNK_EVENTS) -> None:
        self.core = client.CoreV1Api(api)
        self.run_id = run_id
        self.name = record_name(run_id)
        self.chunk_events = chunk_events
        self._lock = threading.Lock()
        self._uid: str | None = None
        self._index = 0
        self._chunk: _Chunk | None = None
        # Milestones also go out as Kubernetes Events on the record (a view; off after a failure,
        # e.g. an identity without the grant, so a run does not retry it on every line).
        self._announce = True

    def _read(self) -> client.V1ConfigMap | None:
        try:
            return self.core.read_namespaced_config_map(self.name, NAMESPACE)
        except ApiException as err:
            if err.status == NOT_FOUND:
                return None
            raise

    def _chunks(self, uid: str) -> list[client.V1ConfigMap]:
        selector = f"{TIMELINE_OF}={uid}"
        return list(self.core.list_namespaced_config_map(NAMESPACE, label_selector=selector).items)

    def load(self) -> dict[str, Any]:
        """The whole record, ``"events"`` the full timeline in order ({} when there is none)."""
        cm = self._read()
        if cm is None:
            return {}
        return _assemble(cm, self._chunks(cm.metadata.uid))

    def load_state(self) -> dict[str, Any]:
        """The record without its timeline: request, batches, verdicts. One read however long
        the run (a batch task of a 1,000-node run need not read its 6,000 events)."""
        cm = self._read()
        if cm is None:
            return {}
        data = _decode(cm)
        data.pop(CURSOR, None)
        data.pop(EVENTS, None)
        return data

    def get(self, key: str, default: Any = None) -> Any:
        if key == EVENTS:
            return self.load().get(key, default)
        cm = self._read()  # any other key lives in the record itself: no chunk is read
        data = _decode(cm) if cm is not None else {}
        return default if key == CURSOR else data.get(key, default)

    def update(self, **values: Any) -> dict[str, Any]:
        """Set top-level keys (JSON values) atomically. ``events=[...]`` replaces the timeline
        (putting a record back after an etcd restore)."""
        if EVENTS not in values:
            return self._mutate(lambda data: data.update(values))
        last = self._replace_timeline(values.pop(EVENTS))

        def change(data: dict[str, Any]) -> None:
            data.update(values)
            data.pop(EVENTS, None)
            data[CURSOR] = last

        return self._mutate(change)

    def event(self, kind: str, message: str, **details: Any) -> None:
        """Append one line to the run's timeline (what happened, when, to what)."""
        line = _line({"at": _now(), "kind": kind, "message": message, **details})
        with self._lock:
            for attempt in range(EVENT_RETRIES):
                try:
                    if self._append(line):
                        break
                except ApiException as err:
                    # 409: another writer appended (or created the chunk) first; 404: the
                    # record or chunk went away under us. Either way, back to the cluster.
                    if err.status not in (CONFLICT, NOT_FOUND):
                        raise
                    self._chunk = None
                    if err.status == NOT_FOUND:
                        self._uid = None
                    time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
            else:
                where = f"run record {NAMESPACE}/{self.name}"
                raise RuntimeError(f"{where}: timeline kept changing under {EVENT_RETRIES} appends")
        if "node" not in details:  # a node's own steps are Events on that node
            self._announce_event(kind, message)

    def _announce_event(self, kind: str, message: str) -> None:
        """The milestone as a Kubernetes Event on the record: ``kubectl describe configmap
        slipway-run-<id> -n slipway-system`` and ``kubectl get events -n slipway-system``."""
        from slipway.kube.events import object_event, timeline_reason

        if not self._announce or self._uid is None:
            return
        reason, kind_of = timeline_reason(kind)
        regarding = client.V1ObjectReference(
            api_version="v1", kind="ConfigMap", namespace=NAMESPACE, name=self.name, uid=self._uid
        )
        api = self.core.api_client
        self._announce = object_event(
            api,
            NAMESPACE,
            regarding,
            reason,
            redact(message),
            action=kind[:128],
            run_id=self.run_id,
            kind=kind_of,
        )

    def _append(self, line: str) -> bool:
        """One try: True when ``line`` landed, False when the chunk was full (move on)."""
        if self._uid is None:
            self._open()
        assert self._uid is not None
        chunk = self._chunk or self._read_chunk(self._uid, self._index)
        if _full(chunk.text, self.chunk_events):
            self._index, self._chunk = chunk.index + 1, None
            return False
        self._chunk = self._write_chunk(self._uid, _Chunk(chunk.index, chunk.text + line, chunk.version))
        if chunk.version is None and chunk.index > 0:
            # A new chunk: later writers start here (a stale cursor only costs them a read).
            index = chunk.index
            self._mutate(lambda data: data.__setitem__(CURSOR, max(int(data.get(CURSOR, 0)), index)))
        return True

    def _open(self) -> None:
        """The record's uid and current chunk, creating the record if the run has none yet."""
        cm = self._read()
        if cm is None:
            self._mutate(lambda data: None)
            cm = self._read()
            if cm is None:
                raise ApiException(status=NOT_FOUND, reason=f"{self.name} deleted as it was created")
        self._uid = str(cm.metadata.uid)
        self._index = int(_decode(cm).get(CURSOR, 0))
        self._chunk = None

    def _read_chunk(self, uid: str, index: int) -> _Chunk:
        try:
            cm = self.core.read_namespaced_config_map(chunk_name(self.name, uid, index), NAMESPACE)
        except ApiException as err:
            if err.status == NOT_FOUND:
                return _Chunk(index, "", None)
            raise
        return _Chunk(index, (cm.data or {}).get(EVENTS, ""), cm.metadata.resource_version)

    def _write_chunk(self, uid: str, chunk: _Chunk) -> _Chunk:
        """Create the chunk, or replace it guarded by the version it was read at."""
        body: dict[str, Any] = {
            "metadata": {
                "name": chunk_name(self.name, uid, chunk.index),
                "namespace": NAMESPACE,
                "labels": MANAGED_BY | {TIMELINE_OF: uid, CHUNK_INDEX: str(chunk.index)},
                # Owned by the record: whoever deletes a record deletes its timeline with it.
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": self.name, "uid": uid}],
            },
            "data": {EVENTS: chunk.text},
        }
        if chunk.version is None:
            written = self.core.create_namespaced_config_map(NAMESPACE, body)
        else:
            body["metadata"]["resourceVersion"] = chunk.version
            written = self.core.replace_namespaced_config_map(body["metadata"]["name"], NAMESPACE, body)
        return _Chunk(chunk.index, chunk.text, written.metadata.resource_version)

    def _replace_timeline(self, events: list[dict[str, Any]]) -> int:
        """Write ``events`` as the whole timeline from chunk 0; returns the last chunk's index."""
        parts: list[str] = []
        for line in map(_line, events):
            if not parts or _full(parts[-1], self.chunk_events):
                parts.append("")
            parts[-1] += line
        with self._lock:
            self._open()
            assert self._uid is not None
            uid = self._uid
            existing = {int((cm.metadata.labels or {}).get(CHUNK_INDEX, "0")) for cm in self._chunks(uid)}
            # Chunks past the new end are emptied (the orchestrator may not delete them).
            parts += [""] * (max(existing, default=-1) + 1 - len(parts))
            for index, text in enumerate(parts):
                for _ in range(MAX_RETRIES):
                    try:
                        current = self._read_chunk(uid, index)
                        self._write_chunk(uid, _Chunk(index, text, current.version))
                        break
                    except ApiException as err:
                        if err.status != CONFLICT:
                            raise
                else:
                    raise RuntimeError(f"run record {NAMESPACE}/{self.name}: chunk {index} kept changing")
            last = max(0, len([p for p in parts if p]) - 1)
            self._index, self._chunk = last, None
            return last

    def _mutate(self, change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        for _ in range(MAX_RETRIES):
            cm = self._read()
            data = _decode(cm) if cm else {}
            data.setdefault("run_id", self.run_id)
            change(data)
            # Redacted here, on the one way into the cluster: also what callers get back.
            data = {k: redact_value(v) for k, v in data.items()}
            body: dict[str, Any] = {
                "metadata": {"name": self.name, "namespace": NAMESPACE, "labels": dict(MANAGED_BY)},
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
