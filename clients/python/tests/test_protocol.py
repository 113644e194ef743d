"""The wire format against docs/protocol.md's examples, byte for byte, and the error table against the broker's."""

from __future__ import annotations

import re
from pathlib import Path

import msgpack

from oxbow import errors, protocol

DOC = (Path(__file__).resolve().parents[3] / "docs" / "protocol.md").read_text()


def example(marker: str) -> bytes:
    block = DOC.split(f"<!-- {marker} -->", 1)[1].split("```hex", 1)[1].split("```", 1)[0]
    return bytes.fromhex(" ".join(block.split()))


def test_the_metadata_request_example_encodes_to_the_documented_bytes() -> None:
    assert protocol.encode_request(protocol.Api.METADATA, 7, "cli", {"topics": ["orders"]}) == example("frame: metadata-request")


def test_the_metadata_response_and_error_examples_decode() -> None:
    frame = example("frame: metadata-response")
    correlation_id, code, body = protocol.decode_response(frame[4:])
    assert (correlation_id, code) == (7, 0)
    assert body["brokers"] == [{"node_id": 1, "host": "127.0.0.1", "port": 9092}]
    assert body["topics"][0]["partitions"][0]["leader"] == 1
    correlation_id, code, body = protocol.decode_response(example("frame: error-response")[4:])
    assert (correlation_id, code, body) == (8, 13, {"message": "unknown API key 99"})


def test_the_batch_example_is_what_this_client_encodes_and_decodes() -> None:
    documented = example("batch: one-record")
    assert protocol.encode_batch([(b"k", b"hi", [], 1700000000000)]) == documented
    [record] = protocol.decode_batches("t", 0, documented)
    assert (record.offset, record.key, record.value, record.timestamp, record.headers) == (0, b"k", b"hi", 1700000000000, [])


def test_batches_round_trip_with_headers_nulls_and_large_values() -> None:
    records = [
        (None, b"", [("h", b"v"), ("null", None)], 1000),
        ("κλειδί".encode(), "värde ✓".encode(), [], 1001),
        (b"big", bytes(range(256)) * 4096, [], 999),
        (b"tomb", None, [], 1002),
    ]
    data = protocol.encode_batch(records, producer_id=7, producer_epoch=0, base_sequence=3)
    decoded = list(protocol.decode_batches("t", 0, data))
    assert [(r.key, r.value, r.headers, r.timestamp) for r in decoded] == records
    assert protocol.last_offset(data) == 3
    corrupt = bytearray(data)
    corrupt[-1] ^= 1
    try:
        list(protocol.decode_batches("t", 0, bytes(corrupt)))
    except errors.OxbowError as error:
        assert "CRC" in str(error)
    else:
        raise AssertionError("a corrupt batch must be refused")


def test_partitioning_is_fnv1a_like_the_rust_client() -> None:
    # FNV-1a 32 reference values.
    assert protocol.fnv1a_32(b"") == 0x811C9DC5
    assert protocol.fnv1a_32(b"a") == 0xE40C292C
    assert protocol.fnv1a_32(b"foobar") == 0xBF9CF968


def test_the_error_table_matches_the_documented_one() -> None:
    documented = dict(
        (int(code), (name, retriable == "yes"))
        for code, name, retriable in re.findall(r"^\| (\d+) \| ([A-Z_]+) \| (yes|no|retired) \|", DOC, re.M)
        if retriable != "retired"
    )
    assert {code: (name, retriable) for code, (name, retriable, _) in errors.CODES.items()} == documented
    error = errors.BrokerError(15)
    assert (error.code, error.name, error.retriable) == (15, "NOT_LEADER_OR_FOLLOWER", True)


def test_maps_use_bin_for_bytes() -> None:
    frame = protocol.encode_request(8, 9, "cli", {"mechanism": "SCRAM-SHA-256", "auth_bytes": b"n,,n=alice,r=abc"})
    assert frame == example("frame: authenticate-request")
    assert msgpack.unpackb(frame[4 + 2 + 2 + 4 + 2 + 3 :], raw=False)["auth_bytes"] == b"n,,n=alice,r=abc"
