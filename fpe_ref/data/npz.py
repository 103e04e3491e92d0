"""The one checked reader of ``.npz`` archives and ``.npy`` files: every fpe-ref file of arrays.

Model files (:meth:`fpe_ref.mlp.MLP.load`), embedding files (:mod:`fpe_ref.data.embeddings`)
and golden bundles (:mod:`fpe_ref.parity.golden`) are read here, never with ``np.load``.

``np.load`` trusts the header of each ``.npy`` member: a 4 kB archive whose header declares
shape ``(10**6, 10**6)`` makes it allocate 7.3 TiB before it finds out the data is not
there. This reader reads each header first (``numpy.lib.format.read_magic`` and
``read_array_header_1_0`` / ``_2_0``) and refuses, before allocating anything:

* an array whose ``prod(shape) * itemsize`` bytes exceed what its member (or file) holds
  after the header: the file is corrupt or truncated (the error names the file, the member,
  the declared shape and dtype);
* a zip member that claims more data than the whole archive could hold (stored members:
  more bytes than the archive has; deflated ones: more than deflate's largest ratio, 1032:1);
* an array larger than the memory available (:func:`fpe_ref.errors.check_memory`);
* object dtypes (they are pickles) and members that are not ``.npy`` arrays;
* unreadable archives: not a zip file, a truncated one, a bad CRC, an unsupported
  compression or an encrypted member.

Every refusal is one :class:`~fpe_ref.errors.FPEError` line. An array that passes is then
read by ``numpy.lib.format.read_array(..., allow_pickle=False)``, the function ``np.load``
uses, so the arrays are exactly those ``np.load`` returns.
"""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from fpe_ref.errors import FPEError, check_memory

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty archive
NPY_SUFFIX = ".npy"
MAX_HEADER_SIZE = 10000  # numpy's own limit on a .npy header (read_array_header_*'s default)
DEFLATE_MAX_RATIO = 1032  # deflate cannot expand data by more than this factor
DEFLATE_SLACK = 1 << 16  # bytes allowed beyond the ratio for tiny members

# What reading a zip archive or member can raise besides FPEError: BadZipFile (bad CRC,
# truncated), zlib.error (bad deflate data), EOFError/OSError (short reads),
# NotImplementedError (unsupported compression), RuntimeError (encrypted member),
# ValueError (numpy's header and length checks).
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError)


def _describe(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_header(f, name: str, src: str):
    """``(shape, fortran_order, dtype, header_end)`` of the ``.npy`` stream ``f`` at its start.

    ``header_end`` is the offset of the first data byte. FPEError (naming array ``name`` of
    file ``src``) when ``f`` is not a ``.npy`` stream, its header is malformed, or the dtype
    holds Python objects (a pickle).
    """
    start = f.read(len(NPY_MAGIC))
    if start != NPY_MAGIC:
        raise FPEError(f"{name} in {src} is not a .npy array (no NumPy magic bytes)")
    f.seek(0)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=MAX_HEADER_SIZE)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=MAX_HEADER_SIZE)
        else:  # (3, 0) only changes the header's encoding to utf-8
            shape, fortran, dtype = np.lib.format._read_array_header(f, version, max_header_size=MAX_HEADER_SIZE)
    except _READ_ERRORS as exc:
        raise FPEError(f"{name} in {src} is corrupt or unreadable (bad .npy header: {_describe(exc)})") from None
    if dtype.hasobject:
        raise FPEError(f"{name} in {src} is an object array or pickle, which fpe-ref refuses to load "
                       "(allow_pickle=False); save plain numeric arrays")
    return tuple(int(s) for s in shape), fortran, dtype, f.tell()


def check_declared_size(declared: int, held: int, what: str, shape, dtype) -> None:
    """FPEError when a header declares more data bytes than its file holds (before allocating).

    ``what`` names the array and its file; ``shape`` and ``dtype`` are the declared ones.
    The IDX reader of :mod:`fpe_ref.data.fashion_mnist` uses it too.
    """
    if declared > held:
        raise FPEError(f"{what} declares shape {tuple(shape)} {np.dtype(dtype).name} ({declared} bytes), "
                       f"more than the {held} bytes it holds: the file is corrupt or truncated")


def _checked_array(f, name: str, src: str, held: int, where: str) -> np.ndarray:
    """Header, size and memory checks on the ``.npy`` stream ``f``, then its array."""
    shape, _, dtype, header_end = read_header(f, name, src)
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize  # Python ints: no overflow
    check_declared_size(declared, held - header_end, f"{name} in {src}{where}", shape, dtype)
    check_memory(declared, f"{name} in {src} (shape {shape} {dtype.name})")
    f.seek(0)
    try:
        return np.lib.format.read_array(f, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise FPEError(f"{name} in {src} is corrupt or unreadable ({_describe(exc)})") from None


def read_npy(path, name: str | None = None) -> np.ndarray:
    """The array of one ``.npy`` file, checked as the module docstring says.

    ``name`` names the array in messages (default: the file's stem).
    """
    src = os.fspath(path)
    name = name or os.path.splitext(os.path.basename(src))[0]
    try:
        with open(src, "rb") as f:
            if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise FPEError(f"{src} is not a .npy file (no NumPy magic bytes)")
            f.seek(0)
            return _checked_array(f, name, src, os.fstat(f.fileno()).st_size, "")
    except OSError as exc:
        raise FPEError(f"cannot read {src}: {exc.strerror or exc}") from None


class NpzArchive:
    """An ``.npz`` archive opened for checked reading (a context manager).

    ``names`` lists its arrays (member names without ``.npy``, in archive order);
    ``read(name)`` returns one, checked as the module docstring says. Opening refuses a file
    that is not a zip archive, or a truncated or otherwise unreadable one.
    """

    def __init__(self, path):
        self.src = os.fspath(path)
        try:
            with open(self.src, "rb") as f:
                head = f.read(len(NPY_MAGIC))
            self.file_size = os.path.getsize(self.src)
        except OSError as exc:
            raise FPEError(f"cannot read {self.src}: {exc.strerror or exc}") from None
        if head.startswith(NPY_MAGIC):
            raise FPEError(f"{self.src} is a single .npy array, not an .npz (zip) archive")
        if head[:4] not in ZIP_MAGICS:
            raise FPEError(f"{self.src} is not an .npz (zip) archive")
        try:
            self._zip = zipfile.ZipFile(self.src)
        except _READ_ERRORS as exc:
            raise FPEError(f"{self.src} is a corrupt .npz (zip) archive ({_describe(exc)})") from None
        self._members = {}
        for info in self._zip.infolist():
            name = info.filename[:-len(NPY_SUFFIX)] if info.filename.endswith(NPY_SUFFIX) else info.filename
            self._members[name] = info
        self.names = tuple(self._members)

    def __contains__(self, name) -> bool:
        return name in self._members

    def _check_member(self, name: str, info: zipfile.ZipInfo) -> None:
        if info.is_dir() or not info.filename.endswith(NPY_SUFFIX):
            raise FPEError(f"member {info.filename} of {self.src} is not a .npy array")
        if info.compress_size > self.file_size:
            raise FPEError(f"member {info.filename} of {self.src} claims {info.compress_size} bytes, more than "
                           f"the archive's {self.file_size}: the file is corrupt or truncated")
        if info.compress_type == zipfile.ZIP_STORED:
            bound = info.compress_size
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            bound = DEFLATE_MAX_RATIO * info.compress_size + DEFLATE_SLACK
        else:
            return  # bzip2 / lzma: no useful ratio bound; check_memory still applies
        if info.file_size > bound:
            raise FPEError(f"member {info.filename} of {self.src} claims {info.file_size} bytes uncompressed, "
                           f"more than its {info.compress_size} stored bytes can hold: the file is corrupt")

    def read(self, name: str) -> np.ndarray:
        """The array ``name`` (without ``.npy``); FPEError if absent, not an array, or damaged."""
        if name not in self._members:
            raise FPEError(f"{self.src} has no array {name!r}; it holds {', '.join(self.names) or 'nothing'}")
        info = self._members[name]
        self._check_member(name, info)
        where = f" (member {info.filename})"
        try:
            with self._zip.open(info) as f:
                return _checked_array(f, name, self.src, info.file_size, where)
        except FPEError:
            raise
        except _READ_ERRORS as exc:
            raise FPEError(f"{name} in {self.src} is corrupt or unreadable ({_describe(exc)})") from None

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "NpzArchive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_npz(path, names=None) -> dict:
    """``{name: array}`` of an ``.npz`` archive: every member, or only ``names`` (each must exist).

    Members not asked for are never read. Checks: the module docstring.
    """
    with NpzArchive(path) as z:
        return {k: z.read(k) for k in (z.names if names is None else names)}
