"""What a migration run asks for: the trigger form of ``k8s_cluster_migration`` is generated from
:class:`MigrationRequest` (one definition of each field's default, bounds and description)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from slipway.migration import strategy as strategies
from slipway.migration.errors import MigrationError
from slipway.models import unknown_field
from slipway.windows import MAX_WINDOWS, MaintenanceSchedule, WindowError, parse_windows

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Namespaces a migration never moves: the cluster's own and Slipway's.
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
SYSTEM_PREFIXES = ("slipway-",)
# One requirement of a label selector: key, key=value, key!=value, key in (a,b), !key, ...
_SELECTOR = re.compile(r"^[A-Za-z0-9_./!=,() -]*$")


def _form(section: str, title: str) -> dict[str, Any]:
    return {"section": section, "title": title}


SCOPE, SAFETY = "What to move", "Safety"


class _Problems(ValueError):
    """Problems of one field's entries, each naming its own ``field.entry``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in problems))


class MigrationRequest(BaseModel):
    """What the trigger form asks for. Source and target clusters come from the
    ``slipway_migration`` connection, never from the form."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Namespaces to move, by name. Each must exist on the source. Combined with the "
        "namespace selector when both are given.",
        json_schema_extra=_form(SCOPE, "Namespaces"),
    )
    namespace_selector: str = Field(
        default="",
        max_length=256,
        description="A label selector over the source's namespaces (e.g. team=shop,tier!=test); it must "
        "match at least one namespace.",
        json_schema_extra=_form(SCOPE, "Namespace label selector"),
    )
    dry_run: bool = Field(
        default=True,
        description="Assess only: inventory, dependency map and what cannot move, written as a report; "
        "nothing is changed on either cluster.",
        json_schema_extra=_form(SAFETY, "Dry run (assessment only)"),
    )
    copy_path: Literal["builtin", "velero"] = Field(
        default="builtin",
        description="How configuration and stateless workloads reach the target: builtin (Slipway "
        "reads them on the source and server-side applies them on the target) or velero (a Velero "
        "Backup on the source, a Restore on the target, through the bucket the slipway_migration "
        "connection names). Either way every object is then proven by the same checksums; stateful "
        "workloads always move with rclone.",
        json_schema_extra=_form(SCOPE, "Copy path"),
    )
    retire_source: bool = Field(
        default=False,
        description="Retire the source of an earlier, finished migration of these namespaces instead of "
        "copying: every Deployment and StatefulSet is proven checksum-equal and available on the target "
        "(and, with a front door, all traffic on the target), then scaled to 0 on the source with its "
        "replicas recorded, so one patch scales it back. Nothing is deleted. With dry run on, only the "
        "assessment runs.",
        json_schema_extra=_form(SCOPE, "Retire the source (after the migration)"),
    )
    strategy: dict[str, str] = Field(
        default_factory=dict,
        max_length=len(strategies.ALLOWED),
        description=strategies.DESCRIPTION,
        json_schema_extra=_form(SCOPE, "Strategy per workload kind")
        | {
            "properties": {
                kind: {"type": "string", "enum": list(allowed)}
                for kind, allowed in strategies.ALLOWED.items()
            }
        },
    )
    cutover_windows: list[str] = Field(
        default_factory=list,
        max_length=MAX_WINDOWS,
        description="When the cut-over (the stateful freeze and the traffic switch) may start, as "
        "maintenance windows like 'Sat 01:00-05:00 Europe/Berlin' or 'daily 02:00+2h UTC'. The copy and "
        "the first volume passes run right away; the run then waits (deferred, holding no worker) until "
        "a window is open. Empty: cut over as soon as the copy is ready.",
        json_schema_extra=_form(SAFETY, "Cut-over windows"),
    )
    available_timeout_seconds: int = Field(
        default=300,
        ge=10,
        le=3600,
        description="How long the copied Deployments and StatefulSets may take to become available on "
        "the target.",
        json_schema_extra=_form(SAFETY, "Availability timeout (seconds)"),
    )

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, value: list[str]) -> list[str]:
        for name in value:
            if not DNS_LABEL.match(name):
                raise ValueError(f"{name!r} is not a namespace name (a DNS label)")
            if name in SYSTEM_NAMESPACES or name.startswith(SYSTEM_PREFIXES):
                raise ValueError(f"{name} is a system namespace; it is never migrated")
        if len(set(value)) != len(value):
            raise ValueError("names a namespace twice")
        return value

    @field_validator("namespace_selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        if not _SELECTOR.match(value) or value.count("(") != value.count(")"):
            raise ValueError(f"{value!r} is not a label selector (key=value, key!=value, key in (a,b), !key)")
        return value.strip()

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: dict[str, str]) -> dict[str, str]:
        problems = strategies.field_problems(value)
        if problems:
            raise _Problems(problems)
        return value

    @field_validator("cutover_windows")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        try:
            parse_windows(value)
        except WindowError as err:
            raise ValueError(re.sub(r"^windows\[(\d+)\]", r"entry \1", str(err))) from None
        return value

    @model_validator(mode="after")
    def _something(self) -> MigrationRequest:
        if not self.namespaces and not self.namespace_selector:
            raise ValueError("give namespaces or a namespace_selector: an empty selection moves nothing")
        return self


def cutover_opens(windows: Sequence[str], now: datetime) -> datetime | None:
    """None when the cut-over may start at ``now`` (no window given, or one is open), else the
    instant the next window opens (UTC).

    :raises LookupError: no window opens within the schedule's search horizon.
    """
    if not windows:
        return None
    schedule = MaintenanceSchedule(parse_windows(windows))
    if schedule.is_inside(now):
        return None
    return schedule.next_window(now)[0]


def refuse_unusable_copy_path(request: MigrationRequest, *, object_store: bool) -> None:
    """``copy_path: velero`` needs the bucket the ``slipway_migration`` connection names."""
    if request.copy_path == "velero" and not object_store:
        reason = (
            "velero needs an object store in the slipway_migration connection "
            "(extras velero_bucket_url and velero_bucket, the keys as login and password)"
        )
        raise MigrationError([("copy_path", reason)], "migration request")


def parse_migration_request(conf: Mapping[str, Any] | None) -> MigrationRequest:
    """The request from a run's ``conf``/params; every bad field is one ``field: reason`` line."""
    what = "migration request"
    if conf is not None and not isinstance(conf, Mapping):
        raise MigrationError([("conf", f"must be a JSON object, got {type(conf).__name__}")], what)
    try:
        return MigrationRequest.model_validate(dict(conf or {}))
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "conf"
            if error["type"] == "extra_forbidden":
                problems.append((field, unknown_field(str(error["loc"][-1]), MigrationRequest.model_fields)))
            elif error["type"] == "value_error" and isinstance(error.get("ctx", {}).get("error"), _Problems):
                problems.extend(error["ctx"]["error"].problems)
            elif error["type"] == "value_error":
                problems.append((field, str(error.get("ctx", {}).get("error", error["msg"]))))
            else:
                shown = repr(error["input"])
                shown = shown if len(shown) <= 60 else f"{shown[:57]}..."
                problems.append((field, f"{error['msg'][:1].lower()}{error['msg'][1:]} (got {shown})"))
        raise MigrationError(problems, what) from None
