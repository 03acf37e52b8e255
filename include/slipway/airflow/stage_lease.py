"""One cluster, one upgrade: the lease tasks every cluster-changing DAG wraps its work in.

``take_cluster_lease`` runs right after the request is validated and before anything
changes the cluster; it passes the request on, so every later task waits for it. A run
that finds another run's live lease fails there, naming the holder, having changed
nothing. ``release_cluster_lease`` is its teardown (it runs when the run fails too).
Every task that changes the cluster is decorated with :func:`holds_cluster_lease`: it
renews the lease before the task's first write (and fails, before writing, when another
run holds it) and keeps renewing it while a long task (a drain, a soak, an etcd member
upgrade) runs.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.client import HTTPException
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from slipway.airflow import runbooks
from slipway.lazy import api_exception, lazy

if TYPE_CHECKING:
    from slipway import lease
    from slipway.airflow import runtime
else:
    lease = lazy("slipway.lease")
    runtime = lazy("slipway.airflow.runtime")


log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def lease_seconds() -> int:
    """The lease duration this deployment uses (``SLIPWAY_LEASE_SECONDS``, default 120)."""
    return int(os.environ.get("SLIPWAY_LEASE_SECONDS", str(lease.DEFAULT_DURATION_SECONDS)))


def current_holder() -> str:
    """``<dag_id>/<run_id>`` of the running task's run."""
    context = get_current_context()
    return lease.holder_for(context["dag"].dag_id, str(context["run_id"]))


def _refused(err: lease.LeaseHeld, what: str) -> AirflowFailException:
    return AirflowFailException(f"{err}; {what}")


@task(doc_md=runbooks.TAKE_CLUSTER_LEASE, retries=2)
def take_cluster_lease(request: dict[str, Any]) -> dict[str, Any]:
    """Take the cluster lease (or keep the one this run holds); passes ``request`` on."""
    me = current_holder()
    try:
        state = lease.acquire(runtime.orchestrator_api(), me, lease_seconds())
    except ValueError as err:  # a bad SLIPWAY_LEASE_SECONDS, refused before any write
        raise AirflowFailException(f"SLIPWAY_LEASE_SECONDS: {err}") from err
    except lease.LeaseHeld as err:
        # Nothing is written on this path: the lease is the other run's, the cluster is untouched.
        raise _refused(
            err, "this run changed nothing: trigger it again when that run has ended or its lease expired"
        ) from err
    runtime.record().event(
        "lease-taken", f"cluster lease held by {me} ({state.duration}s, renewed at every step)"
    )
    return request


@task(doc_md=runbooks.RELEASE_CLUSTER_LEASE, retries=2)
def release_cluster_lease() -> bool:
    """Give the lease back (only when this run holds it); the teardown of take_cluster_lease."""
    me = current_holder()
    try:
        released = lease.release(runtime.orchestrator_api(), me)
    except lease.NotHolder as err:
        print(f"{err}: left as it is")  # ours expired and another run took it: not ours to free
        return False
    if released:
        runtime.record().event("lease-released", f"cluster lease released by {me}")
    return released


def cluster_lease(request: Any) -> tuple[Any, Any]:
    """The take task (fed the validated request) and its teardown, wired as setup/teardown.

    Returns ``(taken, release)``: ``taken`` yields the request again; put it before the first
    task of the run's work (Airflow wants a setup's direct downstream tasks to be all-success
    ones) and ``release`` after the run's last task."""
    taken: Any = take_cluster_lease(request)
    released = release_cluster_lease().as_teardown(setups=taken.operator)
    return taken, released


def renew_cluster_lease(api: Any, me: str) -> lease.LeaseState:
    """Renew this run's lease; take it again when it lapsed and nobody else holds it (a long
    approval or a deferred wait renews nothing); fail when another run holds it now."""
    try:
        return lease.renew(api, me)
    except lease.LeaseHeld as err:
        raise _refused(err, "this task changed nothing") from err
    except lease.LeaseLost as lost:
        try:
            state = lease.acquire(api, me, lease_seconds())
        except lease.LeaseHeld as err:
            raise _refused(err, "this task changed nothing") from err
        runtime.record().event("lease-retaken", f"{lost}; taken again by {me}: nobody else held it")
        return state


@contextmanager
def keep_cluster_lease() -> Iterator[lease.LeaseState]:
    """Renew now (before any write), then every third of the duration until the block ends."""
    api, me = runtime.orchestrator_api(), current_holder()
    state = renew_cluster_lease(api, me)
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(max(1.0, state.duration / 3)):
            try:
                lease.renew(api, me)
            except (lease.LeaseError, api_exception(), HTTPException, OSError) as err:
                # The next task's renewal refuses to go on if another run took the lease.
                log.error("cluster lease renewal failed: %s", err)

    renewer = threading.Thread(target=keep, name="slipway-lease-renewal", daemon=True)
    renewer.start()
    try:
        yield state
    finally:
        stop.set()
        renewer.join(10)


def holds_cluster_lease(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a task's function (under ``@task``) that changes the cluster."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with keep_cluster_lease():
            return fn(*args, **kwargs)

    return wrapper
