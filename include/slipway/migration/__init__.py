"""Cluster-to-cluster migration (issue 12, first slice): assessment, configuration and stateless
workloads copied to another cluster through server-side apply, proven by per-object checksums.

Core code: no Airflow imports. Velero, rclone (volume data) and the traffic switch are not built yet.
"""
