//! `roundtrip`: exports that authenticate, built from the fuzz input, through the full decrypt
//! pipeline (`pipeline::run`), with the output compared to what was sealed.
//!
//! The `export` target feeds arbitrary bytes, which almost never carry a valid GCM tag, so it
//! cannot tell whether the reader cuts, numbers and releases *authentic* rows correctly across
//! its 256 KiB buffers. Here the harness seals every row itself (with `record::seal_line`, at the
//! row index the SPEC gives it) and knows the answer.
//!
//! Input layout (every byte string is valid):
//! - byte 0, flags: bit 0 UTF-8 BOM; bit 1 CRLF line ends; bit 2 no final newline; bit 3 gzip.
//! - bytes 1-4: `max_line_bytes`, little-endian u32 (the CLI's default is 256 MiB; limits above
//!   the reader's 256 KiB buffer take another path than small ones).
//! - byte 5: how many times the whole list of records repeats, 1 + the byte (big exports from
//!   small inputs), capped so the export stays near 1 MiB (four 256 KiB reader buffers).
//! - the rest: records separated by 0x00. A record's first byte: bit 0 a blank line before it,
//!   bit 1 a whitespace-only line before it, bits 2-7 that many 8 KiB blocks of spaces appended
//!   to the plaintext (valid trailing JSON whitespace; makes lines up to ~700 KB). The rest is the
//!   plaintext.
//!
//! Expected: the first row that is longer than `max_line_bytes` (`TooLong`) or whose plaintext is
//! not UTF-8 JSON (`Plaintext`) fails the run with that row's index, every row before it having
//! been written; with no such row the run succeeds. Each written line is the plaintext itself
//! when it is on one line, or the same JSON compacted otherwise.

use std::io::Write;

use cipherstream::error::{Error, RowError};
use cipherstream::format::record::seal_line;

use super::common;

const EXPORT_CAP: usize = 1 << 20;

struct Row {
    plaintext: Vec<u8>,
    line_len: usize,
}

#[derive(Debug, PartialEq)]
enum Expect {
    Ok,
    TooLong(u64),
    Plaintext(u64),
    /// 0 bytes of input (no rows, not gzipped): no export at all.
    NoData,
}

/// Run this target's checks on one input: panics when a property does not hold.
pub fn check(data: &[u8]) {
    if data.len() < 6 {
        return;
    }
    let flags = data[0];
    let (bom, crlf, no_final_newline, gzip) = (
        flags & 1 != 0,
        flags & 2 != 0,
        flags & 4 != 0,
        flags & 8 != 0,
    );
    let max_line = u64::from(u32::from_le_bytes([data[1], data[2], data[3], data[4]]));
    let repeat = 1 + usize::from(data[5]);
    let records: Vec<&[u8]> = data[6..].split(|&b| b == 0).collect();

    let key = common::key();
    let cipher = key.cipher();
    let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    let mut export = Vec::new();
    if bom {
        export.extend_from_slice(b"\xEF\xBB\xBF");
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut scratch = Vec::new();
    'build: for _ in 0..repeat {
        for record in &records {
            let Some((&ctrl, text)) = record.split_first() else {
                continue;
            };
            if ctrl & 1 != 0 {
                export.extend_from_slice(eol);
            }
            if ctrl & 2 != 0 {
                export.extend_from_slice(b" \t");
                export.extend_from_slice(eol);
            }
            let mut plaintext = text.to_vec();
            plaintext.resize(text.len() + usize::from(ctrl >> 2) * 8192, b' ');
            let row = rows.len() as u64;
            let aad = format!("stream:{}:{row}", common::CUSTOMER_ID);
            let mut nonce = [0u8; 12];
            nonce[..8].copy_from_slice(&row.to_le_bytes());
            let start = export.len();
            seal_line(
                &cipher,
                aad.as_bytes(),
                &nonce,
                "fuzz",
                &plaintext,
                &mut scratch,
                &mut export,
            );
            if crlf {
                export.push(b'\r');
            }
            let line_len = export.len() - start;
            export.push(b'\n');
            rows.push(Row {
                plaintext,
                line_len,
            });
            if export.len() > EXPORT_CAP {
                break 'build;
            }
        }
    }
    if no_final_newline && export.ends_with(b"\n") {
        export.pop();
        if crlf {
            export.pop();
            if let Some(last) = rows.last_mut() {
                last.line_len -= 1; // its `\r` went with the newline
            }
        }
    }

    let mut expect = Expect::Ok;
    for (i, row) in rows.iter().enumerate() {
        if row.line_len as u64 > max_line {
            expect = Expect::TooLong(i as u64);
            break;
        }
        let is_json = std::str::from_utf8(&row.plaintext).is_ok()
            && serde_json::from_slice::<serde::de::IgnoredAny>(&row.plaintext).is_ok();
        if !is_json {
            expect = Expect::Plaintext(i as u64);
            break;
        }
    }

    let input = if gzip {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&export).expect("in memory");
        gz.finish().expect("in memory")
    } else {
        export
    };
    if input.is_empty() {
        expect = Expect::NoData;
    }

    let opts = common::pipeline_options(max_line);
    let threads_before = common::threads();
    let (out, result) = common::decrypt_bytes(input, &opts);
    common::wait_for_threads(threads_before);

    let got = match &result {
        Ok(_) => Expect::Ok,
        Err(Error::Row {
            row,
            kind: RowError::TooLong { .. },
            ..
        }) => Expect::TooLong(*row),
        Err(Error::Row {
            row,
            kind: RowError::Plaintext(_),
            ..
        }) => Expect::Plaintext(*row),
        Err(e @ Error::Container { .. }) if e.to_string().contains("no data at all") => {
            Expect::NoData
        }
        Err(e) => panic!("an authentic export failed: {e}"),
    };
    assert_eq!(got, expect, "{result:?}");

    let written = common::assert_complete_lines(&out);
    let released = match expect {
        Expect::Ok => rows.len() as u64,
        Expect::TooLong(n) | Expect::Plaintext(n) => n,
        Expect::NoData => 0,
    };
    assert_eq!(written, released, "rows written");
    let lines = out.split(|&b| b == b'\n');
    for (line, row) in lines.zip(&rows).take(released as usize) {
        let pt = &row.plaintext;
        if !pt.contains(&b'\n') && !pt.contains(&b'\r') {
            assert!(line == &pt[..], "a one-line plaintext was altered");
        } else if let Ok(before) = serde_json::from_slice::<serde_json::Value>(pt) {
            let after: serde_json::Value = serde_json::from_slice(line).expect("checked");
            assert_eq!(after, before, "compaction changed the document");
        }
    }
}
