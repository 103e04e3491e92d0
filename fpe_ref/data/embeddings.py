"""Precomputed embeddings (CLIP ViT-B/16 of CIFAR-100 / ImageNet) as classification data.

Paper: Sec. 2.2.2 ("we extract embeddings using a pretrained CLIP ViT-B/16 model ... treating
these embeddings as fixed inputs to the classifier") and A.3. fpe-ref never computes or
downloads embeddings; they are made elsewhere (recipe: ``docs/embeddings.md``) and come in as
either

* one ``.npz`` archive holding the arrays ``X_train``, ``y_train``, ``X_test``, ``y_test``, or
* a directory holding ``X_train.npy``, ``y_train.npy``, ``X_test.npy``, ``y_test.npy``.

Optionally a fifth array ``class_names`` (1-D string array, ``class_names[k]`` names label k)
may sit beside them; without it the names are ``"0" .. "K-1"``. Any other arrays in the
archive or directory are ignored (never even read).

Checks (each failure is an ``FPEError`` naming the array and file)
----------------------------------------------------------------
* files are read by :mod:`fpe_ref.data.npz`: object arrays and pickles are refused, and so is
  an array whose header declares more data than its file holds (a corrupt or truncated file,
  refused before anything is allocated) or more than the memory available;
* ``X_*`` is 2-D floating point (float16/32/64), at least one row and one column, with the same
  number of columns in train and test; NaN or +-inf is an error naming the first bad row;
* ``y_*`` is 1-D, one label per row of ``X_*``, integer typed -- or floating point holding
  exact integers (e.g. labels that went through a float tensor); bool is refused;
* labels lie in ``0 .. K-1``. ``K`` is the ``n_classes`` argument if given, else inferred as
  ``max(y_train, y_test) + 1``. When ``K`` is inferred, label 0 must occur (labels that start
  at 1 are almost always a 1-based export, which would silently add a dead class) and ``K``
  may not exceed the number of examples (a label like 10**9 is a corrupt file, not a class);
* ``K >= 2``, and ``y_train`` holds at least 2 distinct classes (a classifier cannot be
  trained on one).

Whether the embeddings are L2-normalised is the producer's choice; no rescaling happens here.
``X`` is cast to ``dtype`` (float64 by default); float32 on disk is fine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fpe_ref.errors import FPEError, check_int
from fpe_ref.data.classification import ClassificationData, check_finite, check_float_dtype
from fpe_ref.data.npz import NpzArchive, read_npy

KEYS = ("X_train", "y_train", "X_test", "y_test")
NAMES_KEY = "class_names"


def _check_n_classes(n_classes) -> int | None:
    if n_classes is None:
        return None
    return check_int("n_classes", n_classes, 1, what="a positive integer", integral_float=True)


def _read_npz(path: Path) -> dict:
    """The arrays ``KEYS`` (and ``class_names`` if present) from an ``.npz`` archive."""
    with NpzArchive(path) as z:
        missing = [k for k in KEYS if k not in z]
        if missing:
            raise FPEError(
                f"{path} lacks array(s) {', '.join(missing)}; it holds "
                f"{', '.join(z.names) or 'nothing'}, needs {', '.join(KEYS)}"
            )
        return {k: z.read(k) for k in KEYS + ((NAMES_KEY,) if NAMES_KEY in z else ())}


def _read_dir(path: Path) -> dict:
    """The arrays ``KEYS`` (and ``class_names`` if present) from ``<path>/<key>.npy``."""
    missing = [k + ".npy" for k in KEYS if not (path / (k + ".npy")).is_file()]
    if missing:
        raise FPEError(
            f"embedding directory {path} lacks {', '.join(missing)}; needs "
            f"{', '.join(k + '.npy' for k in KEYS)}"
        )
    keys = KEYS + ((NAMES_KEY,) if (path / (NAMES_KEY + ".npy")).is_file() else ())
    return {k: read_npy(path / (k + ".npy"), k) for k in keys}


def _check_X(X: np.ndarray, name: str, src: str, dtype: np.dtype) -> np.ndarray:
    if X.dtype.kind != "f":
        raise FPEError(f"{name} in {src} must be floating point, got dtype {X.dtype}")
    if X.ndim != 2:
        raise FPEError(f"{name} in {src} must be 2-D (examples, features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise FPEError(f"{name} in {src} is empty, shape {X.shape}")
    check_finite(X, name, f" in {src}")
    with np.errstate(over="ignore"):
        Xc = X.astype(dtype, copy=False)
    if not np.isfinite(Xc).all():  # only possible when narrowing float64 -> float32
        r = int(np.argmin(np.isfinite(Xc).all(axis=1)))
        raise FPEError(
            f"{name} in {src} row {r} overflows {dtype.name}; load with dtype=float64"
        )
    return Xc


def _check_y(y: np.ndarray, name: str, src: str, n_rows: int) -> np.ndarray:
    if y.ndim != 1:
        raise FPEError(f"{name} in {src} must be 1-D (one label per example), got shape {y.shape}")
    if len(y) != n_rows:
        X_name = "X" + name[1:]
        raise FPEError(f"{name} in {src} has {len(y)} labels but {X_name} has {n_rows} rows")
    if y.dtype.kind in "iu":
        neg = np.flatnonzero(y < 0)
        if neg.size:
            i = int(neg[0])
            raise FPEError(f"{name}[{i}] in {src} is {int(y[i])}; labels must be >= 0")
        if y.size and y.max() > np.iinfo(np.int64).max:  # uint64 beyond int64
            raise FPEError(f"{name} in {src} holds a label above the int64 range")
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        ok = np.isfinite(y)
        ok[ok] = y[ok] == np.floor(y[ok])
        if not ok.all():
            i = int(np.argmin(ok))
            raise FPEError(f"{name}[{i}] in {src} is {float(y[i])!r}, not an integer class label")
        neg = np.flatnonzero(y < 0)
        if neg.size:
            i = int(neg[0])
            raise FPEError(f"{name}[{i}] in {src} is {float(y[i])!r}; labels must be >= 0")
        if y.size and y.max() >= 2.0**53:  # beyond exact float integers; no data set is this big
            raise FPEError(f"{name} in {src} holds a label >= 2**53, not a class index")
        return y.astype(np.int64)
    raise FPEError(f"{name} in {src} must hold integer labels, got dtype {y.dtype}")


def _check_names(names: np.ndarray, src: str, n_classes: int) -> tuple:
    if names.dtype.kind not in "US" or names.ndim != 1:
        raise FPEError(
            f"{NAMES_KEY} in {src} must be a 1-D string array, "
            f"got shape {names.shape} dtype {names.dtype}"
        )
    if len(names) != n_classes:
        raise FPEError(f"{NAMES_KEY} in {src} has {len(names)} names but n_classes is {n_classes}")
    if names.dtype.kind == "S":
        try:
            return tuple(s.decode("utf-8") for s in names.tolist())
        except UnicodeDecodeError:
            raise FPEError(f"{NAMES_KEY} in {src} is not valid UTF-8") from None
    return tuple(names.tolist())


def load_embeddings(path, n_classes=None, dtype=np.float64) -> ClassificationData:
    """Load precomputed embeddings (e.g. CLIP ViT-B/16 of CIFAR-100) and their labels.

    Paper: Sec. 2.2.2, A.3. Format and checks: see the module docstring and
    ``docs/embeddings.md``.

    Parameters
    ----------
    path : str or os.PathLike
        An ``.npz`` archive with ``X_train, y_train, X_test, y_test`` (optionally
        ``class_names``), or a directory with those as ``.npy`` files.
    n_classes : int, optional
        Expected number of classes ``K`` (100 for CIFAR-100, 1000 for ImageNet-1k). Labels must
        lie in ``0..K-1``; classes with no example are allowed. Default: inferred as
        ``max(label) + 1`` over train and test.
    dtype : float32 or float64, default float64
        Dtype of the returned ``X_train`` / ``X_test``.

    Returns
    -------
    ClassificationData
        ``X_train (n_train, d)``, ``y_train (n_train,) int64``, ``X_test (n_test, d)``,
        ``y_test (n_test,) int64``, ``n_classes``, ``class_names``, ``source=str(path)``.

    Raises
    ------
    FPEError
        Missing path, file or key; not an archive / corrupt archive; object array or pickle;
        wrong dimensions or dtypes; feature dimensions that differ between train and test;
        ``len(y) != len(X)``; NaN or inf (naming the first bad row); labels negative,
        non-integer, or outside ``0..K-1``; fewer than 2 classes in ``y_train``; an array
        whose header declares more data than the file holds.
    """
    dtype = check_float_dtype(dtype)
    n_classes = _check_n_classes(n_classes)
    try:
        path = Path(os.fspath(path))
    except TypeError:
        raise FPEError(f"embedding path must be a path, got {path!r}") from None
    if not path.exists():
        raise FPEError(f"embedding file or directory {path} does not exist")
    arrays = _read_dir(path) if path.is_dir() else _read_npz(path)
    src = str(path)

    X_train = _check_X(arrays["X_train"], "X_train", src, dtype)  # (n_train, d)
    X_test = _check_X(arrays["X_test"], "X_test", src, dtype)  # (n_test, d)
    if X_train.shape[1] != X_test.shape[1]:
        raise FPEError(
            f"X_train in {src} has {X_train.shape[1]} features but X_test has {X_test.shape[1]}"
        )
    y_train = _check_y(arrays["y_train"], "y_train", src, len(X_train))  # (n_train,)
    y_test = _check_y(arrays["y_test"], "y_test", src, len(X_test))  # (n_test,)

    top = int(max(y_train.max(), y_test.max()))
    if n_classes is None:
        n_classes = top + 1
        if n_classes > len(y_train) + len(y_test):
            raise FPEError(
                f"largest label {top} in {src} exceeds the number of examples; labels must be "
                f"class indices 0..K-1 (pass n_classes to override)"
            )
        if not ((y_train == 0).any() or (y_test == 0).any()):
            raise FPEError(
                f"no label in {src} is 0 (labels look 1-based); shift them to 0..K-1, or pass "
                f"n_classes to accept an empty class 0"
            )
    else:
        for name, y in (("y_train", y_train), ("y_test", y_test)):
            bad = np.flatnonzero(y >= n_classes)
            if bad.size:
                i = int(bad[0])
                raise FPEError(
                    f"{name}[{i}] in {src} is {int(y[i])}, outside 0..{n_classes - 1} "
                    f"(n_classes={n_classes})"
                )

    if n_classes < 2:
        raise FPEError(f"{src} has n_classes={n_classes}: a classifier needs at least 2 classes")
    present = np.unique(y_train)
    if present.size < 2:
        raise FPEError(f"y_train in {src} holds {present.size} class (label {int(present[0])}): a classifier "
                       "needs at least 2 classes in the training split")

    if NAMES_KEY in arrays:
        class_names = _check_names(arrays[NAMES_KEY], src, n_classes)
    else:
        class_names = tuple(str(k) for k in range(n_classes))
    return ClassificationData(
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        n_classes=n_classes,
        class_names=class_names,
        source=src,
    )
