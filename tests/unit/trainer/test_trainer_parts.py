"""The trainer's parts on their own: the data split, checkpoints, the ONNX contract, local output mode."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from mlops.trainer import checkpoints
from mlops.trainer.checkpoints import CheckpointError
from mlops.trainer.config import BUILTIN_DIGITS
from mlops.trainer.data import DataError, data_sha256, load_dataset
from mlops.trainer.model import DigitsMLP
from mlops.trainer.outputs import export_onnx
from mlops.trainer.storage import LocalLocation


def test_digits_are_scaled_to_unit_range_and_split_per_class_deterministically():
    from sklearn.datasets import load_digits

    a = load_dataset(BUILTIN_DIGITS, 0.2, seed=1)
    b = load_dataset(BUILTIN_DIGITS, 0.2, seed=1)
    other = load_dataset(BUILTIN_DIGITS, 0.2, seed=2)

    assert a.x_train.dtype == np.float32 and a.x_train.shape[1] == 64
    assert 0.0 <= a.x_train.min() and a.x_train.max() == 1.0
    assert len(a.y_train) + len(a.y_test) == 1797
    assert np.array_equal(a.y_test, b.y_test) and np.array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, other.x_test)
    share = np.bincount(a.y_test, minlength=10) / np.bincount(np.concatenate([a.y_train, a.y_test]))
    assert np.allclose(share, 0.2, atol=0.02), "every class keeps its share in the test split"
    digits = load_digits()
    assert a.sha256 == data_sha256(digits.data, digits.target) == other.sha256


def test_a_local_npz_dataset_is_checked_for_shape_and_labels(tmp_path):
    good = tmp_path / "good.npz"
    rng = np.random.default_rng(0)
    np.savez(good, X=rng.integers(0, 17, size=(100, 64)), y=np.arange(100) % 10)
    assert len(load_dataset(str(good), 0.2, 0).y_test) == 20

    wrong_width = tmp_path / "wide.npz"
    np.savez(wrong_width, X=np.zeros((10, 65)), y=np.zeros(10, dtype=int))
    with pytest.raises(DataError, match=r"expected X \[N, 64\] and y \[N\], got X \(10, 65\)"):
        load_dataset(str(wrong_width), 0.2, 0)
    bad_labels = tmp_path / "labels.npz"
    np.savez(bad_labels, X=np.zeros((10, 64)), y=np.full(10, 12))
    with pytest.raises(DataError, match="labels must be 0..9"):
        load_dataset(str(bad_labels), 0.2, 0)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npz"), 0.2, 0)


def _state(epoch: int, hidden: int = 8) -> dict:
    model = DigitsMLP(hidden)
    return {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": torch.optim.Adam(model.parameters()).state_dict(),
        "rng": {"torch": torch.get_rng_state(), "shuffle": torch.Generator().get_state(), "cuda": None},
        "compat": {"hidden_units": hidden},
        "stats": {"samples_seen": 10 * epoch, "train_seconds": 0.1 * epoch, "train_loss": 0.5},
    }


def test_checkpoints_keep_the_newest_and_resume_from_the_newest(tmp_path):
    location = LocalLocation(str(tmp_path))
    assert checkpoints.load_newest(location, {"hidden_units": 8}) is None
    for epoch in range(1, 6):
        checkpoints.save(location, _state(epoch), keep=2)

    assert location.names() == ["epoch-0004.pt", "epoch-0005.pt"]
    state = checkpoints.load_newest(location, {"hidden_units": 8})
    assert state["epoch"] == 5 and state["stats"]["samples_seen"] == 50


def test_a_checkpoint_from_an_incompatible_run_is_refused_by_name(tmp_path):
    location = LocalLocation(str(tmp_path))
    checkpoints.save(location, _state(3, hidden=8), keep=3)
    with pytest.raises(CheckpointError, match="hidden_units: checkpoint 8, this run 16"):
        checkpoints.load_newest(location, {"hidden_units": 16})
    (tmp_path / "epoch-0004.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="epoch-0004.pt cannot be loaded"):
        checkpoints.load_newest(location, {"hidden_units": 8})


def test_the_onnx_model_takes_input_float32_n_by_64_and_returns_logits_n_by_10():
    import onnxruntime as ort

    torch.manual_seed(0)
    model = DigitsMLP(16).eval()
    session = ort.InferenceSession(export_onnx(model), providers=["CPUExecutionProvider"])

    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1]) == ("input", "tensor(float)", 64)
    assert (out.name, out.shape[1]) == ("logits", 10)
    x = np.random.default_rng(0).random((7, 64), dtype=np.float32)
    (logits,) = session.run(["logits"], {"input": x})
    assert logits.shape == (7, 10) and logits.dtype == np.float32
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_output_dir_mode_trains_without_boto3_or_onnx(tmp_path):
    # The GPU check runs where only numpy, scikit-learn and torch may exist.
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["boto3"] = sys.modules["botocore"] = sys.modules["onnx"] = None  # import fails
        from mlops.trainer.cli import main
        sys.exit(main(["--output-dir", {str(tmp_path)!r}, "--skip-onnx", "--epochs", "2",
                       "--learning-rate", "0.01", "--batch-size", "32"]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"},
    )

    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoints",
        "metrics.json",
        "model_card.json",
        "samples.json",
    ]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["device"], metrics["dtype"], metrics["epochs"]) == ("cpu", "float32", 2)
    assert [line.split()[1] for line in done.stdout.splitlines() if line.startswith("epoch ")] == [
        "1/2",
        "2/2",
    ]
    assert (tmp_path / "checkpoints" / "epoch-0002.pt").is_file()


def test_the_cpu_quota_is_read_from_the_cgroup_limit(tmp_path):
    from mlops.trainer.loop import cpu_quota

    limit = tmp_path / "cpu.max"
    limit.write_text("250000 100000\n")
    assert cpu_quota(str(limit)) == 3
    limit.write_text("max 100000\n")
    assert cpu_quota(str(limit)) is None
    assert cpu_quota(str(tmp_path / "absent")) is None
