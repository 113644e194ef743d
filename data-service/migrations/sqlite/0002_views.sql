-- Analytics views (SQLite has no percentile functions: latency percentiles come from the HTTP API).
CREATE VIEW bookings_per_day AS
    SELECT date, COUNT(*) AS bookings FROM bookings GROUP BY date;
CREATE VIEW bookings_per_test_type AS
    SELECT test_type, COUNT(*) AS bookings FROM bookings GROUP BY test_type;
CREATE VIEW bookings_per_city AS
    SELECT city, COUNT(*) AS bookings FROM bookings GROUP BY city;
CREATE VIEW lab_utilization AS
    SELECT lab_name, date, COUNT(*) AS confirmed FROM assignments WHERE status = 'confirmed' GROUP BY lab_name, date;
CREATE VIEW rejection_rate AS
    SELECT COUNT(*) AS decisions,
           SUM(CASE WHEN status = 'rejected' THEN 1 ELSE 0 END) AS rejected,
           CASE WHEN COUNT(*) = 0 THEN 0.0
                ELSE CAST(SUM(CASE WHEN status = 'rejected' THEN 1 ELSE 0 END) AS REAL) / COUNT(*) END AS rate
    FROM assignments;
