"""Training and evaluation: CUDA with bf16 autocast when available, the CPU otherwise.

The whole dataset lives on the device and each epoch is shuffled with a seeded
generator, so an epoch costs no host-to-device copies and a resumed run replays the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name

from mlops.trainer import checkpoints, distributed
from mlops.trainer.config import ConfigError, TrainerConfig
from mlops.trainer.data import Dataset
from mlops.trainer.distributed import Ranks
from mlops.trainer.model import DigitsMLP
from mlops.trainer.stopping import Stopped, StopRequest
from mlops.trainer.storage import Location

log = logging.getLogger("mlops.trainer")


@dataclass
class TrainResult:
    """The trained model and what the run measured."""

    model: DigitsMLP
    accuracy: float
    loss: float
    train_loss: float
    epochs: int
    resumed_from_epoch: int | None
    samples_per_second: float
    train_seconds: float
    device: str
    dtype: str
    peak_gpu_memory_bytes: int | None
    gpu_name: str | None
    world_size: int = 1


def pick_device(config: TrainerConfig, ranks: Ranks | None = None) -> tuple[torch.device, torch.dtype | None]:
    """The device to train on (this rank's GPU) and the autocast dtype (``None``: plain float32)."""
    ranks = ranks or Ranks()
    cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise ConfigError("device: cuda was asked for but torch.cuda.is_available() is False")
    use_cuda = config.device == "cuda" or (config.device == "auto" and cuda)
    if use_cuda and ranks.parallel and torch.cuda.device_count() < ranks.world:
        raise ConfigError(
            f"nproc_per_node: {ranks.world} processes but only {torch.cuda.device_count()} GPUs are visible"
        )
    device = torch.device(f"cuda:{ranks.local_rank}" if use_cuda else "cpu")
    if config.precision == "fp32":
        return device, None
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return device, torch.bfloat16
        if config.precision == "bf16":
            raise ConfigError("precision: bf16 was asked for but this GPU does not support it")
        return device, None
    return device, torch.bfloat16 if config.precision == "bf16" else None


def cpu_quota(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """CPUs granted by the container's cgroup v2 quota (a pod's CPU limit), or ``None`` if unlimited."""
    try:
        quota, period = Path(path).read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))


def _limit_cpu_threads(world: int = 1) -> None:
    # torch sizes its thread pool by the node's cores, not the pod's CPU limit: on a big node
    # with a small limit that oversubscribes the quota and the pod is throttled.
    quota = cpu_quota()
    share = max(1, quota // world) if quota else None
    if share and "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() > share:
        torch.set_num_threads(share)
        log.info("using %d CPU threads (the container's CPU limit)", share)


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


@torch.no_grad()
def evaluate(
    model: DigitsMLP,
    x: torch.Tensor,
    y: torch.Tensor,
    amp_dtype: torch.dtype | None,
    ranks: Ranks | None = None,
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``(x, y)``.

    In a data-parallel run each rank scores its share of the samples and the sums are
    reduced across ranks, so every rank returns the figures of the whole set.
    """
    ranks = ranks or Ranks()
    model.eval()
    xs, ys = x[ranks.rank :: ranks.world], y[ranks.rank :: ranks.world]
    with _autocast(x.device, amp_dtype):
        logits = model(xs).float()
    sums = torch.stack(
        [
            F.cross_entropy(logits, ys, reduction="sum") if len(ys) else torch.zeros((), device=x.device),
            (logits.argmax(dim=1) == ys).sum().float(),
            torch.tensor(float(len(ys)), device=x.device),
        ]
    )
    _all_sum(sums, ranks)
    model.train()
    loss, correct, count = sums.tolist()
    return correct / count, loss / count


def _all_sum(tensor: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    if ranks.parallel:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _barrier(ranks: Ranks) -> None:
    if ranks.parallel:
        import torch.distributed as dist

        dist.barrier()


def _should_stop(stop: StopRequest, ranks: Ranks, device: torch.device) -> bool:
    """Whether any rank was asked to stop: all ranks must stop after the same batch."""
    if not ranks.parallel:
        return stop.requested
    flag = torch.tensor([1.0 if stop.requested else 0.0], device=device)
    return bool(_all_sum(flag, ranks).item())


# In a data-parallel run, ranks agree on stopping every this many batches (one tiny all-reduce).
STOP_CHECK_EVERY = 8


def train(
    config: TrainerConfig,
    data: Dataset,
    ckpt: Location,
    stop: StopRequest | None = None,
    ranks: Ranks | None = None,
) -> TrainResult:
    """Train ``config.epochs`` epochs in total, resuming from the newest checkpoint in ``ckpt``.

    Data-parallel when ``ranks.world > 1`` (DistributedDataParallel; each rank takes
    ``batch_size / world`` samples of every global batch, so a global batch is the same set
    of samples as in a single-process run). Only rank 0 writes checkpoints; every rank
    resumes from the same one. When ``stop`` is requested (SIGTERM), the ranks finish the
    current batch, rank 0 writes a checkpoint of that position, and :class:`Stopped` is raised.
    """
    from torch.utils.data.distributed import DistributedSampler

    stop = stop or StopRequest()
    ranks = ranks or Ranks()
    if config.batch_size % ranks.world:
        raise ConfigError(
            f"batch_size: {config.batch_size} cannot be split evenly over {ranks.world} processes"
        )
    device, amp_dtype = pick_device(config, ranks)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        _limit_cpu_threads(ranks.world)
    backend = distributed.init(ranks, device.type)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = DigitsMLP(config.hidden_units).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    compat = {
        "hidden_units": config.hidden_units,
        "data_sha256": data.sha256,
        "test_fraction": config.test_fraction,
        "seed": config.seed,
    }

    start_epoch, start_batch, samples_seen, train_seconds, train_loss = 0, 0, 0, 0.0, float("nan")
    partial = (0.0, 0)  # loss sum and sample count of a partly trained epoch
    resumed_from = None
    state = checkpoints.load_newest(ckpt, compat)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:  # this run's arguments win over the checkpoint's
            group.update(lr=config.learning_rate, weight_decay=config.weight_decay)
        start_epoch = resumed_from = int(state["epoch"])
        # A stop mid-epoch: skip the global batches already trained (batch_size may have changed).
        start_batch = int(state.get("samples_into_epoch", 0)) // config.batch_size
        partial = (float(state.get("partial_loss_sum", 0.0)), int(state.get("partial_count", 0)))
        samples_seen = int(state["stats"]["samples_seen"])
        train_seconds = float(state["stats"]["train_seconds"])
        train_loss = float(state["stats"]["train_loss"])
        log.info(
            "resumed from epoch %d%s (%s)",
            start_epoch,
            f" batch {start_batch}" if start_batch else "",
            ckpt.child(checkpoints.checkpoint_name(start_epoch, int(state.get("batch", 0)))),
        )
        if start_epoch >= config.epochs:
            log.info(
                "the checkpoint already has %d of %d epochs: nothing left to train",
                start_epoch,
                config.epochs,
            )
    net = model
    if ranks.parallel:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    x_train = torch.from_numpy(data.x_train).to(device)
    y_train = torch.from_numpy(data.y_train).to(device)
    x_test = torch.from_numpy(data.x_test).to(device)
    y_test = torch.from_numpy(data.y_test).to(device)
    n = len(y_train)
    per_rank = config.batch_size // ranks.world
    sampler = DistributedSampler(
        range(n), num_replicas=ranks.world, rank=ranks.rank, shuffle=True, seed=config.seed
    )
    dtype_name = str(amp_dtype or torch.float32).removeprefix("torch.")
    log.info(
        "training %s %s on %s (%s)%s: %d train / %d test samples, epochs %d..%d, batch %d, lr %g",
        config.model_name,
        config.model_version,
        device.type,
        dtype_name,
        f", data-parallel over {ranks.world} processes ({backend})" if ranks.parallel else "",
        n,
        len(y_test),
        start_epoch + 1,
        config.epochs,
        config.batch_size,
        config.learning_rate,
    )

    last_saved = [(start_epoch, start_batch)]

    def save(epoch: int, batch: int, loss_sum: float, count: int) -> str | None:
        uri = None
        last_saved[0] = (epoch, batch)
        if ranks.main:
            state = _state(model, optimizer, epoch, compat, samples_seen, train_seconds, train_loss)
            state.update(
                batch=batch,
                samples_into_epoch=batch * config.batch_size,
                partial_loss_sum=loss_sum,
                partial_count=count,
            )
            uri = checkpoints.save(ckpt, state, config.keep_checkpoints)
            log.info("checkpoint %s", uri)
        _barrier(ranks)  # nobody moves on (or exits) before the checkpoint is written
        return uri

    net.train()
    if start_epoch < config.epochs and not stop.requested:
        _warm_up(model, x_train[:per_rank], y_train[:per_rank], amp_dtype)
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            started = time.perf_counter()
            sampler.set_epoch(epoch)
            order = torch.tensor(list(sampler), dtype=torch.long).to(device)
            skip = start_batch if epoch == start_epoch + 1 else 0
            sums = torch.tensor([*partial], dtype=torch.float64, device=device) if skip else None
            local = torch.zeros(2, dtype=torch.float64, device=device)  # this rank's loss sum, count
            batches = -(-len(order) // per_rank)
            for b in range(skip, batches):
                every = STOP_CHECK_EVERY if ranks.parallel else 1
                if (b - skip) % every == 0 and _should_stop(stop, ranks, device):
                    trained = _all_sum(local.clone(), ranks)
                    if sums is not None:
                        trained += sums
                    samples_seen += int(trained[1].item()) - (int(sums[1].item()) if sums is not None else 0)
                    train_seconds += time.perf_counter() - started
                    if (epoch - 1, b) == last_saved[0]:
                        raise Stopped(None)  # nothing trained since the newest checkpoint
                    raise Stopped(save(epoch - 1, b, float(trained[0].item()), int(trained[1].item())))
                idx = order[b * per_rank : (b + 1) * per_rank]
                with _autocast(device, amp_dtype):
                    logits = net(x_train[idx])
                loss = F.cross_entropy(logits.float(), y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # DDP averages the gradients of the ranks here
                optimizer.step()
                local[0] += loss.detach().double() * len(idx)
                local[1] += len(idx)
            totals = _all_sum(local, ranks)  # one device sync per epoch
            if sums is not None:
                totals += sums
            epoch_samples = int(totals[1].item()) - (int(sums[1].item()) if sums is not None else 0)
            train_loss = float(totals[0].item() / totals[1].item())
            elapsed = time.perf_counter() - started
            samples_seen += epoch_samples
            train_seconds += elapsed
            accuracy, test_loss = evaluate(model, x_test, y_test, amp_dtype, ranks)
            log.info(
                "epoch %d/%d train_loss=%.4f test_loss=%.4f test_accuracy=%.4f samples_per_second=%.0f",
                epoch,
                config.epochs,
                train_loss,
                test_loss,
                accuracy,
                epoch_samples / elapsed if elapsed else 0.0,
            )
            every = config.checkpoint_every
            if epoch == config.epochs or (every and epoch % every == 0):
                save(epoch, 0, 0.0, 0)

        accuracy, test_loss = evaluate(model, x_test, y_test, amp_dtype, ranks)
    finally:
        distributed.shutdown(ranks)
    cuda = device.type == "cuda"
    return TrainResult(
        model=model,
        accuracy=accuracy,
        loss=test_loss,
        train_loss=train_loss,
        epochs=max(config.epochs, start_epoch),
        resumed_from_epoch=resumed_from,
        samples_per_second=samples_seen / train_seconds if train_seconds else 0.0,
        train_seconds=train_seconds,
        device=device.type,
        dtype=dtype_name,
        peak_gpu_memory_bytes=int(torch.cuda.max_memory_allocated(device)) if cuda else None,
        gpu_name=torch.cuda.get_device_name(device) if cuda else None,
        world_size=ranks.world,
    )


def _warm_up(model: DigitsMLP, x: torch.Tensor, y: torch.Tensor, amp_dtype: torch.dtype | None) -> None:
    """One forward/backward on a throwaway copy, so one-off costs stay out of the throughput figure.

    The first backward pass imports torch's compiler stack (~1-2 s) and, on CUDA,
    initialises cuBLAS; the real model, optimizer and RNG streams are left untouched.
    """
    scratch = copy.deepcopy(model)
    with _autocast(x.device, amp_dtype):
        logits = scratch(x)
    F.cross_entropy(logits.float(), y).backward()
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def _state(model, optimizer, epoch, compat, samples_seen, train_seconds, train_loss) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "compat": compat,
        "stats": {"samples_seen": samples_seen, "train_seconds": train_seconds, "train_loss": train_loss},
    }
