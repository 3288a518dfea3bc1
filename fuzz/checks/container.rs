//! `container`: arbitrary bytes as an input file, through container detection and reading
//! (`container::open_seekable`: ZIP, gzip or plain NDJSON), reading everything out.
//!
//! Properties: nothing panics; memory stays bounded (libFuzzer's `-rss_limit_mb` and
//! `-malloc_limit_mb` turn a runaway allocation into a crash); a plain NDJSON input reads back
//! byte for byte; the progress counter ends where it should; every error, including read errors mapped by `container::read_error`, formats.

use std::io::{self, Cursor, Read};
use std::sync::atomic::Ordering;

use cipherstream::format::container::{self, Kind};

/// Stop reading after this many bytes: a decompression bomb is streamed, not held, so reading
/// further would only spend time.
const READ_LIMIT: u64 = 256 << 20;

/// Run this target's checks on one input: panics when a property does not hold.
pub fn check(data: &[u8]) {
    let result = container::open_seekable(
        Cursor::new(data.to_vec()),
        "fuzz-input",
        data.len() as u64,
        None,
    )
    .and_then(|mut ndjson| {
        let opened = &ndjson.meta;
        let mut buf = vec![0u8; 64 * 1024];
        let mut plain = Vec::new();
        let mut total = 0u64;
        loop {
            match ndjson.reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    assert!(n <= buf.len());
                    total += n as u64;
                    if opened.kind == Kind::Plain {
                        plain.extend_from_slice(&buf[..n]);
                    }
                    if total > READ_LIMIT {
                        return Ok(total);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(container::read_error("fuzz-input", opened, e)),
            }
        }
        // The progress counter counts input bytes for plain and gzip, member bytes for ZIP.
        let counted = ndjson.consumed.load(Ordering::Relaxed);
        match opened.kind {
            Kind::Plain => {
                assert_eq!(plain, data, "plain NDJSON did not read back as itself");
                assert_eq!(counted, data.len() as u64);
            }
            Kind::Gzip => assert!(counted <= data.len() as u64),
            Kind::Zip => assert_eq!(counted, total),
        }
        Ok(total)
    });
    if let Err(e) = result {
        let _ = (e.to_string(), e.hint(), e.exit());
    }
}
