"""The fleet refuses to start while k8s_cluster_upgrade is paused (its runs would stay queued
forever, silently). The live refusal is ``tests/fleet_live``; this is the decision alone."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from slipway.airflow.stage_fleet import UPGRADE_DAG, paused_child_refusal


@dataclass
class Dag:
    is_paused: bool


class Ti:
    """What the task reads: ``ti.get_dag`` (the execution API's answer, or its error)."""

    def __init__(self, answer: Dag | Exception) -> None:
        self.answer = answer
        self.asked: list[str] = []

    def get_dag(self, dag_id: str) -> Dag:
        self.asked.append(dag_id)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_a_paused_child_dag_refuses_the_fleet_naming_it_and_the_fix() -> None:
    ti = Ti(Dag(is_paused=True))
    refusal = paused_child_refusal(ti)
    assert ti.asked == [UPGRADE_DAG]
    assert refusal is not None
    assert refusal.startswith(f"{UPGRADE_DAG} is paused:")
    assert f"airflow dags unpause {UPGRADE_DAG}" in refusal
    assert "\n" not in refusal


def test_an_unpaused_child_dag_lets_the_fleet_start() -> None:
    assert paused_child_refusal(Ti(Dag(is_paused=False))) is None


def test_an_unreadable_answer_warns_loudly_and_lets_the_fleet_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert paused_child_refusal(Ti(RuntimeError("DAG not found"))) is None
    out = capsys.readouterr().out
    assert out.startswith(f"WARNING: cannot tell whether {UPGRADE_DAG} is paused (DAG not found)")
