//! Jepsen-style checking of Oxbow's guarantees. `history` is what a run records (every send and its outcome,
//! every delivery to a group member, who owned which partition when, committed offsets as sampled, and the
//! final logs of every replica); `check` turns a history into a report of every violation, with no I/O, so
//! that each check is unit-tested with histories that break it. The runner (`main.rs`) starts real brokers,
//! drives the workload, injects the faults and records the history.

pub mod check;
pub mod history;

pub use check::{check, Report};
pub use history::History;
