-- LabService: the lab catalog, per-day usage (capacity enforced by a CHECK) and one allocation per booking.
CREATE TABLE labs (
    id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    city TEXT NOT NULL,
    address TEXT NOT NULL,
    daily_capacity BIGINT NOT NULL CHECK (daily_capacity >= 0)
);

CREATE TABLE lab_tests (
    lab_id BIGINT NOT NULL REFERENCES labs (id),
    test_type TEXT NOT NULL,
    PRIMARY KEY (lab_id, test_type)
);

CREATE TABLE lab_day_usage (
    lab_id BIGINT NOT NULL REFERENCES labs (id),
    date TEXT NOT NULL,
    used BIGINT NOT NULL,
    capacity BIGINT NOT NULL,
    PRIMARY KEY (lab_id, date),
    CHECK (used >= 0 AND used <= capacity)
);

CREATE TABLE allocations (
    booking_id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('confirmed', 'rejected')),
    lab_id BIGINT REFERENCES labs (id),
    reason TEXT,
    city TEXT NOT NULL,
    test_type TEXT NOT NULL,
    date TEXT NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    decided_at_ms BIGINT NOT NULL
);
