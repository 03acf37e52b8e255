"""Where the plugin serves run reports in the Airflow api-server: one place for the plugin
that mounts it and the texts that link to it (a DAG file imports this; it imports nothing)."""

URL_PREFIX = "/slipway"


def report_path(dag_id: str, run_id: str) -> str:
    """The report view's path; the ids as they are (the caller encodes them for a URL)."""
    return f"{URL_PREFIX}/reports/{dag_id}/{run_id}"
