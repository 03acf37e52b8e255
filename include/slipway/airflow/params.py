"""The trigger form, generated from :class:`slipway.models.UpgradeRequest`.

The model is the one definition of the request: each field's default, choices, bounds,
title, section and description become one Airflow ``Param`` here, so the form and the
model cannot drift apart (``tests/unit/test_params_parity.py`` holds them to that). The
form catches the obvious (types, choices, ranges) in the browser; the first task validates
everything again with the model and refuses with one line per bad field.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from slipway.models import RequestError, UpgradeRequest, unknown_field
from slipway.versions import RELEASES

WINDOW_FIELDS = ("window_start", "window_end")
# Pydantic's schema keys that the form does not use (the UI reads title/section/type/...).
_DROPPED = ("default", "description")


def known_versions() -> list[str]:
    """Every known patch, newest first: what the model accepts."""
    return [p for minor in reversed(RELEASES.values()) for p in reversed(minor.patches)]


def suggested_versions() -> list[str]:
    """The latest patch of each known minor, newest first: the form's suggestions (an upgrade
    should land on a minor's latest patch; older ones can still be typed)."""
    return [minor.patches[-1] for minor in reversed(RELEASES.values()) if minor.patches]


def _inline(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Replace ``$ref`` with the definition it points to (the form has no ``$defs``)."""
    if "$ref" in schema:
        return _inline(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if isinstance(value, dict):
            out[key] = (
                _inline(value, defs)
                if key != "properties"
                else {name: _inline(sub, defs) for name, sub in value.items()}
            )
        elif isinstance(value, list):
            out[key] = [_inline(item, defs) if isinstance(item, dict) else item for item in value]
        else:
            out[key] = value
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` as the form renders it: X's keywords with ``type: [null, X]``."""
    options = schema.get("anyOf")
    if not options or len(options) != 2 or {"type": "null"} not in options:
        return schema
    (real,) = [option for option in options if option != {"type": "null"}]
    merged: dict[str, Any] = {key: value for key, value in schema.items() if key != "anyOf"} | real
    merged["type"] = ["null", real["type"]]
    return merged


def field_schemas() -> dict[str, dict[str, Any]]:
    """Each request field's JSON schema, as the form uses it (defaults and descriptions kept)."""
    full = UpgradeRequest.model_json_schema()
    defs = full.get("$defs", {})
    return {name: _nullable(_inline(prop, defs)) for name, prop in full["properties"].items()}


def _default(name: str) -> Any:
    field = UpgradeRequest.model_fields[name]
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return None if field.is_required() else field.default


def request_params(*, with_window: bool = True) -> dict[str, Param]:
    """One ``Param`` per request field, in the model's order.

    ``target_version`` is required by the model; the form suggests the latest patch of each
    minor and preselects the newest (the model accepts every known patch).
    """
    params: dict[str, Param] = {}
    for name, schema in field_schemas().items():
        if not with_window and name in WINDOW_FIELDS:
            continue
        keywords = {key: value for key, value in schema.items() if key not in _DROPPED}
        default = _default(name)
        if name == "target_version":
            # Suggestions, not a closed list: what the cluster can reach is the planner's to say
            # at run time (a DAG file may not ask the cluster while it is parsed); any known
            # patch typed in is accepted, anything else refused naming the newest patch.
            default = known_versions()[0]
            keywords["examples"] = suggested_versions()
        params[name] = Param(default, description=schema.get("description"), **keywords)
    return params


def share_dag_params(dag: Any) -> Any:
    """Keep the form's Params on the DAG only, not copied into every task.

    Airflow copies the DAG's Params into each task, and the serialised DAG then carries the
    whole form (about 13 KB) once per task; the task runner merges the DAG's Params back in
    at run time (``process_params``: the DAG's, then the task's own, then the run's conf),
    so a task needs only the Params it set itself. Returns ``dag``.
    """
    from airflow.sdk.definitions.param import ParamsDict

    for task in dag.tasks:
        own = {
            name: task.params.get_param(name)
            for name in task.params
            if task.params.get_param(name).source != "dag"
        }
        task.params = ParamsDict(own)
    return dag


def conf_to_request(params: dict[str, Any]) -> dict[str, Any]:
    """The form's values as the model's input: unset optional fields dropped so the model's
    defaults apply.

    :raises RequestError: naming every key that is not a request field (a typo would
        otherwise be ignored and the run go ahead with the default), one line each.
    """
    known = list(UpgradeRequest.model_fields)
    unknown = sorted(str(key) for key in params if key not in UpgradeRequest.model_fields)
    if unknown:
        raise RequestError([(f"conf.{key}", unknown_field(key, known)) for key in unknown])
    return {key: value for key, value in params.items() if value is not None}


WORKERS_ONLY_DAG = "k8s_worker_upgrade"


def dag_request_problems(dag_id: str, request: UpgradeRequest) -> list[tuple[str, str]]:
    """What a valid request asks that this DAG cannot do: refused rather than ignored.

    The worker-only DAG has no plan-only path and no risk gate, so it can neither honour
    a dry run (it would drain nodes) nor wait for a human's approval.
    """
    problems: list[tuple[str, str]] = []
    if dag_id == WORKERS_ONLY_DAG:
        if request.dry_run:
            problems.append(
                (
                    "dry_run",
                    f"{WORKERS_ONLY_DAG} has no dry run; run k8s_upgrade_preflight to plan and check only",
                )
            )
        if request.approval == "always":
            problems.append(
                (
                    "approval",
                    f"{WORKERS_ONLY_DAG} has no approval step; a human approves in k8s_cluster_upgrade",
                )
            )
    return problems


def approval_never_problem(risk: dict[str, Any], *, local_platform: bool) -> str | None:
    """Why ``approval=never`` may not skip the human the risk assessment asks for (None when it may).

    A high or critical risk, or more than one minor crossed, needs a human: ``never`` then
    refuses the run instead of proceeding. The embedded local cluster is the exception: it is
    Slipway's own sandbox (demo, tests), where nobody is there to approve.
    """
    if local_platform:
        return None
    serious = [
        f"{item['name']} risk is {item['level']}"
        for item in risk.get("items", [])
        if item.get("level") in ("high", "critical")
    ]
    if int(risk.get("minors_crossed", 0)) > 1:
        serious.append(f"the upgrade crosses {risk['minors_crossed']} minor versions")
    if not serious:
        return None
    return (
        f"approval=never refused: the risk needs a human ({'; '.join(serious)}); "
        "trigger with approval=auto and approve the run"
    )
