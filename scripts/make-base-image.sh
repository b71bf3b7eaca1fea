#!/usr/bin/env bash
# Build a minimal Debian bookworm base image with python3 (3.11) and python3-venv
# without pulling anything from a container registry: debootstrap a root file
# system from the Debian mirror this machine already uses, then `docker import` it.
#
# Usage: scripts/make-base-image.sh [IMAGE]      (default kvcluster-base:bookworm)
# Environment:
#   DEBIAN_MIRROR  mirror URL (default: the first Debian URI of /etc/apt/sources*,
#                  else http://deb.debian.org/debian)
#   SUITE          Debian suite (default bookworm)
#   FORCE=1        rebuild even when the image already exists
#
# Needs root, debootstrap and a running Docker daemon. The image is the `BASE_IMAGE`
# build argument of the project's Dockerfile:
#   docker build --build-arg BASE_IMAGE=kvcluster-base:bookworm -t kvcluster:dev .
set -euo pipefail

IMAGE="${1:-kvcluster-base:bookworm}"
SUITE="${SUITE:-bookworm}"
FORCE="${FORCE:-0}"
PACKAGES="python3,python3-venv,ca-certificates"

log() { printf 'make-base-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

detect_mirror() {
    local files=() f uri
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] && files+=("$f")
    done
    if ((${#files[@]} > 0)); then
        # deb822 "URIs: http://.../debian" or one-line "deb http://.../debian bookworm main";
        # skip the security archive, which has no full suite.
        uri="$(grep -hoE '(^URIs:[[:space:]]*|^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[a-z]+://[^[:space:]]+/debian/?([[:space:]]|$)' \
            "${files[@]}" 2>/dev/null | grep -oE '[a-z]+://[^[:space:]]+' | grep -v -- '-security' | head -n 1 || true)"
        if [[ -n "$uri" ]]; then
            printf '%s\n' "${uri%/}"
            return
        fi
    fi
    printf '%s\n' "http://deb.debian.org/debian"
}

[[ "$(id -u)" -eq 0 ]] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install -y debootstrap)"
command -v docker >/dev/null || die "docker CLI is not installed"
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable"

if [[ "$FORCE" != "1" ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already exists (FORCE=1 rebuilds it)"
    exit 0
fi

MIRROR="${DEBIAN_MIRROR:-$(detect_mirror)}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
keyring_args=()
[[ -f "$KEYRING" ]] && keyring_args=("--keyring=$KEYRING")

WORK="$(mktemp -d "${TMPDIR:-/tmp}/kvcluster-base.XXXXXX")"
cleanup() { rm -rf -- "$WORK"; }
trap cleanup EXIT
ROOTFS="$WORK/rootfs"

log "debootstrap $SUITE from $MIRROR (packages: $PACKAGES)"
debootstrap --variant=minbase --include="$PACKAGES" "${keyring_args[@]}" \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 40 "$WORK/debootstrap.log" >&2
    die "debootstrap failed"
}

# Trim what a container never needs: package caches, docs, man pages, locales.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* \
    "$ROOTFS"/var/log/*.log "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/debootstrap
find "$ROOTFS"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
# Point apt at the same mirror, in case someone extends the image.
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$ROOTFS/etc/apt/sources.list"

"$ROOTFS/usr/bin/python3" --version >/dev/null 2>&1 || chroot "$ROOTFS" python3 --version >/dev/null \
    || die "python3 does not run in the new root file system"

log "importing as $IMAGE"
tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap $SUITE minbase + $PACKAGES" \
    - "$IMAGE" >/dev/null
docker run --rm "$IMAGE" python3 -c 'import ssl, sqlite3, venv, sys; print(sys.version)' >&2
log "done: $(docker image inspect --format '{{.Size}}' "$IMAGE") bytes"
