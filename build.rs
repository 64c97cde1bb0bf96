//! Builds `offload-guard` (src/runner/guard.c), the small process between the host and each
//! processor, which the engine embeds and executes from memory: see that file for why it
//! exists. It is built without a C library on x86-64 and AArch64 (its exec is on every job's
//! path: ~0.2 ms against ~0.6 ms for a static glibc binary), against the C library elsewhere.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "src/runner/guard.c";
    println!("cargo:rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = out.join("offload-guard");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let compiler = cc::Build::new()
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .get_compiler();
    let mut command: Command = compiler.to_command();
    if matches!(arch.as_str(), "x86_64" | "aarch64") {
        command.args([
            "-static",
            "-nostdlib",
            "-fno-pie",
            "-no-pie",
            "-fno-stack-protector",
            "-fno-asynchronous-unwind-tables",
            "-ffreestanding",
            "-fno-builtin",
        ]);
    } else {
        command.arg("-DGUARD_LIBC");
    }
    let status = command
        .args(["-O2", "-o"])
        .arg(&target)
        .arg(source)
        .status()
        .unwrap_or_else(|err| panic!("cannot run the C compiler for {source}: {err}"));
    assert!(
        status.success(),
        "building {source} failed ({status}); offload needs a C compiler (gcc or clang) to build its guard process"
    );
    if std::env::var_os("CARGO_FEATURE_GUI").is_some() {
        compile_schema(&out);
    }
}

/// The app's GSettings schema, compiled for a run from the build directory (an installed app
/// finds the one `dev/install` puts in the system's schema directory first). Without
/// glib-compile-schemas the app keeps its settings in memory.
fn compile_schema(out: &std::path::Path) {
    let dir = "data/desktop";
    println!("cargo:rerun-if-changed={dir}/io.github.offload.Offload.gschema.xml");
    let target = out.join("schemas");
    let _ = std::fs::create_dir_all(&target);
    let compiled = Command::new("glib-compile-schemas")
        .args(["--strict", "--targetdir"])
        .arg(&target)
        .arg(dir)
        .status()
        .is_ok_and(|status| status.success());
    if compiled {
        println!("cargo:rustc-env=OFFLOAD_SCHEMA_DIR={}", target.display());
    } else {
        println!("cargo:warning=glib-compile-schemas failed: the app keeps its settings in memory");
        println!("cargo:rustc-env=OFFLOAD_SCHEMA_DIR=");
    }
}
