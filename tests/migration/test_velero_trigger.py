"""The Velero waits' trigger against a real local cluster: Velero's Backup and Restore kinds as
CustomResourceDefinitions (no Velero server: their ``status`` is patched here as the server would),
reached as the triggerer reaches them — through the ``slipway_migration`` connection and its
migrator kubeconfigs (``migrator-rbac.yaml``), with the asyncio client.

Light: one small cluster, no Velero build (the DAG run through Velero is test_velero_dag.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from slipway.airflow.triggers import VeleroPhaseTrigger
from slipway.kube.client import apply_manifest
from slipway.localcluster.cluster import LocalCluster
from slipway.localcluster.config import ClusterConfig
from slipway.localcluster.health import wait_until
from slipway.localcluster.kit import KUBERNETES_NEW
from slipway.migration import identity, velero
from tests.conftest import TEST_BASE_PORT, state_root_for_tests

pytestmark = pytest.mark.cluster


def _crd(kind: str, plural: str) -> dict[str, Any]:
    """A minimal CRD of Velero's kind: any spec and status, status a subresource (as Velero's)."""
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{velero.GROUP}"},
        "spec": {
            "group": velero.GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": velero.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {"spec": open_object, "status": open_object},
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    cfg = ClusterConfig(
        name="velero-trigger",
        base_port=TEST_BASE_PORT + 2600,
        etcd_members=1,
        apiservers=1,
        control_plane_nodes=0,
        nodes=1,
        pools=("general",),
        kubernetes_version=KUBERNETES_NEW,
        state_root=state_root_for_tests(),
    )
    started = LocalCluster(cfg)
    started.down(purge=True)
    try:
        started.up()
        admin = started.admin_client()
        apply_manifest(admin, [_crd("Backup", "backups"), _crd("Restore", "restores")])
        extensions = client.ApiextensionsV1Api(admin)

        def established() -> bool:
            for plural in ("backups", "restores"):
                crd = extensions.read_custom_resource_definition(f"{plural}.{velero.GROUP}")
                conditions = {c.type: c.status for c in crd.status.conditions or []}
                if conditions.get("Established") != "True":
                    return False
            return True

        wait_until("Velero's kinds served", established, 60)
        identity.install(admin)  # the migrator: get/list/watch/create on backups and restores
        yield started
    finally:
        started.down(purge=True)


@pytest.fixture
def connection(cluster: LocalCluster, tmp_path: Path) -> Iterator[None]:
    """``slipway_migration`` as the DAG's users set it: the migrator's kubeconfig for both sides
    (two files: the connection refuses one file and context for both)."""
    source = identity.write_kubeconfig(cluster.admin_client(), tmp_path / "source.kubeconfig", name="src")
    target = tmp_path / "target.kubeconfig"
    shutil.copy(source, target)
    extra = {"source_kubeconfig": str(source), "target_kubeconfig": str(target)}
    key = "AIRFLOW_CONN_SLIPWAY_MIGRATION"
    saved = os.environ.get(key)
    os.environ[key] = json.dumps({"conn_type": "generic", "extra": extra})
    yield
    if saved is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = saved


def _create(cluster: LocalCluster, plural: str, kind: str, name: str) -> None:
    body = {
        "apiVersion": f"{velero.GROUP}/{velero.VERSION}",
        "kind": kind,
        "metadata": {"name": name, "namespace": velero.NAMESPACE},
        "spec": {"includedNamespaces": ["shop"]},
    }
    client.CustomObjectsApi(cluster.admin_client()).create_namespaced_custom_object(
        velero.GROUP, velero.VERSION, velero.NAMESPACE, plural, body
    )


def _set_phase(cluster: LocalCluster, plural: str, name: str, phase: str) -> None:
    """What the Velero server does: its status subresource."""
    client.CustomObjectsApi(cluster.admin_client()).patch_namespaced_custom_object_status(
        velero.GROUP, velero.VERSION, velero.NAMESPACE, plural, name, {"status": {"phase": phase}}
    )


def _first_event(trigger: VeleroPhaseTrigger) -> dict[str, Any]:
    """Run the trigger as the triggerer does (after a serialize round trip) until its event."""
    path, kwargs = trigger.serialize()
    assert path == "slipway.airflow.triggers.VeleroPhaseTrigger"
    revived = VeleroPhaseTrigger(**kwargs)

    async def first() -> dict[str, Any]:
        async for event in revived.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first(), timeout=120))


def test_a_backup_in_progress_keeps_the_trigger_waiting_until_its_timeout(
    cluster: LocalCluster, connection: None
) -> None:
    _create(cluster, "backups", "Backup", "slow")
    _set_phase(cluster, "backups", "slow", "InProgress")
    event = _first_event(
        VeleroPhaseTrigger("source", "backups", "slow", list(velero.TERMINAL), timeout=3, poll_interval=0.2)
    )
    assert event["status"] == "timeout" and event["phase"] == "InProgress", event
    assert event["seconds"] >= 3 and event["error"] == ""


def test_the_trigger_fires_with_the_terminal_phase_and_carries_the_tasks_figures(
    cluster: LocalCluster, connection: None
) -> None:
    """Completed and a failure phase both end the wait: the task, not the trigger, judges them."""
    _create(cluster, "backups", "Backup", "done")
    _set_phase(cluster, "backups", "done", "InProgress")
    carry = {"started": 1.5, "parked": 2}
    trigger = VeleroPhaseTrigger(
        "source", "backups", "done", list(velero.TERMINAL), timeout=60, poll_interval=0.2, carry=carry
    )

    async def run_while_velero_finishes() -> dict[str, Any]:
        async def finish() -> None:
            # While the trigger runs, the object moves on as the server would move it.
            await asyncio.to_thread(_set_phase, cluster, "backups", "done", "Completed")

        events = trigger.run()
        finishing = asyncio.create_task(finish())
        event = await asyncio.wait_for(anext(events), timeout=60)
        await finishing
        return dict(event.payload)

    event = asyncio.run(run_while_velero_finishes())
    assert event == {"status": "done", "phase": "Completed", "carry": carry}
    assert velero.backup_state(cluster.admin_client(), "done").phase == "Completed"

    _create(cluster, "restores", "Restore", "broken")
    _set_phase(cluster, "restores", "broken", "PartiallyFailed")
    event = _first_event(
        VeleroPhaseTrigger(
            "target", "restores", "broken", list(velero.TERMINAL), timeout=60, poll_interval=0.2
        )
    )
    assert (event["status"], event["phase"]) == ("done", "PartiallyFailed")


def test_an_object_not_there_yet_is_waited_for_as_absent(cluster: LocalCluster, connection: None) -> None:
    """The target's sync wait: the Backup appears there only once its server synced the bucket."""
    event = _first_event(
        VeleroPhaseTrigger("target", "backups", "not-synced", ["Completed"], timeout=2, poll_interval=0.2)
    )
    assert (event["status"], event["phase"]) == ("timeout", "absent")
    _create(cluster, "backups", "Backup", "synced")
    _set_phase(cluster, "backups", "synced", "Completed")
    event = _first_event(
        VeleroPhaseTrigger("target", "backups", "synced", ["Completed"], timeout=30, poll_interval=0.2)
    )
    assert (event["status"], event["phase"]) == ("done", "Completed")
