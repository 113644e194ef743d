"""TLS and SCRAM logins against a secured broker, and the examples of docs/clients/python.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import msgpack
import pytest

import oxbow

from conftest import CLI_BIN, ROOT, Broker


def test_tls_and_a_scram_login_get_in_and_a_wrong_password_does_not(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    made = subprocess.run([CLI_BIN, "certs", "create", "--dir", str(certs)], capture_output=True)
    assert made.returncode == 0, made.stderr
    (tmp_path / "admin.password").write_text("s3cret-admin\n")
    broker = Broker(
        tmp_path / "secure",
        "127.0.0.1:0",
        {
            "OXBOW__SECURITY__TLS_CERT_FILE": str(certs / "broker.pem"),
            "OXBOW__SECURITY__TLS_KEY_FILE": str(certs / "broker.key"),
            "OXBOW__SECURITY__TLS_CA_FILE": str(certs / "ca.pem"),
            "OXBOW__SECURITY__AUTHENTICATION": "scram",
            "OXBOW__SECURITY__ADMIN_PASSWORD_FILE": str(tmp_path / "admin.password"),
        },
    )
    try:
        security = oxbow.Security(tls_ca_file=str(certs / "ca.pem"), user="admin", password="s3cret-admin")
        with oxbow.Admin(oxbow.ClientConfig(broker.addr, security=security)) as admin:
            admin.create_topic("private", partitions=1, replication_factor=1)
        with oxbow.Producer(oxbow.ProducerConfig(broker.addr, security=security)) as producer:
            assert producer.send_and_wait("private", "over TLS").offset == 0
        with oxbow.Consumer(oxbow.ConsumerConfig(broker.addr, security=security, auto_offset_reset="earliest")) as consumer:
            consumer.assign([("private", 0)])
            assert [r["value"] for r in consumer.to_records(timeout=2.0)] == [b"over TLS"]
        wrong = oxbow.Security(tls_ca_file=str(certs / "ca.pem"), user="admin", password="guess")
        with pytest.raises(oxbow.AuthenticationFailed):
            with oxbow.Admin(oxbow.ClientConfig(broker.addr, security=wrong, request_timeout=5.0)) as admin:
                admin.list_topics()
        # Without the login the broker answers nothing but ApiVersions and Authenticate.
        anonymous = oxbow.Security(tls_ca_file=str(certs / "ca.pem"))
        with pytest.raises(oxbow.BrokerError) as refused:
            with oxbow.Admin(oxbow.ClientConfig(broker.addr, security=anonymous, request_timeout=5.0)) as admin:
                admin.list_topics()
        assert refused.value.name == "ILLEGAL_SASL_STATE"
    finally:
        broker.stop()


def test_the_bookings_example_reads_rows(broker: Broker) -> None:
    import sys

    sys.path.insert(0, str(ROOT / "clients" / "python" / "examples"))
    from bookings_rows import booking_rows

    with oxbow.Producer(oxbow.ProducerConfig(broker.addr)) as producer:
        with oxbow.Admin(oxbow.ClientConfig(broker.addr)) as admin:
            admin.create_topic("bookings", partitions=3, replication_factor=1)
        for n, city in enumerate(["Pune", "Delhi", "Pune"]):
            event = {"booking_id": f"b{n}", "patient_name": "P", "email": "p@example.com", "city": city,
                     "test_type": "thyroid", "date": "2027-01-01", "requested_at_ms": 1, "idempotency_key": None}
            producer.send("bookings", msgpack.packb(event), key=f"b{n}").result(10)
    rows = booking_rows(oxbow.ConsumerConfig(broker.addr, auto_offset_reset="earliest"))
    assert sorted((r["booking_id"], r["city"]) for r in rows) == [("b0", "Pune"), ("b1", "Delhi"), ("b2", "Pune")]
    assert all({"partition", "offset"} <= set(r) for r in rows)


def test_the_quick_start_in_the_docs_runs(broker: Broker) -> None:
    """Every ```python block of docs/clients/python.md, in order, against a real broker."""
    doc = (ROOT / "docs" / "clients" / "python.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert blocks, "the guide has Python examples"
    scope: dict[str, object] = {}
    for block in blocks:
        exec(compile(block.replace("127.0.0.1:9092", broker.addr), "docs/clients/python.md", "exec"), scope)
