//! The app driven the way a person drives it: the real `offload gui` on an X server of its own
//! (Xvfb, 1280x800) with a window manager (openbox); keys and clicks go through the X server
//! with xdotool (never to a window: GTK ignores synthetic events sent to one), a drag comes
//! from another process (examples/drag_source.rs) through XDND, and screenshots are taken of
//! the screen with ImageMagick's `import`. Every wait is on an event (a window appears, a line
//! the app prints with OFFLOAD_TRACE=1, a file, a geometry) with a generous bound, so that a
//! loaded 2-core machine only makes it slower.
//!
//! Needs Xvfb, openbox, xdotool, xprop and import: `dev/setup test` installs them. With
//! OFFLOAD_README_SCREENSHOTS=1 the tests also write the README's pictures (docs/*.png).
//! The screenshots of each run are kept in target/gui-screenshots/ for a person to look at.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One desktop at a time: each is an X server, a window manager and a debug build of the app,
/// which is what a 2-core machine can run beside the other tests.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long any one step may take on a loaded machine before the test gives up.
const STEP: Duration = Duration::from_secs(90);

/// An X server with a window manager, and a home folder for the programs started on it.
struct Desktop {
    display: String,
    xvfb: Child,
    wm: std::cell::RefCell<Child>,
    home: tempfile::TempDir,
    shots: PathBuf,
    name: String,
}

impl Desktop {
    fn start(name: &str) -> Self {
        for tool in ["Xvfb", "openbox", "xdotool", "xprop", "import"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(found, "{tool} is missing: run dev/setup test");
        }
        // The server picks a free display number itself and writes it once it accepts clients
        // (-displayfd): no guessing from lock files, which another mount namespace (a CI
        // container) does not show while its servers hold the same abstract sockets.
        let mut xvfb = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb starts");
        let mut number = String::new();
        let stdout = xvfb.stdout.take().expect("piped");
        std::io::BufReader::new(stdout)
            .read_line(&mut number)
            .expect("Xvfb writes its display number");
        let number = number.trim();
        assert!(
            !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()),
            "Xvfb gave no display number ({number:?}): {:?}",
            xvfb.try_wait()
        );
        let display = format!(":{number}");
        let home = tempfile::tempdir().expect("tempdir");
        let wm = start_openbox(&display, home.path());
        let shots = common::bin_dir()
            .parent()
            .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
            .join("gui-screenshots");
        let _ = std::fs::create_dir_all(&shots);
        let desktop = Self {
            display,
            xvfb,
            wm: std::cell::RefCell::new(wm),
            home,
            shots,
            name: name.to_owned(),
        };
        // The window manager is up once it has claimed the screen; one that died on the way
        // (its log says why) is started again.
        desktop.wait_for("the window manager", || {
            let out = desktop.run("xprop", &["-root", "_NET_SUPPORTING_WM_CHECK"]);
            if out.contains("window id") {
                return Some(());
            }
            let ended = desktop.wm.borrow_mut().try_wait();
            if let Ok(Some(status)) = ended {
                let log = std::fs::read_to_string(desktop.home.path().join("openbox.log"));
                eprintln!(
                    "openbox on {} ended ({status}), starting it again: {log:?}",
                    desktop.display
                );
                *desktop.wm.borrow_mut() = start_openbox(&desktop.display, desktop.home.path());
            }
            None
        });
        desktop
    }

    /// A command on this display, with the home folder and in-memory settings.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .env("DISPLAY", &self.display)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env("XDG_DATA_HOME", self.home.path().join(".local/share"))
            .env("XDG_CACHE_HOME", self.home.path().join(".cache"))
            .env("GSETTINGS_BACKEND", "memory")
            .env("GTK_A11Y", "none")
            .env("NO_AT_BRIDGE", "1")
            .env("OFFLOAD_TRACE", "1")
            .env_remove("WAYLAND_DISPLAY");
        command
    }

    /// Runs a tool to its end; its stdout.
    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self
            .command(program)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn xdotool(&self, args: &[&str]) -> String {
        self.run("xdotool", args)
    }

    /// Presses keys, as a person at the keyboard (to whichever window has the focus).
    fn keys(&self, keys: &[&str]) {
        for key in keys {
            self.xdotool(&["key", "--delay", "60", key]);
        }
    }

    fn type_text(&self, text: &str) {
        self.xdotool(&["type", "--delay", "30", text]);
    }

    fn click(&self, x: i32, y: i32) {
        self.xdotool(&["mousemove", "--sync", &x.to_string(), &y.to_string()]);
        self.xdotool(&["click", "1"]);
    }

    /// Waits until `probe` gives something, or fails the test after `STEP` (with a
    /// screenshot of what the screen showed).
    fn wait_for<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let until = Instant::now() + STEP;
        loop {
            if let Some(found) = probe() {
                return found;
            }
            if Instant::now() > until {
                let shot = self.screenshot("timeout");
                let log = std::fs::read_to_string(self.home.path().join("app.log"));
                panic!(
                    "waited {STEP:?} for {what}; the screen: {}; the app's stderr: {log:?}",
                    shot.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The id of the visible window whose title matches `name` (a regular expression), once
    /// there is one.
    fn window(&self, name: &str) -> String {
        self.wait_for(&format!("a window named {name:?}"), || {
            self.xdotool(&["search", "--onlyvisible", "--name", name])
                .lines()
                .next()
                .map(str::to_owned)
        })
    }

    /// Gives a window the keyboard focus, as a click on it would.
    fn activate(&self, window: &str) {
        self.xdotool(&["windowactivate", "--sync", window]);
    }

    /// (x, y, width, height) of a window on the screen.
    fn geometry(&self, window: &str) -> (i32, i32, i32, i32) {
        let out = self.xdotool(&["getwindowgeometry", "--shell", window]);
        let get = |key: &str| -> i32 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{key} in {out}"))
        };
        (get("X"), get("Y"), get("WIDTH"), get("HEIGHT"))
    }

    /// A PNG of the whole screen, kept for a person to look at; its path.
    fn screenshot(&self, step: &str) -> PathBuf {
        let path = self.shots.join(format!("{}-{step}.png", self.name));
        self.run("import", &["-window", "root", &path.to_string_lossy()]);
        path
    }

    /// A PNG of one window (the README's pictures).
    fn window_screenshot(&self, window: &str, path: &Path) {
        self.run("import", &["-window", window, &path.to_string_lossy()]);
        assert!(
            path.metadata().is_ok_and(|m| m.len() > 10_000),
            "{}",
            path.display()
        );
    }

    /// Starts `offload gui ARGS...` on this desktop.
    fn app(&self, args: &[&str]) -> Program {
        let mut command = self.command(common::bin_dir().join("offload"));
        command.env("PATH", path_with_bins()).arg("gui").args(args);
        let log = std::fs::File::create(self.home.path().join("app.log")).expect("log");
        command.stderr(log);
        Program::start(command, "offload gui")
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        // SIGTERM, so that the X server removes its lock and socket files.
        for child in [self.wm.get_mut(), &mut self.xvfb] {
            // SAFETY: signalling a child of ours.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

/// openbox on `display`, its stdout and stderr appended to `home`/openbox.log.
fn start_openbox(display: &str, home: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("openbox.log"))
        .expect("log");
    let log2 = log.try_clone().expect("log");
    Command::new("openbox")
        .env("DISPLAY", display)
        .env("HOME", home)
        .stdout(log)
        .stderr(log2)
        .spawn()
        .expect("openbox starts")
}

fn path_with_bins() -> String {
    format!(
        "{}:{}",
        common::bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A program whose stdout lines are collected as they come, to wait on.
struct Program {
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    /// Lines before this one have been waited for already.
    seen: std::cell::Cell<usize>,
    name: String,
}

impl Program {
    fn start(mut command: Command, name: &str) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let lines: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let stdout = child.stdout.take().expect("stdout");
        let shared = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let (all, changed) = &*shared;
                all.lock().expect("lines").push(line);
                changed.notify_all();
            }
        });
        Self {
            child,
            lines,
            seen: std::cell::Cell::new(0),
            name: name.to_owned(),
        }
    }

    /// Waits until the program prints a line containing `text` (after the lines waited for
    /// before); that line.
    fn wait_line(&self, text: &str) -> String {
        let (all, changed) = &*self.lines;
        let until = Instant::now() + STEP;
        let mut lines = all.lock().expect("lines");
        loop {
            let from = self.seen.get().min(lines.len());
            if let Some(at) = lines[from..].iter().position(|l| l.contains(text)) {
                self.seen.set(from + at + 1);
                return lines[from + at].clone();
            }
            let now = Instant::now();
            assert!(
                now < until,
                "{} did not print {text:?} within {STEP:?}; it printed: {lines:#?}",
                self.name
            );
            lines = changed.wait_timeout(lines, until - now).expect("lines").0;
        }
    }

    fn printed(&self) -> Vec<String> {
        self.lines.0.lock().expect("lines").clone()
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `count` photos (copies of data/images/plasma.jpg, 64x48) in a new folder `name`.
fn photos(dir: &Path, name: &str, count: usize) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).expect("mkdir");
    let sample = common::root().join("data/images/plasma.jpg");
    for i in 0..count {
        std::fs::copy(&sample, folder.join(format!("photo-{i:03}.jpg"))).expect("copy");
    }
    folder
}

/// The PNG files in `dir` and their sizes.
fn outputs(dir: &Path) -> Vec<(String, Option<(u32, u32)>)> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| {
                    let size = std::fs::read(e.path())
                        .ok()
                        .and_then(|b| common::png_size(&b));
                    (e.file_name().to_string_lossy().into_owned(), size)
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn readme_screenshots() -> bool {
    std::env::var_os("OFFLOAD_README_SCREENSHOTS").is_some_and(|v| v != "0")
}

/// Sets the thumbnail size in the What to Run pane with the keyboard, as a person would: F9
/// twice (hide, then show the pane with the focus in it), Tab to the size, Enter to edit it,
/// select all, type, Tab.
fn set_thumbnail_size(desktop: &Desktop, size: u32) {
    desktop.keys(&["F9", "F9", "Tab", "Return", "ctrl+a"]);
    desktop.type_text(&size.to_string());
    desktop.keys(&["Tab"]);
}

/// The first-time user: start the app, set the size in the pane, Ctrl+O, type the
/// folder's path, Enter; thumbnails of that size appear in the output folder. Before the fix
/// no file chooser ever opened (the native chooser was dropped right after show()).
#[test]
fn ctrl_o_and_a_typed_folder_make_thumbnails_of_the_size_set_in_the_pane() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = photos(dir.path(), "trip", 12);
    let desktop = Desktop::start("menu");
    let began = Instant::now();
    let app = desktop.app(&[]);
    let window = desktop.window("^Offload$");
    desktop.activate(&window);
    app.wait_line("processors loaded");
    set_thumbnail_size(&desktop, 128);
    desktop.keys(&["ctrl+o"]);
    let chooser = desktop.window("Choose a Folder");
    desktop.activate(&chooser);
    desktop.type_text(&folder.to_string_lossy());
    desktop.screenshot("chooser");
    desktop.keys(&["Return"]);
    let ended = app.wait_line("batch ended");
    let took = began.elapsed();
    eprintln!(
        "first thumbnails through the menu (start, size, Ctrl+O, folder, Enter, 12 files on \
         disk): {:.1} s, debug build",
        took.as_secs_f64()
    );
    assert!(ended.contains("12 done"), "{ended}");
    let out = desktop.home.path().join("offload");
    let written = outputs(&out);
    assert_eq!(written.len(), 12, "{written:?}");
    for (name, size) in &written {
        assert_eq!(*size, Some((128, 96)), "{name}: the size typed in the pane");
    }
    // What a person sees then: the list of photos with their previews.
    desktop.screenshot("done");
    if readme_screenshots() {
        // The first row, selected, shows its preview in the inspector.
        let (x, y, _, _) = desktop.geometry(&window);
        desktop.click(x + 520, y + 145);
        app.wait_line("inspector shows");
        let until = Instant::now() + Duration::from_millis(600);
        desktop.wait_for("the preview to be drawn", || {
            (Instant::now() > until).then_some(())
        });
        desktop.window_screenshot(&window, &common::root().join("docs/screenshot-files.png"));
    }
}

/// Cancel All in the middle of a folder stops the folder: no output appears after it, and
/// the batch ends counting the rest cancelled. Before the fix the files not yet submitted
/// kept being submitted after the cancel.
#[test]
fn cancel_all_in_the_middle_of_a_folder_stops_the_folder() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = photos(dir.path(), "many", 60);
    let out = dir.path().join("thumbs");
    let desktop = Desktop::start("cancel");
    let app = desktop.app(&[
        "-j",
        "1",
        "--processor",
        "thumbnail",
        "--output-dir",
        &out.to_string_lossy(),
        &folder.to_string_lossy(),
    ]);
    let window = desktop.window("^Offload$");
    desktop.activate(&window);
    app.wait_line("batch started");
    desktop.wait_for("a few outputs", || (outputs(&out).len() >= 3).then_some(()));
    desktop.screenshot("running");
    desktop.keys(&["shift+Delete"]);
    let ended = app.wait_line("batch ended");
    let written = outputs(&out).len();
    desktop.screenshot("cancelled");
    assert!(written < 60, "the folder stopped: {written} outputs");
    // "N done, M cancelled": every file is accounted for, and the done ones are the outputs.
    let number = |word: &str| -> usize {
        let before = ended.split(&format!(" {word}")).next().unwrap_or_default();
        before
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let (done, cancelled) = (number("done"), number("cancelled"));
    assert_eq!(done + cancelled, 60, "{ended}");
    assert!(cancelled > 0, "{ended}");
    // Nothing more comes: the app is idle, and no output appears after a while.
    let until = Instant::now() + Duration::from_secs(3);
    desktop.wait_for("a quiet moment", || (Instant::now() > until).then_some(()));
    assert_eq!(outputs(&out).len(), written, "no output after the cancel");
    assert_eq!(written, done, "{ended}");
}

/// A drop of photos from another program shows what will run ("Make Thumbnails · 96 px"),
/// and runs exactly that. Before the fix a drop ran the processor selected in a hidden menu
/// (blur, after a restart).
#[test]
fn a_drop_runs_the_action_the_overlay_names() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = photos(dir.path(), "dropped", 3);
    let desktop = Desktop::start("drop");
    let app = desktop.app(&[]);
    let window = desktop.window("^Offload$");
    desktop.activate(&window);
    app.wait_line("processors loaded");
    set_thumbnail_size(&desktop, 96);
    // The app on the left, the file manager (the drag source) on the right.
    desktop.xdotool(&["windowsize", "--sync", &window, "900", "700"]);
    desktop.xdotool(&["windowmove", "--sync", &window, "0", "0"]);
    let files: Vec<String> = (0..3)
        .map(|i| {
            folder
                .join(format!("photo-{i:03}.jpg"))
                .display()
                .to_string()
        })
        .collect();
    let mut source = desktop.command(common::bin_dir().join("examples/drag_source"));
    source.args(&files).stderr(Stdio::null());
    let source = Program::start(source, "drag_source");
    source.wait_line("ready");
    let source_window = desktop.window("^drag-source$");
    // Dropped on the Mosaic page, the new batch is shown all the same (it stayed out of sight).
    desktop.activate(&window);
    desktop.keys(&["ctrl+2"]);
    app.wait_line("page: mosaic");
    desktop.xdotool(&["windowmove", "--sync", &source_window, "1000", "300"]);
    let (sx, sy, sw, sh) = desktop.geometry(&source_window);
    let (ax, ay, aw, ah) = desktop.geometry(&window);
    // Press on the label, move past the drag threshold, then over the app, and let go once
    // the app says what the drop will do.
    desktop.xdotool(&[
        "mousemove",
        "--sync",
        &(sx + sw / 2).to_string(),
        &(sy + sh / 2).to_string(),
    ]);
    desktop.xdotool(&["mousedown", "1"]);
    for step in 1..=5 {
        desktop.xdotool(&[
            "mousemove",
            "--sync",
            &(sx + sw / 2 - step * 6).to_string(),
            &(sy + sh / 2).to_string(),
        ]);
    }
    source.wait_line("drag begun");
    for step in 1..=10 {
        let x = sx + sw / 2 - (sx + sw / 2 - (ax + aw / 2)) * step / 10;
        let y = sy + sh / 2 - (sy + sh / 2 - (ay + ah / 2)) * step / 10;
        desktop.xdotool(&["mousemove", "--sync", &x.to_string(), &y.to_string()]);
    }
    let named = app.wait_line("drop overlay:");
    desktop.screenshot("overlay");
    desktop.xdotool(&["mouseup", "1"]);
    assert!(named.ends_with("Make Thumbnails · 96 px"), "{named}");
    app.wait_line("page: jobs");
    let ended = app.wait_line("batch ended");
    assert!(ended.contains("3 done"), "{ended}");
    desktop.screenshot("dropped");
    let written = outputs(&desktop.home.path().join("offload"));
    assert_eq!(
        written,
        (0..3)
            .map(|i| (format!("photo-{i:03}.png"), Some((96, 72))))
            .collect::<Vec<_>>(),
        "thumbnails of the size named, nothing else"
    );
}

/// At 360 pixels wide every action is still there: the window gets that narrow (it could not
/// go below 671), the header's buttons and the bottom view switcher respond to clicks, the
/// main menu to F10, and the menus' items open what they say.
#[test]
fn at_360_pixels_wide_every_action_is_reachable() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = photos(dir.path(), "narrow", 4);
    let desktop = Desktop::start("narrow");
    let app = desktop.app(&[]);
    let window = desktop.window("^Offload$");
    desktop.activate(&window);
    app.wait_line("processors loaded");
    desktop.xdotool(&["windowsize", &window, "360", "720"]);
    desktop.wait_for("the window to be 360 px wide", || {
        (desktop.geometry(&window).2 == 360).then_some(())
    });
    // Narrow, the pane folds away by itself.
    app.wait_line("pane hidden");
    let (x, y, w, h) = desktop.geometry(&window);
    desktop.screenshot("empty");
    // The pane's button (first in the header) shows the pane over the content.
    desktop.click(x + 22, y + 24);
    app.wait_line("pane shown");
    desktop.screenshot("pane");
    desktop.click(x + 22, y + 24);
    app.wait_line("pane hidden");
    // The Add menu (second in the header): Add Folder... (its mnemonic) opens the chooser.
    desktop.click(x + 62, y + 24);
    app.wait_line("menu shown: add");
    desktop.keys(&["o"]);
    let chooser = desktop.window("Choose a Folder");
    desktop.activate(&chooser);
    desktop.type_text(&folder.to_string_lossy());
    desktop.keys(&["Return"]);
    app.wait_line("batch ended");
    desktop.screenshot("jobs");
    // The main menu, with F10 as a keyboard user opens it: its third item, Preferences.
    desktop.activate(&window);
    desktop.keys(&["F10"]);
    app.wait_line("menu shown: main");
    desktop.keys(&["Down", "Down", "Return"]);
    let preferences = desktop.window("^Preferences$");
    desktop.activate(&preferences);
    desktop.keys(&["Escape"]);
    // The view switcher moved to the bottom: its second button shows the mosaic page.
    desktop.activate(&window);
    desktop.click(x + w / 2 + 50, y + h - 85);
    app.wait_line("page: mosaic");
    desktop.screenshot("mosaic");
}

/// Preferences → Output Folder → a chooser → the folder chosen is where outputs go.
#[test]
fn the_output_folder_chooser_of_preferences_works() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let folder = photos(dir.path(), "prefs", 2);
    let chosen = dir.path().join("chosen");
    std::fs::create_dir_all(&chosen).expect("mkdir");
    let desktop = Desktop::start("preferences");
    let app = desktop.app(&[]);
    let window = desktop.window("^Offload$");
    desktop.activate(&window);
    app.wait_line("processors loaded");
    desktop.keys(&["ctrl+comma"]);
    let preferences = desktop.window("^Preferences$");
    desktop.activate(&preferences);
    // The first row is Output Folder: its mnemonic opens the chooser.
    desktop.keys(&["alt+o"]);
    let chooser = desktop.window("^Output Folder$");
    desktop.activate(&chooser);
    desktop.type_text(&chosen.to_string_lossy());
    desktop.screenshot("chooser");
    desktop.keys(&["Return"]);
    let line = app.wait_line("output folder:");
    assert!(line.ends_with(&*chosen.to_string_lossy()), "{line}");
    desktop.activate(&preferences);
    desktop.keys(&["Escape"]);
    desktop.activate(&window);
    desktop.keys(&["ctrl+o"]);
    let chooser = desktop.window("Choose a Folder");
    desktop.activate(&chooser);
    desktop.type_text(&folder.to_string_lossy());
    desktop.keys(&["Return"]);
    app.wait_line("batch ended");
    assert_eq!(outputs(&chosen).len(), 2, "{:?}", app.printed());
}

/// Ctrl+W closes the window and Ctrl+Q quits (they did nothing); with a job running, Ctrl+Q
/// asks first.
#[test]
fn ctrl_w_closes_and_ctrl_q_quits_asking_while_jobs_run() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let desktop = Desktop::start("quit");
    let mut app = desktop.app(&[]);
    let window = desktop.window("^Offload$");
    desktop.activate(&window);
    app.wait_line("processors loaded");
    desktop.keys(&["ctrl+w"]);
    desktop.wait_for("the app to end after Ctrl+W", || {
        app.child.try_wait().ok().flatten()
    });
    drop(app);
    let jobs = dir.path().join("jobs.jsonl");
    std::fs::write(&jobs, "{\"sleep_ms\": 60000}\n").expect("write");
    app = desktop.app(&["--batch", "diag", &jobs.to_string_lossy()]);
    let window = desktop.window("^Offload$");
    desktop.activate(&window);
    app.wait_line("batch started");
    desktop.wait_for("the job to run", || {
        (!common::processors_below(app.child.id(), "offload-diag").is_empty()).then_some(())
    });
    desktop.keys(&["ctrl+q"]);
    // The question is a dialog of its own; Enter would keep the jobs running, so its
    // destructive answer is clicked... with the keyboard: Tab to it, then Enter.
    let question = desktop.window("Stop the Jobs and Quit");
    desktop.screenshot("question");
    desktop.activate(&question);
    assert!(
        app.child.try_wait().ok().flatten().is_none(),
        "it asked first"
    );
    desktop.keys(&["Tab", "Return"]);
    desktop.wait_for("the app to end after Stop and Quit", || {
        app.child.try_wait().ok().flatten()
    });
}

/// The README's picture of the demo, made the way a person sees it: the real app on a screen,
/// midway through the mosaic. Only with OFFLOAD_README_SCREENSHOTS=1.
#[test]
fn readme_screenshot_of_the_demo() {
    if !readme_screenshots() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let desktop = Desktop::start("demo");
    let app = desktop.app(&["--demo", "-j", "2"]);
    let window = desktop.window("^Offload$");
    desktop.xdotool(&["windowsize", "--sync", &window, "1100", "720"]);
    app.wait_line("batch started");
    app.wait_line("tiles done: 38");
    desktop.window_screenshot(&window, &common::root().join("docs/screenshot-demo.png"));
}
