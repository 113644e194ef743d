//! The checker: every guarantee Oxbow documents, tested against a recorded history.
//!
//! Safety (each must be 0):
//! - **lost**: an acknowledged record missing from the final log (or at another offset than acknowledged);
//! - **duplicated**: a record stored more than once;
//! - **reordered**: two acknowledged records of one producer (so of one key) stored out of send order;
//! - **phantom**: a stored record no producer sent;
//! - **failed but stored**: a send reported failed for good whose record is stored (an unknown outcome is
//!   allowed either way);
//! - **dirty reads**: a record delivered to a consumer that the final log does not hold at that offset;
//! - **offset gaps**: a hole in a final log, or a record below the group's committed offset that no
//!   member was ever handed;
//! - **divergent**: a replica holding a record the final log does not (at that offset);
//! - **commit regressions**: the group's committed offset of a partition moving back;
//! - **two owners**: two members handed records of one partition while both held it, or a member handed
//!   records of a partition it did not hold.
//!
//! Figures: acknowledged / failed / unknown counts, and per fault the longest stretch with no
//! acknowledgement on a partition; the time the group took to become stable.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::history::{parse_value, record_value, History, Outcome};

/// Examples kept per violation kind.
const EXAMPLES: usize = 5;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Violations {
    pub count: u64,
    pub examples: Vec<String>,
}

impl Violations {
    fn add(&mut self, example: impl FnOnce() -> String) {
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(example());
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct FaultFigure {
    pub kind: String,
    pub nodes: Vec<i32>,
    pub start_ms: u64,
    /// Longest stretch with no acknowledgement on any partition, from the fault until 10 s after it healed
    /// (or the next fault).
    pub longest_gap_ms: u64,
    /// How long after the fault the partitions the hit nodes led acknowledged again (the slowest of them).
    pub acks_again_ms: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub sends: u64,
    pub acked: u64,
    pub failed: u64,
    pub unknown: u64,
    pub delivered: u64,
    pub lost: Violations,
    pub duplicated: Violations,
    pub reordered: Violations,
    pub phantom: Violations,
    pub failed_but_stored: Violations,
    pub dirty_reads: Violations,
    pub offset_gaps: Violations,
    pub divergent: Violations,
    pub commit_regressions: Violations,
    pub two_owners: Violations,
    /// The longest time two members held one partition at once.
    pub two_owners_max_ms: u64,
    pub faults: Vec<FaultFigure>,
    pub group_stable_after_ms: Option<u64>,
}

impl Report {
    /// Every safety column and its count.
    pub fn safety(&self) -> [(&'static str, &Violations); 10] {
        [
            ("lost", &self.lost),
            ("duplicated", &self.duplicated),
            ("reordered", &self.reordered),
            ("phantom", &self.phantom),
            ("failed but stored", &self.failed_but_stored),
            ("dirty reads", &self.dirty_reads),
            ("offset gaps", &self.offset_gaps),
            ("divergent", &self.divergent),
            ("commit regressions", &self.commit_regressions),
            ("two owners", &self.two_owners),
        ]
    }

    pub fn is_safe(&self) -> bool {
        self.safety().iter().all(|(_, v)| v.count == 0)
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "sends {} · acknowledged {} · failed {} · unknown {} · delivered {}\n\n",
            self.sends, self.acked, self.failed, self.unknown, self.delivered
        ));
        out.push_str("| check | violations | examples |\n|---|---|---|\n");
        for (name, v) in self.safety() {
            out.push_str(&format!("| {name} | {} | {} |\n", v.count, v.examples.join("; ")));
        }
        out.push_str(&format!("\ntwo members holding one partition at once: at most {} ms\n", self.two_owners_max_ms));
        if let Some(ms) = self.group_stable_after_ms {
            out.push_str(&format!("group stable {ms} ms after its members started\n"));
        }
        out.push_str("\n| fault | nodes | at (ms) | led partitions acknowledge again after (ms) | longest no-ack gap, any partition (ms) |\n|---|---|---|---|---|\n");
        for f in &self.faults {
            out.push_str(&format!(
                "| {} | {:?} | {} | {} | {} |\n",
                f.kind, f.nodes, f.start_ms, f.acks_again_ms, f.longest_gap_ms
            ));
        }
        out
    }
}

/// Checks a history.
pub fn check(history: &History) -> Report {
    let mut report = Report::default();
    // Where each value is stored in the final logs.
    let mut stored: HashMap<&str, Vec<(u32, u64)>> = HashMap::new();
    let mut at: HashMap<(u32, u64), &str> = HashMap::new();
    for (partition, log) in &history.final_logs {
        for (offset, value) in log {
            stored.entry(value.as_str()).or_default().push((*partition, *offset));
            at.insert((*partition, *offset), value.as_str());
        }
    }
    let sent: HashMap<(u32, u64), &crate::history::SendOp> =
        history.sends.iter().map(|send| ((send.producer, send.seq), send)).collect();

    for send in &history.sends {
        report.sends += 1;
        let value = record_value(send.producer, send.seq);
        let places = stored.get(value.as_str());
        match &send.outcome {
            Outcome::Acked { partition, offset } => {
                report.acked += 1;
                let found = match offset {
                    Some(offset) => at.get(&(*partition, *offset)) == Some(&value.as_str()),
                    None => places.is_some_and(|p| p.iter().any(|(q, _)| q == partition)),
                };
                if !found {
                    report.lost.add(|| format!("{value} acknowledged at {partition}/{offset:?}, stored at {places:?}"));
                }
            }
            Outcome::Failed(reason) => {
                report.failed += 1;
                if let Some(places) = places {
                    report.failed_but_stored.add(|| format!("{value} failed ({reason}) but stored at {places:?}"));
                }
            }
            Outcome::Unknown(_) => report.unknown += 1,
        }
    }
    for (value, places) in &stored {
        if places.len() > 1 {
            report.duplicated.add(|| format!("{value} stored at {places:?}"));
        }
        let known = parse_value(value).is_some_and(|id| sent.contains_key(&id));
        if !known {
            report.phantom.add(|| format!("{value:?} at {places:?} was never sent"));
        }
    }

    // Order: a producer's acknowledged records, in offset order, carry increasing sequence numbers.
    for (partition, log) in &history.final_logs {
        let mut last: HashMap<u32, (u64, u64)> = HashMap::new();
        let mut expected_offset = 0;
        for (offset, value) in log {
            if *offset != expected_offset {
                report.offset_gaps.add(|| format!("partition {partition}: offset {offset} follows {expected_offset}"));
            }
            expected_offset = offset + 1;
            let Some((producer, seq)) = parse_value(value) else { continue };
            let acked = sent.get(&(producer, seq)).is_some_and(|s| matches!(s.outcome, Outcome::Acked { .. }));
            if !acked {
                continue;
            }
            if let Some((last_seq, last_offset)) = last.get(&producer) {
                if seq < *last_seq {
                    report.reordered.add(|| {
                        format!(
                            "partition {partition}: {value} at {offset} after p{producer}-s{last_seq} at {last_offset}"
                        )
                    });
                }
            }
            last.insert(producer, (seq, *offset));
        }
    }

    // Reads: every delivery matches the final log.
    for delivery in &history.deliveries {
        report.delivered += 1;
        let final_value = at.get(&(delivery.partition, delivery.offset));
        if final_value != Some(&delivery.value.as_str()) {
            report.dirty_reads.add(|| {
                format!(
                    "member {} read {} at {}/{} ({} ms); the final log holds {final_value:?}",
                    delivery.member, delivery.value, delivery.partition, delivery.offset, delivery.at_ms
                )
            });
        }
    }

    // Consumption: nothing below the committed offset was skipped; committed offsets never move back.
    let mut commits: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for sample in &history.commits {
        commits.entry(sample.partition).or_default().push((sample.at_ms, sample.offset));
    }
    for (partition, samples) in &mut commits {
        samples.sort_by_key(|(at_ms, _)| *at_ms);
        let mut highest = 0;
        for (at_ms, offset) in samples.iter() {
            if *offset < highest {
                report
                    .commit_regressions
                    .add(|| format!("partition {partition}: committed {offset} at {at_ms} ms after {highest}"));
            }
            highest = highest.max(*offset);
        }
        let log_end = history.final_logs.get(partition).and_then(|log| log.last()).map_or(0, |(o, _)| o + 1);
        let mut delivered: Vec<u64> =
            history.deliveries.iter().filter(|d| d.partition == *partition).map(|d| d.offset).collect();
        delivered.sort_unstable();
        delivered.dedup();
        let covered_to = highest.min(log_end);
        let skipped = (0..covered_to).filter(|offset| delivered.binary_search(offset).is_err()).count() as u64;
        if skipped > 0 {
            report.offset_gaps.count += skipped;
            if report.offset_gaps.examples.len() < EXAMPLES {
                report.offset_gaps.examples.push(format!(
                    "partition {partition}: {skipped} records below the committed offset {highest} never delivered"
                ));
            }
        }
    }

    // Replicas: none holds a record the final log does not.
    for (partition, replicas) in &history.replica_logs {
        for (node, log) in replicas {
            for (offset, value) in log {
                if at.get(&(*partition, *offset)) != Some(&value.as_str()) {
                    report.divergent.add(|| {
                        format!(
                            "broker {node} holds {value} at {partition}/{offset}; the final log holds {:?}",
                            at.get(&(*partition, *offset))
                        )
                    });
                }
            }
        }
    }

    check_owners(history, &mut report);
    check_availability(history, &mut report);
    report.group_stable_after_ms = history.group_stable_ms.map(|ms| ms.saturating_sub(history.members_started_ms));
    report
}

/// Two members handed records of one partition while both held it, or a member handed records of a
/// partition it did not hold at that moment.
fn check_owners(history: &History, report: &mut Report) {
    let end = history.run_ms;
    let holds = |member: u32, partition: u32, at_ms: u64| {
        history.ownership.iter().any(|o| {
            o.member == member && o.partition == partition && o.from_ms <= at_ms && o.to_ms.is_none_or(|to| at_ms <= to)
        })
    };
    for delivery in &history.deliveries {
        if !holds(delivery.member, delivery.partition, delivery.at_ms) {
            report.two_owners.add(|| {
                format!(
                    "member {} read {}/{} at {} ms without holding it",
                    delivery.member, delivery.partition, delivery.offset, delivery.at_ms
                )
            });
        }
    }
    for (i, a) in history.ownership.iter().enumerate() {
        for b in &history.ownership[i + 1..] {
            if a.member == b.member || a.partition != b.partition {
                continue;
            }
            let from = a.from_ms.max(b.from_ms);
            let to = a.to_ms.unwrap_or(end).min(b.to_ms.unwrap_or(end));
            if to <= from {
                continue;
            }
            report.two_owners_max_ms = report.two_owners_max_ms.max(to - from);
            let read_in = |member: u32| {
                history
                    .deliveries
                    .iter()
                    .any(|d| d.member == member && d.partition == a.partition && (from..=to).contains(&d.at_ms))
            };
            if read_in(a.member) && read_in(b.member) {
                report.two_owners.add(|| {
                    format!(
                        "members {} and {} both read partition {} between {from} and {to} ms",
                        a.member, b.member, a.partition
                    )
                });
            }
        }
    }
}

/// Per fault: how long the partitions the hit nodes led took to acknowledge again, and the longest stretch
/// without an acknowledgement on any partition among those that overlap the fault (from its start to 10 s
/// after it healed, or to the next fault).
fn check_availability(history: &History, report: &mut Report) {
    let mut acks: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for send in &history.sends {
        if let Outcome::Acked { partition, .. } = send.outcome {
            acks.entry(partition).or_default().push(send.done_ms);
        }
    }
    for times in acks.values_mut() {
        times.sort_unstable();
    }
    for (i, fault) in history.faults.iter().enumerate() {
        // A stretch that began just before the next fault is that fault's.
        let next = history.faults.get(i + 1).map_or(u64::MAX, |f| f.start_ms.saturating_sub(500));
        let window = (fault.start_ms, (fault.healed_ms + 10_000).min(next));
        let times_of = |partition: u32| acks.get(&partition).map_or(&[][..], Vec::as_slice);
        let gap_on = |partition: u32| -> u64 {
            let times = times_of(partition);
            if times.last().is_none_or(|last| *last < window.0) {
                // No acknowledgement after the fault started, to the end of the run.
                return history.run_ms.saturating_sub(window.0);
            }
            let mut longest = 0;
            for pair in times.windows(2) {
                let (previous, t) = (pair[0], pair[1]);
                if t >= window.0 && previous < window.1 {
                    longest = longest.max(t - previous);
                }
            }
            longest
        };
        let again_on = |partition: u32| -> u64 {
            let times = times_of(partition);
            times.iter().find(|t| **t > fault.start_ms).map_or(history.run_ms, |t| *t) - fault.start_ms
        };
        let longest_gap_ms = (0..history.partitions).map(gap_on).max().unwrap_or(0);
        let acks_again_ms = fault.led.iter().map(|p| again_on(*p)).max().unwrap_or(0);
        report.faults.push(FaultFigure {
            kind: fault.kind.clone(),
            nodes: fault.nodes.clone(),
            start_ms: fault.start_ms,
            longest_gap_ms,
            acks_again_ms,
        });
    }
}

#[cfg(test)]
mod tests;
