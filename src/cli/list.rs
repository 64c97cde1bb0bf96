//! `offload list`: the processors on the search path, described.

use std::io::Write;
use std::process::ExitCode;

use offload::processor::DESCRIBE_TIMEOUT;
use offload::Processor;
use serde_json::json;

pub fn list(as_json: bool) -> anyhow::Result<ExitCode> {
    let processors = Processor::list();
    // Probe all at once: a processor that does not know --describe costs its timeout only once.
    let probes: Vec<_> = processors
        .iter()
        .map(|p| {
            let p = p.clone();
            std::thread::spawn(move || p.describe(DESCRIBE_TIMEOUT))
        })
        .collect();
    let width = processors.iter().map(|p| p.name().len()).max().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for (processor, probe) in processors.iter().zip(probes) {
        let description = probe.join().unwrap_or_else(|_| {
            Err(offload::processor::DescribeError::CannotStart(
                "the probe panicked".to_owned(),
            ))
        });
        if as_json {
            let line = match &description {
                Ok(d) => {
                    json!({"name": processor.name(), "path": processor.path(), "description": d})
                }
                Err(err) => {
                    json!({"name": processor.name(), "path": processor.path(), "description": null, "describe_error": err.to_string()})
                }
            };
            if writeln!(out, "{line}").is_err() {
                // Nobody reads any more (`offload list | head`): that is not an error.
                return Ok(ExitCode::SUCCESS);
            }
        } else {
            let (summary, mode) = match &description {
                Ok(d) if d.supports_persistent() => (d.summary.clone(), "persistent workers"),
                Ok(d) => (d.summary.clone(), "a process per job"),
                Err(err) => (format!("(no description: {err})"), "a process per job"),
            };
            let written = writeln!(
                out,
                "{:width$}  {summary}\n{:width$}  {} ({mode})",
                processor.name(),
                "",
                processor.path().display()
            );
            if written.is_err() {
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    if processors.is_empty() {
        eprintln!(
            "offload: no processors found in {}",
            Processor::search_path()
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
