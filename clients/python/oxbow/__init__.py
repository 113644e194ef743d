"""Oxbow's Python client: pure Python on msgpack, written from docs/protocol.md.

Blocking API (this module)::

    from oxbow import Producer, ProducerConfig, Consumer, ConsumerConfig, Admin, ClientConfig

asyncio API: ``oxbow.aio``. Errors: ``oxbow.errors`` (``BrokerError.code`` is the protocol's error code).
"""

from .cluster import ClientConfig
from .connection import Security
from .consumer import ConsumerConfig, RebalanceListener
from .errors import ERROR_CODES, AuthenticationFailed, BrokerError, ConnectionLost, CorruptRecords, OxbowError, RequestTimeout, UnknownOutcome
from .producer import ProducerConfig, RecordMetadata
from .protocol import EARLIEST, LATEST, Record, partition_for_key
from .sync import Admin, Consumer, Producer

__version__ = "0.1.0"

__all__ = [
    "Admin",
    "AuthenticationFailed",
    "BrokerError",
    "ClientConfig",
    "ConnectionLost",
    "CorruptRecords",
    "Consumer",
    "ConsumerConfig",
    "EARLIEST",
    "ERROR_CODES",
    "LATEST",
    "OxbowError",
    "Producer",
    "ProducerConfig",
    "RebalanceListener",
    "Record",
    "RecordMetadata",
    "RequestTimeout",
    "Security",
    "UnknownOutcome",
    "partition_for_key",
]
