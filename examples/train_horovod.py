"""A tiny Horovod (PyTorch) training job, the one examples/local-horovod.yaml and
examples/gcp-spot-l4-horovod.yaml launch.

    horovodrun -np 4 -H 10.0.0.2:2,10.0.0.3:2 --gloo python3 train_horovod.py --steps 200

The task of train_ddp.py (a small MLP learns a fixed random "teacher"), with Horovod doing the
gradient averaging; each process uses its local GPU when there is one, else the CPU. At the
end every rank prints the sum of all ranks as an allreduce gave it to that rank.

With --elastic (for `nnodes: "MIN:MAX"`, where horovodrun adds and removes workers as nodes
come and go) the loop runs under hvd.elastic.run: the model, optimizer and step are synced
to newcomers from the last commit, and training goes on at the new size.
"""

from __future__ import annotations

import argparse
import socket
import time

import horovod.torch as hvd
import torch
from torch import nn

LOG_EVERY = 20
FEATURES, HIDDEN, BATCH = 16, 64, 64


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tiny Horovod training (PyTorch).")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps in all")
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    parser.add_argument(
        "--elastic", action="store_true", help="train under hvd.elastic.run (nnodes MIN:MAX)"
    )
    parser.add_argument(
        "--step-delay", type=float, default=0.0, help="seconds to wait after each step (demos)"
    )
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
    loss_fn = nn.MSELoss()

    def step(number: int) -> None:
        generator = torch.Generator().manual_seed(number * 1009 + hvd.rank())
        inputs = torch.randn(BATCH, FEATURES, generator=generator).to(device)
        optimizer.zero_grad()
        loss = loss_fn(model(inputs), teacher(inputs))
        loss.backward()
        optimizer.step()  # Horovod averages the gradients over all ranks here
        if number % LOG_EVERY == 0 or number + 1 == args.steps:
            mean = hvd.allreduce(loss.detach(), name="loss")
            if hvd.rank() == 0:
                print(f"step {number} loss {mean.item():.5f} size {hvd.size()}", flush=True)
        time.sleep(args.step_delay)

    if args.elastic:
        state = hvd.elastic.TorchState(model=model, optimizer=optimizer, step=0)

        @hvd.elastic.run
        def train(state: hvd.elastic.TorchState) -> None:
            while state.step < args.steps:
                step(state.step)
                state.step += 1
                state.commit()  # what a newcomer starts from, and where a reset goes back to

        train(state)
    else:
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        hvd.broadcast_optimizer_state(optimizer, root_rank=0)
        for number in range(args.steps):
            step(number)

    # Every rank checks the collective itself: the sum of all ranks, as each one sees it.
    total = hvd.allreduce(torch.tensor(float(hvd.rank())), op=hvd.Sum, name="ranks")
    print(
        f"done rank={hvd.rank()} local_rank={hvd.local_rank()} size={hvd.size()} "
        f"host={socket.gethostname()} allreduce_sum_of_ranks={int(total.item())}",
        flush=True,
    )


if __name__ == "__main__":
    main()
