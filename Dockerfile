# One image for both the storage node (`kvcluster node`, the default) and the
# operator (`kvcluster-operator`, set as the container command by the chart).
#
#   docker build -t kvcluster:dev .
#   docker build --build-arg BASE_IMAGE=kvcluster-base:bookworm -t kvcluster:dev .   # no registry
#   scripts/build-image.sh                                                           # does the above
#
# BASE_IMAGE must provide `python3` (>= 3.11) with the venv module: python:3.11-slim
# (Python under /usr/local) and Debian bookworm with python3-venv (under /usr) both work.
# Builder and final stage use the same base, so the venv's interpreter link stays valid.
#
# WHEELS=online   pip resolves dependencies from the package index during the build.
# WHEELS=offline  the build never touches the network: it installs only from the
#                 wheelhouse build/wheels/ in the build context (the dependencies plus
#                 setuptools and wheel, made on the host by scripts/build-image.sh).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
ARG WHEELS=online
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN case "$WHEELS" in online|offline) ;; *) echo "WHEELS must be online or offline, not '$WHEELS'" >&2; exit 2 ;; esac; \
    python3 -m venv /opt/kvcluster
# Dependencies first: this layer stays cached until pyproject.toml or the wheelhouse
# changes. `buil[d]` is a glob so that a context without build/ works too; only
# build/wheels/ passes .dockerignore, and it lands in /src/wheels.
COPY pyproject.toml buil[d] /src/
RUN set -eu; \
    /opt/kvcluster/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' >/tmp/requirements.txt; \
    if [ "$WHEELS" = "offline" ]; then set -- --no-index --find-links /src/wheels; else set --; fi; \
    /opt/kvcluster/bin/pip install "$@" --requirement /tmp/requirements.txt
# Then the project itself, as a wheel.
COPY README.md /src/
COPY node /src/node
COPY operator /src/operator
RUN set -eu; \
    if [ "$WHEELS" = "offline" ]; then set -- --no-index --find-links /src/wheels; else set --; fi; \
    /opt/kvcluster/bin/pip wheel "$@" --no-deps --wheel-dir /tmp/dist /src; \
    /opt/kvcluster/bin/pip install --no-index --no-deps /tmp/dist/kvcluster-*.whl; \
    /opt/kvcluster/bin/pip uninstall --yes pip setuptools wheel >/dev/null 2>&1 || true; \
    /opt/kvcluster/bin/python -c 'import kvcluster, kvoperator'

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="kvcluster" \
      org.opencontainers.image.description="Partitioned, replicated, strongly consistent key-value store (node and Kubernetes operator)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.vendor="kvcluster"

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it.
RUN set -eu; \
    groupadd --system --gid 10001 kvcluster; \
    useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin kvcluster; \
    mkdir -p /data; \
    chown 10001:10001 /data; \
    chmod 0750 /data

COPY --from=builder /opt/kvcluster /opt/kvcluster

ENV PATH=/opt/kvcluster/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KVCLUSTER_DATA_DIR=/data \
    KVC_HEALTHCHECK_URL=http://127.0.0.1:7000/healthz

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 7000

# No curl in the image: Python asks the node's /healthz. The operator container
# sets KVC_HEALTHCHECK_URL to kopf's liveness endpoint instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, sys, urllib.request; urllib.request.urlopen(os.environ.get('KVC_HEALTHCHECK_URL', 'http://127.0.0.1:7000/healthz'), timeout=4); sys.exit(0)"]

ENTRYPOINT ["kvcluster"]
CMD ["node"]
