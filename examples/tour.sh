#!/usr/bin/env bash
# The README's cluster tour, runnable from a checkout after README command 1: the dev stack (PostgreSQL, NATS,
# MinIO, a Kubernetes control plane, Slurm, Prometheus, Jaeger, the operator and a bridge node per dev Site),
# the example Pipeline compiled from its script, the example Sites and Run applied with kubectl, the Run
# succeeding on the POSIX Site site-a, its priority changed, the stack stopped.
#
#   examples/tour.sh                      # the whole stack (Go binaries from `sgs dev build` / `make parts`)
#   SGS_DEV_PARTS=pg,kube,sgs examples/tour.sh   # only what the Run needs
#
# tests/integration/test_tour.py runs it; tests/unit/test_readme_commands.py checks the README shows these lines.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -x .venv/bin/sgs ]]; then export PATH="$PWD/.venv/bin:$PATH"; fi   # where README command 1 installed sgs
trap 'echo "tour failed; the stack is still up: kubectl describe run parallel-split-001, sgs dev status, sgs dev down" >&2' ERR
set -x
# --- the tour (README, "A tour on the dev stack") ---
sgs dev up
eval "$(sgs dev env)"
sgs compile examples/parallel_split/parallel_split.py:parallel_split | kubectl apply -f -
kubectl apply -f crds/examples/
sgs run priority parallel-split-001 50
kubectl wait run/parallel-split-001 --for=jsonpath='{.status.phase}'=Succeeded --timeout=5m
kubectl get runs,sites,dataplacements
sgs dev down
