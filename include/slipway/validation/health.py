"""The application health checks a user declares in the request, run between batches.

Each check returns the problems it found (an empty list when healthy), phrased for the
run record and the report. An HTTP check is made from the Airflow worker, as a synthetic
probe of a user-facing endpoint would be; a Deployment check reads the Deployment as the
orchestrator identity; a Prometheus check runs the user's PromQL instant query against
their monitoring (the Prometheus HTTP API) and holds every returned sample to the bounds.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.models import HealthCheck

HTTP_TIMEOUT_SECONDS = 5.0
HTTP_ERROR = 400
NOT_FOUND = 404


def check_http(url: str, timeout: float = HTTP_TIMEOUT_SECONDS) -> list[str]:
    """Healthy when ``url`` answers with a status below 400 within ``timeout``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # http(s) only: the model checks
            status = int(response.status)
    except urllib.error.HTTPError as err:
        status = err.code
    except (urllib.error.URLError, OSError) as err:
        return [f"health check {url} failed: {getattr(err, 'reason', err)}"]
    if status >= HTTP_ERROR:
        return [f"health check {url} answered HTTP {status}"]
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
        with urllib.request.urlopen(address, timeout=timeout) as response:  # http(s) only: the model checks
            answer = json.loads(response.read())
    except urllib.error.HTTPError as err:
        return [f"{where}: Prometheus answered HTTP {err.code}"]
    except (urllib.error.URLError, OSError, ValueError) as err:
        return [f"{where}: {getattr(err, 'reason', err)}"]
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
        outside = _bounds(float(text), low, high)
        if outside:
            series = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
            problems.append(f"{where}: {series if labels else 'value'} {outside}")
    return problems


def health_check(api: client.ApiClient, check: HealthCheck) -> Callable[[], list[str]]:
    """A zero-argument check for the soak loop, named after what it probes."""
    if check.kind == "http":
        url = str(check.url)

        def probe() -> list[str]:
            return check_http(url)

        probe.__name__ = f"http {url}"
        return probe
    if check.kind == "prometheus":
        base, query = str(check.url), str(check.query)

        def prometheus() -> list[str]:
            return check_prometheus(base, query, check.min_value, check.max_value)

        prometheus.__name__ = f"query {query}"
        return prometheus
    namespace, name = str(check.namespace), str(check.name)

    def deployment() -> list[str]:
        return check_deployment(api, namespace, name)

    deployment.__name__ = f"deployment {namespace}/{name} available"
    return deployment
