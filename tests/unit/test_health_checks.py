"""The user's PromQL health check against a small server speaking the Prometheus HTTP API.

The server stands in for the user's monitoring system (not for Kubernetes): it answers
``/api/v1/query`` with the documented response shapes, so the test is about how Slipway
reads and judges them.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from slipway.models import parse_request
from slipway.validation.health import check_http, check_prometheus, health_check, resolved_problem
from tests.localhttp import QuietHandler, serving

ANSWERS: dict[str, tuple[int, dict[str, Any]]] = {
    "sum(up)": (
        200,
        {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1700000000, "3"]}]},
        },
    ),
    "errors_by_pod": (
        200,
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [
                    {"metric": {"pod": "web-1"}, "value": [1700000000, "0.1"]},
                    {"metric": {"pod": "web-2"}, "value": [1700000000, "4"]},
                ],
            },
        },
    ),
    "scalar(1)": (200, {"status": "success", "data": {"resultType": "scalar", "result": [1700000000, "1"]}}),
    "absent_metric": (200, {"status": "success", "data": {"resultType": "vector", "result": []}}),
    "range[5m]": (200, {"status": "success", "data": {"resultType": "matrix", "result": []}}),
    "bad(": (
        400,
        {"status": "error", "errorType": "bad_data", "error": "parse error: unclosed left parenthesis"},
    ),
}


class _PrometheusApi(QuietHandler):
    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query).get("query", [""])[0]
        status, body = ANSWERS.get(query, (404, {}))
        if url.path != "/api/v1/query":
            status, body = 404, {}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    with serving(_PrometheusApi) as url:
        yield url


def test_a_vector_within_bounds_is_healthy(prometheus: str) -> None:
    assert check_prometheus(prometheus, "sum(up)", 3, None) == []
    assert check_prometheus(prometheus, "scalar(1)", None, 1) == []


def test_each_sample_outside_the_bounds_is_named(prometheus: str) -> None:
    problems = check_prometheus(prometheus, "errors_by_pod", None, 0.5)
    assert problems == ["health check query 'errors_by_pod': {pod=\"web-2\"} 4 is above 0.5"]
    assert check_prometheus(prometheus, "sum(up)", 4, None) == [
        "health check query 'sum(up)': value 3 is below 4"
    ]


def test_no_data_a_range_result_and_a_bad_query_are_problems(prometheus: str) -> None:
    assert check_prometheus(prometheus, "absent_metric", None, 1) == [
        "health check query 'absent_metric': no data"
    ]
    assert "matrix result cannot be judged" in check_prometheus(prometheus, "range[5m]", None, 1)[0]
    assert check_prometheus(prometheus, "bad(", None, 1) == [
        "health check query 'bad(': Prometheus answered HTTP 400"
    ]


def test_an_unreachable_prometheus_is_a_problem() -> None:
    problems = check_prometheus("http://127.0.0.1:9", "sum(up)", 1, None, timeout=2)
    assert len(problems) == 1 and problems[0].startswith("health check query 'sum(up)': ")


def test_the_request_builds_a_named_check(prometheus: str) -> None:
    request = parse_request(
        {
            "target_version": "1.37.2",
            "health_checks": [
                {"kind": "prometheus", "url": prometheus, "query": "errors_by_pod", "max_value": 5}
            ],
        }
    )
    check = health_check(None, request.health_checks[0])  # type: ignore[arg-type]
    assert check.__name__ == "query errors_by_pod"
    assert check() == []


# --- answers no check may crash on, and redirects it may not follow ----------------------

MALFORMED: dict[str, bytes] = {
    "not_json": b"<html>proxy error</html>",
    "a_list": b"[1, 2, 3]",
    "vector_without_value": b'{"status": "success", "data": {"resultType": "vector", "result": [{}]}}',
    "value_not_a_number": b'{"status": "success", "data": {"resultType": "scalar", "result": [1, "many"]}}',
    "result_not_a_list": b'{"status": "success", "data": {"resultType": "vector", "result": 7}}',
    "nan_sample": b'{"status": "success", "data": {"resultType": "scalar", "result": [1, "NaN"]}}',
}


class _BrokenApi(QuietHandler):
    """Answers the way a broken proxy or a misbehaving exporter would."""

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        if url.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
            return
        if url.path == "/healthz":
            self.send_response(200)
            self.end_headers()
            return
        query = urllib.parse.parse_qs(url.query).get("query", [""])[0]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(MALFORMED[query])


@pytest.fixture(scope="module")
def broken() -> Iterator[str]:
    with serving(_BrokenApi) as url:
        yield url


@pytest.mark.parametrize("query", sorted(MALFORMED))
def test_a_malformed_prometheus_answer_is_a_failed_check_not_an_exception(broken: str, query: str) -> None:
    request = parse_request(
        {
            "target_version": "1.37.2",
            "health_checks": [{"kind": "prometheus", "url": broken, "query": query, "max_value": 5}],
        }
    )
    problems = health_check(None, request.health_checks[0])()  # type: ignore[arg-type]
    assert len(problems) == 1
    assert problems[0].startswith(f"health check query {query!r}: ")


def test_a_nan_sample_is_never_within_bounds(broken: str) -> None:
    assert check_prometheus(broken, "nan_sample", None, 5) == [
        "health check query 'nan_sample': value is not a number"
    ]


def test_a_redirect_is_not_followed_and_fails_the_check(broken: str) -> None:
    assert check_http(f"{broken}/healthz") == []
    problems = check_http(f"{broken}/moved")
    assert problems == [
        f"health check {broken}/moved answered HTTP 302 (a redirect to "
        "http://169.254.169.254/latest/meta-data/, not followed): give the final URL"
    ]


def test_any_exception_inside_a_check_is_a_failed_check() -> None:
    # Something that is not an API client: reading the Deployment raises inside the check
    # (AttributeError), and no connection is attempted anywhere.
    request = parse_request(
        {
            "target_version": "1.37.2",
            "health_checks": [{"kind": "deployment", "namespace": "shop", "name": "web"}],
        }
    )
    check = health_check(object(), request.health_checks[0])  # type: ignore[arg-type]
    problems = check()
    assert check.__name__ == "deployment shop/web available"
    assert len(problems) == 1 and problems[0].startswith(
        "health check deployment shop/web available failed: "
    )


def test_a_name_resolving_to_a_refused_address_is_refused_when_probed() -> None:
    # The request-time allowlist reads the text; the probe also reads where a name points.
    assert resolved_problem("http://127.0.0.1:9/") is None  # loopback was judged with the platform
    assert resolved_problem("http://169.254.169.254/") == (
        "169.254.169.254 resolves to 169.254.169.254 is a cloud metadata service, which hands out credentials"
    )
    assert check_http("http://0.0.0.0:9/", timeout=1)[0].endswith("0.0.0.0 is the unspecified address")
