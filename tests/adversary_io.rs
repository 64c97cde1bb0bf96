//! Adversaries at offload's inputs and outputs: links planted in a shared output directory, a
//! kill in the middle of a write, a full disk, an endless line, a FIFO or a device among the
//! files, an image that declares more pixels than anyone has memory for.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{offload, root};
use offload::sdk::decode::{decode_one, DecodeLimits};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}")))
        .collect()
}

fn write_lines(dir: &Path, name: &str, inputs: &[serde_json::Value]) -> PathBuf {
    let text: String = inputs.iter().map(|i| format!("{i}\n")).collect();
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A file only its owner may read or write, as root's own files are.
fn secret_file(dir: &Path) -> PathBuf {
    let secret = dir.join("secret");
    std::fs::write(&secret, b"root's own\n").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    secret
}

fn assert_unchanged(secret: &Path) {
    assert_eq!(
        std::fs::read(secret).expect("read"),
        b"root's own\n",
        "written through a planted link"
    );
    let mode = std::fs::metadata(secret)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Runs `command` to its end, killing it (and failing) if it takes more than `limit`.
fn output_within(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let until = Instant::now() + limit;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "still running after {limit:?}, killed; stderr: {}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("wait")
}

#[test]
fn links_planted_at_every_output_name_are_never_written_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_file(dir.path());
    let out_dir = dir.path().join("shared");
    std::fs::create_dir(&out_dir).expect("mkdir");
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o1777)).expect("chmod");

    // --output-dir: the final names and the temporary names offload used to write.
    for i in 0..3 {
        for name in [format!("{i}.cbor"), format!(".{i}.cbor.partial")] {
            std::os::unix::fs::symlink(&secret, out_dir.join(name)).expect("symlink");
        }
    }
    let inputs: Vec<_> = (0..3).map(|i| serde_json::json!({"echo": i})).collect();
    let path = write_lines(dir.path(), "in.jsonl", &inputs);
    let out = offload()
        .args(["run", "diag", "--inputs"])
        .arg(&path)
        .arg("--output-dir")
        .arg(&out_dir)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_unchanged(&secret);
    for i in 0..3 {
        let file = out_dir.join(format!("{i}.cbor"));
        let meta = std::fs::symlink_metadata(&file).expect("meta");
        assert!(meta.file_type().is_file(), "{i}.cbor replaced the link");
        let value: ciborium::Value = decode_one(
            &std::fs::read(&file).expect("read"),
            DecodeLimits::default(),
        )
        .expect("one CBOR item");
        assert_eq!(
            common::field(&value, "echo"),
            Some(&ciborium::Value::from(i))
        );
    }

    // --files: links at the output's name and at the next numbered one.
    for name in ["glow.png", "glow-2.png"] {
        std::os::unix::fs::symlink(&secret, out_dir.join(name)).expect("symlink");
    }
    let out = offload()
        .args(["run", "thumbnail", "--param", "size=16", "--files"])
        .arg(root().join("data/images/glow.png"))
        .arg("--output-dir")
        .arg(&out_dir)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        lines(&out)[0]["output"],
        json_path(&out_dir.join("glow-3.png"))
    );
    assert_unchanged(&secret);
    for name in ["glow.png", "glow-2.png"] {
        let meta = std::fs::symlink_metadata(out_dir.join(name)).expect("meta");
        assert!(meta.file_type().is_symlink(), "{name} was left alone");
    }
    let names = names_in(&out_dir);
    assert!(
        names.iter().all(|n| !n.starts_with(".offload")),
        "no temporary file is left: {names:?}"
    );
}

fn json_path(path: &Path) -> serde_json::Value {
    serde_json::Value::from(path.display().to_string())
}

/// The file descriptors of `pid` open on a file in `dir` (the directory itself left out).
fn open_in(pid: u32, dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.starts_with(&prefix))
        .collect()
}

/// The state letter of `pid` (R, S, T, Z...).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[test]
fn kill_9_in_the_middle_of_a_write_leaves_only_complete_outputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("results");
    // Results of 48 MiB: writing one takes long enough to be seen.
    let size = 48 << 20;
    let inputs: Vec<_> = (0..12)
        .map(|i| serde_json::json!({"echo": i, "output_bytes": size}))
        .collect();
    let path = write_lines(dir.path(), "in.jsonl", &inputs);
    let mut child = offload()
        .args(["run", "diag", "-j", "1", "--inputs"])
        .arg(&path)
        .arg("--output-dir")
        .arg(&out_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    // Wait until offload has a file in the output directory open (it is writing one), stop
    // it, check that it still has, and kill it there.
    let until = Instant::now() + Duration::from_secs(120);
    let caught = loop {
        assert!(Instant::now() < until, "never seen writing");
        if child.try_wait().expect("try_wait").is_some() {
            break None;
        }
        if open_in(pid, &out_dir).is_empty() {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        while state(pid).is_some_and(|s| s != 'T') {
            std::thread::sleep(Duration::from_micros(100));
        }
        let open = open_in(pid, &out_dir);
        if !open.is_empty() {
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            break Some(open);
        }
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    };
    let _ = child.wait();
    let open = caught.expect("offload ended before it was seen writing an output");
    eprintln!("killed while writing: {open:?}");
    // Only complete outputs: N.cbor, each one whole CBOR item with all its bytes.
    for name in names_in(&out_dir) {
        let index: usize = name
            .strip_suffix(".cbor")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a file other than an output is left: {name}"));
        let bytes = std::fs::read(out_dir.join(&name)).expect("read");
        let limits = DecodeLimits {
            max_bytes: 1 << 30,
            ..DecodeLimits::default()
        };
        let value: ciborium::Value = decode_one(&bytes, limits)
            .unwrap_or_else(|e| panic!("{name} is not complete ({} bytes): {e}", bytes.len()));
        assert_eq!(common::field(&value, "echo"), Some(&(index as u64).into()));
        let filler = common::field(&value, "filler").and_then(|f| f.as_bytes());
        assert_eq!(filler.map(Vec::len), Some(size), "{name}");
    }
}

/// A 64 KiB tmpfs mounted at a new directory, unmounted when dropped; `None` where this
/// process may not mount one (not root).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path) -> Option<Self> {
        std::fs::create_dir(at).expect("mkdir");
        let done = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "offload-test"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        done.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_that_job_as_output_not_written_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("small");
    let disk = SmallDisk::mount(&out_dir);
    let inputs = [
        serde_json::json!({"echo": 0}),
        serde_json::json!({"echo": 1, "output_bytes": 1 << 20}),
        serde_json::json!({"echo": 2}),
    ];
    let path = write_lines(dir.path(), "in.jsonl", &inputs);
    let mut command = offload();
    command
        .args(["run", "diag", "-j", "1", "--inputs"])
        .arg(&path)
        .arg("--output-dir")
        .arg(&out_dir);
    if disk.is_none() {
        // Not allowed to mount a small disk: a file size limit fails the write the same way
        // (EFBIG instead of ENOSPC), with SIGXFSZ ignored as a program that handles it.
        eprintln!("cannot mount a tmpfs here: a file size limit stands in for a full disk");
        use std::os::unix::process::CommandExt as _;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let limit = libc::rlimit {
                    rlim_cur: 64 << 10,
                    rlim_max: 64 << 10,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = command.output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let lines = lines(&out);
    assert_eq!(lines[0]["status"], "ok");
    assert_eq!(lines[2]["status"], "ok");
    let failed = &lines[1];
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error"]["kind"], "output_not_written", "{failed}");
    let message = failed["error"]["message"].as_str().expect("text");
    assert!(
        message.contains("1.cbor")
            && (message.contains("No space left") || message.contains("File too large")),
        "{message}"
    );
    assert_eq!(
        names_in(&out_dir),
        ["0.cbor", "2.cbor"],
        "nothing else left"
    );
    drop(disk);
}

/// Starts `command` with an endless line on its stdin (a JSON string that never ends, written
/// until nobody reads), waits for it to end while sampling its peak resident memory, and kills
/// it (and says so) once that passes `max_rss` or after `limit`.
fn run_on_an_endless_line(mut command: Command, max_rss: u64, limit: Duration) -> (Output, u64) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::spawn(move || {
        use std::io::Write as _;
        let chunk = vec![b'a'; 1 << 16];
        let _ = stdin.write_all(b"\"");
        while stdin.write_all(&chunk).is_ok() {}
    });
    let pid = child.id();
    let until = Instant::now() + limit;
    let mut peak = 0;
    while child.try_wait().expect("try_wait").is_none() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let hwm_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        peak = peak.max(hwm_kib * 1024);
        if peak > max_rss || Instant::now() > until {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "killed after {:.1} s with {} MiB resident; stderr: {}",
                (Instant::now() + limit - until).as_secs_f64(),
                peak >> 20,
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (child.wait_with_output().expect("wait"), peak)
}

#[test]
fn an_endless_line_ends_the_run_with_a_clear_error_and_bounded_memory() {
    let mut command = offload();
    command.args(["run", "diag", "--inputs", "-", "--max-input", "1M"]);
    let (out, peak) = run_on_an_endless_line(command, 100 << 20, Duration::from_secs(60));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "standard input line 1 is over the input limit of 1048576 bytes \
             (--max-input raises it)"
        ),
        "{stderr}"
    );
    assert!(lines(&out).is_empty());
    eprintln!("peak resident memory: {} MiB", peak >> 20);
}

#[test]
fn an_endless_line_under_an_address_space_limit_is_an_error_not_an_abort() {
    use std::os::unix::process::CommandExt as _;
    // With a small --max-input, and with the default (1 GiB), which this address space cannot
    // hold: the line's buffer cannot grow, and that is a bad input like any other.
    for max_input in [Some("1M"), None] {
        let mut command = offload();
        command.args(["run", "diag", "--inputs", "-"]);
        if let Some(size) = max_input {
            command.args(["--max-input", size]);
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 768 << 20,
                    rlim_max: 768 << 20,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (out, _) = run_on_an_endless_line(command, 1 << 30, Duration::from_secs(120));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{max_input:?}: {stderr}");
        assert!(
            stderr.contains("standard input line 1"),
            "{max_input:?}: {stderr}"
        );
        for abort in ["memory allocation of", "panicked", "backtrace"] {
            assert!(!stderr.contains(abort), "{max_input:?}: {stderr}");
        }
        eprintln!("{max_input:?}: {stderr}");
    }
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success());
}

#[test]
fn a_fifo_and_a_link_to_dev_zero_among_the_files_are_skipped_and_the_others_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).expect("mkdir");
    for name in ["plasma.jpg", "glow.png"] {
        std::fs::copy(root().join("data/images").join(name), photos.join(name)).expect("copy");
    }
    mkfifo(&photos.join("x.jpg"));
    std::os::unix::fs::symlink("/dev/zero", photos.join("y.jpg")).expect("symlink");
    std::fs::create_dir(photos.join("z.png")).expect("mkdir");
    // A link to a regular file still runs.
    std::os::unix::fs::symlink(photos.join("glow.png"), photos.join("linked.png")).expect("ln");
    let out_dir = dir.path().join("thumbs");
    let mut command = offload();
    command
        .args(["run", "thumbnail", "--param", "size=32", "--files"])
        .args(
            [
                "plasma.jpg",
                "x.jpg",
                "y.jpg",
                "z.png",
                "linked.png",
                "glow.png",
            ]
            .map(|name| photos.join(name)),
        )
        .arg("--output-dir")
        .arg(&out_dir);
    let out = output_within(command, Duration::from_secs(60));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "files were skipped: {stderr}");
    for (name, why) in [
        ("x.jpg", "not a regular file (a FIFO)"),
        ("y.jpg", "not a regular file (a link to a character device)"),
        ("z.png", "not a regular file (a directory)"),
    ] {
        let said = format!("skipped {}: {why}", photos.join(name).display());
        assert!(stderr.contains(&said), "{said:?} in {stderr}");
    }
    assert!(stderr.contains("3 files skipped"), "{stderr}");
    let lines = lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l["status"] == "ok"), "{lines:?}");
    assert_eq!(names_in(&out_dir), ["glow.png", "linked.png", "plasma.png"]);
}

/// CRC-32 (ISO-HDLC, as PNG chunks use), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG of a few dozen bytes whose header declares `width` x `height` RGB pixels, with an
/// IDAT that holds none of them.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    // A zlib stream of nothing: one empty stored block, and the Adler-32 of nothing.
    chunk(
        b"IDAT",
        &[0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 1],
    );
    chunk(b"IEND", &[]);
    png
}

/// A real JPEG whose frame header (SOF) is changed to declare `width` x `height`.
fn jpeg_declaring(width: u16, height: u16) -> Vec<u8> {
    let mut jpeg = std::fs::read(root().join("data/images/plasma.jpg")).expect("a JPEG");
    let mut at = 2;
    while at + 4 <= jpeg.len() {
        assert_eq!(jpeg[at], 0xFF, "a marker at {at}");
        let marker = jpeg[at + 1];
        if matches!(marker, 0xC0..=0xC2) {
            jpeg[at + 5..at + 7].copy_from_slice(&height.to_be_bytes());
            jpeg[at + 7..at + 9].copy_from_slice(&width.to_be_bytes());
            return jpeg;
        }
        at += 2 + usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
    }
    panic!("no frame header in plasma.jpg");
}

#[test]
fn images_declaring_60000x60000_are_refused_before_decoding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let huge_png = dir.path().join("huge.png");
    let huge_jpg = dir.path().join("huge.jpg");
    std::fs::write(&huge_png, png_declaring(60000, 60000)).expect("write");
    std::fs::write(&huge_jpg, jpeg_declaring(60000, 60000)).expect("write");
    let fine = root().join("data/images/glow.png");
    for processor in ["thumbnail", "blur"] {
        let out_dir = dir.path().join(processor);
        // The timeout only bounds a regression; the outcome is what is checked.
        let out = offload()
            .args(["run", processor, "--timeout", "60", "--files"])
            .args([&huge_png, &huge_jpg, &fine])
            .arg("--output-dir")
            .arg(&out_dir)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let lines = lines(&out);
        for line in &lines[..2] {
            assert_eq!(line["status"], "failed", "{processor}: {line}");
            let reported = &line["error"]["reported"];
            assert_eq!(reported["kind"], "invalid_input", "{processor}: {line}");
            let message = reported["error"].as_str().expect("text");
            assert!(
                message.contains(
                    "the image is 60000x60000 (3600000000 pixels), over the limit \
                     of 100000000 pixels (the max_pixels parameter raises it)"
                ),
                "{processor}: {message}"
            );
        }
        assert_eq!(lines[2]["status"], "ok", "{processor}: {}", lines[2]);
        assert_eq!(names_in(&out_dir), ["glow.png"]);
    }
    // A lower limit is a parameter like the others.
    let out = offload()
        .args(["run", "thumbnail", "--param", "max_pixels=1000", "--files"])
        .arg(&fine)
        .arg("--output-dir")
        .arg(dir.path().join("low"))
        .output()
        .expect("run");
    let line = &lines(&out)[0];
    assert_eq!(line["error"]["reported"]["kind"], "invalid_input", "{line}");
    assert!(
        line["error"]["reported"]["error"]
            .as_str()
            .is_some_and(|m| m.contains("320x200 (64000 pixels), over the limit of 1000")),
        "{line}"
    );
}
