//! A remote object read like a file: `Read + Seek` over ranged `GET`s, resuming after a failure
//! from the byte it stopped at. This is how `decrypt URL` and `verify URL` plug into
//! `crate::source` (issue 13): the container sees a seekable input, so a ZIP's directory is read
//! with ranged requests and its member streamed, with no spooling.
//!
//! Read-ahead: once the reader has read 256 KiB in order (the ZIP member, gzip,
//! plain NDJSON; not the ZIP directory's small reads), up to `connections` threads fetch the next
//! 1 MiB ranges ahead of it, each a conditional ranged `GET`, into a window of at most
//! 4 MiB, so a server that limits each connection's speed is not the bottleneck and
//! memory stays bounded. A `Seek` elsewhere drops the window (its threads stop); reading in order
//! from there starts a new one.
//!
//! The same checks as `net::download`: every request after the first carries `If-Match` with the
//! ETag seen first, every answer's `Content-Range` must start where the reader is and agree on
//! the total, resets, early ends, stalls, `408`, `429` and `5xx` are retried with backoff (bounded
//! by failures in a row without progress and by the URL's expiry), and a refusal or an expiry is
//! the typed error (exit 5). The object cannot change under a decrypt: a changed object is an
//! error, never a splice. Errors travel through `io::Error` (the `Read` trait) carrying the typed
//! [`Error`]; `container::read_error` takes it back out.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::net::client::{io_words, Client};
use crate::net::download::{refusal, strong, wait_to_retry};
use crate::net::url::DownloadUrl;
use crate::warning::{Warn, Warning};

/// Bytes fetched per read-ahead request.
const CHUNK: u64 = 1 << 20;
/// Most bytes fetched ahead of the reader (being fetched or waiting to be read).
const WINDOW: u64 = 4 << 20;
/// Bytes read in order (since the start or a seek) before the read-ahead starts.
const SEQUENTIAL: u64 = 256 << 10;
/// How often a reader waiting for the window looks at its stop flag.
const POLL: Duration = Duration::from_millis(20);

/// A remote object, read at a position.
pub struct RemoteReader {
    client: Client,
    url: DownloadUrl,
    etag: Option<String>,
    total: u64,
    pos: u64,
    body: Option<ureq::BodyReader<'static>>,
    retries: u32,
    /// Reconnections in a row that brought no byte.
    stalls: u32,
    warn: Arc<dyn Warn + Send>,
    /// Connections reading ahead at most (1: no read-ahead).
    connections: usize,
    /// Bytes read in order since the start or the last seek.
    in_order: u64,
    /// The server answered a range with `206` (not the whole object with `200`): reading ahead
    /// in ranges works.
    ranges_work: bool,
    /// The read-ahead window, when reading in order.
    ahead: Option<Arc<Ahead>>,
    /// Set when the work this reader feeds has stopped (the decrypt engine's cancel flag): a
    /// retry's wait ends, and the next read fails with [`Error::DownloadStopped`].
    stop: Arc<AtomicBool>,
}

impl RemoteReader {
    /// Open `url`: one request learns the object's size and ETag (and its first bytes are kept
    /// for the first read). Once `stop` is set, waits end and reads fail.
    pub fn open(
        client: Client,
        url: DownloadUrl,
        retries: u32,
        connections: usize,
        warn: Box<dyn Warn + Send>,
        stop: Arc<AtomicBool>,
    ) -> Result<RemoteReader> {
        let mut reader = RemoteReader {
            client,
            url,
            etag: None,
            total: 0,
            pos: 0,
            body: None,
            retries,
            stalls: 0,
            warn: Arc::from(warn),
            connections: connections.max(1),
            in_order: 0,
            ranges_work: false,
            ahead: None,
            stop,
        };
        reader.connect()?;
        Ok(reader)
    }

    /// The object's size in bytes.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Open a body at `self.pos`, retrying what a retry can fix.
    fn connect(&mut self) -> Result<()> {
        let mut failures = 0u32;
        loop {
            let why = match self.try_connect()? {
                None => return Ok(()),
                Some(why) => why,
            };
            failures += 1;
            wait_to_retry(
                &self.url,
                why,
                failures,
                self.retries,
                self.pos,
                &*self.warn,
                &|| self.stop.load(Ordering::SeqCst),
            )?;
        }
    }

    /// One request at `self.pos`: `Ok(None)` when a body is ready, `Ok(Some(why))` to retry.
    fn try_connect(&mut self) -> Result<Option<String>> {
        let first = self.etag.is_none() && self.total == 0 && self.pos == 0;
        let if_match = self.etag.as_deref().filter(|e| strong(e));
        // Every request after the first must be of the same object, and only a strong ETag
        // (`If-Match`, then compared) says so: without one, two versions of the same size could
        // be read as one, and rows of both authenticate. S3 always sends one.
        if !first && if_match.is_none() {
            return Err(Error::NoStrongEtag {
                url: self.url.shown().to_owned(),
            });
        }
        let answer = match self.client.get(&self.url, self.pos, None, if_match)? {
            Ok(answer) => answer,
            Err(why) => return Ok(Some(why)),
        };
        let changed = || Error::ObjectChanged {
            url: self.url.shown().to_owned(),
        };
        if matches!(answer.status, 200 | 206) {
            self.ranges_work = answer.status == 206;
        }
        match answer.status {
            200 if self.pos == 0 => {
                if !first && answer.content_length != Some(self.total) {
                    return Err(changed());
                }
                if first {
                    self.etag = answer.etag.clone();
                    // Random access needs the size; S3 always sends it.
                    self.total = answer.content_length.ok_or_else(|| Error::DownloadFailed {
                        url: self.url.shown().to_owned(),
                        why: "the server does not say the object's size".into(),
                        tries: 1,
                    })?;
                } else if answer.etag.is_some() && answer.etag != self.etag {
                    return Err(changed());
                }
                self.body = Some(answer.body);
                Ok(None)
            }
            206 => {
                let range = answer.content_range.ok_or_else(changed)?;
                if range.range.map(|(a, _)| a) != Some(self.pos)
                    || (!first && range.total != Some(self.total))
                    || (!first && answer.etag.is_some() && answer.etag != self.etag)
                {
                    return Err(changed());
                }
                if first {
                    self.etag = answer.etag.clone();
                    self.total = range.total.ok_or_else(|| Error::DownloadFailed {
                        url: self.url.shown().to_owned(),
                        why: "the server does not say the object's size".into(),
                        tries: 1,
                    })?;
                }
                self.body = Some(answer.body);
                Ok(None)
            }
            // A server that ignores Range: skip to the position, if it is still the same object.
            200 => {
                if answer.etag.is_some() && answer.etag != self.etag {
                    return Err(changed());
                }
                let mut body = answer.body;
                // A reset or a stall while skipping is retried like any other.
                let skipped = match io::copy(&mut body.by_ref().take(self.pos), &mut io::sink()) {
                    Ok(n) => n,
                    Err(e) => return Ok(Some(io_words(&e))),
                };
                if skipped != self.pos {
                    return Ok(Some("the body ended early".into()));
                }
                self.body = Some(body);
                Ok(None)
            }
            // An empty object.
            416 if first && answer.content_range.and_then(|r| r.total) == Some(0) => {
                self.body = None;
                Ok(None)
            }
            // Reading at or past the end: nothing more.
            416 if self.pos >= self.total && !first => {
                self.body = None;
                Ok(None)
            }
            412 | 416 => Err(changed()),
            401 | 403 | 404 | 410 => Err(refusal(&self.url, answer)),
            408 | 429 | 500..=599 => Ok(Some(format!("the server answered {}", answer.status))),
            status => Err(Error::UrlRefused {
                url: self.url.shown().to_owned(),
                status,
                code: None,
                message: None,
            }),
        }
    }
}

impl Read for RemoteReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.total {
            return Ok(0);
        }
        loop {
            if self.stop.load(Ordering::SeqCst) {
                self.body = None;
                return Err(io::Error::other(Error::DownloadStopped {
                    url: self.url.shown().to_owned(),
                }));
            }
            if let Some(ahead) = &self.ahead {
                let n = ahead.read(self.pos, buf, &self.stop).map_err(|e| {
                    self.drop_window();
                    io::Error::other(e)
                })?;
                self.pos += n as u64;
                return Ok(n);
            }
            if self.body.is_none() {
                if self.stalls > self.retries {
                    return Err(io::Error::other(Error::DownloadFailed {
                        url: self.url.shown().to_owned(),
                        why: "the server keeps ending the body early".into(),
                        tries: self.stalls,
                    }));
                }
                self.connect().map_err(io::Error::other)?;
                if self.body.is_none() {
                    return Ok(0);
                }
            }
            let want = buf
                .len()
                .min(usize::try_from(self.total - self.pos).unwrap_or(usize::MAX));
            let body = self.body.as_mut().expect("connected");
            match body.read(&mut buf[..want]) {
                Ok(0) => {
                    // Ended before the object did: go on from here.
                    self.body = None;
                    self.stalls += 1;
                    self.warn.warn(Warning::DownloadRetry {
                        url: self.url.shown().to_owned(),
                        why: "the body ended early".into(),
                        at_byte: self.pos,
                        wait: std::time::Duration::ZERO,
                        attempt: 1,
                        of: self.retries,
                    });
                }
                Ok(n) => {
                    self.pos += n as u64;
                    self.stalls = 0;
                    self.in_order += n as u64;
                    if self.in_order >= SEQUENTIAL
                        && self.connections > 1
                        && self.ranges_work
                        && self.etag.as_deref().is_some_and(strong)
                        && self.total - self.pos > CHUNK
                    {
                        // Reading in order: fetch ahead from here on several connections.
                        self.body = None;
                        self.ahead = Some(Ahead::start(self));
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.body = None;
                    self.stalls += 1;
                    self.warn.warn(Warning::DownloadRetry {
                        url: self.url.shown().to_owned(),
                        why: io_words(&e),
                        at_byte: self.pos,
                        wait: std::time::Duration::ZERO,
                        attempt: 1,
                        of: self.retries,
                    });
                }
            }
        }
    }
}

impl Seek for RemoteReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.total.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        if target != self.pos {
            // A new position needs a new request (the current body goes on from the old one),
            // and the window ahead of the old one is of no use.
            self.body = None;
            self.drop_window();
            self.in_order = 0;
            self.pos = target;
        }
        Ok(self.pos)
    }
}

impl RemoteReader {
    /// Stop the read-ahead threads and free their window.
    fn drop_window(&mut self) {
        if let Some(ahead) = self.ahead.take() {
            ahead.halt();
        }
    }
}

impl Drop for RemoteReader {
    fn drop(&mut self) {
        self.drop_window();
    }
}

/// A read-ahead window: the chunks from `start` on, fetched by a few threads.
struct Ahead {
    client: Client,
    url: DownloadUrl,
    etag: Option<String>,
    total: u64,
    retries: u32,
    warn: Arc<dyn Warn + Send>,
    /// The reader's stop flag (the work stopped).
    stop: Arc<AtomicBool>,
    /// Set when the reader moved elsewhere or was dropped.
    halted: AtomicBool,
    window: Mutex<Window>,
    /// Signalled when a chunk arrives or leaves, or the window halts.
    changed: Condvar,
}

/// What the window holds.
struct Window {
    /// The next chunk to hand out to a thread.
    next: u64,
    /// The chunks being fetched or waiting to be read, by offset.
    chunks: BTreeMap<u64, Slot>,
    /// The first chunk's offset: chunks lie at `start + k * CHUNK`.
    start: u64,
    /// Failures in a row with no new byte on any of its connections.
    failures: u32,
    /// Buffers of chunks already read, for the next chunks: the window's memory is allocated
    /// once, not once per chunk (freed by another thread than the one that allocated it, those
    /// left the allocator's per-thread arenas fragmented: 34 MB peak instead of about 25).
    free: Vec<Vec<u8>>,
}

enum Slot {
    Pending,
    Ready(Vec<u8>),
    Failed(Error),
}

impl Ahead {
    /// A window from the reader's position, and its threads.
    fn start(reader: &RemoteReader) -> Arc<Ahead> {
        let ahead = Arc::new(Ahead {
            client: reader.client.clone(),
            url: reader.url.clone(),
            etag: reader.etag.clone(),
            total: reader.total,
            retries: reader.retries,
            warn: reader.warn.clone(),
            stop: reader.stop.clone(),
            halted: AtomicBool::new(false),
            window: Mutex::new(Window {
                next: reader.pos,
                chunks: BTreeMap::new(),
                start: reader.pos,
                failures: 0,
                free: Vec::new(),
            }),
            changed: Condvar::new(),
        });
        for i in 0..reader.connections {
            let worker = ahead.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("read-ahead-{i}"))
                .spawn(move || worker.fetch_chunks());
            if spawned.is_err() && i == 0 {
                // Not even one thread: the chunk the reader waits for would never come.
                ahead.window.lock().expect("not poisoned").chunks.insert(
                    reader.pos,
                    Slot::Failed(Error::DownloadFailed {
                        url: reader.url.shown().to_owned(),
                        why: "no thread could be started to read".into(),
                        tries: 1,
                    }),
                );
            }
        }
        ahead
    }

    fn stopped(&self) -> bool {
        self.halted.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst)
    }

    fn halt(&self) {
        self.halted.store(true, Ordering::SeqCst);
        let mut window = self.window.lock().expect("not poisoned");
        window.chunks.clear();
        self.changed.notify_all();
    }

    /// Copy bytes at `pos` into `buf`, waiting for their chunk.
    fn read(&self, pos: u64, buf: &mut [u8], stop: &AtomicBool) -> Result<usize> {
        let mut window = self.window.lock().expect("not poisoned");
        let at = window.start + (pos - window.start) / CHUNK * CHUNK;
        loop {
            if stop.load(Ordering::SeqCst) {
                return Err(Error::DownloadStopped {
                    url: self.url.shown().to_owned(),
                });
            }
            match window.chunks.get(&at) {
                Some(Slot::Ready(data)) => {
                    let from = (pos - at) as usize;
                    let n = buf.len().min(data.len() - from);
                    buf[..n].copy_from_slice(&data[from..from + n]);
                    if from + n == data.len() {
                        if let Some(Slot::Ready(buf)) = window.chunks.remove(&at) {
                            window.free.push(buf);
                        }
                        self.changed.notify_all();
                    }
                    return Ok(n);
                }
                Some(Slot::Failed(_)) => {
                    let Some(Slot::Failed(e)) = window.chunks.remove(&at) else {
                        unreachable!("just seen");
                    };
                    return Err(e);
                }
                Some(Slot::Pending) | None => {
                    window = self
                        .changed
                        .wait_timeout(window, POLL)
                        .expect("not poisoned")
                        .0;
                }
            }
        }
    }

    /// A read-ahead thread: take the next chunk while the window has room, fetch it, again.
    fn fetch_chunks(&self) {
        loop {
            let (at, buf) = {
                let mut window = self.window.lock().expect("not poisoned");
                loop {
                    if self.stopped() {
                        return;
                    }
                    let room = (window.chunks.len() as u64) < WINDOW / CHUNK;
                    if window.next < self.total && room {
                        let at = window.next;
                        window.next = (at + CHUNK).min(self.total);
                        window.chunks.insert(at, Slot::Pending);
                        break (at, window.free.pop().unwrap_or_default());
                    }
                    if window.next >= self.total {
                        return;
                    }
                    window = self
                        .changed
                        .wait_timeout(window, POLL)
                        .expect("not poisoned")
                        .0;
                }
            };
            let result = self.fetch(at, (at + CHUNK).min(self.total), buf);
            let failed = result.is_err();
            let mut window = self.window.lock().expect("not poisoned");
            if self.halted.load(Ordering::SeqCst) {
                return;
            }
            let slot = match result {
                Ok(data) => {
                    window.failures = 0;
                    Slot::Ready(data)
                }
                Err(e) => Slot::Failed(e),
            };
            window.chunks.insert(at, slot);
            self.changed.notify_all();
            if failed {
                return;
            }
        }
    }

    /// The bytes `[from, to)` in `data` (a buffer to reuse), by conditional ranged requests,
    /// resuming within the range after a failure. A changed object is [`Error::ObjectChanged`],
    /// never a splice.
    fn fetch(&self, from: u64, to: u64, mut data: Vec<u8>) -> Result<Vec<u8>> {
        let len = (to - from) as usize;
        data.clear();
        data.reserve_exact(len);
        let changed = || Error::ObjectChanged {
            url: self.url.shown().to_owned(),
        };
        loop {
            if self.stopped() {
                return Err(Error::DownloadStopped {
                    url: self.url.shown().to_owned(),
                });
            }
            let at = from + data.len() as u64;
            let before = data.len();
            let if_match = self.etag.as_deref().filter(|e| strong(e));
            let why = match self.client.get(&self.url, at, Some(to - 1), if_match)? {
                Err(why) => why,
                Ok(answer) => match answer.status {
                    206 => {
                        let range = answer.content_range.ok_or_else(changed)?;
                        if range.range != Some((at, to - 1))
                            || range.total != Some(self.total)
                            || (answer.etag.is_some() && answer.etag != self.etag)
                        {
                            return Err(changed());
                        }
                        let mut body = answer.body.take(to - at);
                        let mut buf = [0u8; 64 * 1024];
                        loop {
                            match body.read(&mut buf) {
                                Ok(0) => break "the body ended early".to_owned(),
                                Ok(n) => {
                                    data.extend_from_slice(&buf[..n]);
                                    if data.len() == len {
                                        return Ok(data);
                                    }
                                    if self.stopped() {
                                        break String::new();
                                    }
                                }
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                                Err(e) => break io_words(&e),
                            }
                        }
                    }
                    200 => {
                        // A server that ignores Range: reading ahead would fetch the whole
                        // object for every chunk.
                        return Err(Error::DownloadFailed {
                            url: self.url.shown().to_owned(),
                            why: "the server ignored the range asked for".into(),
                            tries: 1,
                        });
                    }
                    412 | 416 => return Err(changed()),
                    401 | 403 | 404 | 410 => return Err(refusal(&self.url, answer)),
                    408 | 429 | 500..=599 => format!("the server answered {}", answer.status),
                    status => {
                        return Err(Error::UrlRefused {
                            url: self.url.shown().to_owned(),
                            status,
                            code: None,
                            message: None,
                        })
                    }
                },
            };
            let failures = {
                let mut window = self.window.lock().expect("not poisoned");
                if data.len() > before {
                    window.failures = 0;
                } else {
                    window.failures += 1;
                }
                window.failures
            };
            wait_to_retry(
                &self.url,
                why,
                failures,
                self.retries,
                from + data.len() as u64,
                &*self.warn,
                &|| self.stopped(),
            )?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::client::ClientOptions;
    use std::io::Write as _;
    use std::net::TcpListener;

    /// A server on a loopback port that answers every request `503` and counts them.
    fn refusing_server() -> (String, Arc<std::sync::atomic::AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/export.zip", listener.local_addr().unwrap());
        let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                seen.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        (url, count)
    }

    #[test]
    fn a_retry_wait_ends_when_the_work_stops() {
        let (url, requests) = refusing_server();
        let client = Client::new(&ClientOptions {
            ca_file: None,
            idle_timeout: Duration::from_secs(5),
            https_only: false,
        })
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        // The engine stops (another row failed) once the server has refused once: the reader is
        // then waiting to retry, for up to 30 s a try with 20 retries.
        let stopper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while requests.load(Ordering::SeqCst) == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                stop.store(true, Ordering::SeqCst);
            })
        };
        let opened = RemoteReader::open(
            client,
            DownloadUrl::parse(&url).unwrap(),
            20,
            4,
            Box::new(crate::warning::Ignore),
            stop,
        );
        stopper.join().unwrap();
        assert!(
            matches!(opened, Err(Error::DownloadStopped { .. })),
            "{:?}",
            opened.err()
        );
    }
}
