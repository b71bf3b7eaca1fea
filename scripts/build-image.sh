#!/usr/bin/env bash
# Build the kvcluster container image (node and operator in one image).
#
# Usage: scripts/build-image.sh [--local-base] [--wheels online|offline|auto] [--tag IMAGE]
#   --local-base   build the base with scripts/make-base-image.sh (debootstrap, no registry)
#                  and use it (BASE_IMAGE=kvcluster-base:bookworm)
#   --wheels MODE  online: pip inside the build fetches from the package index;
#                  offline: the host builds every wheel into build/wheels/ and the image
#                  build uses no network (needs the host Python's minor version to be
#                  the base image's); auto (default): offline when the versions match.
#   --tag IMAGE    image name (default kvcluster:dev, or $IMAGE)
# Environment: BASE_IMAGE (default python:3.11-slim), PYTHON (host interpreter for
# offline wheels: <repo>/.venv/bin/python, else python3), DOCKER (default docker).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${IMAGE:-kvcluster:dev}"
BASE_IMAGE="${BASE_IMAGE:-python:3.11-slim}"
WHEELS="${WHEELS:-auto}"
DOCKER="${DOCKER:-docker}"
LOCAL_BASE=0

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

while (($# > 0)); do
    case "$1" in
        --local-base) LOCAL_BASE=1 ;;
        --wheels) WHEELS="${2:?--wheels needs a value}"; shift ;;
        --tag) IMAGE="${2:?--tag needs a value}"; shift ;;
        -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
    shift
done

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON="python3"; fi
fi

"$DOCKER" info >/dev/null 2>&1 || die "the Docker daemon is not reachable"

if ((LOCAL_BASE)); then
    BASE_IMAGE="kvcluster-base:bookworm"
    "$REPO/scripts/make-base-image.sh" "$BASE_IMAGE"
fi

if [[ "$WHEELS" == "auto" ]]; then
    if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        "$DOCKER" pull "$BASE_IMAGE" >&2 || die "cannot pull $BASE_IMAGE (try --local-base)"
    fi
    base_py="$("$DOCKER" run --rm --entrypoint python3 "$BASE_IMAGE" \
        -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    host_py="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [[ "$base_py" == "$host_py" ]]; then WHEELS=offline; else WHEELS=online; fi
    log "base Python $base_py, host Python $host_py: wheels $WHEELS"
fi

case "$WHEELS" in
    offline)
        # The dependencies and the build backend, never the project itself: the
        # wheelhouse then stays byte-identical across source changes, and so does the
        # image's dependency layer.
        rm -rf "$REPO/build/wheels"
        mkdir -p "$REPO/build/wheels"
        "$PYTHON" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
            "$REPO/pyproject.toml" >"$REPO/build/requirements.txt"
        log "building wheels on the host into build/wheels"
        "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$REPO/build/wheels" \
            --requirement "$REPO/build/requirements.txt" 'setuptools>=68' wheel >&2 || die "pip wheel failed"
        ;;
    online)
        # An empty wheelhouse: the Dockerfile ignores it in online mode.
        rm -rf "$REPO/build/wheels"
        ;;
    *) die "--wheels must be online, offline or auto, not '$WHEELS'" ;;
esac

version="$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$REPO/pyproject.toml")"
revision="$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

# BuildKit needs the buildx plugin on current Docker CLIs; the Dockerfile also builds
# with the classic builder, so use that where buildx is missing (and have it remove
# the containers of failed steps too).
extra=()
if ! "$DOCKER" buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
    extra+=(--force-rm)
fi

log "building $IMAGE from $BASE_IMAGE"
"$DOCKER" build \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --build-arg "WHEELS=$WHEELS" \
    --build-arg "VERSION=$version" \
    --build-arg "REVISION=$revision" \
    --build-arg "CREATED=$created" \
    --tag "$IMAGE" \
    "${extra[@]}" \
    "$REPO" >&2
log "built $IMAGE ($("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE") bytes)"
