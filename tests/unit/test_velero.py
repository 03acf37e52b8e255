"""Velero module, pure logic: refusals before any cluster call, the storage location it writes,
how a Backup's or Restore's status reads, and the labels stripped before checksums."""

from __future__ import annotations

import pytest
from kubernetes import client

from slipway.migration import velero
from slipway.migration.errors import MigrationError

STORE = velero.ObjectStore("http://127.0.0.1:9000", "slipway-migration", "key", "secret")
# Never contacted: every call below is refused before it would reach an apiserver.
NOWHERE = client.ApiClient(client.Configuration(host="https://127.0.0.1:1"))


def test_object_store_refuses_each_bad_field_on_its_own_line() -> None:
    bad = velero.ObjectStore("s3.example/bucket", "B", "", "secret", prefix="../up")
    assert [f for f, _ in bad.problems()] == ["url", "bucket", "access_key", "prefix"]
    assert STORE.problems() == []
    assert "secret" not in repr(STORE)


def test_location_is_read_only_on_the_target_and_points_at_the_bucket() -> None:
    target = velero.location_document(STORE, read_only=True)
    source = velero.location_document(STORE, read_only=False)
    assert target["spec"]["accessMode"] == "ReadOnly"
    assert source["spec"]["accessMode"] == "ReadWrite"
    assert target["spec"]["objectStorage"] == {"bucket": "slipway-migration"}
    assert target["spec"]["config"]["s3Url"] == "http://127.0.0.1:9000"
    assert target["spec"]["config"]["s3ForcePathStyle"] == "true"


def test_bad_names_are_refused_before_any_cluster_call() -> None:
    with pytest.raises(MigrationError) as err:
        velero.start_backup(NOWHERE, "Shop_Move", [])
    assert err.value.fields == ["backup", "namespaces"]
    with pytest.raises(MigrationError) as err:
        velero.start_restore(NOWHERE, "ok", "bad.backup", namespaces=["UPPER"])
    assert err.value.fields == ["backup", "namespaces"]
    with pytest.raises(MigrationError) as err:
        velero.apply_location(NOWHERE, velero.ObjectStore("ftp://x", "b", "k", "s"), read_only=True)
    assert err.value.fields == ["url", "bucket"]


def test_state_reads_velero_status_and_names_its_reason() -> None:
    obj = {
        "status": {
            "phase": "FailedValidation",
            "validationErrors": ['Error retrieving backup: backups.velero.io "x" not found'],
        }
    }
    state = velero._state("restore", "r1", obj)
    assert state.done and not state.succeeded
    assert str(state.error()) == (
        'velero restore velero/r1 FailedValidation: Error retrieving backup: backups.velero.io "x" not found'
    )
    running = velero._state(
        "backup", "b1", {"status": {"phase": "InProgress", "progress": {"itemsBackedUp": 3, "totalItems": 9}}}
    )
    assert not running.done and (running.items_done, running.items_total) == (3, 9)
    assert velero._state("backup", "b2", None).phase == "absent"
    assert velero._state("backup", "b3", {"metadata": {}}).phase == "New"


def test_results_read_as_one_line_per_message() -> None:
    result = {"velero": ["plugin crashed"], "namespaces": {"shop": ["could not restore x"]}}
    assert velero._messages(result) == ["velero: plugin crashed", "shop: could not restore x"]


def test_restore_labels_are_stripped_and_nothing_else() -> None:
    obj = {
        "kind": "Secret",
        "metadata": {
            "name": "s",
            "labels": {"tier": "db", "velero.io/backup-name": "b", "velero.io/restore-name": "r"},
        },
    }
    assert velero.strip_restore_labels(obj)["metadata"]["labels"] == {"tier": "db"}
    assert obj["metadata"]["labels"]["velero.io/restore-name"] == "r"  # the input is not changed
    only = {"kind": "Secret", "metadata": {"name": "s", "labels": {"velero.io/restore-name": "r"}}}
    assert velero.strip_restore_labels(only)["metadata"]["labels"] is None


def test_the_build_knows_velero_its_plugin_and_the_s3_server_at_one_version_each() -> None:
    from slipway.localcluster import binaries

    assert binaries.parse_release("velero=1.18.3") is binaries.VELERO
    assert binaries.parse_release("velero-plugin-for-aws=v1.14.3") is binaries.VELERO_AWS_PLUGIN
    with pytest.raises(binaries.BinaryError, match=r"unknown velero version '1\.17\.1'"):
        binaries.parse_release("velero=1.17.1")
