//! The seen-file: delivery ids already handed on, one per line, so a retried delivery is recognised
//! (SPEC section 2: the vendor retries up to three times).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use crate::error::{Error, Exit, Result};
use crate::text::shorten;

/// Record `delivery_id` in the seen-file at `path` (one id per line, appended), or fail with exit 4
/// when it is already there. The file is created with mode 0600 and held under an exclusive
/// `flock` while it is read and appended, so concurrent verifiers (two cron jobs) agree on exactly
/// one first delivery. Callers MUST call this only after [`verify`](super::body::verify) succeeded: an unverified body
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
        return Err(Error::Failed {
            message: format!(
                "duplicate delivery: delivery_id {} is already recorded in {shown}",
                shorten(delivery_id)
            ),
            hint: Some(
                "the vendor retries deliveries, so this one was already verified and handed on; \
                 nothing was printed"
                    .into(),
            ),
            exit: Exit::Duplicate,
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

#[cfg(unix)]
fn lock_exclusive(file: &File) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    loop {
        // SAFETY: the descriptor belongs to `file`, which outlives the call; flock touches no
        // memory of ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(not(unix))]
fn lock_exclusive(_: &File) -> io::Result<()> {
    // No flock: concurrent verifiers may both accept the same delivery.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
