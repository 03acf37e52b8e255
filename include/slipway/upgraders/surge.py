"""Twin-node upgrades on the local cluster: surge and blue-green (§1.2, §2.1 max surge).

Both add a *green* twin per *blue* node at the target version before the blue one is
drained, so capacity never dips; they differ in when the blue node goes:

- :class:`LocalSurgeUpgrader` retires (deletes) a batch's blue nodes as soon as the batch
  passed validation;
- :class:`LocalBlueGreenUpgrader` keeps every drained blue node — cordoned, empty, at the
  old version — until the whole cluster passed validation (:meth:`retire_blue`), because it
  is the fast way back (:meth:`switch_back`).

The way back is PDB-safe for both: the blue node is uncordoned first, so the room is back
before anything moves, then its green twin is drained through the Eviction API and only
then removed. The nodes' annotations are the state (``slipway.dev/retire`` on a blue node
that has been replaced, ``slipway.dev/replaces`` on its green twin), so every step is
idempotent and a cleared task picks up where the last try stopped.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slipway.kube import nodes as kube_nodes
from slipway.kube.drain import DrainOptions, drain_node
from slipway.localcluster.nodes import simulated_node
from slipway.upgraders.nodes import REPLACES, RETIRE, SIMULATE_LABEL, NodeStepResult, _v

NOT_FOUND = 404
# Who drains a green node on the way back; the blue node's cordon is Slipway's own.
WAY_BACK = "slipway-way-back"
# The way back moves pods that are already running on the green node: emptyDir data there
# is scratch created since the switch, and bare pods were never moved by Slipway.
WAY_BACK_DRAIN = DrainOptions(delete_emptydir_data=True)


class LocalSurgeUpgrader:
    """A green twin per upgraded node (max surge); blue nodes retired after the batch passed."""

    name = "surge"

    def __init__(self, admin_api: client.ApiClient, way_back: DrainOptions = WAY_BACK_DRAIN) -> None:
        self.api = admin_api
        self.core = client.CoreV1Api(admin_api)
        self.way_back = way_back

    @staticmethod
    def replacement_name(node: str, version: str) -> str:
        return f"{node}-v{version.replace('.', '-')}"

    def prepare_batch(self, nodes: list[str], version: str) -> list[str]:
        added = []
        for node in nodes:
            name = self.replacement_name(node, version)
            try:
                self.core.read_node(name)
                continue  # already joined on an earlier try
            except ApiException as err:
                if err.status != NOT_FOUND:
                    raise
            old = self.core.read_node(node)
            self.core.create_node(self._replacement(old, name, version))
            added.append(name)
        return added

    def _replacement(self, old: client.V1Node, name: str, version: str) -> dict[str, Any]:
        labels = dict(old.metadata.labels or {}) | {"kubernetes.io/hostname": name}
        labels.pop(SIMULATE_LABEL, None)
        resources = {k: str(v) for k, v in (old.status.allocatable or {}).items()}
        taints = [t.to_dict() for t in (old.spec.taints or []) if t.key != "node.kubernetes.io/unschedulable"]
        return simulated_node(name, labels, taints, resources, version, {REPLACES: old.metadata.name})

    def _kept(self) -> tuple[list[client.V1Node], dict[str, client.V1Node]]:
        """The kept blue nodes and every green twin, from one listing of the nodes."""
        nodes = self.core.list_node().items
        kept = sorted(
            (n for n in nodes if (n.metadata.annotations or {}).get(RETIRE)), key=lambda n: n.metadata.name
        )
        twins = {
            n.metadata.annotations[REPLACES]: n for n in nodes if (n.metadata.annotations or {}).get(REPLACES)
        }
        return kept, twins

    def _twins(self) -> dict[str, client.V1Node]:
        """blue node name → its green twin."""
        return self._kept()[1]

    def nodes_to_wait_for(self, nodes: list[str]) -> list[str]:
        twins = self._twins()
        return [twins[n].metadata.name for n in nodes if n in twins]

    def upgrade_node(self, node: str, version: str) -> NodeStepResult:
        # The drained blue node stays (cordoned) until validation passes: it is the way back.
        self.core.patch_node(node, {"metadata": {"annotations": {RETIRE: "true"}}})
        return NodeStepResult(node, "replaced", _v(version), self.replacement_name(node, version))

    def finalize_batch(self, nodes: list[str]) -> list[str]:
        return [node for node in nodes if self._delete(node)]

    def rollback_node(self, node: str, version: str) -> NodeStepResult:
        twin = self._twins().get(node)
        green = self._back_to_blue(node, twin.metadata.name if twin else None)
        return NodeStepResult(node, "rolled-back", _v(version), f"removed green node {green or 'none'}")

    def _back_to_blue(self, blue: str, green: str | None) -> str | None:
        """Uncordon ``blue`` (room first), drain ``green`` by eviction, remove it, unmark ``blue``."""
        self._uncordon_blue(blue)
        if green is not None:
            drain_node(self.api, green, self.way_back, run_id=WAY_BACK)
            self._delete(green)
        self.core.patch_node(blue, {"metadata": {"annotations": {RETIRE: None}}})
        return green

    def _uncordon_blue(self, blue: str, current: client.V1Node | None = None) -> None:
        # Slipway cordoned it (whichever run's try did); an operator's own cordon stays.
        node = current or self.core.read_node(blue)
        if kube_nodes.cordon_owner(node) != kube_nodes.EXTERNAL_CORDON:
            kube_nodes.uncordon(self.api, blue, WAY_BACK, force=True)

    def _delete(self, node: str) -> bool:
        try:
            self.core.delete_node(node)
            return True
        except ApiException as err:
            if err.status != NOT_FOUND:
                raise
            return False


class LocalBlueGreenUpgrader(LocalSurgeUpgrader):
    """Blue nodes kept until the whole cluster is validated; switched back to on failure."""

    name = "blue-green"

    def finalize_batch(self, nodes: list[str]) -> list[str]:
        return []  # the blue nodes are the way back until the cluster-wide validation

    def kept_blue(self) -> list[str]:
        return [n.metadata.name for n in self._kept()[0]]

    def retire_blue(self, target: str) -> list[str]:
        """Remove every kept blue node whose green twin is Ready at ``target``; the names removed.
        A blue node whose twin is not (yet) Ready at the target stays: it is still the way back."""
        kept, twins = self._kept()
        removed = []
        for blue in kept:
            twin = twins.get(blue.metadata.name)
            if twin is None:
                continue
            at_target = kube_nodes.kubelet_version(twin) == target.removeprefix("v")
            if kube_nodes.node_ready(twin) and at_target and self._delete(blue.metadata.name):
                removed.append(blue.metadata.name)
        return removed

    def switch_back(self) -> list[str]:
        """Every workload back on blue nodes: all blue nodes uncordoned first, then each green
        twin drained through the Eviction API and removed. Returns the blue nodes restored.

        :raises slipway.kube.drain.DrainBlocked: a green node could not be drained in time
            (its blue twin is already uncordoned, so nothing is short of room; retry).
        """
        kept, twins = self._kept()
        for blue in kept:
            self._uncordon_blue(blue.metadata.name, blue)
        for blue in kept:
            twin = twins.get(blue.metadata.name)
            self._back_to_blue(blue.metadata.name, twin.metadata.name if twin else None)
        return [n.metadata.name for n in kept]
