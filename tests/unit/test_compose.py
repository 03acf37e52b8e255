"""docker-compose.yaml, the Dockerfile and slipway.env.example, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema (vendored in
``tests/data``, see its README) as written and after interpolation. Interpolation follows the
Compose Specification: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}`` and ``${VAR+alt}``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from slipway.localcluster import kit
from slipway.platform import parse_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENV_EXAMPLE = REPO / "slipway.env.example"
SCHEMA = REPO / "tests" / "data" / "compose-spec.json"
# check-jsonschema 0.39.0's vendored copy (tests/data/README.md).
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"

# The distributed topology (issue 11, item 4): the same processes the Docker-free run starts.
DISTRIBUTED_TOPOLOGY = {
    "postgres",
    "redis",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker-1",
    "airflow-worker-2",
}
ONE_SHOT = {"airflow-init"}
BACKENDS = {"postgres", "redis"}
AIRFLOW_LONG_RUNNING = DISTRIBUTED_TOPOLOGY - ONE_SHOT - BACKENDS
AIRFLOW_SERVICES = AIRFLOW_LONG_RUNNING | ONE_SHOT
WORKERS = ("airflow-worker-1", "airflow-worker-2")
# The only local-disk folders two long-running containers may share, and only read-only.
SHARED_READ_ONLY = {"./dags", "./plugins", "./gitops"}
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|FERNET|_KEY\b")
# Settings every Airflow component must share, each from one required variable.
SHARED_SECRETS = ("AIRFLOW__API__SECRET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY")
# Per-container additions to the shared environment that are allowed.
WORKER_ONLY_ENV = {"DUMB_INIT_SETSID"}


# ---- Compose interpolation -------------------------------------------------------------------


class InterpolationError(ValueError):
    """What compose refuses: a required variable without a value, or a malformed ``${...}``."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` with every variable substituted the way ``docker compose`` does."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$":
            out.append(text[i])
            i += 1
        elif text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_expand(text[i + 2 : end], env))
            i = end + 1
        elif bare := _NAME.match(text, i + 1):
            out.append(env.get(bare.group(), ""))
            i = bare.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth, i = 1, start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise InterpolationError(f"unclosed '${{' in {text!r}")


def _expand(body: str, env: Mapping[str, str]) -> str:
    name_match = _NAME.match(body)
    if name_match is None:
        raise InterpolationError(f"invalid interpolation format '${{{body}}}'")
    name, rest = name_match.group(), body[name_match.end() :]
    value = env.get(name)
    if not rest:
        return value or ""
    op = next((o for o in _OPERATORS if rest.startswith(o)), None)
    if op is None:
        raise InterpolationError(f"invalid interpolation format '${{{body}}}'")
    arg = rest[len(op) :]
    # With ':' an empty value counts as missing; without it only an unset one does.
    missing = value is None or (op.startswith(":") and value == "")
    if op.endswith("-"):
        return interpolate(arg, env) if missing else str(value)
    if op.endswith("?"):
        if missing:
            raise InterpolationError(f"required variable {name} is missing a value: {arg}")
        return str(value)
    return "" if missing else interpolate(arg, env)


def interpolate_document(node: Any, env: Mapping[str, str]) -> Any:
    """Every string value (not the keys) of a loaded compose file, interpolated."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_document(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_document(value, env) for key, value in node.items()}
    return node


_REFERENCE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_]\w*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_]\w*))"
)


def references(node: Any) -> Iterator[tuple[str, str, str]]:
    """(name, operator, argument) of every variable the values in ``node`` refer to."""
    if isinstance(node, str):
        for found in _REFERENCE.finditer(node.replace("$$", "")):
            yield found["braced"] or found["bare"], found["op"] or "", found["arg"] or ""
    elif isinstance(node, list):
        for item in node:
            yield from references(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from references(value)


# ---- Files -----------------------------------------------------------------------------------


class ComposeLoader(yaml.SafeLoader):
    """YAML as compose reads it: a key given twice in one mapping is an error, not the last wins."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"mapping key {key!r} given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_compose(text: str) -> dict[str, Any]:
    loaded = yaml.load(text, Loader=ComposeLoader)
    assert isinstance(loaded, dict), "a compose file is a mapping"
    return loaded


def read_env_file(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(assigned variables, variables documented in ``# NAME=default`` comments) of a .env file."""
    assigned: dict[str, str] = {}
    documented: dict[str, str] = {}
    for line in path.read_text().splitlines():
        text = line.strip()
        target = assigned
        if text.startswith("#"):
            text, target = text.lstrip("#").strip(), documented
            if not re.match(r"[A-Z_][A-Z0-9_]*=", text):
                continue
        if not text:
            continue
        key, sep, value = text.partition("=")
        assert sep and _NAME.fullmatch(key), f"{path.name}: not NAME=value: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        target[key] = value
    return assigned, documented


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


def constraint_version(package: str) -> str:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and name.lower() == package:
            return version
    raise AssertionError(f"{package} is not pinned in constraints.txt")


def mounts(service: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of a service's short-syntax volumes."""
    result = []
    for spec in service.get("volumes", []):
        source, target, *mode = str(spec).split(":")
        result.append((source, target, mode == ["ro"]))
    return result


def filled(example: Mapping[str, str]) -> dict[str, str]:
    """The example's variables with a stand-in for every value left for the user to fill in."""
    return {name: value or f"test-{name.lower()}" for name, value in example.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE.read_text())


@pytest.fixture(scope="module")
def example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)[0]


@pytest.fixture(scope="module")
def resolved(compose: dict[str, Any], example: dict[str, str]) -> dict[str, Any]:
    """The compose file as ``docker compose --env-file slipway.env`` sees it once filled in."""
    result = interpolate_document(compose, filled(example))
    assert isinstance(result, dict)
    return result


def schema_errors(document: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    return [
        f"{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(document)
    ]


# ---- The interpolator itself ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("${A}", {}, ""),
        ("$A/b", {"A": "x"}, "x/b"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A-d}", {}, "d"),
        ("${A:-${B}}", {"B": "nested"}, "nested"),
        ("${A:-{x}}", {}, "{x}"),
        ("${A:+set}", {"A": "x"}, "set"),
        ("${A:+set}", {"A": ""}, ""),
        ("${A?e}", {"A": ""}, ""),
        ("$${HOSTNAME} $$x", {"HOSTNAME": "no"}, "${HOSTNAME} $x"),
        ("http://${H:-127.0.0.1}:${P:-8080}:8080", {"P": "9"}, "http://127.0.0.1:9:8080"),
    ],
)
def test_interpolation_follows_compose_rules(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected


@pytest.mark.parametrize(("text", "env"), [("${A:?set A}", {}), ("${A:?set A}", {"A": ""}), ("${A?e}", {})])
def test_interpolation_refuses_a_missing_required_variable(text: str, env: dict[str, str]) -> None:
    with pytest.raises(InterpolationError, match="required variable A"):
        interpolate(text, env)


@pytest.mark.parametrize("text", ["${A", "${}", "${A!x}", "${-x}"])
def test_interpolation_refuses_a_malformed_reference(text: str) -> None:
    with pytest.raises(InterpolationError, match=r"interpolation|unclosed"):
        interpolate(text, {})


# ---- docker-compose.yaml ---------------------------------------------------------------------


def test_yaml_loader_refuses_a_key_given_twice() -> None:
    with pytest.raises(yaml.constructor.ConstructorError, match="given twice"):
        load_compose("services:\n  a:\n    image: x\n    image: y\n")
    merged = load_compose("x: &base {image: x, user: u}\nservices:\n  a:\n    <<: *base\n    image: y\n")
    assert merged["services"]["a"] == {"image": "y", "user": "u"}


def test_compose_file_parses(compose: dict[str, Any]) -> None:
    assert isinstance(compose.get("services"), dict)
    assert isinstance(compose.get("volumes"), dict)


def test_vendored_schema_is_the_recorded_one() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256


def test_compose_file_matches_the_compose_specification(
    compose: dict[str, Any], resolved: dict[str, Any]
) -> None:
    assert schema_errors(compose) == []
    assert schema_errors(resolved) == []


def test_schema_check_catches_a_broken_service(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["airflow-scheduler"]["depends_on"]["airflow-init"]["condition"] = "service_done"
    broken["services"]["airflow-triggerer"]["restart_policy"] = "always"
    errors = schema_errors(broken)
    assert any("airflow-scheduler/depends_on" in e for e in errors), errors
    assert any("airflow-triggerer" in e and "restart_policy" in e for e in errors), errors


def test_services_are_the_distributed_topology(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == DISTRIBUTED_TOPOLOGY


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name in DISTRIBUTED_TOPOLOGY - ONE_SHOT:
        check = compose["services"][name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: healthcheck {check['test']}"


def test_airflow_services_start_after_init_and_healthy_backends(compose: dict[str, Any]) -> None:
    for name in AIRFLOW_SERVICES:
        depends = compose["services"][name].get("depends_on", {})
        for backend in BACKENDS:
            assert depends.get(backend, {}).get("condition") == "service_healthy", f"{name} on {backend}"
        if name not in ONE_SHOT:
            condition = depends.get("airflow-init", {}).get("condition")
            assert condition == "service_completed_successfully", f"{name} on airflow-init: {condition}"


def test_init_is_a_one_shot_migration_that_owns_the_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    init = services["airflow-init"]
    assert init.get("restart", "no") == "no"
    assert "healthcheck" not in init
    script = "\n".join(init["command"])
    assert "airflow db migrate" in script
    assert "chown -R 50000:0" in script
    init_targets = {source: target for source, target, _ in mounts(init)}
    for name in AIRFLOW_LONG_RUNNING:
        for source, _, _ in mounts(services[name]):
            if source in compose["volumes"]:
                assert source in init_targets, f"{name}'s volume {source} is not prepared by airflow-init"
                assert init_targets[source] in script, f"airflow-init does not own {source}"


def test_one_shared_config_built_from_the_dockerfile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    shared = compose["x-airflow-common"]["environment"]
    for name in AIRFLOW_SERVICES:
        service = services[name]
        assert service.get("build") == ".", f"{name} is not built from ./Dockerfile"
        assert service["image"] == compose["x-airflow-common"]["image"], name
        assert service.get("env_file") == "slipway.env", name
        extra = set(service["environment"]) - set(shared)
        assert extra <= WORKER_ONLY_ENV, f"{name} adds {extra}"
        assert {k: service["environment"][k] for k in shared} == shared, (
            f"{name} differs from the shared config"
        )
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in COMPOSE.read_text()


def test_executor_is_celery_on_redis_and_postgres(resolved: dict[str, Any]) -> None:
    for name in AIRFLOW_SERVICES:
        env = resolved["services"][name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis", name
        for key in ("AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
            url = urlsplit(env[key])
            assert url.scheme.endswith(("postgresql", "postgresql+psycopg2")), f"{name} {key}"
            assert url.hostname == "postgres", f"{name} {key}"
    postgres = resolved["services"]["postgres"]
    assert ("postgres-db", "/var/lib/postgresql/data", False) in mounts(postgres)
    assert "postgres-db" in resolved["volumes"]


def test_secrets_are_required_with_no_default(compose: dict[str, Any], example: dict[str, str]) -> None:
    secrets = {name for name, _, _ in references(compose) if SECRET_NAME.search(name)}
    assert {"SLIPWAY_API_SECRET_KEY", "SLIPWAY_JWT_SECRET", "SLIPWAY_POSTGRES_PASSWORD"} <= secrets
    for name, op, _ in references(compose):
        if name in secrets:
            assert op == ":?", f"${{{name}}} must be written ${{{name}:?...}} (found operator {op!r})"
    shared = compose["x-airflow-common"]["environment"]
    for key in SHARED_SECRETS:
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", shared[key]), f"{key}: {shared[key]!r}"
    for name in secrets:
        assert example.get(name) == "", f"slipway.env.example must leave {name} empty"
    # Compose refuses to start without one of them: the interpolation raises, naming it.
    without_jwt = {k: v for k, v in filled(example).items() if k != "SLIPWAY_JWT_SECRET"}
    with pytest.raises(InterpolationError, match="SLIPWAY_JWT_SECRET"):
        interpolate_document(compose, without_jwt)


def test_every_variable_is_documented_in_the_env_example(compose: dict[str, Any]) -> None:
    assigned, documented = read_env_file(ENV_EXAMPLE)
    for name, op, arg in references(compose):
        if op in (":?", "?"):
            assert name in assigned, f"required {name} is not in slipway.env.example"
        elif op in (":-", "-"):
            assert documented.get(name) == arg, f"slipway.env.example: document '# {name}={arg}'"
        else:
            pytest.fail(f"${{{name}}} has neither a default nor a required-value error")


def test_api_server_is_published_on_loopback_only(
    compose: dict[str, Any], resolved: dict[str, Any], example: dict[str, str]
) -> None:
    for name, service in resolved["services"].items():
        if name != "airflow-apiserver":
            assert "ports" not in service, f"{name} publishes a port"
    (published,) = resolved["services"]["airflow-apiserver"]["ports"]
    host_ip, _, container_port = published.split(":")
    assert (host_ip, container_port) == ("127.0.0.1", "8080")
    open_env = {**filled(example), "SLIPWAY_API_BIND": "0.0.0.0"}
    reopened = interpolate_document(compose, open_env)["services"]["airflow-apiserver"]["ports"]
    assert reopened == ["0.0.0.0:8080:8080"]


def test_execution_api_points_at_the_api_server(resolved: dict[str, Any]) -> None:
    env = resolved["x-airflow-common"]["environment"]
    url = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert url.hostname == "airflow-apiserver"
    (published,) = resolved["services"]["airflow-apiserver"]["ports"]
    assert str(url.port) == published.rsplit(":", 1)[1]
    assert url.path == "/execution/"
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "true"


def test_workers_share_nothing_on_disk_but_read_only_code(compose: dict[str, Any]) -> None:
    services = compose["services"]
    users: dict[str, set[str]] = {}
    for name in DISTRIBUTED_TOPOLOGY - ONE_SHOT:
        for source, target, read_only in mounts(services[name]):
            if source in compose["volumes"]:
                users.setdefault(source, set()).add(name)
            else:
                assert source in SHARED_READ_ONLY and read_only, f"{name} mounts {source}:{target}"
    shared = {volume: names for volume, names in users.items() if len(names) > 1}
    assert shared == {}, f"named volumes shared between containers: {shared}"
    for name in WORKERS:
        worker = services[name]
        assert worker["hostname"] == name, "the api-server fetches task logs from the worker by name"
        assert worker["command"] == "celery worker"
        assert any(
            target == "/opt/airflow/work" and source in compose["volumes"]
            for source, target, _ in mounts(worker)
        ), f"{name} has no working folder of its own"
    gitops = {target for source, target, _ in mounts(services["airflow-worker-1"]) if source == "./gitops"}
    assert gitops == {compose["x-airflow-common"]["environment"]["SLIPWAY_GITOPS_DIR"]}


def test_connections_come_from_the_env_file(compose: dict[str, Any], example: dict[str, str]) -> None:
    assert not any(key.startswith("AIRFLOW_CONN_") for key in compose["x-airflow-common"]["environment"])
    kube = json.loads(example["AIRFLOW_CONN_KUBERNETES_DEFAULT"])
    assert kube["conn_type"] == "kubernetes"
    assert kube["extra"]["kube_config"]["kind"] == "Config", "an inline kubeconfig: no file on disk"
    platform = json.loads(example["AIRFLOW_CONN_SLIPWAY_PLATFORM"])
    settings = parse_settings(platform["extra"])
    assert settings.platform == "kubeadm"
    assert settings.etcd_bin_dir == "/usr/local/bin", "where the Dockerfile puts the etcd tools"
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "/slipway.env" in ignored or "slipway.env" in ignored


def test_auth_manager_fits_the_pinned_providers(compose: dict[str, Any]) -> None:
    env = compose["x-airflow-common"]["environment"]
    pinned = (REPO / "constraints.txt").read_text()
    if "apache-airflow-providers-fab==" in pinned:
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("FabAuthManager")
        return
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("simple_auth_manager.SimpleAuthManager")
    assert env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "false").lower() == "false"
    # Generated passwords survive a restart: their file is on the api-server's own volume.
    passwords = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
    api_volumes = {
        target
        for source, target, _ in mounts(compose["services"]["airflow-apiserver"])
        if source in compose["volumes"]
    }
    assert str(passwords.parent) in api_volumes


# ---- Dockerfile and .dockerignore ------------------------------------------------------------


def test_dockerfile_base_image_matches_constraints() -> None:
    froms = [args for keyword, args in dockerfile_instructions(DOCKERFILE) if keyword == "FROM"]
    assert froms[-1] == f"apache/airflow:{constraint_version('apache-airflow')}-python3.11"


def test_dockerfile_installs_the_package_with_constraints_as_uid_50000() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    installs = [args for keyword, args in instructions if keyword == "RUN" and "pip install" in args]
    assert installs, "no pip install"
    for command in installs:
        words = command.split("pip install", 1)[1].split("&&")[0].split()
        assert "-c" in words and words[words.index("-c") + 1] == "constraints.txt", command
        assert "." in words, f"the package itself is not installed: {command}"
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users[-1].split(":")[0] == "50000"


def test_dockerfile_tools_match_the_local_kit() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    args = dict(arg.split("=", 1) for keyword, arg in instructions if keyword == "ARG" and "=" in arg)
    assert args["KUBECTL_IMAGE"] == f"registry.k8s.io/kubectl:v{kit.KUBERNETES_NEW}"
    assert args["ETCD_IMAGE"] == f"gcr.io/etcd-development/etcd:v{kit.ETCD_NEW}"
    copied = " ".join(arg for keyword, arg in instructions if keyword == "COPY" and "--from=" in arg)
    for tool in ("kubectl", *kit.ETCD_BINARIES):
        assert re.search(rf"/{tool}\b", copied), f"{tool} is not copied into the image"
    assert copied.count("/usr/local/bin/") >= 2


def test_dockerignore_lets_in_only_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the build context starts from nothing"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for keyword, arg in dockerfile_instructions(DOCKERFILE):
        if keyword == "COPY" and "--from=" not in arg:
            sources = [word for word in arg.split() if not word.startswith("--")][:-1]
            copied |= {source.rstrip("/") for source in sources}
    assert copied == allowed
    assert "slipway.env" not in allowed
