"""The reference trainer as the pod runs it: a real subprocess, really training on the CPU,
reading and writing the moto S3 server through the standard AWS environment variables."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mlops.promotion.gates import Samples
from mlops.registry import artifact_uri, checkpoint_uri, validate_metrics
from mlops.trainer import exit_codes

MODEL, VERSION = "digits-mlp", "v20261127t020000-1a2b3c4d"
IMAGE = "ghcr.io/mlops-airflow/trainer:0.1.0"
# 8 epochs of this reach 0.944-0.978 held-out accuracy over seeds 0-7 (0.967 mean) in ~0.3 s of training.
FAST = ["--learning-rate", "0.01", "--batch-size", "32", "--seed", "0"]
ACCURACY_FLOOR = 0.9


def pod_env(s3_server: str, bucket: str, version: str = VERSION, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_"))}
    env.update(
        AWS_ENDPOINT_URL=s3_server,
        RUN_ID=f"scheduled__{version}",
        MODEL_NAME=MODEL,
        MODEL_VERSION=version,
        ARTIFACT_URI=artifact_uri(bucket, MODEL, version),
        CHECKPOINT_URI=checkpoint_uri(bucket, MODEL, version),
        TRAINER_IMAGE=IMAGE,
        GIT_SHA="0123abc",
        # One intra-op thread: the model is tiny, and the test machine's few cores are shared.
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def trainer(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlops.trainer", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def get_json(s3_client, bucket: str, key: str) -> dict:
    return json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())


def keys(s3_client, bucket: str, prefix: str) -> list[str]:
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return sorted(obj["Key"][len(prefix) :] for obj in listed)


def epoch_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("epoch ")]


def test_trainer_reaches_the_accuracy_floor_on_cpu_and_writes_every_output(
    s3_server, s3_client, s3_bucket, tmp_path
):
    started = time.monotonic()
    done = trainer(
        ["--epochs", "8", "--checkpoint-every", "2", *FAST], pod_env(s3_server, s3_bucket), tmp_path
    )
    wall = time.monotonic() - started

    assert done.returncode == 0, done.stderr
    assert len(epoch_lines(done.stdout)) == 8, done.stdout
    prefix = f"models/{MODEL}/versions/{VERSION}/"
    assert keys(s3_client, s3_bucket, prefix) == [
        "metrics.json",
        "model.onnx",
        "model_card.json",
        "samples.json",
    ]
    assert keys(s3_client, s3_bucket, f"models/{MODEL}/checkpoints/{VERSION}/") == [
        "epoch-0004.pt",
        "epoch-0006.pt",
        "epoch-0008.pt",
    ]

    metrics = validate_metrics(
        s3_client.get_object(Bucket=s3_bucket, Key=prefix + "metrics.json")["Body"].read()
    )
    print(
        f"\nCPU: accuracy={metrics['accuracy']:.4f} loss={metrics['loss']:.4f} "
        f"trainer wall={metrics['wall_seconds']:.2f}s process wall={wall:.2f}s "
        f"samples/s={metrics['samples_per_second']:.0f}"
    )
    assert metrics["accuracy"] >= ACCURACY_FLOOR
    assert (metrics["device"], metrics["dtype"], metrics["epochs"]) == ("cpu", "float32", 8)
    assert metrics["peak_gpu_memory_bytes"] is None
    assert metrics["train_size"] + metrics["test_size"] == 1797
    assert metrics["samples_per_second"] > 0 and metrics["wall_seconds"] > 0

    card = get_json(s3_client, s3_bucket, prefix + "model_card.json")
    from sklearn.datasets import load_digits

    from mlops.trainer.data import data_sha256

    digits = load_digits()
    assert card["data"]["sha256"] == data_sha256(digits.data, digits.target)
    assert (card["run_id"], card["model_name"], card["model_version"]) == (
        f"scheduled__{VERSION}",
        MODEL,
        VERSION,
    )
    assert card["image"] == IMAGE
    assert card["code"]["git_sha"] == "0123abc" and card["code"]["version"]
    assert card["params"]["learning_rate"] == 0.01 and card["params"]["epochs"] == 8
    assert card["model"]["input"]["name"] == "input" and card["model"]["output"]["name"] == "logits"
    assert card["created_at"].endswith("+00:00")


def test_the_onnx_model_on_s3_predicts_the_held_out_samples_with_onnxruntime(
    s3_server, s3_client, s3_bucket, tmp_path
):
    import onnxruntime as ort

    done = trainer(
        ["--epochs", "8", "--checkpoint-every", "0", *FAST], pod_env(s3_server, s3_bucket), tmp_path
    )
    assert done.returncode == 0, done.stderr
    prefix = f"models/{MODEL}/versions/{VERSION}/"
    onnx_bytes = s3_client.get_object(Bucket=s3_bucket, Key=prefix + "model.onnx")["Body"].read()
    samples = get_json(s3_client, s3_bucket, prefix + "samples.json")
    held_out = get_json(s3_client, s3_bucket, prefix + "metrics.json")["test_size"]

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    x = np.array([s["input"] for s in samples["samples"]], dtype=np.float32)
    (logits,) = session.run(["logits"], {samples["input_name"]: x})

    # Every held-out sample, each with the trained model's own prediction (the parity gate's reference).
    assert len(samples["samples"]) == held_out and x.shape == (held_out, 64) and held_out > 300
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert logits.shape == (held_out, 10)
    predicted = logits.argmax(axis=1).tolist()
    assert predicted == [s["predicted"] for s in samples["samples"]], "ONNX must agree with the trained model"
    labels = [s["label"] for s in samples["samples"]]
    # The promotion's gates read the same file (one format: mlops.samples).
    assert Samples.parse(samples).labels == labels and Samples.parse(samples).predicted == predicted
    assert np.mean(np.array(predicted) == np.array(labels)) >= 0.85


def test_sigterm_mid_epoch_checkpoints_that_batch_and_the_retry_resumes_there_not_at_the_epoch(
    s3_server, s3_client, s3_bucket, tmp_path
):
    """Spot preemption: SIGTERM arrives in the middle of epoch 2. The trainer finishes the batch,
    writes a checkpoint of exactly that position and exits 143; the retry resumes from it (not from
    epoch 1's checkpoint) and ends with the same model as a run that was never interrupted."""
    env = pod_env(s3_server, s3_bucket)
    ckpt_prefix = f"models/{MODEL}/checkpoints/{VERSION}/"
    # Batch size 1: ~1,400 optimizer steps per epoch, so the signal lands mid-epoch.
    args = ["--epochs", "3", "--checkpoint-every", "1", "--learning-rate", "0.001", "--batch-size", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops.trainer", *args, "--seed", "0"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in proc.stdout:
            if line.startswith("checkpoint ") and line.rstrip().endswith("epoch-0001.pt"):
                time.sleep(0.3)  # well into epoch 2
                proc.send_signal(signal.SIGTERM)
                break
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, out
    assert "received SIGTERM" in out
    checkpoints = keys(s3_client, s3_bucket, ckpt_prefix)
    mid = [m for k in checkpoints if (m := re.match(r"^epoch-(\d{4})-batch-(\d{6})\.pt$", k))]
    assert len(mid) == 1, checkpoints  # the batch it stopped after, beside the epoch checkpoints
    epoch, batch = int(mid[0].group(1)), int(mid[0].group(2))
    assert epoch >= 1 and 0 < batch < 1437
    assert f"epoch-{epoch + 1:04d}.pt" not in checkpoints  # stopped inside epoch `epoch + 1`
    assert not keys(s3_client, s3_bucket, f"models/{MODEL}/versions/{VERSION}/"), (
        "no outputs from a stopped run"
    )

    resumed = trainer([*args, "--seed", "0"], env, tmp_path, timeout=120)

    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from epoch {epoch} batch {batch}" in resumed.stdout  # not from epoch-{epoch}.pt
    assert [line.split()[1] for line in epoch_lines(resumed.stdout)] == [
        f"{e}/3" for e in range(epoch + 1, 4)
    ]
    metrics = get_json(s3_client, s3_bucket, f"models/{MODEL}/versions/{VERSION}/metrics.json")
    assert (metrics["epochs"], metrics["resumed_from_epoch"]) == (3, epoch)

    # The same run without the interruption ends with the same model: same batches, same order.
    other = "v20261127t020000-ffffffff"
    straight = trainer([*args, "--seed", "0"], pod_env(s3_server, s3_bucket, version=other), tmp_path, 120)
    assert straight.returncode == 0, straight.stderr
    reference = get_json(s3_client, s3_bucket, f"models/{MODEL}/versions/{other}/metrics.json")
    assert (metrics["accuracy"], metrics["loss"]) == (reference["accuracy"], reference["loss"])


def test_the_trainer_reads_an_npz_dataset_from_s3(s3_server, s3_client, s3_bucket, tmp_path):
    from sklearn.datasets import load_digits

    from mlops.trainer.data import data_sha256

    digits = load_digits()
    x, y = digits.data[:600], digits.target[:600]
    buffer = io.BytesIO()
    np.savez(buffer, X=x, y=y)
    s3_client.put_object(Bucket=s3_bucket, Key="datasets/digits-600/dataset.npz", Body=buffer.getvalue())

    done = trainer(
        ["--epochs", "1", "--dataset-uri", f"s3://{s3_bucket}/datasets/digits-600/", *FAST],
        pod_env(s3_server, s3_bucket),
        tmp_path,
    )

    assert done.returncode == 0, done.stderr
    prefix = f"models/{MODEL}/versions/{VERSION}/"
    card = get_json(s3_client, s3_bucket, prefix + "model_card.json")
    assert card["data"]["sha256"] == data_sha256(x, y)
    assert card["data"]["source"] == f"s3://{s3_bucket}/datasets/digits-600/dataset.npz"
    assert get_json(s3_client, s3_bucket, prefix + "metrics.json")["train_size"] == 480


@pytest.mark.parametrize(
    ("args", "env_change", "code", "message"),
    [
        (
            ["--epochs", "0"],
            {},
            exit_codes.CONFIGURATION,
            "trainer: error: epochs: must be between 1 and 100000, got 0",
        ),
        (
            ["--learning-rate", "0"],
            {},
            exit_codes.CONFIGURATION,
            "trainer: error: learning_rate: must be greater than 0.0",
        ),
        (
            [],
            {"ARTIFACT_URI": "s3:/bucket/x"},
            exit_codes.CONFIGURATION,
            "trainer: error: ARTIFACT_URI: expected s3://bucket/prefix/",
        ),
        (
            [],
            {"MODEL_VERSION": None},
            exit_codes.CONFIGURATION,
            "trainer: error: MODEL_VERSION: environment variable is not set",
        ),
        (
            ["--dataset-uri", "s3://{bucket}/no/such.npz"],
            {},
            exit_codes.DATA,
            "trainer: error: dataset_uri: s3://{bucket}/no/such.npz does not exist",
        ),
        (
            [],
            {"ARTIFACT_URI": "s3://no-such-bucket-here/m/"},
            exit_codes.CONFIGURATION,
            "trainer: error: ARTIFACT_URI: bucket 'no-such-bucket-here' is not usable",
        ),
        (
            [],
            {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},  # nothing listens: S3 is down, not misconfigured
            exit_codes.TRANSIENT_STORAGE,
            "trainer: error: ARTIFACT_URI: cannot reach S3",
        ),
    ],
)
def test_bad_input_exits_non_zero_with_one_line_naming_the_field(
    s3_server, s3_bucket, tmp_path, args, env_change, code, message
):
    env = pod_env(s3_server, s3_bucket)
    for key, value in env_change.items():
        env.pop(key) if value is None else env.__setitem__(key, value)
    args = [a.replace("{bucket}", s3_bucket) for a in args]

    done = trainer(["--epochs", "1", *args], env, tmp_path)

    assert done.returncode == code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(message.replace("{bucket}", s3_bucket)), lines[0]
    assert "Traceback" not in done.stderr + done.stdout
