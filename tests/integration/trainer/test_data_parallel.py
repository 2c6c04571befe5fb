"""Data-parallel training on the CPU: two gloo processes under torchrun, as a 2-GPU pod runs them on NCCL.

Tolerance: each global batch holds the same samples as in a single-process run (each rank takes
batch_size / 2 of it, and DDP averages the two gradients), so the two runs differ only by the
order of floating-point additions (and one padding sample of DistributedSampler in the last
batch of an epoch). We accept |accuracy difference| <= 0.005 (fewer than 2 of 360 held-out
digits) and |loss difference| <= 0.005; measured here: identical to 6 decimals.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ACCURACY_TOLERANCE = 0.005
LOSS_TOLERANCE = 0.005
ARGS = ["--learning-rate", "0.01", "--batch-size", "32", "--seed", "0", "--skip-onnx"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _train(out: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlops.trainer", "--output-dir", str(out), *ARGS, *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_two_gloo_processes_train_the_same_model_as_one_and_resume_from_rank_zeros_checkpoint(tmp_path):
    single = _train(tmp_path / "single", "--epochs", "4")
    assert single.returncode == 0, single.stderr

    # Two processes, stopped after 2 epochs, then asked for 4: the second launch resumes.
    parallel_dir = tmp_path / "parallel"
    first = _train(parallel_dir, "--epochs", "2", "--nproc-per-node", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "data-parallel over 2 processes (gloo)" in first.stdout
    assert sorted(p.name for p in (parallel_dir / "checkpoints").iterdir()) == [
        "epoch-0001.pt",
        "epoch-0002.pt",
    ]
    resumed = _train(parallel_dir, "--epochs", "4", "--nproc-per-node", "2")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from epoch 2" in resumed.stdout
    # Rank 0 alone logs the epochs (and writes checkpoints and outputs): no duplicate lines.
    assert [line.split()[1] for line in resumed.stdout.splitlines() if line.startswith("epoch ")] == [
        "3/4",
        "4/4",
    ]

    a, b = _metrics(tmp_path / "single"), _metrics(parallel_dir)
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert b["epochs"] == 4 and b["resumed_from_epoch"] == 2
    assert abs(a["accuracy"] - b["accuracy"]) <= ACCURACY_TOLERANCE, (a["accuracy"], b["accuracy"])
    assert abs(a["loss"] - b["loss"]) <= LOSS_TOLERANCE, (a["loss"], b["loss"])
    assert b["train_size"] == a["train_size"] and b["accuracy"] >= 0.9


def test_sigterm_to_torchrun_stops_every_rank_after_a_checkpoint_and_the_retry_resumes_there(tmp_path):
    """Kubernetes signals only the container's main process (torchrun); torchrun forwards SIGTERM
    to the ranks, which agree on one batch, checkpoint it (rank 0) and exit 143."""
    out = tmp_path / "run"
    args = ["--epochs", "3", "--learning-rate", "0.001", "--batch-size", "2", "--seed", "0", "--skip-onnx"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops.trainer", "--output-dir", str(out), *args, "--nproc-per-node", "2"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        for line in proc.stdout:
            if line.startswith("checkpoint ") and line.rstrip().endswith("epoch-0001.pt"):
                time.sleep(1.0)  # into epoch 2 (an epoch is ~700 steps of 2 ranks here)
                os.kill(proc.pid, signal.SIGTERM)  # the launcher only, as the kubelet does
                break
        output, _ = proc.communicate(timeout=120)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == 143, output
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    mid = [m for n in names if (m := re.match(r"^epoch-(\d{4})-batch-(\d{6})\.pt$", n))]
    assert len(mid) == 1, names  # the batch the ranks agreed to stop after
    epoch, batch = int(mid[0].group(1)), int(mid[0].group(2))
    assert epoch >= 1 and batch > 0

    resumed = subprocess.run(
        [sys.executable, "-m", "mlops.trainer", "--output-dir", str(out), *args, "--nproc-per-node", "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from epoch {epoch} batch {batch}" in resumed.stdout
    assert _metrics(out)["epochs"] == 3
