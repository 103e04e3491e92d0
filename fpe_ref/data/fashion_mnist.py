"""FashionMNIST from the standard IDX files, as raw flattened pixels scaled to [0, 1].

Paper: Sec. 2.2.2 ("For FashionMNIST, we use raw flattened grayscale images") and A.3 (10
balanced clothing classes, the standard 60000/10000 train/test split).

Where the files come from
-------------------------
Nothing is downloaded. The default directory is ``/usr/share/datasets/fashion-mnist``, which
the Debian/Ubuntu package ``dataset-fashion-mnist`` installs::

    apt-get install dataset-fashion-mnist

Debian bookworm's ``dataset-fashion-mnist 0.0~git20200523.55506a9-1`` ships exactly these four
gzipped files in that directory (and nothing else there; its docs go to
``/usr/share/doc/dataset-fashion-mnist``)::

    train-images-idx3-ubyte.gz   26421856 bytes -> 47040016 (magic 2051, 60000 x 28 x 28)
    train-labels-idx1-ubyte.gz      29491 bytes ->    60008 (magic 2049, 60000)
    t10k-images-idx3-ubyte.gz     4422079 bytes ->  7840016 (magic 2051, 10000 x 28 x 28)
    t10k-labels-idx1-ubyte.gz        5125 bytes ->    10008 (magic 2049, 10000)

The package re-compressed the files (gzip time stamp 2020-06-05), so the MD5 sums of the
``.gz`` files differ from those in the upstream README; we therefore check structure, never
checksums of compressed files. Any other directory (``data_dir=``, the CLI's ``--data-dir``)
may hold the same four names either gzipped (``.gz``) or not; if both forms of a file are
present, the uncompressed one is read. Compression is detected from the file's first bytes
(gzip ``1f 8b``), not from its name.

IDX format (LeCun's MNIST page)
-------------------------------
Big-endian throughout. Bytes 0-1 are zero, byte 2 is the element type (0x08 uint8, 0x09
int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), byte 3 the number of dimensions
``k``; then ``k`` uint32 sizes, then ``prod(sizes)`` elements, row-major. So images are magic
``0x00000803 = 2051`` and labels ``0x00000801 = 2049``. :func:`read_idx` is generic; the
FashionMNIST loader adds the specific checks (magic, 28x28, counts, labels 0..9).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from fpe_ref.errors import FPEError, check_memory
from fpe_ref.data.classification import ClassificationData, check_float_dtype
from fpe_ref.data.npz import DEFLATE_MAX_RATIO, DEFLATE_SLACK

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"

INSTALL_HINT = (
    "install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu, puts the files in "
    f"{DEFAULT_DATA_DIR}) or pass data_dir / --data-dir pointing at a folder with the four IDX files"
)

#: Label k of FashionMNIST (Xiao et al., 2017, README of the data set).
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

IMAGE_MAGIC = 2051  # 0x00000803: uint8, 3 dimensions (n, rows, cols)
LABEL_MAGIC = 2049  # 0x00000801: uint8, 1 dimension (n,)
IMAGE_SHAPE = (28, 28)

#: (stem of the images file, stem of the labels file) for each split.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX element type code -> big-endian NumPy dtype.
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20  # bytes per read past the data (to the end of a gzip stream)


def _gzip_problem(path: Path) -> FPEError | None:
    """The FPEError of a corrupt or truncated gzip file, or None: reads it to the end, chunk by chunk."""
    try:
        with gzip.open(path, "rb") as g:
            while g.read(_CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        return FPEError(f"{path} is a corrupt or truncated gzip file ({e})")
    return None


def _read_idx_stream(f, path: Path, size: int, gz: bool, expected_magic):
    """The array of the IDX stream ``f`` (``size`` bytes on disk, gzip-compressed if ``gz``)."""
    head = f.read(4)
    if len(head) < 4:
        raise FPEError(f"{path} is truncated: {len(head)} bytes, too short for an IDX header")
    magic = int.from_bytes(head, "big")
    if expected_magic is not None and magic != expected_magic:
        hint = ""
        if int.from_bytes(head, "little") == expected_magic:
            hint = "; it looks little-endian, IDX is big-endian"
        raise FPEError(
            f"{path} has magic number {magic} (0x{magic:08x}), expected {expected_magic} "
            f"(0x{expected_magic:08x}){hint}"
        )
    type_code, ndim = head[2], head[3]
    if head[0] != 0 or head[1] != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise FPEError(f"{path} is not an IDX file: magic number {magic} (0x{magic:08x})")
    header = 4 + 4 * ndim
    sizes = f.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise FPEError(f"{path} is truncated: {4 + len(sizes)} bytes, header alone needs {header}")
    shape = tuple(int.from_bytes(sizes[4 * i : 4 + 4 * i], "big") for i in range(ndim))
    dt = _IDX_TYPES[type_code]
    expected = header + int(np.prod(shape, dtype=object)) * dt.itemsize  # python ints: no overflow
    # Refused before anything is allocated: more data than the file can hold, or than memory.
    if not gz and size < expected:
        raise FPEError(
            f"{path} is truncated: {size} bytes, but its header (shape {shape}, {dt.name}) "
            f"implies {expected}"
        )
    if not gz and size > expected:
        raise FPEError(
            f"{path} has {size - expected} extra byte(s) beyond the {expected} its header "
            f"(shape {shape}, {dt.name}) implies"
        )
    if gz and expected > DEFLATE_MAX_RATIO * size + DEFLATE_SLACK:
        raise FPEError(
            f"{path} is truncated: its header (shape {shape}, {dt.name}) implies {expected} bytes, "
            f"more than its {size} gzip-compressed bytes can hold"
        )
    check_memory(expected, f"{path} (shape {shape}, {dt.name})")
    data = f.read(expected - header)
    got = header + len(data)
    if got < expected:
        raise FPEError(
            f"{path} is truncated: {got} bytes, but its header (shape {shape}, {dt.name}) "
            f"implies {expected}"
        )
    extra = 0
    while chunk := f.read(_CHUNK):  # to the end: gzip checks its CRC and length there
        extra += len(chunk)
    if extra:
        raise FPEError(
            f"{path} has {extra} extra byte(s) beyond the {expected} its header "
            f"(shape {shape}, {dt.name}) implies"
        )
    return np.frombuffer(data, dtype=dt).reshape(shape)


def read_idx(path, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or not) into an array of its native shape.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Gzip compression is detected from the content, not the name.
    expected_magic : int, optional
        If given, the 4-byte magic number must equal it (2051 for images, 2049 for labels).

    Returns
    -------
    ndarray, shape given by the header, dtype the header's type in native byte order
        (uint8 for MNIST-style files).

    Raises
    ------
    FPEError
        Unreadable file, corrupt gzip, a magic number that is not IDX (or not the expected
        one), or a length different from ``header + prod(sizes) * itemsize`` bytes
        (truncated or padded file). The header is read first: a header declaring more data
        than the file holds (for a gzip file: more than deflate's largest ratio allows), or
        more than the memory available, is refused before the data is read or allocated.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise FPEError(f"cannot read {path}: {e.strerror or e}") from None
    with f:
        gz = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        size = os.fstat(f.fileno()).st_size
        try:
            if not gz:
                data = _read_idx_stream(f, path, size, False, expected_magic)
            else:
                with gzip.GzipFile(fileobj=f, mode="rb") as g:
                    data = _read_idx_stream(g, path, size, True, expected_magic)
        except FPEError:
            problem = _gzip_problem(path) if gz else None
            if problem is not None:  # a damaged gzip stream is the cause of whatever the header said
                raise problem from None
            raise
        except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
            if gz:
                raise FPEError(f"{path} is a corrupt or truncated gzip file ({e})") from None
            raise FPEError(f"cannot read {path}: {e.strerror or e}") from None
    return data.astype(data.dtype.newbyteorder("="))  # native byte order, owns its memory


def find_idx_file(data_dir, stem: str) -> Path:
    """The path of ``stem`` or ``stem.gz`` in ``data_dir`` (uncompressed preferred)."""
    data_dir = Path(data_dir)
    for name in (stem, stem + ".gz"):
        p = data_dir / name
        if p.is_file():
            return p
    raise FPEError(f"FashionMNIST file {stem}[.gz] not found in {data_dir}; {INSTALL_HINT}")


def _load_split(data_dir: Path, split: str, dtype: np.dtype):
    img_path = find_idx_file(data_dir, FILES[split][0])
    lab_path = find_idx_file(data_dir, FILES[split][1])
    images = read_idx(img_path, expected_magic=IMAGE_MAGIC)  # (n, 28, 28) uint8
    labels = read_idx(lab_path, expected_magic=LABEL_MAGIC)  # (n,) uint8
    if images.shape[1:] != IMAGE_SHAPE:
        raise FPEError(
            f"{img_path} holds {images.shape[1]}x{images.shape[2]} images, FashionMNIST is 28x28"
        )
    if len(images) == 0:
        raise FPEError(f"{img_path} holds no images")
    if len(images) != len(labels):
        raise FPEError(
            f"{img_path} has {len(images)} images but {lab_path} has {len(labels)} labels"
        )
    bad = np.flatnonzero(labels >= len(FASHION_MNIST_CLASSES))
    if bad.size:
        i = int(bad[0])
        raise FPEError(f"{lab_path}: label {int(labels[i])} at index {i} is outside 0..9")
    present = np.unique(labels)
    if split == "train" and present.size < 2:
        raise FPEError(f"{lab_path} holds {present.size} class (label {int(present[0])}): a classifier needs "
                       "at least 2 classes in the training split")
    # Pixel p in 0..255 -> p / 255 in [0, 1], rounded once in the target dtype.
    X = images.reshape(len(images), -1).astype(dtype) / dtype.type(255)  # (n, 784)
    return X, labels.astype(np.int64)


def load_fashion_mnist(data_dir=None, dtype=np.float64) -> ClassificationData:
    """Load FashionMNIST's standard train/test split as flattened pixels in [0, 1].

    Paper: Sec. 2.2.2, A.3. ``X[i, 28 * r + c] = image_i[r, c] / 255`` (row-major flattening,
    as ``torch.flatten`` of a ``ToTensor()`` image).

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        Folder holding the four IDX files (``.gz`` or not). Default
        ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
    dtype : float32 or float64, default float64
        Dtype of ``X_train`` / ``X_test``.

    Returns
    -------
    ClassificationData
        ``X_train`` (60000, 784), ``y_train`` (60000,) int64, ``X_test`` (10000, 784),
        ``y_test`` (10000,) int64, ``n_classes=10``, ``class_names=FASHION_MNIST_CLASSES``.
        (Counts are whatever the files hold; the standard files hold 60000/10000.)

    Raises
    ------
    FPEError
        Missing directory or file (the message says how to install it), corrupt gzip, wrong
        magic number, images not 28x28, image/label count mismatch, truncated file (or a
        header declaring more items than the file holds), a label outside 0..9, or training
        labels of a single class.
    """
    dtype = check_float_dtype(dtype)
    try:
        data_dir = Path(os.fspath(DEFAULT_DATA_DIR if data_dir is None else data_dir))
    except TypeError:
        raise FPEError(f"data_dir must be a path, got {data_dir!r}") from None
    if not data_dir.exists():
        raise FPEError(f"FashionMNIST directory {data_dir} does not exist; {INSTALL_HINT}")
    if not data_dir.is_dir():
        raise FPEError(f"FashionMNIST data_dir {data_dir} is not a directory; {INSTALL_HINT}")
    X_train, y_train = _load_split(data_dir, "train", dtype)
    X_test, y_test = _load_split(data_dir, "test", dtype)
    return ClassificationData(
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        n_classes=len(FASHION_MNIST_CLASSES),
        class_names=FASHION_MNIST_CLASSES,
        source=str(data_dir),
    )
