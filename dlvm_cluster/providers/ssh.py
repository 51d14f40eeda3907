"""The ssh provider: machines that already exist become an Inventory, with no Terraform.

Host keys come from the cluster file when given; otherwise they are read from the machines on
the first `up`, shown to the user, and pinned from then on (a changed key is refused later).
`down` only forgets the machines (orchestrate first removes what dlvm put on them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from dlvm_cluster.errors import ProvisionError
from dlvm_cluster.inventory import Inventory, Node, fingerprint, node_name
from dlvm_cluster.progress import Progress
from dlvm_cluster.providers import checks
from dlvm_cluster.providers.base import (
    BootReadiness,
    Bound,
    CapacityFacts,
    Check,
    Converge,
    HourlyRates,
    NodeState,
    ProviderPlan,
    Reach,
    StopMark,
    UnpinnedHostKeys,
)
from dlvm_cluster.providers.kind import Feature, ProviderKind, Refusal
from dlvm_cluster.provision.render import RenderedModule
from dlvm_cluster.spec.kinds import Problem, SpecKind
from dlvm_cluster.spec.model import (
    ClusterSpec,
    HostKey,
    HostName,
    Model,
    ProviderConfig,
    UserName,
    WholeNumber,
    no_control_characters,
)

KeyScan = Callable[[str, int], str]  # (host, port) -> "type base64"
DEFAULT_IDENTITY = "~/.ssh/id_ed25519"


class SshHost(Model):
    host: HostName = Field(min_length=1)
    port: WholeNumber = Field(default=22, ge=1, le=65535)
    user: UserName = Field(default="root", min_length=1)
    host_key: HostKey | None = None


class SshConfig(ProviderConfig):
    """Machines that already exist: no Terraform."""

    kind: Literal["ssh"]
    hosts: list[SshHost] = Field(min_length=1)
    identity_file: Annotated[str, AfterValidator(no_control_characters)] | None = None


def ssh_rules(spec: ClusterSpec) -> list[Problem]:
    problems: list[Problem] = []
    provider = hosts_of(spec)
    if spec.nodes.count > len(provider.hosts):
        problems.append(
            (
                ("nodes", "count"),
                f"{spec.nodes.count} is more than the {len(provider.hosts)} hosts listed under "
                "provider.hosts",
            )
        )
    if spec.storage:
        # Machines dlvm did not make carry no account of the cluster's for a bucket, and a
        # mount over their folders would outlive the cluster: give them a shared disk instead.
        problems.append(
            (
                ("storage",),
                "the ssh provider does not mount storage: mount a shared file system (NFS, "
                "gcsfuse) on the hosts yourself, or in setup, and point your job at it",
            )
        )
    return problems


KIND = ProviderKind(
    spec=SpecKind("ssh", SshConfig, rules=ssh_rules),
    implementation="dlvm_cluster.providers.ssh:ExistingHosts",
    lacks={
        Feature.STOP_START: Refusal(
            "dlvm cannot {verb} the machines of an ssh cluster: it does not own them",
            hint="power them off and on where they are managed; `dlvm up` adopts them again",
        ),
        Feature.REPLACE: Refusal(
            "{names} cannot be replaced: the ssh provider adopts machines that exist already "
            "and cannot make new ones",
            hint="repair or swap the machine, then list its address under provider.hosts",
            error=ProvisionError,
        ),
        Feature.STORAGE: Refusal(
            "the ssh provider does not mount storage",
            hint="mount a shared file system on the hosts yourself, and remove `storage`",
        ),
        # powering off a machine dlvm only borrows is not dlvm's to do
        Feature.AUTOSTOP: Refusal(
            "autostop is not available here: dlvm does not own these machines, so it does "
            "not power them off"
        ),
        Feature.RENDER: Refusal(
            "the ssh provider makes no machines, so there is no Terraform to render",
            hint="`dlvm plan FILE` shows the hosts `up` would adopt",
            error=ProvisionError,
        ),
        Feature.PRICES: Refusal("machines are billed, if at all, by whoever owns them"),
    },
)


def hosts_of(spec: ClusterSpec) -> SshConfig:
    provider = spec.provider
    if not isinstance(provider, SshConfig):
        raise TypeError(f"not an ssh-provider spec: {provider.kind}")
    return provider


def adopt_hosts(
    spec: ClusterSpec, pinned: Mapping[tuple[str, int], str], scan: KeyScan
) -> tuple[Inventory, list[Node]]:
    """The inventory of the spec's hosts, and the nodes whose keys were newly scanned."""
    provider = hosts_of(spec)
    nodes = []
    scanned = []
    for rank, host in enumerate(provider.hosts[: spec.nodes.count]):
        key = host.host_key or pinned.get((host.host, host.port))
        fresh = key is None
        if key is None:
            key = scan(host.host, host.port)
        node = Node(
            name=node_name(rank),
            rank=rank,
            ip=host.host,
            port=host.port,
            user=host.user,
            host_key=" ".join(key.split()[:2]),
        )
        nodes.append(node)
        if fresh:
            scanned.append(node)
    gpus = spec.nodes.accelerator.count if spec.nodes.accelerator else 0
    inventory = Inventory(
        cluster=spec.name,
        nodes=tuple(nodes),
        env={},
        gpus_per_node=gpus,
        identity_file=provider.identity_file or DEFAULT_IDENTITY,
    )
    return inventory, scanned


def pinned_keys(inventory: Inventory | None) -> dict[tuple[str, int], str]:
    if inventory is None:
        return {}
    return {(node.ip, node.port): node.host_key for node in inventory.nodes}


class ExistingHosts(Bound):
    """The `ssh` provider (see the module docstring)."""

    owns_machines = False

    def check_host(self) -> None:
        return None

    def provision(self, request: Converge) -> tuple[Inventory, bool]:
        """Adopt the spec's hosts. A key seen for the first time is pinned only when the user
        accepted it (`request.trust`): until then nothing is stored, and neither the
        cluster's key nor a secret goes to a machine that may not be the one meant."""
        previous = request.previous
        inventory, scanned = adopt_hosts(
            request.spec, pinned_keys(previous), request.reach.host_key
        )
        unaccepted = [node for node in scanned if not request.trust.accepts(node)]
        if unaccepted:
            raise UnpinnedHostKeys(unaccepted)
        for node in scanned:
            request.progress.note(
                f"pinned the host key of {node.name} ({node.ip}:{node.port}), accepted on "
                f"first contact: {node.host_key_fingerprint}"
            )
        return inventory, inventory != previous

    def replace_nodes(self, request: Converge, names: list[str]) -> Inventory:
        KIND.require(Feature.REPLACE, names=", ".join(names))
        raise AssertionError("unreachable: the ssh provider lacks replace")

    def plan(self, request: Converge) -> ProviderPlan:
        """The hosts `up` would adopt, each with the key it would be held to: the file's, the
        one pinned already, or the one it presents on first contact (shown, then pinned)."""
        pinned = pinned_keys(request.previous)
        provider = hosts_of(request.spec)
        known = {node.name: node for node in request.previous.nodes} if request.previous else {}
        changes = []
        for rank, host in enumerate(provider.hosts[: request.spec.nodes.count]):
            name = node_name(rank)
            address = f"{host.user}@{host.host}:{host.port}"
            if host.host_key:
                key = f"key from the file {fingerprint(host.host_key)}"
            elif (host.host, host.port) in pinned:
                key = f"key pinned {fingerprint(pinned[(host.host, host.port)])}"
            else:
                key = "key shown and pinned on first contact"
            node = known.get(name)
            unchanged = node is not None and (node.ip, node.port, node.user) == (
                host.host,
                host.port,
                host.user,
            )
            changes.append(("keep" if unchanged else "adopt", f"{name} {address} ({key})"))
        left = sorted(set(known) - {node_name(rank) for rank in range(len(changes))})
        changes += [("forget", name) for name in left]
        adopt = sum(1 for action, _ in changes if action == "adopt")
        summary = f"{adopt} host(s) to adopt, {len(left)} to forget, no Terraform"
        return ProviderPlan(changes=tuple(changes), summary=summary, exists=bool(known))

    def plan_notes(self) -> list[str]:
        return []

    def storage_script(self) -> str:
        """None: storage on hosts dlvm did not make is refused (ssh_rules, Feature.STORAGE)."""
        if self.spec.storage:
            KIND.require(Feature.STORAGE)
        return ""

    def render(self) -> RenderedModule:
        KIND.require(Feature.RENDER)
        raise AssertionError("unreachable: the ssh provider lacks render")

    def destroy(self, progress: Progress) -> None:
        return None

    def node_states(self, inventory: Inventory) -> dict[str, NodeState]:
        return {}  # only SSH tells whether a machine dlvm did not make is there

    def provider_id(self, node: Node) -> str:
        return node.ip

    def stop_nodes(self, inventory: Inventory, progress: Progress, *, by: str) -> None:
        KIND.require(Feature.STOP_START, verb="stop")

    def start_nodes(self, inventory: Inventory, progress: Progress) -> None:
        KIND.require(Feature.STOP_START, verb="start")

    def stop_marks(self, inventory: Inventory) -> dict[str, StopMark]:
        return {}

    def self_stop_command(self, action: str) -> str | None:
        return None  # powering off a machine dlvm only borrows is not dlvm's to do

    def status_price(self, nodes: int) -> str | None:
        return None

    def boot_readiness(self) -> BootReadiness | None:
        return None

    def capacity(self) -> CapacityFacts | None:
        return None

    def hourly_rates(self) -> HourlyRates | None:
        return None  # machines billed, if at all, by whoever owns them

    def doctor(self, reach: Reach) -> list[Check]:
        spec = self._spec
        if spec is None:
            return []
        provider = hosts_of(spec)
        key = Path(provider.identity_file or DEFAULT_IDENTITY).expanduser()

        def identity() -> str:
            checks.need(key.exists(), f"{key} does not exist")
            return str(key)

        found = [checks.probe("identity file", identity, "set provider.identity_file to your key")]
        for host in provider.hosts[: spec.nodes.count]:
            found.append(
                checks.probe(
                    f"{host.host}:{host.port}",
                    lambda h=host: (  # type: ignore[misc]
                        "answers SSH, host key " + fingerprint(reach.host_key(h.host, h.port))
                    ),
                    "check the address, the port and that sshd runs there",
                )
            )
        return found
