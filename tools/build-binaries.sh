#!/usr/bin/env bash
# Build (or reuse) the pinned Go binaries of the dev/test stack from Go modules, through the module proxy:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, minio, jaeger, helm.
# Versions come from the wrapper modules in tools/{etcd,kube,minio,jaeger,helm}/go.mod (their go.sum pins every checksum).
# Output: ${SGS_CACHE:-~/.cache/sgs}/bin/<name>-<version>/<name>; Go caches under ${SGS_CACHE}/go/.
# Usage: tools/build-binaries.sh [name ...]     (default: all; also `sgs dev build`)
set -euo pipefail

TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${SGS_CACHE:-$HOME/.cache/sgs}"
BIN_ROOT="$CACHE/bin"
LOG_DIR="$CACHE/build-logs"
mkdir -p "$BIN_ROOT" "$LOG_DIR" "$CACHE/go/mod" "$CACHE/go/build"

export GOMODCACHE="$CACHE/go/mod"
export GOCACHE="$CACHE/go/build"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

ALL_NAMES=(etcd minio kube-apiserver kube-controller-manager kube-scheduler kubectl jaeger helm)

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

require_go() {
    if ! command -v go >/dev/null 2>&1; then
        log "ERROR: go is not on PATH (Go >= 1.26 is needed to build etcd v3.6)"; exit 2
    fi
    log "using $(go version)"
}

# The committed go.sum files verify every module; the checksum database is only needed for modules
# missing from them. Where it cannot be reached (sandboxed builders), say so and switch it off.
check_sumdb() {
    if [[ -n "${GOSUMDB:-}" ]]; then return; fi
    if ! curl -fsS --max-time 8 -o /dev/null https://sum.golang.org/latest 2>/dev/null; then
        log "checksum database sum.golang.org unreachable: GOSUMDB=off for this build (go.sum still verifies)"
        export GOSUMDB=off
    fi
}

# module_dir <name>: which wrapper module builds <name>
module_dir() {
    case "$1" in
        etcd) echo etcd ;;
        minio) echo minio ;;
        jaeger) echo jaeger ;;
        helm) echo helm ;;
        kube-apiserver | kube-controller-manager | kube-scheduler | kubectl) echo kube ;;
        *) log "ERROR: unknown binary '$1' (known: ${ALL_NAMES[*]})"; exit 2 ;;
    esac
}

package_of() {
    case "$1" in
        etcd) echo go.etcd.io/etcd/server/v3 ;;
        minio) echo github.com/minio/minio ;;
        jaeger) echo github.com/jaegertracing/jaeger/cmd/jaeger ;;
        helm) echo helm.sh/helm/v3/cmd/helm ;;
        *) echo "k8s.io/kubernetes/cmd/$1" ;;
    esac
}

required_module() {
    case "$(module_dir "$1")" in
        etcd) echo go.etcd.io/etcd/server/v3 ;;
        minio) echo github.com/minio/minio ;;
        jaeger) echo github.com/jaegertracing/jaeger ;;
        helm) echo helm.sh/helm/v3 ;;
        kube) echo k8s.io/kubernetes ;;
    esac
}

# version_of <name>: the pinned version, read from the wrapper's `require` line
version_of() {
    local mod gomod
    mod="$(required_module "$1")"
    gomod="$TOOLS_DIR/$(module_dir "$1")/go.mod"
    awk -v m="$mod" '$1 == "require" && $2 == m {print $3} $1 == m && $2 ~ /^v/ {print $2}' "$gomod" | head -1
}

ldflags_of() {
    local name="$1" version="$2"
    # Without it `jaeger version` and its build_info metric say an empty version.
    if [[ "$name" == jaeger ]]; then echo "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$version"; return; fi
    if [[ "$name" == helm ]]; then helm_ldflags "$version"; return; fi
    if [[ "$(module_dir "$name")" != kube ]]; then echo "-s -w"; return; fi
    local major minor flags="-s -w"
    major="$(echo "$version" | sed -E 's/^v([0-9]+)\..*/\1/')"
    minor="$(echo "$version" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')"
    # Without these, /version answers v0.0.0-master and clients warn about skew.
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=clean"
    done
    echo "$flags"
}

# The flags Helm's own Makefile sets for a release: without them `helm version` says v3.22 "unreleased" and
# `helm lint` / `helm template` assume Kubernetes 1.20 (.Capabilities.KubeVersion) instead of the client-go it has.
helm_ldflags() {
    local version="$1" pkg=helm.sh/helm/v3 client_go minor
    client_go="$(awk '$1 == "k8s.io/client-go" && $2 ~ /^v/ {print $2}' "$TOOLS_DIR/helm/go.mod" | head -1)"
    minor="$(echo "$client_go" | sed -E 's/^v0\.([0-9]+)\..*/\1/')"
    local flags="-s -w -X $pkg/internal/version.version=$version -X $pkg/internal/version.gitTreeState=clean"
    for var in lint/rules.k8sVersion chartutil.k8sVersion; do
        flags+=" -X $pkg/pkg/${var}Major=1 -X $pkg/pkg/${var}Minor=$minor"
    done
    echo "$flags"
}

# A heartbeat so a long, quiet build (module downloads, big packages) still shows it is alive.
start_heartbeat() {
    local name="$1" started="$2" logfile="$3"
    (
        while sleep 60; do
            log "  $name: still building, $(($(date +%s) - started)) s, $(wc -l <"$logfile") packages compiled"
        done
    ) &
    HEARTBEAT_PID=$!
}

stop_heartbeat() {
    if [[ -n "${HEARTBEAT_PID:-}" ]]; then
        kill "$HEARTBEAT_PID" 2>/dev/null || true
        wait "$HEARTBEAT_PID" 2>/dev/null || true
        HEARTBEAT_PID=""
    fi
}
trap stop_heartbeat EXIT

build_one() {
    local name="$1" version out_dir out tmp logfile started elapsed size
    version="$(version_of "$name")"
    if [[ -z "$version" ]]; then log "ERROR: no pinned version for $name in tools/$(module_dir "$name")/go.mod"; exit 2; fi
    out_dir="$BIN_ROOT/$name-$version"
    out="$out_dir/$name"
    if [[ -x "$out" ]]; then
        log "$name $version: cached ($out, $(du -h "$out" | cut -f1))"
        return
    fi
    mkdir -p "$out_dir"
    logfile="$LOG_DIR/$name-$version.log"
    tmp="$out.partial"
    started="$(date +%s)"
    log "$name $version: building (log: $logfile)"
    start_heartbeat "$name" "$started" "$logfile"
    : >"$logfile"
    if ! (cd "$TOOLS_DIR/$(module_dir "$name")" &&
        go build -v -trimpath -tags selinux,notest -ldflags "$(ldflags_of "$name" "$version")" \
            -o "$tmp" "$(package_of "$name")") >>"$logfile" 2>&1; then
        stop_heartbeat
        log "ERROR: building $name $version failed; last lines of $logfile:"
        tail -n 30 "$logfile" >&2
        exit 1
    fi
    stop_heartbeat
    mv "$tmp" "$out"  # only a complete binary ever takes the final name
    elapsed=$(($(date +%s) - started))
    size="$(du -h "$out" | cut -f1)"
    printf 'name=%s\nversion=%s\nbuild_seconds=%s\nsize_bytes=%s\ngo=%s\n' \
        "$name" "$version" "$elapsed" "$(stat -c %s "$out")" "$(go env GOVERSION)" >"$out_dir/BUILD_INFO"
    log "$name $version: built in ${elapsed} s, $size"
}

# Two builds at once (CI + a developer, or two shells) would fight over the same outputs: queue them.
take_lock() {
    exec 9>"$CACHE/build.lock"
    if ! flock -n 9; then
        log "another build holds $CACHE/build.lock; waiting for it"
        flock 9
    fi
}

main() {
    local names=("$@")
    if [[ ${#names[@]} -eq 0 ]]; then names=("${ALL_NAMES[@]}"); fi
    for name in "${names[@]}"; do
        if [[ " ${ALL_NAMES[*]} " != *" $name "* ]]; then
            log "ERROR: unknown binary '$name' (known: ${ALL_NAMES[*]})" >&2
            exit 2
        fi
    done
    require_go
    take_lock
    check_sumdb
    local total_started
    total_started="$(date +%s)"
    local i=0
    for name in "${names[@]}"; do
        i=$((i + 1))
        log "[$i/${#names[@]}] $name"
        build_one "$name"
    done
    log "done in $(($(date +%s) - total_started)) s; binaries under $BIN_ROOT"
}

main "$@"
