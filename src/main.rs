//! The `offload` command: run processors over batches of inputs, list them, convert between
//! JSON and CBOR, and render the Mandelbrot demo.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
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
