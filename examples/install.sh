#!/usr/bin/env bash
# Installs what dlvm needs on a fresh Debian machine (as root): system packages, then a
# virtual environment in .venv with dlvm-cluster and the CPU build of PyTorch.
#   bash examples/install.sh          # for the demo
#   bash examples/install.sh --dev    # also the test tools (pytest, ruff, mypy, ...)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

packages=(openssh-server openssh-client iproute2 procps util-linux rsync pdsh python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "==> installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "==> creating .venv"
  "$python" -m venv .venv
fi
extras="train"
[[ "${1:-}" == "--dev" ]] && extras="train,dev"
# pip warns about package index folders this machine may not have; those lines are noise.
pip_install() {
  .venv/bin/python -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
echo "==> installing dlvm-cluster[$extras] into .venv"
pip_install --upgrade pip >/dev/null
pip_install -e ".[$extras]"
echo "==> ready: $(.venv/bin/dlvm --help >/dev/null && echo dlvm installed)"
