//! The Python package `offload` (processors/python/offload): installed with pip from this
//! checkout into a new virtual environment, as its README says, then its pytest suite (real
//! `offload serve` and worker processes) run against that install, and the examples run.
//!
//! The install builds the wheel with maturin, which compiles the `offload` command: here with
//! the profile `wheel-test` (dev settings, `target/wheel-test`), about a minute on two cores
//! instead of a release build; the wheel a user builds has the release profile `wheel`.
//! It happens once per run of this file, whichever test asks first.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::root;

fn package() -> PathBuf {
    root().join("processors/python/offload")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// How long one command of these tests may take (the cold wheel build is the longest, a
/// couple of minutes on two cores): a hang fails its test instead of holding CI.
const BOUND: Duration = Duration::from_secs(15 * 60);

/// `Command::output` with [`BOUND`]: past it the process is killed and the test fails with
/// what it wrote so far.
trait Bounded {
    fn bounded_output(&mut self) -> std::io::Result<Output>;
}

impl Bounded for Command {
    fn bounded_output(&mut self) -> std::io::Result<Output> {
        let mut child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("stdout piped")));
        let stderr = drain(Box::new(child.stderr.take().expect("stderr piped")));
        let deadline = Instant::now() + BOUND;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{self:?} ran past {BOUND:?}; its output:\n{}\n{}",
                    text(&stdout.join().unwrap_or_default()),
                    text(&stderr.join().unwrap_or_default())
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }
}

fn checked(what: &str, out: std::io::Result<Output>) -> Output {
    let out = out.unwrap_or_else(|err| panic!("{what}: cannot be run: {err}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// `pip install processors/python/offload` with a venv's python, one at a time: two maturin
/// builds in one target directory race when they stage the binary (each renames
/// `target/wheel-test/offload` away, and the second finds it gone).
fn pip_install_package(python: &Path) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    checked(
        "pip install processors/python/offload",
        Command::new(python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(package())
            .env("MATURIN_PEP517_ARGS", "--profile wheel-test")
            .bounded_output(),
    );
}

/// The venv's python, with the package installed by `pip install processors/python/offload`.
///
/// The venv sees the system's site-packages, for the test tools `dev/setup test` installs
/// there (pytest, PySide6); its own site-packages come first, so `offload` and `offload_sdk`
/// are the ones pip put in it (the suite's conftest checks that `offload` is an install, not
/// a source tree). Any failure here fails every test of this file: installing is the promise.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-package-venv");
        let _ = std::fs::remove_dir_all(&venv);
        checked(
            "python3 -m venv",
            Command::new("python3")
                .args(["-m", "venv", "--system-site-packages"])
                .arg(&venv)
                .bounded_output(),
        );
        let python = venv.join("bin/python");
        pip_install_package(&python);
        python
    })
}

/// Runs pytest from the venv on some of the package's test files.
fn pytest(files: &[&str]) {
    let out = Command::new(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(files)
        .current_dir(package())
        .env_remove("PYTHONPATH")
        .bounded_output();
    let out = checked(&format!("pytest {}", files.join(" ")), out);
    eprintln!("{}", text(&out.stdout));
}

#[test]
fn pip_install_into_a_new_venv_gives_offload_offload_sdk_and_the_command() {
    let out = checked(
        "python -c import",
        Command::new(python())
            .args([
                "-c",
                "import offload, offload_sdk, shutil, sys; \
                 print(offload.__file__); print(offload_sdk.__file__); \
                 print(offload.find_offload())",
            ])
            .current_dir(std::env::temp_dir())
            .env_remove("PYTHONPATH")
            .bounded_output(),
    );
    let venv = python().parent().and_then(Path::parent).expect("venv");
    let lines: Vec<PathBuf> = text(&out.stdout).lines().map(PathBuf::from).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for path in &lines {
        assert!(
            path.starts_with(venv),
            "{} is not in {}",
            path.display(),
            venv.display()
        );
    }
    pytest(&["tests/test_package.py"]);
}

/// A script that runs a function of its own `__main__` and `bytes` on workers.
///
/// It does not import `offload_sdk`: imported by a script run without arguments, the SDK
/// takes the process's stdout for a processor's result (PROTOCOL.md; offload_sdk's
/// documentation), so an app imports `offload` only.
const CUBE: &str = r#"import offload

def cube(x):
    return x ** 3

if __name__ == "__main__":
    with offload.Executor(max_workers=2) as pool:
        print(sum(pool.map(cube, range(10))), pool.submit(bytes, 3).result())
"#;

/// A venv that sees nothing of the system's packages: pip must bring cbor2 itself, and a
/// function must run on a worker with nothing else installed.
#[test]
fn pip_install_into_an_isolated_venv_brings_its_dependencies_and_runs_a_job() {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-package-isolated");
    let _ = std::fs::remove_dir_all(&venv);
    checked(
        "python3 -m venv",
        Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .bounded_output(),
    );
    let python = venv.join("bin/python");
    pip_install_package(&python);
    checked(
        "import offload_sdk in the isolated venv",
        Command::new(&python)
            .args(["-c", "import offload_sdk, cbor2"])
            .env_remove("PYTHONPATH")
            .bounded_output(),
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let script = dir.path().join("cube.py");
    std::fs::write(&script, CUBE).expect("writing the script");
    let out = checked(
        "a job from the isolated venv",
        Command::new(&python)
            .arg(&script)
            .current_dir(dir.path())
            .env_remove("PYTHONPATH")
            .bounded_output(),
    );
    assert_eq!(text(&out.stdout).trim(), "2025 b'\\x00\\x00\\x00'");
}

#[test]
fn the_executor_suite_passes() {
    pytest(&["tests/test_executor.py"]);
}

#[test]
fn the_batch_and_processor_suite_passes() {
    pytest(&["tests/test_batches.py"]);
}

/// The Python block of README.md's section "From a Python app", as a reader copies it.
fn readme_block() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let section = readme
        .split_once("## From a Python app")
        .expect("README.md has the section \"From a Python app\"")
        .1;
    let block = section
        .split_once("```python\n")
        .expect("the section has a Python block")
        .1;
    block
        .split_once("```")
        .expect("the block ends")
        .0
        .to_owned()
}

#[test]
fn the_readme_python_block_runs_as_shown() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let script = dir.path().join("readme_example.py");
    std::fs::write(&script, readme_block()).expect("writing the block");
    let out = checked(
        "the README's Python block",
        Command::new(python())
            .arg(&script)
            .current_dir(dir.path())
            .env_remove("PYTHONPATH")
            .bounded_output(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "[256, 256, 256, 256]",
            "failed alone: killed signal 6",
            "failed alone: timed_out",
            "4"
        ],
        "{stdout}"
    );
}

#[test]
fn the_qt_adapter_suite_passes_offscreen() {
    pytest(&["tests/test_qt.py"]);
}

#[test]
fn the_glib_and_asyncio_adapter_suites_pass() {
    pytest(&["tests/test_glib.py", "tests/test_aio.py"]);
}

/// Runs an example with `--self-test` (it starts a batch of six sums, a crash and a job it
/// cancels once running, and quits when the batch has ended), and returns its stdout.
fn self_test(example: &str, mut command: Command) -> String {
    let out = checked(example, command.bounded_output());
    text(&out.stdout)
}

const EXAMPLE_SUMMARY: [&str; 3] = [
    "rows 8",
    "states done done done done done done failed cancelled",
    "status 6 done, 1 failed, 1 cancelled, 0 running",
];

#[test]
fn the_pyside6_example_runs_a_batch_offscreen() {
    let mut command = Command::new(python());
    command
        .arg(root().join("examples/python_qt.py"))
        .arg("--self-test")
        .env("QT_QPA_PLATFORM", "offscreen")
        .env_remove("PYTHONPATH");
    let stdout = self_test("examples/python_qt.py", command);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        EXAMPLE_SUMMARY,
        "{stdout}"
    );
}

#[test]
fn the_gtk4_example_runs_a_batch_under_x() {
    // dev/test runs the tests under xvfb-run; alone, this test starts its own X server.
    let mut command = if std::env::var_os("DISPLAY").is_some() {
        Command::new(python())
    } else {
        let mut xvfb = Command::new("xvfb-run");
        xvfb.arg("-a").arg(python());
        xvfb
    };
    command
        .arg(root().join("examples/python_gtk.py"))
        .arg("--self-test")
        .env("GDK_BACKEND", "x11")
        .env_remove("PYTHONPATH");
    let stdout = self_test("examples/python_gtk.py", command);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        EXAMPLE_SUMMARY,
        "{stdout}"
    );
}
