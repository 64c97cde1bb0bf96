//! Output files written safely into a directory that others may write to as well.
//!
//! Every step works relative to the opened directory and never follows a link that someone
//! planted there: a file appears under its name complete, or not at all. The bytes go to an
//! unnamed file (`O_TMPFILE`), which the kernel frees when offload dies mid-write (`kill -9`)
//! or the write fails (a full disk), and it gets its name only once complete: a hard link
//! (`linkat` through `/proc/self/fd/N`), which fails rather than replace anything, or a hard
//! link to a random name and `renameat` over the target, which replaces a link there instead
//! of following it. Where the filesystem has no `O_TMPFILE`, the temporary file has an
//! unpredictable name, is created exclusively (`O_CREAT | O_EXCL | O_NOFOLLOW`) and is
//! removed on every failure.
//!
//! `offload run --output-dir` writes `DIR/N.cbor` with [`replace`]; `offload run --files` and
//! the app write `DIR/STEM.EXT` with [`write_new`] (through [`crate::files::write_new`]).

use std::ffi::{CStr, CString};
use std::fmt;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _};
use std::path::{Path, PathBuf};

/// Why an output file was not written; nothing was left in its place.
#[derive(Debug)]
pub struct OutputError {
    /// The file (or, before it had a name, the directory) it was written to.
    pub path: PathBuf,
    pub source: io::Error,
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write {}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for OutputError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Writes `bytes` to `DIR/NAME`, replacing what is there atomically: a reader sees the old
/// file or the new one, whole. A symbolic link there is replaced, never followed. Not synced
/// to disk (a kill leaves no partial file, a power cut may).
pub fn replace(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, OutputError> {
    replace_with(dir, name, Temporary::Unnamed, |file| file.write_all(bytes))
}

/// Writes `bytes` to the first name of `names` that nothing in `DIR` has (no file, no link,
/// nothing), and gives its path: never over anything. Synced to disk before it gets its name.
pub fn write_new(
    dir: &Path,
    names: impl IntoIterator<Item = String>,
    bytes: &[u8],
) -> Result<PathBuf, OutputError> {
    write_new_with(dir, names, Temporary::Unnamed, |file| {
        file.write_all(bytes)?;
        file.sync_data()
    })
}

/// What [`write_new_announced`] tells of each name before the file gets it.
pub type Announce<'a> = dyn FnMut(&Path) -> io::Result<()> + 'a;

/// [`write_new`], telling `announce` each name before the file is given it (a name already
/// taken is skipped without a word): a caller that must find its file again after a crash
/// records the name first. An error from `announce` stops the writing, and nothing is left.
pub fn write_new_announced(
    dir: &Path,
    names: impl IntoIterator<Item = String>,
    bytes: &[u8],
    announce: &mut Announce<'_>,
) -> Result<PathBuf, OutputError> {
    write_new_with_announce(
        dir,
        names,
        Temporary::Unnamed,
        |file| {
            file.write_all(bytes)?;
            file.sync_data()
        },
        Some(announce),
    )
}

/// The bytes of the regular file `DIR/NAME` if this user owns it, at most `limit` of them
/// (`Err` past that): opened relative to the directory without following a link at the
/// name, so a link planted there is refused, not followed.
pub fn read_own(dir: &Path, name: &str, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    let name = file_name(name)?;
    let dir = Dir::open(dir)?;
    let file = dir.open_file(
        &name,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
    )?;
    let meta = file.metadata()?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "not a regular file of this user's",
        ));
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "over the limit"));
    }
    Ok(bytes)
}

/// Which temporary file to try first; `Named` only in tests, to prove the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Temporary {
    Unnamed,
    #[cfg_attr(not(test), allow(dead_code))]
    Named,
}

fn replace_with(
    dir_path: &Path,
    name: &str,
    first: Temporary,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<PathBuf, OutputError> {
    let target = dir_path.join(name);
    let failed = |source| OutputError {
        path: target.clone(),
        source,
    };
    let name = file_name(name).map_err(failed)?;
    let dir = Dir::open(dir_path).map_err(failed)?;
    let mut temp = Temp::create(&dir, first).map_err(failed)?;
    fill(temp.file()).map_err(failed)?;
    // An unnamed file cannot replace anything by itself: it gets a random name first.
    let staged = match temp {
        Temp::Named(_, staged) => staged,
        Temp::Unnamed(file) => {
            dir.link_unnamed_to_random_name(&file).map_err(failed)?
            // The descriptor closes here: the name holds the file now.
        }
    };
    dir.rename(&staged.name, &name).map_err(failed)?;
    staged.disarm();
    Ok(target)
}

fn write_new_with(
    dir_path: &Path,
    names: impl IntoIterator<Item = String>,
    first: Temporary,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<PathBuf, OutputError> {
    write_new_with_announce(dir_path, names, first, fill, None)
}

fn write_new_with_announce(
    dir_path: &Path,
    names: impl IntoIterator<Item = String>,
    first: Temporary,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
    mut announce: Option<&mut Announce<'_>>,
) -> Result<PathBuf, OutputError> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OutputError { path, source }
    };
    let dir = Dir::open(dir_path).map_err(failed(dir_path))?;
    let mut temp = Temp::create(&dir, first).map_err(failed(dir_path))?;
    fill(temp.file()).map_err(failed(dir_path))?;
    for name in names {
        let path = dir_path.join(&name);
        let name = file_name(&name).map_err(failed(&path))?;
        if let Some(announce) = announce.as_mut() {
            if dir.has(&name) {
                continue;
            }
            announce(&path).map_err(failed(&path))?;
        }
        match temp.link(&dir, &name) {
            // A named temporary file goes when `temp` drops; the output stays.
            Ok(()) => return Ok(path),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(failed(&path)(err)),
        }
    }
    Err(failed(dir_path)(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "every name for the output is taken",
    )))
}

/// `name` as one component of a path: no `/`, not `.` or `..`, not empty.
fn file_name(name: &str) -> io::Result<CString> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name"),
        ));
    }
    CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name"),
        )
    })
}

/// An opened directory; every name below is relative to it.
struct Dir(File);

impl Dir {
    fn open(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(path)
            .map(Dir)
    }

    /// `openat(dir, name, flags, 0o666)` (the umask applies, as for any new file).
    fn open_file(&self, name: &CStr, flags: libc::c_int) -> io::Result<File> {
        let mode: libc::c_uint = 0o666;
        // SAFETY: openat with a live directory descriptor and a NUL-terminated name returns a
        // new descriptor or -1.
        let fd = unsafe {
            libc::openat(
                self.0.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Hard-links `file` (an `O_TMPFILE`) as `name`; `AlreadyExists` if the name is taken.
    fn link_unnamed(&self, file: &File, name: &CStr) -> io::Result<()> {
        let proc_path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|_| io::Error::other("a descriptor's /proc path"))?;
        // SAFETY: both paths are NUL-terminated and the directory descriptor is live. The
        // /proc link is followed to the file itself; the new name never is.
        let done = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                proc_path.as_ptr(),
                self.0.as_raw_fd(),
                name.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if done == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Hard-links `file` as a random name that nothing had, and gives that name (removed when
    /// it drops, unless disarmed).
    fn link_unnamed_to_random_name(&self, file: &File) -> io::Result<StagedName<'_>> {
        for _ in 0..100 {
            let name = random_name();
            match self.link_unnamed(file, &name) {
                Ok(()) => return Ok(StagedName::new(self, name)),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(err),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temporary name",
        ))
    }

    /// Hard-links `from` as `to`, both names in this directory; `from` is not followed.
    fn link(&self, from: &CStr, to: &CStr) -> io::Result<()> {
        let fd = self.0.as_raw_fd();
        // SAFETY: NUL-terminated names relative to a live directory descriptor; flags 0:
        // neither name is followed.
        if unsafe { libc::linkat(fd, from.as_ptr(), fd, to.as_ptr(), 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Renames `from` to `to`, replacing `to` (whatever it is, a link included: not followed).
    fn rename(&self, from: &CStr, to: &CStr) -> io::Result<()> {
        let fd = self.0.as_raw_fd();
        // SAFETY: NUL-terminated names relative to a live directory descriptor.
        if unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether anything (a file, a link, ...) has the name `name`.
    fn has(&self, name: &CStr) -> bool {
        // SAFETY: a zeroed stat is a valid buffer for fstatat to fill.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated name relative to a live directory descriptor, a stat
        // buffer to fill; the name is not followed.
        unsafe {
            libc::fstatat(
                self.0.as_raw_fd(),
                name.as_ptr(),
                &mut stat,
                libc::AT_SYMLINK_NOFOLLOW,
            ) == 0
        }
    }

    fn remove(&self, name: &CStr) {
        // SAFETY: a NUL-terminated name relative to a live directory descriptor. A failure
        // leaves nothing more to do.
        unsafe { libc::unlinkat(self.0.as_raw_fd(), name.as_ptr(), 0) };
    }
}

/// A temporary file being written.
enum Temp<'d> {
    /// `O_TMPFILE`: no name; the kernel frees it with its last descriptor.
    Unnamed(File),
    /// Where there is no `O_TMPFILE`: a random name, removed when this drops.
    Named(File, StagedName<'d>),
}

impl<'d> Temp<'d> {
    fn create(dir: &'d Dir, first: Temporary) -> io::Result<Self> {
        if first == Temporary::Unnamed && proc_fds_available() {
            // Any failure (a filesystem or a kernel without O_TMPFILE says EOPNOTSUPP, EISDIR
            // or EINVAL) tries a named file, which reports the real problem if there is one.
            if let Ok(file) = dir.open_file(c".", libc::O_TMPFILE | libc::O_WRONLY) {
                return Ok(Temp::Unnamed(file));
            }
        }
        let flags = libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_WRONLY;
        for _ in 0..100 {
            let name = random_name();
            match dir.open_file(&name, flags) {
                Ok(file) => return Ok(Temp::Named(file, StagedName::new(dir, name))),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(err),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temporary name",
        ))
    }

    fn file(&mut self) -> &mut File {
        match self {
            Temp::Unnamed(file) | Temp::Named(file, _) => file,
        }
    }

    /// Gives the complete file the name `name` too; `AlreadyExists` if the name is taken.
    fn link(&self, dir: &Dir, name: &CStr) -> io::Result<()> {
        match self {
            Temp::Unnamed(file) => dir.link_unnamed(file, name),
            Temp::Named(_, staged) => dir.link(&staged.name, name),
        }
    }
}

/// A temporary name in a directory, removed when dropped unless disarmed.
struct StagedName<'d> {
    dir: &'d Dir,
    name: CString,
    armed: bool,
}

impl<'d> StagedName<'d> {
    fn new(dir: &'d Dir, name: CString) -> Self {
        Self {
            dir,
            name,
            armed: true,
        }
    }

    /// The name was renamed away: nothing to remove.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for StagedName<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.dir.remove(&self.name);
        }
    }
}

/// `.offload-<16 hex digits>.tmp`, unpredictable: std's `RandomState` is seeded from the
/// system's randomness, so another user cannot plant the name first.
fn random_name() -> CString {
    use std::hash::{BuildHasher as _, Hasher as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let name = format!(".offload-{:016x}.tmp", hasher.finish());
    // No NUL in hex digits.
    CString::new(name).unwrap_or_default()
}

/// Whether `/proc/self/fd` is there to link an unnamed file through.
fn proc_fds_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// The directory's entries, sorted.
    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A 0600 file with a secret, and a link to it at each of `names` in `dir`.
    fn plant(dir: &Path, secret: &Path, names: &[&str]) {
        std::fs::write(secret, b"secret").expect("write");
        std::fs::set_permissions(secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        for name in names {
            std::os::unix::fs::symlink(secret, dir.join(name)).expect("symlink");
        }
    }

    fn unchanged(secret: &Path) {
        assert_eq!(std::fs::read(secret).expect("read"), b"secret");
        let mode = std::fs::metadata(secret)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn replacing_replaces_a_planted_link_and_never_writes_through_it() {
        for first in [Temporary::Unnamed, Temporary::Named] {
            let dir = tempfile::tempdir().expect("tempdir");
            let secret = dir.path().join("secret");
            plant(dir.path(), &secret, &["0.cbor"]);
            let path = replace_with(dir.path(), "0.cbor", first, |f| f.write_all(b"new"))
                .expect("written");
            assert_eq!(path, dir.path().join("0.cbor"));
            let meta = std::fs::symlink_metadata(&path).expect("meta");
            assert!(
                meta.file_type().is_file(),
                "{first:?}: a file, not the link"
            );
            assert_eq!(std::fs::read(&path).expect("read"), b"new");
            unchanged(&secret);
            // Again, over the file it wrote.
            replace_with(dir.path(), "0.cbor", first, |f| f.write_all(b"newer")).expect("again");
            assert_eq!(std::fs::read(&path).expect("read"), b"newer");
            assert_eq!(names_in(dir.path()), ["0.cbor", "secret"], "{first:?}");
        }
    }

    #[test]
    fn a_new_file_takes_the_first_free_name_and_skips_planted_links() {
        for first in [Temporary::Unnamed, Temporary::Named] {
            let dir = tempfile::tempdir().expect("tempdir");
            let secret = dir.path().join("secret");
            plant(dir.path(), &secret, &["a.png"]);
            // A dangling link takes its name too.
            std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("a-2.png"))
                .expect("symlink");
            let names = ["a.png", "a-2.png", "a-3.png"].map(String::from);
            let path =
                write_new_with(dir.path(), names, first, |f| f.write_all(b"out")).expect("written");
            assert_eq!(path, dir.path().join("a-3.png"), "{first:?}");
            assert_eq!(std::fs::read(&path).expect("read"), b"out");
            unchanged(&secret);
            assert!(!dir.path().join("nowhere").exists());
            assert_eq!(
                names_in(dir.path()),
                ["a-2.png", "a-3.png", "a.png", "secret"],
                "{first:?}: no temporary file is left"
            );
        }
    }

    #[test]
    fn every_failure_leaves_no_temporary_file() {
        for first in [Temporary::Unnamed, Temporary::Named] {
            let dir = tempfile::tempdir().expect("tempdir");
            let full = || io::Error::from_raw_os_error(libc::ENOSPC);
            // The write fails (a full disk).
            let err = replace_with(dir.path(), "0.cbor", first, |f| {
                f.write_all(b"half")?;
                Err(full())
            })
            .expect_err("failed");
            assert_eq!(err.source.raw_os_error(), Some(libc::ENOSPC));
            let err = write_new_with(dir.path(), ["a.png".into()], first, |f| {
                f.write_all(b"half")?;
                Err(full())
            })
            .expect_err("failed");
            assert!(err.to_string().contains("No space left"), "{err}");
            assert!(names_in(dir.path()).is_empty(), "{first:?}");
            // The rename fails (a directory has the name), or every name is taken.
            std::fs::create_dir(dir.path().join("0.cbor")).expect("mkdir");
            std::fs::write(dir.path().join("0.cbor/x"), b"x").expect("write");
            replace_with(dir.path(), "0.cbor", first, |f| f.write_all(b"new"))
                .expect_err("a directory is not replaced");
            write_new_with(dir.path(), ["0.cbor".into()], first, |f| {
                f.write_all(b"new")
            })
            .expect_err("taken");
            assert_eq!(names_in(dir.path()), ["0.cbor"], "{first:?}");
        }
    }

    #[test]
    fn announced_names_are_told_before_the_file_has_them_and_a_refusal_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.png"), b"taken").expect("write");
        let names = || ["a.png", "a-2.png"].map(String::from);
        let mut told = Vec::new();
        let path = write_new_announced(dir.path(), names(), b"out", &mut |path| {
            // Not there yet when announced.
            assert!(!path.exists());
            told.push(path.to_path_buf());
            Ok(())
        })
        .expect("written");
        assert_eq!(path, dir.path().join("a-2.png"));
        assert_eq!(
            told,
            std::slice::from_ref(&path),
            "a taken name is not announced"
        );
        std::fs::remove_file(&path).expect("remove");
        write_new_announced(dir.path(), names(), b"out", &mut |_| {
            Err(io::Error::other("no log"))
        })
        .expect_err("refused");
        assert_eq!(names_in(dir.path()), ["a.png"]);
        // read_own reads a file of this user's, not a link to one.
        assert_eq!(read_own(dir.path(), "a.png", 5).expect("read"), b"taken");
        read_own(dir.path(), "a.png", 4).expect_err("over the limit");
        std::os::unix::fs::symlink(dir.path().join("a.png"), dir.path().join("l.png"))
            .expect("symlink");
        read_own(dir.path(), "l.png", 5).expect_err("a link is not followed");
    }

    #[test]
    fn names_that_are_not_one_component_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = dir.path().join("inner");
        std::fs::create_dir(&inner).expect("mkdir");
        for name in ["../escaped", "a/b", "..", ".", ""] {
            replace(&inner, name, b"x").expect_err(name);
            write_new(&inner, [name.to_owned()], b"x").expect_err(name);
        }
        assert_eq!(names_in(dir.path()), ["inner"]);
        assert!(names_in(&inner).is_empty());
    }
}
