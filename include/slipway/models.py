"""The data contract between Slipway's tasks: the upgrade request, inventory, plans and results.

Everything here is a small pydantic model that survives ``model_dump(mode="json")``, so a
task can hand it to the next one through XCom. Validation that needs only the request lives
on the model; validation that needs the live cluster is :meth:`UpgradeRequest.validate_against`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from slipway.versions import Version, is_known, latest_patch, newest_release

Severity = Literal["blocker", "warning", "info", "ok"]
RiskLevel = Literal["low", "medium", "high", "critical"]
Decision = Literal["proceed", "approval", "refuse"]
JSONValue = dict[str, Any] | list[Any]


class RequestError(ValueError):
    """An upgrade request was refused; the message has one ``field: reason`` line per problem.

    :param problems: ``(field, reason)`` pairs, in the order they were found.
    """

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        lines = [f"upgrade request refused ({count} problem{'s' if count != 1 else ''}):"]
        lines += [f"  {field}: {reason}" for field, reason in self.problems]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[type[RequestError], tuple[list[tuple[str, str]]]]:
        # Rebuild from the problems, not the message, when an executor pickles the error.
        return type(self), (list(self.problems),)

    @property
    def fields(self) -> list[str]:
        """The refused fields, for callers that branch on which input was wrong."""
        return [field for field, _ in self.problems]


# --- Kubernetes quantities -------------------------------------------------------------------

_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
# Same grammar as apimachinery's resource.Quantity: number, then one binary or decimal
# suffix or a decimal exponent. "1E" is exa, "1E3" is an exponent: the digits decide.
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[numkMGTPE]?)$"
)


def parse_quantity(text: str) -> Decimal:
    """Parse a Kubernetes quantity (``250m``, ``1Gi``, ``1e3``, ``2``) into its exact value.

    :raises ValueError: naming the text when it is not a quantity.
    """
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(f"malformed quantity {text!r}: expected a number with an optional suffix")
    number = Decimal(match["number"])
    suffix = match["suffix"]
    try:
        if suffix in _BINARY_SUFFIXES:
            return number * _BINARY_SUFFIXES[suffix]
        if len(suffix) > 1:  # what is left of length > 1 is an exponent such as e3
            return number.scaleb(int(suffix[1:]))
        return number * _DECIMAL_SUFFIXES[suffix]
    except ArithmeticError as exc:  # 1e999999999 overflows Decimal's context
        raise ValueError(f"quantity {text!r} is out of range") from exc


def parse_cpu(text: str) -> int:
    """CPU quantity in millicores, rounded up as Kubernetes does (``"250m"`` → 250, ``"2"`` → 2000)."""
    return math.ceil(parse_quantity(text) * 1000)


def parse_memory(text: str) -> int:
    """Memory quantity in bytes, rounded up (``"1Gi"`` → 1073741824, ``"1k"`` → 1000)."""
    return math.ceil(parse_quantity(text))


# --- request ---------------------------------------------------------------------------------

_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HTTP_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$")


def split_label(item: str) -> tuple[str, str]:
    """Split and validate a ``key=value`` label selector item the way the apiserver would.

    :raises ValueError: saying which part is wrong.
    """
    key, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"{item!r} is not key=value")
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise ValueError(f"{item!r}: label key prefix {prefix!r} is not a DNS subdomain")
    if not _LABEL_NAME.match(name):
        raise ValueError(f"{item!r}: label key {name!r} is not a valid label name")
    if value and not _LABEL_NAME.match(value):
        raise ValueError(f"{item!r}: label value {value!r} is not a valid label value")
    return key, value


def _check_label(item: str) -> str:
    split_label(item)
    return item


LabelSelectorItem = Annotated[str, AfterValidator(_check_label)]


class HealthCheck(BaseModel):
    """An application health probe run between batches: an HTTP URL, a Deployment's
    availability, or a custom PromQL query whose every sample must stay within bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["http", "deployment", "prometheus"]
    url: str | None = None
    namespace: str | None = None
    name: str | None = None
    query: str | None = None
    min_value: float | None = Field(default=None, allow_inf_nan=False)
    max_value: float | None = Field(default=None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _target_matches_kind(self) -> HealthCheck:
        if self.kind == "deployment":
            return self._deployment()
        if self.url is None or not _HTTP_URL.match(self.url):
            raise ValueError(f"{self.kind} check needs url=http(s)://host/..., got {self.url!r}")
        if self.namespace is not None or self.name is not None:
            raise ValueError(f"{self.kind} check takes url, not namespace/name")
        if self.kind == "http":
            if self.query is not None or self.min_value is not None or self.max_value is not None:
                raise ValueError("http check takes only url, not query/min_value/max_value")
            return self
        if not (self.query or "").strip():
            raise ValueError("prometheus check needs a query (PromQL)")
        if self.min_value is None and self.max_value is None:
            raise ValueError("prometheus check needs min_value, max_value or both")
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ValueError(f"min_value {self.min_value} is above max_value {self.max_value}")
        return self

    def _deployment(self) -> HealthCheck:
        if self.url is not None or self.query is not None:
            raise ValueError("deployment check takes namespace and name, not url/query")
        if self.namespace is None or not _DNS_LABEL.match(self.namespace):
            raise ValueError(f"deployment check needs a valid namespace, got {self.namespace!r}")
        if self.name is None or len(self.name) > 253 or not _DNS_SUBDOMAIN.match(self.name):
            raise ValueError(f"deployment check needs a valid deployment name, got {self.name!r}")
        return self


class UpgradeRequest(BaseModel):
    """What the trigger form or a scheduled run asks for. Defaults follow the seed's §2.1."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_version: str
    strategy: Literal["in-place", "surge", "blue-green"] = "in-place"
    batch_policy: Literal["fixed", "adaptive"] = "fixed"
    # None lets the planner size batches by cluster size (§2.1 small/medium/large).
    batch_size: int | None = Field(default=None, ge=1)
    max_unavailable_percent: float = Field(default=10.0, gt=0, le=100, allow_inf_nan=False)
    # Validated by default too, so strategy="surge" with the default 0 % is caught.
    max_surge_percent: float = Field(default=0.0, ge=0, le=100, allow_inf_nan=False, validate_default=True)
    drain_grace_period_seconds: int = Field(default=300, ge=0)
    drain_timeout_seconds: int = Field(default=600, gt=0, validate_default=True)
    delete_emptydir_data: bool = False
    force_bare_pods: bool = False
    blocked_drain_policy: Literal["wait", "quarantine", "rollback"] = "wait"
    dry_run: bool = False
    approval: Literal["auto", "always", "never"] = "auto"
    rollback: bool = False
    window_start: datetime | None = None
    window_end: datetime | None = None
    critical_labels: list[LabelSelectorItem] = Field(default_factory=list)
    health_checks: list[HealthCheck] = Field(default_factory=list)
    node_pools: list[str] = Field(default_factory=list)
    soak_seconds: int = Field(default=30, gt=0)
    # Apiserver/scheduler p99 during a batch against the pre-upgrade baseline: always
    # recorded; "enforce" also fails the batch when a p99 rises past the tolerance.
    latency_policy: Literal["report", "enforce"] = "report"
    latency_tolerance: float = Field(default=2.0, gt=1.0, le=100, allow_inf_nan=False)
    node_ready_timeout_seconds: int = Field(default=600, gt=0)

    @field_validator("target_version")
    @classmethod
    def _known_release(cls, text: str) -> str:
        version = Version.parse(text)
        newest = newest_release()
        if version > newest:
            raise ValueError(f"{version} is newer than the newest release Slipway knows ({newest})")
        if not is_known(version):
            try:
                hint = f"the newest {version.minor_line} patch is {latest_patch(version.minor_line)}"
            except ValueError as exc:  # the whole minor is outside the table; its message says so
                hint = str(exc)
            raise ValueError(f"{version} is not a known Kubernetes release; {hint}")
        # Normalised so "v1.37.2" and "1.37.2" plan and log the same.
        return str(version)

    @field_validator("max_surge_percent")
    @classmethod
    def _surge_needs_room(cls, percent: float, info: ValidationInfo) -> float:
        if info.data.get("strategy") == "surge" and percent == 0:
            raise ValueError("must be above 0 when strategy is 'surge' (no extra nodes to surge into)")
        return percent

    @field_validator("drain_timeout_seconds")
    @classmethod
    def _timeout_covers_grace(cls, timeout: int, info: ValidationInfo) -> int:
        grace = info.data.get("drain_grace_period_seconds")
        if grace is not None and timeout < grace:
            raise ValueError(
                f"{timeout}s is shorter than drain_grace_period_seconds ({grace}s): "
                "pods could never finish terminating gracefully"
            )
        return timeout

    @field_validator("window_start", "window_end")
    @classmethod
    def _aware(cls, moment: datetime | None) -> datetime | None:
        # A naive time means a different instant on every worker's clock setting.
        if moment is not None and moment.utcoffset() is None:
            raise ValueError(f"{moment.isoformat()} has no timezone; write it like 2026-01-03T01:00:00Z")
        return moment

    @field_validator("window_end")
    @classmethod
    def _end_after_start(cls, end: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("window_start")
        if end is not None and start is not None and end <= start:
            raise ValueError(f"{end.isoformat()} is not after window_start ({start.isoformat()})")
        return end

    @field_validator("node_pools")
    @classmethod
    def _distinct_pools(cls, pools: list[str]) -> list[str]:
        if any(not pool for pool in pools):
            raise ValueError("pool names must not be empty")
        repeated = sorted({pool for pool in pools if pools.count(pool) > 1})
        if repeated:
            raise ValueError(f"pools listed twice: {', '.join(repeated)}")
        return pools

    @property
    def target(self) -> Version:
        """The target as a :class:`Version`."""
        return Version.parse(self.target_version)

    def critical_label_pairs(self) -> list[tuple[str, str]]:
        """``critical_labels`` split into ``(key, value)`` pairs."""
        return [split_label(item) for item in self.critical_labels]

    def validate_against(self, cluster_version: Version, node_count: int) -> None:
        """Refuse what only the live cluster can reveal: downgrades and impossible batch sizes.

        :param cluster_version: the apiserver version the cluster runs now.
        :param node_count: worker nodes the upgrade would touch.
        :raises RequestError: listing every problem, one per line.
        """
        problems: list[tuple[str, str]] = []
        if self.target < cluster_version and not self.rollback:
            problems.append(
                (
                    "target_version",
                    f"{self.target_version} is older than the cluster ({cluster_version}); "
                    "a downgrade needs rollback=true",
                )
            )
        if self.batch_size is not None and self.batch_size > node_count:
            problems.append(
                (
                    "batch_size",
                    f"{self.batch_size} is more than the {node_count} worker nodes in the cluster",
                )
            )
        if problems:
            raise RequestError(problems)


def parse_request(conf: Mapping[str, Any] | None) -> UpgradeRequest:
    """Build a request from a DAG run's ``conf``; every bad field is named in one error.

    :raises RequestError: one ``field: reason`` line per problem, for the task log.
    """
    if conf is not None and not isinstance(conf, Mapping):
        raise RequestError([("conf", f"must be a JSON object, got {type(conf).__name__}")])
    try:
        return UpgradeRequest.model_validate(dict(conf or {}))
    except ValidationError as exc:
        raise RequestError([_describe(error) for error in exc.errors()]) from None


def _describe(error: ErrorDetails) -> tuple[str, str]:
    """Turn one pydantic error into ``(field path, reason)`` in an on-call engineer's words."""
    loc = error["loc"]
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    field = path.lstrip(".") or "conf"
    kind = error["type"]
    ctx = error.get("ctx", {})
    if kind == "extra_forbidden":
        known = HealthCheck.model_fields if loc[:1] == ("health_checks",) else UpgradeRequest.model_fields
        close = difflib.get_close_matches(str(loc[-1]), list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; known fields: {', '.join(known)}"
        return field, f"unknown field{hint}"
    if kind == "missing":
        return field, "required, but not given"
    if kind == "value_error":
        return field, str(ctx.get("error", error["msg"]))
    if kind == "literal_error":
        return field, f"{_shorten(error['input'])} is not allowed; choose one of {ctx.get('expected')}"
    message = error["msg"]
    return field, f"{message[:1].lower()}{message[1:]} (got {_shorten(error['input'])})"


def _shorten(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


# --- inventory -------------------------------------------------------------------------------


class Resources(BaseModel):
    """CPU, memory and pod slots, as allocatable on a node or requested by pods."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_millis: int = Field(default=0, ge=0)
    memory_bytes: int = Field(default=0, ge=0)
    pods: int = Field(default=0, ge=0)


class Taint(BaseModel):
    """A node taint as the apiserver reports it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodeInfo(BaseModel):
    """One node as the inventory saw it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    pool: str
    kubelet_version: str
    ready: bool
    unschedulable: bool = False
    control_plane: bool = False
    allocatable: Resources = Field(default_factory=Resources)
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)

    @property
    def kubelet(self) -> Version:
        """The kubelet version as a :class:`Version` (raises ValueError if the node reports junk)."""
        return Version.parse(self.kubelet_version)


class ClusterInventory(BaseModel):
    """The cluster at one moment: component versions per instance, and every node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Keyed by instance (host or member name) so skew findings can name the odd one out.
    apiserver_versions: dict[str, str]
    controller_manager_versions: dict[str, str] = Field(default_factory=dict)
    scheduler_versions: dict[str, str] = Field(default_factory=dict)
    etcd_versions: dict[str, str] = Field(default_factory=dict)
    nodes: list[NodeInfo] = Field(default_factory=list)
    collected_at: datetime

    @property
    def workers(self) -> list[NodeInfo]:
        """Nodes that are not control-plane nodes."""
        return [node for node in self.nodes if not node.control_plane]

    @property
    def apiserver_version(self) -> Version:
        """The oldest apiserver: during an HA upgrade that is the version the cluster guarantees."""
        if not self.apiserver_versions:
            raise ValueError("inventory has no apiserver versions")
        return min(Version.parse(text) for text in self.apiserver_versions.values())


# --- plans and results -----------------------------------------------------------------------


class Batch(BaseModel):
    """Worker nodes upgraded together; all from one pool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0)
    pool: str
    nodes: list[str] = Field(min_length=1)


class PoolPlan(BaseModel):
    """One node pool's share of the plan: its nodes in upgrade order and its disruption limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pool: str
    # Nodes still to upgrade, in order; nodes already at the target are left out.
    nodes: list[str]
    pool_size: int = Field(ge=1)
    max_unavailable: int = Field(ge=1)
    max_surge: int = Field(ge=0)
    # Fixed policy: every batch's size. Adaptive policy: the most a batch may grow to.
    batch_size: int = Field(ge=1)


class WorkerPlan(BaseModel):
    """The worker-node part of an upgrade, pool after pool.

    For the adaptive policy ``batches`` is the forecast if every batch is clean; the run takes
    its real batches one at a time from :func:`slipway.batching.next_batch`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["fixed", "adaptive"]
    pools: list[PoolPlan] = Field(default_factory=list)
    batches: list[Batch] = Field(default_factory=list)

    @property
    def node_count(self) -> int:
        """Nodes the plan will upgrade."""
        return sum(len(pool.nodes) for pool in self.pools)


class CheckResult(BaseModel):
    """The outcome of one preflight or in-flight check, with the evidence that decided it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    severity: Severity
    passed: bool
    summary: str
    evidence: JSONValue = Field(default_factory=dict)
    mitigation: str = ""

    @model_validator(mode="after")
    def _severity_matches_outcome(self) -> CheckResult:
        # A "passed blocker" or a "failed ok" would make the risk gate guess; refuse both.
        if self.passed and self.severity in ("blocker", "warning"):
            raise ValueError(f"check {self.name}: a passed check cannot have severity {self.severity}")
        if not self.passed and self.severity == "ok":
            raise ValueError(f"check {self.name}: a failed check cannot have severity ok")
        return self


class RiskItem(BaseModel):
    """One row of the §3.2 risk matrix for this cluster and plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category: Literal["technical", "business"]
    name: str
    probability: int = Field(ge=1, le=5)
    impact: int = Field(ge=1, le=5)
    score: int = Field(ge=1, le=25)
    level: RiskLevel
    evidence: list[str] = Field(default_factory=list)
    mitigations: list[str] = Field(default_factory=list)


class RiskAssessment(BaseModel):
    """The risk matrix plus the gate's verdict and the reasons behind it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[RiskItem]
    decision: Decision
    reasons: list[str]
    path_risk: Literal["low", "high"]
    minors_crossed: int = Field(ge=0)

    @property
    def highest_level(self) -> RiskLevel:
        """The worst level among the items (``low`` when there are none)."""
        order: list[RiskLevel] = ["low", "medium", "high", "critical"]
        return max((item.level for item in self.items), key=order.index, default="low")
