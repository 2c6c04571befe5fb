"""Data-parallel training on every GPU of the pod: ``torchrun --nproc_per_node=N`` and DDP.

With ``--nproc-per-node N`` (N > 1) the trainer relaunches itself through torchrun's own
launcher (``torch.distributed.run``, in this process, so the pod's main process stays the
launcher and receives SIGTERM, which torchrun forwards to every worker). Each worker is
one rank: NCCL on GPUs, gloo on the CPU. The launcher maps torchrun's outcome back to the
trainer's exit codes: the first failed rank's code, or 128 + the signal that stopped it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger("mlops.trainer")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``rank`` of ``world`` processes, ``local_rank`` on this node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


def ranks_from_env(environ: dict[str, str] | None = None) -> Ranks:
    """The ranks torchrun set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); a single process otherwise."""
    env = os.environ if environ is None else environ
    return Ranks(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def under_torchrun(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return "LOCAL_RANK" in env and "TORCHELASTIC_RUN_ID" in env


def init(ranks: Ranks, device_type: str) -> str | None:
    """Join the process group (NCCL on CUDA, gloo on the CPU); returns the backend, or None if single."""
    if not ranks.parallel:
        return None
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return backend


def shutdown(ranks: Ranks) -> None:
    if ranks.parallel:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m mlops.trainer argv`` as ``nproc`` torchrun workers; return the exit code."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if "OMP_NUM_THREADS" not in os.environ:
        from mlops.trainer.loop import cpu_quota

        cores = cpu_quota() or os.cpu_count() or 1
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // nproc))  # share the pod's CPUs
    args = torchrun.parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "--module", "mlops.trainer", *argv]
    )
    log.info("data-parallel: torchrun --standalone --nproc-per-node=%d -m mlops.trainer", nproc)
    try:
        torchrun.run(args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode
        log.info("rank %d failed with exit code %s", rank, code)
        return 128 - code if code < 0 else code  # a negative code is the signal that killed it
    except SignalException as exc:
        return 128 + int(exc.sigval)
    return 0
