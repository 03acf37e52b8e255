"""etcd over TLS the way operators reach it: ``etcdctl``/``etcdutl`` subprocesses with ``-w json``.

Every call names the endpoints it asked and, on failure, the member and etcdctl's own reason,
so a task log reads like the terminal session of an engineer running the same commands.
Per-member commands (status, hashkv, health) report unreachable members as failures next to
the answers of the others instead of failing as a whole: a health check must name the one
member that is down, not give up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from slipway.localcluster.config import ClusterConfig

# etcdctl's own defaults: what operators see at the terminal. A member that is down costs the
# whole command timeout (gRPC retries a refused connection until then), so keep it short.
DEFAULT_DIAL_TIMEOUT_SECONDS = 2.0
DEFAULT_COMMAND_TIMEOUT_SECONDS = 5.0
# The subprocess gets this much beyond etcdctl's own timeouts before it is killed.
SUBPROCESS_SLACK_SECONDS = 15.0
ALARM_NAMES = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}
# etcdctl prints these lines for an endpoint that did not answer, then the others' JSON.
_FAILED_ENDPOINT = re.compile(r"^Failed to get the (?:status|hash) of endpoint (\S+) \((.*)\)$")

T = TypeVar("T")


class EtcdError(RuntimeError):
    """An etcd command failed; the message names the command, the endpoints and the reason."""


@dataclass(frozen=True)
class EtcdEndpoints:
    """Where etcd listens, how to authenticate, and which etcd tools to run.

    :param endpoints: client URLs, e.g. ``https://10.0.0.1:2379``.
    :param bin_dir: folder holding ``etcdctl``, ``etcdutl`` and ``etcd`` of one release.
    :param cacert: CA bundle that signed the members' serving certificates (None: plain http).
    :param cert: client certificate etcd accepts (``--client-cert-auth``).
    :param key: the client certificate's key.
    """

    endpoints: tuple[str, ...]
    bin_dir: Path
    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    dial_timeout_seconds: float = DEFAULT_DIAL_TIMEOUT_SECONDS
    command_timeout_seconds: float = DEFAULT_COMMAND_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("etcd endpoints: at least one client URL is required")
        if (self.cert is None) != (self.key is None):
            raise ValueError("etcd endpoints: cert and key go together; give both or neither")

    def tool(self, name: str) -> Path:
        """Path of ``etcdctl``, ``etcdutl`` or ``etcd`` in :attr:`bin_dir`.

        :raises EtcdError: naming the folder when the tool is not there.
        """
        path = self.bin_dir / name
        if not path.is_file():
            raise EtcdError(f"{name} not found in {self.bin_dir}: point bin_dir at an etcd release")
        return path

    def only(self, endpoint: str) -> EtcdEndpoints:
        """The same credentials and tools, talking to one member."""
        return replace(self, endpoints=(endpoint,))

    def with_command_timeout(self, seconds: float) -> EtcdEndpoints:
        """The same endpoints with a longer per-command timeout (for defrag and snapshots)."""
        return replace(self, command_timeout_seconds=seconds)

    def tls_args(self) -> list[str]:
        args = []
        if self.cacert is not None:
            args.append(f"--cacert={self.cacert}")
        if self.cert is not None and self.key is not None:
            args += [f"--cert={self.cert}", f"--key={self.key}"]
        return args

    @classmethod
    def for_local_cluster(cls, cfg: ClusterConfig, version: str | None = None) -> EtcdEndpoints:
        """The endpoints of a :class:`~slipway.localcluster.config.ClusterConfig`'s members.

        :param version: etcd release whose tools to run; default: the one the cluster was built with.
        """
        from slipway.localcluster import binaries
        from slipway.localcluster.kit import etcd_release

        release = etcd_release(version or cfg.etcd_version)
        return cls(
            endpoints=tuple(f"https://127.0.0.1:{cfg.etcd_client_port(i)}" for i in range(cfg.etcd_members)),
            bin_dir=binaries.binary(release, "etcdctl").parent,
            cacert=cfg.pki_dir / "etcd-ca.crt",
            cert=cfg.pki_dir / "etcd-admin.crt",
            key=cfg.pki_dir / "etcd-admin.key",
        )


@dataclass(frozen=True)
class PerEndpoint(Generic[T]):
    """Answers of the members that replied, and the reason for each one that did not."""

    results: dict[str, T] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Member:
    """One entry of ``member list``; ``id`` as etcdctl's table prints it (hex)."""

    id: str
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True)
class MemberStatus:
    """One member's ``endpoint status``."""

    endpoint: str
    member_id: str
    version: str
    storage_version: str
    db_size: int
    db_size_in_use: int
    db_quota: int
    leader_id: str
    raft_term: int
    raft_index: int
    raft_applied_index: int
    revision: int
    errors: tuple[str, ...] = ()

    @property
    def is_leader(self) -> bool:
        return self.member_id == self.leader_id


@dataclass(frozen=True)
class Alarm:
    """An active alarm: ``NOSPACE`` (quota reached, writes refused) or ``CORRUPT``."""

    member_id: str
    alarm: str


@dataclass(frozen=True)
class KVHash:
    """``endpoint hashkv``: the hash of one member's key-value history up to ``hash_revision``."""

    endpoint: str
    member_id: str
    hash: int
    hash_revision: int
    compact_revision: int


def member_hex(member_id: int | str) -> str:
    """etcd member ids as operators see them in ``member list`` (``1a0e4d4f0b3b8c39``)."""
    return f"{int(member_id):x}"


# ---- running the tools ------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolOutput:
    data: Any
    stderr: str
    returncode: int


def _env() -> dict[str, str]:
    # ETCDCTL_* variables of whoever runs the task would silently override or fight our flags.
    return {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")} | {"ETCDCTL_API": "3"}


def reason_from(stderr: str) -> str:
    """etcdctl's one-line reason from its stderr, skipping the client library's JSON log lines."""
    lines = [line.rstrip() for line in stderr.splitlines() if line.strip()]
    # Skip zap's JSON log lines and the indented frames of a Go stack trace.
    plain = [line for line in lines if not line.startswith(("{", " ", "\t"))]
    errors = [line for line in plain if line.startswith("Error:")]
    if errors:
        return errors[-1].removeprefix("Error:").strip()
    panics = [line for line in plain if line.startswith("panic:")]
    if panics:
        return f"the tool crashed reading it ({panics[0]})"
    if plain:
        return plain[-1]
    return lines[-1] if lines else "no output"


def run_tool(
    etcd: EtcdEndpoints, tool: str, args: Sequence[str], *, what: str, timeout: float | None = None
) -> ToolOutput:
    """Run ``tool`` with ``args`` and parse its JSON stdout (None when it printed none).

    :param what: the operation in an operator's words, for error messages.
    :raises EtcdError: when the tool cannot run or times out.
    """
    argv = [str(etcd.tool(tool)), *args]
    limit = timeout or (
        (etcd.dial_timeout_seconds + etcd.command_timeout_seconds) * len(etcd.endpoints)
        + SUBPROCESS_SLACK_SECONDS
    )
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=limit, env=_env(), check=False)
    except subprocess.TimeoutExpired as err:
        raise EtcdError(f"{what}: {tool} did not finish within {limit:.0f}s") from err
    except OSError as err:
        raise EtcdError(f"{what}: cannot run {argv[0]}: {err}") from err
    data = None
    text = done.stdout.strip()
    if text.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
    return ToolOutput(data, done.stderr, done.returncode)


def etcdctl(
    etcd: EtcdEndpoints,
    args: Sequence[str],
    *,
    what: str,
    partial: bool = False,
    timeout: float | None = None,
    expect_json: bool = True,
) -> ToolOutput:
    """Run ``etcdctl`` against :attr:`EtcdEndpoints.endpoints` with TLS and ``-w json``.

    :param partial: accept a non-zero exit when JSON was printed (some members answered).
    :param expect_json: False for commands that print only a message (``snapshot save``).
    :raises EtcdError: naming the endpoints and etcdctl's reason.
    """
    full = [
        f"--endpoints={','.join(etcd.endpoints)}",
        *etcd.tls_args(),
        f"--dial-timeout={etcd.dial_timeout_seconds:g}s",
        f"--command-timeout={etcd.command_timeout_seconds:g}s",
        "-w",
        "json",
        *args,
    ]
    out = run_tool(etcd, "etcdctl", full, what=what, timeout=timeout)
    if out.returncode != 0 and not (partial and out.data is not None):
        raise EtcdError(f"{what} at {', '.join(etcd.endpoints)} failed: {reason_from(out.stderr)}")
    if out.data is None and expect_json:
        raise EtcdError(
            f"{what} at {', '.join(etcd.endpoints)}: etcdctl printed no JSON ({reason_from(out.stderr)})"
        )
    return out


def _failures(etcd: EtcdEndpoints, out: ToolOutput, answered: set[str]) -> dict[str, str]:
    """Which endpoints did not answer, and etcdctl's reason for each."""
    failures: dict[str, str] = {}
    for line in out.stderr.splitlines():
        match = _FAILED_ENDPOINT.match(line.strip())
        if match:
            failures[match[1]] = match[2]
    for endpoint in etcd.endpoints:
        if endpoint not in answered and endpoint not in failures:
            failures[endpoint] = f"no answer ({reason_from(out.stderr)})"
    return failures


# ---- parsing etcdctl's JSON (pure) --------------------------------------------------------------


def parse_members(data: dict[str, Any]) -> list[Member]:
    """Members from ``member list -w json``, by name."""
    members = [
        Member(
            id=member_hex(m["ID"]),
            # A member added but not started yet has no name.
            name=m.get("name") or f"(unstarted {member_hex(m['ID'])})",
            peer_urls=tuple(m.get("peerURLs") or ()),
            client_urls=tuple(m.get("clientURLs") or ()),
            is_learner=bool(m.get("isLearner", False)),
        )
        for m in data.get("members") or []
    ]
    return sorted(members, key=lambda m: m.name)


def parse_status(entry: dict[str, Any]) -> MemberStatus:
    """One element of ``endpoint status -w json``."""
    status = entry["Status"]
    header = status.get("header", {})
    return MemberStatus(
        endpoint=entry["Endpoint"],
        member_id=member_hex(header.get("member_id", 0)),
        version=status.get("version", ""),
        storage_version=status.get("storageVersion", ""),
        db_size=int(status.get("dbSize", 0)),
        db_size_in_use=int(status.get("dbSizeInUse", 0)),
        db_quota=int(status.get("dbSizeQuota", 0)),
        leader_id=member_hex(status.get("leader", 0)),
        raft_term=int(status.get("raftTerm", header.get("raft_term", 0))),
        raft_index=int(status.get("raftIndex", 0)),
        raft_applied_index=int(status.get("raftAppliedIndex", 0)),
        revision=int(header.get("revision", 0)),
        errors=tuple(status.get("errors") or ()),
    )


def parse_alarms(data: dict[str, Any]) -> list[Alarm]:
    """Active alarms from ``alarm list -w json`` (the alarm type comes as a number)."""
    alarms = []
    for entry in data.get("alarms") or []:
        kind = entry.get("alarm", 0)
        name = ALARM_NAMES.get(kind, str(kind)) if isinstance(kind, int) else str(kind)
        alarms.append(Alarm(member_hex(entry.get("memberID", 0)), name))
    return alarms


def parse_hashkv(entry: dict[str, Any]) -> KVHash:
    """One element of ``endpoint hashkv -w json``."""
    answer = entry["HashKV"]
    return KVHash(
        endpoint=entry["Endpoint"],
        member_id=member_hex(answer.get("header", {}).get("member_id", 0)),
        hash=int(answer.get("hash", 0)),
        hash_revision=int(answer.get("hash_revision", 0)),
        compact_revision=int(answer.get("compact_revision", 0)),
    )


# ---- commands ---------------------------------------------------------------------------------


def member_list(etcd: EtcdEndpoints) -> list[Member]:
    """``etcdctl member list``: every member the cluster knows, started or not."""
    return parse_members(etcdctl(etcd, ["member", "list"], what="etcd member list").data)


def endpoint_status(etcd: EtcdEndpoints) -> PerEndpoint[MemberStatus]:
    """``etcdctl endpoint status`` for each endpoint; members that do not answer are failures."""
    out = etcdctl(etcd, ["endpoint", "status"], what="etcd endpoint status", partial=True)
    results = {s.endpoint: s for s in (parse_status(e) for e in out.data)}
    return PerEndpoint(results, _failures(etcd, out, set(results)))


def endpoint_health(etcd: EtcdEndpoints) -> PerEndpoint[float]:
    """``etcdctl endpoint health``: seconds each healthy member took to serve a read."""
    out = etcdctl(etcd, ["endpoint", "health"], what="etcd endpoint health", partial=True)
    results: dict[str, float] = {}
    failures: dict[str, str] = {}
    for entry in out.data:
        if entry.get("health"):
            results[entry["endpoint"]] = _go_duration_seconds(entry.get("took", "0s"))
        else:
            failures[entry["endpoint"]] = entry.get("error") or "unhealthy"
    return PerEndpoint(results, failures | _failures(etcd, out, set(results) | set(failures)))


def alarm_list(etcd: EtcdEndpoints) -> list[Alarm]:
    """``etcdctl alarm list``: alarms raised anywhere in the cluster."""
    return parse_alarms(etcdctl(etcd, ["alarm", "list"], what="etcd alarm list").data)


def hashkv(etcd: EtcdEndpoints, revision: int) -> PerEndpoint[KVHash]:
    """``etcdctl endpoint hashkv --rev``: each member's KV hash at the same ``revision``."""
    out = etcdctl(
        etcd, ["endpoint", "hashkv", f"--rev={revision}"], what="etcd endpoint hashkv", partial=True
    )
    results = {h.endpoint: h for h in (parse_hashkv(e) for e in out.data)}
    return PerEndpoint(results, _failures(etcd, out, set(results)))


def key_count(etcd: EtcdEndpoints) -> int:
    """Live keys in the keyspace (the ``count`` of a range over every key, fetching one)."""
    out = etcdctl(etcd, ["get", "", "--from-key", "--keys-only", "--limit=1"], what="etcd key count")
    return int(out.data.get("count", 0))


def key_counts(etcd: EtcdEndpoints, revision: int) -> PerEndpoint[int]:
    """Each member's own count of live keys at ``revision`` (serializable reads, one per member)."""
    results: dict[str, int] = {}
    failures: dict[str, str] = {}
    for endpoint in etcd.endpoints:
        try:
            out = etcdctl(
                etcd.only(endpoint),
                ["get", "", "--from-key", "--keys-only", "--limit=1", f"--rev={revision}", "--consistency=s"],
                what=f"etcd key count at revision {revision}",
            )
        except EtcdError as err:
            failures[endpoint] = str(err)
            continue
        results[endpoint] = int(out.data.get("count", 0))
    return PerEndpoint(results, failures)


def put(etcd: EtcdEndpoints, key: str, value: str) -> int:
    """``etcdctl put``; returns the revision the write created."""
    out = etcdctl(etcd, ["put", key, value], what=f"etcd put {key}")
    return int(out.data.get("header", {}).get("revision", 0))


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def _go_duration_seconds(text: str) -> float:
    """Seconds in a Go duration such as ``18.8ms`` or ``1m2.5s``."""
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text))
