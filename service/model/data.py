"""The 8x8 digits data set (bundled with scikit-learn), split deterministically.

Images are flattened to 64 features, scaled from 0..16 to [0, 1] and split 60/20/20 into
train, validation and test sets, stratified by class with a fixed seed, so every run sees
exactly the same arrays and :func:`training_data_digest` is stable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

SPLIT_SEED = 20261122
N_FEATURES = 64
N_CLASSES = 10
PIXEL_MAX = 16.0
DATASET_NAME = "sklearn-digits"

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Splits:
    """Train/validation/test arrays; features float32 (N, 64) in [0, 1], labels int64."""

    x_train: FloatArray
    y_train: IntArray
    x_val: FloatArray
    y_val: IntArray
    x_test: FloatArray
    y_test: IntArray


@lru_cache(maxsize=1)
def load_splits() -> Splits:
    """Load the digits, scale them to [0, 1] and split them 60/20/20 (stratified, seeded).

    Returns:
        The three splits. The arrays are read-only; copy them before changing them.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (np.asarray(digits.data, dtype=np.float32) / np.float32(PIXEL_MAX)).astype(np.float32)
    y = np.asarray(digits.target, dtype=np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, stratify=y, random_state=SPLIT_SEED
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=SPLIT_SEED
    )
    arrays = [np.ascontiguousarray(a) for a in (x_train, y_train, x_val, y_val, x_test, y_test)]
    for array in arrays:
        array.setflags(write=False)
    return Splits(*arrays)


def training_data_digest(splits: Splits | None = None) -> str:
    """Return ``sha256:<hex>`` of the canonical training arrays.

    The canonical form is a domain tag, then for the features and the labels in turn their
    dtype and shape as text and their little-endian C-order bytes.

    Args:
        splits: The splits to digest; defaults to :func:`load_splits`.

    Returns:
        The digest string.
    """
    splits = splits or load_splits()
    h = hashlib.sha256(b"ztml/sklearn-digits/train/v1\n")
    for array in (splits.x_train, splits.y_train):
        canonical = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        h.update(f"{canonical.dtype.str}{canonical.shape}\n".encode())
        h.update(canonical.tobytes(order="C"))
    return f"sha256:{h.hexdigest()}"
