"""The ``doc_md`` runbook of every task: what it does, what to check when it fails,
and whether clearing it is safe. On-call engineers read these in the Airflow UI."""

from __future__ import annotations


def runbook(does: str, on_failure: str, clearing: str) -> str:
    return f"**What it does.** {does}\n\n**When it fails.** {on_failure}\n\n**Clearing it.** {clearing}\n"


VALIDATE_REQUEST = runbook(
    "Validates the trigger form against the request model before anything touches the cluster.",
    "The log lists every refused field as `field: reason`. Trigger a new run with corrected values.",
    "Safe, but pointless: the same form gives the same refusal.",
)
COLLECT_INVENTORY = runbook(
    "Reads node versions, pools, readiness and every control-plane component's version.",
    "Check the `kubernetes_default` connection (orchestrator kubeconfig) and that the apiservers answer.",
    "Safe: read-only.",
)
PLAN_UPGRADE = runbook(
    "Computes the hop-by-hop path (control plane one minor at a time, etcd and kubelet catch-up hops) "
    "and the worker batches, and records the performance baseline (apiserver and scheduler p99 from "
    "their own /metrics) that every batch is compared with. One run of k8s_cluster_upgrade executes "
    "one control-plane minor with its etcd hop and then the kubelets: a plan with more hops than that "
    "is refused at the risk gate (event plan-refused) with the run to trigger first, so what runs is "
    "always exactly the plan printed.",
    "The message names the version or field that makes the path impossible (downgrade, unknown target, "
    "a cluster already outside the skew policy). A multi-hop refusal names the next run: trigger it, "
    "then this target again.",
    "Safe: read-only.",
)
CHECK = runbook(
    "Runs one preflight check and records its result (severity, evidence, mitigation). A finding is not "
    "a task failure: the risk assessment weighs it.",
    "A failed task means the check could not run (cluster unreachable, missing permission); the log "
    "names the call.",
    "Safe: read-only (the etcd backup check writes only a snapshot file and a scratch directory).",
)
ASSESS_RISK = runbook(
    "Turns the check results and the plan into the risk matrix (likelihood × impact per risk) and one "
    "decision: proceed, approval, or refuse.",
    "It fails only on malformed inputs from upstream tasks; clear those first.",
    "Safe: pure computation.",
)
WRITE_REPORT = runbook(
    "Writes the JSON, Markdown and HTML reports (the evidence pack) to the artefact store and records "
    "their locations.",
    "Check that the artefact store is writable by the worker: `SLIPWAY_ARTEFACTS_URL` (with the "
    "connection `SLIPWAY_ARTEFACTS_CONN_ID`), or the folder `SLIPWAY_REPORTS_DIR` when it is unset; a "
    "bad setting is named in the log.",
    "Safe: it rewrites the same files.",
)
RISK_GATE = runbook(
    "Routes the run: refuse stops it, approval waits for a human, proceed goes on, dry run ends here.",
    "Read the risk report; a refusal lists the blocker checks.",
    "Safe.",
)
BACKUP_ETCD = runbook(
    "Takes an etcd snapshot and proves it by restoring it into a scratch etcd (revision and key count "
    "must match) before the first destructive step. The snapshot is write-once: its own file per run and "
    "attempt (`etcd-snapshots/<cluster>/<run>/attempt-<n>.db` in the worker's `SLIPWAY_REPORTS_DIR`, "
    "file 0600 in 0700 folders); its sha256 is recorded in the run record at the proof. A proven "
    "snapshot is copied with its checksum to the artefact store (`etcd/<cluster>/<run>/` under "
    "`SLIPWAY_ARTEFACTS_URL`) so a rollback on another worker finds it. Once a backup is proven, the "
    "snapshots of all but the last 5 runs are pruned, locally and in the store "
    "(`SLIPWAY_ETCD_SNAPSHOTS_KEEP`).",
    "The message says which proof step failed. Do not proceed without a proven backup. `changed since it "
    "was proven` or `is missing`: this run's pre-upgrade snapshot was altered or removed; it is never "
    "replaced mid-run, so start a new run (and find out who touched the file).",
    "Safe: a cleared task reuses the snapshot this run already proved when its sha256 still matches, and "
    "refuses otherwise; it never takes a second snapshot mid-upgrade.",
)
UPGRADE_COMPONENT = runbook(
    "Upgrades one control-plane component kind one instance at a time with a health check after each "
    "(etcd leader last; apiservers drained from the load balancer first). A failure is written to the "
    "run record (`control-plane-step-failed`) before the task fails.",
    "The message names the instance and the failed check. The later steps do not run; verification "
    "still runs, reads the failed step from the run record and takes the rollback branch (SEV1 incident).",
    "Safe: instances already at the target version are skipped; a retry that succeeds clears the "
    "failure its first attempt recorded.",
)
CHECK_ETCD_DATA = runbook(
    "After the etcd step: every member's hashkv at one revision must agree, every member must count the "
    "same keys there, none may be behind the proven backup's revision or hold under half its keys. "
    "Transient answers (a compaction half applied, a member restarting) are asked again for up to 60 s; "
    "a difference counts once seen on three looks in a row.",
    "The message names the member that differs. The apiservers are not upgraded; verification takes the "
    "rollback branch, which restores the proven pre-upgrade snapshot (writes made since are lost).",
    "Safe: read-only. Clearing it after the rollback ran checks the restored data.",
)
VERIFY_CONTROL_PLANE = runbook(
    "Runs once every control-plane step ended, also when one failed. Reads the run record for failed "
    "steps and failed etcd data checks, checks every instance reports the target and is healthy, and "
    "checks etcd's data again (hashes, key counts, revision against the proven backup); decides between "
    "the worker phase and rollback. When no step ran (an earlier task failed) it skips both.",
    "Read the verdict in the log (names the instance or the failed step).",
    "Safe: read-only.",
)
ROLLBACK_CONTROL_PLANE = runbook(
    "Declares a SEV1 incident, restores the previous binaries component by component (reverse order), "
    "checks etcd's data after its members went back and, when a data check failed (before or after), "
    "restores the proven etcd snapshot with the revision bump Kubernetes needs: once per run, only after "
    "the file's sha256 matches the digest recorded at the proof (a worker without the file fetches it "
    "from the artefact store and checks it first), and only on a platform that can restore "
    "etcd (elsewhere it stops with `etcd-restore-needed` for a human and the restore plan).",
    "The cluster may be partly rolled back: `slipway-local status` (local) or the component versions in "
    "the log tell which. Fix the cause, then clear this task.",
    "Safe: components already at the old version are skipped; a restore already done in this run (run "
    "record, or every member's revision bumped past the snapshot's) is never done twice.",
)
SELECT_BATCH = runbook(
    "Opens the next batch from what the cluster still needs (nodes not at the target, not quarantined), "
    "only after the previous batch passed and only if it can finish inside the maintenance window. "
    "Before opening it fits the batch's pods onto the nodes that stay schedulable *now* (CPU, memory, "
    "pod slots, selectors, affinity, taints): a batch that does not fit is cut to the nodes that do "
    "(event batch-shrunk), and when no node of it fits the phase ends with no-capacity before anything "
    "is cordoned. It returns the batch's nodes (and adds surge nodes for strategy=surge); an empty batch "
    "ends the phase: the reason (done, paused at the window's end, stopped, no-capacity) is in its "
    "return value and the run record, and every later slot skips.",
    "It refuses when the previous batch did not pass; the run record ConfigMap in slipway-system shows "
    "each batch's state.",
    "Safe: a cleared task returns the batch it already opened.",
)
UPGRADE_ONE_NODE = runbook(
    "Upgrades one node, every step in this one task, each recorded on the node (annotation "
    "`slipway.dev/step`, with the run's id) so the log and `kubectl describe node` show where it is: "
    "pre-drain check (which pods would be evicted, skipped or refused; a PDB that can never allow an "
    "eviction applies the blocked-drain policy: wait, quarantine or rollback) → cordon (recording which "
    "run cordoned it) → drain through the Eviction API (PDBs honoured; grace 300 s, or each pod's own "
    "with -1 as in kubectl; DaemonSets ignored, no force; pods already terminating are awaited) → the "
    "platform's node upgrade (in place, surge replacement, or kubeadm: a pod of the opt-in "
    "`slipway_kubeadm` identity on the node, recorded as step 'upgrading' with the pod in "
    "`slipway.dev/kubeadm-pod`, waited for deferred on the provider's pod trigger, then deleted) → "
    "wait until Ready at the target "
    "kubelet version (deferred to the triggerer, no worker slot held) → uncordon (only a cordon this run "
    "made; a replaced blue node stays cordoned until retired) → post-checks (Ready, target kubelet, no "
    "cordon left), then the step 'done'.",
    "The log says which step failed and why: refused pods (bare pods, emptyDir) are named — allow them in "
    "the form or move them first; a blocked drain groups the pods by what holds them (fix the PDB, or "
    "rerun with the quarantine policy); a node not Ready in time is named. The batch validation then "
    "fails and the slot's rollback returns the batch's nodes to the old version.",
    "Safe: it reads the step this run recorded on the node and goes on from there (a node already 'done' "
    "is a no-op, a half-drained node is drained again, a node already at the target is not upgraded "
    "twice; in step 'upgrading' it waits for the same kubeadm pod again — clearing never kills kubeadm "
    "halfway). An operator's cordon is never taken over; a quarantined node is left alone.",
)
VALIDATE_BATCH = runbook(
    "Soaks the batch: node readiness, every workload back to its desired availability, no pending pods, "
    "the request's health checks (HTTP, Deployment availability); then apiserver (per verb class) and "
    "scheduler p99 during the batch against the run's pre-upgrade baseline, which fails the batch only "
    "with latency_policy=enforce. Records the verdict and the latency figures in the run record.",
    "The task fails with the verdict's problems (also when a check could not conclude); the slot's "
    "rollback task then returns the batch's nodes to the old version and the phase stops.",
    "Safe: it re-evaluates the cluster.",
)
DEFRAGMENT_ETCD = runbook(
    "Defragments etcd before the upgrade, one member at a time, followers first and the leader "
    "last, each only while the whole cluster is healthy and each healthy again before the next. "
    "Records the database size before and after per member.",
    "The message names the member and why (cluster unhealthy before it, or it did not come back). The "
    "backup taken just before is proven; the control plane has not been touched.",
    "Safe: a defragmented member has nothing left to reclaim.",
)
ROLLBACK_BATCH = runbook(
    "Runs only when the batch's validation failed: declares an incident, returns the batch's nodes to the "
    "old version (or removes surge nodes), uncordons what this run cordoned, and records what it did.",
    "The log names each node and action.",
    "Safe: nodes already at the old version are skipped.",
)
FINAL_VERDICT = runbook(
    "Fails the run on purpose when anything was rolled back or refused, so a rolled-back upgrade ends red.",
    "Read the upgrade report named in the log.",
    "Safe.",
)
WORKERS_DONE = runbook(
    "Summarises the worker phase from the cluster: batches passed, nodes remaining, nodes quarantined.",
    "It fails when nodes remain after the last batch slot (trigger the DAG again, it resumes from the "
    "cluster's state), and when a batch was refused for capacity: the message names the pods with "
    "nowhere to go and the nodes cordoned now; free room (resolve quarantined nodes, add nodes or use "
    "strategy=surge) and trigger again.",
    "Safe: read-only apart from the run record.",
)
WORKER_PHASE_ROLLED_BACK = runbook(
    "Fails the worker phase on purpose after a batch was rolled back, so the run ends red.",
    "Read the rollback task's log and the report for the failed validation.",
    "Clearing it only fails again; fix the cause and trigger a new run.",
)
START_PROBE = runbook(
    "Starts the API probe in its own process on this worker (reads and writes at a steady rate through "
    "the load balancer, on kept-alive and on new connections, and against each apiserver directly) and "
    "waits until its baseline is measured. It runs until the end of the run and keeps its state (host, "
    "pid, heartbeat) in the ConfigMap slipway-probe-state-<digest> in slipway-probe.",
    "The task log names the probe's host and pid; its own log is probe/probe.log in the run's working "
    "folder on that host.",
    "Safe: a probe already running for this run, on any worker, is reused; one whose heartbeat stopped "
    "is replaced.",
)
STOP_PROBE = runbook(
    "Asks the API probe to stop, on whichever worker it runs, once everything that changes the cluster "
    "has ended (teardown: it runs even if a step failed), and records requests, failures, disruption "
    "seconds and p99 latency against the baseline: for the control-plane phase, and per path over the "
    "whole run. The probe computes the figures and leaves them in its state ConfigMap.",
    "If no probe ran, or it does not answer within 90 s (its host died), the task fails naming its host, "
    "pid and last heartbeat; the report then has no downtime figures.",
    "Safe: a stopped probe's figures are read again from its state ConfigMap (kept 7 days).",
)
RISK_GATE_REFUSED = runbook(
    "Stops a run the risk assessment refused (a blocker check).",
    "Read the preflight section of the report: each blocker names the object and the mitigation.",
    "Clearing it only fails again; fix the blockers and trigger a new run.",
)
VALIDATE_CLUSTER = runbook(
    "Final smoke checks: every node Ready, every workload available, no pending pods, "
    "control plane healthy, apiserver latency against the pre-upgrade baseline.",
    "The verdict lists each problem with the object.",
    "Safe: read-only.",
)
NOTIFY = runbook(
    "Announces the outcome (verdict, target, rolled-back batches, probe failures, report path) on every "
    "configured channel: the JSON webhook in `slipway_notify`, Slack through `slipway_slack`, e-mail "
    "through `slipway_smtp`; a channel without its connection is skipped, and the task log always has "
    "it. A failed channel fails this task, not the run (the other channels still get the message).",
    "The message names the failed channels and their answers (never a token); check that channel's "
    "connection (webhook: host = URL, password = bearer token; Slack: password = the webhook key; "
    "SMTP: host, port, login, password, extra `to`).",
    "Safe: it re-sends the same message.",
)
ASSESS_MATURITY = runbook(
    "Reads every run record (`slipway-run-*` ConfigMaps in slipway-system) and measures the maturity "
    "of this cluster's upgrades from them: success rate, duration, API downtime and node time out of "
    "service, and which level (manual, scripted, automated, intelligent) every criterion allows, with "
    "the evidence for each. Writes maturity.json and maturity.md under the reports folder.",
    "Check the `kubernetes_default` connection: the orchestrator must be able to list ConfigMaps in "
    "slipway-system (its Role grants it).",
    "Safe: read-only apart from the report files.",
)
RETIRE_BLUE = runbook(
    "Blue-green only (skipped otherwise): after the cluster-wide validation passed, removes every kept "
    "blue node (cordoned, drained, old version) whose green twin is Ready at the target.",
    "It fails naming the blue nodes it kept because their green twin is not Ready at the target; those "
    "are still the way back. Check the green node, then clear the task.",
    "Safe: a removed blue node is not removed twice; a kept one is checked again.",
)
SWITCH_BACK = runbook(
    "Blue-green only (skipped otherwise), when the cluster-wide validation failed or a batch was rolled "
    "back: declares an incident, uncordons every kept blue node first (room before anything moves), then "
    "drains each green node through the Eviction API (PDBs honoured) and removes it, then waits up to 3 min "
    "for every Deployment, StatefulSet and DaemonSet to be available again.",
    "A green node that cannot be drained in time is named with the pods and PDBs holding it; its blue "
    "twin is already schedulable, so nothing is short of room. Workloads still short after the wait are "
    "named: look at their pods. Clear the task to go on.",
    "Safe: the nodes' annotations are the state; a cleared task continues with what is left.",
)
RENDER_DESIRED_STATE = runbook(
    "Renders gitops/overlays/<environment> with `kubectl kustomize` and validates the ConfigMap "
    "slipway-desired-state it declares as an upgrade request (the trigger form's fields).",
    "The message names the overlay and the refused field (or kustomize's own error): fix the commit in "
    "git; nothing was triggered.",
    "Safe: read-only.",
)
COMPARE_DESIRED_STATE = runbook(
    "Compares the desired version with the live control plane and kubelets: in sync, drift (trigger the "
    "upgrade), or an upgrade already queued/running (leave it). A desired version older than the cluster "
    "is refused: a downgrade is an explicit rollback, never a reconcile.",
    "Check the `kubernetes_default` connection; a refusal names the versions.",
    "Safe: read-only.",
)
IN_SYNC = runbook(
    "Marks a reconcile that needs no upgrade (in sync, or an upgrade run is already on its way).",
    "It does not fail.",
    "Safe.",
)
TRIGGER_FROM_GIT = runbook(
    "Triggers k8s_cluster_upgrade with the desired state from git as its request (run id "
    "gitops__<this run>), without waiting for it: that run has its own gates and approval.",
    "Check that k8s_cluster_upgrade is not paused and parses; its first task re-validates the request.",
    "Safe: the run id is fixed per reconcile run, so a cleared task does not start a second upgrade.",
)
TAKE_CLUSTER_LEASE = runbook(
    "Takes the cluster Lease slipway-system/slipway-upgrade for this run (holder `<dag_id>/<run_id>`, "
    "120 s, renewed by every task that changes the cluster) before anything changes it: one upgrade per "
    "cluster, whichever DAG, schedule or GitOps reconcile started it. Every later task waits for it.",
    "`cluster lease ... is held by <dag>/<run>, live until <time>`: another run is changing this cluster "
    "and this run changed nothing. Let that run finish (or, if its Airflow run is gone, wait until the "
    "time shown: an unrenewed lease expires), then trigger again. A task later in the run failing with "
    "the same line lost the lease to another run and stopped before writing.",
    "Safe: taking a lease this run already holds only renews it; another run's live lease is never taken.",
)
RELEASE_CLUSTER_LEASE = runbook(
    "Teardown of take_cluster_lease: clears the lease's holder when this run holds it, also when the run "
    "failed, so the next run need not wait for it to expire.",
    "The lease is then left to expire on its own (120 s after the last renewal); nothing else depends on "
    "this task. A lease another run took over is left alone.",
    "Safe: releasing twice is a no-op, and another run's lease is never released.",
)
