//! Suite `thumbnails`: a folder of 1920x1080 JPEG photos to 256 px PNG thumbnails at -j
//! <cores>, `offload run thumbnail --files` against GNU parallel + ImageMagick's
//! `convert -thumbnail` and GNU parallel + `vipsthumbnail` (a process per image both), and
//! against `vipsthumbnail`'s own batch mode (one process for every image), per CPU second.
//!
//! The photos are made once with ImageMagick (`plasma:`, seeded, lightly blurred, quality 90:
//! about 400 KB each, like a phone photo's entropy) and kept in `target/bench-photos`. Each
//! method writes to a fresh directory; every run's outputs are counted and one is checked to be
//! a 256x144 PNG.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::{
    die, heading, measure, median, num, progress, ratio_cell, verdict, Env, OrDie, Sample, Table,
};

pub struct Options {
    pub photos: usize,
    pub rounds: usize,
    pub parallel: usize,
}

/// ImageMagick's `convert`: the first on PATH that says it is ImageMagick, else /usr/bin's.
fn imagemagick() -> Option<PathBuf> {
    let is_magick = |program: &Path| {
        Command::new(program)
            .arg("-version")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("ImageMagick"))
    };
    ["convert", "/usr/bin/convert"]
        .iter()
        .map(PathBuf::from)
        .find(|p| is_magick(p))
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Makes (or finds) `count` 1920x1080 JPEG photos.
fn photos(env: &Env, convert: &Path, count: usize, parallel: usize) -> Vec<PathBuf> {
    let dir = env.root.join("target/bench-photos");
    std::fs::create_dir_all(&dir).or_die("creating target/bench-photos");
    let paths: Vec<PathBuf> = (0..count)
        .map(|i| dir.join(format!("photo-{i:04}.jpg")))
        .collect();
    let missing: Vec<(usize, &PathBuf)> = paths
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.exists())
        .collect();
    if !missing.is_empty() {
        progress(format!(
            "thumbnails: making {} photos with ImageMagick (once)",
            missing.len()
        ));
    }
    for chunk in missing.chunks(parallel.max(1)) {
        let children: Vec<_> = chunk
            .iter()
            .map(|(i, path)| {
                let colours = ["fuchsia-navy", "orange-teal", "gold-purple", "green-brown"];
                Command::new(convert)
                    .args(["-seed", &i.to_string(), "-size", "1920x1080"])
                    .arg(format!("plasma:{}", colours[i % colours.len()]))
                    .args(["-blur", "0x1", "-quality", "90"])
                    .arg(path)
                    .spawn()
                    .or_die("running convert")
            })
            .collect();
        for mut child in children {
            let status = child.wait().or_die("waiting for convert");
            if !status.success() {
                die("thumbnails: convert could not make a photo");
            }
        }
    }
    paths
}

/// (width, height) from a PNG's IHDR.
fn png_size(path: &Path) -> Option<(u32, u32)> {
    let bytes = std::fs::read(path).ok()?;
    if !bytes.starts_with(b"\x89PNG\r\n\x1a\n") || bytes.len() < 24 {
        return None;
    }
    let word =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Some((word(16), word(20)))
}

/// The machine's busy CPU seconds during a run: ours, our children's, and the rest (workers
/// that a child ended without waiting for are only in the last).
fn machine_cpu(sample: &Sample) -> f64 {
    sample.other_load * sample.secs() + (sample.host_cpu + sample.child_cpu).as_secs_f64()
}

/// Runs `command` into the empty directory `out`, checks its outputs, and measures it.
fn timed(name: &str, mut command: Command, out: &Path, count: usize) -> Sample {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).or_die("creating an output directory");
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let (output, sample) = measure(|| command.output().or_die("running a thumbnail method"));
    if !output.status.success() {
        die(format!(
            "thumbnails: {name} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let mut made: Vec<PathBuf> = std::fs::read_dir(out)
        .or_die("listing outputs")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    made.sort();
    if made.len() != count {
        die(format!(
            "thumbnails: {name} made {} of {count} thumbnails",
            made.len()
        ));
    }
    if png_size(&made[0]) != Some((256, 144)) {
        die(format!(
            "thumbnails: {name} made {:?}, not a 256x144 PNG",
            png_size(&made[0])
        ));
    }
    sample
}

pub fn run(env: &Env, options: &Options) {
    let Some(convert) = imagemagick() else {
        println!(
            "\n## Thumbnails\n\nImageMagick is not installed (dev/bench installs it): skipped.\n"
        );
        return;
    };
    if !have("vipsthumbnail") || !have("parallel") {
        println!(
            "\n## Thumbnails\n\nvipsthumbnail or GNU parallel is missing (dev/bench installs \
             libvips-tools and parallel): skipped.\n"
        );
        return;
    }
    let p = options.parallel;
    let n = options.photos;
    heading(
        "Thumbnails: a folder of photos",
        &format!(
            "{n} JPEG photos of 1920x1080 (ImageMagick `plasma:`, ~400 KB each) to 256 px PNG \
             thumbnails (256x144), at -j {p}, {r} rounds, methods in turn; every run's outputs \
             are counted and checked. `offload run thumbnail --files` runs persistent workers \
             (JPEG decoded at 1/4 scale by the DCT, Lanczos3 resampling, fast PNG). GNU \
             parallel starts `convert IN -thumbnail 256x256 OUT.png` or `vipsthumbnail IN \
             --size 256 -o OUT.png` per photo; `vipsthumbnail` batch is one process given every \
             photo (libvips may use threads). CPU is the machine's busy time during the run \
             (/proc/stat): a process's own accounting misses workers it does not wait for.",
            r = options.rounds
        ),
    );
    let inputs = photos(env, &convert, n, p);
    let work = env.root.join("target/bench-thumbnails");
    let offload = env.exe("offload");
    let jobs = p.to_string();
    type Make = Box<dyn Fn(&Path) -> Command>;
    let methods: Vec<(&str, Make)> = vec![
        ("offload run thumbnail --files", {
            let (offload, inputs, jobs) = (offload.clone(), inputs.clone(), jobs.clone());
            Box::new(move |out: &Path| {
                let mut c = Command::new(&offload);
                c.args([
                    "run",
                    "thumbnail",
                    "-j",
                    &jobs,
                    "--param",
                    "size=256",
                    "--files",
                ])
                .args(&inputs)
                .arg("--output-dir")
                .arg(out);
                c
            })
        }),
        ("GNU parallel + convert -thumbnail", {
            let (convert, inputs, jobs) = (convert.clone(), inputs.clone(), jobs.clone());
            Box::new(move |out: &Path| {
                let mut c = Command::new("parallel");
                c.args(["--will-cite", "-j", &jobs])
                    .arg(format!(
                        "{} {{}} -thumbnail 256x256 {}/{{/.}}.png",
                        convert.display(),
                        out.display()
                    ))
                    .arg(":::")
                    .args(&inputs);
                c
            })
        }),
        ("GNU parallel + vipsthumbnail", {
            let (inputs, jobs) = (inputs.clone(), jobs.clone());
            Box::new(move |out: &Path| {
                let mut c = Command::new("parallel");
                c.args(["--will-cite", "-j", &jobs])
                    .arg(format!(
                        "vipsthumbnail {{}} --size 256 -o {}/%s.png",
                        out.display()
                    ))
                    .arg(":::")
                    .args(&inputs);
                c
            })
        }),
        ("vipsthumbnail batch (one process)", {
            let inputs = inputs.clone();
            Box::new(move |out: &Path| {
                let mut c = Command::new("vipsthumbnail");
                c.args(&inputs)
                    .args(["--size", "256", "-o"])
                    .arg(format!("{}/%s.png", out.display()));
                c
            })
        }),
    ];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); methods.len()];
    for round in 0..options.rounds {
        for (i, (name, make)) in methods.iter().enumerate() {
            let out = work.join(format!("m{i}"));
            let sample = timed(name, make(&out), &out, n);
            progress(format!(
                "thumbnails round {round}: {name} {:.1} photos/s",
                n as f64 / sample.secs()
            ));
            samples[i].push(sample);
        }
    }
    let rates: Vec<Vec<f64>> = samples
        .iter()
        .map(|s| s.iter().map(|s| n as f64 / s.secs()).collect())
        .collect();
    let per_cpu: Vec<f64> = samples
        .iter()
        .map(|s| {
            median(
                &s.iter()
                    .map(|s| n as f64 / machine_cpu(s).max(1e-9))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let mut table = Table::new(&[
        "method",
        "photos/s (median)",
        "ms per photo (wall)",
        "photos per CPU second (machine)",
        "offload against it (per round)",
    ]);
    for (i, (name, _)) in methods.iter().enumerate() {
        let ratios: Vec<f64> = rates[0].iter().zip(&rates[i]).map(|(o, m)| o / m).collect();
        table.row(vec![
            (*name).to_owned(),
            num(median(&rates[i]), 1),
            num(1e3 / median(&rates[i]), 1),
            num(per_cpu[i], 1),
            ratio_cell(&ratios),
        ]);
    }
    println!("{table}");
    let against = |i: usize| median(&rates[0]) / median(&rates[i]);
    app_rows(env, options, &inputs, &work, median(&rates[0]));
    println!(
        "- offload against GNU parallel + convert: {:.2}x (target 2x or more: {}).",
        against(1),
        verdict(against(1), 2.0, true)
    );
    println!(
        "- offload against GNU parallel + vipsthumbnail: {:.2}x (target 1.0x or more: {}).",
        against(2),
        verdict(against(2), 1.0, true)
    );
    println!(
        "- Per CPU second, offload against vipsthumbnail's own batch mode: {:.2}x; wall \
         time, offload at -j {p} against the one batch process: {:.2}x.\n",
        per_cpu[0] / per_cpu[3],
        against(3)
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// The same batch in the app (`offload gui --processor thumbnail ... --exit-when-done` under
/// Xvfb, cairo renderer), with its main-loop stalls: wall time includes the app's start and
/// end, which the command-line runs do not have.
fn app_rows(env: &Env, options: &Options, inputs: &[PathBuf], work: &Path, cli_rate: f64) {
    if !crate::gui::have_xvfb() {
        println!("- The app: xvfb-run is missing (dev/setup installs it): not measured.\n");
        return;
    }
    let n = inputs.len();
    let mut runs = Vec::new();
    for round in 0..options.rounds {
        let out = work.join("app");
        let _ = std::fs::remove_dir_all(&out);
        let mut args: Vec<std::ffi::OsString> = vec![
            "--processor".into(),
            "thumbnail".into(),
            "--param".into(),
            "size=256".into(),
            "--output-dir".into(),
            out.clone().into(),
        ];
        args.extend(inputs.iter().map(|p| p.clone().into_os_string()));
        let run = crate::gui::run_gui_with(
            env,
            &args,
            options.parallel,
            "cairo",
            std::time::Duration::from_secs(600),
        )
        .unwrap_or_else(|err| die(format!("thumbnails: the app: {err}")));
        let made = std::fs::read_dir(&out).map_or(0, |d| d.count());
        if run.status != 0 || made != n {
            die(format!(
                "thumbnails: the app exited {} and made {made} of {n} thumbnails",
                run.status
            ));
        }
        progress(format!(
            "thumbnails round {round}: the app {:.1} photos/s, stall max {:.1} ms p99 {:.1} ms",
            n as f64 / run.sample.secs(),
            run.max_ms,
            run.p99_ms
        ));
        runs.push(run);
    }
    let rate = median(
        &runs
            .iter()
            .map(|r| n as f64 / r.sample.secs())
            .collect::<Vec<_>>(),
    );
    let max = median(&runs.iter().map(|r| r.max_ms).collect::<Vec<_>>());
    let p99 = median(&runs.iter().map(|r| r.p99_ms).collect::<Vec<_>>());
    let rss = median(
        &runs
            .iter()
            .map(|r| r.peak_rss_kib as f64 / 1024.0)
            .collect::<Vec<_>>(),
    );
    println!(
        "- The same batch in the app: {rate:.1} photos/s ({:.2}x `offload run`, start and \
         end of the app included), main-loop stall max {max:.1} ms, p99 {p99:.1} ms (target: \
         max under 16 ms: {}), peak RSS {rss:.0} MiB.",
        rate / cli_rate,
        verdict(max, 16.0, false)
    );
}
