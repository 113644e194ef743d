"""Batch compression (docs/protocol.md, "Compression"): the codec ids of a batch's attributes and the
standard formats behind them. gzip comes with Python; lz4, zstd and snappy use the ``lz4``, ``zstandard``
and ``cramjam`` packages when they are installed (``pip install 'oxbow[compression]'``)."""

from __future__ import annotations

import gzip
import zlib
from typing import Optional

from .errors import OxbowError

#: A batch's records never decompress to more than this (the broker refuses such batches too).
DECOMPRESSED_BYTES_MAX = 16 << 20

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
NAMES = {codec_id: name for name, codec_id in CODECS.items()}
_PACKAGES = {"snappy": "cramjam", "lz4": "lz4", "zstd": "zstandard"}


def codec_id(name: str) -> int:
    """The id of a codec name, checking that this Python can compress with it."""
    if name not in CODECS:
        raise ValueError(f"compression must be one of {', '.join(CODECS)}, not {name!r}")
    _module(CODECS[name])
    return CODECS[name]


def available() -> list[str]:
    """The codecs this Python can use."""
    names = []
    for name, ident in CODECS.items():
        try:
            _module(ident)
            names.append(name)
        except OxbowError:
            pass
    return names


def compress(ident: int, data: bytes) -> bytes:
    if ident == 0:
        return data
    if ident == 1:
        return gzip.compress(data, compresslevel=6, mtime=0)
    module = _module(ident)
    if ident == 2:
        return bytes(module.snappy.compress_raw(data))
    if ident == 3:
        return module.compress(data)
    return module.ZstdCompressor(level=3).compress(data)


def decompress(ident: int, data: bytes) -> bytes:
    """The records section of a compressed batch; an ``OxbowError`` if it does not decompress or is over
    ``DECOMPRESSED_BYTES_MAX``."""
    name = NAMES.get(ident)
    if name is None:
        raise OxbowError(f"unknown compression codec {ident} in a batch's attributes")
    if ident == 0:
        return data
    module = _module(ident)
    limit = DECOMPRESSED_BYTES_MAX + 1
    try:
        if ident == 1:
            decompressor = zlib.decompressobj(wbits=31)
            out = decompressor.decompress(data, limit)
            if not decompressor.eof and len(out) < limit:
                raise OxbowError("gzip records end early")
        elif ident == 2:
            out = bytes(module.snappy.decompress_raw(data))
        elif ident == 3:
            decompressor = module.LZ4FrameDecompressor()
            out = decompressor.decompress(data, max_length=limit)
        else:
            reader = module.ZstdDecompressor().stream_reader(data)
            out = reader.read(limit)
    except OxbowError:
        raise
    except Exception as error:  # each library has its own error types
        raise OxbowError(f"{name} records do not decompress: {error}") from error
    if len(out) > DECOMPRESSED_BYTES_MAX:
        raise OxbowError(f"{name} records decompress to more than {DECOMPRESSED_BYTES_MAX} bytes")
    return out


def _module(ident: int) -> Optional[object]:
    if ident in (0, 1):
        return None
    name = NAMES.get(ident)
    package = _PACKAGES.get(name or "")
    if package is None:
        raise OxbowError(f"unknown compression codec {ident}")
    try:
        if package == "lz4":
            import lz4.frame as module
        elif package == "zstandard":
            import zstandard as module  # type: ignore[no-redef]
        else:
            import cramjam as module  # type: ignore[no-redef]
    except ImportError as error:
        raise OxbowError(f"{name} batches need the Python package {package!r} (pip install {package})") from error
    return module
