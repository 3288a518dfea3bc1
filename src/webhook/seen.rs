//! The seen-file: delivery ids already handed on, one per line, so a retried delivery is recognised
//! (SPEC section 2: the vendor retries up to three times).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::text::shorten;

/// Record `delivery_id` in the seen-file at `path` (one id per line, appended), or fail with exit 4
/// when it is already there. The file is created with mode 0600 and held under an exclusive
/// `flock` while it is read and appended, so concurrent verifiers (two cron jobs) agree on exactly
/// one first delivery. Callers MUST call this only after [`crate::webhook::verify`] succeeded: an unverified body
/// must never burn a delivery id.
pub fn record_delivery(path: &Path, delivery_id: &str) -> Result<()> {
    let shown = path.display();
    let io_err = |what: &str, e: io::Error| Error::io(format!("{what} seen-file {shown}"), e);
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| io_err("cannot open", e))?;
    lock_exclusive(&file).map_err(|e| io_err("cannot lock", e))?;
    // The lock is released when `file` is closed, on every return path.
    let mut seen = Vec::new();
    // Opened with O_APPEND, the file position is still 0: this reads the whole history.
    file.read_to_end(&mut seen)
        .map_err(|e| io_err("cannot read", e))?;
    let already = seen
        .split(|&b| b == b'\n')
        .any(|line| line.strip_suffix(b"\r").unwrap_or(line) == delivery_id.as_bytes());
    if already {
        return Err(Error::DuplicateDelivery {
            shown: shorten(delivery_id),
            seen_file: path.to_path_buf(),
        });
    }
    let mut line = Vec::with_capacity(delivery_id.len() + 2);
    if seen.last().is_some_and(|&b| b != b'\n') {
        // A line cut short (by a crash or an editor) must not swallow this id.
        line.push(b'\n');
    }
    line.extend_from_slice(delivery_id.as_bytes());
    line.push(b'\n');
    file.write_all(&line)
        .and_then(|()| file.sync_data())
        .map_err(|e| io_err("cannot append to", e))
}

/// Block until this process holds an exclusive lock on `file`, through std (`flock(LOCK_EX)` on
/// Unix, `LockFileEx` on Windows). A wait cut short by a signal is taken up again: std does not
/// retry `EINTR`. On Unix every other failure is an error, as before. Elsewhere, a system where
/// std has no file locks uses the file unlocked, as every non-Unix system did before std had
/// them; concurrent verifiers there may both accept the same delivery.
fn lock_exclusive(file: &File) -> io::Result<()> {
    loop {
        match file.lock() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            #[cfg(not(unix))]
            Err(e) if e.kind() == io::ErrorKind::Unsupported => return Ok(()),
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;

    #[test]
    fn seen_file_records_once_and_survives_a_cut_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen");
        record_delivery(&path, "a").unwrap();
        assert_eq!(
            record_delivery(&path, "a").unwrap_err().exit(),
            Exit::Duplicate
        );
        record_delivery(&path, "ab").unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"cut")
            .unwrap();
        record_delivery(&path, "c").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nab\ncut\nc\n");
        assert_eq!(
            record_delivery(&path, "cut").unwrap_err().exit(),
            Exit::Duplicate
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
