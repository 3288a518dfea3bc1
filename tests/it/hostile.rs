//! Hostile text (issue 12, item 2): escape sequences and newlines in member names, paths, key ids
//! and body fields never reach the terminal raw; long lists are cut.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::util::{cipherstream, fixtures, private_key};

const VEC_ID: &str = "cust_4f9a2c71";
/// A webhook secret, as in tests/it/webhook.rs.
const SECRET: &str = "whsec_7f3c9a1e5b2d4068";

fn vector(name: &str) -> PathBuf {
    fixtures().join("vectors").join(name)
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

// ---- item 2: untrusted text reaches the terminal escaped ----

/// A mode-0600 file holding `text`.
fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

/// A ZIP whose members have these names, each holding `data`.
fn zip_with(dir: &Path, file: &str, names: &[&str], data: &[u8]) -> PathBuf {
    let path = dir.join(file);
    let mut w = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for name in names {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap();
    path
}

/// `verify` of `input` with the vectors' key and customer id, plus `args`.
fn verify(dir: &Path, input: &Path, args: &[&str]) -> std::process::Output {
    let key = private_key(dir, "keys/customer.key");
    cipherstream()
        .arg("verify")
        .arg(input)
        .args(["--customer-id", VEC_ID, "--key-file"])
        .arg(key)
        .args(args)
        .output()
        .unwrap()
}

/// Nothing in `bytes` would act on a terminal: no control character but the line ends, no
/// bidirectional control.
fn assert_inert(bytes: &[u8]) {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    for c in text.chars() {
        assert!(
            c == '\n' || !cipherstream::text::needs_escape(c),
            "{c:?} reached the terminal: {text:?}"
        );
    }
}

#[test]
fn member_names_with_escape_sequences_and_newlines_are_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let rows = std::fs::read(vector("plain.ndjson")).unwrap();
    let zip = zip_with(
        dir.path(),
        "two.zip",
        &["a\x1b[2J.ndjson", "x\nerror: forged.ndjson"],
        &rows,
    );
    let shown = zip.display();
    let out = verify(dir.path(), &zip, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_of(&out),
        format!(
            "error: {shown}: the ZIP holds several candidate members: a\\u{{1b}}[2J.ndjson, \
             x\\nerror: forged.ndjson\nhint: choose one with --member NAME\n"
        )
    );
    assert_eq!(out.stdout, format!("{shown}: FAILED\n").as_bytes());
    assert_inert(&out.stderr);

    // --member with a name that is not there lists them all, escaped, and its own name quoted.
    let out = verify(dir.path(), &zip, &["--member", "b\x1b]0;pwned\x07"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_of(&out),
        format!(
            "error: {shown}: the ZIP has no member named \"b\\u{{1b}}]0;pwned\\u{{7}}\"; its \
             members are: a\\u{{1b}}[2J.ndjson, x\\nerror: forged.ndjson\nhint: give --member one \
             of the names listed, exactly\n"
        )
    );

    // The member chosen is read, and --json reports its exact name, losslessly and inertly.
    let out = verify(dir.path(), &zip, &["--member", "a\x1b[2J.ndjson", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_inert(&out.stdout);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["member"], "a\x1b[2J.ndjson");

    // None named *.ndjson: listed the same way. A C1 CSI and a right-to-left override too.
    let zip = zip_with(
        dir.path(),
        "none.zip",
        &["r\u{202e}txt.exe", "b\u{9b}2J.txt"],
        &rows,
    );
    let out = verify(dir.path(), &zip, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_of(&out),
        format!(
            "error: {}: the ZIP holds several members and none ends in .ndjson: \
             r\\u{{202e}}txt.exe, b\\u{{9b}}2J.txt\nhint: choose one with --member NAME\n",
            zip.display()
        )
    );
}

#[test]
fn a_single_hostile_member_is_read_and_reported_inertly() {
    let dir = tempfile::tempdir().unwrap();
    let rows = std::fs::read(vector("plain.ndjson")).unwrap();
    let name = "job\u{202e}\u{7f}\u{1b}[2J\r\n.ndjson";
    let zip = zip_with(dir.path(), "one.zip", &[name], &rows);
    let out = verify(dir.path(), &zip, &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(
        String::from_utf8(out.stdout.clone())
            .unwrap()
            .contains(r#""member":"job\u202e\u007f\u001b[2J\r\n.ndjson""#),
        "{:?}",
        out.stdout
    );
    assert_inert(&out.stdout);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["member"], name);
}

#[test]
fn thousands_of_members_make_a_short_list() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..2000).map(|i| format!("part_{i:04}.ndjson")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let zip = zip_with(dir.path(), "many.zip", &refs, b"");
    let out = verify(dir.path(), &zip, &[]);
    assert_eq!(out.status.code(), Some(1));
    let listed = (0..20)
        .map(|i| format!("part_{i:04}.ndjson"))
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        stderr_of(&out),
        format!(
            "error: {}: the ZIP holds several candidate members: {listed}, ... and 1980 more\n\
             hint: choose one with --member NAME\n",
            zip.display()
        )
    );
    // --member with a wrong name, and none named *.ndjson: as short.
    let out = verify(dir.path(), &zip, &["--member", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains(&format!("{listed}, ... and 1980 more\n")));
    assert!(out.stderr.len() < 1000, "{}", out.stderr.len());
    let names: Vec<String> = (0..2000).map(|i| format!("{i}.txt")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let zip = zip_with(dir.path(), "many_txt.zip", &refs, b"");
    let out = verify(dir.path(), &zip, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains(", 18.txt, 19.txt, ... and 1980 more\n"),
        "{}",
        stderr_of(&out)
    );
    assert!(out.stderr.len() < 1000, "{}", out.stderr.len());
}

#[cfg(unix)]
#[test]
fn a_path_with_an_escape_sequence_is_escaped_wherever_it_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ex\x1b[2Jport\n.ndjson");
    std::fs::copy(vector("auth_tag_flipped_row2.ndjson"), &input).unwrap();
    let shown = format!("{}/ex\\u{{1b}}[2Jport\\n.ndjson", dir.path().display());
    let out = verify(dir.path(), &input, &[]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, format!("{shown}: FAILED\n").as_bytes());
    assert!(
        stderr_of(&out).starts_with(&format!(
            "error: {shown}: row 2: authentication failed\nhint: "
        )),
        "{}",
        stderr_of(&out)
    );
    assert_inert(&out.stderr);
    // A success line names it the same way.
    std::fs::copy(vector("plain.ndjson"), &input).unwrap();
    let out = verify(dir.path(), &input, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8(out.stdout.clone())
            .unwrap()
            .starts_with(&format!("{shown}: ok, 7 rows, key ids: ")),
        "{:?}",
        out.stdout
    );
    // A missing key file with such a name: the I/O error names it escaped.
    let out = cipherstream()
        .arg("verify")
        .arg(vector("plain.ndjson"))
        .args(["--customer-id", VEC_ID, "--key-file", "k\x1b[2J.key"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr_of(&out),
        "error: cannot open key file k\\u{1b}[2J.key: No such file or directory\n"
    );
}

#[test]
fn webhook_body_fields_are_quoted_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let secret = private_file(dir.path(), "s", SECRET);
    let body = private_file(
        dir.path(),
        "body.json",
        r#"{"timestamp":"2024\u001b[2J\nerror: forged \u202e","delivery_id":"d"}"#,
    );
    let signed = cipherstream()
        .args(["webhook", "sign", "--secret-file"])
        .arg(&secret)
        .arg(&body)
        .output()
        .unwrap();
    let signature = String::from_utf8(signed.stdout).unwrap();
    let out = cipherstream()
        .args(["webhook", "verify", "--signature", signature.trim()])
        .arg("--secret-file")
        .arg(&secret)
        .arg(&body)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).starts_with(&format!(
            "error: {}: the webhook body's timestamp \"2024\\u{{1b}}[2J\\nerror: forged \
             \\u{{202e}}\" is not an RFC 3339 date-time",
            body.display()
        )),
        "{}",
        stderr_of(&out)
    );
    assert_inert(&out.stderr);
}
