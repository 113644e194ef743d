-- DataService: one row per booking and per lab decision, and the next offset to apply per partition,
-- written in the same transaction as the rows.
CREATE TABLE bookings (
    booking_id TEXT PRIMARY KEY,
    patient_name TEXT NOT NULL,
    email TEXT NOT NULL,
    city TEXT NOT NULL,
    test_type TEXT NOT NULL,
    date TEXT NOT NULL,
    requested_at_ms BIGINT NOT NULL
);

CREATE TABLE assignments (
    booking_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    lab_id BIGINT,
    lab_name TEXT,
    reason TEXT,
    city TEXT NOT NULL,
    test_type TEXT NOT NULL,
    date TEXT NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    decided_at_ms BIGINT NOT NULL
);

CREATE TABLE consumed_offsets (
    topic TEXT NOT NULL,
    partition_id BIGINT NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition_id)
);
