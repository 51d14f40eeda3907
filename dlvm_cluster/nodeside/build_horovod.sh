#!/usr/bin/env bash
# Builds Horovod 0.28.1 for the PyTorch of a Python environment, caches the wheel, and
# (with `install`) installs it.
#
#   bash build_horovod.sh wheel     # make sure the wheel is cached; print its path and hash
#   bash build_horovod.sh install   # the same, then pip install it into that Python
#   bash build_horovod.sh install-wheel WHEEL SHA256   # install a wheel built elsewhere
#   bash build_horovod.sh needs     # what this node would need for either, as one JSON line;
#                                   # fetches, builds and installs nothing
#
# What is trusted: the source is checked against the SHA-256 its release published before
# it is unpacked (pip runs its build code); the wheel's hash is recorded when it is built and
# checked before every install, here from the cache and on each node it is copied to; its
# dependencies are installed at pinned versions (only those the Python lacks), never
# whatever the index serves that day.
#
# A node that cannot reach the package index (local nodes, private cloud nodes) is sent what
# it needs by dlvm, from the machine dlvm runs on: HOROVOD_WHEEL (with HOROVOD_WHEEL_SHA256),
# a wheel built elsewhere for this very combination, in a folder named as the cache names it;
# else HOROVOD_SDIST, the source archive (checked against the same published SHA-256); and
# HOROVOD_WHEELHOUSE, a folder holding the pinned dependencies' wheels, which pip then installs
# from alone, never asking the index. `needs` says which of these would help.
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
# What horovod's setup.py requires to run and, as its setup_requires, to build: cloudpickle,
# psutil, pyyaml, packaging, cffi (and pycparser, cffi's own), pinned. Installed before a build
# too, so that setuptools never fetches them itself.
HOROVOD_DEPENDENCIES=(cloudpickle==3.1.1 psutil==7.2.2 PyYAML==6.0.3 packaging==26.2 cffi==2.1.1 pycparser==3.12)
mode=${1:-}
if [[ "$mode" != wheel && "$mode" != install && "$mode" != install-wheel && "$mode" != needs ]]; then
  echo "usage: build_horovod.sh wheel|install|install-wheel WHEEL SHA256|needs" >&2
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
# The pinned dependencies the Python lacks, one a line.
missing_dependencies() {
  local requirement
  for requirement in "${HOROVOD_DEPENDENCIES[@]}"; do
    "$python" -c 'import importlib.metadata as m, sys; m.version(sys.argv[1])' "${requirement%%==*}" \
      2>/dev/null || echo "$requirement"
  done
}
# Installs the pinned dependencies the Python lacks: from HOROVOD_WHEELHOUSE alone where one
# was sent, else from the index.
install_dependencies() {
  local missing=()
  mapfile -t missing < <(missing_dependencies)
  ((${#missing[@]})) || return 0
  if [[ -n "${HOROVOD_WHEELHOUSE:-}" && -d "$HOROVOD_WHEELHOUSE" ]]; then
    say "installing ${missing[*]} from the wheels sent with the build"
    "$python" -m pip install -q --no-index --find-links "$HOROVOD_WHEELHOUSE" "${missing[@]}" ||
      fail "could not install ${missing[*]} from $HOROVOD_WHEELHOUSE"
  else
    "$python" -m pip install -q "${missing[@]}" || fail "could not install ${missing[*]}"
  fi
}
# Installs WHEEL (checked against SHA256) without letting pip pick its dependencies: those
# the Python lacks are installed at the pinned versions.
install_wheel() {
  local wheel=$1 expected=$2
  check_sha256 "$wheel" "$expected" "the horovod wheel"
  say "installing into $("$python" -c 'import sys; print(sys.prefix)')"
  install_dependencies
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

# The wheel folders this node can take, best first, named for what a wheel was built against
# (Horovod, torch, Python, platform, MPI or not, GPU operations). HOROVOD_GPU_OPERATIONS (NCCL
# on GPU machines) is passed to Horovod's build as it is, and names the folder too.
gpu_ops=${HOROVOD_GPU_OPERATIONS:+-gpu${HOROVOD_GPU_OPERATIONS,,}}
mpi_flavour() { if [[ "$1" == 1 ]]; then echo "mpi$gpu_ops"; else echo "gloo$gpu_ops"; fi; }
folder_for() { echo "horovod-$HOROVOD_VERSION-torch$torch_version-$py_tag-$platform-$(mpi_flavour "$1")"; }
mpi_compiles() { command -v mpicxx >/dev/null && echo '#include <mpi.h>' | mpicxx -x c++ -fsyntax-only - 2>/dev/null; }
case "$want_mpi" in
  1) accepted=("$(folder_for 1)") ;;
  0) accepted=("$(folder_for 0)") ;;
  *) if mpi_compiles; then accepted=("$(folder_for 1)" "$(folder_for 0)"); else accepted=("$(folder_for 0)"); fi ;;
esac
# Only a wheel whose hash was recorded when it was built counts (one from before hashes were
# recorded is built again).
cached() {
  local folder found
  for folder in "${accepted[@]}"; do
    for found in "$cache_root/$folder"/horovod-*.whl; do
      if [[ -s "$found.sha256" ]]; then echo "$found"; return 0; fi
    done
  done
  return 0
}
# Whether cmake is 3.13 or newer (Horovod's setup.py would fetch one from the index else).
cmake_recent() {
  local first=""
  read -r first < <(cmake --version 2>/dev/null) || true
  [[ "$first" =~ version\ ([0-9]+)\.([0-9]+) ]] || return 1
  ((BASH_REMATCH[1] > 3 || (BASH_REMATCH[1] == 3 && BASH_REMATCH[2] >= 13)))
}
# Sets `problem` to the first prerequisite of a build that is missing, said as what to do
# (empty when all are there), and with_mpi to 1 when MPI is to be built in.
prerequisites() {
  problem="" with_mpi=0
  # The compiler CMake will use: $CXX when set, else g++ on PATH.
  local cxx=${CXX:-g++}
  if ! command -v "$cxx" >/dev/null; then
    problem="no C++ compiler ($cxx): install it (Debian: apt-get install g++)"
  elif ! command -v cmake >/dev/null; then
    problem="no cmake: install it (Debian: apt-get install cmake)"
  elif ! cmake_recent; then
    problem="cmake is older than 3.13 (Horovod's build would fetch one): install a newer one"
  elif ! command -v make >/dev/null; then
    problem="no make: install it (Debian: apt-get install make)"
  elif [[ ! -f "$py_include/Python.h" ]]; then
    problem="no Python.h in $py_include: install Python's headers (Debian: apt-get install python3-dev)"
  elif ! "$python" -m pip --version >/dev/null 2>&1; then
    problem="$python has no pip"
  elif ! "$python" -c 'import setuptools' 2>/dev/null; then
    problem="$python has no setuptools (pip install setuptools)"
  elif [[ "$want_mpi" != 0 ]]; then
    if mpi_compiles; then
      with_mpi=1
    elif [[ "$want_mpi" == 1 ]] && ! command -v mpicxx >/dev/null; then
      problem="no mpicxx: install MPI (Debian: apt-get install openmpi-bin libopenmpi-dev), or HOROVOD_WITHOUT_MPI=1"
    elif [[ "$want_mpi" == 1 ]]; then
      problem="mpicxx cannot find mpi.h: install MPI's headers (Debian: apt-get install libopenmpi-dev), or HOROVOD_WITHOUT_MPI=1"
    fi
  fi
}

if [[ "$mode" == needs ]]; then
  # One line for dlvm: whether a wheel is cached here, the folders a wheel sent here must
  # come from, why a build could not start (empty: it could), the pinned dependencies this
  # Python lacks, and the tags a wheel of them must carry.
  prerequisites
  "$python" - "$(cached)" "$problem" "${accepted[*]}" "$(missing_dependencies | tr '\n' ' ')" <<'PY'
import json, sys
try:
    from pip._vendor.packaging.tags import sys_tags
    platforms = list(dict.fromkeys(tag.platform for tag in sys_tags()))
except Exception:  # no pip: no platform tags, so nothing can be sent to install with it
    platforms = []
wheel, problem, accepted, missing = sys.argv[1:5]
version = f"{sys.version_info[0]}.{sys.version_info[1]}"
print("DLVM_HOROVOD_NEEDS=" + json.dumps({
    "wheel": bool(wheel), "problem": problem, "accepts": accepted.split(),
    "missing": missing.split(), "python": version,
    "abi": f"cp{sys.version_info[0]}{sys.version_info[1]}", "platforms": platforms,
}))
PY
  exit 0
fi

if [[ -n "${HOROVOD_WHEEL:-}" ]]; then
  # A wheel sent with the build, made elsewhere for a combination this node takes (its
  # folder's name says which): checked, then kept in the cache like one built here.
  [[ -s "$HOROVOD_WHEEL" && "${HOROVOD_WHEEL_SHA256:-}" =~ ^[0-9a-f]{64}$ ]] ||
    fail "HOROVOD_WHEEL needs the wheel and HOROVOD_WHEEL_SHA256"
  sent_name=$(basename "$HOROVOD_WHEEL")
  sent_folder=$(basename "$(dirname "$HOROVOD_WHEEL")")
  [[ "$sent_name" == horovod-"$HOROVOD_VERSION"-*.whl && " ${accepted[*]} " == *" $sent_folder "* ]] ||
    fail "the wheel sent ($sent_folder/$sent_name) is not one this node takes (${accepted[*]})"
  check_sha256 "$HOROVOD_WHEEL" "$HOROVOD_WHEEL_SHA256" "the horovod wheel sent with the build"
  mkdir -p "$cache_root/$sent_folder"
  cp "$HOROVOD_WHEEL" "$cache_root/$sent_folder/.incoming"
  echo "$HOROVOD_WHEEL_SHA256" >"$cache_root/$sent_folder/$sent_name.sha256"
  mv "$cache_root/$sent_folder/.incoming" "$cache_root/$sent_folder/$sent_name"
  say "the wheel sent with the build is cached: $cache_root/$sent_folder/$sent_name"
fi

# The wheel a previous run built (or was sent) for this very combination: nothing to build.
wheel=$(cached)
if [[ -n "$wheel" ]]; then
  say "cached wheel $wheel"
  check_sha256 "$wheel" "$(cat "$wheel.sha256")" "the cached horovod wheel"
else
  # Prerequisites, all of them, before anything is fetched or built.
  prerequisites
  [[ -z "$problem" ]] || fail "$problem"
  folder="$cache_root/$(folder_for $with_mpi)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  archive="$work/horovod-$HOROVOD_VERSION.tar.gz"
  if [[ -n "${HOROVOD_SDIST:-}" ]]; then
    [[ -s "$HOROVOD_SDIST" ]] || fail "HOROVOD_SDIST: no source archive at $HOROVOD_SDIST"
    say "using the horovod $HOROVOD_VERSION source sent with the build ($HOROVOD_SDIST)"
    cp "$HOROVOD_SDIST" "$archive"
  else
    say "fetching the horovod $HOROVOD_VERSION source"
    # The hash in pip's requirement: pip checks it as soon as the archive is downloaded,
    # before it prepares the archive's metadata, which runs the archive's own code.
    echo "horovod==$HOROVOD_VERSION --hash=sha256:$HOROVOD_SOURCE_SHA256" >"$work/requirement.txt"
    "$python" -m pip download -q --no-deps --no-binary :all: --require-hashes -d "$work" \
      -r "$work/requirement.txt" ||
      fail "could not download the horovod $HOROVOD_VERSION source (see above)"
  fi
  check_sha256 "$archive" "$HOROVOD_SOURCE_SHA256" "the horovod $HOROVOD_VERSION source"
  tar -xzf "$archive" -C "$work"
  src="$work/horovod-$HOROVOD_VERSION"
  # torch 2.x headers need C++17: the two places Horovod's CMake files set the standard.
  for cmake_file in CMakeLists.txt horovod/torch/CMakeLists.txt; do
    grep -q 'set(CMAKE_CXX_STANDARD 14)' "$src/$cmake_file" ||
      fail "$cmake_file no longer sets C++14: this recipe is for horovod $HOROVOD_VERSION"
    sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$src/$cmake_file"
  done
  # Its setup_requires, which setuptools would otherwise fetch from the index itself.
  install_dependencies
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
