//! A remote object read like a file: `Read + Seek` over ranged `GET`s, resuming after a failure
//! from the byte it stopped at. This is how `decrypt URL` and `verify URL` plug into
//! `crate::source` (issue 13): the container sees a seekable input, so a ZIP's directory is read
//! with ranged requests and its member streamed, with no spooling; gzip and plain NDJSON are one
//! long request.
//!
//! The same checks as `net::download`: every request after the first carries `If-Match` with the
//! ETag seen first, every answer's `Content-Range` must start where the reader is and agree on
//! the total, resets, early ends, stalls, `408`, `429` and `5xx` are retried with backoff (bounded
//! by failures in a row without progress and by the URL's expiry), and a refusal or an expiry is
//! the typed error (exit 5). The object cannot change under a decrypt: a changed object is an
//! error, never a splice. Errors travel through `io::Error` (the `Read` trait) carrying the typed
//! [`Error`]; `container::read_error` takes it back out.

use std::io::{self, Read, Seek, SeekFrom};

use crate::error::{Error, Result};
use crate::net::client::{io_words, Client};
use crate::net::download::{refusal, strong, wait_to_retry};
use crate::net::url::DownloadUrl;
use crate::warning::{Warn, Warning};

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
    warn: Box<dyn Warn + Send>,
}

impl RemoteReader {
    /// Open `url`: one request learns the object's size and ETag (and its first bytes are kept
    /// for the first read).
    pub fn open(
        client: Client,
        url: DownloadUrl,
        retries: u32,
        warn: Box<dyn Warn + Send>,
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
            warn,
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
            )?;
        }
    }

    /// One request at `self.pos`: `Ok(None)` when a body is ready, `Ok(Some(why))` to retry.
    fn try_connect(&mut self) -> Result<Option<String>> {
        let first = self.etag.is_none() && self.total == 0 && self.pos == 0;
        let if_match = self.etag.as_deref().filter(|e| strong(e));
        let answer = match self.client.get(&self.url, self.pos, if_match)? {
            Ok(answer) => answer,
            Err(why) => return Ok(Some(why)),
        };
        let changed = || Error::ObjectChanged {
            url: self.url.shown().to_owned(),
        };
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
            // A new position needs a new request (the current body goes on from the old one).
            self.body = None;
            self.pos = target;
        }
        Ok(self.pos)
    }
}
