//! The streaming engine: read, split into rows, open rows in parallel, release them in order.
//!
//! One reader thread pulls NDJSON bytes out of the container into fixed-size buffers and cuts each
//! on its last line boundary; nothing else, since every row waits for it (it also inflates). A
//! worker thread takes a whole buffer, finds its lines, takes the buffer's first row index from
//! `RowNumbers` in buffer order (blank lines take no index), and opens the rows; when the
//! container's CRC-32 is left to the caller (`Meta::crc32`), it also hashes the buffer. The
//! calling thread releases results strictly in row order, combining those hashes, so output, row
//! indices and the first error reported are the same at every thread count. Memory is bounded by
//! the buffer pool: `threads + 3` buffers of `CHUNK` bytes, or of the longest line when one line
//! is larger (issue 3).
//!
//! Buffers are kept full length and a fill index is tracked: re-zeroing a buffer on every read is a
//! measured pitfall (issue 3).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zeroize::Zeroize;

use crate::engine::progress::Progress;
use crate::error::{Diagnosis, Error, Result, RowError};
use crate::format::container::{self, Kind, Meta, Ndjson};
use crate::format::keyset::KeyIndex;
use crate::format::nonce::NonceTracker;
use crate::format::record::{parse_line, RowOpener, NONCE_LEN, UTF8_BOM};
use crate::warning::{Warn, Warning};

/// Bytes per read buffer. Every chunk costs a few cross-thread wake-ups, which on a virtual machine
/// cost real CPU: 256 KiB buffers and a pool of `threads + 3` (one each for the reader, every
/// worker and the writer, and one spare) used ~6% less CPU than 128 KiB buffers and a pool of
/// `2 * threads + 2`, at about the same memory (issue 3 benchmark: 14.8 against 14.4 MiB peak RSS).
const CHUNK: usize = 256 * 1024;
/// A buffer holding one unfinished line grows by at most this many bytes at a time (see `grow`).
const GROW_WINDOW: usize = 4 * CHUNK;
/// Buffers in the pool beyond one per worker thread.
const SPARE_BUFFERS: usize = 3;
/// At most this many distinct key ids are listed in a summary.
const MAX_KEY_IDS: usize = 16;

/// How the rows of one input are processed.
#[derive(Debug, Clone)]
pub struct Options {
    /// Decryption worker threads (at least 1).
    pub threads: usize,
    /// Longest line accepted.
    pub max_line_bytes: u64,
    /// Keep going past bad rows, reporting each (salvage).
    pub skip_bad_rows: bool,
    /// Track nonces exactly (verify) instead of with a fixed-size filter (decrypt).
    pub exact_nonce_check: bool,
    /// The output's reader is another process on the same cores (a pipe) and `threads` was not
    /// chosen by the user: leave it a core where that costs nothing (see [`worker_threads`]).
    pub spare_core: bool,
}

/// The worker threads for an input of this kind. With [`Options::spare_core`], a compressed
/// input gets one worker fewer (at least one): its reader thread, which inflates, bounds the run
/// (a ZIP's workers need 0.4x the reader's CPU time, issue 3's per-thread profile), so a worker
/// less loses nothing, and on 2 cores `--threads 1` into a pipe beat the default (issue 16,
/// item 2). Plain NDJSON keeps them all: there the workers are the bound (2 x 38% of the CPU),
/// and the issue measured it through a 1 MiB pipe at 1.21-1.25x its time into `/dev/null` with
/// every core; one worker fewer would make the worker alone the bound.
pub fn worker_threads(opts: &Options, kind: Kind) -> usize {
    match opts.spare_core && kind != Kind::Plain {
        true => opts.threads.saturating_sub(1).max(1),
        false => opts.threads.max(1),
    }
}

/// What processing one input found.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Rows in the export (released plus skipped).
    pub rows: u64,
    /// Rows released (written, or verified).
    pub released: u64,
    /// Distinct key ids seen, in order of first appearance (at most 16).
    pub key_ids: Vec<String>,
    /// More distinct key ids were seen than listed.
    pub more_key_ids: bool,
    /// Which key opened the rows of each key id: (key id, where the key came from), in order of
    /// first appearance (at most 16 pairs; a key id appears once per key that opened its rows).
    pub keys_used: Vec<(String, String)>,
    /// Rows skipped with `skip_bad_rows`, with the error of each.
    pub skipped: Vec<(u64, RowError)>,
    /// Nonce reuse found: (earlier row, later row) pairs, exact or suspected.
    pub nonce_reuse: Vec<(Option<u64>, u64)>,
    /// The container read.
    pub container: Option<&'static str>,
    /// The ZIP member read.
    pub member: Option<String>,
}

/// A slice of the input holding whole lines: `data[begin..end]`.
struct Chunk {
    seq: u64,
    data: Vec<u8>,
    begin: usize,
    end: usize,
    /// The buffer the worker writes the plaintext into (empty, from the pool).
    out: Vec<u8>,
    /// Scratch for the worker's line index (empty, from the pool).
    lines: Vec<(usize, usize)>,
    /// Hash `data[..end]` for the container's CRC-32 check (see `Meta::crc32`). Those ranges
    /// of consecutive chunks are the input's bytes in order, each once: a chunk's bytes after
    /// `end` start the next chunk.
    crc: bool,
    /// This chunk is the input's unterminated last line: release it only if the CRC-32 matches.
    crc_gate: bool,
}

enum Work {
    Chunk(Chunk),
    /// The reader is done: how the input ended, or why it stopped.
    End {
        seq: u64,
        result: Result<ReadEnd>,
    },
}

/// A worker's result for one chunk.
struct Done {
    seq: u64,
    out: Vec<u8>,
    /// The chunk's input buffer, returned to the pool only once `out` has been released, so the
    /// buffers in flight (queued, being opened, or waiting for their turn) never exceed the pool.
    data: Vec<u8>,
    lines: Vec<(usize, usize)>,
    /// Rows (non-blank lines) the chunk holds, up to a line that is too long.
    rows: u64,
    /// The CRC-32 of the chunk's bytes, when asked for.
    crc: Option<crc32fast::Hasher>,
    /// See `Chunk::crc_gate`.
    crc_gate: bool,
    released: u64,
    /// The distinct (key id, key) pairs of the rows opened, in order.
    key_ids: Vec<(Vec<u8>, KeyIndex)>,
    nonces: Vec<([u8; NONCE_LEN], u64)>,
    skipped: Vec<(u64, RowError)>,
    /// The row that stopped the chunk, why, and (when no key opened it) its key id.
    error: Option<(u64, RowError, Option<Vec<u8>>)>,
    end: Option<Result<ReadEnd>>,
}

/// How long a failed run waits for the reader thread to notice and stop. A reader blocked in a read
/// of a stream with nothing to read (a stalled pipe) cannot be interrupted: after this it is left
/// to end at its next read, holding only ciphertext buffers (the plaintext ones are wiped when
/// dropped). A file, a spooled ZIP or an in-memory input always ends well within it.
const READER_GRACE: Duration = Duration::from_millis(250);

/// Where decrypted rows go, and how it is named in messages (`standard output`, a path).
pub struct Destination<'a> {
    /// The writer.
    pub writer: &'a mut dyn Write,
    /// Its name in messages.
    pub name: &'a str,
    /// Advanced by the rows written to `writer`, once they are written (for a caller that must
    /// say how far the output got if it is stopped).
    pub written: Option<&'a AtomicU64>,
}

/// Decrypt (`sink` is `Some`) or verify (`None`) one input, writing plaintext lines to `sink` in
/// row order. Rows before a failing row have been written when the error is returned. Warnings
/// (a row skipped with `skip_bad_rows`) go to `warn` as they happen. Every thread started is
/// joined before this returns (but a reader blocked on a stalled stream gets only a grace
/// period, `READER_GRACE`).
pub fn run(
    input: Ndjson,
    opener: &RowOpener,
    opts: &Options,
    sink: Option<Destination<'_>>,
    progress: &Progress,
    warn: &dyn Warn,
) -> Result<Summary> {
    let cancel = Arc::new(AtomicBool::new(false));
    run_cancellable(input, opener, opts, sink, progress, warn, cancel)
}

/// [`run`], with the cancel flag the run sets when it fails given by the caller: the input's
/// reader may watch it too (a download's retry waits end as soon as the run stops, well within
/// `READER_GRACE`).
pub fn run_cancellable(
    input: Ndjson,
    opener: &RowOpener,
    opts: &Options,
    mut sink: Option<Destination<'_>>,
    progress: &Progress,
    warn: &dyn Warn,
    cancel: Arc<AtomicBool>,
) -> Result<Summary> {
    let Ndjson {
        name,
        meta,
        reader: mut input,
        consumed,
    } = input;
    let threads = worker_threads(opts, meta.kind);
    let draining = Arc::new(AtomicBool::new(false));
    let (work_tx, work_rx) = mpsc::channel::<Work>();
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let (pool_tx, pool_rx) = mpsc::channel::<Buffers>();
    let rows = Arc::new(RowNumbers::default());
    progress.set_count_source(Some(consumed));
    for _ in 0..threads + SPARE_BUFFERS {
        pool_tx.send(Buffers::new()).expect("receiver alive");
    }

    let reader = {
        let name = name.clone();
        let cancel = cancel.clone();
        let meta = meta.clone();
        let max_line = opts.max_line_bytes;
        std::thread::Builder::new()
            .name("reader".into())
            .spawn(move || {
                let mut seq = 0u64;
                let result = split(
                    &mut *input,
                    &meta,
                    &name,
                    max_line,
                    &pool_rx,
                    &work_tx,
                    &cancel,
                    &mut seq,
                );
                let _ = work_tx.send(Work::End { seq, result });
            })
            .map_err(|e| Error::io("starting the reader thread", e))?
    };
    let mut workers = Vec::with_capacity(threads);
    for i in 0..threads {
        let work_rx = work_rx.clone();
        let worker_done = done_tx.clone();
        let worker_cancel = cancel.clone();
        let worker_draining = draining.clone();
        let mut opener = opener.clone();
        let decrypting = sink.is_some();
        let skip = opts.skip_bad_rows;
        let max_line = opts.max_line_bytes;
        let rows = rows.clone();
        let worker = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || loop {
                // A timeout, so that a failed run's workers stop without waiting for the reader.
                let work = match work_rx.lock() {
                    Ok(rx) => rx.recv_timeout(Duration::from_millis(50)),
                    Err(_) => return,
                };
                let done = match work {
                    Ok(Work::Chunk(chunk)) if worker_draining.load(Ordering::Relaxed) => {
                        hash_only(chunk, &rows)
                    }
                    Ok(Work::Chunk(chunk)) => {
                        open_chunk(&mut opener, chunk, &rows, max_line, decrypting, skip)
                    }
                    Ok(Work::End { seq, result }) => Done {
                        seq,
                        out: Vec::new(),
                        data: Vec::new(),
                        lines: Vec::new(),
                        rows: 0,
                        crc: None,
                        crc_gate: false,
                        released: 0,
                        key_ids: Vec::new(),
                        nonces: Vec::new(),
                        skipped: Vec::new(),
                        error: None,
                        end: Some(result),
                    },
                    Err(RecvTimeoutError::Timeout) if !worker_cancel.load(Ordering::Relaxed) => {
                        continue
                    }
                    Err(_) => return,
                };
                if worker_done.send(done).is_err() {
                    return;
                }
            });
        match worker {
            Ok(worker) => workers.push(worker),
            Err(e) => {
                cancel.store(true, Ordering::Relaxed);
                drop(done_tx);
                join(reader, workers);
                return Err(Error::io("starting a worker thread", e));
            }
        }
    }
    drop(done_tx);
    drop(work_rx);

    let result = release_in_order(
        &name, &meta, &done_rx, &mut sink, progress, opts, &pool_tx, warn, &draining, opener,
    );
    if result.is_err() {
        cancel.store(true, Ordering::Relaxed);
    }
    drop(done_rx);
    join(reader, workers);
    progress.set_count_source(None);
    result
}

/// Join the workers, then the reader (within [`READER_GRACE`] of their end). The caller has
/// dropped its end of every channel they use, or set the cancel flag they watch.
fn join(reader: JoinHandle<()>, workers: Vec<JoinHandle<()>>) {
    for worker in workers {
        let _ = worker.join();
    }
    let deadline = Instant::now() + READER_GRACE;
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    if reader.is_finished() {
        let _ = reader.join();
    }
}

/// One pool entry: an input buffer (kept full length, see the module comment) and an output
/// buffer (kept empty, with its capacity). Reusing both avoids an allocation, page faults and an
/// munmap per chunk (issue 3 benchmark).
struct Buffers {
    data: Vec<u8>,
    out: Vec<u8>,
    lines: Vec<(usize, usize)>,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            data: vec![0u8; CHUNK],
            out: Vec::new(),
            lines: Vec::new(),
        }
    }
}

/// Give buffers back to the pool, replacing any grown for a huge line by normal ones so the pool
/// does not keep memory it no longer needs. `out` MUST have been wiped.
fn recycle(
    pool: &Sender<Buffers>,
    mut data: Vec<u8>,
    mut out: Vec<u8>,
    mut lines: Vec<(usize, usize)>,
) {
    if data.len() > 4 * CHUNK {
        data = vec![0u8; CHUNK];
    }
    if out.capacity() > 4 * CHUNK {
        out = Vec::new();
    }
    if lines.capacity() > CHUNK / 8 {
        lines = Vec::new();
    }
    out.clear();
    lines.clear();
    let _ = pool.send(Buffers { data, out, lines });
}

/// How the reader's input ended.
enum ReadEnd {
    /// At the end of the input.
    Complete,
    /// At a line longer than the limit that did not fit in a buffer: it is the row after every row
    /// sent, so its index is known only where the rows are counted (`release_in_order`).
    LineTooLong,
}

/// Make room in a full buffer for more of one unfinished line, at most `room` bytes in all.
///
/// The allocation doubles, but its length (the bytes zeroed, so touched, and offered to `read`)
/// grows by at most `GROW_WINDOW` at a time: memory is committed as the line arrives, never far
/// beyond it. Before, the whole doubled room was zeroed for a pipe, and for a file std's
/// `read_to_end` zeroed as much as it offered a reader (ours have no `read_buf`): past the end of a
/// 53 MiB row the plain NDJSON export touched 16 MiB it never filled (issue 3 benchmark: 125 MiB
/// peak RSS against 107 for the same export zipped). Zeroed bytes are never zeroed again: short
/// reads fill the rest of the window.
fn grow(buf: &mut Vec<u8>, room: usize) {
    let len = buf.len();
    let next = len.saturating_add(GROW_WINDOW).min(room).max(len + 1);
    if buf.capacity() < next {
        let doubled = len.saturating_mul(2).min(room).max(next);
        buf.reserve_exact(doubled - len);
    }
    buf.resize(next, 0);
}

/// The reader: fill buffers and cut them on their last line boundary. It does nothing per line:
/// this thread inflates, every row waits for it, and the cost of finding and numbering lines
/// belongs on the workers (issue 3).
#[allow(clippy::too_many_arguments)]
fn split(
    r: &mut dyn Read,
    opened: &Meta,
    name: &str,
    max_line: u64,
    pool: &Receiver<Buffers>,
    work: &Sender<Work>,
    cancel: &AtomicBool,
    seq: &mut u64,
) -> Result<ReadEnd> {
    let streaming = opened.total.is_none();
    let mut carry: Vec<u8> = Vec::new();
    let mut first = true;
    // Bytes of a UTF-8 BOM that the input's first buffer starts with: they are no line's bytes.
    let bom_len = |first: bool, filled: &[u8]| match first && filled.starts_with(UTF8_BOM) {
        true => UTF8_BOM.len(),
        false => 0,
    };
    loop {
        let Buffers {
            data: mut buf,
            out,
            lines,
        } = loop {
            if cancel.load(Ordering::Relaxed) {
                return Ok(ReadEnd::Complete);
            }
            match pool.recv_timeout(Duration::from_millis(50)) {
                Ok(b) => break b,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(ReadEnd::Complete),
            }
        };
        if buf.len() < carry.len() * 2 {
            buf.resize(carry.len() * 2, 0);
        }
        buf[..carry.len()].copy_from_slice(&carry);
        let mut filled = carry.len();
        carry.clear();
        let mut eof = false;
        // A read error (corrupt or truncated compressed data) is reported after the complete
        // lines before it, exactly as if the input ended there without a final newline.
        let mut failed = None;
        // Fill until full (or end of input); grow only while the buffer holds no line end.
        // `buf[..scanned]` is known to hold none.
        let mut scanned = 0;
        loop {
            while filled < buf.len() {
                match r.read(&mut buf[filled..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        let asked = buf.len() - filled;
                        filled += n;
                        // A stream of unknown size (a pipe, a download) that has nothing more
                        // ready: hand on the complete lines now rather than wait to fill up.
                        if streaming
                            && n < asked
                            && memchr::memchr(b'\n', &buf[filled - n..filled]).is_some()
                        {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        failed = Some(container::read_error(name, opened, e));
                        break;
                    }
                }
            }
            if eof || failed.is_some() || memchr::memchr(b'\n', &buf[scanned..filled]).is_some() {
                break;
            }
            scanned = filled;
            // The whole buffer is one unfinished line. A line's length counts neither a leading
            // BOM nor its `\r\n` or `\n` ending, so it is too long only once it holds more than
            // the limit plus a possible `\r`.
            let bom = bom_len(first, &buf[..filled]);
            if (filled - bom) as u64 > max_line.saturating_add(1) {
                return Ok(ReadEnd::LineTooLong);
            }
            let room = usize::try_from(max_line)
                .unwrap_or(usize::MAX)
                .saturating_add(6);
            grow(&mut buf, room);
        }
        let begin = bom_len(first, &buf[..filled]);
        first = false;
        let last_newline = |buf: &[u8]| memchr::memrchr(b'\n', &buf[begin..filled]);
        let mut crc_gate = false;
        let end = if eof {
            match last_newline(&buf) {
                // When the reader does not check the CRC-32 itself (see `Meta::crc32`), an
                // unterminated last line goes alone in a chunk of its own, released only once the
                // CRC has been checked: as a failed checksum always held it back before (the
                // `zip` crate's reader fails the read that ends the member), and as gzip and a
                // stored ZIP member still do. Its complete lines go now.
                Some(i) if opened.crc32.is_some() && begin + i + 1 < filled => {
                    eof = false;
                    begin + i + 1
                }
                last => {
                    crc_gate = opened.crc32.is_some() && last.is_none() && filled > begin;
                    filled
                }
            }
        } else {
            begin + last_newline(&buf).map_or(0, |i| i + 1)
        };
        carry.extend_from_slice(&buf[end..filled]);
        let chunk = Chunk {
            seq: *seq,
            data: buf,
            begin,
            end,
            out,
            lines,
            crc: opened.crc32.is_some(),
            crc_gate,
        };
        *seq += 1;
        if work.send(Work::Chunk(chunk)).is_err() {
            return Ok(ReadEnd::Complete);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if eof {
            return Ok(ReadEnd::Complete);
        }
    }
}

/// Hands out row indices to chunks in sequence order. A worker indexes its chunk's lines, then
/// claims as many row indices as it found, after the chunk before it has claimed its own. Every
/// claimed chunk claims without waiting for anything but its predecessor, so the wait always ends.
#[derive(Default)]
struct RowNumbers {
    /// (sequence number of the next chunk to claim, its first row index)
    next: Mutex<(u64, u64)>,
    turn: Condvar,
}

impl RowNumbers {
    /// The first row index of chunk `seq`, which holds `rows` rows.
    fn claim(&self, seq: u64, rows: u64) -> u64 {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        while next.0 != seq {
            next = self.turn.wait(next).unwrap_or_else(PoisonError::into_inner);
        }
        let first = next.1;
        *next = (seq + 1, first + rows);
        drop(next);
        self.turn.notify_all();
        first
    }
}

/// Index the non-blank lines of `data[begin..end]` into `lines` as (start, end) without the `\n`,
/// stopping at a line longer than `max_line` (whose position in `lines` is returned).
fn index_lines(
    data: &[u8],
    begin: usize,
    end: usize,
    max_line: u64,
    lines: &mut Vec<(usize, usize)>,
) -> Option<usize> {
    let mut push = |s: usize, e: usize| -> bool {
        let line = &data[s..e];
        // A line's length counts neither its `\r\n` nor its `\n`. Any line longer than the
        // limit is refused, blank or not, as the reader refuses a buffer that holds no line end:
        // which of the two sees a long line depends on buffer sizes, so their rules must agree.
        let len = line.len() - usize::from(line.last() == Some(&b'\r'));
        if len as u64 > max_line {
            return false;
        }
        if line.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r')) {
            return true;
        }
        lines.push((s, e));
        true
    };
    let mut start = begin;
    for nl in memchr::memchr_iter(b'\n', &data[begin..end]) {
        let stop = begin + nl;
        if !push(start, stop) {
            return Some(lines.len());
        }
        start = stop + 1;
    }
    // The last line of the input, without a final newline.
    if start < end && !push(start, end) {
        return Some(lines.len());
    }
    None
}

/// A line that authenticates as a later row `actual` is either a sign of missing rows or half of
/// a swap. When the line at `actual`'s place is in this chunk and authenticates as `row`, the two
/// are swapped (issue 12, item 9: two swapped rows were called "1 row(s) missing"). `lines[0]` is
/// the failing line.
fn swapped(
    opener: &mut RowOpener,
    kind: RowError,
    row: u64,
    lines: &[(usize, usize)],
    data: &[u8],
) -> RowError {
    let RowError::Auth(Diagnosis::Displaced { actual }) = kind else {
        return kind;
    };
    let partner = actual
        .checked_sub(row)
        .and_then(|offset| usize::try_from(offset).ok())
        .and_then(|offset| lines.get(offset));
    match partner {
        Some(&(s, e)) if opener.authenticates_as(row, &data[s..e]) => {
            RowError::Auth(Diagnosis::Swapped { with: actual })
        }
        _ => kind,
    }
}

/// A chunk read only to check the container after a row failed: its bytes are hashed when the
/// CRC-32 is the caller's to check, and no row is opened.
fn hash_only(chunk: Chunk, numbers: &RowNumbers) -> Done {
    let crc = chunk.crc.then(|| {
        let mut h = crc32fast::Hasher::new();
        h.update(&chunk.data[..chunk.end]);
        h
    });
    // Chunks claim their row numbers in sequence; this one holds none that matter any more.
    numbers.claim(chunk.seq, 0);
    Done {
        seq: chunk.seq,
        out: chunk.out,
        data: chunk.data,
        lines: chunk.lines,
        rows: 0,
        crc,
        crc_gate: false,
        released: 0,
        key_ids: Vec::new(),
        nonces: Vec::new(),
        skipped: Vec::new(),
        error: None,
        end: None,
    }
}

/// Number and open every row of a chunk. Stops at the first bad row unless `skip` is set; a line
/// that is too long always stops.
fn open_chunk(
    opener: &mut RowOpener,
    chunk: Chunk,
    numbers: &RowNumbers,
    max_line: u64,
    decrypting: bool,
    skip: bool,
) -> Done {
    let Chunk {
        seq,
        data,
        begin,
        end,
        mut out,
        mut lines,
        crc,
        crc_gate,
    } = chunk;
    let crc = crc.then(|| {
        let mut h = crc32fast::Hasher::new();
        h.update(&data[..end]);
        h
    });
    lines.clear();
    let too_long = index_lines(&data, begin, end, max_line, &mut lines);
    let rows = lines.len() as u64 + u64::from(too_long.is_some());
    let first_row = numbers.claim(seq, rows);
    // A plaintext is at most 3/4 of its line (base64), plus up to 3 bytes of decoding slack.
    out.reserve(if decrypting {
        end / 4 * 3 + 4 * lines.len() + 16
    } else {
        4096
    });
    let mut key_ids: Vec<(Vec<u8>, KeyIndex)> = Vec::new();
    let mut nonces = Vec::with_capacity(lines.len());
    let mut skipped = Vec::new();
    let mut error = None;
    let mut released = 0;
    for (i, &(s, e)) in lines.iter().enumerate() {
        let row = first_row + i as u64;
        match opener.open_into(row, &data[s..e], &mut out) {
            Ok(opened) => {
                released += 1;
                nonces.push((opened.nonce, row));
                let (key_id, key) = (&*opened.key_id, opened.key);
                let seen = |k: &(Vec<u8>, KeyIndex)| k.1 == key && k.0.as_slice() == key_id;
                if key_ids.last().is_none_or(|k| !seen(k))
                    && !key_ids.iter().any(seen)
                    && key_ids.len() <= MAX_KEY_IDS
                {
                    key_ids.push((key_id.to_vec(), key));
                }
                if decrypting {
                    out.push(b'\n');
                } else {
                    // Only the bytes written can hold plaintext (a failed or compacted row wipes
                    // its own tail): wiping the whole capacity here, once per row, cost a full
                    // memset of the largest row's size for every later row of the chunk.
                    out.as_mut_slice().zeroize();
                    out.clear();
                }
            }
            Err(kind) => {
                let kind = swapped(opener, kind, row, &lines[i..], &data);
                if skip && !kind.stops_salvage() {
                    skipped.push((row, kind));
                } else {
                    // Whether its key id is new is for `release_in_order` to tell, which knows
                    // the key ids of every row before it.
                    let key_id = matches!(kind, RowError::Auth(Diagnosis::Unknown))
                        .then(|| row_key_id(&data[s..e]))
                        .flatten();
                    error = Some((row, kind, key_id));
                    break;
                }
            }
        }
    }
    if error.is_none() {
        if let Some(i) = too_long {
            error = Some((
                first_row + i as u64,
                RowError::TooLong { limit: max_line },
                None,
            ));
        }
    }
    Done {
        seq,
        out,
        data,
        lines,
        rows,
        crc,
        crc_gate,
        released,
        key_ids,
        nonces,
        skipped,
        error,
        end: None,
    }
}

/// The key id of a line, when it has one.
fn row_key_id(line: &[u8]) -> Option<Vec<u8>> {
    let fields = parse_line(line).ok()?;
    let (key_id, _, _) = fields.split().ok()?;
    Some(key_id.to_vec())
}

impl Drop for Done {
    /// Results dropped unreleased (after an earlier row failed) take no plaintext to the heap's free
    /// lists. Only `out[..len]` can hold plaintext: rows are decrypted within it and a row that
    /// fails or shrinks wipes its own tail, and `out` never reallocates while it holds plaintext
    /// (`open_chunk` reserves enough before the first row).
    fn drop(&mut self) {
        self.out.as_mut_slice().zeroize();
    }
}

/// Fail when the container's CRC-32 is known and the bytes read so far (`crc`) do not match it.
fn check_crc(name: &str, expected: Option<u32>, crc: &crc32fast::Hasher) -> Result<()> {
    if expected.is_some_and(|want| want != crc.clone().finalize()) {
        return Err(Error::container(
            name,
            "the ZIP data is corrupt (its CRC-32 does not match the one the archive records)",
        ));
    }
    Ok(())
}

/// Release chunk results strictly in sequence order.
#[allow(clippy::too_many_arguments)]
fn release_in_order(
    name: &str,
    meta: &Meta,
    done_rx: &Receiver<Done>,
    sink: &mut Option<Destination<'_>>,
    progress: &Progress,
    opts: &Options,
    pool: &Sender<Buffers>,
    warn: &dyn Warn,
    draining: &AtomicBool,
    opener: &RowOpener,
) -> Result<Summary> {
    let mut summary = Summary::default();
    let mut nonces = NonceTracker::new(opts.exact_nonce_check);
    let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
    let mut next = 0u64;
    let expected_crc = meta.crc32;
    let mut crc = crc32fast::Hasher::new();
    // The first row that failed, held while the rest of a compressed container is checked.
    let mut failed_row: Option<Error> = None;
    summary.container = Some(meta.kind.name());
    summary.member = meta.member.clone();
    progress.set_total(meta.total);
    nonces.expect_input(meta.total);
    for done in done_rx.iter() {
        pending.insert(done.seq, done);
        while let Some(mut done) = pending.remove(&next) {
            next += 1;
            if let Some(end) = done.end.take() {
                let ended = match end {
                    Ok(ReadEnd::Complete) => check_crc(name, expected_crc, &crc),
                    Ok(ReadEnd::LineTooLong) => Err(Error::Row {
                        input: name.to_owned(),
                        row: summary.rows,
                        kind: RowError::TooLong {
                            limit: opts.max_line_bytes,
                        },
                    }),
                    Err(e) => Err(e),
                };
                if let Some(failed_row) = failed_row {
                    // The container was read to its end after a row failed: only an intact one
                    // makes the row's failure the verdict. Any other end (damage, a read or a
                    // download that failed) is reported as it is: the container was never
                    // checked, so the row's failure proves nothing.
                    return Err(match ended {
                        Ok(()) => failed_row,
                        Err(Error::Row {
                            kind: RowError::TooLong { .. },
                            ..
                        }) => failed_row,
                        Err(e) => e,
                    });
                }
                ended?;
                summary.nonce_reuse = nonces.finish();
                return Ok(summary);
            }
            if let Some(h) = done.crc.take() {
                crc.combine(&h);
            }
            if failed_row.is_some() {
                // Draining after a failed row: nothing more is released. A chunk opened before
                // the workers saw the flag holds plaintext: wipe it before its buffer is reused.
                done.out.as_mut_slice().zeroize();
                recycle(
                    pool,
                    std::mem::take(&mut done.data),
                    std::mem::take(&mut done.out),
                    std::mem::take(&mut done.lines),
                );
                continue;
            }
            if done.crc_gate {
                check_crc(name, expected_crc, &crc)?;
            }
            if let Some(sink) = sink.as_mut() {
                sink.writer
                    .write_all(&done.out)
                    .map_err(|source| Error::Write {
                        input: name.to_owned(),
                        output: sink.name.to_owned(),
                        source,
                    })?;
                if let Some(written) = sink.written {
                    written.fetch_add(done.released, Ordering::Relaxed);
                }
            }
            // Only `out[..len]` can hold plaintext (see `Done`): wiping the spare capacity too,
            // as `Vec::zeroize` does, byte by byte, cost ~5% of a decrypt's CPU (issue 3).
            done.out.as_mut_slice().zeroize();
            recycle(
                pool,
                std::mem::take(&mut done.data),
                std::mem::take(&mut done.out),
                std::mem::take(&mut done.lines),
            );
            summary.rows += done.rows;
            summary.released += done.released;
            nonces.observe_all(&done.nonces);
            for (k, key) in std::mem::take(&mut done.key_ids) {
                let k = String::from_utf8_lossy(&k).into_owned();
                if !summary.key_ids.contains(&k) {
                    if summary.key_ids.len() < MAX_KEY_IDS {
                        summary.key_ids.push(k.clone());
                    } else {
                        summary.more_key_ids = true;
                    }
                }
                let source = opener.keys().get(key).source().to_owned();
                if !summary
                    .keys_used
                    .iter()
                    .any(|(i, s)| *i == k && *s == source)
                    && summary.keys_used.len() < MAX_KEY_IDS
                {
                    summary.keys_used.push((k, source));
                }
            }
            for (row, kind) in std::mem::take(&mut done.skipped) {
                let e = Error::Row {
                    input: name.to_owned(),
                    row,
                    kind: kind.clone(),
                };
                summary.skipped.push((row, kind));
                warn.warn(Warning::RowSkipped(e));
            }
            progress.advance(summary.released);
            if let Some((row, kind, key_id)) = done.error.take() {
                let kind = match (kind, key_id) {
                    // No key opens it and no row before it has its key id (a list that is
                    // complete): the export switched to a key that was not given, or the line
                    // was altered.
                    (RowError::Auth(Diagnosis::Unknown), Some(key_id)) if !summary.more_key_ids => {
                        let key_id = String::from_utf8_lossy(&key_id).into_owned();
                        if summary.key_ids.contains(&key_id) {
                            RowError::Auth(Diagnosis::Unknown)
                        } else {
                            RowError::Auth(Diagnosis::NewKeyId { key_id })
                        }
                    }
                    (kind, _) => kind,
                };
                let e = Error::Row {
                    input: name.to_owned(),
                    row,
                    kind,
                };
                if meta.kind == Kind::Plain {
                    return Err(e);
                }
                // A flipped bit in compressed data changes the bytes after it, and the row it
                // lands in then fails to authenticate: tampering, as far as that row can tell.
                // Only the container's own check (CRC-32, sizes, the deflate stream) tells a
                // damaged download from a tampered export, so read it to its end first, opening
                // no more rows (issue 12, item 5).
                draining.store(true, Ordering::Relaxed);
                failed_row = Some(e);
            }
        }
    }
    Err(Error::io(
        "processing",
        io::Error::other("a worker thread stopped unexpectedly"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_s_reader_gets_a_core_from_compressed_inputs_only() {
        let opts = |threads, spare_core| Options {
            threads,
            max_line_bytes: 1024,
            skip_bad_rows: false,
            exact_nonce_check: false,
            spare_core,
        };
        for kind in [Kind::Zip, Kind::Gzip, Kind::Plain] {
            assert_eq!(worker_threads(&opts(2, false), kind), 2);
            assert_eq!(worker_threads(&opts(1, true), kind), 1);
            assert_eq!(worker_threads(&opts(0, false), kind), 1);
        }
        assert_eq!(worker_threads(&opts(2, true), Kind::Zip), 1);
        assert_eq!(worker_threads(&opts(16, true), Kind::Gzip), 15);
        assert_eq!(worker_threads(&opts(2, true), Kind::Plain), 2);
    }

    #[test]
    fn grow_touches_one_window_at_a_time_and_never_passes_the_room() {
        let room = 10 * GROW_WINDOW + 123;
        let mut buf = vec![7u8; CHUNK];
        let mut lens = vec![buf.len()];
        let mut reallocations = 0;
        while buf.len() < room {
            let before = (buf.as_ptr(), buf.capacity());
            grow(&mut buf, room);
            if (buf.as_ptr(), buf.capacity()) != before {
                reallocations += 1;
            }
            lens.push(buf.len());
        }
        // The length (the bytes zeroed) grows a window at a time, up to exactly the room.
        for w in lens.windows(2) {
            assert_eq!(w[1] - w[0], GROW_WINDOW.min(room - w[0]));
        }
        assert_eq!(*lens.last().unwrap(), room);
        // The allocation doubles, so growing to 40x a chunk reallocates a handful of times, not
        // once per window.
        assert!(reallocations <= 6, "{reallocations} reallocations");
        assert!(buf.capacity() <= room);
        // What was there is kept; the new room is zeroed.
        assert!(buf[..CHUNK].iter().all(|&b| b == 7));
        assert!(buf[CHUNK..].iter().all(|&b| b == 0));
        // One byte under the room, it grows by that byte.
        let mut buf = vec![0u8; 100];
        grow(&mut buf, 101);
        assert_eq!(buf.len(), 101);
    }
}
