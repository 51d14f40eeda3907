"""A tiny Horovod (PyTorch) training job, the one examples/gcp-spot-l4-horovod.yaml launches.

    horovodrun -np 4 -H 10.0.0.2:1,10.0.0.3:1,... --gloo python3 train_horovod.py --steps 200

The task of train_ddp.py (a small MLP learns a fixed random "teacher"), with Horovod doing the
gradient averaging; each process uses its local GPU when there is one, else the CPU.
"""

from __future__ import annotations

import argparse
import socket

import horovod.torch as hvd
import torch
from torch import nn

LOG_EVERY = 20
FEATURES, HIDDEN, BATCH = 16, 64, 64


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tiny Horovod training (PyTorch).")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps in all")
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    return parser.parse_args()


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 1))


def main() -> None:
    args = parse_args()
    hvd.init()
    if torch.cuda.is_available():
        device = torch.device("cuda", hvd.local_rank())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    print(f"size={hvd.size()} rank={hvd.rank()} device={device}", flush=True)

    torch.manual_seed(1234)  # the same teacher and initial student on every rank
    teacher = mlp().to(device).requires_grad_(False)
    model = mlp().to(device)
    optimizer = hvd.DistributedOptimizer(
        torch.optim.SGD(model.parameters(), lr=args.lr),
        named_parameters=model.named_parameters(),
    )
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    loss_fn = nn.MSELoss()

    for step in range(args.steps):
        generator = torch.Generator().manual_seed(step * 1009 + hvd.rank())
        inputs = torch.randn(BATCH, FEATURES, generator=generator).to(device)
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), teacher(inputs))
        loss.backward()
        optimizer.step()  # Horovod averages the gradients over all ranks here
        if step % LOG_EVERY == 0 or step + 1 == args.steps:
            mean = hvd.allreduce(loss.detach(), name="loss")
            if hvd.rank() == 0:
                print(f"step {step} loss {mean.item():.5f}", flush=True)

    # Every rank checks the collective itself: the sum of all ranks, as each one sees it.
    total = hvd.allreduce(torch.tensor(float(hvd.rank())), op=hvd.Sum, name="ranks")
    print(
        f"done rank={hvd.rank()} local_rank={hvd.local_rank()} size={hvd.size()} "
        f"host={socket.gethostname()} allreduce_sum_of_ranks={int(total.item())}",
        flush=True,
    )


if __name__ == "__main__":
    main()
