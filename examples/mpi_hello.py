"""MPI hello: every rank says where it runs, then they all add up their ranks.

    mpirun -np 3 -H 10.0.0.2:1,10.0.0.3:1,10.0.0.4:1 python3 mpi_hello.py

Each rank prints `rank R of N on HOST`; rank 0 then prints
`allreduce sum of ranks = S (expected E)`, S being the sum over all ranks (an MPI allreduce)
and E = N(N-1)/2, and the script exits 1 when they differ. Needs mpi4py and an MPI library
(Open MPI: `apt-get install openmpi-bin`).
"""

from __future__ import annotations

import socket
import sys

from mpi4py import MPI


def say(line: str) -> None:
    """A plain print, as scripts write it: dlvm's launch keeps a rank's line one write (its
    output is line buffered, not unbuffered, which would write the text and its newline
    apart, letting mpirun put another rank's text between the two)."""
    print(line, flush=True)


def main() -> int:
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    say(f"rank {rank} of {size} on {socket.gethostname()}")
    total = comm.allreduce(rank, op=MPI.SUM)
    expected = size * (size - 1) // 2
    if rank == 0:
        say(f"allreduce sum of ranks = {total} (expected {expected}) size={size}")
    return 0 if total == expected else 1


if __name__ == "__main__":
    sys.exit(main())
