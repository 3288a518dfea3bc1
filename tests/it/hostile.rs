//! Hostile and mistaken text (issue 12, items 1, 2, 3 and 11): a key or secret given where its
//! file's path belongs is never echoed; escape sequences and newlines in member names, paths and
//! key ids never reach the terminal raw; long lists are cut; webhook bodies are read to a limit;
//! invisible characters in the customer id are named.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use crate::util::{cipherstream, fixtures, private_key};

const VEC_ID: &str = "cust_4f9a2c71";
/// A webhook secret, as in tests/it/webhook.rs.
const SECRET: &str = "whsec_7f3c9a1e5b2d4068";
/// A well-formed signature that matches nothing.
const SOME_SIG: &str = "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";

fn vector(name: &str) -> PathBuf {
    fixtures().join("vectors").join(name)
}

/// The fixtures' real key, as `$(cat fixtures/keys/customer.key)` gives it.
fn fixture_key_text() -> String {
    std::fs::read_to_string(fixtures().join("keys/customer.key"))
        .unwrap()
        .trim_end_matches('\n')
        .to_owned()
}

/// No 8-character piece of `secret` appears in `text`.
fn assert_no_piece_of(secret: &str, text: &str) {
    for piece in secret.as_bytes().windows(8) {
        let piece = std::str::from_utf8(piece).unwrap();
        assert!(
            !text.contains(piece),
            "{piece:?} of the secret shown in {text:?}"
        );
    }
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

// ---- item 1: a key or secret given as a path ----

const KEY_FLAG_ERROR: &str = "error: --key-file names no key file, and its value looks like the \
     key itself, not a path (so it is not shown)\nhint: --key-file is the path of a file holding \
     the key; to give the key itself, set CIPHERSTREAM_KEY instead (a command-line value can be \
     seen by other users of this machine while the command runs)\n";

const KEY_ENV_ERROR: &str = "error: CIPHERSTREAM_KEY_FILE names no key file, and its value looks \
     like the key itself, not a path (so it is not shown)\nhint: CIPHERSTREAM_KEY_FILE is the path \
     of a file holding the key; to give the key itself, set CIPHERSTREAM_KEY instead\n";

#[test]
fn a_key_given_as_the_key_file_is_never_echoed() {
    // The fixtures' key (with a `+`), one with `/` (a directory that does not exist), and the
    // fixtures' key as `$(cat)` gives it from a file saved with CRLF.
    let fixture = fixture_key_text();
    for key in [
        fixture.clone(),
        "Wj34nae/I9cexj8RHZFxw/BQRzgKF4EvICSOY8/e1Ps=".to_owned(),
        format!("{fixture}\r"),
    ] {
        for verb in ["decrypt", "verify"] {
            let out = cipherstream()
                .arg(verb)
                .arg(vector("plain.ndjson"))
                .args(["--customer-id", VEC_ID, "--key-file", &key])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{verb} {key:?}");
            assert_eq!(stderr_of(&out), KEY_FLAG_ERROR, "{verb} {key:?}");
            assert!(out.stdout.is_empty());

            let out = cipherstream()
                .arg(verb)
                .arg(vector("plain.ndjson"))
                .args(["--customer-id", VEC_ID])
                .env("CIPHERSTREAM_KEY_FILE", &key)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(2), "{verb} {key:?}");
            assert_eq!(stderr_of(&out), KEY_ENV_ERROR, "{verb} {key:?}");
            assert_no_piece_of(key.trim(), &stderr_of(&out));
        }
    }
    // encrypt reads its key the same way.
    let dir = tempfile::tempdir().unwrap();
    let out = cipherstream()
        .arg("encrypt")
        .arg(fixtures().join("demo/expected.ndjson"))
        .args(["--customer-id", VEC_ID, "--key-file", &fixture, "-o"])
        .arg(dir.path().join("x.zip"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr_of(&out), KEY_FLAG_ERROR);
}

#[test]
fn a_key_file_that_is_missing_is_still_named() {
    for missing in ["missing.key", "/nonexistent/customer.key", "keys/prod-2024"] {
        let out = cipherstream()
            .arg("verify")
            .arg(vector("plain.ndjson"))
            .args(["--customer-id", VEC_ID, "--key-file", missing])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{missing}");
        assert_eq!(
            stderr_of(&out),
            format!("error: cannot open key file {missing}: No such file or directory\n")
        );
    }
    // A file whose name looks like a key, but that exists, is read as the key file it is.
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let named = dir.path().join(fixture_key_text());
    std::fs::rename(&key, &named).unwrap();
    let out = cipherstream()
        .current_dir(dir.path())
        .arg("verify")
        .arg(vector("plain.ndjson"))
        .args(["--customer-id", VEC_ID, "--key-file"])
        .arg(named.file_name().unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}

#[test]
fn a_webhook_secret_given_as_the_secret_file_is_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let body = private_file(dir.path(), "body.json", r#"{"event":"job.progress"}"#);
    let error = "error: --secret-file names no webhook secret file, and its value looks like the \
         webhook secret itself, not a path (so it is not shown)\nhint: --secret-file is the path \
         of a file holding the webhook secret; to give the webhook secret itself, set \
         CIPHERSTREAM_WEBHOOK_SECRET instead (a command-line value can be seen by other users of \
         this machine while the command runs)\n";
    let out = cipherstream()
        .args(["webhook", "verify", "--signature", SOME_SIG])
        .args(["--secret-file", SECRET])
        .arg(&body)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr_of(&out), error);
    let out = cipherstream()
        .args(["webhook", "sign", "--secret-file", SECRET])
        .arg(&body)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr_of(&out), error);
    assert!(out.stdout.is_empty());

    // During a rotation the missing "file" is skipped as a removed one is, but its name is not
    // shown in the warning.
    let good = private_file(dir.path(), "new.secret", "whsec_other_9c1e\n");
    let sign = cipherstream()
        .args(["webhook", "sign", "--secret-file"])
        .arg(&good)
        .arg(&body)
        .output()
        .unwrap();
    assert_eq!(sign.status.code(), Some(0));
    let signature = String::from_utf8(sign.stdout).unwrap();
    let out = cipherstream()
        .args(["webhook", "verify", "--no-timestamp-check"])
        .args(["--signature", signature.trim()])
        .arg("--secret-file")
        .arg(&good)
        .args(["--secret-file", SECRET])
        .arg(&body)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(
        stderr_of(&out),
        "warning: a --secret-file names no file and looks like a webhook secret itself (not \
         shown): it takes the path of a file holding the secret, and the secret's text belongs \
         in CIPHERSTREAM_WEBHOOK_SECRET; trying the other one\n"
    );
    assert_no_piece_of(SECRET, &stderr_of(&out));
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

// ---- item 3: bounded reads before authentication ----

/// Run `cipherstream` with `args` under a 256 MiB address-space limit (reading all of
/// `/dev/zero` would fail to allocate, not exit 1), killing it after 60 s: (exit status, stderr,
/// seconds taken).
#[cfg(unix)]
fn run_bounded(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, f64) {
    let mut child = StdCommand::new("sh")
        .arg("-c")
        .arg("ulimit -v 262144 && exec \"$@\"")
        .arg("sh")
        .arg(assert_cmd::cargo::cargo_bin("cipherstream"))
        .args(args)
        .env_remove("CIPHERSTREAM_WEBHOOK_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed().as_secs_f64();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stderr).unwrap(),
        took,
    )
}

#[cfg(unix)]
#[test]
fn an_endless_webhook_body_fails_fast_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let secret = private_file(dir.path(), "s", SECRET);
    let os = |s: &str| std::ffi::OsString::from(s);
    let args = [
        os("webhook"),
        os("verify"),
        os("--signature"),
        os(SOME_SIG),
        os("--secret-file"),
        secret.clone().into_os_string(),
        os("/dev/zero"),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (code, stderr, took) = run_bounded(&args);
    assert_eq!(
        (code, stderr.as_str()),
        (
            Some(1),
            "error: /dev/zero: larger than the limit of 1048576 bytes for a webhook body; nothing \
             was checked\nhint: a CipherStream webhook body is a few KiB, so this is probably \
             not one; if it is, raise the limit with --max-body-bytes BYTES\n"
        )
    );
    assert!(took < 20.0, "took {took:.1}s");

    // --expect-rows-from reads a body before any row: the same bound.
    let args = [
        os("verify"),
        vector("plain.ndjson").into_os_string(),
        os("--customer-id"),
        os(VEC_ID),
        os("--expect-rows-from"),
        os("/dev/zero"),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (code, stderr, took) = run_bounded(&args);
    assert_eq!(
        (code, stderr.as_str()),
        (
            Some(1),
            "error: /dev/zero: larger than the limit of 1048576 bytes for a webhook body; nothing \
             was checked\nhint: a CipherStream webhook body is a few KiB, so this is probably \
             not one; if it is, give the row count with --expect-rows N instead\n"
        )
    );
    assert!(took < 20.0, "took {took:.1}s");
}

#[test]
fn a_webhook_body_just_over_the_limit_is_refused_and_one_at_it_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let secret = private_file(dir.path(), "s", SECRET);
    // A JSON object of exactly `len` bytes.
    let body_of = |len: usize| {
        let mut body = br#"{"pad":""#.to_vec();
        body.resize(len - 2, b'x');
        body.extend_from_slice(b"\"}");
        body
    };
    let sign = |body: &Path, limit: &str| {
        cipherstream()
            .args([
                "webhook",
                "sign",
                "--max-body-bytes",
                limit,
                "--secret-file",
            ])
            .arg(&secret)
            .arg(body)
            .output()
            .unwrap()
    };
    let verify = |body: &Path, signature: &str, limit: Option<&str>| {
        let mut cmd = cipherstream();
        cmd.args(["webhook", "verify", "--no-timestamp-check", "--signature"])
            .arg(signature)
            .arg("--secret-file")
            .arg(&secret);
        if let Some(limit) = limit {
            cmd.args(["--max-body-bytes", limit]);
        }
        cmd.arg(body).output().unwrap()
    };
    // The default limit, 1 MiB: a body of exactly that verifies, one byte more does not.
    let at = dir.path().join("at.json");
    std::fs::write(&at, body_of(1 << 20)).unwrap();
    let signed = sign(&at, "1048576");
    assert_eq!(signed.status.code(), Some(0));
    let signature = String::from_utf8(signed.stdout).unwrap();
    let out = verify(&at, signature.trim(), None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(out.stdout.len(), 1 << 20);

    let over = dir.path().join("over.json");
    std::fs::write(&over, body_of((1 << 20) + 1)).unwrap();
    let out = verify(&over, SOME_SIG, None);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr_of(&out),
        format!(
            "error: {}: larger than the limit of 1048576 bytes for a webhook body; nothing was \
             checked\nhint: a CipherStream webhook body is a few KiB, so this is probably not \
             one; if it is, raise the limit with --max-body-bytes BYTES\n",
            over.display()
        )
    );
    // The flag raises it; sign has the same limit.
    let signed = sign(&over, "2000000");
    assert_eq!(signed.status.code(), Some(0));
    let signature = String::from_utf8(signed.stdout).unwrap();
    let out = verify(&over, signature.trim(), Some("2000000"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let out = sign(&over, "1048576");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("larger than the limit of 1048576 bytes"));

    // A stream (standard input) just over a small limit: refused the same way.
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("cipherstream"))
        .args([
            "webhook",
            "verify",
            "--max-body-bytes",
            "100",
            "--signature",
        ])
        .arg(SOME_SIG)
        .arg("--secret-file")
        .arg(&secret)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(&body_of(101));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).starts_with(
            "error: <stdin>: larger than the limit of 100 bytes for a webhook body; nothing was \
             checked\n"
        ),
        "{}",
        stderr_of(&out)
    );
}

// ---- item 11: invisible characters in the customer id ----

#[test]
fn invisible_characters_in_the_customer_id_are_named_on_row_0() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let input = vector("plain.ndjson");
    let run = |customer: Option<&str>, env: Option<&str>| {
        let mut cmd = cipherstream();
        cmd.arg("decrypt").arg(&input).arg("--key-file").arg(&key);
        if let Some(id) = customer {
            cmd.args(["--customer-id", id]);
        }
        if let Some(id) = env {
            cmd.env("CIPHERSTREAM_CUSTOMER_ID", id);
        }
        cmd.output().unwrap()
    };
    let hint = |shown: &str, what: &str| {
        format!(
            "error: {}: row 0: authentication failed\nhint: the customer id {shown} {what}, and \
             every character of it is bound into each row's AAD: remove it (a Windows line \
             ending or a stray space in an env file is the usual cause); if it belongs there, the \
             key is wrong\n",
            input.display()
        )
    };
    let out = run(None, Some("cust_4f9a2c71\r"));
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr_of(&out),
        hint(
            "\"cust_4f9a2c71\\r\"",
            "ends with a carriage return (U+000D)"
        )
    );
    let out = run(Some("cust_4f9a2c71 "), None);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stderr_of(&out),
        hint("\"cust_4f9a2c71 \"", "ends with a space (U+0020)")
    );
    let out = run(Some("\u{feff}cust_4f9a2c71"), None);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stderr_of(&out),
        hint(
            "\"\\u{feff}cust_4f9a2c71\"",
            "starts with a byte order mark (U+FEFF)"
        )
    );
    // A customer id that is simply wrong keeps the usual hint.
    let out = run(Some("cust_other"), None);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stderr_of(&out),
        format!(
            "error: {}: row 0: authentication failed\nhint: row 0 fails at every nearby index: \
             the key or the --customer-id is wrong (the two look the same)\n",
            input.display()
        )
    );
}
