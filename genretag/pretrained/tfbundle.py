"""A numpy-only reader of TensorFlow 1 tensor bundles (``prefix.index`` + ``prefix.data-*``).

A bundle is what ``tf.train.Saver`` writes: ``prefix.index`` is an uncompressed LevelDB table
(SSTable) whose keys are variable names and whose values are ``BundleEntryProto`` messages (dtype,
shape, shard, offset, size, crc32c); the empty key holds the ``BundleHeaderProto``. The tensors'
bytes lie in ``prefix.data-00000-of-0000N`` at those offsets, little-endian, C order.

The protobuf fields are decoded by hand (varints and length-delimited fields: the handful this
format uses), so nothing here needs TensorFlow or protobuf, and nothing in the files is executed:
they are read as bytes. Every offset and size is checked against the file it points into; a
truncated or corrupt bundle gives one :class:`~genretag.errors.ConfigError` naming the file.
(The crc32c of each tensor is not verified: sizes, shapes and the table's structure are.)

TF layouts, for a caller porting weights: conv kernels are HWIO (height, width, in, out), dense
kernels (in, out).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from genretag.errors import ConfigError

TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB's table magic number, the last 8 bytes of the .index
FOOTER = 48  # two block handles (padded to 40 bytes) + the magic
TRAILER = 5  # after each block: compression type (1 byte) + masked crc32c (4 bytes)
# TensorFlow's DataType enum -> numpy (the types a checkpoint of this kind holds)
DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    14: np.uint16,  # bfloat16's bytes; not converted
    17: np.uint16,
    19: np.float16,
    22: np.uint32,
    23: np.uint64,
}


class _Corrupt(Exception):
    """Raised inside the parser; :func:`read_index` turns it into one ConfigError line."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, next position) of the base-128 varint at ``pos``."""
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Corrupt("a varint runs past its field")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def _fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of a protobuf message: ints for varint/fixed fields,
    bytes for length-delimited ones."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise _Corrupt("a field runs past its message")
            value, pos = buf[pos : pos + length], pos + length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise _Corrupt("a fixed field runs past its message")
            value = int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        else:
            raise _Corrupt(f"wire type {wire} is not protobuf's")
        out.append((number, value))
    return out


def _block(data: bytes, handle: bytes) -> bytes:
    """The contents of the block that ``handle`` (offset varint, size varint) points at."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if offset + size + TRAILER > len(data):
        raise _Corrupt(f"a block at byte {offset} ends past the end of the file")
    if data[offset + size] != 0:
        raise _Corrupt("a block is compressed (TensorFlow writes bundles uncompressed)")
    return data[offset : offset + size]


def _entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of one table block (prefix-compressed keys, restart array)."""
    if len(block) < 4:
        raise _Corrupt("a block is shorter than its restart count")
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 * (restarts + 1)
    if end < 0:
        raise _Corrupt("a block's restart array is longer than the block")
    out, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + length > end:
            raise _Corrupt("an entry runs past its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        out.append((key, block[pos : pos + length]))
        pos += length
    return out


def _entry(value: bytes) -> dict[str, object]:
    """A BundleEntryProto as {dtype, shape, shard, offset, size}."""
    entry: dict[str, object] = {"dtype": 0, "shape": (), "shard": 0, "offset": 0, "size": 0}
    for number, field in _fields(value):
        if number == 1:
            entry["dtype"] = field
        elif number == 2:  # TensorShapeProto: repeated Dim (field 2) {size: field 1}
            dims = []
            for dim_number, dim in _fields(field):  # type: ignore[arg-type]
                if dim_number == 2:
                    size = dict(_fields(dim)).get(1, 0)  # type: ignore[arg-type]
                    dims.append(int(size))  # type: ignore[arg-type]
            entry["shape"] = tuple(dims)
        elif number in (3, 4, 5):
            entry[{3: "shard", 4: "offset", 5: "size"}[number]] = field
        elif number == 7:
            raise _Corrupt("a tensor is saved in slices (partitioned variables are not read)")
    return entry


def read_index(index_path: str | os.PathLike) -> dict[str, dict[str, object]]:
    """``{variable name: {dtype, shape, shard, offset, size}}`` from a bundle's ``.index`` file.

    ConfigError (one line naming the file) when it is missing, truncated or not a bundle index.
    """
    path = Path(index_path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the checkpoint index ({error.strerror})") from None
    try:
        if len(data) < FOOTER or int.from_bytes(data[-8:], "little") != TABLE_MAGIC:
            raise _Corrupt("no table footer (truncated, or not a TensorFlow checkpoint index)")
        footer = data[-FOOTER:]
        _, pos = _varint(footer, 0)  # the metaindex handle (unused)
        _, pos = _varint(footer, pos)
        index_start = pos
        _, pos = _varint(footer, pos)
        _, pos = _varint(footer, pos)
        entries: dict[str, dict[str, object]] = {}
        for _, handle in _entries(_block(data, footer[index_start:pos])):
            for key, value in _entries(_block(data, handle)):
                if key:  # b"": the BundleHeaderProto
                    entries[key.decode("utf-8")] = _entry(value)
    except (_Corrupt, UnicodeDecodeError, struct.error) as error:
        raise ConfigError(f"{path}: not a readable TensorFlow checkpoint index ({error})") from None
    return entries


def _data_file(prefix: str, shard: int, shards: int) -> Path:
    return Path(f"{prefix}.data-{shard:05d}-of-{shards:05d}")


def read_bundle(prefix: str | os.PathLike, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The tensors of the bundle at ``prefix`` (``prefix.index``, ``prefix.data-*``) by name.

    ``names``: only these (ConfigError naming the first missing one); default all. Arrays are
    copies (writable, native byte order). For musicnn's folders the prefix is the folder plus
    "/" (the files are called ``.index`` and ``.data-00000-of-00001``).
    """
    prefix = os.fspath(prefix)
    index = Path(f"{prefix}.index")
    entries = read_index(index)
    wanted = list(entries) if names is None else names
    missing = [n for n in wanted if n not in entries]
    if missing:
        raise ConfigError(f"{index}: has no tensor {missing[0]!r} ({len(entries)} tensors in it)")
    shards = {int(entries[n]["shard"]) for n in entries}  # type: ignore[call-overload]
    count = max(shards) + 1
    files: dict[int, bytes] = {}
    out: dict[str, np.ndarray] = {}
    for name in wanted:
        e = entries[name]
        shard, offset, size = int(e["shard"]), int(e["offset"]), int(e["size"])  # type: ignore[call-overload]
        path = _data_file(prefix, shard, count)
        if shard not in files:
            try:
                files[shard] = path.read_bytes()
            except OSError as error:
                raise ConfigError(
                    f"{path}: cannot read the checkpoint data ({error.strerror})"
                ) from None
        dtype = DTYPES.get(int(e["dtype"]))  # type: ignore[call-overload]
        if dtype is None:
            raise ConfigError(
                f"{index}: tensor {name!r} has TensorFlow dtype {e['dtype']}, not read"
            )
        shape = tuple(e["shape"])  # type: ignore[arg-type]
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if size != expected or offset + size > len(files[shard]):
            raise ConfigError(
                f"{path}: truncated or corrupt: tensor {name!r} {shape} needs bytes "
                f"{offset}..{offset + expected} of {len(files[shard])}; reinstall the package"
            )
        raw = np.frombuffer(files[shard], dtype=np.dtype(dtype).newbyteorder("<"), count=
                            expected // np.dtype(dtype).itemsize, offset=offset)  # fmt: skip
        out[name] = raw.astype(dtype).reshape(shape)
    return out
