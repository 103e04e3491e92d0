"""Embedding files (fpe_ref.data.embeddings): .npz or a directory of .npy, and their one-line errors.

Every test writes its own tiny files under tmp_path, from the conftest ``embedding_arrays``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fpe_ref.data.embeddings import load_embeddings
from fpe_ref.errors import FPEError


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
def test_embeddings_load(embedding_arrays, tmp_path, form, dtype):
    arrays = embedding_arrays()
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
def test_embeddings_optional_class_names_and_expected_n_classes(embedding_arrays, tmp_path, form):
    arrays = embedding_arrays(dtype=np.float64)
    arrays["class_names"] = np.array(["apple", "bee", "cat", "dog", "eel"])
    arrays["extra_ignored"] = np.array([object()], dtype=object)  # never read
    data = load_embeddings(save(tmp_path, arrays, form), n_classes=5)
    assert data.n_classes == 5 and data.class_names == ("apple", "bee", "cat", "dog", "eel")


def test_embeddings_float_labels_holding_integers(embedding_arrays, tmp_path):
    arrays = embedding_arrays()
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
def test_embeddings_bad_content(embedding_arrays, tmp_path, form, edit, n_classes, match):
    p = save(tmp_path, edit(embedding_arrays()), form)
    with pytest.raises(FPEError, match=match):
        load_embeddings(p, n_classes=n_classes)


def test_embeddings_float32_overflow(embedding_arrays, tmp_path):
    arrays = embedding_arrays(dtype=np.float64)
    arrays["X_train"][5, 1] = 1e300
    with pytest.raises(FPEError, match=r"X_train .* row 5 overflows float32; load with dtype=float64"):
        load_embeddings(save(tmp_path, arrays, "npz"), dtype=np.float32)


def test_embeddings_missing_key_lists_what_is_there(embedding_arrays, tmp_path):
    p = save(tmp_path, _with(X_test=None, y_test=None)(embedding_arrays()), "npz")
    with pytest.raises(FPEError, match=r"lacks array\(s\) X_test, y_test; it holds X_train, y_train"):
        load_embeddings(p)


def test_embeddings_missing_npy_in_directory(embedding_arrays, tmp_path):
    p = save(tmp_path, _with(X_train=None)(embedding_arrays()), "dir")
    with pytest.raises(FPEError, match=r"lacks X_train\.npy"):
        load_embeddings(p)


def test_embeddings_missing_path(tmp_path):
    with pytest.raises(FPEError, match=r"nothing\.npz does not exist"):
        load_embeddings(tmp_path / "nothing.npz")


def _npz_bytes(tmp_path, arrays: dict) -> bytes:
    p = save(tmp_path, arrays, "npz")
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
def test_embeddings_bad_npz_file(embedding_arrays, tmp_path, damage, match):
    p = tmp_path / "emb.npz"
    p.write_bytes(damage(_npz_bytes(tmp_path, embedding_arrays())))
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
def test_embeddings_bad_npy_file(embedding_arrays, tmp_path, content, match):
    d = save(tmp_path, embedding_arrays(), "dir")
    (d / "y_test.npy").write_bytes(content)
    with pytest.raises(FPEError, match=match):
        load_embeddings(d)


def test_embeddings_pickled_npy_in_directory(embedding_arrays, tmp_path):
    d = save(tmp_path, embedding_arrays(), "dir")
    np.save(d / "y_train.npy", np.array([{"a": 1}] * 6, dtype=object), allow_pickle=True)
    with pytest.raises(FPEError, match=r"y_train in .* is an object array or pickle"):
        load_embeddings(d)


@pytest.mark.parametrize("n_classes", [0, -3, 2.5, "ten", True])
def test_embeddings_bad_n_classes_argument(embedding_arrays, tmp_path, n_classes):
    with pytest.raises(FPEError, match=r"n_classes must be a positive integer"):
        load_embeddings(save(tmp_path, embedding_arrays(), "npz"), n_classes=n_classes)


@pytest.mark.parametrize("dtype", [np.int64, "float16", "complex128", "banana"])
def test_bad_dtype(tmp_path, dtype):
    with pytest.raises(FPEError, match=r"dtype must be float32 or float64"):
        load_embeddings(tmp_path, dtype=dtype)


def _huge_header(shape=(10**6, 10**6)) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buf.getvalue() + bytes(64)


def test_embeddings_npz_declaring_a_huge_shape_is_refused(embedding_arrays, tmp_path):
    """A few-kB archive whose X_train header declares (10**6, 10**6): refused before any allocation."""
    import zipfile

    import io

    p = tmp_path / "emb.npz"
    with zipfile.ZipFile(p, "w") as z:
        for k, v in embedding_arrays().items():
            buf = io.BytesIO()
            np.save(buf, v)
            z.writestr(f"{k}.npy", _huge_header() if k == "X_train" else buf.getvalue())
    assert p.stat().st_size < 4096
    with pytest.raises(FPEError, match=r"^X_train in .*emb\.npz \(member X_train\.npy\) declares shape "
                                       r"\(1000000, 1000000\) float32 \(4000000000000 bytes\), more than the 64 "
                                       r"bytes it holds: the file is corrupt or truncated$"):
        load_embeddings(p)


def test_embeddings_npy_declaring_a_huge_shape_is_refused(embedding_arrays, tmp_path):
    d = save(tmp_path, embedding_arrays(), "dir")
    (d / "X_test.npy").write_bytes(_huge_header())
    with pytest.raises(FPEError, match=r"^X_test in .*X_test\.npy declares shape \(1000000, 1000000\) float32"):
        load_embeddings(d)


@pytest.mark.parametrize("form", FORMS)
def test_embeddings_with_one_training_class_are_refused(embedding_arrays, tmp_path, form):
    a = embedding_arrays()
    a["y_train"] = np.zeros(6, dtype=np.int64)
    p = save(tmp_path, a, form)
    with pytest.raises(FPEError, match=r"^y_train in .*emb(\.npz)? holds 1 class \(label 0\): a classifier needs at "
                                       r"least 2 classes in the training split$"):
        load_embeddings(p, n_classes=3)
