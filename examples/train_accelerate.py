"""A tiny Accelerate training job on CPU, to try a cluster's `accelerate` launcher.

    accelerate launch --multi_gpu --num_machines 2 --num_processes 2 --machine_rank 0 \
        --main_process_ip 10.0.0.2 --main_process_port 29500 train_accelerate.py --steps 60

The task of train_ddp.py (a small MLP learns a fixed smooth function of synthetic inputs).
A plain `Accelerator()`, as real scripts write it: on GPU nodes it uses them, and on nodes
without GPUs dlvm's launch (ACCELERATE_USE_CPU=1) gives DistributedType.MULTI_CPU with gloo.
Every process prints
`distributed_type=T num_processes=N process_index=I`, so a launch that silently ran separate
single-process jobs (type NO, num_processes=1 on every node) shows; the main process then
prints the losses and `done steps=S num_processes=N final_loss=L`.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from accelerate import Accelerator
from torch import nn

LOG_EVERY = 20
FEATURES, HIDDEN, BATCH = 16, 64, 64


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tiny Accelerate training on CPU.")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps in all")
    parser.add_argument("--lr", type=float, default=0.2, help="SGD learning rate")
    return parser.parse_args()


def synthetic_batch(seed: int, size: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets sin(2 x.w) for a fixed w; the seed picks the batch."""
    inputs = torch.randn(size, FEATURES, generator=torch.Generator().manual_seed(seed))
    direction = torch.randn(FEATURES, 1, generator=torch.Generator().manual_seed(7)) / 4
    return inputs, torch.sin(2 * inputs @ direction)


def main() -> None:
    args = parse_args()
    accelerator = Accelerator()
    rank, world = accelerator.process_index, accelerator.num_processes
    print(
        f"distributed_type={accelerator.distributed_type.value} num_processes={world} "
        f"process_index={rank}",
        flush=True,
    )
    torch.manual_seed(1234)  # the same initial weights on every process
    net = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr)
    # `model` wraps `net` (DDP when distributed) and shares its weights.
    model, optimizer = accelerator.prepare(net, optimizer)
    for step in range(args.steps):
        inputs, targets = synthetic_batch(seed=step * 1009 + rank)  # a batch per step and rank
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(inputs), targets)
        accelerator.backward(loss)  # gradients are averaged over every process here
        optimizer.step()
        done = step + 1
        if done % LOG_EVERY == 0 or done == args.steps:
            mean = accelerator.reduce(loss.detach(), reduction="mean")
            if accelerator.is_main_process:
                print(f"step {done} loss {mean.item():.5f}", flush=True)
    if accelerator.is_main_process:
        with torch.no_grad():
            inputs, targets = synthetic_batch(seed=2**31 - 1, size=1024)
            final = nn.functional.mse_loss(net(inputs), targets).item()
        print(f"done steps={args.steps} num_processes={world} final_loss={final:.5f}", flush=True)
    accelerator.wait_for_everyone()
    # Leave without interpreter teardown, as train_ddp.py does: on torch 2.13 the gloo
    # group's threads outliving it can abort a finished process while Python shuts down.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
