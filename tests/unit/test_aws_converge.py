"""`up`, `status`, `stop`, `start` and `plan` of an aws cluster through the provider, with AWS
answered by moto (and the Stubber for what moto lacks) and Terraform scripted: its first apply
meets EC2 out of capacity in the first zone, and the nodes come up in the next one."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_moto import AnsweredBy, moto_clients, run_node
from botocore.stub import Stubber
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.progress import SilentProgress
from dlvm_cluster.providers import load_spec_text
from dlvm_cluster.providers.aws.converge import provision_aws
from dlvm_cluster.providers.aws.hostkeys import BEGIN, END
from dlvm_cluster.providers.aws.provider import Ec2
from dlvm_cluster.providers.base import Converge, NodeState, Reach
from dlvm_cluster.provision.render import TFVARS
from dlvm_cluster.provision.terraform import RunResult
from dlvm_cluster.state import ClusterState


class Notes(SilentProgress):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


class ScriptedTerraform:
    """Terraform as the apply meets it: EC2 without capacity in us-east-1a; in the zone the
    tfvars name next, the instances made (in moto, tagged as the module tags them)."""

    def __init__(self, workdir: Path, clients: Any) -> None:
        self.workdir, self.clients, self.zones = workdir, clients, []

    def init(self) -> None:
        return None

    def apply(self, replace: list[str] | None = None) -> RunResult:
        tfvars = json.loads((self.workdir / TFVARS).read_text())
        self.zones.append(tfvars["zone"])
        if tfvars["zone"] == "us-east-1a":
            raise ProvisionError(
                "terraform apply failed: creating EC2 Instance: operation error EC2: "
                "RunInstances, api error InsufficientInstanceCapacity: We currently do not "
                "have sufficient g6.12xlarge capacity in the Availability Zone you requested"
            )
        nodes = {}
        for name, node in tfvars["nodes"].items():
            instance = run_node(self.clients, tfvars["cluster_name"], name, tfvars["instance_type"])
            nodes[name] = {
                "rank": node["rank"],
                "ip": f"198.51.100.{10 + node['rank']}",
                "internal_ip": f"10.72.0.{10 + node['rank']}",
                "port": 22,
                "user": tfvars["ssh_user"],
                "zone": tfvars["zone"],
                "instance": instance,
                "host_key": "",
            }
        return RunResult(returncode=0, outputs={"nodes": nodes})


def host_key() -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def refuse(*_: object) -> Any:
    raise AssertionError("the aws provider never connects over SSH")


def test_up_fails_over_to_the_next_zone_and_pins_console_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with moto_clients(monkeypatch) as clients:
        ami = clients.ec2.describe_images(
            Owners=["amazon"], Filters=[{"Name": "architecture", "Values": ["x86_64"]}]
        )["Images"][0]["ImageId"]
        text = (
            "name: t\nprovider:\n  kind: aws\n  region: us-east-1\n"
            "  zones: [us-east-1a, us-east-1b]\n  allowed_ssh_cidrs: [198.51.100.0/24]\n"
            f"nodes:\n  count: 2\n  machine_type: g6.12xlarge\n  image: {ami}\n"
        )
        loaded = load_spec_text(text, tmp_path / "t.yaml")
        state = ClusterState("t", tmp_path / "state")
        # What moto does not answer: the G vCPU quota, and consoles that show host keys.
        quotas = Stubber(boto3.client("service-quotas", region_name="us-east-1"))
        quotas.add_response(
            "get_service_quota",
            {"Quota": {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA", "Value": 192.0}},
            {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"},
        )
        consoles = Stubber(boto3.client("ec2", region_name="us-east-1"))
        keys = [host_key(), host_key()]
        for key in keys:
            block = f"[   41.0] cloud-init\n{BEGIN}\n{key} root@ip\n{END}\n"
            consoles.add_response(
                "get_console_output",
                {"InstanceId": "i-0", "Output": base64.b64encode(block.encode()).decode()},
            )
        quotas.activate()
        consoles.activate()
        api = dataclasses.replace(
            clients,
            quotas=quotas.client,
            ec2=AnsweredBy(clients.ec2, consoles.client, "get_console_output"),
        )
        progress = Notes()
        scripted: list[ScriptedTerraform] = []

        def terraform(workdir: Path, _events: object) -> ScriptedTerraform:
            scripted.append(ScriptedTerraform(workdir, clients))
            return scripted[-1]

        request = Converge(
            loaded=loaded,
            state=state,
            previous=None,
            applied=False,
            progress=progress,
            reach=Reach(unreachable=refuse, host_key=refuse),
        )
        inventory, changed = provision_aws(
            request,
            clients=api,
            terraform_factory=terraform,  # type: ignore[arg-type]
        )
        assert changed
        assert scripted[0].zones == ["us-east-1a", "us-east-1b"]
        failover = "no capacity for g6.12xlarge in us-east-1a now: trying us-east-1b"
        assert any(failover in note for note in progress.notes)
        assert json.loads((state.terraform_dir / TFVARS).read_text())["zone"] == "us-east-1b"
        assert [node.host_key for node in inventory.nodes] == keys
        assert inventory.env == {"FI_PROVIDER": "efa"}
        assert inventory.gpus_per_node == 4
        quotas.assert_no_pending_responses()
        consoles.assert_no_pending_responses()

        # status, stop, start: the provider finds the instances by their tags, in the region
        # the state dir recorded.
        provider = Ec2(state, loaded.spec)  # bound, as orchestrate builds it
        assert provider.node_states(inventory) == {
            "node-0": NodeState.RUNNING,
            "node-1": NodeState.RUNNING,
        }
        provider.stop_nodes(inventory, progress, by="user")
        assert set(provider.node_states(inventory).values()) == {NodeState.STOPPED}
        assert provider.stop_marks(inventory) == {}  # stopped by the API, not autostop
        provider.start_nodes(inventory, progress)
        assert set(provider.node_states(inventory).values()) == {NodeState.RUNNING}

        # plan's notes: how the instances are provided, the EFA layout, a price line (moto has
        # no Price List API: it says AWS gave none; test_aws_pricing covers the figures).
        notes = provider.plan_notes()
        assert (
            notes[0]
            == "capacity: on-demand; reservation: any open one that matches (EC2's default)"
        )
        assert any(n.startswith("network: 1 EFA-only interface per node") for n in notes)
        assert any(n.startswith("price: ") and "g6.12xlarge" in n for n in notes)
