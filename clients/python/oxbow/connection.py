"""One connection to one broker (asyncio): pipelined requests matched by correlation id, a deadline on every
wait, optional TLS, and a SCRAM-SHA-256 login (RFC 5802 / RFC 7677) that checks the broker's signature."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import struct
from dataclasses import dataclass
from typing import Any, Optional

from . import protocol
from .errors import AuthenticationFailed, BrokerError, ConnectionLost, OxbowError, RequestTimeout

#: Responses larger than this are refused (the broker's own frame limit is 64 MiB by default).
MAX_RESPONSE_BYTES = 256 * 1024 * 1024


@dataclass
class Security:
    """How to reach a secured broker: TLS (a CA file to trust; ``server_hostname`` when it differs from the
    address) and a SCRAM-SHA-256 login."""

    tls_ca_file: Optional[str] = None
    tls: bool = False
    server_hostname: Optional[str] = None
    user: Optional[str] = None
    password: Optional[str] = None

    def ssl_context(self) -> Optional[ssl.SSLContext]:
        if not (self.tls or self.tls_ca_file):
            return None
        context = ssl.create_default_context(cafile=self.tls_ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


class Connection:
    """Use :meth:`open`; then :meth:`call` from any task of the same event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str, client_id: str) -> None:
        self.address = address
        self.client_id = client_id
        self._reader = reader
        self._writer = writer
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[tuple[int, Any]]] = {}
        self._closed: Optional[Exception] = None
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())
        self.principal: Optional[str] = None

    @classmethod
    async def open(cls, address: str, client_id: str = "oxbow-python", security: Optional[Security] = None, timeout: float = 10.0) -> "Connection":
        host, _, port = address.rpartition(":")
        security = security or Security()
        context = security.ssl_context()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host,
                    int(port),
                    ssl=context,
                    server_hostname=(security.server_hostname or host) if context else None,
                ),
                timeout,
            )
        except asyncio.TimeoutError as error:
            raise RequestTimeout(f"cannot connect to {address} within {timeout} s") from error
        except (OSError, ssl.SSLError) as error:
            raise ConnectionLost(f"cannot connect to {address}: {error}") from error
        connection = cls(reader, writer, address, client_id)
        if security.user is not None:
            try:
                await connection.authenticate(security.user, security.password or "", timeout)
            except BaseException:
                connection.close()
                raise
        return connection

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def close(self) -> None:
        if self._closed is None:
            self._fail(ConnectionLost(f"connection to {self.address} closed"))
        self._writer.close()
        self._read_task.cancel()

    def _fail(self, error: Exception) -> None:
        self._closed = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def _read_loop(self) -> None:
        try:
            while True:
                (length,) = struct.unpack(">I", await self._reader.readexactly(4))
                if length > MAX_RESPONSE_BYTES:
                    raise OxbowError(f"a response of {length} bytes from {self.address} is over the limit")
                payload = await self._reader.readexactly(length)
                correlation_id, error_code, body = protocol.decode_response(payload)
                future = self._pending.pop(correlation_id, None)
                if future is not None and not future.done():
                    future.set_result((error_code, body))
        except asyncio.CancelledError:
            pass
        except (asyncio.IncompleteReadError, OSError, ssl.SSLError) as error:
            self._fail(ConnectionLost(f"connection to {self.address} lost: {error or 'closed by the broker'}"))
        except Exception as error:  # a malformed response: nothing more on this stream can be trusted
            self._fail(ConnectionLost(f"connection to {self.address} failed: {error}"))
            self._writer.close()

    async def call(self, api_key: int, body: dict[str, Any], timeout: float = 30.0, expect_response: bool = True) -> Any:
        """Sends a request and returns its body; raises BrokerError for a whole-request error."""
        if self._closed is not None:
            raise self._closed
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        correlation_id = self._next_id
        frame = protocol.encode_request(api_key, correlation_id, self.client_id, body)
        future: asyncio.Future[tuple[int, Any]] = asyncio.get_running_loop().create_future()
        if expect_response:
            self._pending[correlation_id] = future
        try:
            self._writer.write(frame)
            await asyncio.wait_for(self._writer.drain(), timeout)
        except (OSError, ssl.SSLError) as error:
            self._pending.pop(correlation_id, None)
            self._fail(ConnectionLost(f"connection to {self.address} lost: {error}"))
            raise self._closed from error  # type: ignore[misc]
        except asyncio.TimeoutError as error:
            self._pending.pop(correlation_id, None)
            raise RequestTimeout(f"{self.address} did not take the request within {timeout} s") from error
        if not expect_response:
            return None
        try:
            error_code, response = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError as error:
            self._pending.pop(correlation_id, None)
            raise RequestTimeout(f"no response from {self.address} within {timeout} s") from error
        if error_code:
            message = response.get("message") if isinstance(response, dict) else None
            raise BrokerError(error_code, message)
        return response

    async def authenticate(self, user: str, password: str, timeout: float = 10.0) -> str:
        """Logs in with SCRAM-SHA-256 and returns the principal; checks the broker's server signature."""
        client_nonce = base64.b64encode(os.urandom(18)).decode()
        bare = f"n={_saslname(user)},r={client_nonce}"
        first = await self.call(
            protocol.Api.AUTHENTICATE, {"mechanism": "SCRAM-SHA-256", "auth_bytes": f"n,,{bare}".encode()}, timeout
        )
        server_first = bytes(first["auth_bytes"]).decode()
        fields = dict(part.split("=", 1) for part in server_first.split(","))
        nonce, salt, iterations = fields["r"], base64.b64decode(fields["s"]), int(fields["i"])
        if not nonce.startswith(client_nonce):
            raise AuthenticationFailed("the broker's nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        final = f"{without_proof},p={base64.b64encode(proof).decode()}"
        try:
            answer = await self.call(protocol.Api.AUTHENTICATE, {"mechanism": "SCRAM-SHA-256", "auth_bytes": final.encode()}, timeout)
        except BrokerError as error:
            raise AuthenticationFailed(f"login as {user!r} refused: {error}") from error
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        expected = base64.b64encode(hmac.new(server_key, auth_message, hashlib.sha256).digest()).decode()
        if bytes(answer["auth_bytes"]).decode() != f"v={expected}":
            raise AuthenticationFailed("the broker's signature is wrong: it does not hold this user's credential")
        self.principal = answer.get("principal")
        return self.principal or f"User:{user}"


def _saslname(user: str) -> str:
    return user.replace("=", "=3D").replace(",", "=2C")
