//! The Jepsen-style suite's short run, as CI runs it: every nemesis once against three real brokers, at a
//! low rate, and every safety check must come out 0. (`scripts/chaos.sh` is the long run.)

use std::process::Command;

#[test]
fn every_nemesis_once_and_every_safety_check_holds() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(oxbow_testkit::bin("oxbow-chaos"))
        .args(["--seed", "7", "--cycles", "1", "--calm-s", "3", "--fault-s", "3", "--rate", "100"])
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("running oxbow-chaos");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    let acked = report["acked"].as_u64().unwrap();
    assert!(acked > 5_000, "the workload ran: {acked} acknowledged\n{stdout}");
    for column in [
        "lost",
        "duplicated",
        "reordered",
        "phantom",
        "failed_but_stored",
        "dirty_reads",
        "offset_gaps",
        "divergent",
        "commit_regressions",
        "two_owners",
    ] {
        assert_eq!(report[column]["count"], 0, "{column}: {}\n{stdout}", report[column]);
    }
    let faults = report["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 6, "every nemesis ran: {stdout}");
}
