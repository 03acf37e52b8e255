"""The plugin's report page: serves a run's HTML report by DAG and run id, refuses ids that
could leave the reports folder, and asks Airflow's auth for the caller's right to read runs."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from airflow.api_fastapi.app import RESERVED_URL_PREFIXES
from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse
from fastapi.testclient import TestClient

from slipway.airflow.plugin import REPORT_APP, URL_PREFIX, SlipwayPlugin, may_read_dag_runs
from slipway.artefacts import location
from slipway.reports.run import write_run_report
from tests.browser import DevTools, chromium

RECORDED = Path(__file__).with_name("recorded_run.json")
DAG = "k8s_cluster_upgrade"


@pytest.fixture
def reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "reports"
    root.mkdir()
    monkeypatch.setenv("SLIPWAY_REPORTS_DIR", str(root))
    return root


@pytest.fixture
def client(reports: Path) -> Iterator[TestClient]:
    # The auth manager's answer is Airflow's to test; here every caller may read runs.
    REPORT_APP.dependency_overrides[may_read_dag_runs] = lambda: None
    try:
        yield TestClient(REPORT_APP)
    finally:
        REPORT_APP.dependency_overrides.clear()


def _url(dag_id: str, run_id: str) -> str:
    # Each id percent-encoded, slashes included, as the UI builds it; dots too, or the client
    # would resolve a ".." segment itself and the app would never see it.
    def encode(value: str) -> str:
        return quote(value, safe="").replace(".", "%2E")

    return f"/reports/{encode(dag_id)}/{encode(run_id)}"


def test_the_run_report_is_served_by_dag_and_run_id(client: TestClient, reports: Path) -> None:
    data = json.loads(RECORDED.read_text())
    written = write_run_report(data, dag_id=DAG, run_id=data["run_id"])
    assert Path(location(written["html"])).is_relative_to(reports)  # the default store: this folder
    response = client.get(_url(DAG, data["run_id"]))  # the id has ':' and '+' in it
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == written["html"].read_text()
    assert response.text.count("<svg") == 2
    # Nothing but the page itself may load or run inside it.
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_a_run_without_a_report_yet_is_a_404_that_says_so(client: TestClient) -> None:
    response = client.get(_url(DAG, "manual__2026-12-02T19:06:10+00:00"))
    assert response.status_code == 404
    assert "report task writes it at the end of the run" in response.json()["detail"]


@pytest.mark.parametrize(
    ("dag_id", "run_id", "field"),
    [
        (DAG, "..", "run_id"),
        (DAG, "../../../etc/passwd", "run_id"),
        (DAG, "..\\..\\secrets", "run_id"),
        (DAG, "run\x00.html", "run_id"),
        ("..", "run", "dag_id"),
        ("../etc", "run", "dag_id"),
        ("dag id with spaces", "run", "dag_id"),
        (DAG, "x" * 251, "run_id"),
    ],
)
def test_ids_that_could_leave_the_reports_folder_are_refused(
    client: TestClient, reports: Path, dag_id: str, run_id: str, field: str
) -> None:
    # A file the traversal would reach if it were followed.
    (reports.parent / "upgrade-report.html").write_text("outside")
    response = client.get(_url(dag_id, run_id))
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{field}: ")
    assert "outside" not in response.text


def test_a_raw_dot_dot_segment_never_reaches_a_file(client: TestClient, reports: Path) -> None:
    # Unencoded, the client resolves it away (as browsers do): the path matches no route.
    (reports / "upgrade-report.html").write_text("outside")
    response = client.get(f"/reports/{DAG}/../..")
    assert response.status_code == 404
    assert "outside" not in response.text


def test_a_symlink_out_of_the_reports_folder_is_not_followed(
    client: TestClient, reports: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere" / "run"
    outside.mkdir(parents=True)
    (outside / "upgrade-report.html").write_text("outside")
    (reports / DAG).symlink_to(tmp_path / "elsewhere")
    response = client.get(_url(DAG, "run"))
    assert response.status_code == 400
    assert response.json()["detail"] == "run_id: names a path outside the reports folder"


def test_a_caller_without_credentials_is_refused_by_airflows_auth(reports: Path) -> None:
    response = TestClient(REPORT_APP).get(_url(DAG, "run"))
    assert response.status_code == 401


def test_the_plugin_mounts_the_app_and_puts_a_report_tab_on_each_dag_run() -> None:
    (app,) = SlipwayPlugin.fastapi_apps
    assert app["app"] is REPORT_APP
    assert app["url_prefix"] == URL_PREFIX
    assert not any(URL_PREFIX.startswith(reserved) for reserved in RESERVED_URL_PREFIXES)
    (view,) = SlipwayPlugin.external_views
    parsed = ExternalViewResponse.model_validate(view)
    assert parsed.destination == "dag_run"
    # The UI fills the ids in; the path lands on the app's route.
    assert parsed.href == URL_PREFIX.lstrip("/") + "/reports/{DAG_ID}/{RUN_ID}"


# --- In a real browser: Debian's chromium, driven over the DevTools protocol (tests/browser.py) -----


@pytest.fixture
def served(client: TestClient) -> Iterator[str]:
    """The report app on a real HTTP server (an ephemeral port), as the API server mounts it."""
    import threading

    import uvicorn
    from fastapi import FastAPI

    api_server = FastAPI()
    api_server.mount(URL_PREFIX, REPORT_APP)  # what Airflow's init_plugins does with fastapi_apps
    server = uvicorn.Server(uvicorn.Config(api_server, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    ready = threading.Event()
    while not ready.wait(0.05):  # until uvicorn says it listens
        if server.started or not thread.is_alive():
            ready.set()
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}{URL_PREFIX}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    with chromium(tmp_path / "chromium-profile") as devtools:
        yield devtools


def test_the_report_page_renders_its_timeline_in_chromium(
    served: str, browser: DevTools, reports: Path, tmp_path: Path
) -> None:
    data = json.loads(RECORDED.read_text())
    write_run_report(data, dag_id=DAG, run_id=data["run_id"])
    target = browser.call("Target.createTarget", url="about:blank")["targetId"]
    session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    browser.call("Page.enable", session)
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        session,
        width=1280,
        height=2400,
        deviceScaleFactor=1,
        mobile=False,
    )
    browser.events.clear()  # about:blank's own load event must not count as the report's
    browser.call("Page.navigate", session, url=served + _url(DAG, data["run_id"]))
    browser.wait_for("Page.loadEventFired")
    # What the browser laid out: each node bar with a real size inside the timeline picture.
    found = browser.call(
        "Runtime.evaluate",
        session,
        returnByValue=True,
        expression="""(() => {
            const svg = document.querySelector('#timeline svg');
            const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
            const bars = [...document.querySelectorAll('#timeline svg g[id^="node-"] path')]
                .map(p => p.getBoundingClientRect()).filter(r => r.width > 0 && r.height > 0);
            return {width: box.width, height: box.height, bars: bars.length,
                    latency: !!document.querySelector('#latency svg'), title: document.title,
                        page: location.href + ' ' + document.body.innerText.slice(0, 200),
                        svgs: document.querySelectorAll('svg').length,
                        groups: document.querySelectorAll('#timeline svg g[id^="node-"]').length};
        })()""",
    )["result"]["value"]
    nodes = {e["node"] for e in data["events"] if e["kind"] in ("node-uncordoned", "quarantined")}
    assert found["bars"] == len(nodes) == 7, json.dumps(found)
    assert found["width"] > 600
    assert found["height"] > 200
    assert found["latency"]
    assert found["title"] == f"Slipway run report: {data['run_id']}"
    # Kept for a person to look at (tmp_path, never committed).
    shot = browser.call("Page.captureScreenshot", session, format="png")["data"]
    (tmp_path / "report.png").write_bytes(base64.b64decode(shot))
