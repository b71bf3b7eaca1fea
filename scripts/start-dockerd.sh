#!/usr/bin/env bash
# Make a Docker daemon available for the container tests on a bare Debian machine
# (what CI here is): install docker.io and debootstrap from Debian when missing, start
# dockerd in the background when none answers, and wait (bounded) until it does.
#
# Usage: scripts/start-dockerd.sh          start (no-op when a daemon already answers)
#        scripts/start-dockerd.sh --stop   stop the daemon this script started
# Exit status 0: `docker info` works. Otherwise non-zero with the reason on stderr
# (callers such as CI may then skip the container tests).
# Environment: DOCKERD_LOG (default build/dockerd/dockerd.log), DOCKERD_TIMEOUT (s, default 60).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$REPO/build/dockerd"
PIDFILE="$STATE/dockerd.pid"
LOG="${DOCKERD_LOG:-$STATE/dockerd.log}"
TIMEOUT="${DOCKERD_TIMEOUT:-60}"

log() { printf 'start-dockerd: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

answers() { docker info >/dev/null 2>&1; }

if [[ "${1:-}" == "--stop" ]]; then
    if [[ -f "$PIDFILE" ]]; then
        pid="$(cat "$PIDFILE")"
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 1 "$TIMEOUT"); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 1
            done
        fi
        rm -f "$PIDFILE"
        log "stopped dockerd ($pid)"
    fi
    exit 0
fi

if command -v docker >/dev/null 2>&1 && answers; then
    log "a Docker daemon already answers"
    exit 0
fi

[[ "$(id -u)" -eq 0 ]] || die "no Docker daemon answers, and starting one needs root"

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]} > 0)); then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi

mkdir -p "$STATE"
log "starting dockerd (log: $LOG)"
nohup dockerd >"$LOG" 2>&1 &
echo "$!" >"$PIDFILE"

deadline=$((SECONDS + TIMEOUT))
until answers; do
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        tail -n 20 "$LOG" >&2 || true
        die "dockerd exited"
    fi
    if ((SECONDS >= deadline)); then
        tail -n 20 "$LOG" >&2 || true
        die "dockerd did not answer within ${TIMEOUT}s"
    fi
    sleep 1
done
log "dockerd is up: $(docker info --format '{{.ServerVersion}} {{.Driver}}')"
