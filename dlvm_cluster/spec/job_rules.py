"""Checks of the `job` section against the rest of the file (the Job model checks each field
alone), as (field path, message) pairs like spec/rules.py: a job the cluster could never run
as written is refused at load, where its line is known, not at `launch`."""

from __future__ import annotations

from dlvm_cluster.spec.model import ELASTIC_FRAMEWORKS, Job, Nodes

Problem = tuple[tuple[str | int, ...], str]


def job_problems(job: Job, nodes: Nodes) -> list[Problem]:
    """Every inconsistency between the job's fields and between the job and `nodes`."""
    if job.nnodes is None:
        return []
    where = ("job", "nnodes")
    count = nodes.count
    low, _, high = job.nnodes.partition(":")
    if not high:
        wanted = int(low)
        if wanted > count:
            return [(where, f"{wanted} nodes, but nodes.count is {count}")]
        return []
    problems: list[Problem] = []
    if job.framework not in ELASTIC_FRAMEWORKS:
        problems.append(
            (
                where,
                f'"{job.nnodes}": a MIN:MAX range is for torchrun and horovod only (framework '
                f"is {job.framework}); give a single number of nodes",
            )
        )
    if int(high) < count:
        problems.append(
            (where, f'"{job.nnodes}" allows at most {high} nodes, but nodes.count is {count}')
        )
    if int(low) > count:
        problems.append(
            (
                where,
                f'"{job.nnodes}" needs at least {low} nodes, but nodes.count is {count}: the '
                "job would wait for nodes that never come",
            )
        )
    return problems
