"""An aws cluster file: what the loader refuses at its line (EC2's rules, keys of another
kind), and the tfvars each kind of node renders to, field by field."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import REPO

from dlvm_cluster.errors import SpecError
from dlvm_cluster.providers import load_spec, load_spec_text
from dlvm_cluster.providers.aws.storage import mount_s3_argv, storage_script
from dlvm_cluster.providers.aws.tfvars import DEFAULT_IMAGE_PARAMETER, aws_tfvars
from dlvm_cluster.spec.model import ClusterSpec

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBr0qYQxTn2e6Eow7Lk2A3oWq4HqRtqMfX7ok6q2ZTXc dlvm-t"
BASE = """
name: t
provider:
  kind: aws
  region: us-east-1
  zones: [us-east-1a, us-east-1b]
  allowed_ssh_cidrs: [198.51.100.0/24]
"""


def spec_of(nodes: str, provider_extra: str = "", tail: str = "") -> ClusterSpec:
    text = BASE + provider_extra + "nodes:\n" + nodes + tail
    return load_spec_text(text, Path("/nowhere/t.yaml")).spec


def refused(text: str, field: str, message: str) -> SpecError:
    """The loader's error for `text`: it names `field` and `message`, at a line."""
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, Path("/nowhere/t.yaml"))
    assert caught.value.field == field, caught.value
    assert message in caught.value.message, caught.value.message
    assert caught.value.location is not None and caught.value.location.line > 1
    return caught.value


@pytest.mark.parametrize(
    ("provider_extra", "nodes", "tail", "field", "message"),
    [
        ("", "  count: 1\n", "", None, None),  # the base loads: the cases below are the rules
        (
            "",
            "  count: 1\n  machine_type: p5.48xlarg\n",
            "",
            "nodes.machine_type",
            "'p5.48xlarg' is not an EC2 instance type",
        ),
        (
            "",
            "  count: 1\n  machine_type: g6.xlarge\n  spot: true\n"
            "  reservation: cr-0123456789abcdef0\n",
            "",
            "nodes.reservation",
            "Spot instances cannot launch into a capacity reservation",
        ),
        (
            "",
            "  count: 1\n  machine_type: p5.48xlarge\n  provisioning: capacity-block\n",
            "",
            "nodes.provisioning",
            "capacity-block needs nodes.reservation",
        ),
        (
            "",
            "  count: 1\n  machine_type: g6.12xlarge\n  provisioning: capacity-block\n"
            "  reservation: cr-0123456789abcdef0\n",
            "",
            "nodes.machine_type",
            "Capacity Blocks are not sold for g6.12xlarge",
        ),
        (
            "",
            "  count: 1\n  accelerator: {type: nvidia-h100-80gb, count: 8}\n",
            "",
            "nodes.accelerator",
            "EC2 instance types carry their GPUs",
        ),
        (
            "",
            "  count: 1\n  spot: true\n",
            "autostop: {action: stop}\n",
            "autostop.action",
            "Spot instances cannot be stopped",
        ),
        (
            "",
            "  count: 1\n",
            "storage: [{mount: /ckpt, bucket: gs://my-bucket}]\n",
            "storage[0].bucket",
            "this provider mounts S3 buckets: give s3://BUCKET",
        ),
        (
            "",
            "  count: 1\n",
            "storage: [{mount: /ckpt, bucket: s3://my_bucket}]\n",
            "storage[0].bucket",
            "is not an S3 bucket name",
        ),
        (
            "",
            "  count: 1\n  image: projects/x/global/images/y\n",
            "",
            "nodes.image",
            "must be an AMI id",
        ),
        ("  vpc: vpc-0a1b2c3d\n", "  count: 1\n", "", "provider.subnet", "give both"),
    ],
)
def test_what_ec2_would_refuse_is_refused_at_its_line(
    provider_extra: str, nodes: str, tail: str, field: str | None, message: str | None
) -> None:
    text = BASE + provider_extra + "nodes:\n" + nodes + tail
    if field is None:
        load_spec_text(text, Path("/nowhere/t.yaml"))
    else:
        assert message is not None
        refused(text, field, message)


def test_a_zone_outside_the_region_is_refused() -> None:
    text = (
        BASE.replace("[us-east-1a, us-east-1b]", "[us-east-1a, us-west-2a]")
        + "nodes:\n  count: 1\n"
    )
    refused(text, "provider.zones[1]", "us-west-2a is not an Availability Zone of us-east-1")


@pytest.mark.parametrize("key", ["max_run_hours: 8", "min_count: 1", "provisioning: flex-start"])
def test_keys_and_values_only_compute_engine_takes_are_refused(key: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text(BASE + f"nodes:\n  count: 1\n  {key}\n", Path("/nowhere/t.yaml"))
    assert caught.value.location is not None
    assert caught.value.field is not None and caught.value.field.startswith("nodes.")


def test_the_examples_load_and_render() -> None:
    block = load_spec(REPO / "examples" / "aws-p5-capacity-block.yaml").spec
    tfvars = aws_tfvars(block, public_key=KEY)
    assert tfvars["instance_type"] == "p5.48xlarge"
    assert tfvars["market"] == "capacity-block"
    assert (tfvars["reservation_preference"], tfvars["reservation_id"]) == (
        "",
        "cr-0123456789abcdef0",
    )
    assert len(tfvars["efa_interfaces"]) == 32
    assert tfvars["efa_interfaces"][:2] == [
        {"network_card": 0, "device_index": 1},
        {"network_card": 1, "device_index": 0},
    ]
    # The block places its instances itself: no placement group of dlvm's.
    assert tfvars["placement_group"] is False
    assert tfvars["buckets"] == {"my-training-checkpoints": {"writable": True}}
    spot = load_spec(REPO / "examples" / "aws-g6-spot.yaml").spec
    tfvars = aws_tfvars(spot, public_key=KEY)
    assert (tfvars["market"], tfvars["reservation_preference"]) == ("spot", "none")
    assert tfvars["efa_interfaces"] == [{"network_card": 0, "device_index": 1}]
    assert tfvars["placement_group"] is True
    assert tfvars["self_delete"] is True
    assert tfvars["zone"] == "us-west-2a"


def test_a_plain_node_renders_field_by_field() -> None:
    tfvars = aws_tfvars(spec_of("  count: 2\n"), public_key=KEY, zone="us-east-1b")
    assert tfvars == {
        "cluster_name": "t",
        "region": "us-east-1",
        "zone": "us-east-1b",
        "profile": "",
        "nodes": {"node-0": {"rank": 0}, "node-1": {"rank": 1}},
        "instance_type": "g6.xlarge",
        "ami": "",
        "ami_parameter": DEFAULT_IMAGE_PARAMETER,
        "disk_gb": 200,
        "disk_type": "gp3",
        "market": "on-demand",
        "reservation_preference": "open",
        "reservation_id": "",
        "efa_interfaces": [],
        "placement_group": False,
        "public_ip": True,
        "allowed_ssh_cidrs": ["198.51.100.0/24"],
        "vpc_id": "",
        "subnet_id": "",
        "vpc_cidr": "10.72.0.0/16",
        "ssh_user": "ubuntu",
        "ssh_public_key": KEY,
        "self_delete": False,
        "buckets": {},
    }


def test_an_ami_id_a_reservation_and_a_read_only_bucket() -> None:
    spec = spec_of(
        "  count: 2\n  machine_type: p5.48xlarge\n  reservation: cr-0123456789abcdef0\n"
        "  image: ami-0123456789abcdef0\n",
        tail="storage:\n  - {mount: /data, bucket: s3://shared-data/set, read_only: true}\n"
        "  - {mount: /ckpt, bucket: s3://shared-data/ckpt}\n"
        "  - {mount: /ro, bucket: s3://other-data, read_only: true}\n",
    )
    tfvars = aws_tfvars(spec, public_key=KEY)
    assert (tfvars["ami"], tfvars["ami_parameter"]) == ("ami-0123456789abcdef0", "")
    assert (tfvars["market"], tfvars["reservation_id"]) == ("on-demand", "cr-0123456789abcdef0")
    assert tfvars["placement_group"] is False
    assert tfvars["buckets"] == {
        "other-data": {"writable": False},
        "shared-data": {"writable": True},
    }


def test_buckets_mount_with_mountpoint_under_systemd() -> None:
    spec = spec_of(
        "  count: 1\n  disk_gb: 400\n",
        tail="storage:\n  - {mount: /data, bucket: s3://shared-data/set, read_only: true}\n"
        "  - {mount: /ckpt, bucket: s3://ckpts, cache: false}\n",
    )
    data, ckpt = spec.storage
    assert mount_s3_argv(data, 51200)[:8] == [
        "mount-s3",
        "--foreground",
        "--allow-other",
        "--uid",
        "$UID_",
        "--gid",
        "$GID_",
        "--prefix",
    ]
    argv = mount_s3_argv(data, 51200)
    assert argv[8:10] == ["set/", "--read-only"]
    assert argv[-4:] == ["--max-cache-size", "51200", "shared-data", "/data"]
    assert "--allow-overwrite" not in argv
    writable = mount_s3_argv(ckpt, 0)
    assert writable[7:] == ["--allow-delete", "--allow-overwrite", "ckpts", "/ckpt"]
    script = storage_script(spec)
    assert script.startswith("MOUNT_S3=$(command -v mount-s3 || true)\n")
    # The one cached mount takes the cache's whole share: a quarter of the 400 GB disk.
    assert "--max-cache-size 102400 shared-data /data" in script  # the unit's ExecStart
    assert script.count("sudo systemctl start dlvm-s3-") == 2
