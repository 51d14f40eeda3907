#!/usr/bin/env bash
# The demo command: installs what is needed, then makes a 3-node cluster on this machine
# (local provider: network namespaces with their own sshd; needs root), trains a small DDP
# model across the nodes with torchrun, and tears everything down.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bash examples/install.sh
dlvm=.venv/bin/dlvm

cleanup() { "$dlvm" down demo --yes >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "==> dlvm up examples/local.yaml"
"$dlvm" up examples/local.yaml --yes
echo "==> dlvm exec: one command on every node at once"
"$dlvm" exec demo -- 'echo "rank $DLVM_NODE_RANK of $DLVM_NUM_NODES on $(hostname)"'
echo "==> dlvm launch: torchrun across the 3 nodes"
"$dlvm" launch demo
"$dlvm" status demo
echo "==> dlvm down"
trap - EXIT
"$dlvm" down demo --yes
