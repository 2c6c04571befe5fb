"""The training data: scikit-learn's bundled digits (8x8 images, 10 classes), or an .npz of the same shape.

Pixels are integers 0..16; the model sees them divided by 16.0, so every input is a
float32 in [0, 1]. That scaling is part of the model's contract (see the model card).
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass

import numpy as np

from mlops.trainer.config import BUILTIN_DIGITS
from mlops.trainer.storage import StorageError, read_object

FEATURES, CLASSES, PIXEL_MAX = 64, 10, 16.0


class DataError(ValueError):
    """The dataset cannot be loaded or does not have the expected shape."""


@dataclass(frozen=True)
class Dataset:
    """Scaled inputs and labels, split into train and held-out test parts."""

    x_train: np.ndarray  # float32 [n, 64] in [0, 1]
    y_train: np.ndarray  # int64 [n]
    x_test: np.ndarray
    y_test: np.ndarray
    sha256: str  # of the raw arrays, before scaling and splitting
    source: str

    @property
    def sizes(self) -> dict[str, int]:
        return {"train_size": len(self.y_train), "test_size": len(self.y_test)}


def data_sha256(x: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of the raw pixel array (float64, C order) followed by the labels (int64)."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(x, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return digest.hexdigest()


def _builtin_digits() -> tuple[np.ndarray, np.ndarray, str]:
    try:
        import sklearn
        from sklearn.datasets import load_digits
    except ImportError:
        # The GPU check may run where scikit-learn is missing: it can pass a copy of the CSV.
        csv = os.environ.get("DIGITS_CSV")
        if not csv:
            raise DataError(
                f"dataset_uri: {BUILTIN_DIGITS} needs scikit-learn (not installed); "
                "install it or set DIGITS_CSV to a copy of sklearn's datasets/data/digits.csv.gz"
            ) from None
        table = np.loadtxt(csv, delimiter=",")
        return table[:, :-1], table[:, -1].astype(np.int64), f"{csv} (scikit-learn's digits.csv.gz)"
    bunch = load_digits()
    return bunch.data, bunch.target, f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})"


def _npz(uri: str) -> tuple[np.ndarray, np.ndarray, str]:
    if uri.startswith("s3://") and not uri.endswith(".npz"):
        uri = uri.rstrip("/") + "/dataset.npz"
    try:
        raw = read_object(uri, "dataset_uri")
    except StorageError as exc:
        if exc.transient:
            raise  # S3 is down, not the data: the retry reads it again
        raise DataError(str(exc)) from None
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            return np.asarray(archive["X"]), np.asarray(archive["y"]), uri
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(f"dataset_uri: {uri} is not an .npz with arrays X and y ({exc})") from None


def load_dataset(uri: str, test_fraction: float, seed: int) -> Dataset:
    """Load the dataset at ``uri``, check it, scale it and split it per class (deterministic for ``seed``)."""
    x, y, source = _builtin_digits() if uri == BUILTIN_DIGITS else _npz(uri)
    if x.ndim != 2 or x.shape[1] != FEATURES or y.shape != (x.shape[0],):
        raise DataError(f"dataset_uri: expected X [N, {FEATURES}] and y [N], got X {x.shape} and y {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
        raise DataError("dataset_uri: labels y must be integers")
    if y.size and (y.min() < 0 or y.max() >= CLASSES):
        raise DataError(f"dataset_uri: labels must be 0..{CLASSES - 1}, got {int(y.min())}..{int(y.max())}")
    if not np.all(np.isfinite(x)) or x.min(initial=0) < 0 or x.max(initial=0) > PIXEL_MAX:
        raise DataError(f"dataset_uri: pixels must be finite and within 0..{PIXEL_MAX:g}")
    sha = data_sha256(x, y)
    y = y.astype(np.int64)

    rng = np.random.default_rng(seed)
    test_idx, train_idx = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = max(1, round(len(idx) * test_fraction)) if len(idx) > 1 else 0
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train, test = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"dataset_uri: {len(y)} samples are too few to split into train and test")
    scaled = (x / PIXEL_MAX).astype(np.float32)
    return Dataset(scaled[train], y[train], scaled[test], y[test], sha, source)
