"""The trigger form and the request model are one contract: every field of
:class:`slipway.models.UpgradeRequest` has a ``Param`` with the same default, choices, bounds,
title and description, and the form has nothing the model does not know. Beyond comparing
schemas, each bound is probed on the model itself: the value on the bound is accepted and
one step past it refused, so a schema that says one thing while the model does another fails.
"""

from __future__ import annotations

import re
import typing
from datetime import datetime
from typing import Any, get_args, get_origin

import pytest
from airflow.sdk import Param

from slipway.airflow.params import conf_to_request, known_versions, request_params, suggested_versions
from slipway.models import RequestError, UpgradeRequest, parse_request
from slipway.versions import Version

PARAMS = request_params()
FIELDS = UpgradeRequest.model_fields
TARGET = known_versions()[0]
BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "maxItems", "maxLength")


def _constraint(name: str, kind: str) -> Any:
    """A bound as the model declares it (annotated_types metadata), or None."""
    for meta in FIELDS[name].metadata:
        if hasattr(meta, kind):
            return getattr(meta, kind)
    return None


def _model_default(name: str) -> Any:
    field = FIELDS[name]
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return field.default


def _literal_choices(name: str) -> list[Any] | None:
    annotation = FIELDS[name].annotation
    if get_origin(annotation) is typing.Literal:
        return list(get_args(annotation))
    return None


def test_the_form_and_the_model_have_the_same_fields_in_the_same_order() -> None:
    assert list(PARAMS) == list(FIELDS)


@pytest.mark.parametrize("name", list(FIELDS))
def test_each_param_has_the_model_default(name: str) -> None:
    param = PARAMS[name]
    assert isinstance(param, Param)
    if name == "target_version":
        # Required in the model; the form preselects the newest known release.
        assert FIELDS[name].is_required() and param.value == TARGET
        return
    assert param.value == _model_default(name)
    # And the default the form sends is one the model accepts unchanged.
    request = parse_request(conf_to_request({"target_version": TARGET, name: param.value}))
    assert getattr(request, name) == _model_default(name)


@pytest.mark.parametrize("name", list(FIELDS))
def test_each_param_has_the_model_choices(name: str) -> None:
    choices = _literal_choices(name)
    param_enum = PARAMS[name].schema.get("enum")
    if name == "target_version":
        # Suggested, not closed: the latest patch of each minor, every one accepted.
        assert param_enum is None
        suggested = PARAMS[name].schema["examples"]
        assert suggested == suggested_versions() and suggested[0] == known_versions()[0]
        assert len(suggested) == len({Version.parse(v).minor_line for v in known_versions()})
        assert all(parse_request({"target_version": v}).target_version == v for v in suggested)
        return
    assert param_enum == choices
    for choice in choices or []:
        conf = {"target_version": TARGET, "max_surge_percent": 10, name: choice}  # surge needs room
        assert getattr(parse_request(conf), name) == choice
    if choices:
        with pytest.raises(RequestError) as caught:
            parse_request({"target_version": TARGET, name: "not-a-choice"})
        assert caught.value.fields == [name]


@pytest.mark.parametrize("name", list(FIELDS))
def test_each_param_has_the_model_bounds(name: str) -> None:
    schema = PARAMS[name].schema
    expected = {
        "minimum": _constraint(name, "ge"),
        "exclusiveMinimum": _constraint(name, "gt"),
        "maximum": _constraint(name, "le"),
        "exclusiveMaximum": _constraint(name, "lt"),
    }
    max_len = _constraint(name, "max_length")
    key = "maxItems" if get_origin(FIELDS[name].annotation) is list else "maxLength"
    expected[key] = max_len
    assert {k: schema.get(k) for k in BOUND_KEYS} == {k: expected.get(k) for k in BOUND_KEYS}


@pytest.mark.parametrize("name", list(FIELDS))
def test_each_param_has_a_title_section_and_plain_description(name: str) -> None:
    param, field = PARAMS[name], FIELDS[name]
    assert param.schema["title"] == field.json_schema_extra["title"]  # type: ignore[index]
    assert param.schema["section"] == field.json_schema_extra["section"]  # type: ignore[index]
    assert param.description == field.description
    assert param.description and len(param.description) > 20
    assert "§" not in param.description


NUMBERS = [
    name
    for name, field in FIELDS.items()
    if {int, float} & {field.annotation, *get_args(field.annotation)} and name != "batch_size"
] + ["batch_size"]


def test_every_number_in_the_request_is_bounded_both_ways() -> None:
    for name in NUMBERS:
        low = _constraint(name, "ge") if _constraint(name, "ge") is not None else _constraint(name, "gt")
        high = _constraint(name, "le") if _constraint(name, "le") is not None else _constraint(name, "lt")
        assert low is not None and high is not None, f"{name} is not bounded both ways"


def _base(name: str) -> dict[str, Any]:
    """A request that lets ``name`` take any value in its range on its own."""
    conf: dict[str, Any] = {"target_version": TARGET}
    if name == "drain_grace_period_seconds":
        conf["drain_timeout_seconds"] = 86_400  # the timeout must cover the grace period
    if name == "drain_timeout_seconds":
        conf["drain_grace_period_seconds"] = 0
    return conf


@pytest.mark.parametrize("name", NUMBERS)
def test_the_model_accepts_each_bound_and_refuses_one_step_past_it(name: str) -> None:
    step = 1 if int in {FIELDS[name].annotation, *get_args(FIELDS[name].annotation)} else 0.001
    for kind, inside, outside in (
        ("ge", 0, -step),
        ("gt", step, 0),
        ("le", 0, step),
        ("lt", -step, 0),
    ):
        bound = _constraint(name, kind)
        if bound is None:
            continue
        accepted = parse_request({**_base(name), name: bound + inside})
        assert getattr(accepted, name) == pytest.approx(bound + inside)
        with pytest.raises(RequestError) as caught:
            parse_request({**_base(name), name: bound + outside})
        assert caught.value.fields == [name]


def test_list_caps_match_the_form() -> None:
    assert PARAMS["health_checks"].schema["maxItems"] == 20
    checks = [{"kind": "http", "url": f"http://web-{i}.shop/"} for i in range(21)]
    with pytest.raises(RequestError) as caught:
        parse_request({"target_version": TARGET, "health_checks": checks})
    assert caught.value.fields == ["health_checks"]


def test_the_health_check_items_mirror_the_health_check_model() -> None:
    items = PARAMS["health_checks"].schema["items"]
    assert items["additionalProperties"] is False
    assert set(items["properties"]) == {"kind", "url", "namespace", "name", "query", "min_value", "max_value"}
    assert items["properties"]["kind"]["enum"] == ["http", "deployment", "prometheus"]
    assert items["required"] == ["kind"]


def test_every_known_release_in_the_dropdown_is_accepted() -> None:
    for version in known_versions():
        assert parse_request({"target_version": version}).target_version == version


def test_window_fields_and_rollback_reach_the_model_from_the_form() -> None:
    conf = conf_to_request(
        {
            "target_version": TARGET,
            "rollback": True,
            "window_start": "2026-01-03T01:00:00Z",
            "window_end": "2026-01-03T05:00:00Z",
            "batch_size": None,  # unset optional fields are dropped, the model's default applies
        }
    )
    request = parse_request(conf)
    assert request.rollback is True
    assert request.window_start == datetime.fromisoformat("2026-01-03T01:00:00+00:00")
    assert request.window_end == datetime.fromisoformat("2026-01-03T05:00:00+00:00")
    assert PARAMS["window_start"].schema["format"] == "date-time"
    assert PARAMS["rollback"].schema["type"] == "boolean"


def test_unknown_conf_keys_are_refused_one_line_each_with_the_closest_name() -> None:
    with pytest.raises(RequestError) as caught:
        conf_to_request({"target_version": TARGET, "taget_version": "1.37.2", "zzz": 1})
    assert caught.value.problems == (
        ("conf.taget_version", "unknown field (did you mean target_version?)"),
        ("conf.zzz", caught.value.problems[1][1]),
    )
    assert "  conf.taget_version: unknown field (did you mean target_version?)" in str(caught.value)
    assert re.match(r"unknown field \(known: target_version, ", caught.value.problems[1][1])


def test_the_generated_form_is_valid_for_airflow() -> None:
    # Airflow validates every default against its schema when the DAG is built.
    for name, param in PARAMS.items():
        assert param.resolve() == param.value, name
