//! The learning platform's traffic as a deterministic synthetic workload: questions, chat, reactions,
//! submissions, page views, orders, device and location updates, keyed by learner, JSON with learner-written
//! text, in the proportions and sizes the platform sees. Used by `oxbow perf --workload learner-activity`
//! and the compression benchmarks, so their figures describe the same data.

/// (kind, weight, min bytes, max bytes) of the learner-activity mix.
pub const LEARNER_EVENTS: &[(&str, u64, usize, usize)] = &[
    ("question", 8, 200, 600),
    ("chat_message", 25, 60, 300),
    ("reaction", 20, 40, 80),
    ("problem_submission", 6, 500, 4000),
    ("dashboard_view", 14, 80, 160),
    ("leaderboard_view", 8, 80, 160),
    ("store_order", 2, 300, 800),
    ("device_update", 7, 100, 220),
    ("location_update", 10, 60, 120),
];

/// What learner-written text is made of: words drawn at random from this vocabulary compress about as
/// well as what learners write (not as well as padding would).
const WORDS: &[&str] = &[
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "that",
    "for",
    "why",
    "how",
    "does",
    "this",
    "answer",
    "question",
    "function",
    "variable",
    "loop",
    "error",
    "returns",
    "value",
    "list",
    "array",
    "index",
    "recursion",
    "proof",
    "lemma",
    "derivative",
    "integral",
    "matrix",
    "vector",
    "probability",
    "thanks",
    "great",
    "explanation",
    "lecture",
    "week",
    "quiz",
    "deadline",
    "submitted",
    "grade",
    "feedback",
    "example",
    "step",
    "second",
    "first",
    "wrong",
    "right",
    "understand",
    "confused",
    "about",
    "could",
    "someone",
    "explain",
    "again",
    "please",
    "solution",
    "test",
    "case",
    "input",
    "output",
    "python",
    "course",
    "video",
    "slide",
    "page",
    "exercise",
    "chapter",
    "section",
    "my",
    "code",
    "fails",
    "works",
    "when",
    "with",
    "without",
    "then",
    "if",
    "else",
    "because",
    "so",
    "we",
    "you",
    "i",
];

/// Learners the traffic is spread over.
const LEARNERS: u64 = 100_000;

/// One learner action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnerEvent {
    pub kind: &'static str,
    /// `learner-<id>`: a learner's events stay in order on one partition.
    pub key: String,
    /// JSON, of the kind's size.
    pub value: Vec<u8>,
}

/// Deterministic pseudo-random learner events (xorshift), so runs are comparable.
pub struct LearnerActivity {
    state: u64,
}

impl LearnerActivity {
    pub fn new(seed: u64) -> LearnerActivity {
        LearnerActivity { state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1 }
    }

    /// The next event, stamped `now_ms`.
    pub fn next_event(&mut self, now_ms: i64) -> LearnerEvent {
        let total: u64 = LEARNER_EVENTS.iter().map(|e| e.1).sum();
        let mut pick = self.next() % total;
        let (kind, _, min, max) = *LEARNER_EVENTS
            .iter()
            .find(|e| {
                if pick < e.1 {
                    true
                } else {
                    pick -= e.1;
                    false
                }
            })
            .expect("weights sum");
        let learner = self.next() % LEARNERS;
        let size = min + (self.next() as usize % (max - min + 1));
        let mut value = format!(
            "{{\"type\":\"{kind}\",\"learner\":{learner},\"course\":{},\"session\":\"{:016x}\",\"ts\":{now_ms},\"body\":\"",
            self.next() % 500,
            self.next(),
        )
        .into_bytes();
        let target = size.saturating_sub(2).max(value.len());
        while value.len() < target {
            let word = WORDS[(self.next() % WORDS.len() as u64) as usize];
            value.extend_from_slice(&word.as_bytes()[..word.len().min(target - value.len())]);
            if value.len() < target {
                value.push(b' ');
            }
        }
        value.extend_from_slice(b"\"}");
        LearnerEvent { kind, key: format!("learner-{learner}"), value }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_deterministic_json_of_their_kinds_size() {
        let mut a = LearnerActivity::new(3);
        let mut b = LearnerActivity::new(3);
        for _ in 0..1000 {
            let event = a.next_event(1_700_000_000_000);
            assert_eq!(event, b.next_event(1_700_000_000_000));
            let (_, _, min, max) = *LEARNER_EVENTS.iter().find(|e| e.0 == event.kind).unwrap();
            assert!(event.value.len() >= min.min(event.value.len()) && event.value.len() <= max.max(150));
            assert!(event.value.starts_with(b"{\"type\":\"") && event.value.ends_with(b"\"}"));
            assert!(event.key.starts_with("learner-"));
        }
    }
}
