//! The `offload` command: run processors over batches of inputs, list them, convert between
//! JSON and CBOR, and render the Mandelbrot demo.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    add_source_tree_processors();
    let matches = cli::Cli::command().get_matches();
    let args = match cli::Cli::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(err) => err.exit(),
    };
    match cli::dispatch(args, &matches) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("offload: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Run from a checkout (`cargo run`, `target/debug/offload`), the command also finds the
/// checkout's Python processors, by adding their directory to the end of
/// `OFFLOAD_PROCESSOR_PATH` when it exists. This is the `offload` command's own convenience:
/// the library bakes no path in (an app that embeds it says where its processors are).
fn add_source_tree_processors() {
    let python = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/processors/python"));
    if !python.is_dir() {
        return;
    }
    let key = offload::processor::PROCESSOR_PATH_ENV;
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os(key)
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    if dirs.iter().any(|d| d == python) {
        return;
    }
    dirs.push(python.to_path_buf());
    if let Ok(joined) = std::env::join_paths(dirs) {
        // Still one thread here: nothing reads the environment concurrently.
        std::env::set_var(key, joined);
    }
}
