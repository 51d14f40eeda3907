#!/usr/bin/env bash
# The demo command: installs what is needed, then makes a 3-node cluster on this machine
# (local provider: network namespaces with their own sshd; needs root), trains a small DDP
# model across the nodes with torchrun, and tears everything down.
#
#   bash examples/demo.sh [--skip-install] [NAME]
#
# NAME is the cluster's name (default: demo, the name in examples/local.yaml); another name
# runs the same cluster file under that name, so the demo never touches a cluster `demo` of
# yours. --skip-install: examples/install.sh has run already. DLVM names the dlvm program
# (default: the one install.sh puts in .venv).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
install=1
if [ "${1:-}" = --skip-install ]; then
  install=0
  shift
fi
name=${1:-demo}
if ! [[ $name =~ ^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$ ]]; then
  echo "error: cluster name '$name': use a-z, 0-9 and -, start with a letter, end with a letter or digit" >&2
  exit 2
fi
if [ "$install" = 1 ]; then
  bash examples/install.sh
fi
dlvm=${DLVM:-.venv/bin/dlvm}

spec=examples/local.yaml
scratch=""
if [ "$name" != demo ]; then
  # The same file under another name; its paths made absolute, as they were relative to it.
  scratch=$(mktemp -d)
  spec="$scratch/$name.yaml"
  sed -e "s/^name: demo\$/name: $name/" -e "s|{src: \\., |{src: $repo/examples, |" \
    examples/local.yaml > "$spec"
fi

cleanup() {
  "$dlvm" down "$name" --yes >/dev/null 2>&1 || true
  [ -z "$scratch" ] || rm -rf "$scratch"
}
trap cleanup EXIT

echo "==> dlvm up $spec"
"$dlvm" up "$spec" --yes
echo "==> dlvm exec: one command on every node at once"
"$dlvm" exec "$name" -- 'echo "rank $DLVM_NODE_RANK of $DLVM_NUM_NODES on $(hostname)"'
echo "==> dlvm launch: torchrun across the 3 nodes"
"$dlvm" launch "$name"
"$dlvm" status "$name"
echo "==> dlvm down"
trap '[ -z "$scratch" ] || rm -rf "$scratch"' EXIT
"$dlvm" down "$name" --yes
