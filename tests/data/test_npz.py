"""The checked .npz / .npy reader (fpe_ref.data.npz): np.load's arrays, one-line refusals before allocating."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest

from fpe_ref import errors
from fpe_ref.data.npz import NpzArchive, read_npy, read_npz
from fpe_ref.errors import FPEError

HUGE = (10**6, 10**6)  # 8e12 bytes of float64: no machine allocates that


def npy_header(shape, descr="<f8", fortran=False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buf.getvalue()


def npy_bytes(a) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=True)
    return buf.getvalue()


def write_zip(path, members: dict, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


ARRAYS = {
    "f8": np.arange(12.0).reshape(3, 4),
    "f4_fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
    "i8": np.arange(-3, 3),
    "bool": np.array([[True, False], [False, True]]),
    "str_0d": np.array('{"format_version": 1}'),
    "big_endian": np.arange(4, dtype=">f8"),
    "empty": np.zeros((0, 5)),
}


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_read_npz_returns_what_np_load_returns(tmp_path, compressed):
    p = tmp_path / "a.npz"
    (np.savez_compressed if compressed else np.savez)(p, **ARRAYS)
    got = read_npz(p)
    with np.load(p, allow_pickle=False) as ref:
        assert list(got) == list(ref.files)
        for k in ref.files:
            assert got[k].dtype == ref[k].dtype and got[k].shape == ref[k].shape, k
            assert got[k].flags.f_contiguous == ref[k].flags.f_contiguous, k
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_read_npz_reads_only_the_names_asked_for(tmp_path):
    p = write_zip(tmp_path / "a.npz", {"a.npy": npy_bytes(np.ones(3)), "b.npy": npy_header(HUGE) + bytes(8)})
    np.testing.assert_array_equal(read_npz(p, ["a"])["a"], np.ones(3))  # the damaged b is never read
    with NpzArchive(p) as z:
        assert z.names == ("a", "b") and "b" in z and "c" not in z
    with pytest.raises(FPEError, match=r"a\.npz has no array 'c'; it holds a, b$"):
        read_npz(p, ["c"])


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_a_huge_declared_shape_is_refused_before_allocating(tmp_path, compression):
    """A 4 kB archive whose header declares (10**6, 10**6) float64: refused, naming file, member and shape."""
    p = write_zip(tmp_path / "huge.npz", {"X_train.npy": npy_header(HUGE) + bytes(3968)}, compression)
    assert p.stat().st_size < 5000
    with pytest.raises(FPEError) as info:
        read_npz(p)
    assert one_line(info) == (
        f"X_train in {p} (member X_train.npy) declares shape (1000000, 1000000) float64 (8000000000000 bytes), "
        "more than the 3968 bytes it holds: the file is corrupt or truncated")


def test_a_truncated_member_is_refused_naming_its_shape(tmp_path):
    data = npy_bytes(np.arange(100.0))
    p = write_zip(tmp_path / "cut.npz", {"w.npy": data[:-8]})  # the member itself is cut short
    with pytest.raises(FPEError, match=r"w in .*cut\.npz \(member w\.npy\) declares shape \(100,\) float64 "
                                       r"\(800 bytes\), more than the 792 bytes it holds"):
        read_npz(p)


def _patch_sizes(path, compress_size=None, file_size=None):
    """Rewrite the sizes a zip's local and central headers claim for its only member."""
    raw = bytearray(path.read_bytes())
    for sig, off_c, off_u in ((b"PK\x03\x04", 18, 22), (b"PK\x01\x02", 20, 24)):
        at = raw.index(sig)
        if compress_size is not None:
            raw[at + off_c:at + off_c + 4] = struct.pack("<I", compress_size)
        if file_size is not None:
            raw[at + off_u:at + off_u + 4] = struct.pack("<I", file_size)
    path.write_bytes(bytes(raw))


def test_a_member_claiming_more_than_the_archive_holds_is_refused(tmp_path):
    p = write_zip(tmp_path / "lie.npz", {"w.npy": npy_bytes(np.ones(4))})
    _patch_sizes(p, compress_size=2**32 - 1, file_size=2**32 - 1)
    with pytest.raises(FPEError, match=r"member w\.npy of .*lie\.npz claims 4294967295 bytes, more than the "
                                       r"archive's \d+: the file is corrupt or truncated$"):
        read_npz(p)


def test_a_deflated_member_claiming_more_than_deflate_can_expand_to_is_refused(tmp_path):
    p = write_zip(tmp_path / "bomb.npz", {"w.npy": npy_bytes(np.ones(4))}, zipfile.ZIP_DEFLATED)
    _patch_sizes(p, file_size=2**32 - 1)
    with pytest.raises(FPEError, match=r"member w\.npy of .*bomb\.npz claims 4294967295 bytes uncompressed, "
                                       r"more than its \d+ stored bytes can hold"):
        read_npz(p)


def test_an_array_larger_than_the_memory_available_is_refused(tmp_path, monkeypatch):
    p = tmp_path / "a.npz"
    np.savez(p, W1=np.zeros((10, 100)))
    monkeypatch.setattr(errors, "available_memory", lambda: 1000)
    with pytest.raises(FPEError, match=r"W1 in .*a\.npz \(shape \(10, 100\) float64\) needs 7\.8 KiB \(8000 bytes\) "
                                       r"but only 1000 B of memory is available"):
        read_npz(p)


def test_object_arrays_are_refused_as_pickles(tmp_path):
    p = tmp_path / "o.npz"
    np.savez(p, ok=np.ones(2), bad=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(FPEError, match=r"^bad in .*o\.npz is an object array or pickle, which fpe-ref refuses"):
        read_npz(p)


def test_a_member_that_is_not_a_npy_array_is_refused(tmp_path):
    p = write_zip(tmp_path / "m.npz", {"w.npy": npy_bytes(np.ones(2)), "notes.txt": b"hello"})
    with pytest.raises(FPEError, match=r"^member notes\.txt of .*m\.npz is not a \.npy array$"):
        read_npz(p)
    q = write_zip(tmp_path / "n.npz", {"w.npy": b"not numpy data"})
    with pytest.raises(FPEError, match=r"^w in .*n\.npz is not a \.npy array \(no NumPy magic bytes\)$"):
        read_npz(q)
    r = write_zip(tmp_path / "h.npz", {"w.npy": b"\x93NUMPY\x01\x00garbage"})
    with pytest.raises(FPEError, match=r"^w in .*h\.npz is corrupt or unreadable \(bad \.npy header"):
        read_npz(r)


def _good_npz_bytes(tmp_path) -> bytes:
    p = tmp_path / "good.npz"
    np.savez(p, a=np.arange(50.0), b=np.arange(7))
    return p.read_bytes()


BAD_ARCHIVES = {
    "not-a-zip": (lambda good: b"this is a text file\n", r"is not an \.npz \(zip\) archive$"),
    "empty": (lambda good: b"", r"is not an \.npz \(zip\) archive$"),
    "single-npy": (lambda good: npy_bytes(np.ones(3)), r"is a single \.npy array, not an \.npz \(zip\) archive$"),
    "truncated": (lambda good: good[: len(good) // 2], r"is a corrupt \.npz \(zip\) archive \(BadZipFile"),
    "bad-crc": (lambda good: good[:150] + bytes(b ^ 0xFF for b in good[150:190]) + good[190:],
                r"a in .* is corrupt or unreadable \(BadZipFile: Bad CRC-32"),
}


@pytest.mark.parametrize("damage,match", BAD_ARCHIVES.values(), ids=BAD_ARCHIVES.keys())
def test_damaged_archives_are_one_line_errors(tmp_path, damage, match):
    p = tmp_path / "bad.npz"
    p.write_bytes(damage(_good_npz_bytes(tmp_path)))
    with pytest.raises(FPEError, match=match) as info:
        read_npz(p)
    one_line(info)


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(FPEError, match=r"^cannot read .*nothing\.npz: No such file or directory$"):
        read_npz(tmp_path / "nothing.npz")


def test_read_npy_checks_a_single_file(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(read_npy(good), np.arange(6.0).reshape(2, 3))
    huge = tmp_path / "y_train.npy"
    huge.write_bytes(npy_header(HUGE, "<i8") + bytes(64))
    with pytest.raises(FPEError) as info:
        read_npy(huge)
    assert one_line(info) == (f"y_train in {huge} declares shape (1000000, 1000000) int64 (8000000000000 bytes), "
                              "more than the 64 bytes it holds: the file is corrupt or truncated")
    (tmp_path / "text.npy").write_bytes(b"plain text")
    with pytest.raises(FPEError, match=r"text\.npy is not a \.npy file \(no NumPy magic bytes\)$"):
        read_npy(tmp_path / "text.npy")
