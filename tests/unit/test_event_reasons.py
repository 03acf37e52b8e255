"""Timeline kinds as Kubernetes Event reasons: CamelCase with the Slipway prefix, and Warning
for what failed or was undone."""

from __future__ import annotations

import pytest

from slipway.kube.events import timeline_reason


@pytest.mark.parametrize(
    ("kind", "reason", "type_"),
    [
        ("run-started", "SlipwayRunStarted", "Normal"),
        ("batch-opened", "SlipwayBatchOpened", "Normal"),
        ("control-plane-verified", "SlipwayControlPlaneVerified", "Normal"),
        ("batch-rolled-back", "SlipwayBatchRolledBack", "Warning"),
        ("control-plane-step-failed", "SlipwayControlPlaneStepFailed", "Warning"),
        ("switched-back", "SlipwaySwitchedBack", "Warning"),
        ("plan-refused", "SlipwayPlanRefused", "Warning"),
        ("approval-rejected", "SlipwayApprovalRejected", "Warning"),
        ("etcd-restored", "SlipwayEtcdRestored", "Warning"),
        ("incident-declared", "SlipwayIncidentDeclared", "Warning"),
        ("approval-timed-out", "SlipwayApprovalTimedOut", "Warning"),
        ("blue-retired", "SlipwayBlueRetired", "Normal"),
    ],
)
def test_reason_and_type(kind: str, reason: str, type_: str) -> None:
    assert timeline_reason(kind) == (reason, type_)


def test_reason_fits_the_events_api() -> None:
    reason, _ = timeline_reason("x" * 400)
    assert len(reason) <= 128
