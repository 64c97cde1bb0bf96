//! `offload list`: the processors on the search path, described.

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
    for (processor, probe) in processors.iter().zip(probes) {
        let description = probe
            .join()
            .unwrap_or_else(|_| Err("the probe panicked".to_owned()));
        if as_json {
            let line = match &description {
                Ok(d) => {
                    json!({"name": processor.name(), "path": processor.path(), "description": d})
                }
                Err(err) => {
                    json!({"name": processor.name(), "path": processor.path(), "description": null, "describe_error": err})
                }
            };
            println!("{line}");
        } else {
            let summary = match &description {
                Ok(d) => d.summary.clone(),
                Err(err) => format!("(no description: {err})"),
            };
            println!(
                "{:width$}  {summary}\n{:width$}  {}",
                processor.name(),
                "",
                processor.path().display()
            );
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
