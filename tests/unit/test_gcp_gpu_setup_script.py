"""The A3/A4 boot script, run for real by bash in a folder, with stand-ins for the commands
that need the machine (docker, nvidia-smi, modprobe, apt-get, ...): each stand-in records how
it was called. What this shows: the commands the script runs for each plugin, in order and
with the pinned images and versions, what it writes (/etc/nccl.conf, the verdict) and that a
failed step is recorded and fails the script. What the commands then do needs the hardware."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from openpgp import GnuPG, new_key, run_gpg

from dlvm_cluster.providers.gcp import gpu_network
from dlvm_cluster.providers.pinned import PINNED_DOWNLOADS, Pinned

# One stand-in for every machine-bound command: it records "name args..." and answers the few
# questions the script asks (a ready RxDM, a running container, the plugin's profile).
STAND_IN = r"""#!/bin/bash
name=${0##*/}
printf '%s' "$name" >>"$CALLS"; printf ' %s' "$@" >>"$CALLS"; printf '\n' >>"$CALLS"
case "$name" in
docker)
	case "$1" in
	logs) echo "Buffer manager initialization complete" ;;
	inspect) echo true ;;
	image) echo "other/repository@sha256:1111"; echo "${@: -1}" | sed "s|:[^:/]*$|@$FAKE_DIGEST|" ;;
	run)
		for arg in "$@"; do
			if [[ $arg == install ]]; then
				mkdir -p "$FAKE_LIB_DIR"
				printf 'export NCCL_FASTRAK_NUM_FLOWS=2\nexport NCCL_SOCKET_IFNAME=eth0\n' \
					>"$FAKE_LIB_DIR/nccl-env-profile.sh"
				cp "$FAKE_PLUGIN" "$FAKE_LIB_DIR/libnccl-net.so"
			fi
			# TCPXO's RxDM writes its health file once initialized (unless told it failed).
			if [[ $arg == *:/run/dlvm-rxdm && -z ${RXDM_UNHEALTHY:-} ]]; then
				touch "${arg%%:*}/health-check"
			fi
		done
		[[ $2 == --detach ]] && echo 4f1c0ffee
		;;
	esac
	;;
apt-get)
	# The package file a download gives: NAME_VERSION_all.deb in the current folder.
	[[ $1 == download ]] && touch "${2%%=*}_${2#*=}_all.deb"
	;;
dpkg-deb)
	# The import helper's package: its DKMS source, written for kernels before 6.13.
	mkdir -p "$3/usr/src/dmabuf-import-helper-1.1"
	printf '#include <linux/module.h>\nMODULE_IMPORT_NS(DMA_BUF);\nMODULE_LICENSE("GPL");\n' \
		>"$3/usr/src/dmabuf-import-helper-1.1/import-helper.c"
	;;
lspci) echo "0000:06:00.0 Ethernet controller [0200]: Google, Inc. Device [1ae0:0084]" ;;
mountpoint) exit 1 ;;
dpkg-query) [[ -n ${INSTALLED_GIB:-} ]] && printf '%s' "$INSTALLED_GIB" ;;
uname) echo "$KERNEL_RELEASE" ;;
ldconfig)
	if [[ $1 == -p && -n ${RDMA_LIBRARIES:-} ]]; then
		printf '\tlibibverbs.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libibverbs.so.1\n'
	fi
	;;
modinfo) [[ -n ${IMPORT_HELPER:-} ]] || exit 1 ;;
dkms) [[ $1 == build && -n ${DKMS_BUILD_FAILS:-} ]] && exit 10 ;;
ibv_devices)
	echo "    device                 node GUID"
	for ((i = 0; i < ${RDMA_DEVICES:-0}; i++)); do echo "    mlx5_$i    0000000000000000"; done
	;;
apt-cache)
	spec=${@: -1}; version=9.9; [[ $spec == *=* ]] && version=${spec#*=}
	printf 'Package: %s\nVersion: %s\nSHA256: %s\n' "${spec%%=*}" "$version" "$FAKE_DEB_SHA"
	;;
gpg)
	[[ $1 == --show-keys ]] && printf 'pub:-:255:22:X:1:::-:::scESC:\nfpr:::::::::%s:\n' $FAKE_FPR
	while [[ $# -gt 0 ]]; do [[ $1 == -o ]] && touch "$2"; shift; done
	;;
esac
exit 0
"""
MACHINE_COMMANDS = (
    "docker",
    "nvidia-smi",
    "nvidia-container-cli",
    "modprobe",
    "lspci",
    "mountpoint",
    "mount",
    "sleep",
    "dpkg-query",
    "apt-get",
    "apt-cache",
    "apt-mark",
    "curl",
    "gpg",
    "uname",
    "modinfo",
    "ldconfig",
    "ibv_devices",
    "dpkg-deb",
    "dkms",
)
# A kernel of Google's TCPX line, and the Deep Learning VM image's own.
TCPX_KERNEL = "5.15.0-1065-gcp-tcpx"
DLVM_KERNEL = "6.8.0-1031-gcp"
# The ordinary tools the script uses, taken from this machine.
TOOLS = ("grep", "env", "mv", "mkdir", "rm", "readlink", "chmod", "cut", "head", "cat")
TOOLS += ("awk", "sort", "tr", "sed", "touch", "mktemp", "cp")
DIGEST = "sha256:" + "ab" * 32  # what the stand-in registry serves
# What the stand-in key server serves: the key Google ships (the table's record of both keys).
FINGERPRINTS = "35BAA0B33E9EB396F59CA838C0BA5CE6DC6315A3"
# Google's other published key, shipped beside it in one key file.
RAPTURE_KEY = "A362B822F6DEDC652817EA46B53DC80D13EDEF05"
OTHER_KEY = "0123456789ABCDEF" * 2 + "01234567"  # anyone else's key
DEB_SHA = "ef" * 32  # the SHA256 the stand-in apt index lists for every package


# A stand-in NCCL net plugin: a real shared library exporting the plugin table NCCL looks up,
# whose first field is the transport's name.
PLUGIN_SOURCE = """
typedef struct { const char *name; void *init; } ncclNetTable;
ncclNetTable ncclNetPlugin_v{VERSION} = {"{NAME}", 0};
"""


def compile_plugin(folder: Path, name: str, version: int, *, needs: str = "") -> Path:
    """libnccl-net.so naming `name` in ncclNetPlugin_v`version`; `needs`: a library it links
    against that is then removed, so that the dynamic linker cannot find it at load."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler (examples/install.sh installs g++ and with it gcc)"
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"{name}.c"
    source.write_text(PLUGIN_SOURCE.replace("{VERSION}", str(version)).replace("{NAME}", name))
    output = folder / f"{name}-v{version}{'-' + needs if needs else ''}.so"
    command = [compiler, "-shared", "-fPIC", "-o", str(output), str(source)]
    if needs:
        dependency = folder / f"lib{needs}.so"
        subprocess.run(
            [compiler, "-shared", "-fPIC", "-o", str(dependency), "-x", "c", "/dev/null"],
            check=True,
        )
        command += [f"-L{folder}", "-Wl,--no-as-needed", f"-l{needs}"]
    subprocess.run(command, check=True)
    if needs:
        (folder / f"lib{needs}.so").unlink()
    return output


PLUGINS: dict[str, Path] = {}


@pytest.fixture(autouse=True, scope="module")
def _plugins(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("plugins")
    PLUGINS["tcpx"] = compile_plugin(folder, "GPUDirectTCPX_v7", 7)
    PLUGINS["tcpxo"] = compile_plugin(folder, "FasTrak", 8)
    PLUGINS["gib"] = PLUGINS["tcpxo"]  # gIB comes from apt: never copied


@contextmanager
def rxdm_listening(folder: Path, names: list[str]) -> Iterator[None]:
    """Unix sockets named `names` in `folder` that accept connections, as RxDM's do."""
    folder.mkdir(exist_ok=True)
    with ExitStack() as stack:
        for name in names:
            path = folder / name
            path.unlink(missing_ok=True)
            server = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            server.bind(str(path))
            server.listen(512)  # every try of the wait connects; none is accepted
            stack.callback(path.unlink, missing_ok=True)
        yield


def rxdm_sockets(script: str) -> list[str]:
    """The sockets the boot script waits for RxDM to open (its header's RXDM_SOCKETS)."""
    (line,) = [line for line in script.splitlines() if line.startswith("RXDM_SOCKETS=")]
    return shlex.split(line.partition("=")[2])[0].split()


@dataclass
class Run:
    returncode: int
    output: str
    calls: list[str]
    root: Path
    uds: Path  # where RxDM's sockets were (a short path: a socket's path has a length limit)

    def state(self, name: str) -> str | None:
        path = self.root / "state" / name
        return path.read_text().strip() if path.exists() else None

    def library_path(self) -> str | None:
        """What the script gave the dynamic linker (None: nothing)."""
        path = self.root / "ld.so.conf.d" / "000_dlvm-nccl-plugin.conf"
        return path.read_text().strip() if path.exists() else None


def run_script(
    tmp_path: Path,
    machine: str,
    *,
    missing: tuple[str, ...] = (),
    installed_gib: str = "",
    absent_interfaces: tuple[str, ...] = (),
    kernel: str = TCPX_KERNEL,
    import_helper: bool = True,
    rdma_devices: int = 8,
    args: tuple[str, ...] = (),
    digest: str = DIGEST,
    fingerprints: str = FINGERPRINTS,
    deb_sha: str = DEB_SHA,
    plugin: Path | None = None,
    rxdm_missing: tuple[str, ...] | None = (),
    rxdm_healthy: bool = True,
    down: tuple[str, ...] = (),
    rdma_libraries: bool = True,
    dkms_build_fails: bool = False,
) -> Run:
    """The boot script for `machine`, its system paths moved under tmp_path; RxDM's sockets
    all answer but those named in `rxdm_missing` (None: not one answers)."""
    network = gpu_network.gpu_network(machine)
    assert network is not None
    sys_net = tmp_path / "sys-class-net"
    sys_net.mkdir(exist_ok=True)
    for nic in network.interfaces:
        if nic not in absent_interfaces:
            (sys_net / nic).mkdir(exist_ok=True)
            (sys_net / nic / "operstate").write_text("down\n" if nic in down else "up\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in MACHINE_COMMANDS:
        (bin_dir / name).unlink(missing_ok=True)
        if name not in missing:
            (bin_dir / name).write_text(STAND_IN)
            (bin_dir / name).chmod(0o755)
    for tool in TOOLS:
        real = shutil.which(tool)
        assert real, tool
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(real)
    # The transport probe runs for real: Python, a compiled plugin, RxDM's sockets.
    if not (bin_dir / "python3").exists():
        (bin_dir / "python3").symlink_to(sys.executable)
    lib_dir = tmp_path / "lib64"
    lib_dir.mkdir(exist_ok=True)
    profile = tmp_path / "set_nccl_env.sh"
    profile.write_text("export NCCL_NET=gIB\nexport NCCL_IB_QPS_PER_CONNECTION=4\n")
    script = gpu_network.setup_script(network)
    uds = Path(tempfile.mkdtemp(prefix="rxdm-", dir="/tmp"))
    moves = {
        f"LIB_DIR={network.lib_dir}\n": f"LIB_DIR={lib_dir}\n",
        f"UDS_PATH={gpu_network.TCPX_UDS_PATH}\n": f"UDS_PATH={uds}\n",
        f"ENV_PROFILE={gpu_network.GIB_ENV_PROFILE}\n": f"ENV_PROFILE={profile}\n",
    }
    for system, moved in moves.items():
        script = script.replace(system, moved)
    assert str(lib_dir) in script
    (tmp_path / "apt" / "sources.list.d").mkdir(parents=True, exist_ok=True)
    (tmp_path / "ld.so.conf.d").mkdir(exist_ok=True)
    # The aperture of the GPU NIC lspci names, as sysfs shows it once bound: root's only.
    aperture = tmp_path / "apertures" / "0000:06:00.0"
    aperture.mkdir(parents=True, exist_ok=True)
    for name in ("resource0", "resource2"):
        (aperture / name).touch(mode=0o600)
    calls = tmp_path / "calls"
    calls.write_text("")
    usr_src = tmp_path / "usr-src"
    usr_src.mkdir(exist_ok=True)
    boot_id = tmp_path / "boot_id"
    if not boot_id.exists():
        boot_id.write_text("8e3f0c4e-boot-1\n")
    env = {
        "PATH": str(bin_dir),
        "CALLS": str(calls),
        "FAKE_LIB_DIR": str(lib_dir),
        "INSTALLED_GIB": installed_gib,
        "KERNEL_RELEASE": kernel,
        "IMPORT_HELPER": "yes" if import_helper else "",
        "RDMA_DEVICES": str(rdma_devices),
        "LD_SO_CONF_DIR": str(tmp_path / "ld.so.conf.d"),
        "TOPOLOGY_DIR": str(tmp_path / "etc-dlvm"),
        "USR_SRC_DIR": str(usr_src),
        "BOOT_ID_FILE": str(boot_id),
        "FAKE_DIGEST": digest,
        "FAKE_FPR": fingerprints,
        "FAKE_DEB_SHA": deb_sha,
        "FAKE_PLUGIN": str(plugin or PLUGINS[network.stack]),
        "RXDM_UNHEALTHY": "" if rxdm_healthy else "yes",
        "RDMA_LIBRARIES": "yes" if rdma_libraries else "",
        "RXDM_HEALTH_DIR": str(tmp_path / "rxdm-health"),
        "STATE_DIR": str(tmp_path / "state"),
        "DLVM_NCCL_CONF": str(tmp_path / "nccl.conf"),
        # Set where the script runs: never copied into nccl.conf.
        "NCCL_DEBUG": "INFO",
        "APERTURE_DIR": str(tmp_path / "apertures"),
        "SYS_NET_DIR": str(sys_net),
        "APT_DIR": str(tmp_path / "apt"),
        "KEYRING_DIR": str(tmp_path),
        "DKMS_BUILD_FAILS": "yes" if dkms_build_fails else "",
        "TMPDIR": str(tmp_path / "tmp"),
    }
    (tmp_path / "tmp").mkdir(exist_ok=True)
    bash = shutil.which("bash")
    assert bash
    expected = rxdm_sockets(script) if network.stack == "tcpx" else []
    answering = [name for name in expected if name not in (rxdm_missing or ())]
    try:
        with rxdm_listening(uds, answering if rxdm_missing is not None else []):
            result = subprocess.run(
                [bash, "-c", script, "bash", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
    finally:
        shutil.rmtree(uds, ignore_errors=True)
    output = result.stdout + result.stderr
    return Run(result.returncode, output, calls.read_text().splitlines(), tmp_path, uds)


def by_digest(image: str, digest: str = DIGEST) -> str:
    """How the script runs an image: by the digest it checked, never by its tag."""
    return f"{image.rsplit(':', 1)[0]}@{digest}"


def network(machine: str) -> gpu_network.GpuNetwork:
    found = gpu_network.gpu_network(machine)
    assert found is not None
    return found


def conf_lines(tmp_path: Path) -> list[str]:
    """The settings of the nccl.conf the script wrote, after its first line, dlvm's mark."""
    mark, *lines = (tmp_path / "nccl.conf").read_text().splitlines()
    assert mark == "# Written by dlvm's GPU network setup."
    return lines


def index_of(calls: list[str], start: str) -> int:
    """Where the first call that starts with `start` is; fails when there is none."""
    found = [i for i, call in enumerate(calls) if call.startswith(start)]
    assert found, f"no call starts with {start!r}: {calls}"
    return found[0]


def test_tcpx_installs_the_plugin_with_its_nccl_then_starts_rxdm_on_ubuntu_nics(
    tmp_path: Path,
) -> None:
    run = run_script(tmp_path, "a3-highgpu-8g")
    assert run.returncode == 0, run.output
    uds = run.uds
    install = index_of(
        run.calls,
        f"docker run --rm --network host --volume /var/lib:/var/lib "
        f"{by_digest(gpu_network.TCPX_PLUGIN_IMAGE)} install --install-nccl",
    )
    rxdm = index_of(run.calls, "docker run --detach --name dlvm-rxdm")
    assert index_of(run.calls, "nvidia-smi") < install < rxdm
    started = run.calls[rxdm]
    topology = tmp_path / "etc-dlvm" / "gpu_rxq_configuration.textproto"
    assert f"--volume {uds}:{uds}" in started
    assert f"--volume {topology}:{topology}:ro" in started
    assert (
        f"{by_digest(gpu_network.TCPX_RXDM_IMAGE)} --gpu_nic_preset manual "
        f"--gpu_nic_topology {topology} --gpu_shmem_type fd --uds_path {uds} "
        "--setup_param --verbose 128 2 0"
    ) in started
    assert 'ifname: "enp134s0"' in topology.read_text()
    assert "--gpus all" in started
    settings = network("a3-highgpu-8g").nccl_settings
    assert conf_lines(tmp_path) == [f"{k}={v}" for k, v in settings.items()]
    assert run.library_path() == str(tmp_path / "lib64")
    assert index_of(run.calls, "ldconfig") > rxdm
    assert run.state("ready") == f"tcpx {gpu_network.TCPX_PLUGIN_IMAGE}"
    assert run.state("failed") is None
    assert run.state("step") is None


def test_tcpx_on_a_kernel_without_it_fails_before_anything_is_started(tmp_path: Path) -> None:
    """A Deep Learning VM kernel is not a TCPX kernel: RxDM would exit or idle, and
    NCCL_NET naming the plugin would fail every job, so the node uses plain sockets."""
    run = run_script(tmp_path, "a3-highgpu-8g", kernel=DLVM_KERNEL)
    assert run.returncode != 0
    assert run.state("failed") == "check for a GPUDirect-TCPX kernel"
    assert f"kernel {DLVM_KERNEL} is not one of Google's TCPX kernels" in run.output
    assert not any(call.startswith("docker") for call in run.calls)
    assert not (tmp_path / "nccl.conf").exists()
    assert run.library_path() is None


# -- the verdict is a probe of what a job will use ------------------------------------------


def assert_failed_without_settings(run: Run, step: str) -> None:
    """The node uses plain NCCL: its verdict names the step, and neither nccl.conf nor the
    plugin's library path is left for a job to find."""
    assert run.returncode != 0
    assert run.state("failed") == step, run.output
    assert run.state("ready") is None
    assert not (run.root / "nccl.conf").exists()
    assert run.library_path() is None


@pytest.mark.parametrize("machine", ["a3-highgpu-8g", "a3-megagpu-8g"])
def test_ready_means_the_plugin_loaded_and_rxdm_answered(tmp_path: Path, machine: str) -> None:
    run = run_script(tmp_path, machine)
    assert run.returncode == 0, run.output
    name = {"a3-highgpu-8g": "GPUDirectTCPX_v7 (v7)", "a3-megagpu-8g": "FasTrak (v8)"}[machine]
    assert f"plugin {name} loads" in run.output
    if machine == "a3-highgpu-8g":
        assert "19 RxDM socket(s) answer" in run.output


@pytest.mark.parametrize("machine", ["a3-highgpu-8g", "a3-megagpu-8g"])
def test_a_plugin_missing_a_library_it_needs_fails_the_node(tmp_path: Path, machine: str) -> None:
    """NCCL would fail at communicator init; the probe loads the plugin as NCCL does."""
    broken = compile_plugin(tmp_path / "broken", "GPUDirectTCPX_v7", 7, needs="dlvmabsent")
    run = run_script(tmp_path, machine, plugin=broken)
    assert_failed_without_settings(run, "load the NCCL net plugin as NCCL will")
    assert "the NCCL net plugin does not load" in run.output
    assert "libdlvmabsent.so" in run.output


def test_a_plugin_that_is_not_the_transport_nccl_net_names_fails_the_node(
    tmp_path: Path,
) -> None:
    other = compile_plugin(tmp_path / "other", "Socket", 7)
    run = run_script(tmp_path, "a3-highgpu-8g", plugin=other)
    assert_failed_without_settings(run, "load the NCCL net plugin as NCCL will")
    assert "NCCL_NET is GPUDirectTCPX_v7, but the plugin offers Socket (v7)" in run.output


def test_the_transport_name_is_matched_as_nccl_matches_it_ignoring_case(tmp_path: Path) -> None:
    lower = compile_plugin(tmp_path / "lower", "gpudirecttcpx_v7", 7)
    run = run_script(tmp_path, "a3-highgpu-8g", plugin=lower)
    assert run.returncode == 0, run.output
    assert run.state("ready") == f"tcpx {gpu_network.TCPX_PLUGIN_IMAGE}"


def test_tcpx_rxdm_without_answering_sockets_fails_the_node(tmp_path: Path) -> None:
    """Running is not ready: the plugin reaches RxDM through its sockets."""
    run = run_script(tmp_path, "a3-highgpu-8g", rxdm_missing=None)
    assert_failed_without_settings(run, "wait for the receive-data-path manager's sockets")
    assert "no socket of the receive-data-path manager in" in run.output


@pytest.mark.parametrize(
    "missing",
    [("queue_ids_by_gpu",), ("get_gpu_fd_0000:8b:00.0", "get_gpu_metadata_0000:8b:00.0")],
    ids=["the flow-steering sockets opened last", "one GPU's"],
)
def test_tcpx_rxdm_is_ready_only_once_every_socket_the_plugin_uses_answers(
    tmp_path: Path, missing: tuple[str, ...]
) -> None:
    """RxDM opens its sockets one after another as it sets up: the first one answering is
    not ready. Each GPU of the topology has its two, and the flow-steering three come last."""
    script = gpu_network.setup_script(network("a3-highgpu-8g"))
    expected = rxdm_sockets(script)
    assert len(expected) == 2 * 8 + 3
    assert {"rx_rule_manager", "rx_rule_uninstall", "queue_ids_by_gpu"} <= set(expected)
    run = run_script(tmp_path, "a3-highgpu-8g", rxdm_missing=missing)
    assert_failed_without_settings(run, "wait for the receive-data-path manager's sockets")
    assert f"{len(missing)} not there yet: {' '.join(missing)}" in run.output


def test_tcpxo_rxdm_that_reports_no_health_fails_the_node(tmp_path: Path) -> None:
    run = run_script(tmp_path, "a3-megagpu-8g", rxdm_healthy=False)
    assert_failed_without_settings(run, "check the receive-data-path manager")
    assert "wrote no health file" in run.output


def test_a_gpu_nic_that_is_down_fails_the_node(tmp_path: Path) -> None:
    run = run_script(tmp_path, "a3-megagpu-8g", down=("enp141s0",))
    assert_failed_without_settings(run, "check that network interface enp141s0 is up")


def test_tcpxo_exposes_apertures_installs_writes_nccl_conf_and_waits_for_rxdm(
    tmp_path: Path,
) -> None:
    run = run_script(tmp_path, "a3-megagpu-8g")
    assert run.returncode == 0, run.output
    order = [
        index_of(run.calls, "modprobe import-helper"),
        index_of(run.calls, "mount --bind"),
        index_of(
            run.calls,
            f"docker run --rm --network host --volume /var/lib:/var/lib "
            f"{by_digest(gpu_network.TCPXO_PLUGIN_IMAGE)} install --install-nccl",
        ),
        index_of(run.calls, "docker run --detach --name dlvm-rxdm"),
        index_of(run.calls, "docker logs dlvm-rxdm"),
    ]
    assert order == sorted(order)
    assert f"{tmp_path / 'apertures' / '0000:06:00.0'}" in run.calls[order[1]]
    # The job's processes (the SSH user, not root) map the apertures: readable and writable.
    for resource in (tmp_path / "apertures" / "0000:06:00.0").iterdir():
        assert resource.stat().st_mode & 0o777 == 0o666, resource
    started = run.calls[order[3]]
    # Only the flag the current RxDM takes: --num_nics, --uid and --alsologtostderr are gone.
    assert started.endswith(f"{by_digest(gpu_network.TCPXO_RXDM_IMAGE)} --num_hops=2")
    # dlvm's settings, then the plugin profile's others: its eth0 guess gives way to dlvm's.
    settings = [f"{k}={v}" for k, v in network("a3-megagpu-8g").nccl_settings.items()]
    assert conf_lines(tmp_path) == [*settings, "NCCL_FASTRAK_NUM_FLOWS=2"]
    assert run.library_path() == str(tmp_path / "lib64")
    assert run.state("ready") == f"tcpxo {gpu_network.TCPXO_PLUGIN_IMAGE}"
    # The module was there: nothing installed from apt.
    assert not any(call.startswith("apt-get") for call in run.calls)


HELPER_SOURCE = "usr-src/dmabuf-import-helper-1.1/import-helper.c"


def test_tcpxo_installs_the_dmabuf_import_helper_the_image_lacks(tmp_path: Path) -> None:
    run = run_script(tmp_path, "a3-megagpu-8g", import_helper=False)
    assert run.returncode == 0, run.output
    dkms = index_of(run.calls, "apt-get install --yes --allow-downgrades dkms=9.9")
    headers = index_of(run.calls, f"apt-get install --yes linux-headers-{TCPX_KERNEL}")
    download = index_of(run.calls, "apt-get download dmabuf-import-helper=9.9")
    built = [
        index_of(run.calls, f"dkms {verb} -m dmabuf-import-helper -v 1.1")
        for verb in ("add", "build", "install")
    ]
    assert dkms < headers < download < built[0] < built[1] < built[2]
    assert built[2] < index_of(run.calls, "modprobe import-helper")
    sources = (tmp_path / "apt" / "sources.list.d" / "dlvm-gpudirect-tcpxo-apt.list").read_text()
    assert "ar+https://us-apt.pkg.dev/projects/gce-ai-infra gpudirect-tcpxo-apt main" in sources
    # A 5.15 kernel takes the source as packaged.
    assert "MODULE_IMPORT_NS(DMA_BUF);" in (tmp_path / HELPER_SOURCE).read_text()
    assert not any((tmp_path / "tmp").iterdir())


@pytest.mark.parametrize("failing", ["dkms build", "package check"])
def test_the_import_helpers_download_folder_is_removed_when_a_step_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """A failed command stops the script at once (errexit): its download folder goes too."""
    if failing == "package check":
        pins = dict(gpu_network.PINS)
        pins["import-helper-package"] = Pinned("dmabuf-import-helper", "sha256:" + "00" * 32)
        monkeypatch.setattr(gpu_network, "PINS", pins)
    run = run_script(
        tmp_path, "a3-megagpu-8g", import_helper=False, dkms_build_fails=failing == "dkms build"
    )
    assert run.returncode != 0
    step = {"dkms build": "build the dmabuf import helper (DKMS)"}
    assert run.state("failed") == step.get(failing, "install the dmabuf import helper (DKMS)")
    assert index_of(run.calls, "apt-get download" if failing == "dkms build" else "apt-cache")
    assert not any((tmp_path / "tmp").iterdir())


@pytest.mark.parametrize("kernel", ["6.17.0-1007-gcp", "6.14.0-1011-gcp", "6.13.2"])
def test_the_import_helper_is_fixed_for_kernels_that_name_namespaces_as_strings(
    tmp_path: Path, kernel: str
) -> None:
    """From Linux 6.13 on, the packaged source (MODULE_IMPORT_NS(DMA_BUF)) fails to build:
    it is fixed before DKMS builds it."""
    run = run_script(tmp_path, "a3-megagpu-8g", import_helper=False, kernel=kernel)
    assert run.returncode == 0, run.output
    source = (tmp_path / HELPER_SOURCE).read_text()
    assert 'MODULE_IMPORT_NS("DMA_BUF");' in source
    assert "MODULE_IMPORT_NS(DMA_BUF)" not in source
    assert index_of(run.calls, "dkms build") < index_of(run.calls, "modprobe import-helper")


def test_the_import_helper_is_left_as_packaged_below_6_13(tmp_path: Path) -> None:
    run = run_script(tmp_path, "a3-megagpu-8g", import_helper=False, kernel="6.8.0-1031-gcp")
    assert run.returncode == 0, run.output
    assert "MODULE_IMPORT_NS(DMA_BUF);" in (tmp_path / HELPER_SOURCE).read_text()


def test_gib_installs_the_pinned_package_and_holds_it(tmp_path: Path) -> None:
    run = run_script(tmp_path, "a4-highgpu-8g")
    assert run.returncode == 0, run.output
    install = index_of(
        run.calls, f"apt-get install --yes --allow-downgrades nccl-gib={gpu_network.GIB_VERSION}"
    )
    assert index_of(run.calls, "apt-mark hold nccl-gib") > install
    assert not any(call.startswith("docker") for call in run.calls)
    sources = (tmp_path / "apt" / "sources.list.d" / "dlvm-gpudirect-gib-apt.list").read_text()
    assert "gpudirect-gib-apt main" in sources
    assert conf_lines(tmp_path) == ["NCCL_NET=gIB", "NCCL_IB_QPS_PER_CONNECTION=4"]
    assert run.library_path() == str(tmp_path / "lib64")
    assert index_of(run.calls, "ibv_devices") > install
    assert run.state("ready") == f"gib nccl-gib={gpu_network.GIB_VERSION}"


def test_gib_without_its_rdma_devices_fails_instead_of_naming_the_plugin(
    tmp_path: Path,
) -> None:
    """NCCL_NET=gIB without the RDMA user space or devices fails NCCL at init: the node
    uses plain sockets instead, and the step says why."""
    run = run_script(
        tmp_path, "a4-highgpu-8g", installed_gib=gpu_network.GIB_VERSION, rdma_devices=3
    )
    assert run.returncode != 0
    assert run.state("failed") == "find the 8 RDMA devices"
    assert "ibv_devices lists 3 mlx5 devices, 8 expected" in run.output
    assert not (tmp_path / "nccl.conf").exists()


def test_gib_adds_the_rdma_tools_googles_accelerator_image_lacks(tmp_path: Path) -> None:
    """The accelerator image carries libibverbs (rdma-core), not ibv_devices."""
    run = run_script(
        tmp_path, "a4-highgpu-8g", installed_gib=gpu_network.GIB_VERSION, missing=("ibv_devices",)
    )
    assert "apt-get install --yes --allow-downgrades ibverbs-utils=9.9" in run.calls
    assert not any("rdma-core" in call for call in run.calls)


def test_gib_installs_the_whole_rdma_user_space_another_image_lacks(tmp_path: Path) -> None:
    run = run_script(
        tmp_path,
        "a4-highgpu-8g",
        installed_gib=gpu_network.GIB_VERSION,
        missing=("ibv_devices",),
        rdma_libraries=False,
    )
    libraries = index_of(run.calls, "apt-get install --yes --allow-downgrades rdma-core=9.9")
    tools = index_of(run.calls, "apt-get install --yes --allow-downgrades ibverbs-utils=9.9")
    assert libraries < tools


def test_gib_already_at_the_pinned_version_is_not_installed_again(tmp_path: Path) -> None:
    run = run_script(tmp_path, "a3-ultragpu-8g", installed_gib=gpu_network.GIB_VERSION)
    assert run.returncode == 0, run.output
    assert not any(call.startswith(("apt-get", "curl")) for call in run.calls)
    assert (tmp_path / "nccl.conf").exists()
    assert run.state("ready") == f"gib nccl-gib={gpu_network.GIB_VERSION}"


DOCKER_STEP = "check docker and the NVIDIA container toolkit"


@pytest.mark.parametrize(
    ("machine", "missing", "step"),
    [
        (
            "a3-highgpu-8g",
            ("nvidia-container-cli",),
            "check docker and the NVIDIA container toolkit",
        ),
        ("a3-megagpu-8g", ("docker",), "check docker and the NVIDIA container toolkit"),
    ],
)
def test_a_failed_step_is_recorded_and_fails_the_boot_script(
    tmp_path: Path, machine: str, missing: tuple[str, ...], step: str
) -> None:
    run = run_script(tmp_path, machine, missing=missing)
    assert run.returncode != 0
    assert run.state("failed") == step
    assert run.state("ready") is None
    assert not any(call.startswith("docker run") for call in run.calls)


def test_a_missing_gpu_nic_stops_setup_before_anything_is_installed(tmp_path: Path) -> None:
    """Interface names differ between images: NCCL settings naming an absent one would make
    every job fail, so setup checks them first."""
    run = run_script(tmp_path, "a3-highgpu-8g", absent_interfaces=("enp134s0",))
    assert run.returncode != 0
    assert run.state("failed") == "find network interface enp134s0"
    assert run.calls == []
    assert not (tmp_path / "nccl.conf").exists()


def test_settings_of_an_earlier_boot_are_removed_when_setup_fails(tmp_path: Path) -> None:
    conf = tmp_path / "nccl.conf"
    conf.write_text("# Written by dlvm's GPU network setup.\nNCCL_NET=GPUDirectTCPX_v7\n")
    linker = tmp_path / "ld.so.conf.d"
    linker.mkdir()
    (linker / "000_dlvm-nccl-plugin.conf").write_text("/var/lib/tcpx/lib64\n")
    run = run_script(tmp_path, "a3-highgpu-8g", missing=("docker",))
    assert run.returncode != 0
    assert not conf.exists()
    assert run.library_path() is None
    assert "ldconfig " in run.calls


def test_an_nccl_conf_dlvm_did_not_write_is_left_alone(tmp_path: Path) -> None:
    conf = tmp_path / "nccl.conf"
    conf.write_text("NCCL_DEBUG=WARN\n")
    run = run_script(tmp_path, "a3-highgpu-8g", missing=("docker",))
    assert run.returncode != 0
    assert conf.read_text() == "NCCL_DEBUG=WARN\n"


# -- what dlvm asks of a node once it boots: the probe and the fallback ---------------------


def test_the_probe_answers_with_this_boots_verdict(tmp_path: Path) -> None:
    assert run_script(tmp_path, "a3-megagpu-8g", args=("probe",)).output == "waiting\n"
    run_script(tmp_path, "a3-megagpu-8g")
    probe = run_script(tmp_path, "a3-megagpu-8g", args=("probe",))
    assert probe.output == f"ready tcpxo {gpu_network.TCPXO_PLUGIN_IMAGE}\n"
    # A later boot whose setup has not begun: the folder's verdict is the earlier boot's.
    (tmp_path / "boot_id").write_text("8e3f0c4e-boot-2\n")
    assert run_script(tmp_path, "a3-megagpu-8g", args=("probe",)).output == "waiting\n"
    run_script(tmp_path, "a3-megagpu-8g", missing=("docker",))
    probe = run_script(tmp_path, "a3-megagpu-8g", args=("probe",))
    assert probe.output == "failed check docker and the NVIDIA container toolkit\n"
    assert probe.returncode == 0


def test_the_fallback_takes_the_plugin_away_from_a_node_that_set_it_up(tmp_path: Path) -> None:
    assert run_script(tmp_path, "a3-megagpu-8g").returncode == 0
    assert (tmp_path / "nccl.conf").exists()
    assert run_script(tmp_path, "a3-megagpu-8g").library_path() is not None
    run = run_script(tmp_path, "a3-megagpu-8g", args=("fallback", "setup failed on node-1"))
    assert run.returncode == 0, run.output
    assert not (tmp_path / "nccl.conf").exists()
    assert run.library_path() is None
    assert run.calls == ["ldconfig "]
    assert run.state("fallback") == "setup failed on node-1"
    # The node's own verdict stays what its setup found.
    assert run.state("ready") == f"tcpxo {gpu_network.TCPXO_PLUGIN_IMAGE}"


# -- downloads checked before they are used -------------------------------------------------


@pytest.mark.parametrize("machine", ["a3-highgpu-8g", "a3-megagpu-8g"])
def test_an_image_whose_digest_differs_from_dlvms_record_never_runs(
    tmp_path: Path, machine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = network(machine).stack
    recorded = "sha256:" + "00" * 32
    pins = dict(gpu_network.PINS)
    pins[f"{stack}-plugin"] = Pinned(pins[f"{stack}-plugin"].source, recorded)
    monkeypatch.setattr(gpu_network, "PINS", pins)
    run = run_script(tmp_path, machine)
    assert run.returncode != 0
    assert f"expected {recorded}, got {DIGEST}" in run.output
    assert run.state("failed") == "pull and check the pinned images"
    assert not any(call.startswith("docker run") for call in run.calls)


def test_a_tag_moved_after_a_nodes_first_boot_is_refused_at_the_next(tmp_path: Path) -> None:
    first = run_script(tmp_path, "a3-highgpu-8g")
    assert first.returncode == 0, first.output
    moved = "sha256:" + "cd" * 32
    again = run_script(tmp_path, "a3-highgpu-8g", digest=moved)
    assert again.returncode != 0
    assert f"expected {DIGEST}, got {moved}" in again.output
    assert not any(by_digest(gpu_network.TCPX_PLUGIN_IMAGE, moved) in c for c in again.calls)


def test_an_apt_key_with_other_fingerprints_is_refused_before_apt_trusts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pins = dict(gpu_network.PINS)
    key = pins["cloud-packages-key"]
    pins["cloud-packages-key"] = Pinned(key.source, "0123456789ABCDEF" * 2 + "01234567")
    monkeypatch.setattr(gpu_network, "PINS", pins)
    run = run_script(tmp_path, "a4-highgpu-8g")
    assert run.returncode != 0
    recorded = f"{'0123456789ABCDEF' * 2}01234567"
    assert f"expected keys among {recorded}, got {FINGERPRINTS}" in run.output
    assert not any(call.startswith("apt-get") for call in run.calls)
    assert not (tmp_path / "dlvm-google-cloud.gpg").exists()


@pytest.mark.parametrize(
    "served", [OTHER_KEY, f"{FINGERPRINTS} {OTHER_KEY}"], ids=["another key", "a key added"]
)
def test_an_apt_key_other_than_the_one_google_ships_is_refused_by_the_table_as_it_is(
    tmp_path: Path, served: str
) -> None:
    """No stand-in record: the table's own fingerprints decide, so even a node's first boot
    refuses a key Google does not ship, or Google's key with another beside it."""
    key = gpu_network.PINS["artifact-registry-key"]
    assert sorted(key.expected.split()) == [FINGERPRINTS, RAPTURE_KEY]
    run = run_script(tmp_path, "a4-highgpu-8g", fingerprints=served)
    assert run.returncode != 0
    got = " ".join(sorted(served.split()))
    assert f"{key.source}: expected keys among {key.expected}, got {got}" in run.output
    assert not any(call.startswith("apt-get") for call in run.calls)
    assert not (tmp_path / "dlvm-google-artifact-registry.gpg").exists()
    assert run.state("failed") == f"install the gIB NCCL plugin {gpu_network.GIB_VERSION}"


@pytest.mark.parametrize(
    "served",
    [f"{RAPTURE_KEY} {FINGERPRINTS}", RAPTURE_KEY, FINGERPRINTS],
    ids=["both keys", "the 2022 key alone", "the artifact registry key alone"],
)
def test_a_key_file_holding_any_of_googles_published_keys_is_trusted(
    tmp_path: Path, served: str
) -> None:
    """Google's key file has held one of its keys, or two at once: each file of only keys
    Google publishes passes the table as it is, and apt gets the keyring."""
    run = run_script(tmp_path, "a4-highgpu-8g", fingerprints=served)
    assert run.returncode == 0, run.output
    for name in ("dlvm-google-artifact-registry.gpg", "dlvm-google-cloud.gpg"):
        assert (tmp_path / name).exists(), name
    assert index_of(run.calls, "apt-get install")


def test_the_key_check_reads_real_gnupg_by_primary_fingerprint(
    tmp_path: Path, gnupg: GnuPG
) -> None:
    """pinned_apt_key with the real gpg: a key with a subkey passes on its primary key's
    fingerprint alone (what publishers give), and so does a file of two of the publisher's
    keys, or of one of them; another key beside them, or in their place, is refused before the
    keyring apt reads exists; so is OpenPGP data holding no key, even where nothing is
    recorded (it would otherwise become the node's record). Where nothing is recorded, the
    node's first download decides, exactly."""
    publisher, published = new_key(gnupg, "Publisher <publisher@example.com>")
    second, seconds = new_key(gnupg, "Publisher's other key <publisher@example.com>")
    intruder, intruders = new_key(gnupg, "Intruder <intruder@example.com>")
    signature_only = run_gpg(
        gnupg, "--armor", "--local-user", published, "--detach-sign", stdin="Suite: stable\n"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text('#!/bin/bash\ncat "$SERVED"\n')
    (bin_dir / "curl").chmod(0o755)
    for tool in ("gpg", "awk", "sort", "tr", "mv", "rm", "mkdir", "cat"):
        real = shutil.which(tool)
        assert real, tool
        (bin_dir / tool).symlink_to(real)
    bash = shutil.which("bash")
    assert bash
    node_home = tempfile.mkdtemp(prefix="dlvm-gpg-node-")
    keyring = tmp_path / "keyring.gpg"
    script = PINNED_DOWNLOADS.read_text() + (
        f'pinned_apt_key https://keys.example/key.gpg "$EXPECTED" {keyring}\n'
    )

    def fetch(served: str, expected: str = published) -> subprocess.CompletedProcess[str]:
        (tmp_path / "served.asc").write_text(served)
        keyring.unlink(missing_ok=True)
        env = {
            "PATH": str(bin_dir),
            "GNUPGHOME": node_home,
            "SERVED": str(tmp_path / "served.asc"),
            "EXPECTED": expected,
            "PIN_DIR": str(tmp_path / "pins"),
        }
        return subprocess.run([bash, "-c", script], env=env, capture_output=True, text=True)

    both = f"{published} {seconds}"
    try:
        for served, expected in (
            (publisher, published),
            (publisher + second, both),
            (second, both),
        ):
            accepted = fetch(served, expected)
            assert accepted.returncode == 0, accepted.stderr
            assert keyring.exists()
        for served, expected, got in (
            (publisher + intruder, published, sorted([published, intruders])),
            (intruder, published, [intruders]),
            (publisher + second + intruder, both, sorted([published, seconds, intruders])),
        ):
            refused = fetch(served, expected)
            assert refused.returncode != 0
            assert f"expected keys among {expected}, got {' '.join(got)}" in refused.stderr
            assert not keyring.exists()
            assert not keyring.with_name("keyring.gpg.new").exists()
        keyless = fetch(signature_only, expected="")
        assert keyless.returncode != 0
        assert "https://keys.example/key.gpg: no key in the download" in keyless.stderr
        assert not keyring.exists()
        # Nothing recorded: the node's first download becomes its record, and another file
        # is refused after it.
        assert fetch(publisher, expected="").returncode == 0
        later = fetch(publisher + second, expected="")
        assert later.returncode != 0
        assert f"expected {published}, got {' '.join(sorted([published, seconds]))}" in (
            later.stderr
        )
        (record,) = (tmp_path / "pins").iterdir()
        assert record.read_text() == f"{published}\n"
    finally:
        shutil.rmtree(node_home, ignore_errors=True)


# Every other download of the boot script, one case each: (machine, its PINS entry, what the
# stand-in serves for it, and how run_script is asked to reach the step that downloads it).
NEW_DOWNLOADS = [
    ("a3-megagpu-8g", "artifact-registry-key", FINGERPRINTS, {"import_helper": False}),
    ("a3-megagpu-8g", "transport-package", f"sha256:{DEB_SHA}", {"import_helper": False}),
    ("a3-megagpu-8g", "dkms-package", f"sha256:{DEB_SHA}", {"import_helper": False}),
    ("a3-megagpu-8g", "import-helper-package", f"sha256:{DEB_SHA}", {"import_helper": False}),
    ("a4-highgpu-8g", "gib-package", f"sha256:{DEB_SHA}", {}),
    ("a4-highgpu-8g", "ibverbs-package", f"sha256:{DEB_SHA}", {"missing": ("ibv_devices",)}),
    ("a4-highgpu-8g", "rdma-core-package", f"sha256:{DEB_SHA}", {"rdma_libraries": False}),
]


@pytest.mark.parametrize(("machine", "name", "served", "reach"), NEW_DOWNLOADS)
def test_each_apt_download_other_than_dlvms_record_is_refused_naming_both(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    machine: str,
    name: str,
    served: str,
    reach: dict[str, object],
) -> None:
    recorded = "sha256:" + "00" * 32 if served.startswith("sha256:") else "0123456789ABCDEF" * 2
    pins = dict(gpu_network.PINS)
    pins[name] = Pinned(pins[name].source, recorded)
    monkeypatch.setattr(gpu_network, "PINS", pins)
    run = run_script(tmp_path, machine, **reach)  # type: ignore[arg-type]
    assert run.returncode != 0
    assert f"{pins[name].source}" in run.output
    among = "" if name.endswith("-package") else "keys among "
    assert f"expected {among}{recorded}, got {served}" in run.output
    if name.endswith("-package"):
        package = pins[name].source.partition("=")[0]
        assert not any(
            call.startswith(
                (
                    f"apt-get install --yes --allow-downgrades {package}=",
                    f"apt-get download {package}",
                )
            )
            for call in run.calls
        )
    else:
        assert not any(call.startswith("apt-get") for call in run.calls)
    assert run.state("failed")


def test_a_package_file_replaced_after_a_nodes_first_install_is_refused_at_the_next(
    tmp_path: Path,
) -> None:
    first = run_script(tmp_path, "a4-highgpu-8g")
    assert first.returncode == 0, first.output
    replaced = "12" * 32
    again = run_script(tmp_path, "a4-highgpu-8g", deb_sha=replaced)
    assert again.returncode != 0
    # The first package checked again (the apt transport) is refused, and nothing installed.
    transport = f"{gpu_network.PINS['transport-package'].source}=9.9"
    assert f"{transport}: expected sha256:{DEB_SHA}, got sha256:{replaced}" in again.output
    assert not any(call.startswith("apt-get install") for call in again.calls)
    gib = f"nccl-gib={gpu_network.GIB_VERSION}"
    # The node's record: what the first install of that version listed.
    record = tmp_path / "state" / f"first-{gib.replace('=', '_')}"
    assert record.read_text() == f"sha256:{DEB_SHA}\n"


def test_gcsfuse_from_googles_repository_checks_its_key_and_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The storage script's fallback for an image without gcsfuse: the same checks, run with
    the boot script's stand-ins (sudo runs what it is given)."""
    from dlvm_cluster.providers.gcp import storage

    run_script(tmp_path, "a3-megagpu-8g")  # the stand-ins, in tmp_path/bin
    bin_dir = tmp_path / "bin"
    (bin_dir / "sudo").write_text('#!/bin/bash\nexec "$@"\n')
    (bin_dir / "sudo").chmod(0o755)
    (bin_dir / "lsb_release").write_text("#!/bin/bash\necho noble\n")
    (bin_dir / "lsb_release").chmod(0o755)
    for tool in ("bash",):
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(str(shutil.which(tool)))
    monkeypatch.setattr(gpu_network, "NODE_PIN_DIR", str(tmp_path / "pins"))
    monkeypatch.setattr(storage, "GCSFUSE_KEYRING", str(tmp_path / "dlvm-gcsfuse.gpg"))

    def install(deb_sha: str = DEB_SHA) -> subprocess.CompletedProcess[str]:
        command = storage.gcsfuse_from_google().replace(
            "/etc/apt/sources.list.d", str(tmp_path / "apt" / "sources.list.d")
        )
        (tmp_path / "calls").write_text("")
        env = {"PATH": str(bin_dir), "CALLS": str(tmp_path / "calls"), "FAKE_FPR": FINGERPRINTS}
        env["FAKE_DEB_SHA"] = deb_sha
        return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True)

    first = install()
    assert first.returncode == 0, first.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert "apt-get install --yes --allow-downgrades gcsfuse=9.9" in calls
    assert (tmp_path / "dlvm-gcsfuse.gpg").exists()
    # The package's file replaced since: refused, naming both.
    again = install("34" * 32)
    assert again.returncode != 0
    assert f"gcsfuse=9.9: expected sha256:{DEB_SHA}, got sha256:{'34' * 32}" in again.stderr
    # dlvm's record of the key differs from what is served: refused before apt trusts it.
    pins = dict(gpu_network.PINS)
    key = pins["cloud-packages-key"]
    pins["cloud-packages-key"] = Pinned(key.source, "0123456789ABCDEF" * 2)
    monkeypatch.setattr(gpu_network, "PINS", pins)
    (tmp_path / "dlvm-gcsfuse.gpg").unlink()
    refused = install()
    assert refused.returncode != 0
    assert f"expected keys among {'0123456789ABCDEF' * 2}, got {FINGERPRINTS}" in refused.stderr
    assert not (tmp_path / "dlvm-gcsfuse.gpg").exists()
    assert not any(c.startswith("apt-get") for c in (tmp_path / "calls").read_text().splitlines())
