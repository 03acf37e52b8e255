"""The data contract between Slipway's tasks: the upgrade request, inventory, plans and results.

Everything here is a small pydantic model that survives ``model_dump(mode="json")``, so a
task can hand it to the next one through XCom. Validation that needs only the request lives
on the model; validation that needs the live cluster is :meth:`UpgradeRequest.validate_against`.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
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

from slipway.airflow_env import KUBE_CONN_ID, PLATFORM_CONN_ID
from slipway.redact import url_secrets
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
# A host name as URLs carry it (underscores appear in some in-cluster service names).
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?(\.[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?)*\.?$"
)
# Numbers-only hosts (2852039166, 0xa9.0xfe.0xa9.0xfe, 0251.254.169.254) are IPv4 addresses to
# the resolver; only the canonical dotted-decimal form is accepted, so the allowlist sees them.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|\d+)(\.(0x[0-9a-f]*|\d+))*\.?$")
# user:password@ (or user@) before the host, whatever the scheme: refused before anything
# else is said about the URL, so no reason ever echoes a secret.
_USERINFO = re.compile(r"^[^:/?#]*:?//[^/?#]*@")

# Bounds that keep every later computation (timedeltas, batch arithmetic, the Eviction API's
# grace period) inside what it can represent; each is far above any sensible setting.
DAY_SECONDS = 86_400
MAX_NODES = 5_000  # the largest cluster Kubernetes supports
MAX_HEALTH_CHECKS = 20
MAX_LIST_ITEMS = 100
MAX_URL_LENGTH = 2_048
MAX_QUERY_LENGTH = 4_000
MAX_WINDOW = timedelta(days=7)  # as long as a weekly maintenance window may be
EARLIEST_WINDOW = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_WINDOW = datetime(2200, 1, 1, tzinfo=UTC)
# Cloud metadata services answer with instance credentials: never a health check's target.
METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("fd00:ec2::254"),
        ipaddress.ip_address("100.100.100.200"),
    }
)
METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)


def split_label(item: str) -> tuple[str, str]:
    """Split and validate a ``key=value`` label selector item the way the apiserver would.

    :raises ValueError: saying which part is wrong.
    """
    key, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"{_shorten(item)} is not key=value")
    prefix, slash, name = key.rpartition("/")
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise ValueError(f"{_shorten(item)}: label key prefix {_shorten(prefix)} is not a DNS subdomain")
    if not _LABEL_NAME.match(name):
        raise ValueError(f"{_shorten(item)}: label key {_shorten(name)} is not a valid label name")
    if value and not _LABEL_NAME.match(value):
        raise ValueError(f"{_shorten(item)}: label value {_shorten(value)} is not a valid label value")
    return key, value


def _check_label(item: str) -> str:
    split_label(item)
    return item


def _check_pool(name: str) -> str:
    # Pools are label values on the nodes (the pool label), so they follow that grammar.
    if not _LABEL_NAME.match(name):
        raise ValueError(
            f"pool name {_shorten(name)} is not a valid label value "
            "(letters, digits, '-', '_', '.', at most 63 characters)"
        )
    return name


# Airflow connection ids: letters, digits, and ._- (what the UI and AIRFLOW_CONN_* accept).
_CONN_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,249}$")


def check_conn_id(value: str) -> str:
    if not _CONN_ID.match(value):
        raise ValueError(f"{_shorten(value)} is not an Airflow connection id (letters, digits, '._-')")
    return value


LabelSelectorItem = Annotated[str, AfterValidator(_check_label)]
PoolName = Annotated[str, AfterValidator(_check_pool)]
ConnId = Annotated[str, AfterValidator(check_conn_id)]


def address_problem(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool
) -> str | None:
    """Why a health check may not reach ``address`` (None when it may).

    Private ranges stay allowed: in-cluster services (``http://web.shop.svc:8080``) live there.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata service, which hands out credentials"
    if address.is_unspecified:
        return f"{address} is the unspecified address"
    if address.is_link_local:
        return f"{address} is link-local (where cloud metadata services live)"
    if address.is_loopback:  # before "reserved": ::1 lies in IPv6's reserved ::/8
        return None if allow_loopback else f"{address} is loopback, allowed only on the local platform"
    if address.is_multicast or address.is_reserved:
        return f"{address} is a multicast or reserved address"
    return None


def url_problem(url: str, *, allow_loopback: bool = True) -> str | None:
    """Why ``url`` may not be a health check's target (None when it may): http(s) only, no
    credentials, a host that is neither a metadata service nor link-local or unspecified;
    loopback only when ``allow_loopback`` (the local platform).

    The reasons never repeat the URL itself (it may hold a secret); they name the part at fault.
    """
    if len(url) > MAX_URL_LENGTH:
        return f"is {len(url)} characters long; at most {MAX_URL_LENGTH}"
    if _USERINFO.match(url):
        return "carries credentials (user:password@); health checks must not hold secrets"
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        return "contains whitespace or control characters"
    secrets = url_secrets(url)
    if secrets:  # it would be kept in XCom and the run record: refuse instead of storing it
        return f"carries a secret ({', '.join(secrets)}); health checks must not hold secrets"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as err:
        return f"is not a valid URL ({err})"
    if parts.scheme not in ("http", "https"):
        return f"scheme {parts.scheme or 'missing'!r} is not allowed; use http:// or https://"
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return "names no host; write it like http://host:port/path"
    if port == 0:
        return "port 0 is not a port"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None and _NUMERIC_HOST.match(host):
        return f"host {_shorten(host)} is a number, not a dotted-decimal address or a name"
    if address is None:
        if not _HOST_NAME.match(host):
            return f"host {_shorten(host)} is not a valid host name"
        if host in METADATA_NAMES:
            return f"host {host} is a cloud metadata service, which hands out credentials"
        if (host == "localhost" or host.endswith(".localhost")) and not allow_loopback:
            return f"host {host} is loopback, allowed only on the local platform"
        return None
    problem = address_problem(address, allow_loopback=allow_loopback)
    return f"host {problem}" if problem else None


class HealthCheck(BaseModel):
    """An application health probe run between batches: an HTTP URL, a Deployment's
    availability, or a custom PromQL query whose every sample must stay within bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["http", "deployment", "prometheus"] = Field(
        description="http: the URL must answer below HTTP 400 (redirects are not followed); "
        "deployment: the Deployment must be fully rolled out; prometheus: every sample of the "
        "query must stay within min_value and max_value."
    )
    # Its length is judged by url_problem, whose reasons never echo the URL.
    url: str | None = Field(
        default=None,
        description="http and prometheus checks: http(s) address without credentials. Private "
        "(in-cluster) addresses are allowed; cloud metadata, link-local and unspecified addresses "
        "are refused, loopback is allowed only on the local platform.",
    )
    namespace: str | None = Field(
        default=None, max_length=63, description="deployment checks: the namespace."
    )
    name: str | None = Field(default=None, max_length=253, description="deployment checks: the Deployment.")
    query: str | None = Field(
        default=None, max_length=MAX_QUERY_LENGTH, description="prometheus checks: a PromQL instant query."
    )
    min_value: float | None = Field(
        default=None,
        allow_inf_nan=False,
        ge=-1e15,
        le=1e15,
        description="prometheus checks: lowest healthy value.",
    )
    max_value: float | None = Field(
        default=None,
        allow_inf_nan=False,
        ge=-1e15,
        le=1e15,
        description="prometheus checks: highest healthy value.",
    )

    @field_validator("url")
    @classmethod
    def _safe_url(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is None:
            return None
        # The platform is known only where the request is accepted (the first task passes it);
        # without it loopback is allowed, as on the local platform.
        local = (info.context or {}).get("local_platform")
        problem = url_problem(url, allow_loopback=local is not False)
        if problem:
            raise ValueError(problem)
        return url

    @model_validator(mode="after")
    def _target_matches_kind(self) -> HealthCheck:
        if self.kind == "deployment":
            return self._deployment()
        if self.url is None:
            raise ValueError(f"{self.kind} check needs url=http(s)://host/...")
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
        if self.min_value is not None or self.max_value is not None:
            raise ValueError("deployment check takes namespace and name, not min_value/max_value")
        if self.namespace is None or not _DNS_LABEL.match(self.namespace):
            raise ValueError(f"deployment check needs a valid namespace, got {_shorten(self.namespace)}")
        if self.name is None or not _DNS_SUBDOMAIN.match(self.name):
            raise ValueError(f"deployment check needs a valid deployment name, got {_shorten(self.name)}")
        return self


def _form(section: str, title: str) -> dict[str, Any]:
    """What only the trigger form needs: where the field sits and its label."""
    return {"section": section, "title": title}


TARGET, WORKERS, DRAIN, SAFETY, CHECKS, TIMING = (
    "Target",
    "Worker batches",
    "Drain",
    "Safety",
    "Validation between batches",
    "Maintenance window",
)


class UpgradeRequest(BaseModel):
    """What the trigger form, a GitOps overlay or a scheduled run asks for.

    This model is the one definition of the request: the trigger form (titles, sections,
    defaults, choices, bounds, descriptions) is generated from it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_version: str = Field(
        max_length=32,
        description="The Kubernetes release to reach (the list suggests each minor's latest patch; any "
        "known patch may be typed). The control plane moves one minor version per run, to the latest "
        "patch of each minor; worker nodes follow it. A target this cluster cannot reach in one run is "
        "refused before anything changes, naming the run to trigger first (`slipway plan` shows the path).",
        json_schema_extra=_form(TARGET, "Target Kubernetes version"),
    )
    strategy: Literal["in-place", "surge", "blue-green"] = Field(
        default="in-place",
        description="in-place: upgrade each node where it stands. surge: add a new node per old one and "
        "retire the old one after its batch. blue-green: keep every old node until the whole cluster "
        "passed validation, then retire them, or switch back to them on failure (k8s_cluster_upgrade "
        "only, on platforms that can add nodes).",
        json_schema_extra=_form(WORKERS, "Worker strategy"),
    )
    batch_policy: Literal["fixed", "adaptive"] = Field(
        default="fixed",
        description="fixed: every batch has the same size. adaptive: batches grow after clean batches "
        "and shrink after trouble.",
        json_schema_extra=_form(WORKERS, "Batch policy"),
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=MAX_NODES,
        description="Nodes upgraded together. Empty: sized by the cluster (small clusters 1-2 nodes, "
        "medium 3-5, large 5-10).",
        json_schema_extra=_form(WORKERS, "Batch size"),
    )
    max_unavailable_percent: float = Field(
        default=10.0,
        gt=0,
        le=100,
        allow_inf_nan=False,
        description="The most of a node pool that may be drained at once, in percent.",
        json_schema_extra=_form(WORKERS, "Max unavailable (%)"),
    )
    # Validated by default too, so strategy="surge" with the default 0 % is caught.
    max_surge_percent: float = Field(
        default=0.0,
        ge=0,
        le=100,
        allow_inf_nan=False,
        validate_default=True,
        description="Extra nodes the surge strategy may add to a pool, in percent (above 0 for surge).",
        json_schema_extra=_form(WORKERS, "Max surge (%)"),
    )
    node_pools: list[PoolName] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        description="Pools to upgrade first, in this order (the rest follow). Empty: the planner's order.",
        json_schema_extra=_form(WORKERS, "Node pool order"),
    )
    # -1 is kubectl's "use each pod's own terminationGracePeriodSeconds".
    drain_grace_period_seconds: int = Field(
        default=300,
        ge=-1,
        le=DAY_SECONDS,
        description="Seconds each evicted pod gets to shut down; -1 uses the pod's own grace period.",
        json_schema_extra=_form(DRAIN, "Drain grace period (s)"),
    )
    drain_timeout_seconds: int = Field(
        default=600,
        gt=0,
        le=DAY_SECONDS,
        validate_default=True,
        description="How long one node's drain may take before the blocked-drain policy applies; at "
        "least the grace period.",
        json_schema_extra=_form(DRAIN, "Drain timeout (s)"),
    )
    delete_emptydir_data: bool = Field(
        default=False,
        description="Allow draining pods that keep data in an emptyDir volume; that data is lost.",
        json_schema_extra=_form(DRAIN, "Allow deleting emptyDir data"),
    )
    force_bare_pods: bool = Field(
        default=False,
        description="Allow draining pods that no controller owns; nothing recreates them.",
        json_schema_extra=_form(DRAIN, "Evict pods without a controller"),
    )
    blocked_drain_policy: Literal["wait", "quarantine", "rollback"] = Field(
        default="wait",
        description="When a disruption budget keeps a pod from leaving: wait until the drain timeout; "
        "quarantine: leave the node cordoned and labelled and carry on; rollback the batch.",
        json_schema_extra=_form(DRAIN, "When a PDB blocks a drain"),
    )
    dry_run: bool = Field(
        default=False,
        description="Plan and run every check, change nothing (k8s_cluster_upgrade and the preflight; "
        "the worker-only DAG refuses it).",
        json_schema_extra=_form(SAFETY, "Dry run (plan and check only)"),
    )
    approval: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="auto: a human approves when the risk assessment asks for it. always: a human "
        "approves every run. never: refuse rather than wait for a human (a run whose risk needs "
        "approval is refused, except on the local platform).",
        json_schema_extra=_form(SAFETY, "Human approval"),
    )
    rollback: bool = Field(
        default=False,
        description="Allow a target older than the cluster: a deliberate downgrade.",
        json_schema_extra=_form(SAFETY, "Rollback (allow a downgrade)"),
    )
    critical_labels: list[LabelSelectorItem] = Field(
        default_factory=list,
        max_length=MAX_LIST_ITEMS,
        description="key=value labels of workloads that must never lose availability.",
        json_schema_extra=_form(SAFETY, "Critical workload labels (key=value)"),
    )
    soak_seconds: int = Field(
        default=30,
        gt=0,
        le=DAY_SECONDS,
        description="After a batch, its health gets this long to settle, then must hold for this long "
        "again before the next batch starts.",
        json_schema_extra=_form(CHECKS, "Soak between batches (s)"),
    )
    node_ready_timeout_seconds: int = Field(
        default=600,
        gt=0,
        le=DAY_SECONDS,
        description="How long an upgraded node may take to report Ready.",
        json_schema_extra=_form(CHECKS, "Node startup timeout (s)"),
    )
    health_checks: list[HealthCheck] = Field(
        default_factory=list,
        max_length=MAX_HEALTH_CHECKS,
        description='Run between batches, at most 20, e.g. [{"kind": "http", "url": '
        '"https://shop.example/healthz"}, {"kind": "deployment", "namespace": "shop", "name": "web"}, '
        '{"kind": "prometheus", "url": "http://prometheus.monitoring:9090", "query": '
        '"sum(rate(errors[5m]))", "max_value": 0.5}]. URLs carry no credentials; cloud metadata, '
        "link-local and unspecified addresses are refused, loopback only on the local platform.",
        json_schema_extra=_form(CHECKS, "Application health checks"),
    )
    # Apiserver/scheduler p99 during a batch against the pre-upgrade baseline: always
    # recorded; "enforce" also fails the batch when a p99 rises past the tolerance.
    latency_policy: Literal["report", "enforce"] = Field(
        default="report",
        description="report: record apiserver and scheduler p99 latency per batch. enforce: also fail "
        "the batch when a p99 rises past the tolerance.",
        json_schema_extra=_form(CHECKS, "Latency against the baseline"),
    )
    latency_tolerance: float = Field(
        default=2.0,
        gt=1.0,
        le=100,
        allow_inf_nan=False,
        description="How many times the pre-upgrade p99 a batch's p99 may reach.",
        json_schema_extra=_form(CHECKS, "Latency tolerance (x baseline p99)"),
    )
    window_start: datetime | None = Field(
        default=None,
        description="When this run's window opens (with a timezone, e.g. 2026-01-03T01:00:00Z). Empty: now.",
        json_schema_extra=_form(TIMING, "Window opens at"),
    )
    window_end: datetime | None = Field(
        default=None,
        description="No batch starts that cannot finish before this (with a timezone); at most 7 days "
        "after the window opens. Empty: no end (a scheduled run uses its window).",
        json_schema_extra=_form(TIMING, "Window closes at"),
    )

    kubernetes_conn_id: ConnId = Field(
        default=KUBE_CONN_ID,
        max_length=250,
        description="The Airflow connection (cncf-kubernetes) with the orchestrator kubeconfig of the "
        "cluster to upgrade. One pair of connections per cluster: runs on different clusters may run "
        "at once, runs on one cluster take turns at its lease.",
        json_schema_extra=_form(TARGET, "Cluster connection"),
    )
    platform_conn_id: ConnId = Field(
        default=PLATFORM_CONN_ID,
        max_length=250,
        description="The Airflow connection with the same cluster's platform settings (its extras).",
        json_schema_extra=_form(TARGET, "Platform connection"),
    )

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
            except (ValueError, LookupError) as exc:  # the whole minor is outside the table
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
        if moment is None:
            return None
        # A naive time means a different instant on every worker's clock setting.
        if moment.utcoffset() is None:
            raise ValueError(f"{moment.isoformat()} has no timezone; write it like 2026-01-03T01:00:00Z")
        # Far from datetime's edges, so adding a predicted duration can never overflow.
        if not EARLIEST_WINDOW <= moment < LATEST_WINDOW:
            raise ValueError(f"{moment.isoformat()} is outside the years 2000 to 2199")
        return moment

    @field_validator("window_end")
    @classmethod
    def _end_after_start(cls, end: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("window_start")
        if end is not None and start is not None:
            if end <= start:
                raise ValueError(f"{end.isoformat()} is not after window_start ({start.isoformat()})")
            if end - start > MAX_WINDOW:
                raise ValueError(f"the window from {start.isoformat()} is longer than 7 days")
        return end

    @field_validator("node_pools")
    @classmethod
    def _distinct_pools(cls, pools: list[str]) -> list[str]:
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


def unknown_field(name: str, known: Iterable[str]) -> str:
    """The reason given for a field nobody defined, with the closest known name when there is one."""
    names = list(known)
    close = difflib.get_close_matches(name, names, n=1)
    return (
        f"unknown field (did you mean {close[0]}?)" if close else f"unknown field (known: {', '.join(names)})"
    )


def parse_request(conf: Mapping[str, Any] | None, *, local_platform: bool | None = None) -> UpgradeRequest:
    """Build a request from a DAG run's ``conf``; every bad field is named in one error.

    :param local_platform: whether the cluster is the embedded local one; False refuses
        loopback health-check targets. None (a request already accepted once) does not judge it.
    :raises RequestError: one ``field: reason`` line per problem, for the task log.
    """
    if conf is not None and not isinstance(conf, Mapping):
        raise RequestError([("conf", f"must be a JSON object, got {type(conf).__name__}")])
    not_named = [key for key in (conf or {}) if not isinstance(key, str)]
    if not_named:
        raise RequestError([("conf", f"keys must be field names, got {_shorten(not_named[0])}")])
    try:
        return UpgradeRequest.model_validate(dict(conf or {}), context={"local_platform": local_platform})
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
        return field, unknown_field(str(loc[-1]), known)
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
