"""§4.1 desired versions declared in git: render an overlay, validate it, compare with the cluster.

The repository's ``gitops/`` folder is a kustomize base with one overlay per environment
(``staging``, ``production``). Each renders a ConfigMap ``slipway-desired-state`` whose
keys are upgrade-request fields (the trigger form's names; lists and objects as JSON).
:func:`desired_request` turns it into a request the model has validated, so a bad commit
is refused naming the overlay and the field before anything is triggered. :func:`drift`
says why the cluster differs from it (empty: in sync).

Rendering is ``kubectl kustomize`` — kustomize as it ships in kubectl, the same renderer a
GitOps controller uses — never a re-implementation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from slipway.models import RequestError, UpgradeRequest, parse_request
from slipway.versions import Version

DESIRED_STATE = "slipway-desired-state"
RENDER_TIMEOUT_SECONDS = 60


class GitOpsError(ValueError):
    """The desired state could not be read; the message names the overlay and why."""


def gitops_root() -> Path:
    """Where the overlays live: ``$SLIPWAY_GITOPS_DIR``, else ``gitops/`` beside ``dags/``."""
    configured = os.environ.get("SLIPWAY_GITOPS_DIR")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "gitops"


def kubectl() -> str:
    """``$SLIPWAY_KUBECTL``, else the kubectl Slipway built (a known kustomize), else PATH's."""
    from slipway.localcluster.binaries import BinaryError, binary
    from slipway.localcluster.kit import KUBERNETES_NEW, kubernetes_release

    configured = os.environ.get("SLIPWAY_KUBECTL")
    if configured:
        return configured
    try:
        return str(binary(kubernetes_release(KUBERNETES_NEW), "kubectl"))
    except BinaryError:
        found = shutil.which("kubectl")
        if found is None:
            raise GitOpsError("no kubectl: set SLIPWAY_KUBECTL or put kubectl on PATH") from None
        return found


def render(overlay: Path, kubectl_path: str | None = None) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize`` renders from ``overlay`` (every scalar kept a string)."""
    if not (overlay / "kustomization.yaml").is_file():
        raise GitOpsError(f"overlay {overlay.name}: no kustomization.yaml in {overlay}")
    done = subprocess.run(
        [kubectl_path or kubectl(), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=RENDER_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise GitOpsError(f"overlay {overlay.name}: kustomize failed: {done.stderr.strip()[-500:]}")
    # BaseLoader: "1.40" stays the string "1.40", never the float 1.4.
    return [d for d in yaml.load_all(done.stdout, Loader=yaml.BaseLoader) if isinstance(d, dict)]


def desired_conf(documents: Sequence[dict[str, Any]], where: str) -> dict[str, Any]:
    """The request fields of the desired-state ConfigMap (JSON values decoded)."""
    found = [
        d
        for d in documents
        if d.get("kind") == "ConfigMap" and (d.get("metadata") or {}).get("name") == DESIRED_STATE
    ]
    if len(found) != 1:
        raise GitOpsError(f"overlay {where}: expected one ConfigMap {DESIRED_STATE}, found {len(found)}")
    data = found[0].get("data") or {}
    if not isinstance(data, dict):
        raise GitOpsError(
            f"overlay {where}: data: must be a mapping of request fields, got {type(data).__name__}"
        )
    conf: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(value, str):
            raise GitOpsError(f"overlay {where}: {key}: must be a string (lists and objects as JSON)")
        text = value.strip()
        if text[:1] in "[{":
            try:
                conf[key] = json.loads(text)
            except json.JSONDecodeError as err:
                raise GitOpsError(f"overlay {where}: {key}: not valid JSON ({err.msg})") from err
        else:
            conf[key] = text
    return conf


def desired_request(overlay: Path, kubectl_path: str | None = None) -> UpgradeRequest:
    """Render ``overlay`` and validate its desired state as an upgrade request."""
    return validate_desired(desired_conf(render(overlay, kubectl_path), overlay.name), overlay.name)


def validate_desired(conf: dict[str, Any], where: str) -> UpgradeRequest:
    """The desired state as a request the model accepted, or a refusal naming the overlay and
    each field. A rollback is never declared in git: it is an operator's explicit decision."""
    problems = []
    if str(conf.get("rollback", "")).lower() == "true":
        problems.append(("rollback", "a downgrade is an operator's decision, never declared in git"))
    try:
        request = parse_request(conf)
    except RequestError as err:
        problems = [*problems, *err.problems]
    if problems:
        raise GitOpsError(f"overlay {where}: {RequestError(problems)}")
    return request


def drift(desired: UpgradeRequest, control_plane: Version, kubelets: Sequence[Version]) -> list[str]:
    """Why the cluster is not at the desired version (empty: in sync).

    :raises GitOpsError: when git asks for a version older than the cluster: a downgrade is
        a rollback, which is an operator's explicit decision, never a reconcile.
    """
    target = desired.target
    behind = [v for v in kubelets if v < target]
    ahead = [v for v in [control_plane, *kubelets] if v > target]
    if ahead:
        raise GitOpsError(
            f"target_version: {target} is older than the cluster (runs {max(ahead)}); a downgrade is a "
            "rollback and is never started by a reconcile: trigger k8s_cluster_upgrade with rollback=true"
        )
    reasons = []
    if control_plane < target:
        reasons.append(f"control plane at {control_plane}, desired {target}")
    if behind:
        reasons.append(f"{len(behind)} of {len(kubelets)} kubelet(s) below {target} (lowest {min(behind)})")
    return reasons
