//! What a desktop needs to start the app: a valid desktop file, metainfo, icon and GSettings
//! schema, installed by `dev/install` where a desktop finds them, and the launcher's command
//! starting the app.

mod common;

use std::process::Command;
use std::time::Duration;

const ID: &str = "io.github.offload.Offload";

fn data(name: &str) -> std::path::PathBuf {
    common::root().join("data/desktop").join(name)
}

#[test]
fn the_desktop_file_and_the_metainfo_are_valid() {
    let out = Command::new("desktop-file-validate")
        .arg(data(&format!("{ID}.desktop")))
        .output()
        .expect("desktop-file-validate (dev/setup installs desktop-file-utils)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new("appstreamcli")
        .args(["validate", "--no-net"])
        .arg(data(&format!("{ID}.metainfo.xml")))
        .output()
        .expect("appstreamcli (dev/setup installs appstream)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn dev_install_puts_everything_where_a_desktop_finds_it_and_the_launcher_starts_the_app() {
    let prefix = tempfile::tempdir().expect("tempdir");
    let out = Command::new(common::root().join("dev/install"))
        .arg("--prefix")
        .arg(prefix.path())
        .arg("--bin-dir")
        .arg(common::bin_dir())
        .output()
        .expect("dev/install");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let share = prefix.path().join("share");
    for path in [
        format!("applications/{ID}.desktop"),
        format!("metainfo/{ID}.metainfo.xml"),
        format!("icons/hicolor/scalable/apps/{ID}.svg"),
        format!("glib-2.0/schemas/{ID}.gschema.xml"),
        "glib-2.0/schemas/gschemas.compiled".to_owned(),
    ] {
        assert!(share.join(&path).is_file(), "{path} is not installed");
    }
    let bin = prefix.path().join("bin");
    let path = format!("{}:/usr/bin:/bin", bin.display());
    // The installed command finds the processors installed beside it.
    let list = Command::new(bin.join("offload"))
        .arg("list")
        .env("PATH", &path)
        .env_remove("OFFLOAD_PROCESSOR_PATH")
        .output()
        .expect("offload list");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains("thumbnail") && listed.contains(&bin.display().to_string()),
        "{listed}"
    );
    // The schema is where GSettings looks.
    let keys = Command::new("gsettings")
        .args(["list-keys", ID])
        .env("GSETTINGS_SCHEMA_DIR", share.join("glib-2.0/schemas"))
        .output()
        .expect("gsettings");
    assert!(String::from_utf8_lossy(&keys.stdout).contains("output-folder"));

    // The launcher's command starts the app, which stays up until asked to quit.
    let desktop = std::fs::read_to_string(share.join(format!("applications/{ID}.desktop")))
        .expect("the desktop file");
    let exec = desktop
        .lines()
        .find_map(|l| l.strip_prefix("Exec="))
        .expect("an Exec line");
    let mut app = Command::new("sh")
        .args(["-c", &format!("exec {exec}")])
        .env("PATH", &path)
        .env("GSETTINGS_BACKEND", "memory")
        .spawn()
        .expect("start the app as the launcher would");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        app.try_wait().expect("wait").is_none(),
        "the app ended at start"
    );
    // A loaded machine may take longer to get the app to where it handles SIGTERM (its
    // handler shows in SigCgt): wait for that, not for a time.
    let catches_sigterm = || {
        std::fs::read_to_string(format!("/proc/{}/status", app.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("SigCgt:"))
                    .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            })
            .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
    };
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !catches_sigterm() {
        assert!(
            std::time::Instant::now() < until,
            "the app never handles SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: a signal to the process this test started.
    unsafe { libc::kill(app.id() as libc::pid_t, libc::SIGTERM) };
    let status = app.wait().expect("wait");
    assert!(status.success(), "{status}");
}

#[test]
fn the_settings_default_nice_is_the_librarys() {
    let schema = std::fs::read_to_string(data(&format!("{ID}.gschema.xml"))).expect("schema");
    let key = schema
        .split("<key name=\"nice\"")
        .nth(1)
        .expect("the schema has a nice key");
    let default: i32 = key
        .split("<default>")
        .nth(1)
        .and_then(|rest| rest.split("</default>").next())
        .and_then(|text| text.trim().parse().ok())
        .expect("the nice key has a numeric default");
    assert_eq!(default, offload::job::DEFAULT_NICE);
}
