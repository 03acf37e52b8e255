"""What a running task needs: clients from Airflow Connections and the run's identity.

Credentials come only from Airflow connections: the run's cluster connection (the form's
``kubernetes_conn_id``, ``kubernetes_default`` unless a run names another; read through the
cncf-kubernetes provider's KubernetesHook) and its platform connection (``platform_conn_id``,
``slipway_platform`` by default). Each run talks to the one cluster its form names.

No credential reaches the disk. Given kubeconfig *data* (``client-key-data`` and the
like), the kubernetes client writes each piece to a temp file and keeps it until the
process exits: a client key left in ``/tmp`` of every worker. So the kubeconfig's
certificate and key data are taken out before the hook loads it, and go straight into
the client's TLS context from memory (a ``memfd`` on Linux: a file that lives in RAM
and dies with its descriptor). Every secret the kubeconfig holds is also registered with
:mod:`slipway.redact` and Airflow's secrets masker, so no message or task log shows it.

No call hangs. Every request gets a (connect, read) timeout unless its caller set one: a
half-open connection (an apiserver restarting behind the balancer) raises a timeout instead
of holding the task forever. Watches get a read timeout past their own ``timeoutSeconds``.
Reads (GET) are retried with backoff on transient errors (429, 5xx, connection errors);
writes only when the connection was never made, since a write whose answer was lost may
have been applied (the tasks' own idempotence covers that case).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from urllib3.util.ssl_ import create_urllib3_context

from slipway import redact
from slipway.airflow_env import KUBE_CONN_ID, KUBEADM_CONN_ID, PLATFORM_CONN_ID
from slipway.kube.retry import Backoff, call_with_retries, is_transient, never_sent
from slipway.models import RequestError, UpgradeRequest, check_conn_id, parse_request
from slipway.platform import Platform, PlatformSettings, parse_settings
from slipway.runrecord import RunRecord


def _mask_in_airflow(secret: str) -> None:
    # The task log (task process and supervisor) hides what slipway.redact hides.
    from airflow.sdk.log import mask_secret

    mask_secret(secret)


redact.add_listener(_mask_in_airflow)


def run_connections() -> tuple[str, str]:
    """(cluster, platform) connection ids of the running task's run: what its form names, or
    the defaults outside a task or for a DAG without those fields."""
    from airflow.sdk import get_current_context

    try:
        params = get_current_context().get("params") or {}
    except RuntimeError:  # not inside a task
        params = {}
    return (
        str(params.get("kubernetes_conn_id") or KUBE_CONN_ID),
        str(params.get("platform_conn_id") or PLATFORM_CONN_ID),
    )


def check_connections() -> None:
    """Refuse a run whose connections are malformed or not defined, naming the form's field."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    problems: list[tuple[str, str]] = []
    for field, conn_id in zip(("kubernetes_conn_id", "platform_conn_id"), run_connections(), strict=True):
        try:
            check_conn_id(conn_id)
            BaseHook.get_connection(conn_id)
        except ValueError as err:
            problems.append((field, str(err)))
        except AirflowNotFoundException:
            if conn_id != KUBE_CONN_ID:  # the provider's in-cluster default is for this one only
                problems.append((field, f"connection {conn_id!r} is not defined"))
    if problems:
        raise RequestError(problems)


def kube_connection_extra(conn_id: str | None = None) -> dict[str, Any]:
    """The cluster connection's extras (the run's unless ``conn_id`` is given), with the
    provider's old ``extra__kubernetes__`` prefix removed (what the hook's private
    ``_get_field`` would read)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    conn_id = conn_id or run_connections()[0]
    try:
        extra = BaseHook.get_connection(conn_id).extra_dejson
    except AirflowNotFoundException:
        if conn_id != KUBE_CONN_ID:
            # Never fall back to in-cluster or ~/.kube/config for a named cluster: a typo would
            # upgrade whichever cluster those reach.
            raise RequestError([("kubernetes_conn_id", f"connection {conn_id!r} is not defined")]) from None
        return {}  # the provider's default: in-cluster or ~/.kube/config credentials
    return provider_fields(extra)


def provider_fields(extra: dict[str, Any]) -> dict[str, Any]:
    """Connection extras with the provider's old ``extra__kubernetes__`` prefix removed (what
    the hook's private ``_get_field`` would read); an unprefixed key wins."""
    prefix = "extra__kubernetes__"
    fields = {k.removeprefix(prefix): v for k, v in extra.items() if k.startswith(prefix)}
    return fields | {k: v for k, v in extra.items() if not k.startswith(prefix)}


log = logging.getLogger(__name__)

# (connect, read) seconds. Read is the longest silence tolerated mid-answer: a large list
# from a loaded apiserver answers well within it, a half-open connection never does.
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 60.0)
# A watch is silent until something changes: its read timeout starts past the server's
# own ``timeoutSeconds``; without one, past the longest the apiserver keeps a watch open
# (twice its --min-request-timeout, 1800 s by default).
WATCH_MARGIN_SECONDS = 10.0
WATCH_WITHOUT_TIMEOUT_SECONDS = 3600.0
READ_BACKOFF = Backoff(attempts=4, base=0.5, factor=2.0, cap=8.0)


class TimeoutApiClient(client.ApiClient):
    """The kubernetes ``ApiClient`` with a default timeout on every request and retries with
    backoff where they are safe. Its urllib3 pool does not retry by itself (one retry
    layer, with backoff, whose errors are the real ones: a timeout stays a timeout)."""

    def __init__(
        self,
        configuration: client.Configuration | None = None,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        backoff: Backoff = READ_BACKOFF,
    ) -> None:
        configuration = configuration or client.Configuration.get_default_copy()
        configuration.retries = False
        super().__init__(configuration)
        self.default_timeout = timeout
        self.backoff = backoff

    def timeout_for(self, query_params: Any) -> tuple[float, float]:
        """The default for a request with these query parameters (a list of pairs)."""
        params = {str(k): v for k, v in (query_params or [])}
        streaming = str(params.get("watch", "")).lower() == "true" or str(
            params.get("follow", "")
        ).lower() in {"true", "1"}
        if not streaming:
            return self.default_timeout
        server_side = params.get("timeoutSeconds")
        read = float(server_side) + WATCH_MARGIN_SECONDS if server_side else WATCH_WITHOUT_TIMEOUT_SECONDS
        return self.default_timeout[0], max(read, self.default_timeout[1])

    def request(
        self,
        method: str,
        url: str,
        query_params: Any = None,
        headers: Any = None,
        post_params: Any = None,
        body: Any = None,
        _preload_content: bool = True,
        _request_timeout: Any = None,
    ) -> Any:
        timeout = _request_timeout if _request_timeout is not None else self.timeout_for(query_params)

        def send() -> Any:
            return super(TimeoutApiClient, self).request(
                method,
                url,
                query_params=query_params,
                headers=headers,
                post_params=post_params,
                body=body,
                _preload_content=_preload_content,
                _request_timeout=timeout,
            )

        # A whole read is safe to repeat; a stream is the caller's (it re-watches), a write
        # only when it never left.
        reads = method in {"GET", "HEAD"} and _preload_content
        return call_with_retries(
            send, backoff=self.backoff, retry_on=is_transient if reads else never_sent, on_retry=_log_retry
        )


def _log_retry(attempt: int, err: BaseException, wait: float) -> None:
    log.warning("Kubernetes API: %s; retry %d in %.1fs", redact.redact(str(err))[:300], attempt, wait)


def with_default_timeouts(api: client.ApiClient) -> TimeoutApiClient:
    """The same client (configuration, headers) as a :class:`TimeoutApiClient`."""
    if isinstance(api, TimeoutApiClient):
        return api
    ours = TimeoutApiClient(api.configuration)
    ours.default_headers.update(api.default_headers)
    ours.cookie = api.cookie
    api.close()
    return ours


def orchestrator_api(conn_id: str | None = None) -> client.ApiClient:
    """One client per connection setting, built by the provider's hook from the run's cluster
    connection (or ``conn_id``)."""
    conn_id = conn_id or run_connections()[0]
    return _client_for(conn_id, json.dumps(kube_connection_extra(conn_id), sort_keys=True))


@cache
def _client_for(conn_id: str, connection_extra: str) -> client.ApiClient:
    # Keyed by the connection's settings: a long-lived process (dag.test, a test session)
    # that sees the connection change must not keep talking to the old cluster.
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    extra: dict[str, Any] = json.loads(connection_extra)
    loaded = _kubeconfig_from(extra)
    if loaded is None:  # in-cluster, or the default kubeconfig file: nothing written by us
        return with_default_timeouts(KubernetesHook(conn_id=conn_id).get_conn())
    identity = _take_out_data(loaded, extra.get("cluster_context"), conn_id)
    hook = KubernetesHook(
        conn_id=None,
        kubernetes_conn_id=None,
        client_configuration=client.Configuration(),
        config_dict=identity.config,
        cluster_context=extra.get("cluster_context") or None,
        disable_verify_ssl=_flag(extra.get("disable_verify_ssl")),
        disable_tcp_keepalive=_flag(extra.get("disable_tcp_keepalive")),
    )
    api = with_default_timeouts(hook.get_conn())
    if identity.in_memory:
        _use_tls_from_memory(api, identity)
    return api


def _flag(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    return value is True or str(value).lower() == "true"


def _kubeconfig_from(extra: dict[str, Any]) -> tuple[dict[str, Any], Path | None] | None:
    """(the kubeconfig as a dict, the folder its relative paths start from), or None when
    the connection names no kubeconfig (the provider's in-cluster/default lookup applies)."""
    if _flag(extra.get("in_cluster")):
        return None
    path, content = extra.get("kube_config_path"), extra.get("kube_config")
    if path:
        file = Path(str(path)).expanduser()
        return yaml.safe_load(file.read_text()) or {}, file.parent
    if content:
        loaded = content if isinstance(content, dict) else yaml.safe_load(str(content))
        return dict(loaded or {}), None
    return None


@dataclass
class _Identity:
    """The kubeconfig without its data fields, and those fields decoded (PEM bytes)."""

    config: dict[str, Any]
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None

    @property
    def in_memory(self) -> bool:
        return bool(self.ca or (self.cert and self.key))


def _named(items: list[dict[str, Any]] | None, name: str, what: str, conn_id: str) -> dict[str, Any]:
    """The ``what`` entry of the item called ``name`` (itself, to be edited in place)."""
    for item in items or []:
        if item.get("name") == name:
            entry: dict[str, Any] = item.setdefault(what, {}) or {}
            item[what] = entry
            return entry
    raise ValueError(f"kubeconfig of connection {conn_id}: no {what} named {name!r}")


def _take_out_data(
    loaded: tuple[dict[str, Any], Path | None], context: str | None, conn_id: str
) -> _Identity:
    """Move the active context's certificate data out of the kubeconfig (so the kubernetes
    client writes no temp file for it) and make its relative paths absolute."""
    config, base = copy.deepcopy(loaded[0]), loaded[1]
    name = context or config.get("current-context") or ""
    ctx = _named(config.get("contexts"), name, "context", conn_id)
    cluster = _named(config.get("clusters"), ctx.get("cluster", ""), "cluster", conn_id)
    user = _named(config.get("users"), ctx.get("user", ""), "user", conn_id) if ctx.get("user") else {}

    def pem(entry: dict[str, Any], field: str) -> bytes | None:
        data = entry.pop(f"{field}-data", None)
        path = entry.get(field)
        if data:
            redact.register_secret(str(data))
            return base64.b64decode(data)
        if path and base and not Path(path).is_absolute():
            entry[field] = str(base / path)
        return None

    identity = _Identity(config, pem(cluster, "certificate-authority"))
    identity.cert = pem(user, "client-certificate")
    identity.key = pem(user, "client-key")
    if identity.key:
        redact.register_secret(identity.key.decode(errors="replace").strip())
    if identity.cert and not identity.key and user.get("client-key"):
        identity.key = Path(user.pop("client-key")).read_bytes()  # certificate data, key in a file
        user.pop("client-certificate", None)
    if identity.key and not identity.cert and user.get("client-certificate"):
        identity.cert = Path(user.pop("client-certificate")).read_bytes()
    for secret in (user.get("token"), user.get("password")):
        redact.register_secret(secret)
    return identity


def _use_tls_from_memory(api: client.ApiClient, identity: _Identity) -> None:
    """Give the client's connection pool an SSL context holding the CA and the client
    identity, loaded from memory; the pool then opens no certificate file at all."""
    conf = api.configuration
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED if conf.verify_ssl else ssl.CERT_NONE)
    if conf.verify_ssl:
        if identity.ca:
            context.load_verify_locations(cadata=identity.ca.decode())
        elif conf.ssl_ca_cert:
            context.load_verify_locations(cafile=conf.ssl_ca_cert)
        else:
            context.load_default_certs()
    if identity.cert and identity.key:
        _load_identity(context, identity.cert, identity.key)
    elif conf.cert_file:
        context.load_cert_chain(conf.cert_file, conf.key_file)
    pool = api.rest_client.pool_manager
    for name in ("ca_certs", "cert_file", "key_file"):
        pool.connection_pool_kw.pop(name, None)
    pool.connection_pool_kw["ssl_context"] = context
    pool.clear()  # no pool was opened yet; make sure none keeps the old settings


def _load_identity(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """``load_cert_chain`` only reads files: hand it one that lives in memory."""
    chain = cert.rstrip(b"\n") + b"\n" + key
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("slipway-client-identity", os.MFD_CLOEXEC)
        try:
            with os.fdopen(os.dup(fd), "wb") as fh:
                fh.write(chain)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    # No memfd (not Linux): a 0600 file in a private 0700 folder, gone before we return.
    folder = tempfile.mkdtemp(prefix="slipway-identity-")
    try:
        path = os.path.join(folder, "identity.pem")
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
            fh.write(chain)
        context.load_cert_chain(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def platform_settings() -> PlatformSettings:
    """The run's ``slipway_platform`` extras, validated; no client is built."""
    from airflow.sdk import BaseHook

    return parse_settings(BaseHook.get_connection(run_connections()[1]).extra_dejson)


def platform() -> Platform:
    settings = platform_settings()
    api = orchestrator_api(run_connections()[0])
    if settings.platform == "kubeadm":
        # The kubeadm pods are root on their node: they run under their own opt-in identity
        # (kubeadm-upgrader-rbac.yaml), never the orchestrator's, which may not create pods.
        from slipway.airflow.pods import KubeadmPods, ProviderPodRunner

        run_id = current_run_id()
        run_pod = ProviderPodRunner(KubeadmPods(run_id, KUBEADM_CONN_ID))
        return Platform(settings, api, run_pod=run_pod, run_id=run_id)
    return Platform(settings, api)


def current_run_id() -> str:
    from airflow.sdk import get_current_context

    return str(get_current_context()["run_id"])


def record() -> RunRecord:
    return RunRecord(orchestrator_api(), current_run_id())


def request_from(xcom: dict[str, Any]) -> UpgradeRequest:
    """The validated request passed between tasks as a small JSON dict."""
    return parse_request(xcom)
