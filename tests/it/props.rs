//! Property tests through the library's real pipeline: encrypt-then-decrypt is the identity, and
//! any flipped bit of any row's nonce, ciphertext or tag is caught at exactly that row with no
//! plaintext of that row released.
//!
//! The exports are sealed here with RustCrypto's `aes-gcm`, not with the tool's own AES-GCM
//! (`ring`), and the AAD is spelled out from the SPEC, so every round trip also checks the tool
//! against an independent implementation.

use std::io::Write;

use aes_gcm::aead::{inout::InOutBuf, AeadInOut, Nonce};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use proptest::prelude::*;

use cipherstream::engine::decrypt::{self as pipeline, Options};
use cipherstream::engine::progress::Progress;
use cipherstream::error::{Error, RowError};
use cipherstream::format::aead::Cipher;
use cipherstream::format::record::RowOpener;
use cipherstream::source::{Input, Source};
use cipherstream::warning::Ignore;

#[derive(Debug, Clone, Copy)]
enum Container {
    Plain,
    Gzip,
    Zip,
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1e9f64..1e9).prop_map(serde_json::Value::from),
        "\\PC{0,20}".prop_map(serde_json::Value::from),
        ".{0,8}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Seal `records` as an export: each line the JSON object `{"encrypted_data": "..."}` (serialised
/// by serde_json, so any key id is escaped correctly), separated by `eol`, with blank lines where
/// `blank_after` says.
fn export(
    key: &[u8; 32],
    customer: &str,
    key_id: &str,
    records: &[Vec<u8>],
    eols: &[&str],
    blank_after: &[bool],
    final_newline: bool,
) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(key).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for (row, pt) in records.iter().enumerate() {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&(row as u64).to_le_bytes());
        nonce[8] = 0xA5;
        let aad = format!("stream:{customer}:{row}");
        let mut blob = pt.clone();
        let tag = cipher
            .encrypt_inout_detached(
                &Nonce::<Aes256Gcm>::from(nonce),
                aad.as_bytes(),
                InOutBuf::from(&mut blob[..]),
            )
            .unwrap();
        blob.extend_from_slice(&tag);
        let value = format!("{key_id}:{}:{}", b64.encode(nonce), b64.encode(&blob));
        let line = serde_json::json!({ "encrypted_data": value });
        out.extend_from_slice(line.to_string().as_bytes());
        let eol = eols[row % eols.len()];
        if row + 1 < records.len() || final_newline {
            out.extend_from_slice(eol.as_bytes());
        }
        if blank_after[row % blank_after.len()] && row + 1 < records.len() {
            out.extend_from_slice(eol.as_bytes());
        }
    }
    out
}

fn wrap(bytes: &[u8], container: Container) -> Vec<u8> {
    match container {
        Container::Plain => bytes.to_vec(),
        Container::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(bytes).unwrap();
            gz.finish().unwrap()
        }
        Container::Zip => {
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            zip.start_file("job.ndjson", zip::write::SimpleFileOptions::default())
                .unwrap();
            zip.write_all(bytes).unwrap();
            zip.finish().unwrap().into_inner()
        }
    }
}

fn decrypt(
    bytes: &[u8],
    key: &[u8; 32],
    customer: &str,
    threads: usize,
) -> (Vec<u8>, Result<u64, Error>) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(bytes).unwrap();
    let input = Input::from(file.path().to_path_buf());
    let opener = RowOpener::new(Cipher::new(key), customer);
    let opts = Options {
        threads,
        max_line_bytes: 1 << 20,
        skip_bad_rows: false,
        exact_nonce_check: true,
        spare_core: false,
    };
    let mut out = Vec::new();
    let result = Source::new(&input).ndjson(None).and_then(|ndjson| {
        pipeline::run(
            ndjson,
            &opener,
            &opts,
            Some(pipeline::Destination {
                writer: &mut out,
                name: "output",
                written: None,
            }),
            &Progress::hidden(),
            &Ignore,
        )
    });
    (out, result.map(|s| s.rows))
}

fn container() -> impl Strategy<Value = Container> {
    prop_oneof![
        Just(Container::Plain),
        Just(Container::Gzip),
        Just(Container::Zip)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn encrypt_then_decrypt_is_the_identity(
        key in any::<[u8; 32]>(),
        customer in "\\PC{1,16}",
        key_id in "\\PC{0,12}",
        values in prop::collection::vec(json_value(), 0..12),
        eols in prop::collection::vec(prop_oneof![Just("\n"), Just("\r\n")], 1..4),
        blank_after in prop::collection::vec(any::<bool>(), 1..4),
        final_newline in any::<bool>(),
        container in container(),
        threads in 1usize..4,
    ) {
        let records: Vec<Vec<u8>> =
            values.iter().map(|v| serde_json::to_vec(v).unwrap()).collect();
        let plain = export(&key, &customer, &key_id, &records, &eols, &blank_after, final_newline);
        let wrapped = wrap(&plain, container);
        let (out, result) = decrypt(&wrapped, &key, &customer, threads);
        if wrapped.is_empty() {
            // No rows as plain NDJSON is 0 bytes, which is no export at all (a failed download).
            let e = result.unwrap_err().to_string();
            prop_assert!(e.contains("no data at all (0 bytes)"), "{}", e);
            prop_assert!(out.is_empty());
            return Ok(());
        }
        prop_assert_eq!(result.unwrap(), records.len() as u64);
        let expected: Vec<u8> = records.iter().flat_map(|r| [r.as_slice(), b"\n"].concat()).collect();
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn any_flipped_bit_fails_at_exactly_that_row(
        key in any::<[u8; 32]>(),
        customer in "\\PC{1,12}",
        values in prop::collection::vec(json_value(), 1..10),
        target in any::<prop::sample::Index>(),
        part in 0usize..3,
        bit in any::<prop::sample::Index>(),
        container in container(),
        threads in 1usize..4,
    ) {
        let records: Vec<Vec<u8>> =
            values.iter().map(|v| serde_json::to_vec(v).unwrap()).collect();
        let plain = export(&key, &customer, "k", &records, &["\n"], &[false], true);
        let row = target.index(records.len());
        let mut lines: Vec<Vec<u8>> =
            plain.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
        lines[row] = flip(&lines[row], part, bit);
        let tampered: Vec<u8> = lines.iter().flat_map(|l| [l.as_slice(), b"\n"].concat()).collect();
        let (out, result) = decrypt(&wrap(&tampered, container), &key, &customer, threads);
        match result {
            Err(Error::Row { row: r, kind: RowError::Auth(_), .. }) => prop_assert_eq!(r, row as u64),
            other => prop_assert!(false, "expected an auth failure at row {}, got {:?}", row, other),
        }
        let expected: Vec<u8> =
            records[..row].iter().flat_map(|r| [r.as_slice(), b"\n"].concat()).collect();
        prop_assert_eq!(out, expected);
    }
}

/// A fixed export of 300 realistic rows, for the corruption test: (key, customer, NDJSON).
fn corruption_export() -> &'static ([u8; 32], String, Vec<u8>) {
    static EXPORT: std::sync::OnceLock<([u8; 32], String, Vec<u8>)> = std::sync::OnceLock::new();
    EXPORT.get_or_init(|| {
        let key = [0x5c; 32];
        let customer = "cust_corrupt".to_owned();
        let records: Vec<Vec<u8>> = (0..300)
            .map(|i| {
                format!(
                    r#"{{"appointment_id":"apt_{i:05}","patient":"Patient {i}","status":"completed","amount":{}.{:02}}}"#,
                    i * 7 % 500,
                    i % 100
                )
                .into_bytes()
            })
            .collect();
        let plain = export(&key, &customer, "kid", &records, &["\n"], &[false], true);
        (key, customer, plain)
    })
}

/// The byte range a bit flip may hit: a ZIP member's compressed data, or a gzip member's deflate
/// data and trailer.
fn compressed_range(wrapped: &[u8], container: Container) -> std::ops::Range<usize> {
    match container {
        Container::Gzip => 10..wrapped.len(),
        Container::Zip => {
            let mut zip = zip::ZipArchive::new(std::io::Cursor::new(wrapped)).unwrap();
            let entry = zip.by_index_raw(0).unwrap();
            let start = entry.data_start().unwrap() as usize;
            start..start + entry.compressed_size() as usize
        }
        Container::Plain => unreachable!("plain NDJSON has no container to damage"),
    }
}

/// Whether another reader of the container (the `zip` crate's checked reader; flate2's gzip
/// decoder, which checks CRC-32 and size) reads it without error: the container is intact.
fn container_is_intact(wrapped: &[u8], container: Container) -> bool {
    use std::io::Read;
    let mut out = Vec::new();
    match container {
        Container::Gzip => flate2::read::MultiGzDecoder::new(wrapped)
            .read_to_end(&mut out)
            .is_ok(),
        Container::Zip => zip::ZipArchive::new(std::io::Cursor::new(wrapped))
            .and_then(|mut z| {
                z.by_index(0)?.read_to_end(&mut out)?;
                Ok(())
            })
            .is_ok(),
        Container::Plain => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Issue 12, item 5: a bit flipped anywhere in the compressed data of a ZIP or gzip export is a
    /// container failure (exit 1: download it again), never an authentication failure (exit 3:
    /// tampering), unless the container is intact, and then the export decrypts in full.
    #[test]
    fn a_flipped_bit_in_compressed_data_is_a_container_failure_unless_the_container_is_intact(
        zip in any::<bool>(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
        threads in 1usize..3,
    ) {
        let (key, customer, plain) = corruption_export();
        let container = if zip { Container::Zip } else { Container::Gzip };
        let mut damaged = wrap(plain, container);
        let range = compressed_range(&damaged, container);
        let i = range.start + at.index(range.len());
        damaged[i] ^= 1 << bit;
        let intact = container_is_intact(&damaged, container);
        let (out, result) = decrypt(&damaged, key, customer, threads);
        match result {
            Ok(rows) => {
                prop_assert!(intact, "byte {} bit {}: decrypted a damaged container", i, bit);
                prop_assert_eq!(rows, 300);
                prop_assert_eq!(&out, &plain_output(plain));
            }
            Err(Error::Container { .. }) => {
                prop_assert!(!intact, "byte {} bit {}: an intact container called damaged", i, bit);
            }
            Err(other) => prop_assert!(
                false,
                "byte {} bit {}: {} (exit {}), not a container failure",
                i, bit, other, other.exit().code()
            ),
        }
    }
}

/// What decrypting the corruption test's export writes: each record, compact, on its line.
fn plain_output(export: &[u8]) -> Vec<u8> {
    let (key, customer, _) = corruption_export();
    let (out, result) = decrypt(export, key, customer, 1);
    assert_eq!(result.unwrap(), 300);
    out
}

/// Flip one bit of the nonce (part 0), ciphertext (1) or tag (2) of a line, re-encoding it.
fn flip(line: &[u8], part: usize, bit: prop::sample::Index) -> Vec<u8> {
    flip_at(line, part, |bits| bit.index(bits))
}

/// [`flip`] with the bit chosen by `pick` from the number of bits of the part.
fn flip_at(line: &[u8], part: usize, pick: impl FnOnce(usize) -> usize) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let v: serde_json::Value = serde_json::from_slice(line).unwrap();
    let value = v["encrypted_data"].as_str().unwrap();
    let mut parts: Vec<&str> = value.rsplitn(3, ':').collect();
    parts.reverse();
    let (key_id, iv, blob) = (parts[0], parts[1], parts[2]);
    let mut iv = b64.decode(iv).unwrap();
    let mut blob = b64.decode(blob).unwrap();
    let tag_start = blob.len() - 16;
    let target: &mut [u8] = match part {
        0 => &mut iv,
        1 if tag_start > 0 => &mut blob[..tag_start],
        _ => &mut blob[tag_start..],
    };
    let i = pick(target.len() * 8);
    target[i / 8] ^= 1 << (i % 8);
    let value = format!("{key_id}:{}:{}", b64.encode(&iv), b64.encode(&blob));
    serde_json::json!({ "encrypted_data": value })
        .to_string()
        .into_bytes()
}

/// Rows spread over many pipeline buffers (about 2.4 MB of lines: ten or more 256 KiB chunks),
/// with blank lines and CRLF endings at chunk boundaries somewhere: every row's index comes from
/// counting across chunks, so every row must open, in order, at every thread count; and a
/// tampered row deep inside fails at exactly its index with exactly the rows before it released.
#[test]
fn row_indices_carry_across_many_buffers_at_every_thread_count() {
    let key = [0x42u8; 32];
    let records: Vec<Vec<u8>> = (0..4000)
        .map(|i| {
            let pad = "x".repeat(200 + (i * 37) % 400);
            format!(r#"{{"row":{i},"note":"{pad}"}}"#).into_bytes()
        })
        .collect();
    let plain = export(
        &key,
        "cust_chunks",
        "k",
        &records,
        &["\n", "\r\n", "\n"],
        &[false, false, true, false, false],
        true,
    );
    assert!(plain.len() > 2_000_000, "{} bytes", plain.len());
    let expected: Vec<u8> = records
        .iter()
        .flat_map(|r| [r.as_slice(), b"\n"].concat())
        .collect();
    for container in [Container::Plain, Container::Gzip, Container::Zip] {
        for threads in [1, 2, 3, 8] {
            let (out, result) = decrypt(&wrap(&plain, container), &key, "cust_chunks", threads);
            assert_eq!(result.unwrap(), 4000, "{container:?}, {threads} threads");
            assert!(
                out == expected,
                "{container:?}, {threads} threads: output differs"
            );
        }
    }

    // Tamper with row 3333's ciphertext (its line, counted without the blank lines).
    let mut lines: Vec<&[u8]> = plain.split(|&b| b == b'\n').collect();
    let target = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim_ascii().is_empty())
        .nth(3333)
        .map(|(i, _)| i)
        .unwrap();
    let tampered_line = flip_at(
        lines[target].strip_suffix(b"\r").unwrap_or(lines[target]),
        1,
        |_| 0,
    );
    lines[target] = &tampered_line;
    let tampered = lines.join(&b'\n');
    for threads in [1, 2, 3, 8] {
        let (out, result) = decrypt(&tampered, &key, "cust_chunks", threads);
        match result {
            Err(Error::Row {
                row: 3333,
                kind: RowError::Auth(_),
                ..
            }) => {}
            other => {
                panic!("{threads} threads: expected an auth failure at row 3333, got {other:?}")
            }
        }
        assert!(
            out == expected[..expected_prefix_len(&records, 3333)],
            "{threads} threads: released rows differ"
        );
    }
}

/// Bytes of output for the first `rows` records.
fn expected_prefix_len(records: &[Vec<u8>], rows: usize) -> usize {
    records[..rows].iter().map(|r| r.len() + 1).sum()
}
