"""The supervisor's decision after a run that did not succeed (orchestrate/jobs/policy.py), as
a table: what was seen -> what is done. Pure: no SSH, no provider, no clock."""

from __future__ import annotations

import pytest

from dlvm_cluster.orchestrate.jobs.policy import (
    Action,
    EndPoweredOff,
    Fail,
    Join,
    ReplaceAndRestart,
    Restart,
    RunSeen,
    decide,
    survivors_go_on,
)

OFF = "node-1 was powered off by autostop"
LOST = {"node-1": "missing"}
TWO_LOST = {"node-2": "preempted", "node-1": "unreachable over SSH"}


def seen(
    *,
    powered_off: str = "",
    lost: dict[str, str] | None = None,
    survivors_running: bool = False,
    on_node_loss: str = "replace",
    restarts: int = 0,
    max_restarts: int = 0,
) -> RunSeen:
    return RunSeen(
        powered_off=powered_off,
        lost=lost or {},
        survivors_running=survivors_running,
        on_node_loss=on_node_loss,
        restarts=restarts,
        max_restarts_on_error=max_restarts,
    )


TABLE: list[tuple[str, RunSeen, Action]] = [
    # a deliberate power-off ends the job, whatever else was seen
    ("powered off", seen(powered_off=OFF), EndPoweredOff(OFF)),
    ("powered off, node lost too", seen(powered_off=OFF, lost=LOST), EndPoweredOff(OFF)),
    (
        "powered off, elastic survivors",
        seen(powered_off=OFF, lost=LOST, survivors_running=True),
        EndPoweredOff(OFF),
    ),
    # lost nodes
    ("lost: replace and restart", seen(lost=LOST), ReplaceAndRestart(("node-1",))),
    (
        "lost two: replaced in name order",
        seen(lost=TWO_LOST),
        ReplaceAndRestart(("node-1", "node-2")),
    ),
    (
        "lost, restarts used up: still replaced (a lost node is no rank's error)",
        seen(lost=LOST, restarts=3, max_restarts=0),
        ReplaceAndRestart(("node-1",)),
    ),
    (
        "lost, on_node_loss fail",
        seen(lost=LOST, on_node_loss="fail"),
        Fail("node(s) lost: node-1; on_node_loss is fail"),
    ),
    # elastic: the survivors run on, the replacements join
    ("elastic survivors run on", seen(lost=LOST, survivors_running=True), Join(("node-1",))),
    (
        "elastic, on_node_loss fail wins",
        seen(lost=LOST, survivors_running=True, on_node_loss="fail"),
        Fail("node(s) lost: node-1; on_node_loss is fail"),
    ),
    # a rank failed on a healthy cluster
    ("rank failed, no restarts allowed", seen(), Fail("")),
    ("rank failed, a restart left", seen(restarts=0, max_restarts=1), Restart()),
    ("rank failed, restarts used up", seen(restarts=2, max_restarts=2), Fail("")),
    ("survivors flag without a lost node", seen(survivors_running=True), Fail("")),
]


@pytest.mark.parametrize(("case", "what", "action"), TABLE, ids=[row[0] for row in TABLE])
def test_decide(case: str, what: RunSeen, action: Action) -> None:
    assert decide(what) == action


NODES = ["node-0", "node-1", "node-2", "node-3"]

SURVIVORS: list[tuple[str, tuple[int, int] | None, dict[str, str], bool]] = [
    ("not elastic", None, LOST, False),
    ("nothing lost", (2, 4), {}, False),
    ("a worker lost, enough left", (2, 4), LOST, True),
    ("the head lost (it hosts the rendezvous)", (2, 4), {"node-0": "missing"}, False),
    ("too few left", (4, 4), LOST, False),
    ("exactly MIN left", (2, 4), TWO_LOST, True),
    ("fewer than MIN left", (3, 4), TWO_LOST, False),
]


@pytest.mark.parametrize(
    ("case", "span", "lost", "goes_on"), SURVIVORS, ids=[row[0] for row in SURVIVORS]
)
def test_survivors_go_on(
    case: str, span: tuple[int, int] | None, lost: dict[str, str], goes_on: bool
) -> None:
    assert survivors_go_on(span, NODES, lost) is goes_on


REFUSAL = "{names} cannot be replaced: these machines exist outside dlvm"


@pytest.mark.parametrize(
    ("case", "what", "action"),
    [
        (
            "a kind that cannot replace fails the job in its words",
            RunSeen("", TWO_LOST, False, "replace", 0, 0, replace_refusal=REFUSAL),
            Fail("node-1, node-2 cannot be replaced: these machines exist outside dlvm"),
        ),
        (
            "elastic on such a kind fails too",
            RunSeen("", LOST, True, "replace", 0, 0, replace_refusal=REFUSAL),
            Fail("node-1 cannot be replaced: these machines exist outside dlvm"),
        ),
        (
            "no node lost: the refusal does not matter",
            RunSeen("", {}, False, "replace", 0, 1, replace_refusal=REFUSAL),
            Restart(),
        ),
    ],
)
def test_decide_on_a_kind_that_cannot_replace(case: str, what: RunSeen, action: Action) -> None:
    assert decide(what) == action
