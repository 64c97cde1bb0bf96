//! Jobs on files, as a processor's description says (PROTOCOL.md section 10.1): a file's bytes
//! go to its input field with the parameters beside them, and each result's output field
//! becomes a file in the output directory, named after the input with the processor's
//! extension, never over an existing file. `offload run --files` and the app share this.

use std::path::{Path, PathBuf};

use ciborium::Value;
use offload_sdk::{Description, Files};

macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(format!($($arg)*))
    };
}

/// How files become inputs and results become files, for one processor and its parameters.
#[derive(Debug, Clone)]
pub struct FileJobs {
    files: Files,
    /// The parameters given, checked, in the order given.
    params: Vec<(String, Value)>,
    /// The outputs' extension.
    extension: String,
    output_dir: PathBuf,
}

impl FileJobs {
    /// Checks `params` (`KEY=VALUE`, as a person typed them) against the description before
    /// any job starts: an unknown name or a wrong value is an error naming the parameter and
    /// what it takes.
    pub fn new(
        processor: &str,
        description: &Description,
        params: &[String],
        output_dir: Option<&Path>,
    ) -> Result<Self, String> {
        let Some(files) = description.files.clone() else {
            bail!(
                "{processor} does not say how it takes files (its --describe has no \"files\"): \
                 give it inputs with --inputs or --input"
            );
        };
        let Some(output_dir) = output_dir else {
            bail!("--files needs --output-dir DIR, where the output files go");
        };
        let mut given = Vec::new();
        for param in params {
            let Some((name, text)) = param.split_once('=') else {
                bail!("--param {param:?}: expected KEY=VALUE");
            };
            let Some(declared) = description.parameters.iter().find(|p| p.name == name) else {
                let known: Vec<&str> = description
                    .parameters
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect();
                bail!(
                    "--param {name}: {processor} has no such parameter (it has: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                );
            };
            let value = declared.parse(text)?;
            given.retain(|(n, _): &(String, Value)| n != name);
            given.push((name.to_owned(), value));
        }
        let extension = files
            .output_extension_parameter
            .as_ref()
            .and_then(|name| {
                let value = given
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .or_else(|| {
                        description
                            .parameters
                            .iter()
                            .find(|p| &p.name == name)
                            .map(|p| p.default_value())
                    })?;
                value.as_text().map(str::to_owned)
            })
            .unwrap_or_else(|| files.output_extension.clone());
        Ok(Self {
            files,
            params: given,
            extension,
            output_dir: output_dir.to_path_buf(),
        })
    }

    /// Whether a file of this name is one the processor takes.
    pub fn accepts(&self, path: &Path) -> bool {
        path.file_name()
            .is_some_and(|n| self.files.accepts_name(&n.to_string_lossy()))
    }

    /// The extensions it takes, for messages and file choosers (`["jpg", "png"]`).
    pub fn extensions(&self) -> &[String] {
        &self.files.accepts
    }

    /// Where the outputs go.
    pub fn output_dir(&self) -> &Path {
        &self.output_dir
    }

    /// The job input for `path`: its bytes in the input field, the parameters beside them,
    /// encoded. `Err` says why the file is skipped (not accepted, not a regular file,
    /// unreadable, too large).
    pub fn input(&self, path: &Path, max_input: u64) -> Result<Vec<u8>, String> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if !name.as_deref().is_some_and(|n| self.files.accepts_name(n)) {
            return Err(format!(
                "not a file it takes (it takes .{})",
                self.files.accepts.join(", .")
            ));
        }
        let bytes = read_regular_file(path, max_input)?;
        let mut map = vec![(
            Value::Text(self.files.input_field.clone()),
            Value::Bytes(bytes),
        )];
        for (name, value) in &self.params {
            map.push((Value::Text(name.clone()), value.clone()));
        }
        let mut encoded = Vec::new();
        ciborium::into_writer(&Value::Map(map), &mut encoded)
            .map_err(|err| format!("cannot encode it: {err}"))?;
        Ok(encoded)
    }

    /// Writes the result's output field for the input `path` and gives the file's path and the
    /// rest of the result (for the job's line).
    pub fn write(&self, path: &Path, result: Value) -> Result<(PathBuf, Value), String> {
        let (bytes, rest) = self.split_result(result)?;
        let written = crate::output::write_new(&self.output_dir, self.output_names(path), &bytes)
            .map_err(|err| err.to_string())?;
        Ok((written, rest))
    }

    /// [`FileJobs::write`] of bytes already taken from a result ([`FileJobs::split_result`]),
    /// telling `announce` the output's path before the file gets it
    /// ([`crate::output::write_new_announced`]).
    pub fn write_announced(
        &self,
        path: &Path,
        bytes: &[u8],
        announce: &mut crate::output::Announce<'_>,
    ) -> Result<PathBuf, String> {
        crate::output::write_new_announced(
            &self.output_dir,
            self.output_names(path),
            bytes,
            announce,
        )
        .map_err(|err| err.to_string())
    }

    /// The names an output for the input `path` may take, in order: `STEM.EXT`, then
    /// `STEM-2.EXT`, `STEM-3.EXT`... (a stem that is not UTF-8 has its odd bytes replaced).
    pub fn output_names(&self, path: &Path) -> impl Iterator<Item = String> {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".to_owned());
        let extension = self.extension.clone();
        (1u32..).map(move |n| {
            if n == 1 {
                format!("{stem}.{extension}")
            } else {
                format!("{stem}-{n}.{extension}")
            }
        })
    }

    /// The result's output field (the bytes of the output file) and the rest of the result.
    pub fn split_result(&self, result: Value) -> Result<(Vec<u8>, Value), String> {
        let Value::Map(entries) = result else {
            bail!("the result is not a map with {:?}", self.files.output_field);
        };
        let mut bytes = None;
        let mut rest = Vec::new();
        for (key, value) in entries {
            match (
                key.as_text() == Some(self.files.output_field.as_str()),
                value,
            ) {
                (true, Value::Bytes(b)) => bytes = Some(b),
                (_, value) => rest.push((key, value)),
            }
        }
        let Some(bytes) = bytes else {
            bail!(
                "the result has no byte string {:?} to write",
                self.files.output_field
            );
        };
        Ok((bytes, Value::Map(rest)))
    }
}

/// The bytes of the regular file at `path` (a link to one is followed), at most `max_input`
/// of them. Anything else (a FIFO, a device, a socket, a directory) is refused, saying what it
/// is, and never read: a FIFO would block the reading for ever, a link to `/dev/zero` fill the
/// memory.
fn read_regular_file(path: &Path, max_input: u64) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let cannot = |err: std::io::Error| format!("cannot read it: {err}");
    // Looked at before it is opened: opening a FIFO or a device can block or do something.
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(not_regular(path, meta.file_type()));
    }
    // Opened without blocking (in case a FIFO took its place since) and checked again, so what
    // is read is what was checked. O_NONBLOCK changes nothing for a regular file's reads.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    if !meta.is_file() {
        return Err(not_regular(path, meta.file_type()));
    }
    let over = |size: u64, more: bool| {
        format!(
            "{size} bytes{}, over the input limit of {max_input} (--max-input raises it)",
            if more { " or more" } else { "" }
        )
    };
    if meta.len() > max_input {
        return Err(over(meta.len(), false));
    }
    // Read with the limit, not the size it had: a file growing meanwhile stops at the limit.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.by_ref()
        .take(max_input.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > max_input {
        return Err(over(bytes.len() as u64, true));
    }
    Ok(bytes)
}

/// Why `path`, of type `kind`, is not read: "not a regular file (a FIFO)", "... (a link to a
/// character device)".
fn not_regular(path: &Path, kind: std::fs::FileType) -> String {
    use std::os::unix::fs::FileTypeExt as _;
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a file"
    };
    let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    format!(
        "not a regular file ({}{what})",
        if link { "a link to " } else { "" }
    )
}

/// Writes `bytes` to DIR/STEM.EXT, or DIR/STEM-2.EXT, DIR/STEM-3.EXT... if taken: never over
/// an existing file or through a link planted there, and atomically (a file that is there is
/// complete; a failure or a kill leaves nothing). See [`crate::output`].
pub fn write_new(dir: &Path, stem: &str, extension: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    let names = (1u32..).map(|n| {
        if n == 1 {
            format!("{stem}.{extension}")
        } else {
            format!("{stem}-{n}.{extension}")
        }
    });
    crate::output::write_new(dir, names, bytes).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::{read_regular_file, write_new};

    #[test]
    fn only_regular_files_are_read_and_never_past_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.jpg");
        std::fs::write(&file, b"0123456789").expect("write");
        assert_eq!(read_regular_file(&file, 10).expect("read"), b"0123456789");
        let over = read_regular_file(&file, 9).expect_err("over");
        assert!(
            over.starts_with("10 bytes, over the input limit of 9"),
            "{over}"
        );
        // A link to a regular file is followed; a link to a device is not read.
        let link = dir.path().join("b.jpg");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert_eq!(read_regular_file(&link, 10).expect("read"), b"0123456789");
        let zero = dir.path().join("c.jpg");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        assert_eq!(
            read_regular_file(&zero, 10).expect_err("a device"),
            "not a regular file (a link to a character device)"
        );
        assert_eq!(
            read_regular_file(dir.path(), 10).expect_err("a directory"),
            "not a regular file (a directory)"
        );
        let missing = read_regular_file(&dir.path().join("none.jpg"), 10).expect_err("missing");
        assert!(missing.starts_with("cannot read it: "), "{missing}");
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cat.png"), b"mine").expect("write");
        let first = write_new(dir.path(), "cat", "png", b"one").expect("write");
        let second = write_new(dir.path(), "cat", "png", b"two").expect("write");
        assert_eq!(first, dir.path().join("cat-2.png"));
        assert_eq!(second, dir.path().join("cat-3.png"));
        assert_eq!(
            std::fs::read(dir.path().join("cat.png")).expect("read"),
            b"mine"
        );
        assert_eq!(std::fs::read(&second).expect("read"), b"two");
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }
}
