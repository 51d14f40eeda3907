"""A tiny DDP training job for CPU (gloo), to try a cluster's launcher end to end.

    torchrun --nnodes=2 --node-rank=0 --nproc-per-node=2 ... train_ddp.py --steps 200

A small MLP learns a fixed smooth function of synthetic inputs, so the loss falls within a
few hundred steps on any machine, in seconds.

Checkpoints: every 20 steps rank 0 writes the weights and the step to $CKPT (default
$DLVM_CHECKPOINT_DIR/model.pt when the cluster names storage, which outlives nodes, else
~/work/ckpt/model.pt), atomically. On start rank 0 loads it if present; DDP's constructor
then copies rank 0's weights to every rank and the step is broadcast, so a restarted or
rescaled job resumes where it stopped, even when only the head's disk holds the file.

Environment: CKPT; PG_TIMEOUT, the process-group timeout in seconds (default 60, so a lost
peer fails the job in a minute rather than torch's 30); TORCHELASTIC_RESTART_COUNT, set by
torchrun and printed, so restarts show in the log.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

LOG_EVERY = 20
FEATURES, HIDDEN, BATCH = 16, 64, 64
EVAL_SEED = 2**31 - 1  # held-out data for the final loss


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tiny DDP training on CPU (gloo).")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps in all")
    parser.add_argument("--lr", type=float, default=0.2, help="SGD learning rate")
    parser.add_argument(
        "--step-time", type=float, default=0.0, help="seconds to wait per step (slow demos)"
    )
    # DeepSpeed's launcher appends --local_rank=N; accept it so the script runs there too.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def synthetic_batch(seed: int, size: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets sin(2 x.w) for a fixed w; the seed picks the batch."""
    inputs = torch.randn(size, FEATURES, generator=torch.Generator().manual_seed(seed))
    direction = torch.randn(FEATURES, 1, generator=torch.Generator().manual_seed(7)) / 4
    return inputs, torch.sin(2 * inputs @ direction)


def save(path: Path, model: nn.Module, step: int, world_size: int) -> None:
    """Write to a temporary file, then rename: a reader never sees half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial")
    torch.save({"model": model.state_dict(), "step": step, "world_size": world_size}, partial)
    os.replace(partial, path)


def resume(path: Path, model: nn.Module) -> int:
    """Rank 0's checkpoint into `model` (rank 0 only), and its step on every rank."""
    step = torch.zeros(1, dtype=torch.long)
    if dist.get_rank() == 0 and path.exists():
        saved = torch.load(path, map_location="cpu")
        model.load_state_dict(saved["model"])
        step[0] = saved["step"]
        print(
            f"resumed from {path} at step {saved['step']} "
            f"(saved by world_size={saved['world_size']})",
            flush=True,
        )
    dist.broadcast(step, src=0)
    return int(step.item())


def checkpoint_path() -> str:
    """On the cluster's shared storage when it has some (every node, and a node that replaces
    a lost one, sees the same file), else in the head's home."""
    shared = os.environ.get("DLVM_CHECKPOINT_DIR")
    return f"{shared}/model.pt" if shared else "~/work/ckpt/model.pt"


def train(steps: int, lr: float, ckpt: Path, step_time: float = 0.0) -> nn.Module:
    """Train from the checkpoint, if any, to `steps`; returns the model, without DDP."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(1234)  # the same initial weights on every rank
    model = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))
    start = resume(ckpt, model)
    ddp = DistributedDataParallel(model)  # broadcasts rank 0's weights to every rank
    optimizer = torch.optim.SGD(ddp.parameters(), lr=lr)
    for step in range(start, steps):
        inputs, targets = synthetic_batch(seed=step * 1009 + rank)  # a batch per step and rank
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(ddp(inputs), targets)
        loss.backward()  # DDP averages the gradients over all ranks here
        optimizer.step()
        if step_time:
            time.sleep(step_time)
        done = step + 1
        if done % LOG_EVERY == 0 or done == steps:
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            if rank == 0:
                print(f"step {done} loss {mean.item() / world_size:.5f}", flush=True)
                save(ckpt, model, done, world_size)
    return model


def main() -> None:
    args = parse_args()
    timeout = datetime.timedelta(seconds=float(os.environ.get("PG_TIMEOUT", "60")))
    dist.init_process_group("gloo", timeout=timeout)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    print(f"world_size={world_size} rank={rank} restart={restart}", flush=True)
    ckpt = Path(os.environ.get("CKPT") or checkpoint_path()).expanduser()
    model = train(args.steps, args.lr, ckpt, args.step_time)
    if rank == 0:
        with torch.no_grad():
            inputs, targets = synthetic_batch(seed=EVAL_SEED, size=1024)
            final = nn.functional.mse_loss(model(inputs), targets).item()
        print(f"done steps={args.steps} world_size={world_size} final_loss={final:.5f}", flush=True)
    dist.destroy_process_group()
    # Leave without interpreter teardown. On torch 2.13 DDP keeps the gloo group (and its
    # worker threads) alive past destroy_process_group(); a worker dropping its last tensor
    # while Python shuts down aborts the process ("terminate called without an active
    # exception", exit -6) in about one run in seven, failing a finished job.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
