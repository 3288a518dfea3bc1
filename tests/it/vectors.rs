//! Every vector in fixtures/manifest.json (made by an independent Python implementation) gives
//! exactly the expected exit code, stdout bytes and error text: from a path, from standard input,
//! to a file with `-o`, at one and at several threads, and under `verify`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::util::{cipherstream, entries, fixtures, private_key, sha256_hex};

#[derive(Debug, Deserialize)]
struct Manifest {
    version: u32,
    vectors: Vec<Vector>,
}

#[derive(Debug, Deserialize)]
struct Vector {
    name: String,
    file: String,
    customer_id: Option<String>,
    key_file: Option<String>,
    args: Vec<String>,
    expect: String,
    exit_code: i32,
    row: Option<u64>,
    rows_released: Option<u64>,
    stdout_sha256: Option<String>,
    stdout_len: Option<usize>,
    stderr_contains: Vec<String>,
}

fn manifest() -> Manifest {
    let text = std::fs::read(fixtures().join("manifest.json")).expect("fixtures/manifest.json");
    let m: Manifest = serde_json::from_slice(&text).expect("manifest parses");
    assert_eq!(m.version, 1);
    assert!(
        m.vectors.len() >= 60,
        "manifest lost vectors: {}",
        m.vectors.len()
    );
    m
}

/// How a vector is fed to the tool.
#[derive(Debug, Clone, Copy)]
enum Feed {
    Path,
    Stdin,
}

struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

fn run(v: &Vector, feed: Feed, extra: &[&str], key_dir: &std::path::Path) -> Run {
    let mut cmd = cipherstream();
    cmd.arg("decrypt");
    let file = fixtures().join(&v.file);
    match feed {
        Feed::Path => {
            cmd.arg(&file);
        }
        Feed::Stdin => {
            cmd.arg("-").pipe_stdin(&file).unwrap();
        }
    }
    if let Some(id) = &v.customer_id {
        cmd.args(["--customer-id", id]);
    }
    if let Some(key) = &v.key_file {
        cmd.arg("--key-file").arg(private_key(key_dir, key));
    }
    cmd.args(&v.args).args(extra);
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn check(v: &Vector, r: &Run, how: &str) {
    let ctx = format!("vector {} ({how}); stderr:\n{}", v.name, r.stderr);
    assert_eq!(r.code, v.exit_code, "exit code, {ctx}");
    if let Some(sha) = &v.stdout_sha256 {
        assert_eq!(Some(r.stdout.len()), v.stdout_len, "stdout length, {ctx}");
        assert_eq!(&sha256_hex(&r.stdout), sha, "stdout bytes, {ctx}");
    }
    if let Some(released) = v.rows_released {
        let lines = r.stdout.iter().filter(|&&b| b == b'\n').count() as u64;
        assert_eq!(lines, released, "rows released, {ctx}");
    }
    for needle in &v.stderr_contains {
        assert!(
            r.stderr.contains(needle.as_str()),
            "stderr lacks {needle:?}, {ctx}"
        );
    }
    if let Some(row) = v.row {
        assert!(
            r.stderr.contains(&format!("row {row}:")),
            "row not named, {ctx}"
        );
    }
    if v.exit_code == 0 {
        if v.stderr_contains.is_empty() {
            assert_eq!(r.stderr, "", "a success prints nothing on stderr, {ctx}");
        } else {
            assert!(
                r.stderr.starts_with("warning: "),
                "a success only warns, {ctx}"
            );
        }
    } else {
        assert!(r.stderr.starts_with("error: "), "{ctx}");
        assert!(!r.stderr.contains("panicked"), "{ctx}");
        if v.expect != "usage failure" && v.expect != "key failure" {
            let input = if how.contains("stdin") {
                "<stdin>".to_owned()
            } else {
                v.file.clone()
            };
            assert!(
                r.stderr.contains(&input),
                "input not named ({input}), {ctx}"
            );
        }
    }
    let class_word = match v.expect.as_str() {
        "auth failure" => Some("authentication failed"),
        "parse failure" => Some("malformed line"),
        "plaintext failure" => Some("not valid UTF-8 JSON"),
        _ => None,
    };
    if let Some(word) = class_word {
        assert!(
            r.stderr.contains(word),
            "failure class word {word:?} missing, {ctx}"
        );
    }
    if v.expect != "auth failure" {
        assert!(
            !r.stderr.contains("authentication failed"),
            "wrong class, {ctx}"
        );
    }
}

#[test]
fn every_vector_from_a_path_and_from_stdin() {
    let keys = tempfile::tempdir().unwrap();
    for v in manifest().vectors {
        check(&v, &run(&v, Feed::Path, &[], keys.path()), "path");
        check(&v, &run(&v, Feed::Stdin, &[], keys.path()), "stdin");
    }
}

#[test]
fn every_vector_identical_at_one_and_many_threads() {
    let keys = tempfile::tempdir().unwrap();
    for v in manifest().vectors {
        for threads in ["1", "3", "8"] {
            let r = run(&v, Feed::Path, &["--threads", threads], keys.path());
            check(&v, &r, &format!("--threads {threads}"));
        }
    }
}

#[test]
fn every_vector_to_a_file_is_all_or_nothing() {
    let keys = tempfile::tempdir().unwrap();
    for v in manifest().vectors {
        let dir = tempfile::tempdir().unwrap();
        let dest: PathBuf = dir.path().join("out.ndjson");
        std::fs::write(&dest, b"previous content\n").unwrap();
        let r = run(&v, Feed::Path, &["-o", dest.to_str().unwrap()], keys.path());
        let ctx = format!("vector {} (-o); stderr:\n{}", v.name, r.stderr);
        assert_eq!(r.code, v.exit_code, "{ctx}");
        assert!(r.stdout.is_empty(), "nothing on stdout with -o, {ctx}");
        assert_eq!(
            entries(dir.path()),
            ["out.ndjson"],
            "no temporary file left, {ctx}"
        );
        let written = std::fs::read(&dest).unwrap();
        if v.exit_code == 0 {
            let sha = v.stdout_sha256.as_ref().unwrap();
            assert_eq!(&sha256_hex(&written), sha, "{ctx}");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{ctx}");
            }
        } else {
            assert_eq!(
                written, b"previous content\n",
                "previous file intact, {ctx}"
            );
        }
    }
}

#[test]
fn verify_agrees_with_decrypt_and_releases_no_plaintext() {
    let keys = tempfile::tempdir().unwrap();
    for v in manifest().vectors {
        let mut cmd = cipherstream();
        cmd.arg("verify")
            .arg(fixtures().join(&v.file))
            .args(&v.args);
        if let Some(id) = &v.customer_id {
            cmd.args(["--customer-id", id]);
        }
        let key = v.key_file.as_ref().map(|key| private_key(keys.path(), key));
        if let Some(key) = &key {
            cmd.arg("--key-file").arg(key);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ctx = format!("vector {}; stdout {stdout:?}; stderr:\n{stderr}", v.name);
        if v.name.starts_with("nonce_reused") {
            // decrypt only warns; verify checks nonces exactly and fails.
            assert_eq!(out.status.code(), Some(3), "{ctx}");
            assert!(
                stderr.contains("1 row(s) reuse a nonce: row 4 repeats the nonce of row 1\n"),
                "{ctx}"
            );
            continue;
        }
        assert_eq!(out.status.code(), Some(v.exit_code), "{ctx}");
        if v.exit_code == 0 {
            let rows = v.rows_released.unwrap();
            assert!(
                stdout.contains(&format!(": ok, {rows} rows, key ids: ")),
                "{ctx}"
            );
            if v.name == "line_escaped_slashes" {
                // The generator's KEY_ID, written there as the line spells it, unescaped, and
                // the key that opened its rows.
                let key = key.as_ref().unwrap().display();
                assert!(
                    stdout.ends_with(&format!("key ids: ck_live_2024_09 (key file {key})\n")),
                    "{ctx}"
                );
            }
        } else if v.expect != "usage failure" && v.expect != "key failure" {
            assert!(stdout.ends_with(": FAILED\n"), "{ctx}");
        }
        assert_eq!(
            stdout.lines().count(),
            usize::from(!stdout.is_empty()),
            "{ctx}"
        );
    }
}
