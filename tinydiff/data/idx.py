"""IDX files, the format MNIST ships in: reading, writing, and their digest.

An IDX file is: two zero bytes, a type code, the number of dimensions d;
then d big-endian uint32 sizes; then the values, big-endian, C order. A file
may be gzipped or not; the two are told apart by the gzip magic bytes, never
by the file's name. Every problem (a missing, empty, corrupt or truncated
file, a wrong header) raises ``DataError`` naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np

from .. import files
from .common import DataError

IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def read_file_bytes(path):
    """The raw bytes of a file; DataError naming it when it cannot be read."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read file ({error})") from None


def decompress(raw, path):
    """The payload of a file: gunzipped when it starts with the gzip magic bytes.

    An empty file, or a gzip stream that holds nothing, is a DataError naming
    ``path``: no data file tinydiff reads may be empty.
    """
    if not raw:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        payload = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        # OSError covers gzip.BadGzipFile; EOFError is a truncated stream.
        raise DataError(f"{path}: corrupt or truncated gzip data ({error})") from None
    if not payload:
        raise DataError(f"{path}: the gzip stream decompresses to nothing (an empty file)")
    return payload


def parse_idx(data, path):
    """An IDX payload -> a native-byte-order array; DataError on any inconsistency."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path}: not an IDX file (the first bytes are {data[:4].hex() or 'missing'}; "
            "an IDX file starts with 00 00, a type code and the number of dimensions)"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise DataError(
            f"{path}: unknown IDX type code 0x{code:02x}; "
            f"allowed: {', '.join(f'0x{c:02x}' for c in IDX_TYPES)}"
        )
    if ndim < 1:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        kind = "truncated" if found < expected else "has trailing bytes"
        raise DataError(
            f"{path}: IDX file {kind}: header says shape {shape} of {dtype.name} "
            f"({expected} data bytes) but the file holds {found} data bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a native, writable copy


def read_idx(path):
    """Read an IDX file (gzipped or not, told apart by magic bytes) into a NumPy array.

    Raises DataError naming ``path`` when the file is missing or empty, the
    gzip stream is corrupt, truncated or empty, the magic number or type code
    is wrong, or the byte count disagrees with the dimensions in the header.
    """
    return parse_idx(decompress(read_file_bytes(path), path), path)


def idx_bytes(array, *, compress=False):
    """The bytes of ``array`` as an IDX file, gzipped (reproducibly, mtime 0) if ``compress``.

    Supported dtypes: uint8, int8, int16, int32, float32, float64.
    """
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        allowed = ", ".join(d.name for d in codes)
        raise ValueError(f"write_idx: array dtype {array.dtype} is not storable in IDX; allowed: {allowed}")
    if array.ndim < 1 or array.ndim > 255:
        raise ValueError(f"write_idx: array must have 1 to 255 dimensions, got {array.ndim}")
    big_endian = IDX_TYPES[codes[native]]
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=big_endian).tobytes()
    return gzip.compress(payload, mtime=0) if compress else payload


def write_idx(path, array, *, compress=None):
    """Write ``array`` as an IDX file; gzipped if ``compress`` (default: path ends in .gz).

    Supported dtypes as for ``idx_bytes``. Written atomically through
    ``tinydiff.files``, so a reader never sees half a file.
    """
    if compress is None:
        compress = Path(path).suffix == ".gz"
    files.write_bytes(path, idx_bytes(array, compress=compress))


def sha256_of(path):
    """SHA-256 (hex) of a file's decompressed bytes (the file itself when not gzipped).

    Hashing the payload rather than the file makes the digest independent
    of how, or whether, a mirror gzipped it.
    """
    return hashlib.sha256(decompress(read_file_bytes(path), path)).hexdigest()
