"""A tiny DeepSpeed training job on CPU (gloo, ZeRO stage 0), to try a cluster's `deepspeed`
launcher.

    deepspeed --hostfile hostfile --no_ssh --node_rank=0 --master_addr=10.0.0.2 \
        --master_port=29500 train_deepspeed.py --steps 60

The task of train_ddp.py (a small MLP learns a fixed smooth function of synthetic inputs),
with DeepSpeed's engine averaging the gradients. Every process prints
`world_size=N rank=R`; rank 0 then prints the losses and
`done steps=S world_size=N final_loss=L`.

On CPU, DeepSpeed JIT-compiles its shared-memory communication op (ninja and g++) the first
time a process starts, into $TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions): about
30 s, once per machine, or once for nodes that share that directory.
"""

from __future__ import annotations

import argparse
import os
import sys

import deepspeed
import deepspeed.comm as dist
import torch
from torch import nn

LOG_EVERY = 20
FEATURES, HIDDEN, BATCH = 16, 64, 64


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tiny DeepSpeed training on CPU.")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps in all")
    parser.add_argument("--lr", type=float, default=0.2, help="SGD learning rate")
    # DeepSpeed's launcher appends --local_rank=N.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def synthetic_batch(seed: int, size: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets sin(2 x.w) for a fixed w; the seed picks the batch."""
    inputs = torch.randn(size, FEATURES, generator=torch.Generator().manual_seed(seed))
    direction = torch.randn(FEATURES, 1, generator=torch.Generator().manual_seed(7)) / 4
    return inputs, torch.sin(2 * inputs @ direction)


def main() -> None:
    args = parse_args()
    deepspeed.init_distributed("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    print(f"world_size={world_size} rank={rank}", flush=True)
    torch.manual_seed(1234)  # the same initial weights on every rank
    model = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))
    config = {
        "train_micro_batch_size_per_gpu": BATCH,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 0},
        "steps_per_print": 10**9,  # the script logs its own losses
    }
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=args.lr), config=config
    )
    for step in range(args.steps):
        inputs, targets = synthetic_batch(seed=step * 1009 + rank)  # a batch per step and rank
        loss = nn.functional.mse_loss(engine(inputs), targets)
        engine.backward(loss)  # the engine averages the gradients over all ranks
        engine.step()
        done = step + 1
        if done % LOG_EVERY == 0 or done == args.steps:
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            if rank == 0:
                print(f"step {done} loss {mean.item() / world_size:.5f}", flush=True)
    if rank == 0:
        with torch.no_grad():
            inputs, targets = synthetic_batch(seed=2**31 - 1, size=1024)
            final = nn.functional.mse_loss(model(inputs), targets).item()
        print(f"done steps={args.steps} world_size={world_size} final_loss={final:.5f}", flush=True)
    dist.barrier()
    # Leave without interpreter teardown, as train_ddp.py does: gloo's threads outliving the
    # process group can abort a finished process while Python shuts down.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
