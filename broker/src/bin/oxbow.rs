//! `oxbow`: the command-line tool (topics, produce, consume). See `oxbow --help`.

fn main() -> std::process::ExitCode {
    oxbow_broker::cli::main()
}
