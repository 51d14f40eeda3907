"""Real GnuPG for tests of what nodes check with it: a home of its own per test (the
`gnupg` fixture, in conftest.py) and keys made in it at test time, never kept in the
repository."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# gpg's path and the environment that points it at the test's own home.
GnuPG = tuple[str, dict[str, str]]


@contextmanager
def gnupg_home() -> Iterator[GnuPG]:
    """A GnuPG home of its own (a short path: its agent's socket lives there); the agent it
    starts is ended afterwards."""
    gpg = shutil.which("gpg")
    assert gpg, "GnuPG (gpg) is one of the test tools examples/install.sh --dev installs"
    home = tempfile.mkdtemp(prefix="dlvm-gpg-")
    env = {"GNUPGHOME": home, "PATH": str(Path(gpg).parent)}
    try:
        yield gpg, env
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def run_gpg(gnupg: GnuPG, *args: str, stdin: str | bytes = "") -> str:
    """Real gpg in the fixture's home, without questions; its output."""
    gpg, env = gnupg
    batch = [gpg, "--batch", "--passphrase", "", "--pinentry-mode", "loopback"]
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run(
        [*batch, *args], input=data, env=env, check=True, capture_output=True
    ).stdout.decode()


def new_key(gnupg: GnuPG, uid: str, subkey: str = "encr") -> tuple[str, str]:
    """A key made now with a subkey beside its primary key (`subkey`: what it is for, encr or
    sign): (armored public key, the primary key's fingerprint)."""
    run_gpg(gnupg, "--quick-gen-key", uid, "ed25519", "sign", "never")
    listing = run_gpg(gnupg, "--with-colons", "--list-keys", uid)
    primary = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    run_gpg(gnupg, "--quick-add-key", primary, "cv25519" if subkey == "encr" else "ed25519", subkey)
    return run_gpg(gnupg, "--armor", "--export", primary), primary


def subkey_fingerprint(gnupg: GnuPG, primary: str) -> str:
    """The fingerprint of the last subkey of the key `primary`."""
    listing = run_gpg(gnupg, "--with-colons", "--list-keys", primary)
    fingerprints = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]
    return fingerprints[-1]
