"""The GPU network of A3 and A4 shapes, as Google's reference deployments build it.

Chosen by the machine type alone. Each shape's GPUs talk across nodes over their own NICs, not
the primary one, and only with a matching NCCL plugin (and, for GPUDirect-TCPX/TCPXO, a
receive-data-path manager running beside the job):

- a3-highgpu-8g (H100): GPUDirect-TCPX, 4 GPU NICs (gVNIC), each on its own VPC (MTU 8244).
- a3-megagpu-8g (H100 Mega): GPUDirect-TCPXO, 8 GPU NICs, each on its own VPC (MTU 8244).
- a3-ultragpu-8g (H200), a4-highgpu-8g (B200): RDMA over Converged Ethernet, a second gVNIC on
  its own VPC and 8 MRDMA NICs on one VPC made with the zone's `vpc-roce` network profile
  (MTU 8896), NCCL with Google's gIB plugin.

This module holds every version dlvm installs for them (one place), the node setup that
installs them (a boot script, `startup-script` metadata, so it runs again after every boot,
when the receive-data-path manager must be started again), the NCCL settings that script
writes to /etc/nccl.conf once the plugin works (with the plugin's folder in the dynamic
linker's path, so jobs need no variable of dlvm's).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from dlvm_cluster.providers.base import BootReadiness
from dlvm_cluster.providers.gcp import shapes
from dlvm_cluster.providers.pinned import PINNED_DOWNLOADS, Pinned

# Every download of the boot script, in one table (each checked as `Pinned` says; the
# checks are providers/pinned_downloads.sh). Images as Google pairs them in its Slurm
# prologs for these shapes (GoogleCloudPlatform/slurm-gcp, tools/prologs-epilogs/
# receive-data-path-manager and receive-data-path-manager-mega): a plugin release and the
# receive-data-path manager (RxDM) release built for it. Change both together. Google
# publishes no digest for any of the four tags (not in those prologs, nor in its GKE
# manifests and release notes, GoogleCloudPlatform/container-engine-accelerators
# gpudirect-tcpx/ and gpudirect-tcpxo/, nor in its Cluster Toolkit blueprints), so for them,
# and for the packages, whose file hashes only the signed index lists, what is trusted is
# what Google's registries serve a node the first time, and from then on only the same
# bytes. The apt keys are recorded as Google publishes them (below). The apt repositories
# (AI_INFRA_APT, CLOUD_APT) are trusted through their checked keys; a package's
# dependencies come from them (or the image's own sources) unpinned.
#
# The keys Google signs these apt repositories with; a key file passes when each of its keys is
# one of them (a key file has held one of them, or both at once), and any other key is
# refused. Both are in GoogleCloudPlatform/compute-image-tools,
# daisy_workflows/image_build/debian/fai_config/package_config/GCE_SPECIFIC.asc, the key file
# Google's Debian images are built with for CLOUD_APT (as of its commit 60a68ec1, "Update
# packages.cloud.google.com apt keyring."):
# - "Artifact Registry Repository Signer", which signs Artifact Registry's apt repositories
#   and Google's cloud package repositories; also the only key of
#   daisy_workflows/image_build/debian/fai_config/files/etc/apt/keyrings/google-keyring.gpg/
#   TRIXIE, all that its Debian 13 images trust for CLOUD_APT.
# - "Rapture Automatic Signing Key (cloud-rapture-signing-key-2022-03-07-08_01_01.pub)",
#   alone in GCE_SPECIFIC.asc from its commit 12fa68b3 ("Update apt bootstrap key.") until
#   the Artifact Registry key joined it.
_GOOGLE_APT_KEYS = " ".join(
    (
        "35BAA0B33E9EB396F59CA838C0BA5CE6DC6315A3",  # Artifact Registry Repository Signer
        "A362B822F6DEDC652817EA46B53DC80D13EDEF05",  # Rapture Automatic Signing Key, 2022
    )
)
PINS: dict[str, Pinned] = {
    "tcpx-plugin": Pinned(
        "us-docker.pkg.dev/gce-ai-infra/gpudirect-tcpx/nccl-plugin-gpudirecttcpx-dev:v3.1.9-2.19.4-12.0"
    ),
    "tcpx-rxdm": Pinned("us-docker.pkg.dev/gce-ai-infra/gpudirect-tcpx/tcpgpudmarxd-dev:v2.0.12"),
    "tcpxo-plugin": Pinned(
        "us-docker.pkg.dev/gce-ai-infra/gpudirect-tcpxo/nccl-plugin-gpudirecttcpx-dev:v1.0.17"
    ),
    "tcpxo-rxdm": Pinned("us-docker.pkg.dev/gce-ai-infra/gpudirect-tcpxo/tcpgpudmarxd-dev:v1.0.23"),
    "artifact-registry-key": Pinned(
        "https://us-apt.pkg.dev/doc/repo-signing-key.gpg", _GOOGLE_APT_KEYS
    ),
    "cloud-packages-key": Pinned(
        "https://packages.cloud.google.com/apt/doc/apt-key.gpg", _GOOGLE_APT_KEYS
    ),
    # Google's ar+https apt transport, from CLOUD_APT, which both repositories below need.
    "transport-package": Pinned("apt-transport-artifact-registry"),
    # TCPXO's dmabuf import helper (a DKMS kernel module) from gpudirect-tcpxo-apt.
    "dkms-package": Pinned("dkms"),
    "import-helper-package": Pinned("dmabuf-import-helper"),
    # The gIB plugin from gpudirect-gib-apt, at the version dlvm pins; and the RDMA user space.
    "gib-package": Pinned("nccl-gib=1.1.0"),
    "ibverbs-package": Pinned("ibverbs-utils"),
    "rdma-core-package": Pinned("rdma-core"),
    # gcsfuse from Google's apt repository (CLOUD_APT), for an image that lacks it.
    "gcsfuse-package": Pinned("gcsfuse"),
}
# The apt repositories the packages come from, each signed by one of the keys above.
AI_INFRA_APT = "ar+https://us-apt.pkg.dev/projects/gce-ai-infra"
CLOUD_APT = "https://packages.cloud.google.com/apt"
TCPX_PLUGIN_IMAGE = PINS["tcpx-plugin"].source
TCPX_RXDM_IMAGE = PINS["tcpx-rxdm"].source
TCPXO_PLUGIN_IMAGE = PINS["tcpxo-plugin"].source
TCPXO_RXDM_IMAGE = PINS["tcpxo-rxdm"].source
# The gIB plugin (an apt package from Google's Artifact Registry), the release Google's A3 Ultra
# and A4 blueprints install and hold.
GIB_VERSION = PINS["gib-package"].source.partition("=")[2]

# Where each plugin's libraries land on the node (the installers' own choice of folder).
TCPX_LIB_DIR = "/var/lib/tcpx/lib64"
TCPXO_LIB_DIR = "/var/lib/tcpxo/lib64"
GIB_LIB_DIR = "/usr/local/gib/lib64"
# The script gIB installs that sets NCCL's variables for the shape it runs on.
GIB_ENV_PROFILE = "/usr/local/gib/scripts/set_nccl_env.sh"
# The folder of the Unix sockets through which the TCPX plugin reaches RxDM.
TCPX_UDS_PATH = "/run/tcpx"

# Interface names on Ubuntu and Debian images with gVNIC (Deep Learning VM images are Ubuntu):
# the primary NIC, then the GPU NICs in PCI order, as Google's NCCL test scripts name them.
_PRIMARY_IFNAME = "enp0s12"
_A3_HIGH_GPU_IFNAMES = ("enp6s0", "enp12s0", "enp134s0", "enp140s0")
_A3_MEGA_GPU_IFNAMES = (
    *("enp6s0", "enp7s0", "enp13s0", "enp14s0"),
    *("enp134s0", "enp135s0", "enp141s0", "enp142s0"),
)

SETUP_BODY = Path(__file__).with_name("gpu_network_setup.sh")
# The boot script's last check of TCPX and TCPXO, a Python program it runs (NET_PROBE).
NET_PROBE = Path(__file__).with_name("nccl_net_probe.py")
# Where a node keeps the first download of each pin: the boot script's state folder, which
# the gcsfuse install shares, so that a node holds one record of each.
NODE_PIN_DIR = "/var/lib/dlvm-gpu-network"
# How long `up` waits for every node's boot script: the driver may take up to 30 minutes to
# appear on a first boot (the script's own limit), then images are pulled or packages built.
BOOT_TIMEOUT_S = 3600.0
# What every node uses when one node's setup failed: NCCL's own transport.
FALLBACK_TITLE = "NCCL over TCP sockets on the primary NIC"
# MTU of the VPCs of GPU gVNICs (what Google's A3 blueprints give them) and of a RoCE VPC.
GPU_VPC_MTU = 8244
ROCE_MTU = 8896
# Every NIC of these shapes, gVNIC or MRDMA, carries up to this much.
_GVNIC_GBPS = 200
_MRDMA_GBPS = 400


@dataclass(frozen=True)
class GpuNetwork:
    """What the module builds for one shape, what setup installs, and what jobs get."""

    stack: str  # the setup script's name for it: tcpx, tcpxo, gib
    title: str  # what the user reads: GPUDirect-TCPX, ...
    gpu_vpc_nics: int  # extra gVNICs, each on a VPC of its own
    gpu_vpc_mtu: int
    rdma_nics: int  # MRDMA NICs, all on one RoCE VPC
    lib_dir: str  # where the plugin's libraries land: setup adds it to /etc/ld.so.conf.d
    # NCCL's and the plugin's variables, written to /etc/nccl.conf once setup succeeded (and
    # only then: with the plugin missing they would make NCCL fail rather than go slower).
    nccl_settings: dict[str, str] = field(default_factory=dict)
    # Interface names setup checks before writing them (primary first, then the GPU NICs).
    interfaces: tuple[str, ...] = ()

    @property
    def gpu_bandwidth_gbps(self) -> int:
        """What the NICs that carry GPU traffic between nodes add up to."""
        if self.rdma_nics:
            return self.rdma_nics * _MRDMA_GBPS
        return self.gpu_vpc_nics * _GVNIC_GBPS

    @property
    def total_bandwidth_gbps(self) -> int:
        """Every NIC of the node, the primary one included (Google's advertised figure)."""
        gvnics = 1 + self.gpu_vpc_nics
        return gvnics * _GVNIC_GBPS + self.rdma_nics * _MRDMA_GBPS

    def layout(self) -> str:
        """The NICs in the order the VM gets them, for `dlvm plan`."""
        parts = ["nic0 gVNIC on the cluster network"]
        last = self.gpu_vpc_nics
        if self.rdma_nics:
            parts.append(f"nic1 gVNIC on a VPC of its own (MTU {self.gpu_vpc_mtu})")
            parts.append(
                f"nic{last + 1}-nic{last + self.rdma_nics} MRDMA on one RoCE VPC "
                f"(MTU {ROCE_MTU}), {_MRDMA_GBPS} Gbps each"
            )
        else:
            parts.append(
                f"nic1-nic{last} gVNIC for GPU traffic, one VPC each (MTU {self.gpu_vpc_mtu}), "
                f"{_GVNIC_GBPS} Gbps each"
            )
        return "; ".join(parts)


def _bindings(nics: tuple[str, ...], cores: tuple[str, ...]) -> str:
    """NIC:cores;NIC:cores, the plugin's form for which CPU cores serve which NIC."""
    return ";".join(f"{nic}:{core}" for nic, core in zip(nics, cores, strict=True))


def _tcpx_settings() -> dict[str, str]:
    """The plugin's variables, as Google's A3 High NCCL test script sets them for Ubuntu."""
    nics = _A3_HIGH_GPU_IFNAMES
    # CPU cores near each NIC's PCIe root: TX and RX threads of the plugin are pinned to them.
    tx_cores = ("8-21,112-125", "8-21,112-125", "60-73,164-177", "60-73,164-177")
    rx_cores = ("22-35,126-139", "22-35,126-139", "74-87,178-191", "74-87,178-191")
    return {
        "NCCL_NET": "GPUDirectTCPX_v7",
        "NCCL_SOCKET_IFNAME": _PRIMARY_IFNAME,
        "NCCL_GPUDIRECTTCPX_CTRL_DEV": _PRIMARY_IFNAME,
        "NCCL_GPUDIRECTTCPX_SOCKET_IFNAME": ",".join(nics),
        "NCCL_GPUDIRECTTCPX_TX_BINDINGS": _bindings(nics, tx_cores),
        "NCCL_GPUDIRECTTCPX_RX_BINDINGS": _bindings(nics, rx_cores),
        "NCCL_GPUDIRECTTCPX_UNIX_CLIENT_PREFIX": TCPX_UDS_PATH,
        "NCCL_GPUDIRECTTCPX_PROGRAM_FLOW_STEERING_WAIT_MICROS": "500000",
        "NCCL_CROSS_NIC": "0",
        "NCCL_ALGO": "Ring",
        "NCCL_PROTO": "Simple",
        "NCCL_NSOCKS_PERTHREAD": "4",
        "NCCL_SOCKET_NTHREADS": "1",
        "NCCL_DYNAMIC_CHUNK_SIZE": "524288",
        "NCCL_P2P_NET_CHUNKSIZE": "524288",
        "NCCL_P2P_PCI_CHUNKSIZE": "524288",
        "NCCL_P2P_NVL_CHUNKSIZE": "1048576",
        "NCCL_BUFFSIZE": "4194304",
        "NCCL_NET_GDR_LEVEL": "PIX",
        "NCCL_P2P_PXN_LEVEL": "0",
    }


def _tcpxo_settings() -> dict[str, str]:
    """The interfaces of TCPXO on Ubuntu; the tuning comes from the plugin's own profile,
    which setup adds to /etc/nccl.conf."""
    return {
        "NCCL_SOCKET_IFNAME": _PRIMARY_IFNAME,
        "NCCL_FASTRAK_CTRL_DEV": _PRIMARY_IFNAME,
        "NCCL_FASTRAK_IFNAME": ",".join(_A3_MEGA_GPU_IFNAMES),
        "NCCL_FASTRAK_LLCM_DEVICE_DIRECTORY": "/dev/aperture_devices",
    }


# gIB's set_nccl_env.sh knows the shape's interfaces and tuning; setup adds it to nccl.conf.
_ROCE = GpuNetwork(
    "gib", "RoCE RDMA, gIB NCCL plugin", 1, ROCE_MTU, 8, GIB_LIB_DIR, {"NCCL_NET": "gIB"}
)
PROFILES: dict[str, GpuNetwork] = {
    "a3-highgpu-8g": GpuNetwork(
        "tcpx",
        "GPUDirect-TCPX",
        4,
        GPU_VPC_MTU,
        0,
        TCPX_LIB_DIR,
        _tcpx_settings(),
        (_PRIMARY_IFNAME, *_A3_HIGH_GPU_IFNAMES),
    ),
    "a3-megagpu-8g": GpuNetwork(
        "tcpxo",
        "GPUDirect-TCPXO",
        8,
        GPU_VPC_MTU,
        0,
        TCPXO_LIB_DIR,
        _tcpxo_settings(),
        (_PRIMARY_IFNAME, *_A3_MEGA_GPU_IFNAMES),
    ),
    "a3-ultragpu-8g": _ROCE,
    "a4-highgpu-8g": _ROCE,
}
# Machine types that get a compact placement policy unless the spec says otherwise: each node's
# NICs are only as fast as the path to the others.
COMPACT_BY_DEFAULT = tuple(PROFILES)


def gpu_network(machine_type: str) -> GpuNetwork | None:
    """The GPU network of a machine type; None for the shapes that have only their primary NIC."""
    return PROFILES.get(shapes.base_machine_type(machine_type))


def roce_profile(zone: str) -> str:
    """The name of a zone's RoCE network profile (the module builds the same one)."""
    return f"{zone}-vpc-roce"


# A3 High's PCI layout, (NIC bus, its GPUs' buses): each NIC sits on the PCIe switch of two GPUs.
_A3_HIGH_BUSES = (
    ("06", ("04", "05")),
    ("0c", ("0a", "0b")),
    ("86", ("84", "85")),
    ("8c", ("8a", "8b")),
)


def _a3_high_rxq_topology() -> str:
    """RxDM's map of A3 High (protobuf text): for each GPU NIC, as Ubuntu names it, its PCI
    address and the two GPUs beside it, each with the NIC's receive queues it owns. RxDM's
    built-in `a3vm` preset assumes the NIC names of Container-Optimized OS (eth1..eth4)."""
    queues = ((8, 9, 10, 11), (12, 13, 14, 15))
    lines: list[str] = []
    for ifname, (nic_bus, gpu_buses) in zip(_A3_HIGH_GPU_IFNAMES, _A3_HIGH_BUSES, strict=True):
        lines.append("gpu_rxq_configs {")
        for gpu_bus, owned in zip(gpu_buses, queues, strict=True):
            lines.append("  gpu_infos {")
            lines.append(f'    gpu_pci_addr: "0000:{gpu_bus}:00.0"')
            lines.extend(f"    queue_ids: {queue}" for queue in owned)
            lines.append("  }")
        lines.append(f'  nic_pci_addr: "0000:{nic_bus}:00.0"')
        lines.append(f'  ifname: "{ifname}"')
        lines.append("}")
    lines += ["rss_set_size: 8", "tcpd_queue_size: 8", "max_rx_rules: 100000"]
    return "\n".join(lines) + "\n"


def _a3_high_rxdm_sockets() -> str:
    """The Unix sockets the TCPX plugin reaches RxDM through, space-separated, as RxDM's source
    at the pinned release (google/tcpgpudmarxd, v2.0.12: cuda/cu_ipc_memfd_exporter.cu and
    src/rx_rule_manager.cc) names them in its --uds_path: for each GPU of the topology,
    get_gpu_fd_ADDRESS and get_gpu_metadata_ADDRESS (its PCI address), through which the
    plugin maps the GPU's receive buffers (--gpu_shmem_type fd); then rx_rule_manager,
    rx_rule_uninstall and queue_ids_by_gpu, for the plugin's flow-steering rules, which RxDM
    opens last, once every GPU's buffers are exported and the NICs tuned. Google documents no
    count; RxDM is ready when all of them answer, not when the first does."""
    names = [
        f"{kind}_0000:{gpu_bus}:00.0"
        for _, gpu_buses in _A3_HIGH_BUSES
        for gpu_bus in gpu_buses
        for kind in ("get_gpu_fd", "get_gpu_metadata")
    ]
    return " ".join([*names, "rx_rule_manager", "rx_rule_uninstall", "queue_ids_by_gpu"])


def setup_script(network: GpuNetwork) -> str:
    """The boot script that installs `network`'s NCCL plugin (and starts RxDM): the pinned
    versions as variables, then the shared body."""
    apt = {
        "AR_KEY": "artifact-registry-key",
        "CLOUD_KEY": "cloud-packages-key",
        "TRANSPORT": "transport-package",
    }
    downloads = {
        "tcpx": {"PLUGIN": "tcpx-plugin", "RXDM": "tcpx-rxdm"},
        "tcpxo": {
            "PLUGIN": "tcpxo-plugin",
            "RXDM": "tcpxo-rxdm",
            **apt,
            "DKMS": "dkms-package",
            "HELPER": "import-helper-package",
        },
        "gib": {
            **apt,
            "GIB": "gib-package",
            "IBVERBS": "ibverbs-package",
            "RDMA_CORE": "rdma-core-package",
        },
    }[network.stack]
    probe = {"NET_PROBE": NET_PROBE.read_text()}
    pins = {
        "tcpx": {
            "UDS_PATH": TCPX_UDS_PATH,
            "RXQ_TOPOLOGY": _a3_high_rxq_topology(),
            "RXDM_SOCKETS": _a3_high_rxdm_sockets(),
            **probe,
        },
        "tcpxo": {**probe},
        "gib": {
            "GIB_VERSION": GIB_VERSION,
            "ENV_PROFILE": GIB_ENV_PROFILE,
            "RDMA_NICS": str(network.rdma_nics),
        },
    }[network.stack]
    if "CLOUD_KEY" in downloads:
        pins |= {"AI_INFRA_APT": AI_INFRA_APT, "CLOUD_APT": CLOUD_APT}
    for prefix, name in downloads.items():
        pins[f"{prefix}_{_download_kind(name)}"] = PINS[name].source
        pins[f"{prefix}_EXPECTED"] = PINS[name].expected
    settings = "".join(f"{name}={value}\n" for name, value in network.nccl_settings.items())
    header = [
        "#!/bin/bash",
        f"# Written by dlvm: the {network.title} NCCL plugin for this machine type.",
        f"GPU_STACK={network.stack}",
        *(f"{name}={shlex.quote(value)}" for name, value in pins.items()),
        f"LIB_DIR={shlex.quote(network.lib_dir)}",
        f"INTERFACES={shlex.quote(' '.join(network.interfaces))}",
        f"DLVM_NCCL_SETTINGS={shlex.quote(settings)}",
    ]
    return "\n".join(header) + "\n" + PINNED_DOWNLOADS.read_text() + SETUP_BODY.read_text()


def _download_kind(name: str) -> str:
    """The boot script's variable suffix for a PINS entry: X_URL, X_PACKAGE or X_IMAGE."""
    if name.endswith("-key"):
        return "URL"
    return "PACKAGE" if name.endswith("-package") else "IMAGE"


def boot_readiness(machine_type: str) -> BootReadiness | None:
    """What orchestrate waits for on each node of such a shape: the boot script's verdict,
    read by the script itself (`probe`), and the switch to plain NCCL (`fallback`)."""
    network = gpu_network(machine_type)
    if network is None:
        return None
    return BootReadiness(
        title=network.title,
        fallback_title=FALLBACK_TITLE,
        script=setup_script(network),
        probe="bash -s probe",
        fallback="sudo -n bash -s fallback",
        timeout_s=BOOT_TIMEOUT_S,
    )


def plan_line(machine_type: str) -> str | None:
    """`dlvm plan`'s line on the GPU network: its kind, the NIC layout, the bandwidth."""
    network = gpu_network(machine_type)
    if network is None:
        return None
    return (
        f"GPU network ({network.title}): {network.layout()}; "
        f"{network.gpu_bandwidth_gbps:,} Gbps between nodes for GPU traffic, "
        f"{network.total_bandwidth_gbps:,} Gbps in all"
    )
