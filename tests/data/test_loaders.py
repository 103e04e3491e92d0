"""Loaders: FashionMNIST IDX files and embedding files (.npz or a directory of .npy).

Every test writes its own tiny files under tmp_path; only ``test_real_debian_fashion_mnist``
reads /usr/share/datasets/fashion-mnist, and it skips when that is absent.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fpe_ref.data.classification import ClassificationData
from fpe_ref.data.embeddings import load_embeddings
from fpe_ref.data.fashion_mnist import (
    DEFAULT_DATA_DIR,
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
    read_idx,
)
from fpe_ref.errors import FPEError

# ----------------------------------------------------------------------------- IDX helpers

N_TRAIN, N_TEST = 5, 3


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    """Big-endian IDX encoding of ``arr`` (uint8 by default)."""
    dt = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, arr.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in arr.shape
    )
    return header + np.ascontiguousarray(arr, dtype=dt).tobytes()


def write(path: Path, data: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def tiny_images(n: int, seed: int) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    img[0, 0, 0], img[0, 0, 1] = 0, 255  # both ends of the range
    return img


def make_fmnist(d: Path, gz: bool = False, **override) -> dict:
    """Write the four tiny FashionMNIST files into ``d``; ``override`` replaces raw bytes."""
    arrays = {
        "train-images-idx3-ubyte": tiny_images(N_TRAIN, 0),
        "train-labels-idx1-ubyte": np.array([9, 0, 3, 5, 1], dtype=np.uint8),
        "t10k-images-idx3-ubyte": tiny_images(N_TEST, 1),
        "t10k-labels-idx1-ubyte": np.array([2, 7, 8], dtype=np.uint8),
    }
    for stem, arr in arrays.items():
        write(d / stem, override.get(stem, idx_bytes(arr)), gz)
    return arrays


# ----------------------------------------------------------------------------- FashionMNIST


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fashion_mnist_loads_tiny_files(tmp_path, gz, dtype):
    arrays = make_fmnist(tmp_path, gz=gz)
    data = load_fashion_mnist(tmp_path, dtype=dtype)
    assert isinstance(data, ClassificationData)
    assert data.X_train.shape == (N_TRAIN, 784) and data.X_test.shape == (N_TEST, 784)
    assert data.X_train.dtype == dtype and data.X_test.dtype == dtype
    assert data.y_train.dtype == np.int64 and data.y_test.dtype == np.int64
    np.testing.assert_array_equal(data.y_train, [9, 0, 3, 5, 1])
    np.testing.assert_array_equal(data.y_test, [2, 7, 8])
    # X[i, 28 r + c] = pixel[r, c] / 255, row-major, rounded once in the target dtype.
    expected = arrays["train-images-idx3-ubyte"].reshape(N_TRAIN, 784).astype(dtype) / dtype(255)
    np.testing.assert_array_equal(data.X_train, expected, err_msg="X_train")
    assert data.X_train[0, 0] == 0.0 and data.X_train[0, 1] == 1.0
    assert data.X_train.min() >= 0.0 and data.X_train.max() <= 1.0
    assert data.X_train[0, 28 * 2 + 3] == dtype(arrays["train-images-idx3-ubyte"][0, 2, 3]) / dtype(255)
    assert data.n_classes == 10 and data.class_names == FASHION_MNIST_CLASSES
    assert data.class_names[9] == "Ankle boot"
    assert data.source == str(tmp_path)


def test_fashion_mnist_prefers_uncompressed_and_mixes_forms(tmp_path):
    make_fmnist(tmp_path, gz=True)
    # An uncompressed train-labels file next to the .gz one wins.
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 1, 1, 1, 1], np.uint8)))
    np.testing.assert_array_equal(load_fashion_mnist(tmp_path).y_train, [1, 1, 1, 1, 1])


def test_read_idx_is_generic(tmp_path):
    a = np.arange(24, dtype=np.int16).reshape(2, 3, 4) - 7
    p = write(tmp_path / "a-idx3-short", idx_bytes(a, 0x0B), gz=True)
    out = read_idx(p)
    assert out.dtype == np.int16 and out.dtype.isnative
    np.testing.assert_array_equal(out, a)
    f = np.linspace(-1, 1, 6, dtype=np.float32)
    np.testing.assert_array_equal(read_idx(write(tmp_path / "f", idx_bytes(f, 0x0D), gz=False)), f)


@pytest.mark.parametrize(
    "raw", [b"\x01\x00\x08\x01abcd", b"\x00\x00\x07\x01abcd", b"\x00\x00\x08\x00"],
    ids=["nonzero-lead", "unknown-type", "zero-dims"],
)
def test_read_idx_rejects_non_idx(tmp_path, raw):
    p = write(tmp_path / "x", raw, gz=False)
    with pytest.raises(FPEError, match=r"is not an IDX file: magic number"):
        read_idx(p)


def _imgs(n=N_TRAIN, shape=(28, 28)):
    return idx_bytes(np.zeros((n,) + shape, dtype=np.uint8))


def _labs(values):
    return idx_bytes(np.array(values, dtype=np.uint8))


_GOOD_TRAIN_LABELS = _labs([0, 1, 2, 3, 4])

CORRUPT_IDX = {
    # case id: (file stem, raw bytes, regex the message must match)
    "images-magic": (
        "train-images-idx3-ubyte",
        _GOOD_TRAIN_LABELS,  # a labels file where the images should be
        r"train-images-idx3-ubyte.*magic number 2049.*expected 2051",
    ),
    "labels-magic": ("train-labels-idx1-ubyte", _imgs(), r"magic number 2051.*expected 2049"),
    "little-endian": (
        "train-labels-idx1-ubyte",
        bytes([1, 8, 0, 0]) + (5).to_bytes(4, "little") + bytes(5),
        r"magic number.*little-endian",
    ),
    "not-idx": ("t10k-labels-idx1-ubyte", b"hello world, not idx", r"magic number"),
    "truncated-images": (
        "train-images-idx3-ubyte",
        _imgs()[:-100],
        r"train-images-idx3-ubyte.*truncated.*implies 3936",
    ),
    "truncated-header": ("t10k-images-idx3-ubyte", _imgs(N_TEST)[:10], r"truncated"),
    "truncated-labels": ("train-labels-idx1-ubyte", _GOOD_TRAIN_LABELS[:-1], r"truncated"),
    "extra-bytes": (
        "train-labels-idx1-ubyte",
        _GOOD_TRAIN_LABELS + b"\0",
        r"1 extra byte\(s\) beyond the 13",
    ),
    "count-mismatch": (
        "train-labels-idx1-ubyte",
        _labs([0, 1, 2, 3]),
        r"has 5 images but .*train-labels-idx1-ubyte(\.gz)? has 4 labels",
    ),
    "label-out-of-range": (
        "t10k-labels-idx1-ubyte",
        _labs([2, 10, 8]),
        r"t10k-labels-idx1-ubyte.*label 10 at index 1 is outside 0\.\.9",
    ),
    "not-28x28": ("train-images-idx3-ubyte", _imgs(shape=(32, 32)), r"32x32 images.*28x28"),
    "no-images": ("t10k-images-idx3-ubyte", _imgs(0), r"holds no images"),
}


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("stem, raw, match", CORRUPT_IDX.values(), ids=CORRUPT_IDX.keys())
def test_fashion_mnist_corrupt_files(tmp_path, gz, stem, raw, match):
    make_fmnist(tmp_path, gz=gz, **{stem: raw})
    with pytest.raises(FPEError, match=match):
        load_fashion_mnist(tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda z: z[:-12],  # stream cut short
        lambda z: z[:-8] + bytes(8),  # CRC and length zeroed
        lambda z: z[:20] + bytes(len(z) - 20),  # deflate data garbage
    ],
    ids=["truncated", "bad-crc", "garbage"],
)
def test_fashion_mnist_bad_gzip(tmp_path, damage):
    make_fmnist(tmp_path, gz=True)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(damage(p.read_bytes()))
    with pytest.raises(FPEError, match=r"train-images-idx3-ubyte\.gz is a corrupt or truncated gzip"):
        load_fashion_mnist(tmp_path)


@pytest.mark.parametrize("stem", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_fashion_mnist_missing_file(tmp_path, stem):
    make_fmnist(tmp_path, gz=True)
    (tmp_path / (stem + ".gz")).unlink()
    with pytest.raises(FPEError, match=rf"{stem}\[\.gz\] not found.*apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_missing_directory(tmp_path):
    with pytest.raises(FPEError, match=r"nope does not exist.*apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nope")


def test_fashion_mnist_data_dir_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FPEError, match=r"not a directory"):
        load_fashion_mnist(tmp_path / "f")


@pytest.mark.parametrize("dtype", [np.int64, "float16", "complex128", "banana"])
def test_bad_dtype(tmp_path, dtype):
    with pytest.raises(FPEError, match=r"dtype must be float32 or float64"):
        load_fashion_mnist(tmp_path, dtype=dtype)
    with pytest.raises(FPEError, match=r"dtype must be float32 or float64"):
        load_embeddings(tmp_path, dtype=dtype)


@pytest.mark.skipif(not Path(DEFAULT_DATA_DIR).is_dir(), reason=f"{DEFAULT_DATA_DIR} absent")
def test_real_debian_fashion_mnist():
    data = load_fashion_mnist(dtype=np.float32)  # the default directory
    assert (data.n_train, data.n_test, data.n_features) == (60000, 10000, 784)
    # FashionMNIST is exactly balanced: 6000 / 1000 per class (paper, A.3).
    np.testing.assert_array_equal(np.bincount(data.y_train, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(data.y_test, minlength=10), [1000] * 10)
    np.testing.assert_array_equal(data.y_train[:8], [9, 0, 0, 3, 0, 2, 7, 2])
    np.testing.assert_array_equal(data.y_test[:5], [9, 2, 1, 1, 6])
    assert data.X_train.min() == 0.0 and data.X_train.max() == 1.0


# ----------------------------------------------------------------------------- embeddings


def good_arrays(d: int = 4, dtype=np.float32) -> dict:
    rng = np.random.default_rng(0)
    return {
        "X_train": rng.standard_normal((6, d)).astype(dtype),
        "y_train": np.array([0, 1, 2, 0, 1, 2]),
        "X_test": rng.standard_normal((3, d)).astype(dtype),
        "y_test": np.array([2, 1, 0], dtype=np.int32),
    }


def save(tmp_path: Path, arrays: dict, form: str) -> Path:
    if form == "npz":
        p = tmp_path / "emb.npz"
        np.savez(p, **arrays)
        return p
    d = tmp_path / "emb"
    d.mkdir()
    for k, v in arrays.items():
        np.save(d / f"{k}.npy", v, allow_pickle=True)
    return d


FORMS = ["npz", "dir"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_embeddings_load(tmp_path, form, dtype):
    arrays = good_arrays()
    p = save(tmp_path, arrays, form)
    data = load_embeddings(p, dtype=dtype)
    assert (data.n_train, data.n_test, data.n_features, data.n_classes) == (6, 3, 4, 3)
    assert data.X_train.dtype == dtype and data.X_test.dtype == dtype
    assert data.y_train.dtype == np.int64 and data.y_test.dtype == np.int64
    np.testing.assert_array_equal(data.X_train, arrays["X_train"].astype(dtype), err_msg="X_train")
    np.testing.assert_array_equal(data.X_test, arrays["X_test"].astype(dtype), err_msg="X_test")
    np.testing.assert_array_equal(data.y_test, [2, 1, 0])
    assert data.class_names == ("0", "1", "2")
    assert data.source == str(p)


@pytest.mark.parametrize("form", FORMS)
def test_embeddings_optional_class_names_and_expected_n_classes(tmp_path, form):
    arrays = good_arrays(dtype=np.float64)
    arrays["class_names"] = np.array(["apple", "bee", "cat", "dog", "eel"])
    arrays["extra_ignored"] = np.array([object()], dtype=object)  # never read
    data = load_embeddings(save(tmp_path, arrays, form), n_classes=5)
    assert data.n_classes == 5 and data.class_names == ("apple", "bee", "cat", "dog", "eel")


def test_embeddings_float_labels_holding_integers(tmp_path):
    arrays = good_arrays()
    arrays["y_train"] = arrays["y_train"].astype(np.float32)
    data = load_embeddings(save(tmp_path, arrays, "npz"))
    assert data.y_train.dtype == np.int64
    np.testing.assert_array_equal(data.y_train, [0, 1, 2, 0, 1, 2])


def _with(**changes):
    def edit(a):
        a = dict(a)
        for k, v in changes.items():
            if v is None:
                del a[k]
            else:
                a[k] = v(a) if callable(v) else v
        return a

    return edit


def _set(key, index, value):
    def f(a):
        x = a[key].astype(np.float64 if key.startswith("X") or isinstance(value, float) else a[key].dtype)
        x[index] = value
        return x

    return f


BAD_EMBEDDINGS = {
    # case id: (edit of the good arrays, n_classes argument, regex the message must match)
    "missing-key": (_with(y_test=None), None, r"y_test"),
    "feature-dims-differ": (
        _with(X_test=lambda a: a["X_test"][:, :3]),
        None,
        r"X_train .* has 4 features but X_test has 3",
    ),
    "len-y-ne-len-X": (
        _with(y_train=lambda a: a["y_train"][:5]),
        None,
        r"y_train .*5 labels but X_train has 6 rows",
    ),
    "X-1d": (_with(X_train=lambda a: a["X_train"].ravel()), None, r"X_train .*must be 2-D"),
    "X-int": (_with(X_train=lambda a: a["X_train"].astype(np.int64)), None, r"X_train .*floating point"),
    "X-empty": (_with(X_test=np.zeros((0, 4))), None, r"X_test .*empty"),
    "y-2d": (_with(y_train=lambda a: a["y_train"][:, None]), None, r"y_train .*1-D"),
    "y-bool": (_with(y_test=np.array([True, False, True])), None, r"y_test .*integer labels"),
    "nan": (_with(X_train=_set("X_train", (4, 2), np.nan)), None, r"X_train .*NaN in row 4 \(column 2\)"),
    "inf": (_with(X_test=_set("X_test", (1, 0), -np.inf)), None, r"X_test .*inf in row 1 \(column 0\)"),
    "label-negative": (
        _with(y_train=_set("y_train", 3, -1)),
        None,
        r"y_train\[3\] .* is -1; labels must be >= 0",
    ),
    "label-negative-float": (
        _with(y_test=_set("y_test", 0, -2.0)),
        None,
        r"y_test\[0\] .* is -2\.0; labels must be >= 0",
    ),
    "label-non-integer": (
        _with(y_train=_set("y_train", 2, 1.5)),
        None,
        r"y_train\[2\] .* is 1\.5, not an integer class label",
    ),
    "label-nan": (_with(y_test=_set("y_test", 2, np.nan)), None, r"y_test\[2\] .* is nan, not an integer"),
    "label-out-of-range": (
        _with(y_test=_set("y_test", 1, 3)),
        3,
        r"y_test\[1\] .* is 3, outside 0\.\.2 \(n_classes=3\)",
    ),
    "label-huge": (_with(y_train=_set("y_train", 0, 10**9)), None, r"largest label 1000000000 .*exceeds"),
    "one-based": (
        _with(y_train=lambda a: a["y_train"] + 1, y_test=lambda a: a["y_test"] + 1),
        None,
        r"no label .* is 0 \(labels look 1-based\)",
    ),
    "object-array": (
        _with(X_train=lambda a: a["X_train"].astype(object)),
        None,
        r"X_train in .* is an object array or pickle.*refuses",
    ),
    "class-names-wrong-length": (
        _with(class_names=np.array(["a", "b"])),
        None,
        r"class_names .*2 names but n_classes is 3",
    ),
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("edit, n_classes, match", BAD_EMBEDDINGS.values(), ids=BAD_EMBEDDINGS.keys())
def test_embeddings_bad_content(tmp_path, form, edit, n_classes, match):
    p = save(tmp_path, edit(good_arrays()), form)
    with pytest.raises(FPEError, match=match):
        load_embeddings(p, n_classes=n_classes)


def test_embeddings_float32_overflow(tmp_path):
    arrays = good_arrays(dtype=np.float64)
    arrays["X_train"][5, 1] = 1e300
    with pytest.raises(FPEError, match=r"X_train .* row 5 overflows float32; load with dtype=float64"):
        load_embeddings(save(tmp_path, arrays, "npz"), dtype=np.float32)


def test_embeddings_missing_key_lists_what_is_there(tmp_path):
    p = save(tmp_path, _with(X_test=None, y_test=None)(good_arrays()), "npz")
    with pytest.raises(FPEError, match=r"lacks array\(s\) X_test, y_test; it holds X_train, y_train"):
        load_embeddings(p)


def test_embeddings_missing_npy_in_directory(tmp_path):
    p = save(tmp_path, _with(X_train=None)(good_arrays()), "dir")
    with pytest.raises(FPEError, match=r"lacks X_train\.npy"):
        load_embeddings(p)


def test_embeddings_missing_path(tmp_path):
    with pytest.raises(FPEError, match=r"nothing\.npz does not exist"):
        load_embeddings(tmp_path / "nothing.npz")


def _npz_bytes(tmp_path) -> bytes:
    p = save(tmp_path, good_arrays(), "npz")
    raw = p.read_bytes()
    p.unlink()
    return raw


BAD_FILES = {
    # case id: (bytes of emb.npz given the bytes of a good one, regex)
    "not-a-zip": (lambda good: b"this is a text file\n", r"emb\.npz is not an \.npz \(zip\) archive"),
    "empty-file": (lambda good: b"", r"not an \.npz \(zip\) archive"),
    "pickle": (lambda good: b"\x80\x04\x95" + bytes(20), r"not an \.npz \(zip\) archive"),
    "single-npy": (lambda good: b"\x93NUMPY" + good[6:], r"single \.npy array"),
    "truncated-zip": (lambda good: good[: len(good) // 2], r"emb\.npz is a corrupt \.npz"),
    "corrupt-member": (
        # flip bytes in the middle of the first member's data (CRC check fails on read)
        lambda good: good[:200] + bytes(b ^ 0xFF for b in good[200:240]) + good[240:],
        r"X_train in .*emb\.npz is corrupt or unreadable",
    ),
}


@pytest.mark.parametrize("damage, match", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_embeddings_bad_npz_file(tmp_path, damage, match):
    p = tmp_path / "emb.npz"
    p.write_bytes(damage(_npz_bytes(tmp_path)))
    with pytest.raises(FPEError, match=match):
        load_embeddings(p)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"not numpy at all", r"y_test\.npy is not a \.npy file"),
        (b"\x93NUMPY\x01\x00garbage", r"y_test in .*y_test\.npy is corrupt"),
    ],
    ids=["not-npy", "bad-header"],
)
def test_embeddings_bad_npy_file(tmp_path, content, match):
    d = save(tmp_path, good_arrays(), "dir")
    (d / "y_test.npy").write_bytes(content)
    with pytest.raises(FPEError, match=match):
        load_embeddings(d)


def test_embeddings_pickled_npy_in_directory(tmp_path):
    d = save(tmp_path, good_arrays(), "dir")
    np.save(d / "y_train.npy", np.array([{"a": 1}] * 6, dtype=object), allow_pickle=True)
    with pytest.raises(FPEError, match=r"y_train in .* is an object array or pickle"):
        load_embeddings(d)


@pytest.mark.parametrize("n_classes", [0, -3, 2.5, "ten", True])
def test_embeddings_bad_n_classes_argument(tmp_path, n_classes):
    with pytest.raises(FPEError, match=r"n_classes must be a positive integer"):
        load_embeddings(save(tmp_path, good_arrays(), "npz"), n_classes=n_classes)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("y_train", np.array([0, 1, 2, 0, 1, 2], dtype=np.int32), r"y_train must be a 1-D int64"),
        ("X_test", np.ones((3, 5)), r"X_train has 4 features but X_test has 5"),
        ("X_train", np.full((6, 4), np.nan), r"X_train has NaN in row 0"),
        ("class_names", ("a",), r"class_names must be 3 strings"),
        ("n_classes", 2, r"y_train\[2\] = 2 is outside 0\.\.1"),
    ],
)
def test_classification_data_validates_itself(field, value, match):
    a = good_arrays(dtype=np.float64)
    kw = dict(
        X_train=a["X_train"],
        y_train=a["y_train"].astype(np.int64),
        X_test=a["X_test"],
        y_test=a["y_test"].astype(np.int64),
        n_classes=3,
        class_names=("a", "b", "c"),
    )
    ClassificationData(**kw)  # the unedited version is fine
    kw[field] = value
    with pytest.raises(FPEError, match=match):
        ClassificationData(**kw)
