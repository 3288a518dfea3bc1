//! Making a vendor-format export from plain NDJSON: the inverse of [`crate::engine::decrypt`].
//!
//! Every non-blank input line MUST be one UTF-8 JSON document. Its bytes, exactly as written
//! (without the line ending), are sealed with AES-256-GCM under a fresh nonce and the AAD
//! `stream:{customer_id}:{row}` (SPEC section 1), and written as
//! `{"encrypted_data":"<key_id>:<iv_b64>:<blob_b64>"}\n` with standard padded base64. Rows are
//! numbered the way `decrypt` numbers them (SPEC section 3): a UTF-8 BOM at the start is ignored,
//! `\r\n` ends a line like `\n`, and blank lines are skipped without taking an index. So what
//! `encrypt` writes, `decrypt` and the vendor's own sample code read back row for row.
//!
//! Rows are sealed by [`crate::format::seal::Sealer`], each under a fresh nonce.
//!
//! Memory is bounded whatever the input's size: lines are read into one reusable buffer of at most
//! [`MAX_LINE_BYTES`] plus a line ending, and sealed lines leave in batches of [`BATCH_BYTES`].
//! Buffers that held plaintext are wiped when done.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use flate2::write::GzEncoder;
use zeroize::Zeroizing;
use zip::write::{SimpleFileOptions, StreamWriter};
use zip::ZipWriter;

use crate::engine::progress::Progress;
use crate::error::{Error, PlainLineProblem, Result};
use crate::format::container::{Counting, Kind};
use crate::format::key::Key;
use crate::format::record::UTF8_BOM;
use crate::format::seal::{Sealer, MAX_ROWS};

/// Longest input line accepted, in bytes (without its line ending).
pub const MAX_LINE_BYTES: usize = 256 * 1024 * 1024;
/// Sealed output is handed to the container in batches of about this many bytes.
pub const BATCH_BYTES: usize = 256 * 1024;
/// Bytes read from the input per `read` call (the line buffer grows only for longer lines).
const READ_BUFFER: usize = 256 * 1024;
/// Deflate level for ZIP and gzip. The payload is base64 of ciphertext: LZ77 finds almost nothing
/// in it and Huffman coding (6 bits per base64 character) does the work. Measured on 100k rows:
/// level 2, the fastest level with dynamic Huffman trees, writes 70.2% of the NDJSON size, within
/// 0.05% of level 6, in about 80% of its time; level 1 (zlib-rs uses fixed trees there) is twice
/// as fast but writes 93%.
const DEFLATE_LEVEL: u32 = 2;

/// What `encrypt` needs besides the key and the input.
#[derive(Debug, Clone)]
pub struct Options {
    /// Customer id bound into every row's AAD.
    pub customer_id: String,
    /// `key_id` written into every row. MUST NOT need JSON escaping (see [`crate::format::seal::check_key_id`]).
    pub key_id: String,
    /// Container to write.
    pub format: Kind,
    /// The ZIP member is `<job_id>.ndjson` (see [`check_job_id`]).
    pub job_id: String,
    /// Longest input line accepted, in bytes.
    pub max_line_bytes: usize,
    /// The input's size in bytes when known (a regular file); `None` means it may be any size.
    pub input_len: Option<u64>,
    /// How the output is named in messages.
    pub output_name: String,
}

/// What one run of `encrypt` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Rows sealed.
    pub rows: u64,
    /// Blank input lines skipped.
    pub blank_lines: u64,
}

/// Check a job id: it names the ZIP member `<job_id>.ndjson`, so it MUST be a non-empty plain file
/// name (no `/`, `\` or control characters).
pub fn check_job_id(job_id: &str) -> Result<()> {
    if job_id.is_empty() {
        return Err(Error::Usage("the job id is empty: give --job-id ID".into()));
    }
    if job_id
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(Error::Usage(format!(
            "the job id {job_id:?} names the ZIP member <job_id>.ndjson, so it must not contain \
             '/', '\\' or control characters; give another with --job-id ID"
        )));
    }
    Ok(())
}

/// The default job id for an output file name: the name with its `.zip`, `.gz`, `.gzip`,
/// `.ndjson` and `.jsonl` extensions removed (`appointments_17.ndjson.zip` gives
/// `appointments_17`). A name that is only an extension is kept whole.
pub fn default_job_id(file_name: &str) -> String {
    crate::format::container::export_stem(file_name).to_owned()
}

/// Whether a ZIP member needs ZIP64 fields: when the input's size is unknown, or when the member
/// could reach 4 GiB. A row of L >= 1 plaintext bytes (at least L input bytes) becomes
/// `40 + key_id + 4 * ceil((L + 16) / 3)` bytes, at most `(64 + key_id) * L`; the threshold keeps
/// a margin below 4 GiB for the compressed size, which may exceed the uncompressed one by a little.
pub fn needs_zip64(input_len: Option<u64>, key_id_len: usize) -> bool {
    match input_len {
        None => true,
        Some(n) => n.saturating_mul(64 + key_id_len as u64) >= 0xF000_0000,
    }
}

/// One step of [`LineReader`].
#[derive(Debug, PartialEq, Eq)]
enum Next<'a> {
    /// A line without its `\n` or `\r\n`.
    Line(&'a [u8]),
    /// The next line is longer than the limit.
    TooLong,
    /// End of input.
    End,
}

/// A buffered line reader with a length limit that hands out lines without copying them. Its
/// buffer holds plaintext and is wiped when dropped (and when it grows).
struct LineReader<R> {
    inner: R,
    buf: Zeroizing<Vec<u8>>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Bytes after `start` already searched for `\n`.
    scanned: usize,
    eof: bool,
    max: usize,
}

impl<R: Read> LineReader<R> {
    fn new(inner: R, max: usize) -> LineReader<R> {
        // Kept full length, with a fill index: no re-zeroing on every read (issue 3).
        let size = READ_BUFFER.min(max.saturating_add(2)).max(2);
        LineReader {
            inner,
            buf: Zeroizing::new(vec![0u8; size]),
            start: 0,
            end: 0,
            scanned: 0,
            eof: false,
            max,
        }
    }

    fn next_line(&mut self) -> io::Result<Next<'_>> {
        loop {
            let from = self.start + self.scanned;
            if let Some(i) = memchr::memchr(b'\n', &self.buf[from..self.end]) {
                let (s, e) = (self.start, from + i);
                self.start = e + 1;
                self.scanned = 0;
                return Ok(self.finish_line(s, e));
            }
            self.scanned = self.end - self.start;
            if self.eof {
                if self.start == self.end {
                    return Ok(Next::End);
                }
                let (s, e) = (self.start, self.end);
                self.start = e;
                self.scanned = 0;
                return Ok(self.finish_line(s, e));
            }
            // A partial line longer than the limit plus a `\r` can only get longer.
            if self.scanned > self.max.saturating_add(1) {
                return Ok(Next::TooLong);
            }
            self.make_room();
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn finish_line(&self, s: usize, e: usize) -> Next<'_> {
        let line = &self.buf[s..e];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.max {
            Next::TooLong
        } else {
            Next::Line(line)
        }
    }

    /// Make space after `end`: move the partial line to the front, or grow (up to the limit).
    fn make_room(&mut self) {
        if self.end < self.buf.len() {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return;
        }
        let len = self.buf.len();
        let grown = len
            .saturating_mul(2)
            .min(self.max.saturating_add(2))
            .max(len + 1);
        // A fresh buffer instead of `Vec::resize`, whose reallocation would free the old plaintext
        // without wiping it; the old one is wiped when replaced.
        let mut bigger = Zeroizing::new(vec![0u8; grown]);
        bigger[..self.end].copy_from_slice(&self.buf[..self.end]);
        self.buf = bigger;
    }
}

/// Lets a ZIP be abandoned: `ZipWriter` finishes the archive when dropped, so on an error its
/// final writes are swallowed instead (the caller throws the whole file away).
struct Abandonable<W> {
    inner: W,
    abandoned: Arc<AtomicBool>,
}

impl<W: Write> Write for Abandonable<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.abandoned.load(Ordering::Relaxed) {
            return Ok(buf.len());
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.abandoned.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.inner.flush()
    }
}

/// The container being written.
enum Container<W: Write> {
    Plain(W),
    Gzip(Box<GzEncoder<W>>),
    // The ZIP is written as a stream, with sizes and CRC in a data descriptor after the data (as
    // Java's ZipOutputStream writes them), so it can go straight into `AtomicFile`, which is not
    // seekable and so keeps its cleanup promises. Checked with Info-ZIP `unzip -t`, Python's
    // zipfile and the zip crate, with and without ZIP64 fields.
    Zip(
        Box<ZipWriter<StreamWriter<Abandonable<W>>>>,
        Arc<AtomicBool>,
    ),
}

impl<W: Write> Container<W> {
    fn new(format: Kind, out: W, job_id: &str, zip64: bool) -> io::Result<Container<W>> {
        let level = flate2::Compression::new(DEFLATE_LEVEL);
        Ok(match format {
            Kind::Plain => Container::Plain(out),
            Kind::Gzip => Container::Gzip(Box::new(GzEncoder::new(out, level))),
            Kind::Zip => {
                let abandoned = Arc::new(AtomicBool::new(false));
                let sink = Abandonable {
                    inner: out,
                    abandoned: abandoned.clone(),
                };
                let mut zip = Box::new(ZipWriter::new_stream(sink));
                let options = SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated)
                    .compression_level(Some(i64::from(DEFLATE_LEVEL)))
                    .large_file(zip64)
                    .last_modified_time(zip_time_now())
                    // Whoever unzips it gets a file only they can read: it is health data.
                    .unix_permissions(0o600);
                zip.start_file(format!("{job_id}.ndjson"), options)
                    .map_err(io::Error::from)?;
                Container::Zip(zip, abandoned)
            }
        })
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Container::Plain(w) => w.write_all(buf),
            Container::Gzip(w) => w.write_all(buf),
            Container::Zip(w, _) => w.write_all(buf),
        }
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Container::Plain(w) => Ok(w),
            Container::Gzip(w) => w.finish(),
            Container::Zip(w, _) => Ok(w.finish().map_err(io::Error::from)?.into_inner().inner),
        }
    }

    fn abandon(self) {
        if let Container::Zip(_, abandoned) = &self {
            abandoned.store(true, Ordering::Relaxed);
        }
    }
}

/// The current time as a ZIP time stamp in UTC. Without one the zip crate writes 1980-01-01 unless
/// built with a date-time feature; its `jiff-02` feature would build jiff 0.2 beside the jiff 1
/// used here, so the few lines of conversion are ours.
fn zip_time_now() -> zip::DateTime {
    let now = jiff::Timestamp::try_from(std::time::SystemTime::now())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    zip_time(now)
}

/// `at` as a ZIP time stamp in UTC; one outside what ZIP can hold (1980 to 2107) is the
/// format's 1980-01-01.
fn zip_time(at: jiff::Timestamp) -> zip::DateTime {
    let t = jiff::tz::Offset::UTC.to_datetime(at);
    let field = |n: i8| u8::try_from(n).unwrap_or(u8::MAX);
    u16::try_from(t.year())
        .ok()
        .and_then(|year| {
            zip::DateTime::from_date_and_time(
                year,
                field(t.month()),
                field(t.day()),
                field(t.hour()),
                field(t.minute()),
                field(t.second()),
            )
            .ok()
        })
        .unwrap_or_default()
}

/// Check that a line is one UTF-8 JSON document, as `decrypt` will require of its plaintext.
/// The message never quotes the line (it is health data).
fn check_json(line: &[u8]) -> std::result::Result<(), String> {
    crate::format::json::validate(line).map_err(|e| e.to_string())
}

/// Encrypt the plain NDJSON read from `input` (named `name` in messages) into `out` as `opts`
/// say. Returns `out` after the container is finished (the caller commits it) and a summary.
/// On an error the container is abandoned part-written: the caller MUST throw `out` away.
pub fn encrypt<R: Read, W: Write>(
    input: R,
    name: &str,
    key: &Key,
    opts: &Options,
    out: W,
    progress: &Progress,
) -> Result<(W, Summary)> {
    let mut sealer = Sealer::new(key, &opts.customer_id, &opts.key_id)?;
    if opts.format == Kind::Zip {
        check_job_id(&opts.job_id)?;
    }
    let count = Arc::new(AtomicU64::new(0));
    progress.set_count_source(Some(count.clone()));
    progress.set_total(opts.input_len);
    let mut lines = LineReader::new(
        Counting {
            inner: input,
            count,
        },
        opts.max_line_bytes,
    );
    let zip64 = needs_zip64(opts.input_len, opts.key_id.len());
    let mut container = Container::new(opts.format, out, &opts.job_id, zip64)
        .map_err(|e| Error::io(format!("writing {}", opts.output_name), e))?;
    let result = seal_all(
        &mut lines,
        name,
        &mut sealer,
        opts,
        &mut container,
        progress,
    );
    progress.set_count_source(None);
    match result {
        Ok(summary) => {
            let out = container
                .finish()
                .map_err(|e| Error::io(format!("writing {}", opts.output_name), e))?;
            Ok((out, summary))
        }
        Err(e) => {
            container.abandon();
            Err(e)
        }
    }
}

fn seal_all<R: Read, W: Write>(
    lines: &mut LineReader<R>,
    name: &str,
    sealer: &mut Sealer,
    opts: &Options,
    container: &mut Container<W>,
    progress: &Progress,
) -> Result<Summary> {
    let mut summary = Summary {
        rows: 0,
        blank_lines: 0,
    };
    let mut batch = Vec::with_capacity(BATCH_BYTES + BATCH_BYTES / 2);
    let mut first = true;
    loop {
        let row = summary.rows;
        let line = match lines.next_line() {
            Ok(Next::Line(line)) => line,
            Ok(Next::End) => break,
            Ok(Next::TooLong) => {
                return Err(Error::PlainLine {
                    input: name.to_owned(),
                    row,
                    problem: PlainLineProblem::TooLong {
                        limit: opts.max_line_bytes,
                    },
                })
            }
            Err(e) => return Err(Error::io(format!("reading {name}"), e)),
        };
        let line = if std::mem::take(&mut first) {
            line.strip_prefix(UTF8_BOM).unwrap_or(line)
        } else {
            line
        };
        if line.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r')) {
            summary.blank_lines += 1;
            continue;
        }
        if let Err(detail) = check_json(line) {
            return Err(not_json(name, row, line, &detail));
        }
        if row >= MAX_ROWS {
            return Err(Error::TooManyRows {
                input: name.to_owned(),
                limit: MAX_ROWS,
            });
        }
        sealer.seal_line(row, line, &mut batch)?;
        summary.rows += 1;
        if batch.len() >= BATCH_BYTES {
            container
                .write_all(&batch)
                .map_err(|e| Error::io(format!("writing {}", opts.output_name), e))?;
            batch.clear();
            progress.advance(summary.rows);
        }
    }
    container
        .write_all(&batch)
        .map_err(|e| Error::io(format!("writing {}", opts.output_name), e))?;
    Ok(summary)
}

/// The error for a line that is not a JSON document; its hint tells a compressed file apart.
fn not_json(name: &str, row: u64, line: &[u8], detail: &str) -> Error {
    Error::PlainLine {
        input: name.to_owned(),
        row,
        problem: PlainLineProblem::NotJson {
            detail: detail.to_owned(),
            compressed: row == 0
                && (line.starts_with(b"PK\x03\x04") || line.starts_with(&[0x1f, 0x8b])),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;

    use crate::testing::Trickle;

    fn all_lines(data: &[u8], step: usize, max: usize) -> Vec<std::result::Result<Vec<u8>, ()>> {
        let mut r = LineReader::new(Trickle { data, step }, max);
        let mut v = Vec::new();
        loop {
            match r.next_line().unwrap() {
                Next::Line(l) => v.push(Ok(l.to_vec())),
                Next::TooLong => {
                    v.push(Err(()));
                    return v;
                }
                Next::End => return v,
            }
        }
    }

    #[test]
    fn line_reader_splits_on_lf_and_crlf_at_any_read_size() {
        let data = b"{\"a\":1}\r\n\n  \r\n{\"b\":\"x\\r\"}\n{\"c\":3}";
        let want: Vec<std::result::Result<Vec<u8>, ()>> = vec![
            Ok(b"{\"a\":1}".to_vec()),
            Ok(b"".to_vec()),
            Ok(b"  ".to_vec()),
            Ok(b"{\"b\":\"x\\r\"}".to_vec()),
            Ok(b"{\"c\":3}".to_vec()),
        ];
        for step in [1, 2, 3, 7, 1000] {
            assert_eq!(all_lines(data, step, 64), want, "step {step}");
        }
    }

    #[test]
    fn line_reader_grows_to_the_limit_and_no_further() {
        let long = [b'x'; 100];
        let mut data = long.to_vec();
        data.extend_from_slice(b"\r\nok\n");
        // Exactly at the limit, with a CRLF: accepted.
        assert_eq!(
            all_lines(&data, 5, 100),
            vec![Ok(long.to_vec()), Ok(b"ok".to_vec())]
        );
        // One byte over: refused, even though the whole line never has to fit.
        assert_eq!(all_lines(&data, 5, 99), vec![Err(())]);
        let endless = vec![b'y'; 10_000];
        assert_eq!(all_lines(&endless, 64, 99), vec![Err(())]);
        // The last line without a newline is held to the same limit.
        assert_eq!(all_lines(&long, 7, 99), vec![Err(())]);
    }

    /// A writer whose bytes stay readable after it is consumed.
    #[derive(Clone, Debug, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn options(format: Kind) -> Options {
        Options {
            customer_id: "c".into(),
            key_id: "k".into(),
            format,
            job_id: "job".into(),
            max_line_bytes: 1000,
            input_len: None,
            output_name: "out".into(),
        }
    }

    #[test]
    fn a_failed_zip_is_abandoned_without_its_central_directory() {
        let key = Key::from_bytes([5; 32]);
        let progress = Progress::hidden();
        let input = &b"{}\n{}\nnot json\n"[..];
        let sink = Shared::default();
        let opts = options(Kind::Zip);
        let err = encrypt(input, "in", &key, &opts, sink.clone(), &progress).unwrap_err();
        assert_eq!(
            err.to_string(),
            "in: row 2: not a JSON document: invalid literal at byte 1"
        );
        let written = sink.0.lock().unwrap().clone();
        assert!(written.starts_with(b"PK\x03\x04"));
        assert!(
            !written.windows(4).any(|w| w == b"PK\x05\x06"),
            "central directory written"
        );

        let ok = encrypt(&b"{}\n"[..], "in", &key, &opts, sink.clone(), &progress);
        assert_eq!(
            ok.unwrap().1,
            Summary {
                rows: 1,
                blank_lines: 0
            }
        );
    }

    #[test]
    fn too_long_lines_name_their_row() {
        let key = Key::from_bytes([5; 32]);
        let mut input = b"{}\n\n".to_vec();
        input.extend(std::iter::repeat_n(b' ', 2000));
        let opts = options(Kind::Plain);
        let err = encrypt(
            &input[..],
            "in",
            &key,
            &opts,
            Vec::new(),
            &Progress::hidden(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "in: row 1: line is longer than the limit of 1000 bytes"
        );
        assert_eq!(err.exit(), Exit::Failure);
    }

    #[test]
    fn job_ids_come_from_the_output_name() {
        assert_eq!(
            default_job_id("appointments_17.ndjson.zip"),
            "appointments_17"
        );
        assert_eq!(default_job_id("x.NDJSON.GZ"), "x");
        assert_eq!(default_job_id("x.tar"), "x.tar");
        assert_eq!(default_job_id(".zip"), ".zip");
        assert!(check_job_id("job_1").is_ok());
        assert!(check_job_id("").is_err());
        assert!(check_job_id("a/b").is_err());
        assert!(check_job_id("a\\b").is_err());
    }

    #[test]
    fn zip64_when_the_size_is_unknown_or_could_reach_4_gib() {
        assert!(needs_zip64(None, 16));
        assert!(!needs_zip64(Some(0), 16));
        assert!(!needs_zip64(Some(40 * 1024 * 1024), 16));
        assert!(needs_zip64(Some(60 * 1024 * 1024), 16));
        assert!(needs_zip64(Some(u64::MAX), 16));
        // The bound holds for the worst case, one-byte rows.
        let k = 16u64;
        for l in 1..100u64 {
            let row = 40 + k + 4 * (l + 16).div_ceil(3);
            assert!(row <= (64 + k) * l, "L = {l}");
        }
    }

    #[test]
    fn zip_times_are_utc_and_default_outside_the_formats_range() {
        let zip = |unix: i64| {
            let t = zip_time(jiff::Timestamp::from_second(unix).unwrap());
            (
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
            )
        };
        // `date -u -d @1727344935` is 2024-09-26T10:02:15Z; ZIP keeps even seconds.
        assert_eq!(zip(1_727_344_935), (2024, 9, 26, 10, 2, 14));
        assert_eq!(zip(951_782_399), (2000, 2, 28, 23, 59, 58));
        assert_eq!(zip(315_532_800), (1980, 1, 1, 0, 0, 0));
        assert_eq!(zip(0), (1980, 1, 1, 0, 0, 0));
        assert_eq!(zip(-1), (1980, 1, 1, 0, 0, 0));
    }

    #[test]
    fn json_check_matches_what_decrypt_accepts() {
        assert!(check_json(br#"{"a":[1,2,{"b":null}]}"#).is_ok());
        assert!(check_json(b"\"just a string\"").is_ok());
        assert!(check_json(br#"{"a":1} {"b":2}"#).is_err());
        assert_eq!(
            check_json(b"{\"a\":\"\xff\"}"),
            Err("invalid UTF-8 at byte 6".to_owned())
        );
        assert_eq!(
            check_json(b"{\"a\":"),
            Err("unexpected end of input at byte 5".to_owned())
        );
    }
}
