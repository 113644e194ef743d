"""The asyncio API: ``from oxbow.aio import Producer, Consumer, Admin``."""

from .admin import Admin
from .consumer import Consumer, ConsumerConfig, RebalanceListener
from .producer import Producer, ProducerConfig, RecordMetadata

__all__ = ["Admin", "Consumer", "ConsumerConfig", "Producer", "ProducerConfig", "RebalanceListener", "RecordMetadata"]
