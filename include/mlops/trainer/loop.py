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

from mlops.trainer import checkpoints
from mlops.trainer.config import ConfigError, TrainerConfig
from mlops.trainer.data import Dataset
from mlops.trainer.model import DigitsMLP
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


def pick_device(config: TrainerConfig) -> tuple[torch.device, torch.dtype | None]:
    """The device to train on and the autocast dtype (``None``: plain float32)."""
    cuda = torch.cuda.is_available()
    if config.device == "cuda" and not cuda:
        raise ConfigError("device: cuda was asked for but torch.cuda.is_available() is False")
    device = torch.device("cuda" if config.device == "cuda" or (config.device == "auto" and cuda) else "cpu")
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


def _limit_cpu_threads() -> None:
    # torch sizes its thread pool by the node's cores, not the pod's CPU limit: on a big node
    # with a small limit that oversubscribes the quota and the pod is throttled.
    quota = cpu_quota()
    if quota and "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() > quota:
        torch.set_num_threads(quota)
        log.info("using %d CPU threads (the container's CPU limit)", quota)


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


@torch.no_grad()
def evaluate(
    model: DigitsMLP, x: torch.Tensor, y: torch.Tensor, amp_dtype: torch.dtype | None
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``(x, y)``."""
    model.eval()
    with _autocast(x.device, amp_dtype):
        logits = model(x).float()
    loss = F.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    model.train()
    return accuracy, loss


def train(config: TrainerConfig, data: Dataset, ckpt: Location) -> TrainResult:
    """Train ``config.epochs`` epochs in total, resuming from the newest checkpoint in ``ckpt``."""
    device, amp_dtype = pick_device(config)
    if device.type == "cpu":
        _limit_cpu_threads()
    torch.manual_seed(config.seed)
    shuffle = torch.Generator().manual_seed(config.seed)
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

    start_epoch, samples_seen, train_seconds, train_loss = 0, 0, 0.0, float("nan")
    resumed_from = None
    state = checkpoints.load_newest(ckpt, compat)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:  # this run's arguments win over the checkpoint's
            group.update(lr=config.learning_rate, weight_decay=config.weight_decay)
        torch.set_rng_state(state["rng"]["torch"])
        shuffle.set_state(state["rng"]["shuffle"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        start_epoch = resumed_from = int(state["epoch"])
        samples_seen, train_seconds = (
            int(state["stats"]["samples_seen"]),
            float(state["stats"]["train_seconds"]),
        )
        train_loss = float(state["stats"]["train_loss"])
        log.info(
            "resumed from epoch %d (%s)", start_epoch, ckpt.child(checkpoints.checkpoint_name(start_epoch))
        )
        if start_epoch >= config.epochs:
            log.info(
                "the checkpoint already has %d of %d epochs: nothing left to train",
                start_epoch,
                config.epochs,
            )

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    x_train = torch.from_numpy(data.x_train).to(device)
    y_train = torch.from_numpy(data.y_train).to(device)
    x_test = torch.from_numpy(data.x_test).to(device)
    y_test = torch.from_numpy(data.y_test).to(device)
    n = len(y_train)
    dtype_name = str(amp_dtype or torch.float32).removeprefix("torch.")
    log.info(
        "training %s %s on %s (%s): %d train / %d test samples, epochs %d..%d, batch %d, lr %g",
        config.model_name,
        config.model_version,
        device,
        dtype_name,
        n,
        len(y_test),
        start_epoch + 1,
        config.epochs,
        config.batch_size,
        config.learning_rate,
    )

    model.train()
    if start_epoch < config.epochs:
        _warm_up(model, x_train[: config.batch_size], y_train[: config.batch_size], amp_dtype)
    for epoch in range(start_epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(n, generator=shuffle).to(device)
        total = torch.zeros((), device=device)
        for begin in range(0, n, config.batch_size):
            idx = order[begin : begin + config.batch_size]
            with _autocast(device, amp_dtype):
                logits = model(x_train[idx])
            loss = F.cross_entropy(logits.float(), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(idx)
        train_loss = (total / n).item()  # one device sync per epoch
        elapsed = time.perf_counter() - started
        samples_seen += n
        train_seconds += elapsed
        accuracy, test_loss = evaluate(model, x_test, y_test, amp_dtype)
        log.info(
            "epoch %d/%d train_loss=%.4f test_loss=%.4f test_accuracy=%.4f samples_per_second=%.0f",
            epoch,
            config.epochs,
            train_loss,
            test_loss,
            accuracy,
            n / elapsed if elapsed else 0.0,
        )
        every = config.checkpoint_every
        if epoch == config.epochs or (every and epoch % every == 0):
            uri = checkpoints.save(
                ckpt,
                _state(
                    model, optimizer, shuffle, device, epoch, compat, samples_seen, train_seconds, train_loss
                ),
                config.keep_checkpoints,
            )
            log.info("checkpoint %s", uri)

    accuracy, test_loss = evaluate(model, x_test, y_test, amp_dtype)
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


def _state(
    model, optimizer, shuffle, device, epoch, compat, samples_seen, train_seconds, train_loss
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "shuffle": shuffle.get_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        },
        "compat": compat,
        "stats": {"samples_seen": samples_seen, "train_seconds": train_seconds, "train_loss": train_loss},
    }
