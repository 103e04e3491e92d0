"""FashionMNIST (fpe_ref.data.fashion_mnist): IDX files, raw or gzip, and their one-line errors.

Every test writes its own tiny files under tmp_path; only ``test_real_debian_fashion_mnist``
reads /usr/share/datasets/fashion-mnist, and it skips when that is absent.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fpe_ref.data.classification import ClassificationData
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
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 1, 2, 1, 1], np.uint8)))
    np.testing.assert_array_equal(load_fashion_mnist(tmp_path).y_train, [1, 1, 2, 1, 1])


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


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_fashion_mnist_with_one_training_class_is_refused(tmp_path, gz):
    make_fmnist(tmp_path, gz=gz, **{"train-labels-idx1-ubyte": _labs([4, 4, 4, 4, 4])})
    with pytest.raises(FPEError, match=r"^.*train-labels-idx1-ubyte(\.gz)? holds 1 class \(label 4\): a classifier "
                                       r"needs at least 2 classes in the training split$"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_test_split_may_hold_one_class(tmp_path):
    make_fmnist(tmp_path, **{"t10k-labels-idx1-ubyte": _labs([3, 3, 3])})
    assert load_fashion_mnist(tmp_path).y_test.tolist() == [3, 3, 3]


def _header_only(n_items: int) -> bytes:
    """An images header declaring ``n_items`` 28x28 images, followed by the data of five."""
    return bytes([0, 0, 8, 3]) + b"".join(s.to_bytes(4, "big") for s in (n_items, 28, 28)) + bytes(5 * 784)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_refuses_a_header_declaring_more_items_than_the_file_holds(tmp_path, gz):
    """(2**32 - 1) x 28 x 28 declared over a few kB: refused from the header, nothing allocated or decompressed."""
    p = write(tmp_path / "train-images-idx3-ubyte", _header_only(2**32 - 1), gz)
    implied = 16 + (2**32 - 1) * 28 * 28
    expect = (rf"truncated: 3936 bytes, but its header \(shape \(4294967295, 28, 28\), uint8\) implies {implied}$"
              if not gz else
              rf"truncated: its header \(shape \(4294967295, 28, 28\), uint8\) implies {implied} bytes, more than "
              r"its \d+ gzip-compressed bytes can hold$")
    with pytest.raises(FPEError, match=expect):
        read_idx(p, expected_magic=2051)


def test_read_idx_refuses_data_larger_than_memory(tmp_path, monkeypatch):
    from fpe_ref import errors

    p = write(tmp_path / "train-images-idx3-ubyte", _imgs(), gz=True)
    monkeypatch.setattr(errors, "available_memory", lambda: 1000)
    with pytest.raises(FPEError, match=r"train-images-idx3-ubyte\.gz \(shape \(5, 28, 28\), uint8\) needs 3\.8 KiB "
                                       r"\(3936 bytes\) but only 1000 B of memory is available$"):
        read_idx(p)
