"""The install of Mountpoint for Amazon S3 on an AWS node that lacks it, run for real: the
storage script's install step under sh and bash, real GnuPG (gpg, gpgv) on keys made at test
time, and stand-ins for the network and the package manager: curl serves files from a folder
(a 404 for what is not there), apt-get records the package it is given (and puts a mount-s3
on PATH), sudo runs what it is given. What this shows: the package is installed only when
its signature is good and made by a recorded key, from a key file that holds no other key;
every other case stops before apt with what was expected and what came. Downloading from
AWS needs a node with a route out."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from openpgp import GnuPG, new_key, run_gpg, subkey_fingerprint

from dlvm_cluster.providers import load_spec_text
from dlvm_cluster.providers.aws import storage
from dlvm_cluster.providers.pinned import Pinned

CURL = r"""#!/bin/bash
out="" url=""
while [[ $# -gt 0 ]]; do
	case $1 in
	-o) out=$2; shift ;;
	-*) ;;
	*) url=$1 ;;
	esac
	shift
done
served=$SERVED/${url##*/}
[[ -f $served ]] || { echo "curl: (22) The requested URL returned error: 404" >&2; exit 22; }
if [[ -n $out ]]; then cat "$served" >"$out"; else cat "$served"; fi
"""
APT_GET = r"""#!/bin/bash
printf 'apt-get %s\n' "$*" >>"$CALLS"
for arg in "$@"; do [[ -f $arg ]] && cp "$arg" "$INSTALLED"; done
printf '#!/bin/sh\n' >"${0%/*}/mount-s3" && chmod +x "${0%/*}/mount-s3"
"""
SUDO = '#!/bin/bash\nexec "$@"\n'
TOOLS = ("bash", "gpg", "gpgv", "gpgconf", "awk", "sort", "tr", "mv", "rm", "mkdir", "mktemp")
TOOLS += ("cat", "cp", "chmod")
PACKAGE = b"!<arch>\nMountpoint for Amazon S3, as AWS built it\n"


@dataclass
class Node:
    """A folder that stands for a node: its commands, what it is served, what it ran."""

    root: Path

    @property
    def served(self) -> Path:
        return self.root / "served"

    def serve(self, keys: str, package: bytes, signature: str | None) -> None:
        shutil.rmtree(self.served, ignore_errors=True)
        self.served.mkdir()
        (self.served / "KEYS").write_text(keys)
        (self.served / "mount-s3.deb").write_bytes(package)
        if signature is not None:
            (self.served / "mount-s3.deb.asc").write_text(signature)

    def run(self, script: str, shell: str = "bash") -> subprocess.CompletedProcess[str]:
        """`script` as the node's shell runs it; what apt-get was given, fresh each run."""
        for path in (self.root / "calls", self.root / "installed"):
            path.unlink(missing_ok=True)
        env = {
            "PATH": str(self.root / "bin"),
            "SERVED": str(self.served),
            "CALLS": str(self.root / "calls"),
            "INSTALLED": str(self.root / "installed"),
            "TMPDIR": str(self.root / "tmp"),
        }
        command = [str(shutil.which(shell)), "-e", "-c", script]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    def install(self) -> subprocess.CompletedProcess[str]:
        return self.run(storage.mount_s3_from_aws())

    def apt_calls(self) -> list[str]:
        calls = self.root / "calls"
        return calls.read_text().splitlines() if calls.exists() else []

    def installed(self) -> bytes | None:
        path = self.root / "installed"
        return path.read_bytes() if path.exists() else None

    def leftovers(self) -> list[Path]:
        return list((self.root / "tmp").iterdir())


@pytest.fixture
def node(tmp_path: Path) -> Node:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "tmp").mkdir()
    for name, text in (("curl", CURL), ("apt-get", APT_GET), ("sudo", SUDO)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for tool in TOOLS:
        real = shutil.which(tool)
        assert real, f"{tool}: GnuPG's gpg and gpgv are test tools examples/install.sh installs"
        (bin_dir / tool).symlink_to(real)
    return Node(tmp_path)


@dataclass
class Keys:
    """AWS's stand-in: a key that signs with a subkey (as a publisher's may), an older key of
    the same publisher, and someone else's key; all made now."""

    gnupg: GnuPG
    publisher: str
    published: str
    older: str
    olders: str
    intruder: str
    intruders: str

    def sign(self, signer: str, data: bytes = PACKAGE) -> str:
        """An armored detached signature of `data` by the key or subkey `signer`."""
        return run_gpg(
            self.gnupg, "--armor", "--local-user", f"{signer}!", "--detach-sign", stdin=data
        )


@pytest.fixture
def keys(gnupg: GnuPG, monkeypatch: pytest.MonkeyPatch) -> Keys:
    """The keys, with the publisher's two recorded in place of AWS's (sorted, as recorded)."""
    publisher, published = new_key(gnupg, "Publisher <publisher@example.com>", subkey="sign")
    older, olders = new_key(gnupg, "Publisher 2019 <publisher@example.com>")
    intruder, intruders = new_key(gnupg, "Intruder <intruder@example.com>")
    recorded = " ".join(sorted([published, olders]))
    monkeypatch.setattr(storage, "MOUNT_S3_DEB", Pinned(storage.MOUNT_S3_DEB.source, recorded))
    return Keys(gnupg, publisher, published, older, olders, intruder, intruders)


def test_mountpoint_is_installed_once_signed_by_a_recorded_key(node: Node, keys: Keys) -> None:
    """Signed with the publisher's signing subkey (it counts for its primary key), from a key
    file holding one or both recorded keys: the very bytes served are installed."""
    signature = keys.sign(subkey_fingerprint(keys.gnupg, keys.published))
    for served_keys in (keys.publisher, keys.publisher + keys.older):
        node.serve(served_keys, PACKAGE, signature)
        accepted = node.install()
        assert accepted.returncode == 0, accepted.stderr
        (call,) = node.apt_calls()
        assert call.startswith("apt-get install -y ") and call.endswith("/mount-s3.deb")
        assert node.installed() == PACKAGE
        assert node.leftovers() == []  # the download folders and GnuPG homes are gone
    # The older key's signature counts too (AWS lists both).
    node.serve(keys.publisher + keys.older, PACKAGE, keys.sign(keys.olders))
    assert node.install().returncode == 0


def refused(node: Node, expected: str) -> str:
    """Runs the install, which must stop before apt with `expected` in its words."""
    result = node.install()
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert node.apt_calls() == []
    assert node.installed() is None
    assert node.leftovers() == []
    return result.stderr


def test_a_key_file_with_another_key_is_refused_naming_both(node: Node, keys: Keys) -> None:
    url = storage.MOUNT_S3_KEYS
    recorded = storage.MOUNT_S3_DEB.expected
    # Another key in place of the publisher's, signing the package.
    node.serve(keys.intruder, PACKAGE, keys.sign(keys.intruders))
    refused(node, f"{url}: expected keys among {recorded}, got {keys.intruders}")
    # Another key added beside the publisher's, whatever signed.
    node.serve(keys.publisher + keys.intruder, PACKAGE, keys.sign(keys.published))
    both = " ".join(sorted([keys.published, keys.intruders]))
    refused(node, f"{url}: expected keys among {recorded}, got {both}")
    # OpenPGP data that holds no key at all.
    node.serve(keys.sign(keys.published), PACKAGE, keys.sign(keys.published))
    refused(node, f"{url}: expected keys among {recorded}, got no key")


def test_a_bad_signature_is_refused(node: Node, keys: Keys) -> None:
    """The package is not the one the publisher signed; or another key signed it."""
    package = storage.MOUNT_S3_DEB.source
    recorded = storage.MOUNT_S3_DEB.expected
    node.serve(keys.publisher, PACKAGE + b"and a little more\n", keys.sign(keys.published))
    long_id = keys.published[-16:]
    refused(
        node, f"{package}: expected a good signature by one of {recorded}, got BADSIG {long_id}"
    )
    node.serve(keys.publisher, PACKAGE, keys.sign(keys.intruders))
    stderr = refused(node, f"{package}: expected a good signature by one of {recorded}, got ")
    assert f"ERRSIG {keys.intruders[-16:]}" in stderr
    node.serve(keys.publisher, PACKAGE, "-----BEGIN PGP SIGNATURE-----\nnonsense\n")
    refused(node, f"{package}: expected a good signature by one of {recorded}, got ")


def test_a_missing_signature_is_refused(node: Node, keys: Keys) -> None:
    package = storage.MOUNT_S3_DEB.source
    recorded = storage.MOUNT_S3_DEB.expected
    node.serve(keys.publisher, PACKAGE, None)
    refused(
        node, f"{package}: expected a signature by one of {recorded} at {package}.asc, got none"
    )


def test_the_table_as_it_is_refuses_any_key_but_the_ones_aws_documents(
    node: Node, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.undo()
    aws = "673FE4061506BB469A0EF857BE397A52B086DA5A 8AEFE705EBE329C0948C75A66F1C3B3AEF4B030B"
    assert storage.MOUNT_S3_DEB.expected == aws
    node.serve(keys.publisher, PACKAGE, keys.sign(keys.published))
    refused(node, f"expected keys among {aws}, got {keys.published}")


def test_the_storage_script_installs_mountpoint_only_through_the_check(
    node: Node, keys: Keys
) -> None:
    """The storage script as `up` runs it (sh -e): on a node without mount-s3 the checked
    install is its one way to get it, and a refusal stops the script with what to do."""
    text = "name: t\nprovider: {kind: aws, region: us-east-1, zones: [us-east-1a], "
    text += "allowed_ssh_cidrs: [198.51.100.0/24]}\nnodes: {count: 1}\n"
    text += "storage: [{mount: /ckpt, bucket: s3://ckpts}]\n"
    script = storage.storage_script(load_spec_text(text, Path("/nowhere/t.yaml")).spec)
    install = storage.mount_s3_from_aws()
    assert install in script
    assert not {"apt-get", "curl", "dpkg"} & set(script.replace(install, "").split())
    checked = install.index("pinned_signed_file https://")
    assert checked < install.index('apt-get install -y "$work/mount-s3.deb"')
    # Up to the mounts, which need the node's systemd: the install step under sh.
    install_step = script[: script.index("UID_=")]
    node.serve(keys.intruder, PACKAGE, keys.sign(keys.intruders))
    result = node.run(install_step, shell="sh")
    assert result.returncode != 0
    assert f"expected keys among {storage.MOUNT_S3_DEB.expected}" in result.stderr
    assert storage.MISSING_MOUNT_S3 in result.stderr
    assert node.apt_calls() == []
    node.serve(keys.publisher, PACKAGE, keys.sign(keys.published))
    result = node.run(install_step, shell="sh")
    assert result.returncode == 0, result.stderr
    assert node.installed() == PACKAGE
