//! The workspace's shared test harness (`shared/testkit`), under the name these tests use.
#![allow(unused_imports)]

pub use oxbow_testkit::*;
