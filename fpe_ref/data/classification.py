"""The one container every classification loader returns: a train/test split of (X, y).

Paper: Sec. 2.2.2 and A.3. FashionMNIST (raw flattened pixels) and the CLIP embeddings of
CIFAR-100 / ImageNet are all "a matrix of inputs and a vector of class indices, train and
test"; the classifier code sees only this shape, whichever loader built it.

The constructor validates its fields, so a ``ClassificationData`` built by hand (tests, a
user's own loader) obeys the same invariants as one read from disk:

    X_train (n_train, d) float32/float64, finite      y_train (n_train,) int64 in 0..K-1
    X_test  (n_test,  d) same dtype and same d        y_test  (n_test,)  int64 in 0..K-1
    n_classes = K >= 2,  len(class_names) == K,  n_train >= 1,  n_test >= 1
    y_train holds at least 2 distinct classes (one class is nothing to classify)

The arrays are stored as given (no copy) and are not made read-only: the dataclass is frozen,
its arrays are not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpe_ref.errors import FPEError, check_int

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_float_dtype(dtype) -> np.dtype:
    """Validate a ``dtype`` argument: float32 or float64 (any spelling NumPy accepts)."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise FPEError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise FPEError(f"dtype must be float32 or float64, got {dt.name}")
    return dt


@dataclass(frozen=True, eq=False)
class ClassificationData:
    """A train/test classification data set, as every fpe-ref loader returns it.

    Attributes
    ----------
    X_train : ndarray, shape (n_train, d), float32 or float64
        Training inputs, one row per example.
    y_train : ndarray, shape (n_train,), int64
        Training class indices in ``0 .. n_classes-1``.
    X_test : ndarray, shape (n_test, d), same dtype as ``X_train``
        Test inputs.
    y_test : ndarray, shape (n_test,), int64
        Test class indices.
    n_classes : int
        Number of classes ``K`` (the classifier's output width).
    class_names : tuple of str
        ``K`` human-readable names; ``class_names[k]`` names label ``k``.
    source : str
        Where the data came from (a directory or file path), for run logs. May be empty.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    class_names: tuple
    source: str = ""

    def __post_init__(self):
        object.__setattr__(self, "n_classes", check_int("n_classes", self.n_classes, 2))
        for split in ("train", "test"):
            X = getattr(self, f"X_{split}")
            y = getattr(self, f"y_{split}")
            if not isinstance(X, np.ndarray) or X.ndim != 2:
                raise FPEError(f"X_{split} must be a 2-D ndarray, got {_describe(X)}")
            if X.dtype not in FLOAT_DTYPES:
                raise FPEError(f"X_{split} must be float32 or float64, got dtype {X.dtype}")
            if X.shape[0] == 0:
                raise FPEError(f"X_{split} has no rows")
            check_finite(X, f"X_{split}")
            if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype != np.int64:
                raise FPEError(f"y_{split} must be a 1-D int64 ndarray, got {_describe(y)}")
            if len(y) != len(X):
                raise FPEError(f"y_{split} has {len(y)} labels but X_{split} has {len(X)} rows")
            bad = np.flatnonzero((y < 0) | (y >= self.n_classes))
            if bad.size:
                i = int(bad[0])
                raise FPEError(
                    f"y_{split}[{i}] = {int(y[i])} is outside 0..{self.n_classes - 1} "
                    f"(n_classes={self.n_classes})"
                )
        present = np.unique(self.y_train)
        if present.size < 2:
            where = f"{self.source}: " if self.source else ""
            raise FPEError(f"{where}y_train holds {present.size} class (label {int(present[0])}): a classifier "
                           "needs at least 2 classes in the training split")
        if self.X_train.shape[1] != self.X_test.shape[1]:
            raise FPEError(
                f"X_train has {self.X_train.shape[1]} features but X_test has {self.X_test.shape[1]}"
            )
        if self.X_train.dtype != self.X_test.dtype:
            raise FPEError(f"X_train is {self.X_train.dtype} but X_test is {self.X_test.dtype}")
        names = tuple(self.class_names)
        if len(names) != self.n_classes or not all(isinstance(s, str) for s in names):
            raise FPEError(
                f"class_names must be {self.n_classes} strings, got {len(names)} items"
            )
        object.__setattr__(self, "class_names", names)

    @property
    def n_features(self) -> int:
        """Input dimension ``d`` (784 for FashionMNIST, 512 for CLIP ViT-B/16)."""
        return self.X_train.shape[1]

    @property
    def n_train(self) -> int:
        return self.X_train.shape[0]

    @property
    def n_test(self) -> int:
        return self.X_test.shape[0]

    def __repr__(self) -> str:
        return (
            f"ClassificationData(n_train={self.n_train}, n_test={self.n_test}, "
            f"n_features={self.n_features}, n_classes={self.n_classes}, "
            f"dtype={self.X_train.dtype}, source={self.source!r})"
        )


def check_finite(X: np.ndarray, name: str, where: str = "") -> None:
    """Raise ``FPEError`` naming ``name`` and its first row holding NaN or +-inf."""
    finite_rows = np.isfinite(X).all(axis=1)  # (n,)
    if not finite_rows.all():
        r = int(np.argmin(finite_rows))
        kind = "NaN" if np.isnan(X[r]).any() else "inf"
        col = int(np.argmin(np.isfinite(X[r])))
        raise FPEError(f"{name}{where} has {kind} in row {r} (column {col}); inputs must be finite")


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        return f"shape {a.shape} dtype {a.dtype}"
    return type(a).__name__
