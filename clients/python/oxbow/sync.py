"""The blocking API: the asyncio clients run on one background event-loop thread; every call waits for its
answer (with the client's deadlines, so none waits forever)."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from typing import Any, Callable, Coroutine, Iterator, Optional, TypeVar

from . import admin as _admin
from . import consumer as _consumer
from . import producer as _producer
from .errors import OxbowError
from .protocol import Record

T = TypeVar("T")

_loop: Optional[asyncio.AbstractEventLoop] = None
_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="oxbow-client", daemon=True).start()
            _loop = loop
        return _loop


def _run(coroutine: Coroutine[Any, Any, T], timeout: Optional[float] = None) -> T:
    return asyncio.run_coroutine_threadsafe(coroutine, _background_loop()).result(timeout)


async def _make(factory: Callable[[], T]) -> T:
    return factory()  # asyncio objects are made on the loop that uses them


class Producer:
    """``Producer(ProducerConfig("localhost:9092"))``; ``send`` returns a ``concurrent.futures.Future`` at once:
    records are handed to the event-loop thread in the order sent, without waiting for it."""

    def __init__(self, config: _producer.ProducerConfig) -> None:
        self.config = config
        self._aio = _run(_make(lambda: _producer.Producer(config)))
        self._queue: collections.deque[tuple[str, Any, dict[str, Any], concurrent.futures.Future[Any]]] = collections.deque()
        self._room = threading.Condition()
        self._draining = False
        #: Records sent but not yet handed to the asyncio producer (queued, or being handed over).
        self._unsent = 0

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, topic: str, value: Any = None, **kwargs: Any) -> "concurrent.futures.Future[_producer.RecordMetadata]":
        result: concurrent.futures.Future[_producer.RecordMetadata] = concurrent.futures.Future()
        with self._room:
            if not self._room.wait_for(lambda: self._unsent < self.config.buffer_records, self.config.max_block):
                raise OxbowError(f"the producer's buffer stayed full for {self.config.max_block} s")
            self._queue.append((topic, value, kwargs, result))
            self._unsent += 1
            start = not self._draining
            self._draining = True
        if start:
            _background_loop().call_soon_threadsafe(lambda: asyncio.ensure_future(self._drain()))
        return result

    async def _drain(self) -> None:
        """Hands queued records to the asyncio producer, in order, on the loop thread."""
        while True:
            with self._room:
                if not self._queue:
                    self._draining = False
                    return
                topic, value, kwargs, result = self._queue.popleft()
            try:
                pending = await self._aio.send(topic, value, **kwargs)
            except Exception as error:  # refused before it was queued
                result.set_exception(error)
                continue
            finally:
                with self._room:
                    self._unsent -= 1
                    self._room.notify_all()

            def settle(done: "asyncio.Future[_producer.RecordMetadata]", result: concurrent.futures.Future[Any] = result) -> None:
                error = done.exception()
                if error is not None:
                    result.set_exception(error)
                else:
                    result.set_result(done.result())

            pending.add_done_callback(settle)

    def send_and_wait(self, topic: str, value: Any = None, **kwargs: Any) -> _producer.RecordMetadata:
        return self.send(topic, value, **kwargs).result(self.config.max_block + self.config.delivery_timeout + 5)

    def flush(self) -> None:
        with self._room:
            if not self._room.wait_for(lambda: self._unsent == 0, self.config.max_block):
                raise OxbowError(f"records still queued after {self.config.max_block} s")
        _run(self._aio.flush())

    def close(self) -> None:
        self.flush()
        _run(self._aio.close())


class Consumer:
    """``Consumer(ConsumerConfig("localhost:9092", group_id="g"))``; then ``subscribe`` or ``assign``."""

    def __init__(self, config: _consumer.ConsumerConfig, listener: Optional[_consumer.RebalanceListener] = None) -> None:
        self.config = config
        self._aio = _run(_make(lambda: _consumer.Consumer(config, listener)))

    def __enter__(self) -> "Consumer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def subscribe(self, topics: list[str]) -> None:
        _run(self._aio.subscribe(topics))

    def assign(self, partitions: list[tuple[str, int]]) -> None:
        _run(_make(lambda: self._aio.assign(partitions)))

    def assign_topic(self, topic: str) -> None:
        _run(self._aio.assign_topic(topic))

    def assignment(self) -> list[tuple[str, int]]:
        return _run(_make(self._aio.assignment))

    def seek(self, topic: str, partition: int, offset: int) -> None:
        _run(_make(lambda: self._aio.seek(topic, partition, offset)))

    def position(self, topic: str, partition: int) -> Optional[int]:
        return _run(_make(lambda: self._aio.position(topic, partition)))

    def poll(self, timeout: float = 1.0) -> list[Record]:
        return _run(self._aio.poll(timeout))

    def commit(self) -> None:
        _run(self._aio.commit())

    def commit_async(self) -> "concurrent.futures.Future[None]":
        return asyncio.run_coroutine_threadsafe(self._aio.commit(), _background_loop())

    def list_offset(self, topic: str, partition: int, timestamp: int) -> int:
        return _run(self._aio.list_offset(topic, partition, timestamp))

    def records(self, timeout: float = 1.0) -> Iterator[dict[str, Any]]:
        """Records as dicts (topic, partition, offset, timestamp, key, value, headers) until a poll of
        ``timeout`` returns nothing (caught up)."""
        while True:
            batch = self.poll(timeout)
            if not batch:
                return
            for record in batch:
                yield record.to_dict()

    def to_records(self, timeout: float = 1.0, max_records: Optional[int] = None) -> list[dict[str, Any]]:
        """The records up to where the log ends now (or ``max_records`` of them), as a list of dicts: rows
        ready for ``pandas.DataFrame(rows)`` or any table."""
        rows: list[dict[str, Any]] = []
        for row in self.records(timeout):
            rows.append(row)
            if max_records is not None and len(rows) >= max_records:
                break
        return rows

    def close(self) -> None:
        _run(self._aio.close())


class Admin:
    def __init__(self, config: _admin.ClientConfig) -> None:
        self.config = config
        self._aio = _run(_make(lambda: _admin.Admin(config)))

    def __enter__(self) -> "Admin":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._aio, name)
        return lambda *args, **kwargs: _run(method(*args, **kwargs))

    def close(self) -> None:
        _run(self._aio.close())
