"""The repository's gitops overlays rendered by the real kubectl (its built-in kustomize)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from slipway.gitops import GitOpsError, desired_request, gitops_root


def test_every_overlay_renders_a_valid_request_and_production_asks_a_human() -> None:
    staging = desired_request(gitops_root() / "overlays" / "staging")
    production = desired_request(gitops_root() / "overlays" / "production")
    assert staging.target == production.target  # one desired version, set once in the base
    assert (staging.approval, production.approval) == ("auto", "always")
    assert (staging.soak_seconds, production.soak_seconds) == (30, 120)
    assert production.max_unavailable_percent == 5.0


def test_a_bad_commit_is_refused_naming_overlay_and_field(tmp_path: Path) -> None:
    shutil.copytree(gitops_root(), tmp_path / "gitops")
    desired = tmp_path / "gitops" / "base" / "desired-state.yaml"
    desired.write_text(desired.read_text().replace("strategy: in-place", "strategy: yolo"))
    with pytest.raises(GitOpsError, match=r"(?s)overlay staging: .*strategy: 'yolo' is not allowed"):
        desired_request(tmp_path / "gitops" / "overlays" / "staging")


def test_kustomize_errors_are_reported(tmp_path: Path) -> None:
    overlay = tmp_path / "broken"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(GitOpsError, match=r"overlay broken: kustomize failed: .*missing\.yaml"):
        desired_request(overlay)
    with pytest.raises(GitOpsError, match=r"no kustomization\.yaml"):
        desired_request(tmp_path)
