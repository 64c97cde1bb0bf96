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
    /// encoded. `Err` says why the file is skipped (not accepted, unreadable, too large).
    pub fn input(&self, path: &Path, max_input: u64) -> Result<Vec<u8>, String> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if !name.as_deref().is_some_and(|n| self.files.accepts_name(n)) {
            return Err(format!(
                "not a file it takes (it takes .{})",
                self.files.accepts.join(", .")
            ));
        }
        let size = std::fs::metadata(path)
            .map_err(|err| format!("cannot read it: {err}"))?
            .len();
        if size > max_input {
            return Err(format!(
                "{size} bytes, over the input limit of {max_input} (--max-input raises it)"
            ));
        }
        let bytes = std::fs::read(path).map_err(|err| format!("cannot read it: {err}"))?;
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
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".to_owned());
        let written = write_new(&self.output_dir, &stem, &self.extension, &bytes)?;
        Ok((written, Value::Map(rest)))
    }
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
    use super::write_new;

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
