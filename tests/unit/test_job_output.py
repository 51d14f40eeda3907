"""A failed job's summary: the rank's own exception out of its launcher's noise, and ranks
that started from different states (launch/output.py)."""

from __future__ import annotations

from dlvm_cluster.launch.output import (
    RankOutput,
    disagreement,
    first_cause,
    gpu_hint,
    quiet_activity,
)

TORCHRUN_FAILURE = """\
[rank1]: Traceback (most recent call last):
[rank1]:   File "/root/work/multinode.py", line 108, in <module>
[rank1]:     main(args.save_every, args.total_epochs)
[rank1]:   File "/root/work/multinode.py", line 95, in main
[rank1]:     ddp_setup()
[rank1]:   File ".venv/lib/python3.11/site-packages/torch/cuda/__init__.py", line 689, in set_device
[rank1]:     torch._C._cuda_setDevice(device)
[rank1]: AttributeError: module 'torch._C' has no attribute '_cuda_setDevice'
E1205 17:53:24.123000 32060 torch/distributed/elastic/multiprocessing/api.py:882] failed
Traceback (most recent call last):
  File ".venv/bin/torchrun", line 8, in <module>
    sys.exit(main())
  File ".venv/lib/python3.11/site-packages/torch/distributed/run.py", line 143, in __call__
    return launch_agent(self._config, self._entrypoint, list(args))
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
multinode.py FAILED
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 1)
  exitcode  : 1 (pid: 32060)
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
"""


def read(text: str) -> RankOutput:
    output = RankOutput()
    for line in text.splitlines():
        output.feed(line)
    return output


def test_the_ranks_exception_not_the_launchers_footer() -> None:
    output = read(TORCHRUN_FAILURE)
    assert output.cause == [
        '[rank1]:   File "/root/work/multinode.py", line 95, in main',
        "[rank1]:     ddp_setup()",
        '[rank1]:   File ".venv/lib/python3.11/site-packages/torch/cuda/__init__.py", line 689,'
        " in set_device",
        "[rank1]:     torch._C._cuda_setDevice(device)",
        "[rank1]: AttributeError: module 'torch._C' has no attribute '_cuda_setDevice'",
    ]
    assert gpu_hint(output.cause, 0).startswith("the nodes have no GPUs")
    assert gpu_hint(output.cause, 8) == ""


def test_launcher_footers_alone_give_no_cause() -> None:
    horovod = read(
        "Traceback (most recent call last):\n"
        '  File "/v/bin/horovodrun", line 8, in <module>\n'
        "RuntimeError: Horovod detected that one or more processes exited with non-zero status\n"
    )
    accelerate = read(
        "Traceback (most recent call last):\n"
        '  File "/v/bin/accelerate", line 8, in <module>\n'
        "subprocess.CalledProcessError: Command '['python3', 'x.py']' returned non-zero exit\n"
    )
    assert horovod.cause == [] and accelerate.cause == []


def test_tagged_tracebacks_of_ranks_interleaved_by_mpirun_stay_apart() -> None:
    output = read(
        "[1,0]<stderr>:Traceback (most recent call last):\n"
        "[1,1]<stderr>:Traceback (most recent call last):\n"
        '[1,0]<stderr>:  File "t.py", line 3, in <module>\n'
        '[1,1]<stderr>:  File "t.py", line 5, in <module>\n'
        "[1,1]<stderr>:KeyError: 'lr'\n"
        "[1,0]<stderr>:RuntimeError: peer 1 closed the connection\n"
    )
    assert output.cause == [
        '[1,1]<stderr>:  File "t.py", line 5, in <module>',
        "[1,1]<stderr>:KeyError: 'lr'",
    ]


def test_the_node_that_failed_first_is_quoted_else_any_that_raised() -> None:
    quiet, loud = read("exit 1\n"), read("Traceback (most recent call last):\nOSError: disk\n")
    assert first_cause({"node-0": quiet, "node-1": loud}, "node-0") == ("node-1", ["OSError: disk"])
    assert first_cause({"node-0": quiet}, "node-0") == ("", [])


def test_ranks_that_started_from_different_states_are_named() -> None:
    resumed = read("Resuming training from snapshot at Epoch 4\n" * 2)
    fresh = read("Epoch 0 | Training snapshot saved at snapshot.pt\n")
    said = disagreement({"node-0": resumed, "node-1": fresh, "node-2": read("")})
    assert said == (
        "the ranks did not start from the same state: node-0 printed 'Resuming training from "
        "snapshot at Epoch 4'; node-1, node-2 did not"
    )
    again = read("Resuming training from snapshot at Epoch 4\n")
    assert disagreement({"node-0": resumed, "node-1": again}) == ""
    # Only rank 0 saving a checkpoint is no disagreement.
    assert disagreement({"node-0": fresh, "node-1": read("")}) == ""


def test_a_quiet_job_is_described_by_its_processes() -> None:
    compiling = quiet_activity(
        {"node-0": ["deepspeed", "python3", "ninja", "cc1plus", "cc1plus"], "node-1": []}, 31.2
    )
    assert compiling.startswith("no output for 31s; node-0: compiling (cc1plus x2, ninja)")
    assert "a first build of native ops" in compiling
    waiting = quiet_activity({"node-0": ["torchrun", "python3", "python3"]}, 60)
    assert waiting == "no output for 60s; node-0: python3 x2, torchrun"
    assert quiet_activity({"node-0": []}, 60) == ""
