//! Finding the NDJSON inside an input: ZIP, gzip or plain, detected from the content.
//!
//! SPEC section 3: the container is told from its first bytes, never from the file name. A ZIP's
//! central directory sits at its end, so a ZIP needs random access ([`open_seekable`]); gzip and
//! plain NDJSON can also be read as a stream ([`open_stream`]). Where the bytes come from, and
//! spooling a ZIP that arrives as a stream, is `crate::source`'s business. Member choice: one
//! member is used as is; with several, the one named `*.ndjson`; several candidates are an error
//! listing them unless `--member` picks one.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::gzip;
use crate::format::inflate::{Engine, Inflater, ZlibRs};
#[cfg(feature = "isal")]
use crate::format::isal::{Isal, Wrapper};

/// The container formats the tool reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A ZIP archive.
    Zip,
    /// gzip (possibly several concatenated members, possibly zero-padded: see `format::gzip`).
    Gzip,
    /// Plain NDJSON.
    Plain,
}

impl Kind {
    /// Detect the container from the first bytes of the input.
    pub fn detect(head: &[u8]) -> Kind {
        if head.starts_with(b"PK\x03\x04")
            || head.starts_with(b"PK\x05\x06")
            || head.starts_with(b"PK\x07\x08")
            || head.starts_with(b"PK\x06\x06")
        {
            Kind::Zip
        } else if head.starts_with(&[0x1f, 0x8b]) {
            Kind::Gzip
        } else {
            Kind::Plain
        }
    }

    /// A lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Zip => "ZIP",
            Kind::Gzip => "gzip",
            Kind::Plain => "NDJSON",
        }
    }
}

/// What was found inside an input.
#[derive(Debug, Clone)]
pub struct Meta {
    /// The container format.
    pub kind: Kind,
    /// The ZIP member read, if any.
    pub member: Option<String>,
    /// Bytes the progress counter will reach at the end, when known.
    pub total: Option<u64>,
    /// The CRC-32 the NDJSON bytes must have, when the reader does not check it itself: the
    /// consumer MUST then check it over every byte read (see [`Ndjson`]).
    pub crc32: Option<u32>,
}

/// The NDJSON inside an input, ready to be read in order.
///
/// Errors while reading `reader` are the container's (corrupt or truncated compressed data, a
/// size that does not match): consumers SHOULD report them with [`read_error`]. A ZIP member's
/// CRC-32 is not checked by `reader` but carried in `meta.crc32`: the consumer checks it, so the
/// thread that inflates, which every row waits for, does not also spend ~4% of its time on the
/// checksum (issue 3). A consumer that sees `crc32` MUST hash every byte read, in order, and fail
/// when the result differs.
pub struct Ndjson {
    /// How the input is named in messages.
    pub name: String,
    /// What the container is and holds.
    pub meta: Meta,
    /// Exactly the NDJSON bytes.
    pub reader: Box<dyn Read + Send>,
    /// Advances as the input is consumed, towards `meta.total` (for a progress display).
    pub consumed: Arc<AtomicU64>,
}

/// Counts bytes read through it into a shared counter (for the progress bar).
pub struct Counting<R> {
    /// The reader counted.
    pub inner: R,
    /// Where the bytes read are added.
    pub count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A file name without its container and NDJSON extensions (`.zip`, `.gz`, `.gzip`, `.ndjson`,
/// `.jsonl`, in any case and any number): `appointments_17.ndjson.zip` gives `appointments_17`. A
/// name that is only an extension is kept whole.
pub fn export_stem(file_name: &str) -> &str {
    let mut stem = file_name;
    loop {
        let lower = stem.to_ascii_lowercase();
        let Some(ext) = [".zip", ".gz", ".gzip", ".ndjson", ".jsonl"]
            .into_iter()
            .find(|ext| lower.ends_with(ext) && lower.len() > ext.len())
        else {
            return stem;
        };
        stem = &stem[..stem.len() - ext.len()];
    }
}

/// Read up to `buf.len()` bytes, stopping early only at end of input.
fn read_head(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The first bytes of an input, and the container they show.
pub struct Head {
    bytes: [u8; 64],
    len: usize,
    /// The container the first bytes show.
    pub kind: Kind,
}

impl Head {
    /// The bytes read.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Read the first bytes of an input and tell its container. Refuses an input of 0 bytes
/// and a `--member` for an input that is not a ZIP.
pub fn sniff(source: &mut impl Read, name: &str, member: Option<&str>) -> Result<Head> {
    let mut bytes = [0u8; 64];
    let len =
        read_head(source, &mut bytes).map_err(|e| typed_or_io(e, format!("reading {name}")))?;
    if len == 0 {
        return Err(no_data(name));
    }
    let kind = Kind::detect(&bytes[..len]);
    refuse_member(name, kind, member)?;
    Ok(Head { bytes, len, kind })
}

/// The NDJSON of a gzip or plain input read as a stream: `head` (from [`sniff`]) followed by
/// `rest`. A ZIP needs random access (its directory is at its end): give it to [`open_seekable`].
pub fn open_stream<R: Read + Send + 'static>(head: Head, rest: R, name: &str) -> Result<Ndjson> {
    open_stream_with(head, rest, name, Inflater::DEFAULT)
}

/// [`open_stream`] with a chosen inflater (the differential fuzz target compares them).
pub fn open_stream_with<R: Read + Send + 'static>(
    head: Head,
    rest: R,
    name: &str,
    inflater: Inflater,
) -> Result<Ndjson> {
    let consumed = Arc::new(AtomicU64::new(0));
    let meta = Meta {
        kind: head.kind,
        member: None,
        total: None,
        crc32: None,
    };
    let reader: Box<dyn Read + Send> = match head.kind {
        Kind::Zip => {
            return Err(Error::io(
                format!("reading {name}"),
                io::Error::other("a ZIP cannot be read as a stream"),
            ))
        }
        Kind::Gzip => {
            let raw = Counting {
                inner: io::Cursor::new(head.bytes)
                    .take(head.len as u64)
                    .chain(rest),
                count: consumed.clone(),
            };
            Box::new(gzip::Members::with(raw, inflater))
        }
        Kind::Plain => {
            check_plain(name, head.bytes())?;
            Box::new(Counting {
                inner: io::Cursor::new(head.bytes)
                    .take(head.len as u64)
                    .chain(rest),
                count: consumed.clone(),
            })
        }
    };
    Ok(Ndjson {
        name: name.to_owned(),
        meta,
        reader,
        consumed,
    })
}

/// The NDJSON of any seekable input (a file, a spooled stream, bytes in memory): the container is
/// told from the first bytes, so `source` MUST be positioned at its start. `name` names the input
/// in errors and `size` is its length in bytes (the progress total).
pub fn open_seekable<R: Read + Seek + Send + 'static>(
    source: R,
    name: &str,
    size: u64,
    member: Option<&str>,
) -> Result<Ndjson> {
    open_seekable_with(source, name, size, member, Inflater::DEFAULT)
}

/// [`open_seekable`] with a chosen inflater (the differential fuzz target compares them).
pub fn open_seekable_with<R: Read + Seek + Send + 'static>(
    mut source: R,
    name: &str,
    size: u64,
    member: Option<&str>,
    inflater: Inflater,
) -> Result<Ndjson> {
    let head = sniff(&mut source, name, member)?;
    source
        .seek(SeekFrom::Start(0))
        .map_err(|e| typed_or_io(e, format!("reading {name}")))?;
    let consumed = Arc::new(AtomicU64::new(0));
    let (meta, reader): (Meta, Box<dyn Read + Send>) = match head.kind {
        Kind::Zip => return open_zip(source, name, member, inflater),
        Kind::Gzip => {
            let raw = Counting {
                inner: source,
                count: consumed.clone(),
            };
            let meta = Meta {
                kind: Kind::Gzip,
                member: None,
                total: Some(size),
                crc32: None,
            };
            (meta, Box::new(gzip::Members::with(raw, inflater)))
        }
        Kind::Plain => {
            check_plain(name, head.bytes())?;
            let meta = Meta {
                kind: Kind::Plain,
                member: None,
                total: Some(size),
                crc32: None,
            };
            let reader = Counting {
                inner: source,
                count: consumed.clone(),
            };
            (meta, Box::new(reader))
        }
    };
    Ok(Ndjson {
        name: name.to_owned(),
        meta,
        reader,
        consumed,
    })
}

/// An input of 0 bytes is no export: every export, even one without rows, has some (a ZIP's or
/// gzip's headers), so it is a download that failed (`curl -sf ... | cipherstream decrypt -`, or
/// an empty file left by `curl -o`), never an export with no rows. A failure, not an empty
/// success that would replace a good `-o` file with nothing.
fn no_data(name: &str) -> Error {
    Error::container(
        name,
        "no data at all (0 bytes): even an export with no rows has some, so the download \
         probably failed",
    )
}

/// `--member` chooses inside a ZIP; given for gzip or plain NDJSON it would silently do nothing.
fn refuse_member(name: &str, kind: Kind, member: Option<&str>) -> Result<()> {
    match member {
        Some(member) if kind != Kind::Zip => Err(Error::Usage(format!(
            "--member {member:?} picks a file inside a ZIP, but {name} is {} (it has no members)",
            kind.name()
        ))),
        _ => Ok(()),
    }
}

/// Refuse an input that is neither ZIP, gzip nor NDJSON: after an optional BOM and whitespace,
/// NDJSON starts with `{`. An all-blank input is an empty export (0 bytes never get here).
fn check_plain(name: &str, head: &[u8]) -> Result<()> {
    let body = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None | Some(b'{') => Ok(()),
        Some(_) => Err(Error::container(
            name,
            format!(
                "not a ZIP, gzip or NDJSON export ({})",
                what_it_looks_like(body)
            ),
        )),
    }
}

/// A description of an input that is no export, for the error. It never quotes the input: a key
/// or secret file given as an input by mistake (or plaintext) must not reach the terminal or a log.
fn what_it_looks_like(body: &[u8]) -> &'static str {
    let text = body.trim_ascii();
    let first_line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let base64ish = |b: &u8| b.is_ascii_alphanumeric() || b"+/=_-".contains(b);
    if text.starts_with(b"<") {
        "it looks like HTML or XML: an error page saved in place of the download?"
    } else if !first_line.is_empty() && first_line.len() <= 128 && first_line.iter().all(base64ish)
    {
        "it looks like a key or secret, not an export: was a key file given as an input?"
    } else if body
        .iter()
        .take(512)
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        "it is text, but not JSON lines"
    } else {
        "its first bytes match none of these formats"
    }
}

/// Open the chosen member of a ZIP: its directory is read through the `zip` crate, then the
/// member's raw bytes are read straight from `file` (the archive is not kept), inflated here when
/// deflated. Either way its CRC-32 is left to the consumer (`Meta::crc32`), and a member that
/// holds more or fewer bytes than it declares fails.
fn open_zip<R: Read + Seek + Send + 'static>(
    file: R,
    name: &str,
    member: Option<&str>,
    inflater: Inflater,
) -> Result<Ndjson> {
    let mut archive = zip::ZipArchive::new(file).map_err(|e| match e {
        zip::result::ZipError::Io(e) if e.get_ref().is_some_and(|i| i.is::<Error>()) => {
            typed_or_io(e, format!("reading {name}"))
        }
        e => Error::container(name, format!("not a readable ZIP archive ({e})")),
    })?;
    let mut names = Vec::new();
    // Every entry's (raw name, name), directories included, for the duplicate check.
    let mut entries = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| zip_error(e, name, format!("ZIP entry {i} is unreadable")))?;
        let entry_name = entry
            .name()
            .map_err(|e| Error::container(name, format!("ZIP entry {i} has a bad name ({e})")))?
            .into_owned();
        entries.push((entry.name_raw().to_vec(), entry_name.clone()));
        if !entry.is_dir() {
            names.push((i, entry_name));
        }
    }
    if archive.has_duplicate_names() {
        // The `zip` crate indexes entries by name and keeps only the last of several with one
        // name (while `unzip -p` prints them all): list them from the central directory itself.
        let start = archive.central_directory_start();
        let mut file = archive.into_inner();
        let raw = central_directory_names(&mut file, start)
            .map_err(|e| typed_or_io(e, format!("reading {name}")))?;
        let decoded: std::collections::HashMap<&[u8], &str> = entries
            .iter()
            .map(|(raw, name)| (raw.as_slice(), name.as_str()))
            .collect();
        let all: Vec<String> = raw
            .iter()
            .map(|r| match decoded.get(r.as_slice()) {
                Some(name) => (*name).to_owned(),
                None => String::from_utf8_lossy(r).into_owned(),
            })
            .collect();
        return Err(Error::DuplicateMembers {
            input: name.to_owned(),
            names: duplicates(&all),
        });
    }
    // Names that differ as bytes can still read the same (one in CP437, one flagged UTF-8).
    let all: Vec<String> = entries.into_iter().map(|(_, name)| name).collect();
    let repeated = duplicates(&all);
    if !repeated.is_empty() {
        return Err(Error::DuplicateMembers {
            input: name.to_owned(),
            names: repeated,
        });
    }
    let index = choose_member(name, &names, member)?;
    let member_name = names
        .iter()
        .find(|(i, _)| *i == index)
        .map(|(_, n)| n.clone());
    let (method, encrypted, start, compressed, declared, crc32) = {
        let raw = archive
            .by_index_raw(index)
            .map_err(|e| zip_error(e, name, "cannot read the ZIP member".to_owned()))?;
        let start = raw
            .data_start()
            .ok_or_else(|| Error::container(name, "cannot read the ZIP member (no data offset)"))?;
        (
            raw.compression(),
            raw.encrypted(),
            start,
            raw.compressed_size(),
            raw.size(),
            raw.crc32(),
        )
    };
    if encrypted {
        return Err(Error::PasswordProtected {
            input: name.to_owned(),
        });
    }
    if method != zip::CompressionMethod::Stored && method != zip::CompressionMethod::Deflated {
        // Not damage: a ZIP made by another tool (bzip2, LZMA, zstd). Say so.
        #[allow(deprecated)] // to_u16: the method's number, for its name
        let code = method.to_u16();
        return Err(Error::UnsupportedCompression {
            input: name.to_owned(),
            method: zip::CompressionMethod::name_from_u16(code).to_owned(),
            code,
        });
    }
    let mut file = archive.into_inner();
    file.seek(SeekFrom::Start(start))
        .map_err(|e| typed_or_io(e, format!("reading {name}")))?;
    let raw = file.take(compressed);
    let consumed = Arc::new(AtomicU64::new(0));
    let reader: Box<dyn Read + Send> = if method == zip::CompressionMethod::Deflated {
        match inflater {
            Inflater::ZlibRs => Box::new(Counting {
                inner: Inflate::new(raw, ZlibRs::new(), declared),
                count: consumed.clone(),
            }),
            #[cfg(feature = "isal")]
            Inflater::Isal => Box::new(Counting {
                inner: Inflate::new(raw, Isal::new(Wrapper::Raw), declared),
                count: consumed.clone(),
            }),
        }
    } else {
        Box::new(Counting {
            inner: ExactSize {
                inner: raw,
                declared,
                seen: 0,
            },
            count: consumed.clone(),
        })
    };
    Ok(Ndjson {
        name: name.to_owned(),
        meta: Meta {
            kind: Kind::Zip,
            member: member_name,
            total: Some(declared),
            crc32: Some(crc32),
        },
        reader,
        consumed,
    })
}

/// Inflates a deflated ZIP member from its raw bytes with an [`Engine`] (zlib-rs, the backend the
/// `zip` crate uses, or ISA-L), through a 128 KiB input buffer, refusing output beyond the declared
/// size and a stream that ends early or short. It does not check the CRC-32: see [`Ndjson`].
struct Inflate<R, E> {
    raw: R,
    input: Vec<u8>,
    pos: usize,
    len: usize,
    raw_done: bool,
    z: E,
    /// Bytes inflated so far.
    total: u64,
    declared: u64,
    finished: bool,
    /// An error to report on the next read, after the bytes that came before it.
    failed: Option<io::Error>,
}

impl<R: Read, E: Engine> Inflate<R, E> {
    fn new(raw: R, z: E, declared: u64) -> Inflate<R, E> {
        Inflate {
            raw,
            input: vec![0; 128 * 1024],
            pos: 0,
            len: 0,
            raw_done: false,
            z,
            total: 0,
            declared,
            finished: false,
            failed: None,
        }
    }
}

impl<R: Read, E: Engine> Read for Inflate<R, E> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        loop {
            if self.finished {
                return Ok(0);
            }
            if self.pos == self.len && !self.raw_done {
                self.len = self.raw.read(&mut self.input)?;
                self.pos = 0;
                self.raw_done = self.len == 0;
            }
            let step = self.z.run(&self.input[self.pos..self.len], buf)?;
            self.pos += step.consumed;
            let mut n = step.produced;
            if n == 0 && step.consumed == 0 && self.pos < self.len && !step.end {
                // zlib makes progress whenever it has input and room; never spin if it does not.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the deflate stream makes no progress",
                ));
            }
            self.total += n as u64;
            let total = self.total;
            if total > self.declared {
                // Hand on the bytes up to the declared size, then fail.
                let e = io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the member holds more bytes than the {} it declares",
                        self.declared
                    ),
                );
                n -= (total - self.declared) as usize;
                self.finished = true;
                if n == 0 {
                    return Err(e);
                }
                self.failed = Some(e);
                return Ok(n);
            }
            if step.end {
                self.finished = true;
                if total != self.declared {
                    let e = io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the member holds {total} bytes but declares {}",
                            self.declared
                        ),
                    );
                    if n == 0 {
                        return Err(e);
                    }
                    self.failed = Some(e);
                }
            }
            if n > 0 {
                return Ok(n);
            }
            if self.finished {
                return Ok(0);
            }
            if self.raw_done && self.pos == self.len {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// Fails at the end of a ZIP member whose data is shorter than its declared size (the `zip` crate
/// already refuses data that is longer). Either way the archive is corrupt, and saying so beats
/// trusting it.
struct ExactSize<R> {
    inner: R,
    declared: u64,
    seen: u64,
}

impl<R: Read> Read for ExactSize<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if n == 0 && !buf.is_empty() && self.seen != self.declared {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the member holds {} bytes but declares {}",
                    self.seen, self.declared
                ),
            ));
        }
        Ok(n)
    }
}

/// The raw names of a ZIP's central directory entries, in order, read from the archive itself:
/// the headers are walked from `start` while their signature holds.
fn central_directory_names<R: Read + Seek>(file: &mut R, start: u64) -> io::Result<Vec<Vec<u8>>> {
    file.seek(SeekFrom::Start(start))?;
    let mut r = io::BufReader::new(file);
    let mut names = Vec::new();
    let mut fixed = [0u8; 46];
    while read_head(&mut r, &mut fixed)? == fixed.len() && fixed.starts_with(b"PK\x01\x02") {
        let field = |at: usize| u16::from_le_bytes([fixed[at], fixed[at + 1]]);
        let mut name = vec![0; usize::from(field(28))];
        r.read_exact(&mut name)?;
        r.seek_relative(i64::from(field(30)) + i64::from(field(32)))?;
        names.push(name);
    }
    Ok(names)
}

/// Each name that occurs more than once in `all`, with its count, in order of first occurrence.
fn duplicates(all: &[String]) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for name in all {
        match seen.get(name.as_str()) {
            Some(&at) => counts[at].1 += 1,
            None => {
                seen.insert(name.as_str(), counts.len());
                counts.push((name.clone(), 1));
            }
        }
    }
    counts.retain(|(_, count)| *count > 1);
    counts
}

/// True for the metadata macOS adds when it zips files (Archive Utility, Finder's Compress,
/// `ditto -c -k --sequesterRsrc`): `__MACOSX/` holds an AppleDouble `._NAME` beside each file
/// (its extended attributes and resource fork), and a zipped folder may hold Finder's
/// `.DS_Store`. None of it is ever data (issue 12 item 8).
pub fn is_macos_metadata(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    name.starts_with("__MACOSX/") || base.starts_with("._") || base == ".DS_Store"
}

/// Apply SPEC's member rules to the (index, name) list of non-directory entries. macOS metadata
/// ([`is_macos_metadata`]) is never chosen, unless `--member` names it exactly.
fn choose_member(input: &str, names: &[(usize, String)], wanted: Option<&str>) -> Result<usize> {
    let data: Vec<(usize, String)> = names
        .iter()
        .filter(|(_, n)| !is_macos_metadata(n))
        .cloned()
        .collect();
    let listing = || data.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>();
    if let Some(wanted) = wanted {
        return names
            .iter()
            .find(|(_, n)| n == wanted)
            .map(|(i, _)| *i)
            .ok_or_else(|| Error::MemberNotFound {
                input: input.to_owned(),
                wanted: wanted.to_owned(),
                members: listing(),
            });
    }
    match data.as_slice() {
        [] if names.is_empty() => Err(Error::container(input, "the ZIP archive holds no files")),
        [] => Err(Error::container(
            input,
            "the ZIP archive holds no files besides macOS metadata (__MACOSX/, ._*, .DS_Store)",
        )),
        [(i, _)] => Ok(*i),
        _ => {
            let candidates: Vec<&(usize, String)> = data
                .iter()
                .filter(|(_, n)| n.to_ascii_lowercase().ends_with(".ndjson"))
                .collect();
            match candidates.as_slice() {
                [(i, _)] => Ok(*i),
                [] => Err(Error::NoNdjsonMember {
                    input: input.to_owned(),
                    members: listing(),
                }),
                many => Err(Error::AmbiguousArchive {
                    input: input.to_owned(),
                    members: many.iter().map(|(_, n)| n.clone()).collect(),
                }),
            }
        }
    }
}

/// An error of the `zip` crate: a network source's own failure inside it keeps its class
/// ([`typed_or_io`]); anything else is a container failure, `what` and the crate's words.
fn zip_error(e: zip::result::ZipError, name: &str, what: String) -> Error {
    match e {
        zip::result::ZipError::Io(e) if e.get_ref().is_some_and(|i| i.is::<Error>()) => {
            typed_or_io(e, format!("reading {name}"))
        }
        e => Error::container(name, format!("{what} ({e})")),
    }
}

/// A network source's own failure (an expired URL, a refusal, retries exhausted) travels through
/// `Read` as an `io::Error` holding the typed [`Error`]: take it back out, so it keeps its class
/// and exit status. Any other I/O error is `what` failing.
pub fn typed_or_io(e: io::Error, what: String) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(typed) = inner.downcast::<Error>() {
                return *typed;
            }
        }
        return Error::io(what, io::Error::other("a network source failed"));
    }
    Error::io(what, e)
}

/// Turn an error met while reading the NDJSON out of a container into the right failure class:
/// for ZIP and gzip it is a container failure (corrupt, truncated, CRC mismatch, or bytes after
/// the last gzip member that are neither a member nor zero padding); for plain NDJSON it is an
/// I/O error.
pub fn read_error(input: &str, meta: &Meta, e: io::Error) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        return typed_or_io(e, String::new());
    }
    match meta.kind {
        Kind::Plain => Error::io(format!("reading {input}"), e),
        Kind::Gzip if gzip::trailing_data(&e).is_some() => Error::TrailingData {
            input: input.to_owned(),
            bytes: gzip::trailing_data(&e).map_or(0, |t| t.bytes),
        },
        kind => {
            let what = match e.kind() {
                io::ErrorKind::UnexpectedEof => "is truncated".to_owned(),
                _ => format!("is corrupt ({})", corruption(&e)),
            };
            Error::container(input, format!("the {} data {what}", kind.name()))
        }
    }
}

/// What is wrong with damaged compressed data, in the user's terms rather than the decoder's
/// (`corrupt gzip stream does not have a matching checksum`, zlib's `invalid distance too far
/// back`): issue 12, item 9. Messages of our own (sizes that do not match) pass through.
fn corruption(e: &io::Error) -> String {
    let text = e.to_string();
    let decoder = e.get_ref().is_some_and(|inner| {
        #[cfg(feature = "isal")]
        if inner.is::<crate::format::isal::InvalidDeflate>() {
            return true;
        }
        inner.is::<flate2::DecompressError>()
    });
    if text.contains("matching checksum") {
        "its CRC-32 or length does not match the one its trailer records".to_owned()
    } else if decoder || text.contains("corrupt deflate stream") {
        "the compressed data is invalid".to_owned()
    } else if text.contains("invalid gzip header") {
        "a gzip header is invalid".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;

    #[test]
    fn detects_by_magic() {
        assert_eq!(Kind::detect(b"PK\x03\x04rest"), Kind::Zip);
        assert_eq!(Kind::detect(b"PK\x05\x06"), Kind::Zip);
        assert_eq!(Kind::detect(&[0x1f, 0x8b, 8]), Kind::Gzip);
        assert_eq!(Kind::detect(b"{\"encrypted_data\""), Kind::Plain);
        assert_eq!(Kind::detect(b""), Kind::Plain);
    }

    #[test]
    fn plain_must_start_with_an_object() {
        assert!(check_plain("x", b"\xEF\xBB\xBF\r\n {").is_ok());
        assert!(check_plain("x", b"").is_ok());
        let e = |head: &[u8]| check_plain("x", head).unwrap_err().to_string();
        let not = "x: not a ZIP, gzip or NDJSON export";
        assert_eq!(
            e(b"\x89PNG\r\n"),
            format!("{not} (its first bytes match none of these formats)")
        );
        assert_eq!(
            e(b"\n<!DOCTYPE html><html><body>Request has expired"),
            format!(
                "{not} (it looks like HTML or XML: an error page saved in place of the download?)"
            )
        );
        assert_eq!(
            e(b"id,name\n1,Ann\n"),
            format!("{not} (it is text, but not JSON lines)")
        );
        // A key or webhook secret given as an input: said so, and not one byte of it quoted.
        for secret in [
            "KWYaVYUNq0cE6xK2nZ2dQm1Vb8W3p5Yt7Rj9Lk4Hs0A=\n",
            "whsec_test_4f9a2c71e0\n",
        ] {
            let got = e(secret.as_bytes());
            assert_eq!(
                got,
                format!("{not} (it looks like a key or secret, not an export: was a key file given as an input?)")
            );
            assert!(!got.contains(&secret[..4]), "{got}");
        }
    }

    fn names(list: &[&str]) -> Vec<(usize, String)> {
        list.iter()
            .enumerate()
            .map(|(i, n)| (i, n.to_string()))
            .collect()
    }

    #[test]
    fn member_rules() {
        assert_eq!(choose_member("z", &names(&["data.txt"]), None).unwrap(), 0);
        assert_eq!(
            choose_member("z", &names(&["README.txt", "a.ndjson"]), None).unwrap(),
            1
        );
        let e = choose_member("z", &names(&["a.ndjson", "b.ndjson"]), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "z: the ZIP holds several candidate members: a.ndjson, b.ndjson"
        );
        assert_eq!(
            choose_member("z", &names(&["a.ndjson", "b.ndjson"]), Some("b.ndjson")).unwrap(),
            1
        );
        assert!(choose_member("z", &names(&["a.txt", "b.txt"]), None).is_err());
        assert!(choose_member("z", &names(&[]), None).is_err());
        assert!(choose_member("z", &names(&["a.ndjson"]), Some("c")).is_err());
    }

    fn zip_of(data: &[u8], method: zip::CompressionMethod) -> Vec<u8> {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        w.start_file("job.ndjson", opts).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap().into_inner()
    }

    /// Read an input as the pipeline does, in reads of `step` bytes: the bytes read and the error
    /// that ended them, if any.
    /// The same with every inflater of this build (checked here: bytes, error message and exit
    /// status), so each test below holds for each of them.
    fn read_steps(input: Vec<u8>, step: usize) -> Result<(Vec<u8>, Option<Error>, Meta)> {
        let read_with = |inflater| -> Result<(Vec<u8>, Option<Error>, Meta)> {
            let size = input.len() as u64;
            let mut ndjson =
                open_seekable_with(io::Cursor::new(input.clone()), "z", size, None, inflater)?;
            let mut out = Vec::new();
            let mut buf = vec![0u8; step];
            loop {
                match ndjson.reader.read(&mut buf) {
                    Ok(0) => return Ok((out, None, ndjson.meta)),
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) => {
                        let e = read_error("z", &ndjson.meta, e);
                        return Ok((out, Some(e), ndjson.meta));
                    }
                }
            }
        };
        let first = read_with(Inflater::ZlibRs);
        let show = |r: &Result<(Vec<u8>, Option<Error>, Meta)>| match r {
            Ok((_, e, _)) => e.as_ref().map(|e| (e.to_string(), e.exit())),
            Err(e) => Some((e.to_string(), e.exit())),
        };
        for &other in &Inflater::ALL[1..] {
            let got = read_with(other);
            assert_eq!(show(&got), show(&first), "{other:?}, reads of {step}");
            if let (Ok((a, err, _)), Ok((b, _, _))) = (&first, &got) {
                assert!(
                    crate::format::inflate::same_output(a, b, err.is_none()),
                    "{other:?}, reads of {step}: {} bytes, not {}",
                    b.len(),
                    a.len()
                );
            }
        }
        first
    }

    /// Read `zip` as the pipeline does, in reads of `step` bytes: (bytes, `Meta::crc32`).
    fn read_all(zip: Vec<u8>, step: usize) -> Result<(Vec<u8>, Option<u32>)> {
        match read_steps(zip, step)? {
            (out, None, meta) => Ok((out, meta.crc32)),
            (_, Some(e), _) => Err(e),
        }
    }

    /// A member's bytes are read here and its CRC-32 handed to the caller to check, whether it is
    /// deflated or stored.
    #[test]
    fn deflated_members_hand_their_crc_to_the_caller() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .collect();
        for step in [1, 7, 4096, 256 * 1024, 1 << 20] {
            let (out, crc) =
                read_all(zip_of(&data, zip::CompressionMethod::Deflated), step).unwrap();
            assert_eq!(out, data, "read in steps of {step}");
            assert_eq!(crc, Some(crc32fast::hash(&data)));
        }
        let (out, crc) = read_all(zip_of(&data, zip::CompressionMethod::Stored), 4096).unwrap();
        assert_eq!((out, crc), (data.clone(), Some(crc32fast::hash(&data))));
    }

    /// A member compressed with a method the tool does not read is named as such, not "corrupt".
    #[test]
    fn an_unsupported_compression_method_is_named() {
        let mut zip = zip_of(b"{\"a\":1}\n", zip::CompressionMethod::Stored);
        // Mark the member bzip2 (12) in its local header and its central directory entry.
        zip[8] = 12;
        let cd = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        zip[cd + 10] = 12;
        let e = read_all(zip, 4096).unwrap_err();
        assert_eq!(
            e.to_string(),
            "z: the ZIP member is compressed with Bzip2 (method 12), which cipherstream does not \
             read (the vendor's exports are deflated or stored)"
        );
        assert_eq!(e.exit(), Exit::Failure);
    }

    #[test]
    fn member_for_an_input_that_is_not_a_zip_is_refused() {
        for (data, kind) in [
            (b"{}\n".to_vec(), "NDJSON"),
            (vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3], "gzip"),
        ] {
            let e = open_seekable(io::Cursor::new(data), "p", 3, Some("x"))
                .err()
                .unwrap();
            assert_eq!(e.exit(), Exit::Usage);
            assert_eq!(
                e.to_string(),
                format!(
                    "--member \"x\" picks a file inside a ZIP, but p is {kind} (it has no members)"
                )
            );
        }
    }

    /// macOS metadata (AppleDouble `._*` files under `__MACOSX/`, `.DS_Store`) is never data.
    #[test]
    fn macos_metadata_is_never_chosen() {
        let mac = names(&[
            "export/.DS_Store",
            "export/x.ndjson",
            "__MACOSX/export/._x.ndjson",
            "__MACOSX/export/._.DS_Store",
        ]);
        assert_eq!(choose_member("z", &mac, None).unwrap(), 1);
        let mac = names(&["data.txt", "__MACOSX/._data.txt"]);
        assert_eq!(choose_member("z", &mac, None).unwrap(), 0);
        // --member may still name one exactly.
        assert_eq!(
            choose_member("z", &mac, Some("__MACOSX/._data.txt")).unwrap(),
            1
        );
        let e = choose_member("z", &names(&["__MACOSX/._x.ndjson"]), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "z: the ZIP archive holds no files besides macOS metadata (__MACOSX/, ._*, .DS_Store)"
        );
        // Candidates and listings leave the metadata out.
        let e = choose_member(
            "z",
            &names(&["a.ndjson", "b.ndjson", "__MACOSX/._a.ndjson"]),
            None,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "z: the ZIP holds several candidate members: a.ndjson, b.ndjson"
        );
        assert!(!is_macos_metadata("exports/2024._x.ndjson"));
        assert!(!is_macos_metadata("MACOSX/x.ndjson"));
    }

    /// A ZIP whose members are `names`, each holding `data`.
    fn zip_named(names: &[&str], data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default();
        for name in names {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    /// Replace every occurrence of `from` in `bytes` with `to`, of the same length (a name, in
    /// its local header and its central directory entry).
    fn rename(bytes: &mut [u8], from: &[u8], to: &[u8]) {
        assert_eq!(from.len(), to.len());
        let mut at = 0;
        while let Some(i) = bytes[at..].windows(from.len()).position(|w| w == from) {
            bytes[at + i..at + i + to.len()].copy_from_slice(to);
            at += i + to.len();
        }
    }

    fn open_error(zip: Vec<u8>, member: Option<&str>) -> Error {
        let size = zip.len() as u64;
        open_seekable(io::Cursor::new(zip), "z", size, member)
            .err()
            .expect("refused")
    }

    /// Entries with one name: the `zip` crate indexes one of them (the last); the archive is
    /// refused and the central directory's entries are counted, whatever `--member` says.
    #[test]
    fn entries_with_the_same_name_are_refused() {
        let mut zip = zip_named(&["README.txt", "a.ndjson", "b.ndjson", "c.ndjson"], b"{}\n");
        rename(&mut zip, b"b.ndjson", b"a.ndjson");
        rename(&mut zip, b"c.ndjson", b"a.ndjson");
        for member in [None, Some("a.ndjson"), Some("README.txt")] {
            let e = open_error(zip.clone(), member);
            assert_eq!(
                e.to_string(),
                "z: ambiguous ZIP: several of its entries have the same name: a.ndjson (3 \
                 entries)"
            );
            assert_eq!(e.exit(), Exit::Failure);
        }
        let mut zip = zip_named(
            &[
                "x.ndjson",
                "y.ndjson",
                "__MACOSX/._x.ndjson",
                "__MACOSX/._y.ndjson",
            ],
            b"{}\n",
        );
        rename(&mut zip, b"y.ndjson", b"x.ndjson");
        assert_eq!(
            open_error(zip, None).to_string(),
            "z: ambiguous ZIP: several of its entries have the same name: x.ndjson (2 entries), \
             __MACOSX/._x.ndjson (2 entries)"
        );
    }

    /// Names that differ as bytes but read the same are the same name: here 0x82 (CP437 for
    /// U+00E9) and C3 A9 (UTF-8 for it).
    #[test]
    fn names_that_read_the_same_are_the_same_name() {
        let mut zip = zip_named(&["x.ndjson", "\u{e9}.ndjson"], b"{}\n");
        rename(&mut zip, b"x.ndjson", b"\x82.ndjson");
        assert_eq!(
            open_error(zip, None).to_string(),
            "z: ambiguous ZIP: several of its entries have the same name: \u{e9}.ndjson (2 \
             entries)"
        );
    }

    /// A gzip export zero-padded after its last member reads to its end; other bytes after it
    /// are trailing data, named as such after every row, from a file and from a stream (issue 12
    /// item 8).
    #[test]
    fn gzip_padding_ends_the_export_and_trailing_bytes_are_named() {
        use std::io::Write;
        let data = b"{\"a\":1}\n".repeat(1000);
        let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        w.write_all(&data).unwrap();
        let gz = w.finish().unwrap();
        let read_stream = |input: Vec<u8>| {
            let mut source = io::Cursor::new(input);
            let head = sniff(&mut source, "z", None).unwrap();
            let mut ndjson = open_stream(head, source, "z").unwrap();
            let mut out = Vec::new();
            let e = ndjson.reader.read_to_end(&mut out).err();
            (out, e.map(|e| read_error("z", &ndjson.meta, e)))
        };

        let mut padded = gz.clone();
        padded.resize(gz.len() + 512 - gz.len() % 512, 0);
        let (out, err, _) = read_steps(padded.clone(), 4096).unwrap();
        assert_eq!((out, err.map(|e| e.to_string())), (data.clone(), None));
        let (out, err) = read_stream(padded);
        assert_eq!((out, err.map(|e| e.to_string())), (data.clone(), None));

        let mut junk = gz.clone();
        junk.extend_from_slice(b"\r\n--boundary--\r\n");
        let expected = "z: 16 byte(s) of trailing data after the last gzip member (neither \
                        another member nor zero padding)";
        let (out, err, _) = read_steps(junk.clone(), 4096).unwrap();
        let err = err.unwrap();
        assert_eq!((out, err.to_string()), (data.clone(), expected.to_owned()));
        assert_eq!(err.exit(), Exit::Failure);
        let (out, err) = read_stream(junk);
        assert_eq!((out, err.unwrap().to_string()), (data, expected.to_owned()));
    }

    #[test]
    fn member_names_match_ndjson_in_any_case() {
        assert_eq!(
            choose_member("z", &names(&["README.txt", "EXPORT.NDJSON"]), None).unwrap(),
            1
        );
    }

    /// Deflate data cut short inside the archive is a truncated ZIP, after the bytes before it.
    #[test]
    fn a_truncated_deflate_stream_is_reported_as_truncated() {
        let data = b"{\"a\":1}\n".repeat(5000);
        let mut zip = zip_of(&data, zip::CompressionMethod::Deflated);
        // Damage the end of the compressed data (just before the central directory), keeping
        // the archive's structure readable: the final block never ends.
        let cd = zip.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
        let start = 30 + "job.ndjson".len();
        let damaged = start + (cd - start) / 2;
        for b in &mut zip[damaged..cd] {
            *b = 0;
        }
        let e = read_all(zip, 4096).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("z: the ZIP data is"), "{text}");
    }

    /// A deflated member that holds more than it declares yields exactly the declared bytes, then
    /// the error (the bytes of the read that crosses the limit are not lost or exceeded).
    #[test]
    fn a_member_longer_than_declared_yields_exactly_the_declared_bytes() {
        let data: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("{{\"n\":{i}}}\n").into_bytes())
            .collect();
        let declared = 100_003u32;
        let mut zip = zip_of(&data, zip::CompressionMethod::Deflated);
        // Uncompressed size: local header offset 22, central directory entry offset 24.
        zip[22..26].copy_from_slice(&declared.to_le_bytes());
        let cd = zip.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
        zip[cd + 24..cd + 28].copy_from_slice(&declared.to_le_bytes());
        for step in [1000, 4096, 256 * 1024] {
            let (got, err, _) = read_steps(zip.clone(), step).unwrap();
            let err = err.map(|e| e.to_string());
            assert_eq!(got, &data[..declared as usize], "reads of {step}");
            assert_eq!(
                err.as_deref(),
                Some(
                    "z: the ZIP data is corrupt (the member holds more bytes than the 100003 it \
                     declares)"
                ),
                "reads of {step}"
            );
        }
    }
}
