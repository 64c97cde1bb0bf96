//! What a processor needs to see inside the sandbox to run as it runs outside, when it lives
//! where the sandbox hides (the home directory, `/tmp`, ...): its own directory, and for a
//! script its interpreter and that interpreter's packages. The usual case is Python: an
//! interpreter from pyenv or a virtual environment under the home, packages in `~/.local`.
//! Without these, `#!/usr/bin/env python3` finds another interpreter inside (the system's),
//! which lacks the processor's packages ("No module named 'cbor2'").
//!
//! A Python interpreter is asked where it lives and where its packages are (`sys.executable`,
//! its prefixes, `sys.path`), itself confined: read-only, no network, its own pid namespace.
//! What of that lies hidden is shown read-only at the same place, and the script is run by
//! that interpreter directly (a pyenv shim, a script itself, is not needed inside). Another
//! interpreter found in a hidden place is shown with its installation prefix (the directory
//! above its `bin`); one that is itself a script there (another tool's shim) cannot be
//! followed, and the job fails to start saying so.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::runner::child::FileId;

/// How long asking an interpreter about itself may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(20);

/// What to run inside, and what to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Needs {
    /// Paths to show read-only at the same place.
    pub binds: Vec<PathBuf>,
    /// The executable to run: the processor, or its interpreter.
    pub program: PathBuf,
    /// Arguments before the job's own: the script (and its `#!` line's argument), when the
    /// interpreter is run directly.
    pub leading: Vec<OsString>,
}

/// What `program` (an absolute path) needs, run with the environment `env`, when `hidden`
/// are hidden. Remembered per file and environment: asking Python costs tens of milliseconds.
pub(crate) fn needs(
    program: &Path,
    env: &[(OsString, OsString)],
    hidden: &[PathBuf],
) -> Result<Needs, String> {
    type Key = (PathBuf, Option<FileId>, Vec<(OsString, OsString)>);
    static KNOWN: OnceLock<Mutex<HashMap<Key, Result<Needs, String>>>> = OnceLock::new();
    let key = (program.to_path_buf(), FileId::of(program), env.to_vec());
    let known = KNOWN.get_or_init(Mutex::default);
    if let Some(found) = known
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
    {
        return found.clone();
    }
    let found = work_out(program, env, hidden);
    known
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key, found.clone());
    found
}

fn is_hidden(path: &Path, hidden: &[PathBuf]) -> bool {
    hidden.iter().any(|h| path.starts_with(h))
}

/// `path`'s directory, and its real directory (symbolic links followed), where hidden.
fn dirs_of(path: &Path, hidden: &[PathBuf]) -> Vec<PathBuf> {
    [
        path.parent().map(Path::to_path_buf),
        path.canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf)),
    ]
    .into_iter()
    .flatten()
    .filter(|d| is_hidden(d, hidden))
    .collect()
}

fn work_out(
    program: &Path,
    env: &[(OsString, OsString)],
    hidden: &[PathBuf],
) -> Result<Needs, String> {
    let mut needs = Needs {
        binds: dirs_of(program, hidden),
        program: program.to_path_buf(),
        leading: Vec::new(),
    };
    let Some(shebang) = shebang(program) else {
        return Ok(needs);
    };
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    // `#!/usr/bin/env NAME`: NAME is looked up on the job's PATH, as the kernel's run would.
    let (interpreter, extra) = if shebang.interpreter.file_name() == Some(OsStr::new("env")) {
        let mut words = shebang.argument.iter().flat_map(|a| {
            a.as_bytes()
                .split(|b| b.is_ascii_whitespace())
                .filter(|w| !w.is_empty())
                .map(|w| OsStr::from_bytes(w).to_owned())
                .collect::<Vec<_>>()
        });
        let mut name = words.next();
        if name.as_deref() == Some(OsStr::new("-S")) {
            name = words.next();
        }
        let Some(name) = name else {
            return Ok(needs);
        };
        let Ok(found) = which::which_in(&name, Some(&path_var), "/") else {
            // Not found outside either: running it says so.
            return Ok(needs);
        };
        (found, words.collect::<Vec<_>>())
    } else {
        (
            shebang.interpreter.clone(),
            shebang.argument.into_iter().collect(),
        )
    };
    let real = interpreter.canonicalize().unwrap_or(interpreter.clone());
    let name = interpreter
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("python") {
        let python = ask_python(&interpreter, env)?;
        needs.binds.extend(
            python
                .paths
                .iter()
                .filter(|p| p.is_absolute() && is_hidden(p, hidden) && p.exists())
                .cloned(),
        );
        needs.binds.extend(dirs_of(&python.executable, hidden));
        if is_hidden(&interpreter, hidden) || is_hidden(&real, hidden) {
            // Inside, the same interpreter runs the script, without the shim or the PATH
            // lookup that found it outside.
            needs.program = python.executable;
            needs.leading = extra;
            needs.leading.push(program.as_os_str().to_owned());
        }
        return Ok(needs);
    }
    if !is_hidden(&interpreter, hidden) && !is_hidden(&real, hidden) {
        return Ok(needs);
    }
    if shebang_of_file(&real) {
        return Err(format!(
            "cannot run {} in the sandbox: its interpreter {} is itself a script in a directory \
             the sandbox hides (a version manager's shim?), which offload cannot follow; name \
             the real interpreter in its #! line, or show what it needs with --sandbox-bind \
             (Sandbox::bind)",
            program.display(),
            interpreter.display()
        ));
    }
    // An installation prefix (~/.nvm/versions/node/v20/bin/node: its v20) has what the
    // interpreter loads; a lone executable, its directory.
    for path in [&interpreter, &real] {
        if let Some(dir) = path.parent() {
            let prefix = match (dir.file_name(), dir.parent()) {
                (Some(bin), Some(above)) if bin == "bin" => above,
                _ => dir,
            };
            if is_hidden(prefix, hidden) {
                needs.binds.push(prefix.to_path_buf());
            }
        }
    }
    needs.program = interpreter;
    needs.leading = extra;
    needs.leading.push(program.as_os_str().to_owned());
    Ok(needs)
}

/// A `#!` line: the interpreter and its one optional argument, as Linux splits it.
struct Shebang {
    interpreter: PathBuf,
    argument: Option<OsString>,
}

fn first_line(path: &Path) -> Option<Vec<u8>> {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    let head = &head[..n];
    let line = head.split(|b| *b == b'\n').next()?;
    Some(line.to_vec())
}

fn shebang_of_file(path: &Path) -> bool {
    first_line(path).is_some_and(|l| l.starts_with(b"#!"))
}

fn shebang(path: &Path) -> Option<Shebang> {
    let line = first_line(path)?;
    let rest = line.strip_prefix(b"#!")?;
    let rest = rest.trim_ascii();
    let (interpreter, argument) = match rest.iter().position(|b| b.is_ascii_whitespace()) {
        Some(at) => (&rest[..at], Some(rest[at..].trim_ascii())),
        None => (rest, None),
    };
    Some(Shebang {
        interpreter: PathBuf::from(OsStr::from_bytes(interpreter)),
        argument: argument
            .filter(|a| !a.is_empty())
            .map(|a| OsStr::from_bytes(a).to_owned()),
    })
}

/// Where a Python interpreter lives and where it finds packages.
#[derive(Debug, serde::Deserialize)]
struct PythonPaths {
    executable: PathBuf,
    paths: Vec<PathBuf>,
}

const ASK: &str = "import json, sys; print(json.dumps({'executable': sys.executable, \
    'paths': [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix] + sys.path}))";

/// Asks `python` (with the job's environment) where it lives, confined: the whole file system
/// read-only, no network, its own pid namespace, killed at [`ASK_TIMEOUT`].
fn ask_python(python: &Path, env: &[(OsString, OsString)]) -> Result<PythonPaths, String> {
    let cannot = |why: String| {
        format!(
            "cannot run {} in the sandbox: asking it where its packages are failed: {why}",
            python.display()
        )
    };
    let bwrap = super::bwrap().map_err(|why| cannot(why.to_owned()))?;
    let mut command = Command::new(bwrap);
    if !super::is_root() {
        command.arg("--unshare-user-try");
    }
    command
        .args([
            "--unshare-pid",
            "--unshare-net",
            "--unshare-ipc",
            "--die-with-parent",
            "--new-session",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--chdir",
            "/",
            "--",
        ])
        .arg(python)
        .args(["-c", ASK])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|err| cannot(err.to_string()))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| cannot("no pipe".into()))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| cannot("no pipe".into()))?;
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = (&mut stdout).take(1 << 20).read_to_end(&mut text);
        let mut err = Vec::new();
        let _ = (&mut stderr).take(64 << 10).read_to_end(&mut err);
        (text, err)
    });
    let until = Instant::now() + ASK_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
            _ => break None,
        }
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        let _ = reader.join();
        return Err(cannot(format!("no answer within {ASK_TIMEOUT:?}")));
    };
    let (text, err) = reader.join().unwrap_or_default();
    if !status.success() {
        let said = String::from_utf8_lossy(&err);
        return Err(cannot(format!(
            "{status}: {}",
            said.lines().last().unwrap_or("").trim()
        )));
    }
    serde_json::from_slice(&text).map_err(|err| cannot(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shebang_line_splits_as_linux_splits_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("s");
        std::fs::write(&script, "#!/usr/bin/env  python3 -u\nprint()\n").expect("write");
        let found = shebang(&script).expect("a #! line");
        assert_eq!(found.interpreter, Path::new("/usr/bin/env"));
        assert_eq!(found.argument.as_deref(), Some(OsStr::new("python3 -u")));
        std::fs::write(&script, "\x7fELF...").expect("write");
        assert!(shebang(&script).is_none());
    }

    #[test]
    fn a_program_in_a_hidden_directory_has_its_directory_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = dir.path().join("offload-x");
        std::fs::write(&program, b"\x7fELF").expect("write");
        let hidden = [dir.path().to_path_buf()];
        let needs = work_out(&program, &[], &hidden).expect("needs");
        assert!(needs.binds.contains(&dir.path().to_path_buf()));
        assert_eq!(needs.program, program);
        let outside = work_out(&program, &[], &[PathBuf::from("/nonexistent")]).expect("needs");
        assert!(outside.binds.is_empty());
    }

    #[test]
    fn a_foreign_shim_in_a_hidden_directory_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("shims");
        std::fs::create_dir(&bin).expect("mkdir");
        std::fs::write(bin.join("ruby"), "#!/bin/sh\nexec ruby \"$@\"\n").expect("shim");
        let program = dir.path().join("offload-x");
        std::fs::write(&program, "#!/usr/bin/env ruby\nputs 1\n").expect("write");
        let env = [(OsString::from("PATH"), bin.clone().into_os_string())];
        // which_in needs the shim to be executable.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("ruby"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let err = work_out(&program, &env, &[dir.path().to_path_buf()]).expect_err("refused");
        assert!(err.contains("is itself a script"), "{err}");
    }
}
