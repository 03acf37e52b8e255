"""``slipway``: what an upgrade would do to this cluster, and what Slipway is doing to it now.

For on-call engineers, outside Airflow (nothing here imports it). Every command runs the
core code the DAGs run: the planner, the ``Preflight`` checks, the risk matrix, the run
records, the maturity assessment. Flags are checked before anything is sent to the
cluster; every failure is one line on stderr with the exit code below.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

OK, BLOCKERS, NEEDS_APPROVAL, USAGE, UNREACHABLE, UNEXPECTED = 0, 1, 2, 3, 4, 5
DECISION_EXIT = {"proceed": OK, "refuse": BLOCKERS, "approval": NEEDS_APPROVAL}
OUTPUTS = ("table", "json", "yaml")
PROBE_TIMEOUT = (5.0, 15.0)  # connect, read: an unreachable cluster is named in seconds

EXIT_CODES = """\
exit codes:
  0  ok: the plan or preflight decision is proceed, or the state was read
  1  blockers: the plan was refused, the preflight decision is refuse, the
     request cannot run on this cluster, or a check could not run
  2  needs approval: the risk assessment asks a human to approve the upgrade
  3  usage or configuration error: a bad flag value, an unreadable kubeconfig,
     context or --platform file, an unknown run (one line naming the flag;
     bad flags are refused before anything is sent to the cluster)
  4  cannot reach the cluster: connection refused, timeout, TLS or
     credentials rejected (one line)
  5  unexpected error: one line naming it; SLIPWAY_DEBUG=1 prints the traceback
"""

DESCRIPTION = """\
Plan, check and follow Kubernetes upgrades from the command line, with the
same code the Slipway DAGs run. Nothing here changes the cluster, except the
etcd snapshot `slipway preflight --with-backup` takes to prove a backup.

commands:
  plan --to VERSION       the path from the live cluster: hops, etcd moves,
                          kubelet catch-ups, risk per hop, worker batches
  preflight --to VERSION  every preflight check, the risk matrix, the decision
  status                  runs and their phase, the upgrade lease's holder,
                          cordoned and quarantined nodes and who cordoned them
  report RUN              one run's report from its run record (Markdown, or
                          the report JSON with -o json/yaml)
  history                 the upgrade maturity level shown by the run records

Global flags (--kubeconfig, --context, -o/--output, --platform) work before or
after the command. The kubeconfig defaults to $KUBECONFIG, ~/.kube/config, or
the in-cluster service account. --platform is the slipway_platform
connection's extras as a JSON or YAML file (how to read the control plane and
reach etcd); without it the control plane is read from kubeadm's static pods
in kube-system and etcd cannot be reached, so the etcd checks report errors.
"""

EXAMPLES = """\
examples:
  slipway plan --to 1.37.2
  slipway preflight --to 1.37.2 --platform platform.yaml
  slipway preflight --to 1.37.2 --platform platform.yaml --with-backup
  slipway status -o json
  slipway report manual__2026-12-02T03:00:00+00:00
  slipway --context prod history
"""


class UsageError(ValueError):
    """A bad flag or configuration; the message names the flag (exit code 3)."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting 2: one line, exit code 3."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _global_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On subcommands the defaults are SUPPRESS, so a flag given before the subcommand is not
    # overwritten by the subcommand's default: both positions work.
    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("global flags")
    group.add_argument("--kubeconfig", metavar="FILE", default=default(None), help="kubeconfig file")
    group.add_argument("--context", metavar="NAME", default=default(None), help="kubeconfig context")
    group.add_argument(
        "-o", "--output", choices=OUTPUTS, default=default("table"), help="output format (default table)"
    )
    group.add_argument(
        "--platform", metavar="FILE", default=default(None), help="slipway_platform extras (JSON or YAML)"
    )


def _target_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--to", metavar="VERSION", required=True, help="target Kubernetes version, e.g. 1.37.2"
    )
    parser.add_argument("--rollback", action="store_true", help="plan a rollback to an older version")
    parser.add_argument(
        "--request",
        metavar="FILE",
        help="upgrade request (the trigger form's fields) as JSON or YAML; --to sets target_version",
    )


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="slipway",
        description=DESCRIPTION,
        epilog=EXAMPLES + "\n" + EXIT_CODES,
        formatter_class=formatter,
    )
    _global_flags(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)

    def command(name: str, summary: str, details: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=summary,
            description=f"{summary}\n\n{details}",
            epilog=EXIT_CODES,
            formatter_class=formatter,
        )
        _global_flags(sub, top=False)
        return sub

    plan = command(
        "plan",
        "Show the upgrade path from the live cluster.",
        "Hops in order (etcd moves, kubelet catch-ups, one control-plane minor at a\n"
        "time), the risk and testing of each hop, APIs the target stops serving, the\n"
        "worker batches, and the risk decision the plan alone leads to. Read-only.",
    )
    _target_flags(plan)
    pre = command(
        "preflight",
        "Run every preflight check and the risk assessment.",
        "The checks the upgrade DAG's preparation stage runs (the same Preflight class),\n"
        "the risk matrix and the decision: proceed (exit 0), approval (exit 2) or\n"
        "refuse (exit 1). Read-only, except the etcd snapshot of the etcd-backup check,\n"
        "which runs only with --with-backup and --platform (skipped otherwise, and\n"
        "the output says so).",
    )
    _target_flags(pre)
    pre.add_argument(
        "--with-backup", action="store_true", help="take an etcd snapshot and prove it (needs --platform)"
    )
    pre.add_argument(
        "--artefacts",
        metavar="DIR",
        help="where --with-backup writes the snapshot (default: $SLIPWAY_REPORTS_DIR/slipway-cli/<time>)",
    )
    status = command(
        "status",
        "Show runs, the upgrade lease and cordoned or quarantined nodes.",
        "Runs come from the run records (ConfigMaps slipway-run-* in slipway-system),\n"
        "the lease holder from Lease slipway-upgrade (live while renewTime plus\n"
        "leaseDurationSeconds is in the future), who cordoned a node and why it is\n"
        "quarantined from Slipway's node annotations. Read-only.",
    )
    status.add_argument("--limit", type=int, default=10, metavar="N", help="newest N runs (default 10)")
    report = command(
        "report",
        "Print one run's report from its run record.",
        "Markdown (the report the DAG writes) with -o table, the report JSON with\n"
        "-o json or -o yaml. RUN is the Airflow run id or the record's ConfigMap name.",
    )
    report.add_argument("run", metavar="RUN", help="Airflow run id or slipway-run-* ConfigMap name")
    command(
        "history",
        "Show the upgrade maturity level from the run records.",
        "Manual, scripted, automated or intelligent: every criterion with the evidence\n"
        "from the recorded runs, success rate, durations and downtime. Read-only.",
    )
    return parser


# ---- checks before the cluster is touched ------------------------------------------------------------


def _load_document(flag: str, path: str) -> Any:
    """A JSON or YAML file, refused in one line naming the flag."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{flag}: {path} is not a readable file")
    try:
        return yaml.safe_load(file.read_text())  # YAML is a superset of JSON
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UsageError(f"{flag}: {path} is not valid JSON or YAML: {' '.join(str(err).split())}") from err


def _request(args: argparse.Namespace) -> Any:
    from slipway.models import RequestError, parse_request

    conf: dict[str, Any] = {}
    if args.request:
        loaded = _load_document("--request", args.request)
        if not isinstance(loaded, dict):
            raise UsageError(f"--request: {args.request} must hold a mapping of request fields")
        conf = dict(loaded)
    conf["target_version"] = args.to
    if args.rollback:
        conf["rollback"] = True
    try:
        return parse_request(conf)
    except RequestError as err:
        flag = {"target_version": "--to", "rollback": "--rollback"}
        text = "; ".join(
            f"{flag.get(field, f'--request {field}')}: {reason}" for field, reason in err.problems
        )
        raise UsageError(text) from err


def _settings(args: argparse.Namespace) -> Any:
    from slipway.platform import PlatformError, PlatformSettings, parse_settings

    if not args.platform:
        # No etcd access and static-pod reads: what any kubeadm cluster offers without extras.
        return PlatformSettings(platform="kubeadm")
    loaded = _load_document("--platform", args.platform)
    if not isinstance(loaded, dict):
        raise UsageError(f"--platform: {args.platform} must hold the slipway_platform extras as a mapping")
    try:
        settings = parse_settings(loaded)
    except PlatformError as err:
        raise UsageError(f"--platform: {err}") from err
    if settings.platform == "local":
        from slipway.localcluster.config import ClusterConfig

        root = Path(settings.state_root) if settings.state_root else None
        try:
            ClusterConfig.load(settings.cluster_name, root)
        except FileNotFoundError as err:
            raise UsageError(f"--platform: {err}") from err
    return settings


def _kube_configuration(args: argparse.Namespace) -> Any:
    """The client configuration from the kubeconfig and context, checked without a request."""
    import yaml
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    flag = "--kubeconfig" if args.kubeconfig else "--kubeconfig (not given: $KUBECONFIG, ~/.kube/config)"
    cfg = client.Configuration()
    if args.kubeconfig and not Path(args.kubeconfig).is_file():
        raise UsageError(f"--kubeconfig: {args.kubeconfig} is not a readable file")
    if not args.kubeconfig and _in_cluster() and not _default_kubeconfig_exists():
        if args.context:
            raise UsageError("--context: there is no kubeconfig to pick a context from (running in-cluster)")
        config.load_incluster_config(client_configuration=cfg)
        return cfg
    try:
        contexts, _ = config.list_kube_config_contexts(config_file=args.kubeconfig)
        names = [c["name"] for c in contexts]
        if args.context and args.context not in names:
            raise UsageError(
                f"--context: no context {args.context!r} in the kubeconfig (contexts: {', '.join(names)})"
            )
        config.load_kube_config(
            config_file=args.kubeconfig, context=args.context, client_configuration=cfg, persist_config=False
        )
    except (ConfigException, yaml.YAMLError) as err:
        raise UsageError(f"{flag}: {' '.join(str(err).split())}") from err
    except (TypeError, AttributeError, KeyError) as err:  # YAML, but not shaped like a kubeconfig
        raise UsageError(f"{flag}: not a kubeconfig ({type(err).__name__}: {err})") from err
    cfg.retries = 1
    return cfg


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _default_kubeconfig_exists() -> bool:
    paths = os.environ.get("KUBECONFIG", "").split(os.pathsep)
    return (
        any(p and Path(p).expanduser().is_file() for p in paths)
        or Path("~/.kube/config").expanduser().is_file()
    )


def _validate(args: argparse.Namespace) -> dict[str, Any]:
    """Every flag checked before the first request; returns what the command needs."""
    ready: dict[str, Any] = {}
    if args.command in ("plan", "preflight"):
        ready["request"] = _request(args)
        ready["settings"] = _settings(args)
    if args.command == "preflight" and args.with_backup and not args.platform:
        raise UsageError(
            "--with-backup: needs --platform FILE (the slipway_platform extras saying how to reach etcd)"
        )
    if args.command == "status" and args.limit < 1:
        raise UsageError(f"--limit: must be 1 or more, got {args.limit}")
    if args.command == "report" and not args.run.strip():
        raise UsageError("RUN: must not be empty")
    ready["configuration"] = _kube_configuration(args)
    return ready


# ---- the cluster --------------------------------------------------------------------------------------


def connection_lost(err: BaseException) -> bool:
    """Errors that mean no answer came back: refused, reset, timed out, TLS failed."""
    from urllib3.exceptions import HTTPError

    return isinstance(err, (HTTPError, ConnectionError, TimeoutError, socket.gaierror, ssl.SSLError))


def is_unreachable(err: BaseException) -> bool:
    """No answer, or an answer refusing who we are."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(err, ApiException):
        return err.status in (401, 403)
    return connection_lost(err)


def _describe_unreachable(err: BaseException) -> str:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError

    if isinstance(err, ApiException):
        return (
            f"the API answered {err.status} {err.reason}: the credentials were refused or lack a permission"
        )
    if isinstance(err, MaxRetryError) and err.reason is not None:
        err = err.reason
    text = " ".join(str(err).split())
    # urllib3 wraps the OS error in its own text; the last part says what happened.
    return text.rsplit(": ", 1)[-1] if "Failed to establish" in text else text


def _connect(configuration: Any) -> Any:
    from kubernetes import client

    api = client.ApiClient(configuration=configuration)
    try:
        client.VersionApi(api).get_code(_request_timeout=PROBE_TIMEOUT)
    except Exception as err:
        if is_unreachable(err):
            raise _Unreachable(configuration.host, err) from err
        raise
    return api


class _Unreachable(RuntimeError):
    def __init__(self, host: str, err: BaseException) -> None:
        super().__init__(f"cannot reach the cluster at {host}: {_describe_unreachable(err)}")


def _emit(data: Any, output: str, table: str) -> None:
    from slipway import cli_render

    text = {"json": cli_render.as_json, "yaml": cli_render.as_yaml}.get(output)
    print(text(data) if text else table)


def _run(args: argparse.Namespace, ready: dict[str, Any]) -> int:
    from slipway import cli_cluster, cli_render

    api = _connect(ready["configuration"])
    host = ready["configuration"].host
    try:
        if args.command in ("plan", "preflight"):
            target = cli_cluster.Target(ready["request"], ready["settings"], _artefacts(args))
            if args.command == "plan":
                plan = cli_cluster.gather_plan(api, target)
                _emit(plan, args.output, cli_render.render_plan(plan))
                return DECISION_EXIT[plan["risk"]["decision"]]
            if sys.stderr.isatty():
                print(f"Running preflight checks against {host} …", file=sys.stderr, flush=True)
            result = cli_cluster.gather_preflight(
                api, target, with_backup=args.with_backup, connection_lost=connection_lost
            )
            _emit(result, args.output, cli_render.render_preflight(result))
            return BLOCKERS if result["errors"] else DECISION_EXIT[result["decision"]]
        if args.command == "status":
            status = cli_cluster.gather_status(api, args.limit)
            _emit(status, args.output, cli_render.render_status(status))
            return OK
        if args.command == "report":
            data = cli_cluster.load_run(api, args.run.strip())
            document = cli_cluster.report_document(data)
            _emit(document, args.output, cli_cluster.report_markdown(data))
            return OK
        history = cli_cluster.gather_history(api)
        _emit(history, args.output, cli_render.render_history(history))
        return OK
    except cli_cluster.Refused as err:
        hint = (
            "" if args.platform else " (no --platform: the control plane was read from kubeadm's static pods)"
        )
        print(f"slipway: {err}{hint}", file=sys.stderr)
        return BLOCKERS
    except cli_cluster.NotFound as err:
        raise UsageError(str(err)) from err
    except Exception as err:
        if is_unreachable(err):
            raise _Unreachable(host, err) from err
        raise


def _artefacts(args: argparse.Namespace) -> Path:
    if getattr(args, "artefacts", None):
        return Path(args.artefacts)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(os.environ.get("SLIPWAY_REPORTS_DIR", "reports")) / "slipway-cli" / stamp


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (see ``EXIT_CODES``)."""
    try:
        args = build_parser().parse_args(argv)
        ready = _validate(args)
        return _run(args, ready)
    except UsageError as err:
        print(f"slipway: error: {err}", file=sys.stderr)
        return USAGE
    except _Unreachable as err:
        print(f"slipway: {err}", file=sys.stderr)
        return UNREACHABLE
    except KeyboardInterrupt:
        print("slipway: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return OK  # `slipway report RUN | head`: the reader has what it wanted
    except Exception as err:
        if os.environ.get("SLIPWAY_DEBUG"):
            raise
        print(
            f"slipway: unexpected error: {type(err).__name__}: {' '.join(str(err).split())[:300]}",
            file=sys.stderr,
        )
        return UNEXPECTED


if __name__ == "__main__":
    raise SystemExit(main())
