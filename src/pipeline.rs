//! The streaming engine: read, split into rows, open rows in parallel, release them in order.
//!
//! One reader thread pulls NDJSON bytes out of the container into fixed-size buffers, cuts each on
//! its last line boundary, and tags it with the index of its first row (blank lines take no
//! index). Worker threads open the rows of whole buffers. The calling thread releases results
//! strictly in row order, so output, row indices and the first error reported are the same at every
//! thread count. Memory is bounded by the buffer pool: a handful of buffers of `CHUNK` bytes, or
//! of the longest line when one line is larger (issue 3).
//!
//! Buffers are kept full length and a fill index is tracked: re-zeroing a buffer on every read is a
//! measured pitfall (issue 3).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zeroize::Zeroize;

use crate::container::{self, Opened};
use crate::error::{display_input, Error, Result, RowError};
use crate::nonce::NonceTracker;
use crate::progress::Progress;
use crate::record::{RowOpener, NONCE_LEN};

/// Bytes per read buffer. 128 KiB rather than 256: the pool holds `2 * threads + 2` of them plus
/// their output buffers, and at 256 KiB that left too little room beside the 8 MiB nonce filter for
/// the 16 MiB budget (issue 3); per-chunk overhead is still negligible at ~200 rows a chunk.
const CHUNK: usize = 128 * 1024;
/// At most this many distinct key ids are listed in a summary.
const MAX_KEY_IDS: usize = 16;

/// How the rows of one input are processed.
#[derive(Debug, Clone)]
pub struct Options {
    /// Decryption worker threads (at least 1).
    pub threads: usize,
    /// Longest line accepted.
    pub max_line_bytes: u64,
    /// ZIP member to read, if chosen.
    pub member: Option<String>,
    /// Keep going past bad rows, reporting each (salvage).
    pub skip_bad_rows: bool,
    /// Track nonces exactly (verify) instead of with a fixed-size filter (decrypt).
    pub exact_nonce_check: bool,
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
    /// Rows skipped with `skip_bad_rows`, with the error of each.
    pub skipped: Vec<(u64, RowError)>,
    /// Nonce reuse found: (earlier row, later row) pairs, exact or suspected.
    pub nonce_reuse: Vec<(Option<u64>, u64)>,
    /// The container read.
    pub container: Option<&'static str>,
    /// The ZIP member read.
    pub member: Option<String>,
}

/// A slice of the input holding whole lines.
struct Chunk {
    seq: u64,
    first_row: u64,
    data: Vec<u8>,
    /// The buffer the worker writes the plaintext into (empty, from the pool).
    out: Vec<u8>,
    /// (start, end) of each non-blank line in `data`, without its `\n`.
    lines: Vec<(usize, usize)>,
}

enum Work {
    Chunk(Chunk),
    /// The reader is done: the row count, or why it stopped.
    End {
        seq: u64,
        result: Result<u64>,
    },
}

/// A worker's result for one chunk.
struct Done {
    seq: u64,
    out: Vec<u8>,
    /// The chunk's input buffer, returned to the pool only once `out` has been released, so the
    /// buffers in flight (queued, being opened, or waiting for their turn) never exceed the pool.
    data: Vec<u8>,
    released: u64,
    key_ids: Vec<Vec<u8>>,
    nonces: Vec<([u8; NONCE_LEN], u64)>,
    skipped: Vec<(u64, RowError)>,
    error: Option<(u64, RowError)>,
    end: Option<Result<u64>>,
}

/// Decrypt (`sink` is `Some`) or verify (`None`) one input, writing plaintext lines to `sink` in
/// row order. Rows before a failing row have been written when the error is returned.
pub fn run(
    input: &Path,
    opener: &RowOpener,
    opts: &Options,
    sink: Option<&mut dyn Write>,
    progress: &Progress,
) -> Result<Summary> {
    let source = Source::Path(input.to_path_buf());
    run_source(source, display_input(input), opener, opts, sink, progress)
}

/// [`run`] over a whole export held in memory (any container) instead of a named input: for fuzz
/// targets and tests. `name` names the input in errors.
pub fn run_bytes(
    data: Vec<u8>,
    name: &str,
    opener: &RowOpener,
    opts: &Options,
    sink: Option<&mut dyn Write>,
    progress: &Progress,
) -> Result<Summary> {
    run_source(
        Source::Bytes(data),
        name.to_owned(),
        opener,
        opts,
        sink,
        progress,
    )
}

/// Where the reader thread gets the input from.
enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// The body of [`run`] and [`run_bytes`].
fn run_source(
    source: Source,
    name: String,
    opener: &RowOpener,
    opts: &Options,
    mut sink: Option<&mut dyn Write>,
    progress: &Progress,
) -> Result<Summary> {
    let threads = opts.threads.max(1);
    let cancel = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let (work_tx, work_rx) = mpsc::channel::<Work>();
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let (pool_tx, pool_rx) = mpsc::channel::<Buffers>();
    let (opened_tx, opened_rx) = mpsc::channel::<Opened>();
    progress.set_count_source(Some(count.clone()));
    for _ in 0..threads * 2 + 2 {
        pool_tx.send(Buffers::new()).expect("receiver alive");
    }

    // The threads are detached, not scoped: when an early row fails, this thread must be able to
    // report it and exit without waiting for a reader blocked on a slow standard input.
    let reader = {
        let name = name.clone();
        let cancel = cancel.clone();
        let count = count.clone();
        let opts = opts.clone();
        std::thread::Builder::new()
            .name("reader".into())
            .spawn(move || {
                let mut seq = 0u64;
                let read = |r: &mut dyn Read, opened: &Opened| {
                    let _ = opened_tx.send(opened.clone());
                    split(
                        r, opened, &name, &opts, &pool_rx, &work_tx, &cancel, &mut seq,
                    )
                };
                let member = opts.member.as_deref();
                let result = match source {
                    Source::Path(input) => container::read_ndjson(&input, member, count, read),
                    Source::Bytes(data) => {
                        let size = data.len() as u64;
                        let cursor = io::Cursor::new(data);
                        container::read_ndjson_from(cursor, &name, size, member, count, read)
                    }
                };
                let _ = work_tx.send(Work::End { seq, result });
            })
            .map_err(|e| Error::io("starting the reader thread", e))?
    };
    for i in 0..threads {
        let work_rx = work_rx.clone();
        let done_tx = done_tx.clone();
        let mut opener = opener.clone();
        let decrypting = sink.is_some();
        let skip = opts.skip_bad_rows;
        std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || loop {
                let work = match work_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let done = match work {
                    Ok(Work::Chunk(chunk)) => open_chunk(&mut opener, chunk, decrypting, skip),
                    Ok(Work::End { seq, result }) => Done {
                        seq,
                        out: Vec::new(),
                        data: Vec::new(),
                        released: 0,
                        key_ids: Vec::new(),
                        nonces: Vec::new(),
                        skipped: Vec::new(),
                        error: None,
                        end: Some(result),
                    },
                    Err(_) => return,
                };
                if done_tx.send(done).is_err() {
                    return;
                }
            })
            .map_err(|e| Error::io("starting a worker thread", e))?;
    }
    drop(done_tx);

    let result = release_in_order(
        &name, &done_rx, &mut sink, progress, &opened_rx, opts, &pool_tx,
    );
    if result.is_err() {
        cancel.store(true, Ordering::Relaxed);
    } else {
        let _ = reader.join();
    }
    progress.set_count_source(None);
    result
}

/// One pool entry: an input buffer (kept full length, see the module comment) and an output
/// buffer (kept empty, with its capacity). Reusing both avoids an allocation, page faults and an
/// munmap per chunk (issue 3 benchmark).
struct Buffers {
    data: Vec<u8>,
    out: Vec<u8>,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            data: vec![0u8; CHUNK],
            out: Vec::new(),
        }
    }
}

/// Give buffers back to the pool, replacing any grown for a huge line by normal ones so the pool
/// does not keep memory it no longer needs. `out` MUST have been wiped.
fn recycle(pool: &Sender<Buffers>, mut data: Vec<u8>, mut out: Vec<u8>) {
    if data.len() > 4 * CHUNK {
        data = vec![0u8; CHUNK];
    }
    if out.capacity() > 4 * CHUNK {
        out = Vec::new();
    }
    out.clear();
    let _ = pool.send(Buffers { data, out });
}

/// The reader: fill buffers, cut them on line boundaries, number the rows, hand them out.
#[allow(clippy::too_many_arguments)]
fn split(
    r: &mut dyn Read,
    opened: &Opened,
    name: &str,
    opts: &Options,
    pool: &Receiver<Buffers>,
    work: &Sender<Work>,
    cancel: &AtomicBool,
    seq: &mut u64,
) -> Result<u64> {
    let max_line = opts.max_line_bytes;
    let streaming = opened.total.is_none();
    let mut row = 0u64;
    let mut carry: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        let Buffers { data: mut buf, out } = loop {
            if cancel.load(Ordering::Relaxed) {
                return Ok(row);
            }
            match pool.recv_timeout(Duration::from_millis(50)) {
                Ok(b) => break b,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(row),
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
            if eof || failed.is_some() || memchr::memrchr(b'\n', &buf[..filled]).is_some() {
                break;
            }
            // The whole buffer is one unfinished line. A line's length counts neither a leading
            // BOM nor its `\r\n` or `\n` ending, so it is too long only once it holds more than
            // the limit plus a possible `\r`.
            let bom = if first && buf[..filled].starts_with(b"\xEF\xBB\xBF") {
                3
            } else {
                0
            };
            if (filled - bom) as u64 > max_line.saturating_add(1) {
                return Err(Error::Row {
                    input: name.to_owned(),
                    row,
                    kind: RowError::TooLong { limit: max_line },
                });
            }
            let room = usize::try_from(max_line)
                .unwrap_or(usize::MAX)
                .saturating_add(6);
            let grown = (buf.len() * 2).min(room).max(buf.len() + 1);
            buf.resize(grown, 0);
        }
        let mut begin = 0;
        if first {
            first = false;
            if buf[..filled].starts_with(b"\xEF\xBB\xBF") {
                begin = 3;
            }
        }
        let cut = if eof {
            filled
        } else {
            begin + memchr::memrchr(b'\n', &buf[begin..filled]).map_or(0, |i| i + 1)
        };
        let first_row = row;
        let mut lines = Vec::with_capacity((cut - begin) / 256 + 1);
        let mut start = begin;
        let mut too_long = None;
        let mut push = |s: usize, e: usize, row: &mut u64| -> bool {
            let line = &buf[s..e];
            if line.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r')) {
                return true;
            }
            let len = line.len() - usize::from(line.last() == Some(&b'\r'));
            if len as u64 > max_line {
                too_long = Some(*row);
                return false;
            }
            lines.push((s, e));
            *row += 1;
            true
        };
        let mut stopped = false;
        for nl in memchr::memchr_iter(b'\n', &buf[begin..cut]) {
            let end = begin + nl;
            if !push(start, end, &mut row) {
                stopped = true;
                break;
            }
            start = end + 1;
        }
        if !stopped && eof && start < cut {
            // The last line, without a final newline; a too-long one is recorded by `push`.
            push(start, cut, &mut row);
        }
        carry.extend_from_slice(&buf[cut..filled]);
        let chunk = Chunk {
            seq: *seq,
            first_row,
            data: buf,
            out,
            lines,
        };
        *seq += 1;
        if work.send(Work::Chunk(chunk)).is_err() {
            return Ok(row);
        }
        if let Some(bad) = too_long {
            return Err(Error::Row {
                input: name.to_owned(),
                row: bad,
                kind: RowError::TooLong { limit: max_line },
            });
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if eof {
            return Ok(row);
        }
    }
}

/// Open every row of a chunk. Stops at the first bad row unless `skip` is set.
fn open_chunk(opener: &mut RowOpener, chunk: Chunk, decrypting: bool, skip: bool) -> Done {
    let mut out = chunk.out;
    // A plaintext is at most 3/4 of its line (base64), plus up to 3 bytes of decoding slack.
    let end = chunk.lines.last().map_or(0, |l| l.1);
    out.reserve(if decrypting {
        end / 4 * 3 + 4 * chunk.lines.len() + 16
    } else {
        4096
    });
    let mut key_ids: Vec<Vec<u8>> = Vec::new();
    let mut nonces = Vec::with_capacity(chunk.lines.len());
    let mut skipped = Vec::new();
    let mut error = None;
    let mut released = 0;
    for (i, &(s, e)) in chunk.lines.iter().enumerate() {
        let row = chunk.first_row + i as u64;
        match opener.open_into(row, &chunk.data[s..e], &mut out) {
            Ok(opened) => {
                released += 1;
                nonces.push((opened.nonce, row));
                if key_ids.last().is_none_or(|k| k.as_slice() != opened.key_id)
                    && !key_ids.iter().any(|k| k.as_slice() == opened.key_id)
                    && key_ids.len() <= MAX_KEY_IDS
                {
                    key_ids.push(opened.key_id.to_vec());
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
                if skip {
                    skipped.push((row, kind));
                } else {
                    error = Some((row, kind));
                    break;
                }
            }
        }
    }
    Done {
        seq: chunk.seq,
        out,
        data: chunk.data,
        released,
        key_ids,
        nonces,
        skipped,
        error,
        end: None,
    }
}

/// Release chunk results strictly in sequence order.
fn release_in_order(
    name: &str,
    done_rx: &Receiver<Done>,
    sink: &mut Option<&mut dyn Write>,
    progress: &Progress,
    opened_rx: &Receiver<Opened>,
    opts: &Options,
    pool: &Sender<Buffers>,
) -> Result<Summary> {
    let mut summary = Summary::default();
    let mut nonces = NonceTracker::new(opts.exact_nonce_check);
    let mut pending: BTreeMap<u64, Done> = BTreeMap::new();
    let mut next = 0u64;
    let mut opened_seen = false;
    for done in done_rx.iter() {
        if !opened_seen {
            if let Ok(opened) = opened_rx.try_recv() {
                opened_seen = true;
                summary.container = Some(opened.kind.name());
                summary.member = opened.member.clone();
                progress.set_total(opened.total);
            }
        }
        pending.insert(done.seq, done);
        while let Some(mut done) = pending.remove(&next) {
            next += 1;
            if let Some(end) = done.end.take() {
                let rows = end?;
                summary.rows = rows;
                summary.nonce_reuse = nonces.finish();
                return Ok(summary);
            }
            if let Some(sink) = sink.as_mut() {
                sink.write_all(&done.out)
                    .map_err(|e| Error::io("writing the output", e))?;
            }
            done.out.zeroize();
            recycle(
                pool,
                std::mem::take(&mut done.data),
                std::mem::take(&mut done.out),
            );
            summary.released += done.released;
            nonces.observe_all(&done.nonces);
            for k in done.key_ids {
                let k = String::from_utf8_lossy(&k).into_owned();
                if !summary.key_ids.contains(&k) {
                    if summary.key_ids.len() < MAX_KEY_IDS {
                        summary.key_ids.push(k);
                    } else {
                        summary.more_key_ids = true;
                    }
                }
            }
            for (row, kind) in done.skipped {
                let e = Error::Row {
                    input: name.to_owned(),
                    row,
                    kind: kind.clone(),
                };
                progress.suspend(|| eprintln!("skipped: {e}"));
                summary.skipped.push((row, kind));
            }
            progress.advance(summary.released);
            if let Some((row, kind)) = done.error {
                return Err(Error::Row {
                    input: name.to_owned(),
                    row,
                    kind,
                });
            }
        }
    }
    Err(Error::io(
        "processing",
        io::Error::other("a worker thread stopped unexpectedly"),
    ))
}
