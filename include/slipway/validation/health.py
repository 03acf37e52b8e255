"""The application health checks a user declares in the request, run between batches.

Each check returns the problems it found (an empty list when healthy), phrased for the
run record and the report. An HTTP check is made from the Airflow worker, as a synthetic
probe of a user-facing endpoint would be; a Deployment check reads the Deployment as the
orchestrator identity; a Prometheus check runs the user's PromQL instant query against
their monitoring (the Prometheus HTTP API) and holds every returned sample to the bounds.

Where a check may go was decided when the request was accepted (``slipway.models.url_problem``:
http(s) only, no credentials, no cloud metadata, link-local or unspecified address, loopback
only on the local platform; private ranges stay allowed for in-cluster services). Here a
name is also refused when it resolves to such an address, redirects are never followed,
and any exception inside a check becomes a failed check.
"""

from __future__ import annotations

import ipaddress
import json
import math
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.models import HealthCheck, address_problem
from slipway.redact import redact

HTTP_TIMEOUT_SECONDS = 5.0
HTTP_ERROR = 400
REDIRECT = 300
NOT_FOUND = 404
MAX_ANSWER_BYTES = 1 << 20  # a Prometheus answer larger than this is not a health signal


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answers, never followed: a check may only reach the host it was given
    (a redirect could point at a metadata service or carry the request elsewhere)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def resolved_problem(url: str) -> str | None:
    """Why the host ``url`` names resolves somewhere no check may go (None when it may not
    or cannot be resolved here: the request itself then fails and says so).

    The request-time allowlist judged the text; this judges where a name points now, so a
    name that resolves to a metadata or link-local address is refused as well. Loopback was
    judged at request time with the platform in hand and is not judged again here.
    """
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        problem = address_problem(address, allow_loopback=True)
        if problem:
            return f"{host} resolves to {problem}"
    return None


def _open(url: str, timeout: float) -> Any:
    problem = resolved_problem(url)
    if problem:
        raise urllib.error.URLError(f"refused: {problem}")
    return _OPENER.open(url, timeout=timeout)


def check_http(url: str, timeout: float = HTTP_TIMEOUT_SECONDS) -> list[str]:
    """Healthy when ``url`` answers with a status below 300 within ``timeout``; a redirect
    is not followed and fails the check, naming where it pointed."""
    location = ""
    try:
        with _open(url, timeout) as response:  # http(s) only: the model checks
            status = int(response.status)
    except urllib.error.HTTPError as err:
        status = err.code
        location = err.headers.get("Location", "") if err.headers else ""
    except (urllib.error.URLError, OSError) as err:
        return [f"health check {redact(url)} failed: {redact(str(getattr(err, 'reason', err)))}"]
    if REDIRECT <= status < HTTP_ERROR:
        where = f" to {redact(location)}" if location else ""
        return [
            f"health check {redact(url)} answered HTTP {status} (a redirect{where}, not followed): "
            "give the final URL"
        ]
    if status >= HTTP_ERROR:
        return [f"health check {redact(url)} answered HTTP {status}"]
    return []


def check_deployment(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    """Healthy when the Deployment's current generation is rolled out and fully available."""
    try:
        dep = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    except ApiException as err:
        if err.status == NOT_FOUND:
            return [f"health check deployment {namespace}/{name}: not found"]
        raise
    wanted = dep.spec.replicas if dep.spec.replicas is not None else 1
    status = dep.status
    available = status.available_replicas or 0
    if (status.observed_generation or 0) < (dep.metadata.generation or 0):
        return [f"health check deployment {namespace}/{name}: new generation not observed yet"]
    if available < wanted:
        return [f"health check deployment {namespace}/{name}: {available}/{wanted} replicas available"]
    return []


def _bounds(value: float, low: float | None, high: float | None) -> str | None:
    if low is not None and value < low:
        return f"{value:g} is below {low:g}"
    if high is not None and value > high:
        return f"{value:g} is above {high:g}"
    return None


def check_prometheus(
    url: str, query: str, low: float | None, high: float | None, timeout: float = HTTP_TIMEOUT_SECONDS
) -> list[str]:
    """Healthy when the instant query returns data and every sample is within the bounds."""
    where = f"health check query {query!r}"
    address = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with _open(address, timeout) as response:  # http(s) only: the model checks
            body = response.read(MAX_ANSWER_BYTES + 1)
        if len(body) > MAX_ANSWER_BYTES:
            return [f"{where}: the answer is larger than {MAX_ANSWER_BYTES} bytes"]
        answer = json.loads(body)
    except urllib.error.HTTPError as err:
        return [f"{where}: Prometheus answered HTTP {err.code}"]
    except (urllib.error.URLError, OSError, ValueError) as err:
        return [f"{where}: {redact(str(getattr(err, 'reason', err)))}"]
    try:
        return _judge(where, answer, low, high)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        # Whatever the server sent, a malformed answer is a failed check, never a crash.
        return [f"{where}: malformed Prometheus answer ({type(err).__name__}: {err})"]


def _judge(where: str, answer: Any, low: float | None, high: float | None) -> list[str]:
    if answer.get("status") != "success":
        return [f"{where}: {answer.get('errorType', 'error')}: {answer.get('error', 'no reason given')}"]
    data = answer.get("data", {})
    kind, result = data.get("resultType"), data.get("result")
    samples: list[tuple[dict[str, str], str]]
    if kind == "scalar":
        samples = [({}, result[1])]
    elif kind == "vector":
        samples = [(item.get("metric", {}), item["value"][1]) for item in result]
    else:
        return [f"{where}: a {kind} result cannot be judged (use an instant vector or scalar)"]
    if not samples:
        return [f"{where}: no data"]
    problems = []
    for labels, text in samples:
        value = float(text)
        outside = "is not a number" if math.isnan(value) else _bounds(value, low, high)
        if outside:
            series = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
            problems.append(f"{where}: {series if labels else 'value'} {outside}")
    return problems


def _guarded(name: str, check: Callable[[], list[str]]) -> Callable[[], list[str]]:
    """Any exception inside a check is a failed check, never an exception out of the batch's
    validation: the batch already changed nodes, and its rollback branch must still run."""

    def run() -> list[str]:
        try:
            return check()
        except Exception as err:  # by design: a crashing check is a failing check
            return [f"health check {name} failed: {type(err).__name__}: {redact(str(err))}"]

    run.__name__ = name
    return run


def health_check(api: client.ApiClient, check: HealthCheck) -> Callable[[], list[str]]:
    """A zero-argument check for the soak loop, named after what it probes; it never raises."""
    if check.kind == "http":
        url = str(check.url)
        return _guarded(f"http {redact(url)}", lambda: check_http(url))
    if check.kind == "prometheus":
        base, query = str(check.url), str(check.query)
        return _guarded(
            f"query {query}", lambda: check_prometheus(base, query, check.min_value, check.max_value)
        )
    namespace, name = str(check.namespace), str(check.name)
    return _guarded(
        f"deployment {namespace}/{name} available", lambda: check_deployment(api, namespace, name)
    )
