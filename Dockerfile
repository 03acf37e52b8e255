# The Airflow image docker-compose.yaml runs: the official Airflow image of the version pinned in
# constraints.txt, with Slipway installed against constraints.txt, plus kubectl (gitops
# rendering with `kubectl kustomize`) and etcd's tools (etcdctl, etcdutl and etcd for the
# snapshot, restore drill and defragmentation steps) in /usr/local/bin, the platform
# connection's default `etcd_bin_dir`.
#
# The tools are copied from the projects' own release images, pinned by version below; pin them
# by digest too by passing e.g. --build-arg KUBECTL_IMAGE=registry.k8s.io/kubectl:v1.37.2@sha256:...
# This project's machines have no Docker engine: the image has never been built here. The
# paths it relies on are those of the upstream Dockerfiles (kubernetes build/server-image/kubectl:
# /bin/kubectl; etcd Dockerfile-release: /usr/local/bin/etcd*).

# kubectl of the newest Kubernetes minor the local kit knows (it talks to one minor either side);
# etcd tools of the newest etcd minor it knows (a snapshot restores with tools at least as new).
ARG KUBECTL_IMAGE=registry.k8s.io/kubectl:v1.37.2
ARG ETCD_IMAGE=gcr.io/etcd-development/etcd:v3.7.3

FROM ${KUBECTL_IMAGE} AS kubectl
FROM ${ETCD_IMAGE} AS etcd

FROM apache/airflow:3.3.2-python3.11

COPY --from=kubectl /bin/kubectl /usr/local/bin/kubectl
COPY --from=etcd /usr/local/bin/etcd /usr/local/bin/etcdctl /usr/local/bin/etcdutl /usr/local/bin/

# pip builds the package in its source folder: it must belong to the airflow user.
USER root
RUN install -d -o 50000 -g 0 /opt/slipway
# The official image installs Python packages as the airflow user (uid 50000, group 0).
USER 50000:0
WORKDIR /opt/slipway
COPY --chown=50000:0 requirements.txt constraints.txt pyproject.toml ./
COPY --chown=50000:0 include ./include
# Runtime pins only (the test and lint tools stay out of the image). requirements.txt pins
# apache-airflow at this image's version, so pip leaves Airflow alone; -c keeps every shared
# dependency at the version the test suite ran with.
RUN grep -v -E '^(pytest|ruff|mypy|types-)' requirements.txt > /tmp/runtime-requirements.txt \
    && pip install --no-cache-dir -c constraints.txt -r /tmp/runtime-requirements.txt . \
    && rm -rf /tmp/runtime-requirements.txt build include/*.egg-info \
    && kubectl version --client=true \
    && etcd --version && etcdctl version && etcdutl version \
    && python -c "import slipway.platform, airflow.providers.celery.executors.celery_executor"

# Each container's own working folder (logs, reports): group 0 may write, so the image also runs
# under another uid with group 0. docker-compose.yaml puts a named volume here on each worker.
RUN mkdir -p /opt/airflow/work/logs /opt/airflow/work/reports /opt/airflow/auth \
    && chmod -R g+rwX /opt/airflow/work /opt/airflow/auth

WORKDIR /opt/airflow
