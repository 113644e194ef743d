"""Real brokers for the tests: the Rust `oxbow-broker` and `oxbow` binaries of this repository
(OXBOW_BROKER_BIN / OXBOW_CLI_BIN, else target/debug; `cargo build --bins` makes them)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "clients" / "python"))

BROKER_BIN = os.environ.get("OXBOW_BROKER_BIN", str(ROOT / "target" / "debug" / "oxbow-broker"))
CLI_BIN = os.environ.get("OXBOW_CLI_BIN", str(ROOT / "target" / "debug" / "oxbow"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, data_dir: Path, listen: str, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.listen = listen
        self.env = env
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.addr = ""
        self.start()

    def start(self) -> None:
        assert Path(BROKER_BIN).exists(), f"{BROKER_BIN} is missing: run `cargo build --bins` first"
        log = open(self.data_dir.with_suffix(".log"), "ab")
        self.process = subprocess.Popen(
            [BROKER_BIN, "--data-dir", str(self.data_dir), "--listen", self.listen],
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "RUST_LOG": "warn", **self.env},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        assert "listening on" in line, f"the broker did not start: {line!r}\n{self.log()}"
        self.addr = line.rsplit(" ", 1)[1].strip()
        self.listen = self.addr

    def log(self) -> str:
        return self.data_dir.with_suffix(".log").read_text(errors="replace") if self.data_dir.with_suffix(".log").exists() else ""

    def kill9(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    one = Broker(tmp_path / "broker", "127.0.0.1:0", {})
    yield one
    one.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Broker]]:
    """Three brokers: replication factor 3 by default, min.insync.replicas 2, short sessions."""
    ports = [free_port() for _ in range(3)]
    controllers = ",".join(f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(ports))
    brokers = []
    for i, port in enumerate(ports):
        env = {
            "OXBOW__NODE_ID": str(i + 1),
            "OXBOW__CLUSTER__SECRET_FILE": str(tmp_path / "cluster.secret"),
            "OXBOW__CLUSTER__CONTROLLERS": controllers,
            "OXBOW__CLUSTER__HEARTBEAT_INTERVAL_MS": "250",
            "OXBOW__CLUSTER__SESSION_TIMEOUT_MS": "3000",
            "OXBOW__CLUSTER__ELECTION_TIMEOUT_MS": "800",
            "OXBOW__CLUSTER__DEFAULT_REPLICATION_FACTOR": "3",
            "OXBOW__LOG__MIN_INSYNC_REPLICAS": "2",
        }
        brokers.append(Broker(tmp_path / f"broker-{i + 1}", f"127.0.0.1:{port}", env))
    yield brokers
    for one in brokers:
        one.stop()


def cli(bootstrap: str, *args: str, stdin: Optional[bytes] = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([CLI_BIN, "--bootstrap-server", bootstrap, *args], input=stdin, capture_output=True, timeout=timeout)


def eventually(what: str, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
