#!/usr/bin/env bash
# Builds Horovod 0.28.1 for the PyTorch of a Python environment, caches the wheel, and
# (with `install`) installs it.
#
#   bash build_horovod.sh wheel     # make sure the wheel is cached; print its path and hash
#   bash build_horovod.sh install   # the same, then pip install it into that Python
#   bash build_horovod.sh install-wheel WHEEL SHA256   # install a wheel built elsewhere
#
# What is trusted: the source is checked against the SHA-256 its release published before
# it is unpacked (pip runs its build code); the wheel's hash is recorded when it is built and
# checked before every install, here from the cache and on each node it is copied to; its
# dependencies are installed at pinned versions (only those the Python lacks), never
# whatever the index serves that day.
#
# Why a build: 0.28.1, Horovod's last release, is published as source only, and its CMake
# files ask for C++14 while the headers of torch 2.x need C++17. So the source is fetched
# with pip, the two lines that set the standard are changed to 17, and the wheel is built
# without build isolation, against the torch already installed (isolation would fetch
# another one). Gloo is always built in (horovodrun --gloo needs no MPI); MPI too when
# `mpicxx` can compile against mpi.h (Debian: libopenmpi-dev).
#
# The wheel is cached under ${XDG_CACHE_HOME:-~/.cache}/dlvm/wheels, in a folder
# named for what it was built against (Horovod, torch, Python, platform, MPI or not, GPU
# operations): a second run takes seconds. Every prerequisite is checked before anything is
# fetched, and the cache gets a wheel only once the build succeeded, so a failure never
# leaves half a result.
#
# Environment: PYTHON (default python3: the interpreter whose torch is built against and
# into which `install` installs), Horovod's own HOROVOD_WITH_MPI=1 (require MPI) or
# HOROVOD_WITHOUT_MPI=1 (gloo only; neither: MPI where found) and HOROVOD_GPU_OPERATIONS
# (e.g. NCCL), XDG_CACHE_HOME, MAKEFLAGS (default -j<cores>), CXX (default g++). All can be
# set in a cluster file's env, which the build on the head runs with.
set -euo pipefail

HOROVOD_VERSION=0.28.1
# horovod-0.28.1.tar.gz as its release published it on PyPI.
HOROVOD_SOURCE_SHA256=92a43f5a94c43907a56805bad15f19700c62ffc83b7ca483f9e104e229f67ef0
# What horovod's setup.py requires (cloudpickle, psutil, pyyaml, packaging), pinned.
HOROVOD_DEPENDENCIES=(cloudpickle==3.1.1 psutil==7.2.2 PyYAML==6.0.3 packaging==26.2)
mode=${1:-}
if [[ "$mode" != wheel && "$mode" != install && "$mode" != install-wheel ]]; then
  echo "usage: build_horovod.sh wheel|install|install-wheel WHEEL SHA256" >&2
  exit 2
fi
python=${PYTHON:-python3}
cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/dlvm/wheels
if [[ "${HOROVOD_WITHOUT_MPI:-}" == 1 ]]; then
  want_mpi=0
elif [[ "${HOROVOD_WITH_MPI:-}" == 1 ]]; then
  want_mpi=1
else
  want_mpi=auto
fi

fail() {
  echo "build_horovod: $*" >&2
  exit 1
}
say() { echo "==> horovod: $*"; }
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
# Stops unless FILE's SHA-256 is EXPECTED, saying both.
check_sha256() {
  local file=$1 expected=$2 what=$3 got
  got=$(sha256_of "$file")
  [[ "$got" == "$expected" ]] ||
    fail "$what does not match its recorded SHA-256: expected $expected, got $got ($file)"
}
# Installs WHEEL (checked against SHA256) without letting pip pick its dependencies: those
# the Python lacks are installed at the pinned versions.
install_wheel() {
  local wheel=$1 expected=$2 missing=() requirement
  check_sha256 "$wheel" "$expected" "the horovod wheel"
  say "installing into $("$python" -c 'import sys; print(sys.prefix)')"
  for requirement in "${HOROVOD_DEPENDENCIES[@]}"; do
    "$python" -c 'import importlib.metadata as m, sys; m.version(sys.argv[1])' "${requirement%%==*}" \
      2>/dev/null || missing+=("$requirement")
  done
  if ((${#missing[@]})); then
    "$python" -m pip install -q "${missing[@]}" || fail "could not install ${missing[*]}"
  fi
  "$python" -m pip install -q --no-deps "$wheel"
  "$python" -c 'import horovod.torch' || fail "horovod.torch does not import after the install"
}

if [[ "$mode" == install-wheel ]]; then
  [[ $# == 3 && -s "$2" && "$3" =~ ^[0-9a-f]{64}$ ]] ||
    fail "usage: build_horovod.sh install-wheel WHEEL SHA256"
  install_wheel "$2" "$3"
  exit 0
fi

command -v "$python" >/dev/null || fail "no $python: set PYTHON to the interpreter to build for"
# What the wheel is built against (empty when torch does not import: nothing to build for).
about=$("$python" - <<'PY' 2>/dev/null || true
import sys, sysconfig
try:
    import torch
except ImportError:
    sys.exit(0)
tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
print(torch.__version__.replace("+", "_"), tag, platform, sysconfig.get_paths()["include"])
PY
)
read -r torch_version py_tag platform py_include <<<"$about" || true
[[ -n "${torch_version:-}" ]] || fail "$python cannot import torch: install PyTorch first"

# The wheel a previous run built for this very combination: nothing to check or build.
# HOROVOD_GPU_OPERATIONS (NCCL on GPU machines) is passed to Horovod's build as it is, and
# names the wheel's folder too.
gpu_ops=${HOROVOD_GPU_OPERATIONS:+-gpu${HOROVOD_GPU_OPERATIONS,,}}
mpi_flavour() { if [[ "$1" == 1 ]]; then echo "mpi$gpu_ops"; else echo "gloo$gpu_ops"; fi; }
# Only a wheel whose hash was recorded when it was built counts (one from before hashes were
# recorded is built again).
cached() {
  local folder="$cache_root/horovod-$HOROVOD_VERSION-torch$torch_version-$py_tag-$platform-$1" found
  for found in "$folder"/horovod-*.whl; do
    if [[ -s "$found.sha256" ]]; then echo "$found"; return 0; fi
  done
  return 0
}
wheel=""
case "$want_mpi" in
  1) wheel=$(cached "$(mpi_flavour 1)") ;;
  0) wheel=$(cached "$(mpi_flavour 0)") ;;
  auto) wheel=$(cached "$(mpi_flavour 1)"); [[ -n "$wheel" ]] || wheel=$(cached "$(mpi_flavour 0)") ;;
esac
if [[ -n "$wheel" ]]; then
  say "cached wheel $wheel"
  check_sha256 "$wheel" "$(cat "$wheel.sha256")" "the cached horovod wheel"
else
  # Prerequisites, all of them, before anything is fetched or built.
  # The compiler CMake will use: $CXX when set, else g++ on PATH.
  cxx=${CXX:-g++}
  command -v "$cxx" >/dev/null ||
    fail "no C++ compiler ($cxx): install it (Debian: apt-get install g++)"
  command -v cmake >/dev/null || fail "no cmake: install it (Debian: apt-get install cmake)"
  command -v make >/dev/null || fail "no make: install it (Debian: apt-get install make)"
  [[ -f "$py_include/Python.h" ]] ||
    fail "no Python.h in $py_include: install Python's headers (Debian: apt-get install python3-dev)"
  "$python" -m pip --version >/dev/null 2>&1 || fail "$python has no pip"
  "$python" -c 'import setuptools' 2>/dev/null || fail "$python has no setuptools (pip install setuptools)"
  with_mpi=0
  if [[ "$want_mpi" != 0 ]]; then
    if command -v mpicxx >/dev/null && echo '#include <mpi.h>' | mpicxx -x c++ -fsyntax-only - 2>/dev/null; then
      with_mpi=1
    elif [[ "$want_mpi" == 1 ]]; then
      command -v mpicxx >/dev/null ||
        fail "no mpicxx: install MPI (Debian: apt-get install openmpi-bin libopenmpi-dev), or HOROVOD_WITHOUT_MPI=1"
      fail "mpicxx cannot find mpi.h: install MPI's headers (Debian: apt-get install libopenmpi-dev), or HOROVOD_WITHOUT_MPI=1"
    fi
  fi
  folder="$cache_root/horovod-$HOROVOD_VERSION-torch$torch_version-$py_tag-$platform-$(mpi_flavour $with_mpi)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  say "fetching the horovod $HOROVOD_VERSION source"
  "$python" -m pip download -q --no-deps --no-binary :all: -d "$work" "horovod==$HOROVOD_VERSION" ||
    fail "could not download the horovod $HOROVOD_VERSION source (see above)"
  check_sha256 "$work/horovod-$HOROVOD_VERSION.tar.gz" "$HOROVOD_SOURCE_SHA256" \
    "the downloaded horovod $HOROVOD_VERSION source"
  tar -xzf "$work/horovod-$HOROVOD_VERSION.tar.gz" -C "$work"
  src="$work/horovod-$HOROVOD_VERSION"
  # torch 2.x headers need C++17: the two places Horovod's CMake files set the standard.
  for cmake_file in CMakeLists.txt horovod/torch/CMakeLists.txt; do
    grep -q 'set(CMAKE_CXX_STANDARD 14)' "$src/$cmake_file" ||
      fail "$cmake_file no longer sets C++14: this recipe is for horovod $HOROVOD_VERSION"
    sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$src/$cmake_file"
  done
  say "building against torch $torch_version with gloo$([[ $with_mpi == 1 ]] && echo ' and MPI') (minutes; full log in $work/build.log while it runs)"
  export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITH_GLOO=1
  if [[ $with_mpi == 1 ]]; then export HOROVOD_WITH_MPI=1; else export HOROVOD_WITHOUT_MPI=1; fi
  export MAKEFLAGS=${MAKEFLAGS:--j$(nproc)}
  started=$SECONDS
  # Make's progress lines ([ 42%] Building CXX object ...) are shown, one per file; the whole
  # log is kept for a failure.
  progress='\[ *[0-9]+%\] (Building CXX object|Linking CXX [a-z ]+|Built target) [^ ]+'
  if ! "$python" -m pip wheel -v --no-deps --no-build-isolation -w "$work/dist" "$src" 2>&1 |
    tee "$work/build.log" | { grep --line-buffered -oE "$progress" || true; }; then
    tail -n 40 "$work/build.log" >&2
    fail "the build failed (the last lines of its log are above)"
  fi
  built=$(compgen -G "$work/dist/horovod-*.whl" | head -n 1 || true)
  [[ -n "$built" ]] || fail "the build made no wheel"
  mkdir -p "$folder"
  # Into the cache in one step: a killed run leaves no wheel there, not a partial one.
  cp "$built" "$folder/.incoming"
  wheel="$folder/$(basename "$built")"
  sha256_of "$built" >"$wheel.sha256"
  mv "$folder/.incoming" "$wheel"
  say "built in $((SECONDS - started)) s: $wheel"
fi

if [[ "$mode" == install ]]; then
  install_wheel "$wheel" "$(cat "$wheel.sha256")"
fi
echo "DLVM_HOROVOD_SHA256=$(cat "$wheel.sha256")"
echo "DLVM_HOROVOD_WHEEL=$wheel"
