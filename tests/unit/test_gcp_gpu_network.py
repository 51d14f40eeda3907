"""The GPU networks of A3 and A4, checked offline: what is rendered for each shape, the boot
script that installs the NCCL plugins (valid bash, the pinned versions), the environment jobs
get, the placement default and what `plan` says. Whether the plugins reach their bandwidth
needs the machines themselves (README, "GPU networks")."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from terraform_schema import load_module, typed

from dlvm_cluster.providers import load_spec_text
from dlvm_cluster.providers.gcp import gpu_network
from dlvm_cluster.providers.gcp.plan import gcp_plan
from dlvm_cluster.providers.gcp.preflight import spec_warnings
from dlvm_cluster.providers.gcp.report import gcp_plan_notes, network_lines
from dlvm_cluster.providers.gcp.tfvars import compact_placement, gcp_tfvars
from dlvm_cluster.provision.modules import module_dir
from dlvm_cluster.spec.model import ClusterSpec

PROVIDER: dict[str, Any] = {
    "kind": "gcp",
    "project": "p",
    "region": "us-central1",
    "zones": ["us-central1-a"],
    "allowed_ssh_cidrs": ["198.51.100.0/24"],
}
# machine type -> (stack, GPU-VPC gVNICs, their MTU, MRDMA NICs, Gbps for GPU traffic)
SHAPES = {
    "a3-highgpu-8g": ("tcpx", 4, 8244, 0, 800),
    "a3-megagpu-8g": ("tcpxo", 8, 8244, 0, 1600),
    "a3-ultragpu-8g": ("gib", 1, 8896, 8, 3200),
    "a4-highgpu-8g": ("gib", 1, 8896, 8, 3200),
}


def no_on_demand(machine: str) -> dict[str, Any]:
    return {"spot": True} if machine.startswith(("a3-ultragpu", "a4-")) else {}


def spec(machine: str, provider: dict[str, Any] | None = None, **nodes: Any) -> ClusterSpec:
    text = json.dumps(
        {
            "name": "t",
            "provider": {**PROVIDER, **(provider or {})},
            # A3 Ultra and A4 are not sold on demand: Spot keeps the defaults of the others.
            "nodes": {"count": 2, "machine_type": machine, **no_on_demand(machine), **nodes},
        }
    )
    return load_spec_text(text, Path("/nowhere/t.yaml")).spec


@pytest.mark.parametrize("machine", SHAPES)
def test_each_shape_renders_its_nics(machine: str) -> None:
    stack, vpc_nics, mtu, rdma, _ = SHAPES[machine]
    tfvars = gcp_tfvars(spec(machine), public_key="k")
    assert (tfvars["gpu_vpc_nics"], tfvars["gpu_vpc_mtu"], tfvars["rdma_nics"]) == (
        vpc_nics,
        mtu,
        rdma,
    )
    assert tfvars["nic_type"] == "GVNIC"
    assert f"\nGPU_STACK={stack}\n" in tfvars["startup_script"]


@pytest.mark.parametrize("machine", ["a3-highgpu-8g-nolssd", "a4-highgpu-8g-lowmem"])
def test_variants_keep_the_network_of_their_shape(machine: str) -> None:
    assert gpu_network.gpu_network(machine) is gpu_network.gpu_network(machine.rsplit("-", 1)[0])


@pytest.mark.parametrize(
    "machine", ["a2-highgpu-8g", "a2-ultragpu-1g", "g2-standard-96", "n2-standard-8"]
)
def test_other_shapes_get_no_gpu_network(machine: str) -> None:
    tfvars = gcp_tfvars(spec(machine), public_key="k")
    assert (tfvars["gpu_vpc_nics"], tfvars["rdma_nics"], tfvars["startup_script"]) == (0, 0, "")
    assert network_lines(gcp_plan(spec(machine))) == []


# -- the module ----------------------------------------------------------------------------


def test_the_module_builds_gpu_vpcs_and_a_roce_vpc() -> None:
    resources = typed(load_module(module_dir("gcp")), "resource")
    gpu = resources[("google_compute_network", "gpu")]
    assert gpu["count"] == "${var.gpu_vpc_nics}"
    assert gpu["mtu"] == "${var.gpu_vpc_mtu}"
    assert resources[("google_compute_subnetwork", "gpu")]["count"] == "${var.gpu_vpc_nics}"
    firewall = resources[("google_compute_firewall", "gpu_internal")]
    assert firewall["count"] == "${var.gpu_vpc_nics}"
    assert firewall["allow"][0]["protocol"] == '"all"'
    rdma = resources[("google_compute_network", "rdma")]
    assert rdma["mtu"] == 8896
    assert rdma["network_profile"] == "${local.rdma_network_profile}"
    main = (module_dir("gcp") / "main.tf").read_text()
    # Google's name for a zone's RoCE profile: projects/P/global/networkProfiles/ZONE-vpc-roce.
    assert (
        'rdma_network_profile = "projects/${var.project}/global/networkProfiles/'
        '${var.zone}-vpc-roce"'
    ) in main
    assert resources[("google_compute_subnetwork", "rdma")]["count"] == "${var.rdma_nics}"
    assert '{ "startup-script" = var.startup_script }' in main


def test_extra_nics_follow_the_primary_gvnics_then_mrdma() -> None:
    """One list of NICs (the module's local.nics) serves the VMs and a gang's template."""
    module = load_module(module_dir("gcp"))
    (locals_block,) = [block for block in module["locals"] if "nics" in block]
    nics = locals_block["nics"]
    order = [
        nics.index(needle) for needle in ("local.network", "gpu", '"GVNIC"', "rdma", '"MRDMA"')
    ]
    assert order == sorted(order), nics
    resources = typed(module, "resource")
    for owner in (
        ("google_compute_instance", "node"),
        ("google_compute_instance_template", "flex"),
    ):
        body = resources[owner]
        assert "network_interface" not in body
        [nic] = [d['"network_interface"'] for d in body["dynamic"] if '"network_interface"' in d]
        assert nic["for_each"] == "${local.nics}"


# -- the boot script -----------------------------------------------------------------------


@pytest.mark.parametrize("machine", SHAPES)
def test_the_boot_script_is_valid_bash(tmp_path: Path, machine: str) -> None:
    network = gpu_network.gpu_network(machine)
    assert network is not None
    script = tmp_path / "startup.sh"
    script.write_text(gpu_network.setup_script(network))
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_bash_n_catches_a_broken_script(tmp_path: Path) -> None:
    """The check above can fail: the same body with one `fi` removed is refused."""
    network = gpu_network.gpu_network("a3-highgpu-8g")
    assert network is not None
    broken = gpu_network.setup_script(network).replace("\n\tfi\n", "\n", 1)
    script = tmp_path / "broken.sh"
    script.write_text(broken)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode != 0


def header_text(machine: str) -> str:
    network = gpu_network.gpu_network(machine)
    assert network is not None
    return gpu_network.setup_script(network).split(gpu_network.SETUP_BODY.read_text())[0]


def header(machine: str) -> dict[str, str]:
    """The one-line variables the script's header sets, as bash itself reads them."""
    text = header_text(machine)
    names = (
        "GPU_STACK PLUGIN_IMAGE RXDM_IMAGE GIB_VERSION LIB_DIR UDS_PATH ENV_PROFILE INTERFACES "
        "RDMA_NICS GIB_PACKAGE"
    )
    shown = f'\nfor n in {names}; do [[ -v $n ]] && printf "%s=%s\\n" "$n" "${{!n}}"; done; true'
    out = subprocess.run(
        ["bash", "-c", text + shown], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def test_tcpx_pins_a_matching_plugin_and_rxdm() -> None:
    pins = header("a3-highgpu-8g")
    assert pins["PLUGIN_IMAGE"] == gpu_network.TCPX_PLUGIN_IMAGE
    assert pins["RXDM_IMAGE"] == gpu_network.TCPX_RXDM_IMAGE
    # Both from the gpudirect-tcpx repository, each at one fixed tag (never :latest).
    for image in (pins["PLUGIN_IMAGE"], pins["RXDM_IMAGE"]):
        assert "/gpudirect-tcpx/" in image
        assert re.search(r":v\d+\.\d+\.\d+", image), image
    assert pins["UDS_PATH"] == gpu_network.TCPX_UDS_PATH
    settings = settings_of("a3-highgpu-8g")
    assert settings["NCCL_GPUDIRECTTCPX_UNIX_CLIENT_PREFIX"] == pins["UDS_PATH"]


def test_tcpxo_pins_a_matching_plugin_and_rxdm() -> None:
    pins = header("a3-megagpu-8g")
    assert pins["PLUGIN_IMAGE"] == gpu_network.TCPXO_PLUGIN_IMAGE
    assert pins["RXDM_IMAGE"] == gpu_network.TCPXO_RXDM_IMAGE
    for image in (pins["PLUGIN_IMAGE"], pins["RXDM_IMAGE"]):
        assert "/gpudirect-tcpxo/" in image
        assert re.search(r":v\d+\.\d+\.\d+$", image), image


@pytest.mark.parametrize("machine", ["a3-ultragpu-8g", "a4-highgpu-8g"])
def test_gib_pins_one_package_version(machine: str) -> None:
    pins = header(machine)
    assert pins["GIB_VERSION"] == gpu_network.GIB_VERSION
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["GIB_VERSION"])
    body = gpu_network.SETUP_BODY.read_text()
    assert pins["GIB_PACKAGE"] == f"nccl-gib={gpu_network.GIB_VERSION}"
    assert 'pinned_apt_package "${GIB_PACKAGE}" "${GIB_EXPECTED}"' in body
    assert "apt-mark hold nccl-gib" in body
    assert pins["RDMA_NICS"] == "8"


def test_every_version_lives_in_one_place() -> None:
    """No image tag or package version in the script body: the header carries them all."""
    body = gpu_network.SETUP_BODY.read_text()
    assert not re.search(r":v\d+\.\d+", body)
    assert gpu_network.GIB_VERSION not in body


# -- what jobs get -------------------------------------------------------------------------


def settings_of(machine: str) -> dict[str, str]:
    """The NCCL settings the script's header carries, as bash reads them."""
    text = subprocess.run(
        ["bash", "-c", f"{header_text(machine)}\nprintf '%s' \"$DLVM_NCCL_SETTINGS\""],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("=", 1) for line in text.splitlines())


def test_the_tcpx_topology_names_each_nic_as_ubuntu_does() -> None:
    """RxDM's manual preset with the GPU NICs under the names NCCL is told (enp6s0, ...),
    each beside its two GPUs with four receive queues each."""
    topology = subprocess.run(
        ["bash", "-c", header_text("a3-highgpu-8g") + '\nprintf "%s" "$RXQ_TOPOLOGY"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    nics = settings_of("a3-highgpu-8g")["NCCL_GPUDIRECTTCPX_SOCKET_IFNAME"].split(",")
    assert re.findall(r'ifname: "(\w+)"', topology) == nics
    assert topology.count("gpu_infos {") == 8
    assert len(set(re.findall(r'gpu_pci_addr: "([0-9a-f:.]+)"', topology))) == 8
    assert topology.count("queue_ids:") == 32


def test_tcpx_settings_name_one_socket_per_gpu_nic() -> None:
    settings = settings_of("a3-highgpu-8g")
    assert settings["NCCL_NET"] == "GPUDirectTCPX_v7"
    nics = settings["NCCL_GPUDIRECTTCPX_SOCKET_IFNAME"].split(",")
    assert len(nics) == SHAPES["a3-highgpu-8g"][1]
    # Control traffic and NCCL's bootstrap on the primary NIC, never on a GPU NIC.
    assert settings["NCCL_SOCKET_IFNAME"] == settings["NCCL_GPUDIRECTTCPX_CTRL_DEV"]
    assert settings["NCCL_SOCKET_IFNAME"] not in nics
    for key in ("NCCL_GPUDIRECTTCPX_TX_BINDINGS", "NCCL_GPUDIRECTTCPX_RX_BINDINGS"):
        assert [binding.split(":")[0] for binding in settings[key].split(";")] == nics
    # Only NCCL's own variables and the plugin's (its documented prefix).
    assert all(name.startswith("NCCL_") for name in settings), sorted(settings)
    # Setup checks that exactly these interfaces exist before it writes them.
    assert header("a3-highgpu-8g")["INTERFACES"].split() == [settings["NCCL_SOCKET_IFNAME"], *nics]


def test_tcpxo_settings_name_one_interface_per_gpu_nic() -> None:
    settings = settings_of("a3-megagpu-8g")
    nics = settings["NCCL_FASTRAK_IFNAME"].split(",")
    assert len(nics) == len(set(nics)) == SHAPES["a3-megagpu-8g"][1]
    assert settings["NCCL_FASTRAK_CTRL_DEV"] == settings["NCCL_SOCKET_IFNAME"] not in nics
    assert header("a3-megagpu-8g")["INTERFACES"].split() == [settings["NCCL_SOCKET_IFNAME"], *nics]
    body = gpu_network.SETUP_BODY.read_text()
    # The tuning comes from the plugin's own profile, added to /etc/nccl.conf.
    assert 'write_nccl_conf "${LIB_DIR}/nccl-env-profile.sh"' in body


def test_gib_settings_pick_the_plugin_and_the_shape_tuning_from_its_script() -> None:
    assert settings_of("a4-highgpu-8g") == {"NCCL_NET": "gIB"}
    assert header("a4-highgpu-8g")["ENV_PROFILE"] == "/usr/local/gib/scripts/set_nccl_env.sh"
    assert 'write_nccl_conf "${ENV_PROFILE}"' in gpu_network.SETUP_BODY.read_text()


# -- placement and plan --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "nodes", "expected"),
    [
        ({}, {}, True),
        ({}, {"provisioning": "spot"}, True),
        ({"compact_placement": False}, {}, False),
        # Dynamic Workload Scheduler places flex-start VMs itself.
        ({}, {"provisioning": "flex-start", "max_run_hours": 24}, False),
        # A VM with a placement policy consumes only a reservation made with that policy.
        ({}, {"reservation": "h100-pool"}, False),
    ],
)
def test_compact_placement_is_on_by_default_only_where_it_cannot_hurt(
    provider: dict[str, Any], nodes: dict[str, Any], expected: bool
) -> None:
    assert compact_placement(gcp_plan(spec("a3-megagpu-8g", provider, **nodes))) is expected


def test_compact_placement_stays_off_by_default_elsewhere() -> None:
    assert compact_placement(gcp_plan(spec("a2-highgpu-8g"))) is False
    assert compact_placement(gcp_plan(spec("a2-highgpu-8g", {"compact_placement": True}))) is True


@pytest.mark.parametrize("machine", SHAPES)
def test_plan_shows_the_nic_layout_and_bandwidth(machine: str) -> None:
    _, vpc_nics, mtu, rdma, gbps = SHAPES[machine]
    network_line, placement = network_lines(gcp_plan(spec(machine)))
    assert f"{gbps:,} Gbps between nodes for GPU traffic" in network_line
    assert "nic0 gVNIC on the cluster network" in network_line
    assert f"MTU {mtu}" in network_line
    last = vpc_nics + rdma
    assert f"nic{last} " in network_line or f"-nic{last} " in network_line
    assert f"nic{last + 1}" not in network_line
    assert placement == "placement: compact (dlvm's default for the shape)"


def test_private_nodes_on_a_given_network_are_warned_that_setup_downloads_the_plugin() -> None:
    """dlvm makes Cloud NAT only on a network it makes: on one given, egress is the network's."""
    private = {"public_ip": False, "allowed_ssh_cidrs": []}

    def about_egress(machine: str, provider: dict[str, Any]) -> list[str]:
        return [w for w in spec_warnings(gcp_plan(spec(machine, provider))) if "public_ip" in w]

    assert about_egress("a3-highgpu-8g", private) == []
    given = {**private, "network": "corp"}
    (warning,) = about_egress("a3-highgpu-8g", given)
    assert "dlvm adds no Cloud NAT there" in warning
    assert "downloads the GPUDirect-TCPX NCCL plugin" in warning
    (warning,) = spec_warnings(gcp_plan(spec("a2-highgpu-8g", given)))
    assert "plugin" not in warning


def test_plan_notes_put_the_gpu_network_before_the_price() -> None:
    notes = gcp_plan_notes(gcp_plan(spec("a3-megagpu-8g")))
    network = next(i for i, note in enumerate(notes) if note.startswith("GPU network"))
    assert notes[network + 1].startswith("placement: compact")
    assert network > next(i for i, note in enumerate(notes) if note.startswith("capacity:"))
    assert len(notes) == network + 3  # the price line last
