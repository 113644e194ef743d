"""The wire protocol of docs/protocol.md, without I/O: frames, record batches, CRC-32C, partitioning."""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import msgpack

from . import compression
from .errors import OxbowError


class Api:
    """API keys (docs/protocol.md, "APIs"); every API is at version 0."""

    API_VERSIONS = 0
    METADATA = 1
    CREATE_TOPICS = 2
    DELETE_TOPICS = 3
    DESCRIBE_TOPICS = 4
    PRODUCE = 5
    FETCH = 6
    LIST_OFFSETS = 7
    AUTHENTICATE = 8
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    SYNC_GROUP = 12
    HEARTBEAT = 13
    LEAVE_GROUP = 14
    OFFSET_COMMIT = 15
    OFFSET_FETCH = 16
    LIST_GROUPS = 17
    DESCRIBE_GROUPS = 18
    ALTER_CONFIGS = 20
    INIT_PRODUCER_ID = 21
    DESCRIBE_CLUSTER = 22


LATEST = -1
EARLIEST = -2

# --- frames -----------------------------------------------------------------------------------------------


def encode_request(api_key: int, correlation_id: int, client_id: str, body: dict[str, Any]) -> bytes:
    """A whole request frame, length prefix included."""
    client = client_id.encode()[:255]
    payload = struct.pack(">HHIH", api_key, 0, correlation_id, len(client)) + client + msgpack.packb(body, use_bin_type=True)
    return struct.pack(">I", len(payload)) + payload


def decode_response(payload: bytes) -> tuple[int, int, Any]:
    """(correlation id, whole-request error code, body) of a response payload (the frame without its prefix)."""
    if len(payload) < 6:
        raise OxbowError(f"a response of {len(payload)} bytes is shorter than its header")
    correlation_id, error_code = struct.unpack_from(">IH", payload)
    body = msgpack.unpackb(payload[6:], raw=False, strict_map_key=False) if len(payload) > 6 else {}
    return correlation_id, error_code, body


# --- CRC-32C (Castagnoli) ---------------------------------------------------------------------------------


def _table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _table()


def _crc32c_python(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # The C-accelerated package, when installed (`pip install oxbow[fast]`).
    import crc32c as _crc32c_module

    def crc32c(data: bytes) -> int:
        return _crc32c_module.crc32c(data)

    CRC32C_ACCELERATED = True
except ImportError:  # pragma: no cover - depends on the environment
    crc32c = _crc32c_python
    CRC32C_ACCELERATED = False


# --- record batches ---------------------------------------------------------------------------------------

HEADER_BYTES = 61
_HEADER = struct.Struct(">QIiBIHIqqqhiI")


@dataclass
class Record:
    """One record as a consumer sees it."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: list[tuple[str, Optional[bytes]]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "key": self.key,
            "value": self.value,
            "headers": self.headers,
        }


def encode_batch(
    records: list[tuple[Optional[bytes], Optional[bytes], list[tuple[str, Optional[bytes]]], int]],
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    codec: int = 0,
) -> bytes:
    """A batch of (key, value, headers, timestamp ms) as a producer sends it (base offset 0, epoch -1), its
    records compressed with the codec id ``codec`` (docs/protocol.md, "Compression")."""
    if not records:
        raise ValueError("a batch holds at least one record")
    base_timestamp = records[0][3]
    body = bytearray()
    for delta, (key, value, headers, timestamp) in enumerate(records):
        record = bytearray(struct.pack(">BiI", 0, timestamp - base_timestamp, delta))
        for part in (key, value):
            if part is None:
                record += struct.pack(">i", -1)
            else:
                record += struct.pack(">i", len(part)) + part
        record += struct.pack(">I", len(headers))
        for name, header_value in headers:
            encoded = name.encode()
            record += struct.pack(">H", len(encoded)) + encoded
            record += struct.pack(">i", -1) if header_value is None else struct.pack(">i", len(header_value)) + header_value
        body += struct.pack(">I", len(record)) + record
    max_timestamp = max(r[3] for r in records)
    if codec and len(body) <= compression.DECOMPRESSED_BYTES_MAX:
        body = bytearray(compression.compress(codec, bytes(body)))
    else:
        codec = 0
    # Bytes 21.. (attributes onwards) are what the CRC covers.
    covered = (
        struct.pack(">HIqqqhiI", codec, len(records) - 1, base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence, len(records))
        + body
    )
    batch_length = 4 + 1 + 4 + len(covered)  # partition_leader_epoch, magic, crc, then the covered bytes
    return struct.pack(">QIiBI", 0, batch_length, -1, 1, crc32c(covered)) + covered


def decode_batches(topic: str, partition: int, data: bytes, from_offset: int = 0) -> Iterator[Record]:
    """The records of concatenated batches at or after ``from_offset``; every batch's CRC is checked."""
    whole = data
    position = 0
    while position + 12 <= len(data):
        base_offset, batch_length = struct.unpack_from(">QI", data, position)
        end = position + 12 + batch_length
        if end > len(data) or batch_length < HEADER_BYTES - 12:
            raise OxbowError(f"a batch at byte {position} runs past the data")
        (_, _, _, magic, crc, attributes, _last_delta, base_timestamp, _max_ts, _pid, _pepoch, _seq, count) = _HEADER.unpack_from(data, position)
        if magic != 1:
            raise OxbowError(f"unknown batch magic {magic}")
        if crc32c(bytes(data[position + 21 : end])) != crc:
            raise OxbowError(f"the batch at offset {base_offset} of {topic}/{partition} fails its CRC-32C")
        batch_end = end
        cursor = position + HEADER_BYTES
        if attributes & ~0x07:
            raise OxbowError(f"unknown attribute bits {attributes:#06x} in the batch at offset {base_offset}")
        if attributes:
            # The records section decompressed; the records are read from it as from an uncompressed batch.
            section = compression.decompress(attributes, bytes(data[cursor:end]))
            data, cursor, end = section, 0, len(section)
        for _ in range(count):
            (length,) = struct.unpack_from(">I", data, cursor)
            record_end = cursor + 4 + length
            if record_end > end:
                raise OxbowError("a record runs past its batch")
            _attrs, ts_delta, offset_delta = struct.unpack_from(">BiI", data, cursor + 4)
            cursor += 13
            parts: list[Optional[bytes]] = []
            for _part in range(2):
                (n,) = struct.unpack_from(">i", data, cursor)
                cursor += 4
                if n < 0:
                    parts.append(None)
                else:
                    parts.append(bytes(data[cursor : cursor + n]))
                    cursor += n
            (n_headers,) = struct.unpack_from(">I", data, cursor)
            cursor += 4
            headers: list[tuple[str, Optional[bytes]]] = []
            for _h in range(n_headers):
                (key_length,) = struct.unpack_from(">H", data, cursor)
                name = bytes(data[cursor + 2 : cursor + 2 + key_length]).decode()
                cursor += 2 + key_length
                (value_length,) = struct.unpack_from(">i", data, cursor)
                cursor += 4
                if value_length < 0:
                    headers.append((name, None))
                else:
                    headers.append((name, bytes(data[cursor : cursor + value_length])))
                    cursor += value_length
            cursor = record_end
            offset = base_offset + offset_delta
            if offset >= from_offset:
                yield Record(topic, partition, offset, base_timestamp + ts_delta, parts[0], parts[1], headers)
        data = whole
        position = batch_end


def last_offset(data: bytes) -> Optional[int]:
    """The offset of the last record of concatenated batches (the next fetch starts after it)."""
    position, last = 0, None
    while position + 12 <= len(data):
        base_offset, batch_length = struct.unpack_from(">QI", data, position)
        (last_delta,) = struct.unpack_from(">I", data, position + 23)
        last = base_offset + last_delta
        position += 12 + batch_length
    return last


# --- partitioning -----------------------------------------------------------------------------------------


def fnv1a_32(data: bytes) -> int:
    """FNV-1a 32, the keyed partitioner of docs/protocol.md (the Rust client's)."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def partition_for_key(key: bytes, n_partitions: int) -> int:
    return fnv1a_32(key) % n_partitions


def now_ms() -> int:
    return int(time.time() * 1000)
