"""Errors: every broker error code as an exception carrying the code (docs/protocol.md, "Error codes")."""

from __future__ import annotations

#: code -> (name, retriable, meaning), as docs/protocol.md lists them.
CODES: dict[int, tuple[str, bool, str]] = {
    0: ('NONE', False, 'no error'),
    1: ('UNKNOWN_SERVER_ERROR', False, 'an unexpected error on the broker; see its log'),
    2: ('CORRUPT_MESSAGE', False, 'a record batch failed its CRC-32C or is malformed'),
    3: ('UNKNOWN_TOPIC_OR_PARTITION', False, 'the topic or partition does not exist on this broker'),
    4: ('OFFSET_OUT_OF_RANGE', False, 'the requested offset is below the log start or above the log end'),
    5: ('INVALID_TOPIC_NAME', False, "topic names are 1-249 characters of [a-zA-Z0-9._-], not starting with '.'"),
    6: ('TOPIC_ALREADY_EXISTS', False, 'a topic with this name already exists'),
    7: ('INVALID_PARTITIONS', False, 'the partition count is out of range (1..=partitions_max)'),
    8: ('INVALID_REPLICATION_FACTOR', False, 'the replication factor is larger than the number of brokers or below 1'),
    9: ('INVALID_CONFIG', False, 'an unknown topic config key or an invalid value'),
    10: ('RECORD_BATCH_TOO_LARGE', False, 'a record batch is larger than max.message.bytes'),
    11: ('INVALID_REQUEST', False, 'the request body could not be decoded or is inconsistent'),
    12: ('UNSUPPORTED_VERSION', False, 'the broker does not support this version of the API'),
    13: ('UNKNOWN_API', False, 'the broker does not know this API key'),
    14: ('REQUEST_TIMED_OUT', True, 'the request did not complete within its timeout'),
    15: ('NOT_LEADER_OR_FOLLOWER', True, 'this broker is not the leader of the partition; refresh metadata'),
    16: ('NOT_ENOUGH_REPLICAS', True, 'fewer in-sync replicas than min.insync.replicas'),
    17: ('STORAGE_ERROR', True, 'the broker could not read or write its disk (for example, the disk is full)'),
    18: ('BROKER_SHUTTING_DOWN', True, 'the broker is shutting down'),
    19: ('INVALID_REQUIRED_ACKS', False, 'acks must be 0, 1 or -1 (all)'),
    20: ('FRAME_TOO_LARGE', False, "the frame is larger than the broker's frame limit; the connection is closed"),
    22: ('INVALID_RECORD', False, 'a record is not acceptable for this topic'),
    23: ('COORDINATOR_NOT_AVAILABLE', True, 'the group coordinator is not available yet'),
    24: ('NOT_COORDINATOR', True, 'this broker does not coordinate the group; find the coordinator again'),
    25: ('INVALID_GROUP_ID', False, 'group ids are 1-249 characters of [a-zA-Z0-9._-]'),
    26: ('UNKNOWN_MEMBER_ID', False, 'the member is not in the group (it left or its session timed out); rejoin'),
    27: ('ILLEGAL_GENERATION', False, "the member's generation is stale or it does not hold the partition"),
    28: ('REBALANCE_IN_PROGRESS', False, "the member's assignment changed; sync to learn it"),
    29: ('FENCED_INSTANCE_ID', False, 'another member took over this static instance id'),
    30: ('GROUP_NOT_EMPTY', False, 'the group has active members'),
    31: ('INVALID_SESSION_TIMEOUT', False, "the session timeout is outside the broker's allowed range"),
    32: ('INCONSISTENT_GROUP_PROTOCOL', False, "the assignment strategy differs from the group's or is unknown"),
    33: ('NOT_CONTROLLER', True, 'this broker is not the active controller; ask the controller leader'),
    34: ('FENCED_LEADER_EPOCH', True, "the leader epoch in the request is older than the partition's; refresh metadata"),
    35: ('UNKNOWN_LEADER_EPOCH', True, 'the leader epoch in the request is newer than this broker knows yet'),
    36: ('NOT_ENOUGH_REPLICAS_AFTER_APPEND', True, 'written to the leader, but the in-sync set shrank below min.insync.replicas before it was replicated'),
    37: ('OUT_OF_ORDER_SEQUENCE_NUMBER', False, "the producer's sequence number skips ahead of the last one the partition stored"),
    38: ('DUPLICATE_SEQUENCE_NUMBER', False, 'the sequence number is older than the batches the partition remembers'),
    39: ('UNKNOWN_PRODUCER_ID', False, 'the partition has no state for this producer id and the batch does not start at sequence 0; the producer starts over with a new id'),
    40: ('INVALID_PRODUCER_EPOCH', False, "the producer epoch is older than the partition's; the producer was fenced"),
    41: ('BROKER_NOT_AVAILABLE', True, 'the broker is fenced or not registered with the controller yet'),
    42: ('OFFSET_NOT_AVAILABLE', True, "the partition's leader was just elected and does not know its high watermark yet; retry"),
    43: ('SASL_AUTHENTICATION_FAILED', False, 'authentication failed: unknown user, wrong password, or a malformed exchange; the connection is closed'),
    44: ('UNSUPPORTED_SASL_MECHANISM', False, 'the broker does not offer this authentication mechanism (it offers SCRAM-SHA-256)'),
    45: ('ILLEGAL_SASL_STATE', False, 'the request is not allowed before the connection has authenticated (or Authenticate came out of order)'),
    46: ('TOPIC_AUTHORIZATION_FAILED', False, 'the principal has no ACL allowing this operation on the topic'),
    47: ('GROUP_AUTHORIZATION_FAILED', False, 'the principal has no ACL allowing this operation on the group'),
    48: ('CLUSTER_AUTHORIZATION_FAILED', False, 'the principal may not perform this cluster operation (broker-to-broker APIs need a broker principal)'),}

#: name -> code, e.g. ``ERROR_CODES["NOT_LEADER_OR_FOLLOWER"] == 15``.
ERROR_CODES: dict[str, int] = {name: code for code, (name, _, _) in CODES.items()}


class OxbowError(Exception):
    """Anything this client raises."""

    retriable = False


class BrokerError(OxbowError):
    """An error code from a broker. ``code`` is the protocol's number, ``name`` its upper-case name."""

    def __init__(self, code: int, message: str | None = None) -> None:
        self.code = code
        self.name, self.retriable, meaning = CODES.get(code, ("UNKNOWN_CODE", False, "an error code unknown to this client"))
        self.message = message or meaning
        super().__init__(f"{self.name} ({code}): {self.message}")


class CorruptRecords(OxbowError):
    """A fetched batch that cannot be read: a CRC mismatch, records that do not parse, or a codec this Python
    lacks the package for (the message names it). Polling again reads the same bytes, so it is raised."""


class ConnectionLost(OxbowError):
    """The connection failed or closed; the request may or may not have been handled."""

    retriable = True


class RequestTimeout(OxbowError):
    """No answer within the deadline."""

    retriable = True


class UnknownOutcome(OxbowError):
    """A send that may have been stored all the same (sent, but never acknowledged)."""

    def __init__(self, cause: Exception) -> None:
        self.cause = cause
        super().__init__(f"the outcome is unknown: {cause}")


class AuthenticationFailed(OxbowError):
    """The login failed: wrong password, unknown user, or a broker that could not prove it knows the user."""


def check(code: int, message: str | None = None) -> None:
    """Raises BrokerError unless ``code`` is 0."""
    if code:
        raise BrokerError(code, message)
