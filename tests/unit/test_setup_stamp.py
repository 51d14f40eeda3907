"""The setup stamp left on nodes is keyed with a per-cluster random key kept in the state dir:
two clusters with the same setup get different stamps, and the stamp cannot be recomputed
(to test guesses of a secret) without the key."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
from pathlib import Path

import pytest

from dlvm_cluster.orchestrate.cluster.files import setup_digest
from dlvm_cluster.providers import load_spec_text
from dlvm_cluster.state import ClusterState

SPEC = (
    "name: demo\nprovider: {kind: local}\nnodes: {count: 1}\n"
    "env: {MODE: fast, PIN: {value: '1234', secret: true}}\nsetup: echo ready\n"
)
SECRETS = {"PIN": "1234"}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DLVM_HOME", str(tmp_path))
    return tmp_path


def stamp(name: str) -> str:
    loaded = load_spec_text(SPEC, Path("cluster.yaml"))
    state = ClusterState.for_name(name)
    state.create()
    return setup_digest(loaded, SECRETS, state.stamp_key())


def test_two_clusters_with_the_same_setup_get_different_stamps(home: Path) -> None:
    first, second = stamp("one"), stamp("two")
    assert first != second
    assert stamp("one") == first  # the key is made once: the stamp is stable


def test_the_key_is_private_and_the_stamp_needs_it(home: Path) -> None:
    made = stamp("one")
    key_path = ClusterState.for_name("one").stamp_key_path
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = key_path.read_bytes()
    assert len(key) == 32
    payload = json.dumps(
        {"setup": "echo ready", "env": {"MODE": "fast"}, "secrets": SECRETS}, sort_keys=True
    ).encode()
    assert made == hmac.new(key, payload, hashlib.sha256).hexdigest()
    for guess in (b"", b"demo", b"one"):  # without the key, a guess of the secret cannot be checked
        assert made != hmac.new(guess, payload, hashlib.sha256).hexdigest()
    assert made != hashlib.sha256(payload).hexdigest()
