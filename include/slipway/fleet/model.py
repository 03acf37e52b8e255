"""The fleet, declared once in git (``gitops/fleet.yaml``): clusters and the update strategy.

A cluster is a pair of Airflow connections (its ``kubernetes_default``-shaped orchestrator
kubeconfig and its ``slipway_platform``-shaped extras) plus labels. The strategy is ordered
stages of groups that select clusters by label, each stage with a ``max_concurrency`` and a
soak before the next one, and gates (human approval, or a maintenance window) before or
after any stage or group. Everything is checked before anything touches a cluster, and each
problem is refused on one ``field: reason`` line.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from slipway.models import DAY_SECONDS, RequestError, check_conn_id, parse_request
from slipway.windows import WindowError, parse_windows

LABEL_KEYS = ("environment", "region", "canary")
MAX_CLUSTERS = 200
# A fleet run stays readable in the grid and in a report; far above the issue's "staging →
# canary → production" shapes.
MAX_STAGES = 10
MAX_GROUPS = 20
MAX_GATES = 5
MAX_CONCURRENCY = 50
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class FleetError(ValueError):
    """The fleet file was refused; one ``field: reason`` line per problem."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = [f"fleet refused ({count} problem{'s' if count != 1 else ''}):"]
        lines += [f"  {field}: {reason}" for field, reason in self.problems]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[type[FleetError], tuple[list[tuple[str, str]]]]:
        return type(self), (list(self.problems),)

    @property
    def fields(self) -> list[str]:
        return [field for field, _ in self.problems]


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a DNS label (lowercase letters, digits and '-', at most 63)")
    return value


class Labels(BaseModel):
    """Where a cluster sits: its environment, its region, and whether it is a canary."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    environment: str
    region: str
    canary: bool = False

    _names = field_validator("environment", "region")(_name)


class Cluster(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    connection: str = Field(description="Airflow connection id: the cluster's orchestrator kubeconfig")
    platform_connection: str = Field(description="Airflow connection id: the cluster's platform extras")
    labels: Labels

    _names = field_validator("name")(_name)

    _conn_ids = field_validator("connection", "platform_connection")(check_conn_id)


class Gate(BaseModel):
    """``approval``: a human approves in Airflow. ``window``: waits for a maintenance window."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["approval", "window"]
    window: str | None = Field(None, description="e.g. 'Sat 01:00-05:00 Europe/Berlin' (window gates)")

    @model_validator(mode="after")
    def _window_matches_kind(self) -> Gate:
        if self.kind == "window":
            if not self.window:
                raise ValueError("a window gate needs window: 'DAYS HH:MM-HH:MM TIMEZONE'")
            try:
                parse_windows([self.window])
            except WindowError as err:
                raise ValueError(str(err).removeprefix("windows[0]: ")) from None
        elif self.window is not None:
            raise ValueError("window: only a window gate has one")
        return self


class Group(BaseModel):
    """Clusters chosen by label (every key must match) and/or by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    selector: dict[str, str | bool] = Field(default_factory=dict)
    clusters: list[str] = Field(default_factory=list, max_length=MAX_CLUSTERS)
    before: list[Gate] = Field(default_factory=list, max_length=MAX_GATES)
    after: list[Gate] = Field(default_factory=list, max_length=MAX_GATES)

    _names = field_validator("name")(_name)

    @field_validator("selector")
    @classmethod
    def _known_labels(cls, selector: dict[str, str | bool]) -> dict[str, str | bool]:
        for key in selector:
            if key not in LABEL_KEYS:
                raise ValueError(_unknown("label", key, LABEL_KEYS))
        return selector

    @model_validator(mode="after")
    def _selects_something(self) -> Group:
        if not self.selector and not self.clusters:
            raise ValueError("a group needs a selector, a list of clusters, or both")
        return self

    def matches(self, cluster: Cluster) -> bool:
        if self.clusters and cluster.name not in self.clusters:
            return False
        labels = cluster.labels.model_dump()
        return all(_label_equal(labels[key], value) for key, value in self.selector.items())


def _label_equal(actual: str | bool, wanted: str | bool) -> bool:
    # YAML may say canary: "true" or canary: true; both mean the boolean.
    if isinstance(actual, bool):
        return str(wanted).lower() == str(actual).lower()
    return actual == wanted


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    groups: list[Group] = Field(min_length=1, max_length=MAX_GROUPS)
    max_concurrency: int = Field(1, ge=1, le=MAX_CONCURRENCY)
    soak_seconds: int = Field(0, ge=0, le=DAY_SECONDS, description="wait after this stage, before the next")
    before: list[Gate] = Field(default_factory=list, max_length=MAX_GATES)
    after: list[Gate] = Field(default_factory=list, max_length=MAX_GATES)

    _names = field_validator("name")(_name)


class Strategy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    stages: list[Stage] = Field(min_length=1, max_length=MAX_STAGES)
    exclude: list[str] = Field(default_factory=list, description="clusters this wave leaves alone")


class Fleet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    request: dict[str, Any] = Field(description="the upgrade request every cluster's run gets (its form)")
    clusters: list[Cluster] = Field(min_length=1, max_length=MAX_CLUSTERS)
    strategy: Strategy

    _names = field_validator("name")(_name)

    def cluster(self, name: str) -> Cluster:
        return next(c for c in self.clusters if c.name == name)


def _unknown(what: str, name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(sorted(known)) or 'none'})"
    return f"unknown {what} {name!r}{hint}"


def _duplicates(names: list[str]) -> list[str]:
    seen: set[str] = set()
    return [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]


def _cross_problems(fleet: Fleet) -> list[tuple[str, str]]:
    """What only the whole file can tell: names, references, one stage per cluster."""
    problems: list[tuple[str, str]] = []
    names = [c.name for c in fleet.clusters]
    for dup in _duplicates(names):
        problems.append((f"clusters[{names.index(dup, names.index(dup) + 1)}].name", f"duplicate {dup!r}"))
    conns = [c.connection for c in fleet.clusters]
    for dup in _duplicates(conns):
        i = conns.index(dup, conns.index(dup) + 1)
        problems.append((f"clusters[{i}].connection", f"{dup!r} is already another cluster's connection"))
    stage_names = [s.name for s in fleet.strategy.stages]
    for dup in _duplicates(stage_names):
        i = stage_names.index(dup, stage_names.index(dup) + 1)
        problems.append((f"strategy.stages[{i}].name", f"duplicate {dup!r}"))
    known = set(names)
    for i, name in enumerate(fleet.strategy.exclude):
        if name not in known:
            problems.append((f"strategy.exclude[{i}]", _unknown("cluster", name, known)))
    excluded = set(fleet.strategy.exclude)
    owner: dict[str, str] = {}
    for s, stage in enumerate(fleet.strategy.stages):
        group_names = [g.name for g in stage.groups]
        for dup in _duplicates(group_names):
            i = group_names.index(dup, group_names.index(dup) + 1)
            problems.append((f"strategy.stages[{s}].groups[{i}].name", f"duplicate {dup!r}"))
        for g, group in enumerate(stage.groups):
            where = f"strategy.stages[{s}].groups[{g}]"
            for i, name in enumerate(group.clusters):
                if name not in known:
                    problems.append((f"{where}.clusters[{i}]", _unknown("cluster", name, known)))
            chosen = [c.name for c in fleet.clusters if group.matches(c) and c.name not in excluded]
            if not chosen and all(n in known for n in group.clusters):
                problems.append((where, "selects no cluster (after exclusions)"))
            for name in chosen:
                first = owner.setdefault(name, f"{stage.name}/{group.name}")
                if first != f"{stage.name}/{group.name}":
                    problems.append(
                        (where, f"cluster {name!r} is already in {first}; a cluster is in one group")
                    )
    return problems


def _describe(error: ErrorDetails) -> tuple[str, str]:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    field = path.lstrip(".") or "fleet"
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "extra_forbidden":
        return field, "unknown field"
    if kind == "missing":
        return field, "required, but not given"
    if kind == "value_error":
        return field, str(ctx.get("error", error["msg"]))
    text = repr(error.get("input"))
    shown = text if len(text) <= 60 else f"{text[:57]}..."
    return field, f"{error['msg'][:1].lower()}{error['msg'][1:]} (got {shown})"


def parse_fleet(data: Any) -> Fleet:
    """The fleet, or :class:`FleetError` naming every refused field on its own line."""
    if not isinstance(data, Mapping):
        raise FleetError([("fleet", f"must be a mapping, got {type(data).__name__}")])
    try:
        fleet = Fleet.model_validate(dict(data))
    except ValidationError as exc:
        raise FleetError([_describe(e) for e in exc.errors()]) from None
    problems = _cross_problems(fleet)
    for field in ("kubernetes_conn_id", "platform_conn_id"):
        if field in fleet.request:
            problems.append(
                (f"request.{field}", "each cluster's run uses its own connections (clusters[].connection)")
            )
    try:
        parse_request(fleet.request)
    except RequestError as err:
        problems += [(f"request.{field}", reason) for field, reason in err.problems]
    if problems:
        raise FleetError(problems)
    return fleet


def load_fleet(path: Path) -> Fleet:
    """Read and validate a fleet file (YAML)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise FleetError([("fleet", f"cannot read {path}: {err.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise FleetError([("fleet", f"{path.name} is not valid YAML{where}")]) from None
    return parse_fleet(data)
