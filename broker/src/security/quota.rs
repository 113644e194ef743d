//! Byte-rate quotas per principal: a token bucket per principal and direction (produce, fetch). Over its
//! rate a principal is throttled, never disconnected: its answer is held back for the time that brings it
//! back to the rate, and says how long (`throttle_time_ms`). Pure: time comes in as an argument.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Principal;

/// Longest a single answer is held back.
pub const THROTTLE_MAX: Duration = Duration::from_secs(30);

/// One principal's bucket: up to one second of its rate banked, spent by each request's bytes (it may go
/// into debt; the debt is the throttle).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Bytes available; negative while in debt.
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(now: Instant, rate_bytes_per_s: u64) -> Bucket {
        Bucket { tokens: rate_bytes_per_s as f64, last: now }
    }

    /// Spends `bytes` at `now` and returns how long the answer must wait (zero while within the rate).
    pub fn spend(&mut self, now: Instant, bytes: u64, rate_bytes_per_s: u64) -> Duration {
        let rate = rate_bytes_per_s as f64;
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate).min(THROTTLE_MAX)
        }
    }
}

/// The produce and fetch buckets of every principal seen on this broker. Brokers are never throttled.
pub struct Quotas {
    produce_bytes_per_s: u64,
    fetch_bytes_per_s: u64,
    produce: Mutex<HashMap<Principal, Bucket>>,
    fetch: Mutex<HashMap<Principal, Bucket>>,
}

impl Quotas {
    /// A rate of 0 means no quota.
    pub fn new(produce_bytes_per_s: u64, fetch_bytes_per_s: u64) -> Quotas {
        Quotas { produce_bytes_per_s, fetch_bytes_per_s, produce: Mutex::default(), fetch: Mutex::default() }
    }

    pub fn produce(&self, principal: &Principal, bytes: u64) -> Duration {
        spend(&self.produce, self.produce_bytes_per_s, principal, bytes)
    }

    pub fn fetch(&self, principal: &Principal, bytes: u64) -> Duration {
        spend(&self.fetch, self.fetch_bytes_per_s, principal, bytes)
    }
}

/// Holds an answer back for `throttle`; within the rate (zero) it returns at once. Not `sleep(throttle)`
/// for every answer: tokio's timer rounds a deadline up to its next millisecond tick, so even a zero sleep
/// would hold each answer back up to a millisecond (it did: produce round trips of 1.4 ms on loopback).
pub async fn hold_back(throttle: Duration) {
    if !throttle.is_zero() {
        tokio::time::sleep(throttle).await;
    }
}

fn spend(buckets: &Mutex<HashMap<Principal, Bucket>>, rate: u64, principal: &Principal, bytes: u64) -> Duration {
    if rate == 0 || matches!(principal, Principal::Broker(_)) {
        return Duration::ZERO;
    }
    let now = Instant::now();
    let mut buckets = buckets.lock().expect("quota lock");
    buckets.entry(principal.clone()).or_insert_with(|| Bucket::new(now, rate)).spend(now, bytes, rate)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn within_the_rate_nothing_waits_and_over_it_the_debt_is_the_wait() {
        let start = Instant::now();
        let mut bucket = Bucket::new(start, 1000);
        assert_eq!(bucket.spend(start, 1000, 1000), Duration::ZERO, "one second banked");
        assert_eq!(bucket.spend(start, 500, 1000), Duration::from_millis(500));
        // Half a second later the debt is paid.
        assert_eq!(bucket.spend(start + Duration::from_millis(500), 0, 1000), Duration::ZERO);
        assert_eq!(bucket.spend(start + Duration::from_secs(10), 100_000_000, 1000), THROTTLE_MAX);
    }

    #[test]
    fn an_answer_within_the_rate_is_not_held_for_a_timer_tick() {
        use futures_util::FutureExt;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            assert!(hold_back(Duration::ZERO).now_or_never().is_some(), "no throttle: ready on the first poll");
            assert!(hold_back(Duration::from_millis(1)).now_or_never().is_none(), "a throttle waits");
        });
    }

    proptest! {
        /// A client that waits out every throttle it is given never gets more than its rate over time
        /// (plus the one second banked at the start).
        #[test]
        fn a_client_that_honours_its_throttles_stays_within_the_rate(
            rate in 1_000u64..1_000_000,
            requests in proptest::collection::vec((0u64..200_000, 0u64..50), 1..200),
        ) {
            let start = Instant::now();
            let mut bucket = Bucket::new(start, rate);
            let mut now = start;
            let mut sent = 0u64;
            for (bytes, pause_ms) in requests {
                now += Duration::from_millis(pause_ms);
                sent += bytes;
                let wait = bucket.spend(now, bytes, rate);
                prop_assert!(wait <= THROTTLE_MAX);
                if wait == THROTTLE_MAX {
                    return Ok(());
                }
                now += wait;
                let allowed = rate as f64 * (1.0 + now.duration_since(start).as_secs_f64());
                prop_assert!(sent as f64 <= allowed + 1.0, "sent {sent} > allowed {allowed}");
            }
        }
    }
}
