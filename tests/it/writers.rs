//! Files as other tools write them (issue 12 item 8): every archive in fixtures/writers/, the same
//! export zipped or gzipped by Info-ZIP, Python, bsdtar, 7-Zip, the JDK, Go, GNU gzip, pigz and
//! bgzip, decrypts to exactly the expected bytes (or fails as its manifest says), from a path and
//! from standard input, and `verify` agrees; key and secret files saved by a Windows editor work.

use std::path::PathBuf;

use serde::Deserialize;

use crate::util::{cipherstream, fixtures, private_key, sha256_hex};

#[derive(Debug, Deserialize)]
struct Manifest {
    version: u32,
    customer_id: String,
    key_file: String,
    archives: Vec<Archive>,
}

#[derive(Debug, Deserialize)]
struct Archive {
    name: String,
    file: String,
    tool: String,
    sha256: String,
    expect: String,
    exit_code: i32,
    rows_released: u64,
    stdout_sha256: String,
    stdout_len: usize,
    stderr_contains: Vec<String>,
}

fn dir() -> PathBuf {
    fixtures().join("writers")
}

fn manifest() -> Manifest {
    let text = std::fs::read(dir().join("manifest.json")).expect("fixtures/writers/manifest.json");
    let m: Manifest = serde_json::from_slice(&text).expect("manifest parses");
    assert_eq!(m.version, 1);
    m
}

/// The manifest lists every archive in the directory, each exactly as committed, and covers the
/// writers the issue names.
#[test]
fn the_manifest_lists_every_archive_as_committed() {
    let m = manifest();
    let mut listed: Vec<&str> = m.archives.iter().map(|a| a.file.as_str()).collect();
    listed.sort_unstable();
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".zip") || n.ends_with(".gz"))
        .collect();
    on_disk.sort_unstable();
    assert_eq!(listed, on_disk);
    for a in &m.archives {
        let bytes = std::fs::read(dir().join(&a.file)).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            a.sha256,
            "{} changed since make.py",
            a.file
        );
    }
    for tool in [
        "Info-ZIP zip",
        "Python zipfile",
        "bsdtar (libarchive)",
        "7-Zip",
        "jar (JDK)",
        "java.util.zip (JDK)",
        "Go archive/zip",
        "GNU gzip",
        "pigz",
        "bgzip (htslib)",
        "Python gzip",
        "Go compress/gzip",
    ] {
        assert!(
            m.archives.iter().any(|a| a.tool == tool),
            "no archive by {tool}"
        );
    }
}

#[test]
fn every_archive_decrypts_exactly_from_a_path_and_from_stdin() {
    let m = manifest();
    let keys = tempfile::tempdir().unwrap();
    let key = private_key(keys.path(), m.key_file.trim_start_matches("../"));
    for a in &m.archives {
        let file = dir().join(&a.file);
        for stdin in [false, true] {
            let mut cmd = cipherstream();
            cmd.arg("decrypt");
            if stdin {
                cmd.arg("-").pipe_stdin(&file).unwrap();
            } else {
                cmd.arg(&file);
            }
            cmd.args(["--customer-id", &m.customer_id])
                .arg("--key-file")
                .arg(&key);
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let ctx = format!("{} ({}, stdin: {stdin}); stderr:\n{stderr}", a.name, a.tool);
            assert_eq!(out.status.code(), Some(a.exit_code), "{ctx}");
            assert_eq!(out.stdout.len(), a.stdout_len, "{ctx}");
            assert_eq!(sha256_hex(&out.stdout), a.stdout_sha256, "{ctx}");
            let rows = out.stdout.iter().filter(|&&b| b == b'\n').count() as u64;
            assert_eq!(rows, a.rows_released, "{ctx}");
            if a.expect == "success" {
                assert_eq!(stderr, "", "{ctx}");
            } else {
                assert!(stderr.starts_with("error: "), "{ctx}");
                assert!(!stderr.contains("authentication failed"), "{ctx}");
            }
            for needle in &a.stderr_contains {
                assert!(stderr.contains(needle.as_str()), "lacks {needle:?}: {ctx}");
            }
        }
    }
}

#[test]
fn verify_agrees_on_every_archive() {
    let m = manifest();
    let keys = tempfile::tempdir().unwrap();
    let key = private_key(keys.path(), m.key_file.trim_start_matches("../"));
    for a in &m.archives {
        let out = cipherstream()
            .arg("verify")
            .arg(dir().join(&a.file))
            .args(["--customer-id", &m.customer_id])
            .arg("--key-file")
            .arg(&key)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let ctx = format!("{}; stdout {stdout:?}", a.name);
        assert_eq!(out.status.code(), Some(a.exit_code), "{ctx}");
        if a.expect == "success" {
            let rows = a.rows_released;
            assert!(
                stdout.contains(&format!(": ok, {rows} rows, key ids: ")),
                "{ctx}"
            );
        } else {
            assert!(stdout.ends_with(": FAILED\n"), "{ctx}");
        }
    }
}

/// A private file in `dir` holding `bytes`.
fn private_file(dir: &std::path::Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

/// A webhook secret file saved with a byte order mark (Windows Notepad) signs and verifies as the
/// secret itself: the mark is not keyed into the HMAC.
#[test]
fn a_secret_file_with_a_byte_order_mark_signs_as_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let plain = private_file(dir.path(), "plain.secret", b"whsec_test_4f9a2c71e0\n");
    let bom = private_file(
        dir.path(),
        "bom.secret",
        b"\xEF\xBB\xBFwhsec_test_4f9a2c71e0\r\n",
    );
    let body = br#"{"event":"job.completed","timestamp":"2024-09-26T10:02:15Z"}"#;
    let sign = |secret: &PathBuf| {
        let out = cipherstream()
            .args(["webhook", "sign", "--secret-file"])
            .arg(secret)
            .write_stdin(&body[..])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8(out.stdout).unwrap()
    };
    let signature = sign(&plain);
    assert!(signature.starts_with("sha256="), "{signature}");
    assert_eq!(sign(&bom), signature);
    cipherstream()
        .args(["webhook", "verify", "--no-timestamp-check", "--signature"])
        .arg(signature.trim())
        .arg("--secret-file")
        .arg(&bom)
        .write_stdin(&body[..])
        .assert()
        .code(0)
        .stdout(&body[..]);
}

/// A key given in the environment with an invisible character: named with its position, and not
/// one piece of the key in the message.
#[test]
fn an_invisible_character_in_a_key_is_named_not_shown() {
    let key = std::fs::read_to_string(fixtures().join("keys/customer.key")).unwrap();
    let key = key.trim();
    let pasted = format!("{}\u{a0}{}", &key[..30], &key[30..]);
    let out = cipherstream()
        .arg("verify")
        .arg(fixtures().join("vectors/writers_input.ndjson"))
        .args(["--customer-id", "cust_4f9a2c71"])
        .env("CIPHERSTREAM_KEY", &pasted)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(
            "error: CIPHERSTREAM_KEY is not valid base64 (standard alphabet): it holds a no-break \
             space (U+00A0) at character 31\n"
        ),
        "{stderr}"
    );
    for piece in key.as_bytes().chunks(4) {
        assert!(
            !stderr.contains(std::str::from_utf8(piece).unwrap()),
            "{stderr}"
        );
    }
}
