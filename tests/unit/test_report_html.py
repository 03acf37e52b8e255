"""The HTML run report: timeline and latency pictures from a recorded run, no empty sections,
durations as people say them. Plain data: ``recorded_run.json`` is the run record of a real
local-cluster upgrade (tests/integration, trimmed to what the report reads)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from slipway.reports.charts import latency_svg, timeline_svg
from slipway.reports.durations import human_duration
from slipway.reports.html import render_html
from slipway.reports.run import render_markdown, run_verdict, write_run_report
from slipway.reports.timeline import build_timeline

RECORDED = Path(__file__).with_name("recorded_run.json")
SVG = "{http://www.w3.org/2000/svg}"


def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORDED.read_text())
    return data


def _svgs(html: str) -> list[ET.Element]:
    return [ET.fromstring(found) for found in re.findall(r"<svg.*?</svg>", html, flags=re.S)]


def _bar_ids(svg: ET.Element, kind: str) -> list[str]:
    return [g.get("id", "") for g in svg.iter(f"{SVG}g") if g.get("id", "").startswith(f"{kind}-")]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (0.3, "<1 s"),
        (42.4, "42 s"),
        (59.6, "1 min"),
        (192, "3 min 12 s"),
        (180, "3 min"),
        (1056, "17 min 36 s"),
        (3600, "1 h"),
        (5460, "1 h 31 min"),
        (5489, "1 h 31 min"),
        (187200, "2 d 4 h"),
    ],
)
def test_durations_read_as_people_say_them(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf")])
def test_a_duration_that_is_no_duration_is_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="finite and not negative"):
        human_duration(seconds)


def test_each_node_out_of_service_is_a_span_ending_when_it_came_back() -> None:
    data = recorded()
    timeline = build_timeline(data)
    assert timeline is not None
    spans = {s.label: s for s in timeline.nodes}
    uncordoned = {e["node"]: e for e in data["events"] if e["kind"] == "node-uncordoned"}
    quarantined = {e["node"] for e in data["events"] if e["kind"] == "quarantined"}
    assert set(spans) == set(uncordoned) | quarantined
    for node, event in uncordoned.items():
        assert spans[node].state == "back-in-service"
        assert spans[node].seconds == pytest.approx(event["seconds"])
    # Quarantined nodes stay cordoned: out of service from their batch's start to the run's end.
    for node in quarantined:
        assert spans[node].state == "quarantined"
        assert spans[node].end == pytest.approx(timeline.seconds)
    assert [p.label for p in timeline.phases] == [
        "preparation",
        "etcd backup",
        "control plane",
        "workers",
        "validation",
    ]


def test_the_timeline_svg_has_one_bar_per_node_out_of_service_batch_and_phase() -> None:
    data = recorded()
    timeline = build_timeline(data)
    assert timeline is not None
    svg = ET.fromstring(timeline_svg(timeline))
    nodes = {e["node"] for e in data["events"] if e["kind"] in ("node-uncordoned", "quarantined")}
    assert sorted(_bar_ids(svg, "node")) == sorted(f"node-{n}" for n in nodes)
    assert len(_bar_ids(svg, "batch")) == len(data["batches"]) == 7
    assert len(_bar_ids(svg, "phase")) == 5
    # Each bar is one drawn shape, and the durations on the bars are human-readable.
    for ident in _bar_ids(svg, "node"):
        group = next(g for g in svg.iter(f"{SVG}g") if g.get("id") == ident)
        assert len(list(group.iter(f"{SVG}path"))) == 1
    texts = [t.text or "" for t in svg.iter(f"{SVG}text")]
    assert "1 min" in " ".join(texts)  # the control-plane phase, 60 s


def test_the_latency_picture_draws_the_probe_and_each_batch_signal_against_its_baseline() -> None:
    timeline = build_timeline(recorded())
    assert timeline is not None
    labels = [s.label for s in timeline.latency]
    assert labels[0] == "API probe p99 (control plane)"
    assert timeline.latency[0].points[0][1:] == (20.8, 14.6)
    assert "apiserver read-list p99 (per batch)" in labels
    svg = latency_svg(timeline)
    texts = " ".join(t.text or "" for t in ET.fromstring(svg).iter(f"{SVG}text"))
    assert "API probe p99 (control plane): 20.8 ms" in texts
    assert "p99 latency (ms)" in texts


def test_the_report_page_carries_both_pictures_and_readable_durations() -> None:
    data = recorded()
    html = render_html(data, run_verdict(data))
    assert len(_svgs(html)) == 2
    assert '<section id="timeline">' in html
    assert '<section id="latency">' in html
    assert "<td>general-00</td><td>2 s</td><td>back in service</td>" in html
    assert "<td>compute-01</td><td>58 s</td><td>still cordoned</td>" in html
    # Phase times read "1 min", never raw seconds like "60s".
    assert "<td>control plane</td><td>1 min</td>" in html
    assert not re.search(r">\d+(\.\d+)?s<", html)


def test_the_svg_is_the_same_for_the_same_record() -> None:
    timeline = build_timeline(recorded())
    assert timeline is not None
    assert timeline_svg(timeline) == timeline_svg(timeline)


MINIMAL: dict[str, Any] = {
    "run_id": "manual__refused",
    "dag_id": "k8s_cluster_upgrade",
    "request": {"target_version": "1.37.2"},
    "events": [
        {"at": "2026-11-28T01:00:00+00:00", "kind": "run-started", "message": "started <b>here</b>"},
        {"at": "2026-11-28T01:00:20+00:00", "kind": "risk-assessed", "message": "decision refuse"},
    ],
    "plan": {"hops": []},
    "checks": [],
    "risk": {"decision": "refuse", "reasons": ["etcd has no quorum"], "items": []},
    "control_plane": {"steps": {}},
    "batches": [],
}


def test_empty_sections_are_left_out_of_both_reports() -> None:
    verdict = run_verdict(MINIMAL)
    html = render_html(MINIMAL, verdict)
    markdown = render_markdown(MINIMAL, verdict)
    for title in ("Upgrade path", "Preflight checks", "Control plane", "Worker batches", "API latency"):
        assert title not in html
        assert f"## {title}" not in markdown
    assert "Time out of service per node" not in html
    # No table is a bare header.
    assert "<tbody></tbody>" not in html
    assert "| category |" not in markdown
    # What the run has is there: the risk decision, the phases it reached, the events.
    assert "<h2>Risk assessment</h2>" in html
    assert "etcd has no quorum" in html
    assert "<td>preparation</td><td>20 s</td>" in html
    # Only the phase bar: there were no batches and no node left service.
    svg = _svgs(html)[0]
    assert _bar_ids(svg, "node") == []
    assert _bar_ids(svg, "batch") == []
    assert len(_bar_ids(svg, "phase")) == 1


def test_a_record_without_events_has_no_pictures() -> None:
    html = render_html({"run_id": "r", "dag_id": "d"}, "failed")
    assert "<svg" not in html
    assert "<h2>" not in html


def test_text_from_the_record_is_escaped() -> None:
    html = render_html(MINIMAL, run_verdict(MINIMAL))
    assert "started &lt;b&gt;here&lt;/b&gt;" in html
    assert "<b>here</b>" not in html


def test_the_html_is_written_next_to_the_markdown_and_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLIPWAY_REPORTS_DIR", str(tmp_path))
    data = recorded()
    paths = write_run_report(data, dag_id="k8s_cluster_upgrade", run_id=data["run_id"])
    assert {p.parent for p in paths.values()} == {paths["json"].parent}
    assert paths["html"].name == "upgrade-report.html"
    assert len(_svgs(paths["html"].read_text())) == 2
