//! What an app that embeds offload gets: the engine alone, without the command's or the app's
//! crates.

use std::process::Command;

#[test]
fn the_engine_alone_pulls_no_cli_or_gtk_crate() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "-p",
            "offload",
            "--no-default-features",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: std::collections::BTreeSet<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    // The engine's own: it is really this crate's tree.
    for needed in [
        "offload",
        "offload-sdk",
        "glib",
        "ciborium",
        "async-channel",
    ] {
        assert!(crates.contains(needed), "{needed} missing from {crates:?}");
    }
    for unwanted in [
        "clap",
        "indicatif",
        "anyhow",
        "png",
        "glib-unix",
        "gtk4",
        "gdk4",
        "libadwaita",
        "cairo-rs",
        "pango",
    ] {
        assert!(
            !crates.contains(unwanted),
            "the engine alone pulls {unwanted}: {crates:?}"
        );
    }
}
