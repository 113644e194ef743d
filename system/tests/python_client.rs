//! The Python client's own tests (pytest, `clients/python/tests`) against this build's brokers and CLI, so
//! that `cargo test --workspace` runs them too. They need Python 3.9+ with `msgpack` and `pytest`
//! (`pip install './clients/python[test]'`; `.ci/run` installs them).

use std::path::Path;
use std::process::Command;

#[test]
fn the_python_client_passes_its_tests_against_real_brokers() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository");
    let ready = Command::new(&python).args(["-c", "import msgpack, pytest"]).status();
    assert!(
        ready.is_ok_and(|status| status.success()),
        "the Python client's tests need {python} with msgpack and pytest: pip install './clients/python[test]'"
    );
    let status = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "clients/python/tests"])
        .current_dir(root)
        .env("OXBOW_BROKER_BIN", oxbow_testkit::broker_bin())
        .env("OXBOW_CLI_BIN", oxbow_testkit::cli_bin())
        .status()
        .expect("running pytest");
    assert!(status.success(), "pytest failed (its output is above)");
}
