"""The trigger form of ``k8s_cluster_upgrade`` as an on-call engineer sees it: Debian's chromium
on a real ``airflow api-server`` (the tests' own metadata database, the DAGs serialised into it
as the dag-processor would), signed in through the simple auth manager's login page.

No cluster is needed: the form is what the DAG's Params declare. Screenshots go to the test's
tmp folder (their paths are printed; run with ``-s`` to see them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.browser import ApiServer, Page, airflow_api_server, chromium, log_in
from tests.conftest import REPO

DAG = "k8s_cluster_upgrade"
RECORDED = Path(__file__).parents[1] / "unit" / "recorded_run.json"
DIALOG = "[data-scope=dialog][data-part=content]"
# Airflow's own section for the run's conf as JSON, after the DAG's sections.
AIRFLOW_SECTION = "Advanced Options"

# The open section of the trigger dialog: its title and, per field, label, help text, error, value.
_OPEN_SECTION = """(() => {
    const dialog = [...document.querySelectorAll('__DIALOG__')].pop();
    const item = dialog && dialog.querySelector('[data-scope=accordion][data-part=item][data-state=open]');
    if (!item) return null;
    const text = (el) => el ? el.innerText.trim() : '';
    return {
        title: text(item.querySelector('[data-part=item-trigger]')),
        fields: [...item.querySelectorAll('[data-scope=field][data-part=root]')].map(f => ({
            label: text(f.querySelector('[data-part=label]')).replace(/\\s*\\*$/, ''),
            help: text(f.querySelector('[data-part=helper-text]')),
            error: text(f.querySelector('[data-part=error-text]')),
            shown: text(f),
            value: (f.querySelector('input, select') || {}).value || '',
            suggested: [...f.querySelectorAll('datalist option')].map(o => o.value),
        })).filter(f => f.label),
    };
})()""".replace("__DIALOG__", DIALOG)


@pytest.fixture(scope="module")
def params() -> Any:
    """The DAG's Params, as its file declares them."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags")).dags[DAG].params


@pytest.fixture(scope="module")
def own_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A metadata database of this module's own, the DAGs serialised into it by Airflow's CLI:
    the form needs no run, and a server on the session's shared SQLite database is left to
    the one test that needs it (the approval, answered while dag.test() runs)."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {**os.environ, "AIRFLOW_HOME": str(home)}
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
    airflow = str(Path(sys.executable).parent / "airflow")
    for command in (["db", "migrate"], ["dags", "reserialize"]):
        subprocess.run([airflow, *command], env=env, check=True, capture_output=True, timeout=600)
    return {"AIRFLOW_HOME": str(home)}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The artefact store the api-server's report view reads (SLIPWAY_REPORTS_DIR)."""
    return tmp_path_factory.mktemp("reports")


@pytest.fixture(scope="module")
def ui(
    own_home: dict[str, str], reports: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    folder = tmp_path_factory.mktemp("api-server")
    with airflow_api_server(folder, extra_env=own_home | {"SLIPWAY_REPORTS_DIR": str(reports)}) as server:
        yield server


@pytest.fixture
def page(ui: ApiServer, tmp_path: Path) -> Iterator[Page]:
    with chromium(tmp_path / "chromium-profile") as devtools:
        tab = Page(devtools)
        log_in(tab, ui)
        yield tab


def _form_by_section(params: Any) -> dict[str, list[tuple[str, str]]]:
    """What the DAG declares: per section, in order, each field's (title, description)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    for name in params:
        param = params.get_param(name)
        sections.setdefault(param.schema["section"], []).append(
            (param.schema["title"], param.description or "")
        )
    return sections


def _open_section(page: Page, title: str, fields: int) -> dict[str, Any]:
    page.click(title, "button", within=DIALOG)
    found: dict[str, Any] = page.wait_until(
        f"(() => {{ const s = {_OPEN_SECTION}; return s && s.title === {json.dumps(title)} "
        f"&& s.fields.length === {fields} && s.fields.every(f => f.help) "
        # ... and the sections' opening and closing animations over (for the screenshots).
        "&& document.getAnimations().every(a => a.playState !== 'running' "
        "|| !a.effect?.target?.closest?.('[data-scope=accordion]')) ? s : null; })()",
        f"section {title!r} open with its {fields} fields",
    )
    return found


def test_the_trigger_form_shows_its_sections_every_description_and_the_target_default(
    page: Page, ui: ApiServer, params: Any, tmp_path: Path
) -> None:
    expected = _form_by_section(params)
    page.goto(f"{ui.url}/dags/{DAG}")
    page.click("Trigger", "button", timeout=60)  # the DAG page's button opens the trigger dialog
    page.wait_for_text(f"Trigger Dag - {DAG}")
    shown_sections = page.wait_until(
        f"(() => {{ const d = [...document.querySelectorAll('{DIALOG}')].pop(); const t = d ? "
        "[...d.querySelectorAll('[data-scope=accordion][data-part=item-trigger]')]"
        ".map(b => b.innerText.trim()) : []; return t.length ? t : null; })()",
        "the form's sections",
    )
    assert shown_sections == [*expected, AIRFLOW_SECTION]
    page.screenshot(tmp_path / "trigger-form.png")

    for section, fields in expected.items():
        found = _open_section(page, section, len(fields))
        assert [(f["label"], f["help"]) for f in found["fields"]] == fields, section
        page.screenshot(tmp_path / f"trigger-form-{section.lower().replace(' ', '-')}.png")
        if section == "Target":
            default = params["target_version"]
            (target,) = [f for f in found["fields"] if f["label"] == "Target Kubernetes version"]
            # A text box holding the default, suggesting the latest patch of each minor.
            assert target["value"] == default, target
            assert target["suggested"] == params.get_param("target_version").schema["examples"], target
    assert "§" not in page.text(DIALOG)  # no reference to a document users do not have


def test_the_trigger_form_refuses_an_empty_required_field_naming_it_and_clamps_a_number(
    page: Page, ui: ApiServer, params: Any, tmp_path: Path
) -> None:
    page.goto(f"{ui.url}/dags/{DAG}")
    page.click("Trigger", "button", timeout=60)
    drain = dict(_form_by_section(params)["Drain"])
    _open_section(page, "Drain", len(drain))

    # An out-of-range number never leaves the form: on leaving the field it is pulled back
    # to the bound the Param declares (the grace period's minimum is -1, "the pod's own").
    page.type_into("input[name='element_drain_grace_period_seconds']", "-5")
    page.evaluate("document.activeElement.blur()")
    page.wait_until(
        "document.querySelector(\"input[name='element_drain_grace_period_seconds']\").value === '-1'",
        "the grace period clamped to its minimum",
    )

    # An emptied required field is refused in its own row, and the run cannot be triggered.
    page.type_into("input[name='element_drain_timeout_seconds']", "")
    page.press("Backspace", 8)
    page.evaluate("document.activeElement.blur()")
    found = page.wait_until(
        f"(() => {{ const s = {_OPEN_SECTION}; return s && s.fields.some(f => f.error) ? s : null; }})()",
        "a field error",
    )
    errors = {f["label"]: f["error"] for f in found["fields"] if f["error"]}
    assert errors == {"Drain timeout (s)": "This field is required"}
    trigger_enabled = page.evaluate(
        f"[...[...document.querySelectorAll('{DIALOG}')].pop().querySelectorAll('button')]"
        ".filter(b => b.innerText.trim() === 'Trigger').map(b => !b.disabled)"
    )
    assert trigger_enabled == [False]
    page.screenshot(tmp_path / "trigger-form-refused.png")


def test_the_api_server_serves_a_finished_runs_report_with_its_timeline_to_the_signed_in_user(
    page: Page, ui: ApiServer, reports: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plugin's report view as Airflow mounts it (``/slipway``), behind Airflow's own auth:
    the signed-in browser's session is enough, and the timeline picture is laid out."""
    from slipway.reports.run import write_run_report

    data = json.loads(RECORDED.read_text())
    monkeypatch.setenv("SLIPWAY_REPORTS_DIR", str(reports))
    write_run_report(data, dag_id=DAG, run_id=data["run_id"])
    url = f"{ui.url}/slipway/reports/{DAG}/{quote(data['run_id'], safe='')}"
    with pytest.raises(urllib.error.HTTPError) as refused:  # without a session: Airflow's auth says no
        urllib.request.urlopen(url, timeout=30)
    assert refused.value.code == 401
    page.goto(url)
    bars = page.wait_until(
        "[...document.querySelectorAll('#timeline svg g[id^=\"node-\"] path')]"
        ".filter(p => { const r = p.getBoundingClientRect(); return r.width > 0 && r.height > 0; }).length",
        "the timeline's node bars",
    )
    nodes = {e["node"] for e in data["events"] if e["kind"] in ("node-uncordoned", "quarantined")}
    assert bars == len(nodes) == 7
    assert page.evaluate("document.title") == f"Slipway run report: {data['run_id']}"
    assert page.evaluate("!!document.querySelector('#latency svg')")
    page.screenshot(tmp_path / "report-from-api-server.png")
