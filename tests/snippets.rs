//! The README's Rust snippets, and the whole programs in the processor SDK's docs, as a reader
//! copies them: each one is built as a project of its own with the `[dependencies]` block
//! shown before it (only the path of `offload` and `offload-sdk` pointed at this checkout;
//! the rest as written), offline, and then run: a processor on its own `--describe` example
//! (its answer must be the example output it declares), a GTK app under Xvfb, anything else
//! as it is.
//!
//! `cargo test --doc` compiles the same snippets against this crate's own dependencies, which
//! hides a block that lists too few (or lacks a feature): that is what this test is for.
//!
//! The projects live in `target/snippets/NAME`, with the workspace's `Cargo.lock` (so nothing
//! is fetched: `--offline`) and its target directory (so what the workspace built is reused).
//! A snippet whose fence is preceded by `<!-- snippet-args: ARGS -->` is run with those
//! arguments.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One snippet to build and run.
struct Snippet {
    /// The project's name, and its binary's.
    name: String,
    /// Where it is shown: `README.md:231`.
    place: String,
    code: String,
    /// The `[dependencies]` block it goes with, as shown.
    dependencies: String,
    /// Arguments to run it with.
    args: Vec<String>,
}

/// A fenced code block of a Markdown text: its info string, its first line's number and its
/// text, and the arguments an HTML comment before it gives.
struct Block {
    info: String,
    line: usize,
    text: String,
    args: Vec<String>,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    let mut args = Vec::new();
    for (number, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some(block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    line: number + 2,
                    text: String::new(),
                    args: std::mem::take(&mut args),
                });
            }
            (None, None) => {
                if let Some(given) = line
                    .trim()
                    .strip_prefix("<!-- snippet-args:")
                    .and_then(|rest| rest.strip_suffix("-->"))
                {
                    args = given.split_whitespace().map(str::to_owned).collect();
                } else if !line.trim().is_empty() {
                    args.clear();
                }
            }
        }
    }
    blocks
}

/// Whether a block is Rust that rustdoc would compile (`rust`, `no_run`, or, in doc
/// comments, no language at all).
fn is_rust(info: &str, in_docs: bool) -> bool {
    let tags: Vec<&str> = info
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    if tags
        .iter()
        .any(|t| ["ignore", "compile_fail", "text"].contains(t))
    {
        return false;
    }
    tags.contains(&"rust")
        || (in_docs && tags.iter().all(|t| ["no_run", "should_panic"].contains(t)))
}

fn is_dependencies(block: &Block) -> bool {
    block.info.split(',').next() == Some("toml") && block.text.contains("[dependencies]")
}

/// The snippets of a Markdown text: every Rust block (README: each must be a whole program),
/// with the last `[dependencies]` block before it, or `fallback`.
fn snippets_of(
    markdown: &str,
    shown_in: &str,
    prefix: &str,
    in_docs: bool,
    fallback: Option<&str>,
) -> Vec<Snippet> {
    let mut dependencies = fallback.map(str::to_owned);
    let mut snippets = Vec::new();
    for block in blocks(markdown) {
        if is_dependencies(&block) {
            dependencies = Some(block.text.clone());
            continue;
        }
        if !is_rust(&block.info, in_docs) {
            continue;
        }
        let place = format!("{shown_in}:{}", block.line);
        let code = if in_docs {
            // A reader of rendered docs copies what is shown: hidden lines are not.
            block
                .text
                .lines()
                .filter(|l| {
                    let t = l.trim_start();
                    t != "#" && !t.starts_with("# ")
                })
                .map(|l| format!("{l}\n"))
                .collect()
        } else {
            block.text.clone()
        };
        if !code.contains("fn main") {
            assert!(
                in_docs,
                "{place}: a README snippet is a whole program (with `fn main`), so that a \
                 reader can copy it and run it"
            );
            continue;
        }
        let dependencies = dependencies.clone().unwrap_or_else(|| {
            panic!("{place}: no ```toml [dependencies] block is shown before this snippet")
        });
        snippets.push(Snippet {
            name: format!("{prefix}-{}", snippets.len() + 1),
            place,
            code,
            dependencies,
            args: block.args,
        });
    }
    snippets
}

/// The doc comments (`//!` and `///`) of a Rust source file, as Markdown; other lines are
/// left empty, so that line numbers are the file's.
fn doc_text(source: &str) -> String {
    source
        .lines()
        .map(|line| {
            let line = line.trim_start();
            let doc = line
                .strip_prefix("//!")
                .or_else(|| line.strip_prefix("///"));
            match doc {
                Some(doc) => format!("{}\n", doc.strip_prefix(' ').unwrap_or(doc)),
                None => "\n".to_owned(),
            }
        })
        .collect()
}

/// `dependencies` with `offload` and `offload-sdk` taken from this checkout, the rest as
/// written.
fn pointed_here(dependencies: &str) -> String {
    let root = common::root();
    let mut out = String::new();
    for line in dependencies.lines() {
        let name = line.split('=').next().unwrap_or("").trim();
        let path = match name {
            "offload" => Some(root.to_path_buf()),
            "offload-sdk" => Some(root.join("processors/sdk")),
            _ => None,
        };
        let line = match path {
            Some(path) => with_path(line, &path),
            None => line.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A `NAME = ...` dependency line with its path set to `path`.
fn with_path(line: &str, path: &Path) -> String {
    let path = path.display();
    if let Some(start) = line.find("path = \"") {
        let value = start + "path = \"".len();
        let end = line[value..].find('"').map_or(line.len(), |e| value + e);
        return format!("{}{path}{}", &line[..value], &line[end..]);
    }
    let (name, spec) = line.split_once('=').unwrap_or((line, ""));
    let spec = spec.trim();
    if let Some(inner) = spec.strip_prefix('{') {
        format!("{name}= {{ path = \"{path}\",{inner}")
    } else {
        format!("{name}= {{ path = \"{path}\", version = {spec} }}")
    }
}

/// Writes the snippet's project (a fresh `cargo new`, its block pasted in) and builds it.
fn build(snippet: &Snippet, projects: &Path, target: &Path) -> PathBuf {
    let dir = projects.join(&snippet.name);
    std::fs::create_dir_all(dir.join("src")).expect("project directory");
    let manifest = format!(
        "[package]\nname = \"{}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         {}\n# Not a member of the checkout's workspace, which it lies inside.\n[workspace]\n",
        snippet.name,
        pointed_here(&snippet.dependencies),
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("Cargo.toml");
    std::fs::write(dir.join("src/main.rs"), &snippet.code).expect("main.rs");
    // The versions this checkout builds with, so that nothing needs fetching.
    std::fs::copy(common::root().join("Cargo.lock"), dir.join("Cargo.lock")).expect("Cargo.lock");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--offline", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "{} does not build as shown, with its [dependencies] block (project: {}):\n{}",
        snippet.place,
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("debug").join(&snippet.name)
}

/// Runs `command` with `stdin`, killed after `limit`.
fn run(command: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    use std::io::Write as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the snippet starts");
    if let Some(mut pipe) = child.stdin.take() {
        let _ = pipe.write_all(stdin);
    }
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("its output")
}

/// Runs a built snippet as a reader would try it.
fn try_it(snippet: &Snippet, exe: &Path) {
    let limit = Duration::from_secs(120);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let is_processor =
        snippet.code.contains("offload_sdk::") && snippet.code.contains("Processor::new");
    if is_processor {
        // Its own example: --describe says what it takes and, if it says, what it gives.
        let out = run(Command::new(exe).arg("--describe"), b"", limit);
        assert!(
            out.status.success(),
            "{} --describe: {}",
            snippet.place,
            text(&out.stderr)
        );
        let description: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("--describe prints JSON");
        let input = description["example_input"].to_string();
        let out = run(Command::new(exe).arg("--json"), input.as_bytes(), limit);
        assert!(
            out.status.success(),
            "{} on its example {input}: {}",
            snippet.place,
            text(&out.stderr)
        );
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON answer");
        if let Some(expected) = description.get("example_output") {
            assert_eq!(&answer, expected, "{}: its example output", snippet.place);
        }
        return;
    }
    let mut command = if snippet.code.contains("gtk::") && std::env::var_os("DISPLAY").is_none() {
        let mut command = Command::new("xvfb-run");
        command.args(["-a", "--"]).arg(exe);
        command
    } else {
        Command::new(exe)
    };
    command
        .args(&snippet.args)
        .env("OFFLOAD_PROCESSOR_PATH", common::bin_dir())
        // The app's settings stay in memory.
        .env("GSETTINGS_BACKEND", "memory");
    let out = run(&mut command, b"", limit);
    assert!(
        out.status.success(),
        "{} run as shown ({:?}): {}\n{}",
        snippet.place,
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn check(snippets: &[Snippet]) {
    let target = common::bin_dir()
        .parent()
        .expect("the target directory")
        .to_path_buf();
    let projects = target.join("snippets");
    for snippet in snippets {
        let exe = build(snippet, &projects, &target);
        try_it(snippet, &exe);
    }
}

#[test]
fn the_readme_snippets_build_and_run_as_shown() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).expect("README.md");
    let snippets = snippets_of(&readme, "README.md", "readme", false, None);
    assert!(snippets.len() >= 3, "{} snippets found", snippets.len());
    check(&snippets);
}

#[test]
fn the_sdk_docs_whole_programs_build_and_run_as_shown() {
    let sdk = common::root().join("processors/sdk/src");
    let lib = doc_text(&std::fs::read_to_string(sdk.join("lib.rs")).expect("lib.rs"));
    // The crate's front page shows the [dependencies] its other pages' programs need.
    let front = blocks(&lib)
        .into_iter()
        .find(is_dependencies)
        .map(|block| block.text);
    let mut snippets = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&sdk)
        .expect("the SDK's sources")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_owned();
        let docs = doc_text(&std::fs::read_to_string(&file).expect("source"));
        let shown_in = format!("processors/sdk/src/{name}");
        let prefix = format!("sdk-{}", name.trim_end_matches(".rs"));
        snippets.extend(snippets_of(
            &docs,
            &shown_in,
            &prefix,
            true,
            front.as_deref(),
        ));
    }
    assert!(snippets.len() >= 2, "{} programs found", snippets.len());
    check(&snippets);
}
