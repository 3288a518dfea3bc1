//! Where plaintext goes: standard output, or a file replaced atomically.
//!
//! SPEC section 3: `-o PATH` writes a temporary file in PATH's directory with mode 0600 and renames
//! it over PATH only after every row authenticated. On any failure, or on SIGINT/SIGTERM, the
//! temporary file is removed and PATH keeps its previous content (or stays absent); so it is on
//! SIGHUP and SIGQUIT, which also end a run (a dropped ssh session, Ctrl-\). Temporary
//! files are registered here so the signal handler (`cmd::signals`) can remove them before the
//! process dies.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};

/// Where the user asked output to go: `-` is standard output, anything else a file path. Decided
/// once, when the command line is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `-`: standard output.
    Stdout,
    /// A file (or a device or FIFO) by path.
    Path(PathBuf),
}

impl From<PathBuf> for Output {
    fn from(path: PathBuf) -> Output {
        if path.as_os_str() == "-" {
            Output::Stdout
        } else {
            Output::Path(path)
        }
    }
}

impl Output {
    /// The path, for an output that has one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Output::Stdout => None,
            Output::Path(path) => Some(path),
        }
    }
}

/// Temporary files to remove if a signal stops the process.
static LIVE_TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Remove every live temporary file and return with the registry locked, so that no commit can
/// rename one into place afterwards: for a process that is about to die of a signal. The caller
/// MUST end the process while holding the guard.
pub fn remove_temporaries_for_exit() -> MutexGuard<'static, Vec<PathBuf>> {
    let temps = LIVE_TEMPS.lock().unwrap_or_else(|p| p.into_inner());
    for path in temps.iter() {
        let _ = fs::remove_file(path);
    }
    temps
}

/// A file written beside its destination and renamed over it on `commit`.
pub struct AtomicFile {
    writer: Option<BufWriter<File>>,
    committed: bool,
    /// The staging file; `None` when writing straight to a device or FIFO.
    temp: Option<PathBuf>,
    dest: PathBuf,
}

impl AtomicFile {
    /// Create a mode-0600 temporary file in `dest`'s directory.
    ///
    /// A `dest` that already exists and is not a regular file (`/dev/null`, a FIFO, a terminal)
    /// is written directly, since renaming over it would replace the device node itself; it cannot
    /// be all-or-nothing. A `dest` that is a symbolic link is resolved, so the link survives and
    /// its target is replaced.
    pub fn create(dest: &Path) -> Result<AtomicFile> {
        let shown = dest.display();
        if let Ok(meta) = fs::metadata(dest) {
            if meta.is_dir() {
                return Err(Error::Usage(format!("{shown} is a directory, not a file")));
            }
            if !meta.is_file() {
                let file = fs::OpenOptions::new()
                    .write(true)
                    .open(dest)
                    .map_err(|e| Error::io(format!("cannot open {shown}"), e))?;
                return Ok(AtomicFile {
                    writer: Some(BufWriter::with_capacity(256 * 1024, file)),
                    committed: false,
                    temp: None,
                    dest: dest.to_path_buf(),
                });
            }
        }
        let dest = match fs::symlink_metadata(dest) {
            Ok(m) if m.file_type().is_symlink() => fs::canonicalize(dest)
                .map_err(|e| Error::io(format!("cannot resolve the link {shown}"), e))?,
            _ => dest.to_path_buf(),
        };
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = dest
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{shown} is not a file path")))?;
        let mut temps = LIVE_TEMPS.lock().unwrap_or_else(|p| p.into_inner());
        let named = tempfile::Builder::new()
            .prefix(&format!(".{}.", file_name.to_string_lossy()))
            .suffix(".partial")
            .permissions(mode_0600())
            .tempfile_in(&dir)
            .map_err(|e| {
                Error::io(
                    format!("cannot create a temporary file in {}", dir.display()),
                    e,
                )
            })?;
        // Keep the path ourselves: the signal handler removes it, and commit renames it.
        let (file, temp) = named
            .keep()
            .map_err(|e| Error::io("keeping the temporary file", e.error))?;
        temps.push(temp.clone());
        Ok(AtomicFile {
            writer: Some(BufWriter::with_capacity(256 * 1024, file)),
            committed: false,
            temp: Some(temp),
            dest,
        })
    }

    /// Flush, sync and rename over the destination.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("not yet committed");
        let file = writer
            .into_inner()
            .map_err(|e| Error::io(format!("writing {}", self.dest.display()), e.into_error()))?;
        let Some(temp) = self.temp.clone() else {
            // A device or FIFO: written directly, nothing to rename.
            self.committed = true;
            return Ok(());
        };
        file.sync_all()
            .map_err(|e| Error::io(format!("writing {}", self.dest.display()), e))?;
        drop(file);
        let mut temps = LIVE_TEMPS.lock().unwrap_or_else(|p| p.into_inner());
        fs::rename(&temp, &self.dest)
            .map_err(|e| Error::io(format!("cannot replace {}", self.dest.display()), e))?;
        temps.retain(|p| p != &temp);
        self.committed = true;
        drop(temps);
        if let Some(dir) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.as_mut().expect("not yet committed").write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.writer
            .as_mut()
            .expect("not yet committed")
            .write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.as_mut().expect("not yet committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            // Not committed (an error, or a failed commit): throw the partial plaintext away.
            let mut temps = LIVE_TEMPS.lock().unwrap_or_else(|p| p.into_inner());
            self.writer = None;
            if let Some(temp) = &self.temp {
                let _ = fs::remove_file(temp);
                temps.retain(|p| p != temp);
            }
        }
    }
}

#[cfg(unix)]
fn mode_0600() -> fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    fs::Permissions::from_mode(0o600)
}

#[cfg(not(unix))]
fn mode_0600() -> fs::Permissions {
    fs::metadata(".")
        .map(|m| m.permissions())
        .expect("current directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_replaces_and_drop_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.ndjson");
        fs::write(&dest, "old\n").unwrap();
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert_eq!(fs::read_to_string(&dest).unwrap(), "old\n");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"new\n").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "new\n");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn devices_are_written_not_replaced_and_links_survive() {
        use std::os::unix::fs::FileTypeExt;
        let mut f = AtomicFile::create(Path::new("/dev/null")).unwrap();
        f.write_all(b"gone\n").unwrap();
        f.commit().unwrap();
        assert!(fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());

        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.ndjson");
        fs::write(&target, "old\n").unwrap();
        let link = dir.path().join("current.ndjson");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut f = AtomicFile::create(&link).unwrap();
        f.write_all(b"new\n").unwrap();
        f.commit().unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&target).unwrap(), "new\n");
    }
}
