#!/usr/bin/env bash
# Installs what dlvm needs on a fresh Debian machine (as root): system packages, then a
# virtual environment in .venv with dlvm-cluster and the CPU build of PyTorch.
#   bash examples/install.sh          # for the demo
#   bash examples/install.sh --dev    # also the test tools (pytest, ruff, mypy, ...) and the
#                                     # frameworks the tests run: MPI, Accelerate, DeepSpeed,
#                                     # Horovod (built from source, cached; see below)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
dev=false
[[ "${1:-}" == "--dev" ]] && dev=true

packages=(openssh-server openssh-client iproute2 procps util-linux rsync pdsh python3-venv)
# --dev: Open MPI for mpirun and mpi4py; a C++ compiler with Python's headers for the op
# DeepSpeed compiles on first use on CPU; and for the Horovod build, cmake, make and MPI's
# headers (libopenmpi-dev: openmpi-bin has an mpicxx but no mpi.h); Chromium and its driver,
# the headless browser the dashboard's tests drive; GnuPG and its agent, which make the keys
# the GCP boot script's apt key check is tested with.
if $dev; then
  packages+=(openmpi-bin libopenmpi-dev g++ make cmake python3-dev chromium chromium-driver gpg gpg-agent)
fi
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
if $dev; then extras="train,dev"; fi
# pip warns about package index folders this machine may not have; those lines are noise.
pip_install() {
  .venv/bin/python -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
echo "==> installing dlvm-cluster[$extras] into .venv"
pip_install --upgrade pip >/dev/null
pip_install -e ".[$extras]"
if $dev; then
  # pyproject's `frameworks` group, those of it not installed yet, on their own: DeepSpeed is
  # source only and its setup.py imports torch, so it is built against this venv's torch
  # (build isolation would fetch another one), with no ops compiled ahead (DS_BUILD_OPS=0:
  # they compile on first use).
  group=$(.venv/bin/python -c 'import importlib.metadata as md, re, tomllib
with open("pyproject.toml", "rb") as f:
    wanted = tomllib.load(f)["project"]["optional-dependencies"]["frameworks"]
def installed(requirement):
    try:
        return bool(md.version(re.match(r"[A-Za-z0-9._-]+", requirement).group()))
    except md.PackageNotFoundError:
        return False
print(*[r for r in wanted if not installed(r)])')
  read -r -a frameworks <<<"$group"
  if ((${#frameworks[@]})); then
    echo "==> installing the frameworks the tests run: ${frameworks[*]}"
    pip_install "setuptools>=70.1" # builds wheels without the `wheel` package
    DS_BUILD_OPS=0 pip_install --no-build-isolation "${frameworks[@]}"
  fi
  # Horovod's last release is source only and needs a patch to build against torch 2.x: the
  # recipe builds it once (a few minutes), caches the wheel under ~/.cache/dlvm/wheels, and
  # installs it (seconds when cached). It is the script `up` runs on a cluster's head node.
  if ! .venv/bin/python -c 'import horovod.torch' 2>/dev/null; then
    echo "==> installing Horovod (built from source once, then cached)"
    PYTHON=.venv/bin/python HOROVOD_WITH_MPI=1 bash dlvm_cluster/nodeside/build_horovod.sh install
  fi
fi
echo "==> ready: $(.venv/bin/dlvm --help >/dev/null && echo dlvm installed)"
