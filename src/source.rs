//! Where export bytes come from: a named file, standard input (`-`), a FIFO, or bytes in memory.
//!
//! [`Input`] is what the user named; it is decided once, here, what `-` means and how an input is
//! named in messages. [`Source::ndjson`] opens it and finds the NDJSON inside
//! (`format::container`): a regular file is read with random access; standard input and FIFOs
//! (`/dev/stdin`, `<(curl ...)`) are read as streams, and a ZIP that arrives as a stream is first
//! spooled to an unnamed temporary file in `$TMPDIR` (its directory is at its end; the spool holds
//! ciphertext only, nothing the download did not, and needs free space the size of the ZIP). The
//! engine receives the result, an [`Ndjson`] reader, and never sees a path.
//!
//! This is the seam for network sources: a source that resumes by byte offset (an HTTP download)
//! yields a seekable reader or a stream, and nothing downstream changes.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::container::{self, Kind, Ndjson};
use crate::net::client::{Client, ClientOptions};
use crate::net::reader::RemoteReader;
use crate::net::url::{looks_like_url, DownloadUrl};
use crate::warning::{Warn, Warning};

/// An input as the user named it on the command line.
#[derive(Clone, PartialEq, Eq)]
pub enum Input {
    /// `-`: standard input.
    Stdin,
    /// A path (a regular file, a FIFO, a device).
    Path(PathBuf),
    /// An `https://` URL (SPEC section 4), read with ranged requests as it downloads.
    Url(DownloadUrl),
}

impl Input {
    /// Parse a command-line argument: `-`, a URL (`https://`, or `http://` to loopback), or a
    /// path. A URL that cannot be used is refused here, without quoting it.
    pub fn parse(arg: OsString) -> std::result::Result<Input, String> {
        match arg.to_str().filter(|a| looks_like_url(a)) {
            Some(url) => DownloadUrl::parse(url)
                .map(Input::Url)
                .map_err(|problem| format!("the download URL cannot be used: {problem}")),
            None => Ok(Input::from(PathBuf::from(arg))),
        }
    }
}

impl From<PathBuf> for Input {
    fn from(path: PathBuf) -> Input {
        if path.as_os_str() == "-" {
            Input::Stdin
        } else {
            Input::Path(path)
        }
    }
}

impl From<OsString> for Input {
    fn from(arg: OsString) -> Input {
        Input::from(PathBuf::from(arg))
    }
}

impl From<&str> for Input {
    fn from(arg: &str) -> Input {
        Input::from(PathBuf::from(arg))
    }
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Input {
    /// How the input is named in messages: `<stdin>`, or the path, escaped (`crate::text`): a
    /// file name can hold control characters, and the name is also shown outside error messages
    /// (the progress bar, `verify`'s summaries).
    pub fn name(&self) -> String {
        match self {
            Input::Stdin => "<stdin>".to_owned(),
            Input::Path(path) => crate::text::escape(&path.display().to_string()).into_owned(),
            Input::Url(url) => crate::text::escape(url.shown()).into_owned(),
        }
    }

    /// The path, for an input that has one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Input::Stdin | Input::Url(_) => None,
            Input::Path(path) => Some(path),
        }
    }

    /// True if the input is the existing regular file `dest` (so writing `dest` would destroy the
    /// input); standard input counts too (`decrypt - -o x.zip < x.zip`).
    ///
    /// Hand-written rather than BurntSushi's `same-file` crate, whose `Handle::from_path` opens
    /// each path for reading. An input may be a FIFO (`<(curl ...)`): opening and closing its read
    /// end before the real read wakes the writer, which can then write with no reader, die of
    /// `SIGPIPE`, and leave the real open waiting forever (a third of trial runs of
    /// `decrypt FIFO -o out` with the crate). Opening would also miss an output that can be looked
    /// up but not read. A `stat` of each path (an `fstat` of standard input) is all this needs.
    pub fn is_same_file(&self, dest: &Path) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let input = match self {
                Input::Stdin => stdin_metadata(),
                Input::Path(path) => std::fs::metadata(path).ok(),
                Input::Url(_) => None,
            };
            let id = |meta: std::fs::Metadata| meta.is_file().then(|| (meta.dev(), meta.ino()));
            let input = input.and_then(id);
            let dest = std::fs::metadata(dest).ok().and_then(id);
            matches!((input, dest), (Some(x), Some(y)) if x == y)
        }
        #[cfg(not(unix))]
        {
            match (self, std::fs::canonicalize(dest)) {
                (Input::Path(path), Ok(dest)) => {
                    std::fs::canonicalize(path).is_ok_and(|p| p == dest)
                }
                _ => false,
            }
        }
    }

    /// Standard input attached to a terminal: reading it would wait for someone to type an export.
    pub fn is_interactive(&self) -> bool {
        matches!(self, Input::Stdin) && io::stdin().is_terminal()
    }
}

/// What standard input is, from a duplicate of its descriptor (std offers no `fstat` on it).
#[cfg(unix)]
fn stdin_metadata() -> Option<std::fs::Metadata> {
    use std::os::fd::AsFd;
    let fd = io::stdin().as_fd().try_clone_to_owned().ok()?;
    File::from(fd).metadata().ok()
}

/// How URL inputs are fetched.
#[derive(Debug, Clone)]
pub struct NetOptions {
    /// Trust and timeouts.
    pub client: ClientOptions,
    /// Failures in a row without progress before giving up.
    pub retries: u32,
    /// Connections reading ahead at once.
    pub connections: usize,
}

impl Default for NetOptions {
    fn default() -> NetOptions {
        NetOptions {
            client: ClientOptions {
                ca_file: None,
                idle_timeout: std::time::Duration::from_secs(60),
                https_only: true,
            },
            retries: 8,
            connections: 4,
        }
    }
}

/// Retry lines of a download, when the caller gave no sink of its own
/// ([`Source::reporting`]): printed as they happen, like the commands' own warnings
/// (`warning: ...` on standard error).
struct PlainStderr;

impl Warn for PlainStderr {
    fn warn(&self, warning: Warning) {
        use std::io::Write as _;
        let _ = writeln!(io::stderr(), "{}: {warning}", warning.label());
    }
}

/// An input ready to be opened.
pub struct Source {
    name: String,
    origin: Origin,
    network: NetOptions,
    /// Where a download's retry lines go.
    warn: Box<dyn Warn + Send>,
    /// Set when the work reading the input stops: a download's waits end.
    stop: Arc<AtomicBool>,
}

enum Origin {
    Stdin,
    Path(PathBuf),
    Bytes(Vec<u8>),
    Url(DownloadUrl),
}

/// An opened input's bytes.
pub enum Raw {
    /// Random access, with the length in bytes: a regular file, bytes in memory.
    Seekable(Box<dyn ReadSeek>, u64),
    /// Read once, in order: standard input, a FIFO.
    Stream(Box<dyn Read + Send>),
}

/// A seekable reader that can move to another thread.
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

impl Source {
    /// The source for what the user named.
    pub fn new(input: &Input) -> Source {
        let origin = match input {
            Input::Stdin => Origin::Stdin,
            Input::Path(path) => Origin::Path(path.clone()),
            Input::Url(url) => Origin::Url(url.clone()),
        };
        Source {
            name: input.name(),
            origin,
            network: NetOptions::default(),
            warn: Box::new(PlainStderr),
            stop: Arc::default(),
        }
    }

    /// Where a URL input's retry lines go (the command's warning sink, out of its progress bar's
    /// way), and the flag that stops its download when the work reading it stops (the decrypt
    /// engine's cancel flag).
    pub fn reporting(mut self, warn: Box<dyn Warn + Send>, stop: Arc<AtomicBool>) -> Source {
        self.warn = warn;
        self.stop = stop;
        self
    }

    /// How a URL input is fetched (trust, timeouts, retries).
    pub fn network(mut self, options: NetOptions) -> Source {
        self.network = options;
        self
    }

    /// A whole input held in memory (any container), named `name` in messages: for tests and fuzz
    /// targets.
    pub fn from_bytes(name: impl Into<String>, data: Vec<u8>) -> Source {
        Source {
            name: name.into(),
            origin: Origin::Bytes(data),
            network: NetOptions::default(),
            warn: Box::new(PlainStderr),
            stop: Arc::default(),
        }
    }

    /// How the input is named in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Open the input's bytes. A directory is refused (exit 1).
    pub fn open(self) -> Result<Raw> {
        let name = self.name;
        match self.origin {
            Origin::Stdin => Ok(Raw::Stream(Box::new(io::stdin()))),
            Origin::Url(url) => {
                let mut options = self.network.client.clone();
                options.https_only = url.is_https();
                let client = Client::new(&options)?;
                let reader = RemoteReader::open(
                    client,
                    url,
                    self.network.retries,
                    self.network.connections,
                    self.warn,
                    self.stop,
                )?;
                let len = reader.len();
                Ok(Raw::Seekable(Box::new(reader), len))
            }
            Origin::Bytes(data) => {
                let len = data.len() as u64;
                Ok(Raw::Seekable(Box::new(io::Cursor::new(data)), len))
            }
            Origin::Path(path) => {
                let file =
                    File::open(&path).map_err(|e| Error::io(format!("cannot open {name}"), e))?;
                let meta = file
                    .metadata()
                    .map_err(|e| Error::io(format!("cannot read {name}"), e))?;
                if meta.is_dir() {
                    return Err(Error::container(
                        &name,
                        "is a directory, not an export file",
                    ));
                }
                if meta.is_file() {
                    Ok(Raw::Seekable(Box::new(file), meta.len()))
                } else {
                    // A FIFO, `/dev/stdin`, a process substitution (`<(curl ...)`): it cannot
                    // seek, so it is read as a stream, as `-` is.
                    Ok(Raw::Stream(Box::new(file)))
                }
            }
        }
    }

    /// Open the input and find the NDJSON inside it (`member` chooses in a ZIP).
    pub fn ndjson(self, member: Option<&str>) -> Result<Ndjson> {
        let name = self.name.clone();
        match self.open()? {
            Raw::Seekable(reader, len) => container::open_seekable(reader, &name, len, member),
            Raw::Stream(mut stream) => {
                let head = container::sniff(&mut stream, &name, member)?;
                if head.kind != Kind::Zip {
                    return container::open_stream(head, stream, &name);
                }
                let all = io::Cursor::new(head.bytes()).chain(stream);
                let (spool, len) = spool(all, &name)?;
                container::open_seekable(spool, &name, len, member)
            }
        }
    }

    /// Read the whole input into memory (a webhook body), at most `limit` bytes: a larger input
    /// is an error ([`Error::TooLarge`], naming it as a `what` and saying `remedy`) after
    /// `limit + 1` bytes at most were read, or none when the file's size already says so. A body
    /// is read before its signature can be checked, so whoever sends it must not choose how much
    /// memory that takes (`/dev/zero` once took 3.3 GB in 3 s; issue 12, item 3).
    pub fn read_all(self, limit: u64, what: &'static str, remedy: &'static str) -> Result<Vec<u8>> {
        let name = self.name.clone();
        let too_large = || Error::TooLarge {
            input: name.clone(),
            what,
            limit,
            remedy,
        };
        let mut body = Vec::new();
        let read = match self.open()? {
            Raw::Seekable(_, len) if len > limit => return Err(too_large()),
            Raw::Seekable(r, _) => r.take(limit.saturating_add(1)).read_to_end(&mut body),
            Raw::Stream(r) => r.take(limit.saturating_add(1)).read_to_end(&mut body),
        };
        read.map_err(|e| Error::io(format!("cannot read {name}"), e))?;
        if body.len() as u64 > limit {
            return Err(too_large());
        }
        Ok(body)
    }
}

/// Copy a ZIP that arrives as a stream to an unnamed temporary file in `$TMPDIR` (a ZIP is read
/// from its end) and return it rewound, with its length. The copy needs free space there the size
/// of the ZIP, so a failed write says where and after how many bytes (issue 12, item 12).
fn spool(mut from: impl Read, name: &str) -> Result<(File, u64)> {
    let dir = std::env::temp_dir();
    let failed = |written, source| Error::Spool {
        input: name.to_owned(),
        dir: dir.clone(),
        written,
        source,
    };
    let mut spool = tempfile::tempfile_in(&dir).map_err(|e| failed(None, e))?;
    let mut buf = vec![0; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(format!("cannot read {name}"), e)),
        };
        // Written piece by piece, so that `len` counts what reached the file.
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            match spool.write(rest) {
                Ok(0) => return Err(failed(Some(len), io::ErrorKind::WriteZero.into())),
                Ok(k) => {
                    len += k as u64;
                    rest = &rest[k..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(failed(Some(len), e)),
            }
        }
    }
    spool
        .seek(SeekFrom::Start(0))
        .map_err(|e| failed(Some(len), e))?;
    Ok((spool, len))
}
