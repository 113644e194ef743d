//! The `oxbow` command-line tool.
