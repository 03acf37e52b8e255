"""Cluster-to-cluster migration (issue 12, first slice): assessment, configuration and stateless
workloads copied to another cluster through server-side apply, proven by per-object checksums,
and the front-door traffic switch (HAProxy weights through its runtime API).

Core code: no Airflow imports. Not built yet: volume data (rclone) and Velero.
"""
