//! Where plaintext goes: standard output, or a file replaced atomically.
//!
//! SPEC section 3: `-o PATH` writes a temporary file in PATH's directory with mode 0600 and renames
//! it over PATH only after every row authenticated. On any failure, or on SIGINT/SIGTERM, the
//! temporary file goes away and PATH keeps its previous content (or stays absent); so it is on
//! SIGHUP and SIGQUIT, which also end a run (a dropped ssh session, Ctrl-\).
//!
//! A signal handler cannot run on SIGKILL, an out-of-memory kill or a power cut, so on Linux the
//! temporary file has no name at all until the commit (issue 12, item 4): it is opened with
//! `O_TMPFILE` in PATH's directory, and a process that dies before the commit leaves nothing, since
//! closing its last descriptor frees the file. The commit links it in (`linkat` through
//! `/proc/self/fd`), straight at PATH when PATH is absent, else under a temporary name that is
//! renamed over PATH at once. Where `O_TMPFILE` or `/proc` is missing (other systems, some
//! filesystems), the file is a named `.NAME.XXXXXX.partial`, registered here so the signal handler
//! (`cmd::signals`) can remove it before the process dies. Either way the file is held under an
//! exclusive lock (`flock`) while it is ours, so a later run over the same PATH can tell a
//! temporary whose writer is gone (no lock, mode 0600, our owner) from one being written, and
//! removes only the former.

use std::ffi::{OsStr, OsString};
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

/// What standard output is grown to when it is a pipe: `cipherstream decrypt ... | jq` ran at
/// 1.65-1.80x its time into `/dev/null` with the kernel's default 64 KiB pipe, at 1.21-1.25x with
/// 1 MiB (issue 16, item 2: every small pipe buffer costs the writer and the reader a wake-up).
pub const PIPE_BYTES: usize = 1024 * 1024;

/// True if standard output is a pipe or FIFO (`| jq`), whose reader is another process that
/// needs a core of its own.
pub fn stdout_is_pipe() -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsFd;
        rustix::fs::fstat(io::stdout().as_fd())
            .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_fifo())
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// Grow standard output to [`PIPE_BYTES`] when it is a pipe; returns the pipe's size then. Never
/// fails and never shrinks a pipe: an unprivileged process may not go past
/// `/proc/sys/fs/pipe-max-size` (1 MiB by default) nor, once a user's pipes hold
/// `pipe-user-pages-soft`, past one page, so a refusal falls back to that maximum, and a refusal
/// of that leaves the pipe as it was. Anything that is not a pipe is left alone (`None`).
pub fn grow_stdout_pipe() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsFd;
        grow_pipe(io::stdout().as_fd(), PIPE_BYTES)
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// [`grow_stdout_pipe`] for any descriptor and size (tests ask for more than any kernel allows).
#[cfg(target_os = "linux")]
fn grow_pipe(fd: std::os::fd::BorrowedFd<'_>, want: usize) -> Option<usize> {
    use rustix::pipe::{fcntl_getpipe_size, fcntl_setpipe_size};
    // F_GETPIPE_SZ fails on anything that is not a pipe, which is the test for one.
    let size = fcntl_getpipe_size(fd).ok()?;
    if size >= want {
        return Some(size);
    }
    if let Ok(grown) = fcntl_setpipe_size(fd, want) {
        return Some(grown);
    }
    let max = fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok());
    match max {
        Some(max) if max > size => Some(fcntl_setpipe_size(fd, max).unwrap_or(size)),
        _ => Some(size),
    }
}

/// Named temporary files to remove if a signal stops the process.
static LIVE_TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Remove every live named temporary file and return with the registry locked, so that no commit
/// can link or rename one into place afterwards: for a process that is about to die of a signal.
/// The caller MUST end the process while holding the guard. (An unnamed `O_TMPFILE` needs no
/// cleanup: it dies with the process.)
pub fn remove_temporaries_for_exit() -> MutexGuard<'static, Vec<PathBuf>> {
    let temps = LIVE_TEMPS.lock().unwrap_or_else(|p| p.into_inner());
    for path in temps.iter() {
        let _ = fs::remove_file(path);
    }
    temps
}

/// Where the plaintext waits until the commit.
enum Staging {
    /// An `O_TMPFILE` in this directory: no name until the commit.
    #[cfg(target_os = "linux")]
    Unnamed(PathBuf),
    /// A named temporary file beside the destination, registered in [`LIVE_TEMPS`].
    Named(PathBuf),
    /// A device or FIFO, written directly: nothing to commit.
    Direct,
}

/// A file written beside its destination and put in its place on `commit`.
pub struct AtomicFile {
    writer: Option<BufWriter<File>>,
    committed: bool,
    staging: Staging,
    dest: PathBuf,
}

impl AtomicFile {
    /// Create a mode-0600 temporary file in `dest`'s directory: unnamed where the system allows
    /// it, else named and registered for the signal handler. Stale temporary files that an
    /// earlier run over the same `dest` left behind (it was killed) are removed.
    ///
    /// A `dest` that already exists and is not a regular file (`/dev/null`, a FIFO, a terminal)
    /// is written directly, since renaming over it would replace the device node itself; it cannot
    /// be all-or-nothing. A `dest` that is a symbolic link is resolved, so the link survives and
    /// its target is replaced.
    pub fn create(dest: &Path) -> Result<AtomicFile> {
        AtomicFile::create_staged(dest, true)
    }

    /// [`AtomicFile::create`], with the unnamed temporary file allowed or not (tests force the
    /// named one that other systems get).
    fn create_staged(dest: &Path, allow_unnamed: bool) -> Result<AtomicFile> {
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
                return Ok(AtomicFile::new(file, Staging::Direct, dest.to_path_buf()));
            }
        }
        let dest = match fs::symlink_metadata(dest) {
            Ok(m) if m.file_type().is_symlink() => fs::canonicalize(dest)
                .map_err(|e| Error::io(format!("cannot resolve the link {shown}"), e))?,
            _ => dest.to_path_buf(),
        };
        let dir = parent(&dest).to_path_buf();
        let file_name = dest
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{shown} is not a file path")))?
            .to_owned();
        let cannot_create = |e| {
            Error::io(
                format!("cannot create a temporary file in {}", dir.display()),
                e,
            )
        };
        #[cfg(target_os = "linux")]
        if allow_unnamed {
            if let Some(file) = unnamed::open(&dir).map_err(cannot_create)? {
                // No other process can reach it before the commit names it; from then the lock
                // tells a later run that it is not stale.
                let _ = file.lock();
                remove_stale(&dir, &file_name, &file);
                return Ok(AtomicFile::new(file, Staging::Unnamed(dir), dest));
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = allow_unnamed;
        let mut temps = LIVE_TEMPS.lock().unwrap_or_else(|p| p.into_inner());
        let (file, temp) = create_named(&dir, &file_name).map_err(cannot_create)?;
        temps.push(temp.clone());
        drop(temps);
        remove_stale(&dir, &file_name, &file);
        Ok(AtomicFile::new(file, Staging::Named(temp), dest))
    }

    fn new(file: File, staging: Staging, dest: PathBuf) -> AtomicFile {
        AtomicFile {
            writer: Some(BufWriter::with_capacity(256 * 1024, file)),
            committed: false,
            staging,
            dest,
        }
    }

    /// Flush and sync what was written, ahead of [`AtomicFile::commit`] (which then has little
    /// left to do): several inputs at once write and sync in parallel, and put their files in
    /// place in input order. The write buffer is freed (later writes go straight to the file), so
    /// files waiting for their turn hold no memory.
    pub fn sync(&mut self) -> Result<()> {
        let writing = |e| Error::io(format!("writing {}", self.dest.display()), e);
        let writer = self.writer.take().expect("not yet committed");
        let file = writer.into_inner().map_err(|e| writing(e.into_error()))?;
        self.writer = Some(BufWriter::with_capacity(0, file));
        if let Staging::Direct = self.staging {
            return Ok(());
        }
        self.writer
            .as_ref()
            .expect("just set")
            .get_ref()
            .sync_all()
            .map_err(writing)
    }

    /// Flush, sync and put the file in the destination's place.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("not yet committed");
        let writing = |e| Error::io(format!("writing {}", self.dest.display()), e);
        let file = writer.into_inner().map_err(|e| writing(e.into_error()))?;
        if let Staging::Direct = self.staging {
            // A device or FIFO: written directly, nothing to rename.
            self.committed = true;
            return Ok(());
        }
        file.sync_all().map_err(writing)?;
        let cannot_replace = |e| Error::io(format!("cannot replace {}", self.dest.display()), e);
        // Held until the file is in place, so the signal handler cannot run in between (it takes
        // this lock before the process dies).
        let mut temps = LIVE_TEMPS.lock().unwrap_or_else(|p| p.into_inner());
        match &self.staging {
            #[cfg(target_os = "linux")]
            Staging::Unnamed(dir) => {
                let name = self.dest.file_name().expect("checked in create");
                unnamed::link_over(&file, dir, name, &self.dest).map_err(cannot_replace)?;
            }
            Staging::Named(temp) => {
                fs::rename(temp, &self.dest).map_err(cannot_replace)?;
                temps.retain(|p| p != temp);
            }
            Staging::Direct => unreachable!("returned above"),
        }
        self.committed = true;
        drop(temps);
        // Our lock goes only now that the temporary name is gone.
        drop(file);
        if let Ok(d) = File::open(parent(&self.dest)) {
            let _ = d.sync_all();
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
        if self.committed {
            return;
        }
        // Not committed (an error, or a failed commit): throw the partial plaintext away. An
        // unnamed file goes with its descriptor.
        if let Staging::Named(temp) = &self.staging {
            let mut temps = LIVE_TEMPS.lock().unwrap_or_else(|p| p.into_inner());
            let _ = fs::remove_file(temp);
            temps.retain(|p| p != temp);
        }
        self.writer = None;
    }
}

/// `path`'s directory (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `.NAME.`: how every temporary file for the destination `NAME` starts; `.partial` ends it, and
/// [`RANDOM_CHARS`] ASCII letters and digits stand between.
fn staging_prefix(file_name: &OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(file_name);
    prefix.push(".");
    prefix
}

const STAGING_SUFFIX: &str = ".partial";
const RANDOM_CHARS: usize = 6;

/// Create `.NAME.XXXXXX.partial` in `dir`, mode 0600, and lock it. A later run removes an unlocked
/// one as stale, and could do so between our create and our lock: then the name is gone (or is
/// another file) once we hold the lock, and we try a new name.
fn create_named(dir: &Path, file_name: &OsStr) -> io::Result<(File, PathBuf)> {
    let prefix = staging_prefix(file_name);
    let mut last = None;
    for _ in 0..8 {
        let (file, temp) = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(STAGING_SUFFIX)
            .rand_bytes(RANDOM_CHARS)
            .permissions(mode_0600())
            .tempfile_in(dir)?
            .keep()
            .map_err(|e| e.error)?;
        // Exactly 0600, whatever the umask: the mark a later run looks for.
        file.set_permissions(mode_0600())?;
        match file.lock() {
            // No locks on this filesystem: nobody else can take one either, so nothing is ever
            // removed as stale here (see `remove_stale`).
            Err(_) => return Ok((file, temp)),
            Ok(()) if still_named(&file, &temp) => return Ok((file, temp)),
            Ok(()) => last = Some(temp),
        }
    }
    Err(io::Error::other(format!(
        "{} kept disappearing",
        last.map(|p| p.display().to_string()).unwrap_or_default()
    )))
}

/// True if `path` still names `file`.
#[cfg(unix)]
fn still_named(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(not(unix))]
fn still_named(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// True for a name `.NAME.XXXXXX.partial` made by [`create_named`] or a commit for `file_name`.
#[cfg(unix)]
fn is_staging_name(name: &OsStr, file_name: &OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let prefix = staging_prefix(file_name);
    name.as_bytes()
        .strip_prefix(prefix.as_bytes())
        .and_then(|rest| rest.strip_suffix(STAGING_SUFFIX.as_bytes()))
        .is_some_and(|random| {
            random.len() == RANDOM_CHARS && random.iter().all(u8::is_ascii_alphanumeric)
        })
}

/// Remove the temporary files for `file_name` in `dir` that earlier runs left behind when they
/// were killed (SIGKILL, an out-of-memory kill, a power cut), and only those: a file is removed
/// when its name is one we make, it is a regular file (not a link) with mode 0600 and the owner
/// of `ours` (this run's own temporary file), and we can take its lock, which a writer holds for
/// as long as it lives (the kernel drops it when the process dies). A file being written by a
/// live run, or that anyone else made, stays. Best effort: what cannot be read is left alone.
#[cfg(unix)]
fn remove_stale(dir: &Path, file_name: &OsStr, ours: &File) {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let (Ok(own), Ok(entries)) = (ours.metadata(), fs::read_dir(dir)) else {
        return;
    };
    for entry in entries.flatten() {
        if !is_staging_name(&entry.file_name(), file_name) {
            continue;
        }
        let path = entry.path();
        // O_NOFOLLOW: a link is never ours; O_NONBLOCK: a FIFO must not hang the run.
        let Ok(file) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        let Ok(meta) = file.metadata() else {
            continue;
        };
        let ours_in_shape = meta.is_file()
            && meta.mode() & 0o7777 == 0o600
            && meta.uid() == own.uid()
            && (meta.dev(), meta.ino()) != (own.dev(), own.ino());
        if ours_in_shape && file.try_lock().is_ok() && still_named(&file, &path) {
            let _ = fs::remove_file(&path);
        }
    }
}

#[cfg(not(unix))]
fn remove_stale(_dir: &Path, _file_name: &OsStr, _ours: &File) {}

/// The unnamed temporary file of Linux: `O_TMPFILE`, named by `linkat` at the commit.
#[cfg(target_os = "linux")]
mod unnamed {
    use std::ffi::OsStr;
    use std::fs::{self, File};
    use std::io;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    use std::path::Path;

    use rustix::fs::{linkat, AtFlags, CWD};

    /// An unnamed mode-0600 file in `dir`, or `None` where this cannot work: the filesystem has no
    /// `O_TMPFILE` (EOPNOTSUPP; EISDIR or EINVAL from kernels before 3.11), or `/proc` is not
    /// mounted, so the file could not be named at the commit. Other errors (no such directory,
    /// permission denied) are the caller's.
    pub(super) fn open(dir: &Path) -> io::Result<Option<File>> {
        let file = match fs::OpenOptions::new()
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
        {
            Ok(file) => file,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        // The mode given to open is cut by the umask; the file must be exactly 0600.
        file.set_permissions(super::mode_0600())?;
        let (own, via_proc) = (file.metadata()?, fs::metadata(proc_path(&file)));
        match via_proc {
            Ok(m) if (m.dev(), m.ino()) == (own.dev(), own.ino()) => Ok(Some(file)),
            _ => Ok(None),
        }
    }

    /// Give `file` the name `dest`: linked straight there when `dest` does not exist; else linked
    /// under a temporary name in `dir` (`linkat` cannot replace) and renamed over `dest`.
    pub(super) fn link_over(file: &File, dir: &Path, name: &OsStr, dest: &Path) -> io::Result<()> {
        match link(file, dest) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            done => return done,
        }
        let prefix = super::staging_prefix(name);
        let (_, temp) = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(super::STAGING_SUFFIX)
            .rand_bytes(super::RANDOM_CHARS)
            .make_in(dir, |path| link(file, path))?
            .keep()
            .map_err(|e| e.error)?;
        fs::rename(&temp, dest).inspect_err(|_| {
            let _ = fs::remove_file(&temp);
        })
    }

    /// `linkat` the open `file` to `path`: through `/proc/self/fd`, which any user may do, else
    /// by the descriptor itself (`AT_EMPTY_PATH`, which older kernels allow only to privileged
    /// processes).
    fn link(file: &File, path: &Path) -> io::Result<()> {
        let proc = proc_path(file);
        match linkat(CWD, proc.as_str(), CWD, path, AtFlags::SYMLINK_FOLLOW) {
            Err(rustix::io::Errno::NOENT) if !Path::new(&proc).exists() => {
                Ok(linkat(file, "", CWD, path, AtFlags::EMPTY_PATH)?)
            }
            result => Ok(result?),
        }
    }

    fn proc_path(file: &File) -> String {
        format!("/proc/self/fd/{}", file.as_raw_fd())
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

    /// Both ways of staging: unnamed (Linux) and named (elsewhere, and where `O_TMPFILE` or
    /// `/proc` is missing).
    const STAGINGS: [bool; 2] = [true, false];

    #[test]
    fn commit_replaces_and_drop_leaves_nothing() {
        for unnamed in STAGINGS {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("out.ndjson");
            fs::write(&dest, "old\n").unwrap();
            {
                let mut f = AtomicFile::create_staged(&dest, unnamed).unwrap();
                f.write_all(b"partial").unwrap();
            }
            assert_eq!(fs::read_to_string(&dest).unwrap(), "old\n");
            assert_eq!(names(dir.path()), ["out.ndjson"], "unnamed: {unnamed}");
            let mut f = AtomicFile::create_staged(&dest, unnamed).unwrap();
            f.write_all(b"new\n").unwrap();
            f.commit().unwrap();
            assert_eq!(fs::read_to_string(&dest).unwrap(), "new\n");
            assert_eq!(names(dir.path()), ["out.ndjson"], "unnamed: {unnamed}");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(
                    fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
                    0o600
                );
            }
            // A destination that does not exist yet.
            let fresh = dir.path().join("fresh.ndjson");
            let mut f = AtomicFile::create_staged(&fresh, unnamed).unwrap();
            f.write_all(b"fresh\n").unwrap();
            f.commit().unwrap();
            assert_eq!(fs::read_to_string(&fresh).unwrap(), "fresh\n");
            assert_eq!(names(dir.path()), ["fresh.ndjson", "out.ndjson"]);
        }
    }

    /// On Linux the plaintext being written has no name: a SIGKILL leaves nothing to find.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_temporary_file_has_no_name_until_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.ndjson");
        fs::write(&dest, "old\n").unwrap();
        let mut f = AtomicFile::create(&dest).unwrap();
        assert!(matches!(f.staging, Staging::Unnamed(_)));
        f.write_all(b"new\n").unwrap();
        f.flush().unwrap();
        assert_eq!(names(dir.path()), ["out.ndjson"]);
        assert_eq!(fs::read_to_string(&dest).unwrap(), "old\n");
        f.commit().unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "new\n");
        assert_eq!(names(dir.path()), ["out.ndjson"]);
    }

    #[test]
    fn a_named_temporary_is_registered_for_the_signal_handler() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.ndjson");
        let f = AtomicFile::create_staged(&dest, false).unwrap();
        let Staging::Named(temp) = &f.staging else {
            panic!("named")
        };
        let temp = temp.clone();
        assert!(temp.exists());
        assert!(LIVE_TEMPS.lock().unwrap().contains(&temp));
        f.commit().unwrap();
        assert!(!LIVE_TEMPS.lock().unwrap().contains(&temp));
        assert_eq!(names(dir.path()), ["out.ndjson"]);
    }

    /// What a run killed mid-write leaves where only a named temporary file is possible: the
    /// next run over the same destination removes it, and nothing that is not provably a dead
    /// run's own.
    #[cfg(unix)]
    #[test]
    fn stale_temporaries_of_the_same_destination_are_removed_and_nothing_else() {
        use std::os::unix::fs::PermissionsExt;
        let private = |path: &Path, mode: u32| {
            fs::write(path, "plaintext\n").unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        };
        for unnamed in STAGINGS {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let dest = d.join("out.ndjson");
            fs::write(&dest, "old\n").unwrap();
            // Left by killed runs: removed.
            private(&d.join(".out.ndjson.Ab3xY9.partial"), 0o600);
            private(&d.join(".out.ndjson.000000.partial"), 0o600);
            // Not ours: another destination's, another mode, another pattern, a link, a
            // directory.
            private(&d.join(".other.ndjson.Ab3xY9.partial"), 0o600);
            private(&d.join(".out.ndjson.Ab3xY.partial"), 0o600);
            private(&d.join(".out.ndjson.Ab3x-9.partial"), 0o600);
            private(&d.join(".out.ndjson.Ab3xY9.partial.bak"), 0o600);
            private(&d.join(".out.ndjson.Zz9Zz9.partial"), 0o644);
            private(&d.join("target"), 0o600);
            std::os::unix::fs::symlink(d.join("target"), d.join(".out.ndjson.Lnk123.partial"))
                .unwrap();
            fs::create_dir(d.join(".out.ndjson.Dir123.partial")).unwrap();
            let kept = [
                ".other.ndjson.Ab3xY9.partial",
                ".out.ndjson.Ab3x-9.partial",
                ".out.ndjson.Ab3xY.partial",
                ".out.ndjson.Ab3xY9.partial.bak",
                ".out.ndjson.Dir123.partial",
                ".out.ndjson.Lnk123.partial",
                ".out.ndjson.Zz9Zz9.partial",
                "out.ndjson",
                "target",
            ];
            let mut f = AtomicFile::create_staged(&dest, unnamed).unwrap();
            let mut listed = names(d);
            if let Staging::Named(temp) = &f.staging {
                let own = temp.file_name().unwrap().to_string_lossy().into_owned();
                listed.retain(|n| *n != own);
            }
            assert_eq!(listed, kept, "unnamed: {unnamed}");
            f.write_all(b"new\n").unwrap();
            f.commit().unwrap();
            assert_eq!(fs::read_to_string(&dest).unwrap(), "new\n");
            assert_eq!(names(d), kept, "unnamed: {unnamed}");
            assert_eq!(fs::read_to_string(d.join("target")).unwrap(), "plaintext\n");
        }
    }

    /// A temporary file that a live run is writing is locked, and another run over the same
    /// destination leaves it alone.
    #[cfg(unix)]
    #[test]
    fn a_temporary_being_written_is_not_removed() {
        for unnamed in STAGINGS {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("out.ndjson");
            let mut live = AtomicFile::create_staged(&dest, false).unwrap();
            let Staging::Named(temp) = &live.staging else {
                panic!("named")
            };
            let temp = temp.clone();
            live.write_all(b"first\n").unwrap();
            live.flush().unwrap();
            let second = AtomicFile::create_staged(&dest, unnamed).unwrap();
            assert!(temp.exists(), "unnamed: {unnamed}");
            drop(second);
            assert!(temp.exists(), "unnamed: {unnamed}");
            live.commit().unwrap();
            assert_eq!(fs::read_to_string(&dest).unwrap(), "first\n");
            assert_eq!(names(dir.path()), ["out.ndjson"]);
        }
    }

    /// A pipe grows to what was asked; a size past what the kernel allows falls back to
    /// `pipe-max-size` without an error; anything else is left alone.
    #[cfg(target_os = "linux")]
    #[test]
    fn pipes_grow_as_far_as_the_kernel_allows() {
        use std::os::fd::AsFd;
        let (_r, w) = rustix::pipe::pipe().unwrap();
        assert_eq!(grow_pipe(w.as_fd(), 256 * 1024), Some(256 * 1024));
        assert_eq!(rustix::pipe::fcntl_getpipe_size(&w).unwrap(), 256 * 1024);
        // Never shrunk.
        assert_eq!(grow_pipe(w.as_fd(), 128 * 1024), Some(256 * 1024));
        let max: usize = fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let got = grow_pipe(w.as_fd(), 1 << 40).unwrap();
        assert_eq!(got, max.max(256 * 1024));
        assert_eq!(rustix::pipe::fcntl_getpipe_size(&w).unwrap(), got);
        let file = tempfile::tempfile().unwrap();
        assert_eq!(grow_pipe(file.as_fd(), PIPE_BYTES), None);
    }

    /// A file synced ahead of its commit takes later writes and commits whole.
    #[test]
    fn synced_then_committed() {
        for unnamed in STAGINGS {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("out.ndjson");
            let mut f = AtomicFile::create_staged(&dest, unnamed).unwrap();
            f.write_all(b"one\n").unwrap();
            f.sync().unwrap();
            assert!(!dest.exists(), "unnamed: {unnamed}");
            f.write_all(b"two\n").unwrap();
            f.commit().unwrap();
            assert_eq!(fs::read_to_string(&dest).unwrap(), "one\ntwo\n");
            assert_eq!(names(dir.path()), ["out.ndjson"], "unnamed: {unnamed}");
        }
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
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
