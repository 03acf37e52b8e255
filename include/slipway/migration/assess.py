"""Assessment: what the selected namespaces hold, what each workload depends on, and what cannot
move and why. Pure functions over plain object dicts; :mod:`slipway.migration.clusters` reads them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from slipway.apiremovals import removal_of
from slipway.migration.objects import CRD, KINDS, Kind, Obj, copy_order, generated, key

POD_OWNERS = ("Deployment", "StatefulSet", "DaemonSet", "Pod")


def template_of(obj: Obj) -> Obj:
    """The pod template (``metadata`` + ``spec``) of a workload or bare pod."""
    if obj["kind"] == "Pod":
        return {"metadata": obj["metadata"], "spec": obj.get("spec", {})}
    return dict(obj.get("spec", {}).get("template", {}))


def selector_matches(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (``matchLabels`` + ``matchExpressions``) against labels; empty matches all."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        k, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(k) not in values:
            return False
        if op == "NotIn" and k in labels and labels[k] in values:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def _containers(spec: Obj) -> list[Obj]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def references(template: Obj) -> dict[str, set[str]]:
    """ConfigMaps, Secrets, PVCs and the ServiceAccount a pod template names (optional ones included)."""
    spec = template.get("spec", {})
    refs: dict[str, set[str]] = {"ConfigMap": set(), "Secret": set(), "PersistentVolumeClaim": set()}
    for volume in spec.get("volumes") or []:
        if "configMap" in volume:
            refs["ConfigMap"].add(volume["configMap"]["name"])
        if "secret" in volume:
            refs["Secret"].add(volume["secret"]["secretName"])
        if "persistentVolumeClaim" in volume:
            refs["PersistentVolumeClaim"].add(volume["persistentVolumeClaim"]["claimName"])
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "configMap" in source:
                refs["ConfigMap"].add(source["configMap"]["name"])
            if "secret" in source:
                refs["Secret"].add(source["secret"]["name"])
    for container in _containers(spec):
        for env_from in container.get("envFrom") or []:
            if "configMapRef" in env_from:
                refs["ConfigMap"].add(env_from["configMapRef"]["name"])
            if "secretRef" in env_from:
                refs["Secret"].add(env_from["secretRef"]["name"])
        for env in container.get("env") or []:
            value_from = env.get("valueFrom") or {}
            if "configMapKeyRef" in value_from:
                refs["ConfigMap"].add(value_from["configMapKeyRef"]["name"])
            if "secretKeyRef" in value_from:
                refs["Secret"].add(value_from["secretKeyRef"]["name"])
    for pull in spec.get("imagePullSecrets") or []:
        refs["Secret"].add(pull["name"])
    refs["ServiceAccount"] = {spec.get("serviceAccountName") or "default"}
    return refs


def _service_selects(service: Obj, labels: dict[str, str]) -> bool:
    selector = service.get("spec", {}).get("selector") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def dependencies(workload: Obj, objects: list[Obj]) -> dict[str, list[str]]:
    """What one workload needs on the target: named references and the objects selecting it."""
    namespace = workload["metadata"]["namespace"]
    template = template_of(workload)
    labels = (template.get("metadata") or {}).get("labels") or {}
    same_ns = [o for o in objects if o["metadata"].get("namespace") == namespace]
    deps = {kind: sorted(names) for kind, names in references(template).items()}
    claims = [t["metadata"]["name"] for t in workload.get("spec", {}).get("volumeClaimTemplates") or []]
    deps["PersistentVolumeClaim"] = sorted(set(deps["PersistentVolumeClaim"]) | set(claims))
    deps["Service"] = sorted(
        o["metadata"]["name"] for o in same_ns if o["kind"] == "Service" and _service_selects(o, labels)
    )
    deps["PodDisruptionBudget"] = sorted(
        o["metadata"]["name"]
        for o in same_ns
        if o["kind"] == "PodDisruptionBudget" and selector_matches(o.get("spec", {}).get("selector"), labels)
    )
    deps["NetworkPolicy"] = sorted(
        o["metadata"]["name"]
        for o in same_ns
        if o["kind"] == "NetworkPolicy" and selector_matches(o.get("spec", {}).get("podSelector", {}), labels)
    )
    deps["HorizontalPodAutoscaler"] = sorted(
        o["metadata"]["name"]
        for o in same_ns
        if o["kind"] == "HorizontalPodAutoscaler"
        and o.get("spec", {}).get("scaleTargetRef", {}).get("kind") == workload["kind"]
        and o["spec"]["scaleTargetRef"].get("name") == workload["metadata"]["name"]
    )
    return {kind: names for kind, names in deps.items() if names}


def _missing(deps: dict[str, list[str]], present: set[str], namespace: str) -> list[str]:
    """Named references absent from the source (the target would get a workload that cannot start)."""
    out = []
    for kind in ("ConfigMap", "Secret", "ServiceAccount"):
        for name in deps.get(kind, []):
            # Every namespace gets its own "default" ServiceAccount from the target's controllers.
            if f"{kind}/{namespace}/{name}" not in present and (kind, name) != ("ServiceAccount", "default"):
                out.append(f"{kind}/{namespace}/{name}")
    return out


def blockers_of(workload: Obj) -> list[str]:
    """Why a workload cannot move in this slice (empty when it can)."""
    template = template_of(workload)
    spec = template.get("spec", {})
    reasons = []
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            reasons.append(f"volume {volume['name']} is a hostPath: its data lives on a source node")
        if "persistentVolumeClaim" in volume:
            reasons.append(
                f"volume {volume['name']} is PVC {volume['persistentVolumeClaim']['claimName']}: "
                "the volume data path (rclone) is not built yet"
            )
    for claim in workload.get("spec", {}).get("volumeClaimTemplates") or []:
        reasons.append(
            f"volumeClaimTemplate {claim['metadata']['name']}: the volume data path (rclone) is not built yet"
        )
    for container in _containers(spec):
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                reasons.append(f"container {container['name']} binds host port {port['hostPort']}")
    if spec.get("nodeName"):
        reasons.append(f"pinned to source node {spec['nodeName']} (spec.nodeName)")
    if workload["kind"] == "DaemonSet":
        reasons.append("a DaemonSet follows the target's nodes: not copied in this slice")
    if workload["kind"] == "Pod":
        reasons.append("a bare Pod: nothing recreates it on the target; move its manifest by hand")
    return reasons


def definition_blockers(crd: Obj) -> list[str]:
    """Why a CustomResourceDefinition cannot be copied as it is (empty when it can)."""
    conversion = crd.get("spec", {}).get("conversion") or {}
    if conversion.get("strategy") == "Webhook":
        return [
            "its conversion webhook is a service of the source cluster: install the operator that "
            "serves it on the target first"
        ]
    return []


def api_problem(api_version: str, kind: str, served: set[str]) -> str | None:
    """Why the target cannot take ``api_version``/``kind`` (None when it serves it).

    ``served`` holds the target's group versions (``apps/v1``, ``v1``) from discovery; a removed
    API is explained with the release that removed it and what replaces it.
    """
    if api_version in served:
        return None
    removal = removal_of(api_version, kind)
    if removal is None:
        return f"the target does not serve {api_version}"
    if removal.replacement and removal.replacement in served:
        return (
            f"{api_version} {kind} was removed in {removal.removed_in}; rewrite it as {removal.replacement} "
            "before moving it"
        )
    return f"{api_version} {kind} was removed in {removal.removed_in} and the target serves no replacement"


@dataclass
class Assessment:
    """Everything the run knows before it changes anything; JSON-shaped via :meth:`to_dict`."""

    namespaces: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    objects: list[str] = field(default_factory=list)  # what would be copied, in copy order
    dependencies: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    blockers: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    source_version: str = ""
    target_version: str = ""

    @property
    def movable(self) -> bool:
        return not self.blockers

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespaces": self.namespaces,
            "source_version": self.source_version,
            "target_version": self.target_version,
            "counts": self.counts,
            "objects": self.objects,
            "dependencies": self.dependencies,
            "missing_references": self.missing,
            "cannot_move": self.blockers,
            "skipped": self.skipped,
            "movable": self.movable,
        }


def assess(
    namespaces: list[Obj],
    objects: list[Obj],
    served: set[str],
    *,
    source_version: str = "",
    target_version: str = "",
    custom: Sequence[Kind] = (),
) -> Assessment:
    """Judge an inventory: ``namespaces`` and ``objects`` as read from the source, ``served`` the
    target's group versions, ``custom`` the custom kinds whose definitions (CRDs, in ``objects``)
    the migration copies first."""
    result = Assessment(
        namespaces=sorted(n["metadata"]["name"] for n in namespaces),
        source_version=source_version,
        target_version=target_version,
    )
    copied = {(k.api_version, k.kind) for k in (*KINDS, *custom, CRD) if k.copied} | {("v1", "Namespace")}
    served = served | {k.api_version for k in custom}  # their definitions go first
    present = {key(o) for o in objects}
    for obj in [*namespaces, *objects]:
        name = key(obj)
        why_generated = generated(obj)
        if why_generated:
            if obj["kind"] != "Pod":  # controller-owned pods are noise in the report
                result.skipped[name] = why_generated
            continue
        result.counts[obj["kind"]] = result.counts.get(obj["kind"], 0) + 1
        reasons: list[str] = []
        if obj["kind"] in POD_OWNERS:
            deps = dependencies(obj, objects)
            result.dependencies[name] = deps
            missing = _missing(deps, present, obj["metadata"]["namespace"])
            if missing:
                result.missing[name] = missing
            reasons += blockers_of(obj)
        if obj["kind"] == "PersistentVolumeClaim":
            reasons.append("its data needs the volume data path (rclone), not built yet")
        if (obj["apiVersion"], obj["kind"]) == (CRD.api_version, CRD.kind):
            reasons += definition_blockers(obj)
        problem = api_problem(obj["apiVersion"], obj["kind"], served)
        if problem:
            reasons.append(problem)
        if reasons:
            result.blockers[name] = reasons
        elif (obj["apiVersion"], obj["kind"]) in copied:
            result.objects.append(name)
    order = copy_order(list(custom))
    result.objects.sort(key=lambda name: order.index(name.split("/")[0]))  # stable: copy order
    return result


def markdown(assessment: Assessment) -> str:
    """The assessment for people: what moves, what each workload needs, what cannot move."""
    a = assessment
    lines = [
        "# Migration assessment",
        "",
        f"Source {a.source_version or '?'} → target {a.target_version or '?'}; "
        f"namespaces: {', '.join(a.namespaces)}.",
        "",
        "| kind | objects |",
        "|---|---|",
        *[f"| {kind} | {count} |" for kind, count in sorted(a.counts.items())],
        "",
        f"**{len(a.objects)} objects would be copied.** "
        + ("Nothing blocks the migration." if a.movable else f"**{len(a.blockers)} cannot move** (below)."),
        "",
    ]
    if a.blockers:
        lines += ["## Cannot move", ""]
        lines += [f"- `{name}`: {'; '.join(reasons)}" for name, reasons in sorted(a.blockers.items())]
        lines.append("")
    lines += ["## Dependencies (from the pod templates)", ""]
    for name, deps in sorted(a.dependencies.items()):
        needs = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in deps.items()) or "nothing"
        lines.append(f"- `{name}` needs {needs}")
    if a.missing:
        lines += ["", "## Referenced but absent on the source", ""]
        lines += [f"- `{name}`: {', '.join(refs)}" for name, refs in sorted(a.missing.items())]
    if a.skipped:
        lines += ["", "## Not copied (the cluster's own)", ""]
        lines += [f"- `{name}`: {why}" for name, why in sorted(a.skipped.items())]
    return "\n".join(lines) + "\n"
