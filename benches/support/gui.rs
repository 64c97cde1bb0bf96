//! Running the app unattended under Xvfb: `offload gui --batch PROCESSOR FILE --exit-when-done
//! --stall-report -j N`, and reading its stall line, wall time and peak RSS.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{measure, Env, Sample};

/// The screen Xvfb gets: xvfb-run's default is 640x480 at 8 bits per pixel, which is neither
/// what people run nor what the GL renderer expects.
const SCREEN: &str = "-screen 0 1920x1080x24";

/// What one run of the app gave.
#[derive(Debug, Clone)]
pub struct GuiRun {
    /// Longest main-loop stall, ms.
    pub max_ms: f64,
    /// 99th percentile of the stalls, ms.
    pub p99_ms: f64,
    /// The same, over the gaps that ended a second or more into the run.
    pub settled_max_ms: f64,
    pub settled_p99_ms: f64,
    /// Probe samples (about one per ms of running).
    pub samples: u64,
    /// The whole run, start-up and shut-down included.
    pub sample: Sample,
    /// Peak RSS of the largest process of the run (the app), KiB, from `wait4`.
    pub peak_rss_kib: u64,
    /// The app's exit status (0: every job succeeded).
    pub status: i32,
}

/// Which renderer to ask for: "default" leaves GSK_RENDERER unset.
pub fn renderer_env(renderer: &str) -> Option<&str> {
    (renderer != "default").then_some(renderer)
}

/// Runs the app over `file` with `processor` (a path) and `parallel` jobs at once.
pub fn run_gui(
    env: &Env,
    processor: &Path,
    file: &Path,
    parallel: usize,
    renderer: &str,
    timeout: Duration,
) -> Result<GuiRun, String> {
    let args = [
        "--batch".into(),
        processor.as_os_str().to_owned(),
        file.as_os_str().to_owned(),
    ];
    run_gui_with(env, &args, parallel, renderer, timeout)
}

/// Runs `offload gui ARGS... --exit-when-done --stall-report -j N` under Xvfb.
pub fn run_gui_with(
    env: &Env,
    args: &[std::ffi::OsString],
    parallel: usize,
    renderer: &str,
    timeout: Duration,
) -> Result<GuiRun, String> {
    let offload = env.exe("offload");
    let mut command = Command::new("xvfb-run");
    command
        .arg("-a")
        .arg("-s")
        .arg(SCREEN)
        .arg(&offload)
        .arg("gui")
        .args(args)
        .arg("--exit-when-done")
        .arg("--stall-report")
        .arg("-j")
        .arg(parallel.to_string())
        .env_remove("OFFLOAD_STALL_REPORT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so that a run that hangs can be killed whole.
        .process_group(0);
    match renderer_env(renderer) {
        Some(name) => command.env("GSK_RENDERER", name),
        None => command.env_remove("GSK_RENDERER"),
    };
    let (outcome, sample) = measure(|| -> Result<(i32, u64, String), String> {
        let mut child = command
            .spawn()
            .map_err(|err| format!("cannot start xvfb-run (install xvfb): {err}"))?;
        let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        });
        let pid = child.id() as libc::pid_t;
        let start = Instant::now();
        let (status, usage) = loop {
            let mut status = 0;
            // SAFETY: wait4 fills a zeroed rusage, which is plain data.
            let (reaped, usage) = unsafe {
                let mut usage: libc::rusage = std::mem::zeroed();
                let reaped = libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage);
                (reaped, usage)
            };
            if reaped == pid {
                break (status, usage);
            }
            if reaped < 0 {
                return Err(format!(
                    "waiting for the app: {}",
                    std::io::Error::last_os_error()
                ));
            }
            if start.elapsed() > timeout {
                // SAFETY: signalling the process group we created.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let text = reader.join().unwrap_or_default();
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        Ok((code, usage.ru_maxrss.max(0) as u64, text))
    });
    let (status, peak_rss_kib, stderr) = outcome?;
    let stall = stderr
        .lines()
        .find(|line| line.starts_with("stall "))
        .ok_or_else(|| {
            format!(
                "the app printed no stall line (exit status {status}); its stderr ends: {}",
                tail(&stderr, 1500)
            )
        })?;
    let field = |name: &str| -> Result<f64, String> {
        stall
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .ok_or_else(|| format!("no {name} in {stall:?}"))
    };
    Ok(GuiRun {
        max_ms: field("max_ms")?,
        p99_ms: field("p99_ms")?,
        settled_max_ms: field("settled_max_ms")?,
        settled_p99_ms: field("settled_p99_ms")?,
        samples: field("samples")? as u64,
        sample,
        peak_rss_kib,
        status,
    })
}

fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Whether `xvfb-run` is there.
pub fn have_xvfb() -> bool {
    Command::new("sh")
        .arg("-c")
        .arg("command -v xvfb-run")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
