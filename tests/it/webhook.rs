//! `cipherstream webhook verify|sign` end to end: exit statuses, messages, the body passed through
//! byte for byte, secret rotation, timestamps, and the seen-file under concurrent verifiers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;

const BIN: &str = env!("CARGO_BIN_EXE_cipherstream");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/webhook");

// The expected signatures below are the output of `python3 tests/data/webhook/vectors.py`, an
// independent implementation using Python's `hmac` module:
//   hmac.new(SECRET_NEW.encode("utf-8"), open(body, "rb").read(), hashlib.sha256).hexdigest()
const SECRET_NEW: &str = "whsec_7f3c9a1e5b2d4068";
const SECRET_OLD: &str = "whsec_old_2f8e1c7a";
const SIG_COMPLETED: &str =
    "sha256=1211158e3c81cdeddda0da99e907946f0c9d6a681ad5cc23fcdf60d4cb51ca06";
const SIG_NO_DELIVERY_ID: &str =
    "sha256=b16142d56b0295f66105021ee73e25fcf21f338c43c816605165539937887d1f";
const SIG_NO_TIMESTAMP: &str =
    "sha256=30bad32a8fc15630cb17800af3651b778bf7ac44d94876b4859c9041b19609f1";
const SIG_NOT_JSON: &str =
    "sha256=fe9ed946b2d980c44243db9fff83b762372314649b9198d01364b8644864741e";
/// completed.json's "timestamp" 2024-09-26T10:02:15Z in Unix seconds (`calendar.timegm`).
const TS_COMPLETED: i64 = 1_727_344_935;
/// completed.json's "delivery_id".
const DELIVERY_ID: &str = "del_1758630144658";

fn body_path(name: &str) -> PathBuf {
    Path::new(DATA).join(name)
}

fn completed() -> Vec<u8> {
    fs::read(body_path("completed.json")).unwrap()
}

/// A temporary directory holding the new and old secrets, each in a mode-0600 file with
/// surrounding whitespace (which must be ignored).
struct Secrets {
    dir: tempfile::TempDir,
    new: PathBuf,
    old: PathBuf,
}

fn secrets() -> Secrets {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, secret: &str| {
        let path = dir.path().join(name);
        fs::write(&path, format!("  {secret}\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        path
    };
    let new = write("new.secret", SECRET_NEW);
    let old = write("old.secret", SECRET_OLD);
    Secrets { dir, new, old }
}

/// The binary with no inherited secret or clock override, and "now" set to `now`.
fn cipherstream_at(now: i64) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("CIPHERSTREAM_WEBHOOK_SECRET")
        .env("CIPHERSTREAM_NOW", now.to_string());
    cmd
}

/// `webhook verify` of completed.json with the new secret, at the body's own timestamp.
fn verify_completed(s: &Secrets, signature: &str) -> Command {
    let mut cmd = cipherstream_at(TS_COMPLETED);
    cmd.args([
        "webhook",
        "verify",
        "--signature",
        signature,
        "--secret-file",
    ])
    .arg(&s.new)
    .arg(body_path("completed.json"));
    cmd
}

#[test]
fn valid_signature_passes_the_body_through_byte_for_byte() {
    let s = secrets();
    verify_completed(&s, SIG_COMPLETED)
        .assert()
        .success()
        .stdout(completed())
        .stderr("");
}

#[test]
fn body_from_standard_input() {
    let s = secrets();
    cipherstream_at(TS_COMPLETED)
        .args([
            "webhook",
            "verify",
            "--signature",
            SIG_COMPLETED,
            "--secret-file",
        ])
        .arg(&s.new)
        .arg("-")
        .write_stdin(completed())
        .assert()
        .success()
        .stdout(completed());
    // No BODY at all also means standard input.
    cipherstream_at(TS_COMPLETED)
        .args([
            "webhook",
            "verify",
            "--signature",
            SIG_COMPLETED,
            "--secret-file",
        ])
        .arg(&s.new)
        .write_stdin(completed())
        .assert()
        .success()
        .stdout(completed());
}

#[test]
fn wrong_signature_exits_3_says_why_and_reveals_nothing() {
    let s = secrets();
    let wrong = "sha256=1211158e3c81cdeddda0da99e907946f0c9d6a681ad5cc23fcdf60d4cb51ca07";
    let out = verify_completed(&s, wrong)
        .assert()
        .code(3)
        .stdout("")
        .stderr(contains(
            "webhook signature does not match the body (tried 1 secret:",
        ))
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        !stderr.contains(&SIG_COMPLETED[7..]),
        "expected signature leaked: {stderr}"
    );
    assert!(!stderr.contains(SECRET_NEW), "secret leaked: {stderr}");
}

#[test]
fn a_tampered_body_fails() {
    let s = secrets();
    let tampered = String::from_utf8(completed())
        .unwrap()
        .replace("45678", "45679");
    cipherstream_at(TS_COMPLETED)
        .args([
            "webhook",
            "verify",
            "--signature",
            SIG_COMPLETED,
            "--secret-file",
        ])
        .arg(&s.new)
        .write_stdin(tampered)
        .assert()
        .code(3)
        .stdout("")
        .stderr(contains("<stdin>: webhook signature does not match"));
}

#[test]
fn uppercase_hex_and_a_missing_prefix_are_accepted() {
    let s = secrets();
    let hex = &SIG_COMPLETED[7..];
    for sig in [
        hex.to_owned(),
        hex.to_uppercase(),
        format!("sha256={}", hex.to_uppercase()),
    ] {
        verify_completed(&s, &sig)
            .assert()
            .success()
            .stdout(completed());
    }
}

#[test]
fn malformed_signature_is_a_clear_error() {
    let s = secrets();
    for sig in [
        &SIG_COMPLETED[..70],
        "sha1=abc",
        "sha256=zz11158e3c81cdeddda0da99e907946f0c9d6a681ad5cc23fcdf60d4cb51ca06",
    ] {
        verify_completed(&s, sig)
            .assert()
            .code(3)
            .stdout("")
            .stderr(contains("--signature is malformed").and(contains("64 hex digits")));
    }
}

#[test]
fn a_removed_secret_file_after_rotation_is_skipped_with_a_warning() {
    let s = secrets();
    let gone = s.dir.path().join("gone.secret");
    // The old file is gone, the new one matches: verified, and the configuration is flagged.
    cipherstream_at(TS_COMPLETED)
        .args(["webhook", "verify", "--signature", SIG_COMPLETED])
        .arg("--secret-file")
        .arg(&s.new)
        .arg("--secret-file")
        .arg(&gone)
        .arg(body_path("completed.json"))
        .assert()
        .success()
        .stdout(completed())
        .stderr(format!(
            "warning: the webhook secret file {} does not exist; trying the other one\n",
            gone.display()
        ));
    // The remaining secret does not match: a failure that counts only the secret tried.
    cipherstream_at(TS_COMPLETED)
        .args(["webhook", "verify", "--signature", SIG_COMPLETED])
        .arg("--secret-file")
        .arg(&gone)
        .arg("--secret-file")
        .arg(&s.old)
        .arg(body_path("completed.json"))
        .assert()
        .code(3)
        .stderr(contains("tried 1 secret: webhook secret file"));
    // Every file missing is still an error naming the file.
    cipherstream_at(TS_COMPLETED)
        .args(["webhook", "verify", "--signature", SIG_COMPLETED])
        .arg("--secret-file")
        .arg(&gone)
        .arg(body_path("completed.json"))
        .assert()
        .code(1)
        .stdout("")
        .stderr(contains(format!(
            "cannot open webhook secret file {}",
            gone.display()
        )));
}

#[test]
fn rotation_any_one_secret_may_match() {
    let s = secrets();
    // Only the second secret matches.
    cipherstream_at(TS_COMPLETED)
        .args(["webhook", "verify", "--signature", SIG_COMPLETED])
        .arg("--secret-file")
        .arg(&s.old)
        .arg("--secret-file")
        .arg(&s.new)
        .arg(body_path("completed.json"))
        .assert()
        .success()
        .stdout(completed());
    // The old secret alone does not.
    cipherstream_at(TS_COMPLETED)
        .args([
            "webhook",
            "verify",
            "--signature",
            SIG_COMPLETED,
            "--secret-file",
        ])
        .arg(&s.old)
        .arg(body_path("completed.json"))
        .assert()
        .code(3)
        .stderr(contains("tried 1 secret: webhook secret file"));
    // A failure names how many secrets were tried, never their contents.
    let out = cipherstream_at(TS_COMPLETED)
        .args(["webhook", "verify", "--signature", &SIG_NOT_JSON[7..]])
        .arg("--secret-file")
        .arg(&s.old)
        .arg("--secret-file")
        .arg(&s.new)
        .arg(body_path("completed.json"))
        .assert()
        .code(3)
        .stderr(contains("tried 2 secrets"))
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        !stderr.contains(SECRET_NEW) && !stderr.contains(SECRET_OLD),
        "{stderr}"
    );
}

#[test]
fn secret_from_the_environment() {
    cipherstream_at(TS_COMPLETED)
        .env("CIPHERSTREAM_WEBHOOK_SECRET", format!("{SECRET_NEW}\n"))
        .args(["webhook", "verify", "--signature", SIG_COMPLETED])
        .arg(body_path("completed.json"))
        .assert()
        .success()
        .stdout(completed());
    cipherstream_at(TS_COMPLETED)
        .env("CIPHERSTREAM_WEBHOOK_SECRET", SECRET_OLD)
        .args(["webhook", "verify", "--signature", SIG_COMPLETED])
        .arg(body_path("completed.json"))
        .assert()
        .code(3)
        .stderr(
            contains("tried 1 secret: CIPHERSTREAM_WEBHOOK_SECRET").and(contains(SECRET_OLD).not()),
        );
}

#[test]
fn missing_secret_is_a_usage_error() {
    cipherstream_at(TS_COMPLETED)
        .args(["webhook", "verify", "--signature", SIG_COMPLETED])
        .arg(body_path("completed.json"))
        .assert()
        .code(2)
        .stdout("")
        .stderr(contains("no webhook secret given"));
    cipherstream_at(TS_COMPLETED)
        .args(["webhook", "sign"])
        .arg(body_path("completed.json"))
        .assert()
        .code(2)
        .stdout("")
        .stderr(contains("no webhook secret given"));
}

#[test]
fn timestamp_window_is_inclusive_at_the_default_300_seconds() {
    let s = secrets();
    for now in [TS_COMPLETED - 300, TS_COMPLETED + 300] {
        let mut cmd = verify_completed(&s, SIG_COMPLETED);
        cmd.env("CIPHERSTREAM_NOW", now.to_string())
            .assert()
            .success()
            .stdout(completed());
    }
}

#[test]
fn stale_timestamp_exits_3_naming_the_timestamp() {
    let s = secrets();
    let mut cmd = verify_completed(&s, SIG_COMPLETED);
    cmd.env("CIPHERSTREAM_NOW", (TS_COMPLETED + 301).to_string())
        .assert()
        .code(3)
        .stdout("")
        .stderr(contains(
            "webhook timestamp \"2024-09-26T10:02:15Z\" is too old: 301 seconds before now \
             (tolerance 300 seconds)",
        ));
}

#[test]
fn future_timestamp_exits_3() {
    let s = secrets();
    let mut cmd = verify_completed(&s, SIG_COMPLETED);
    cmd.env("CIPHERSTREAM_NOW", (TS_COMPLETED - 400).to_string())
        .assert()
        .code(3)
        .stdout("")
        .stderr(contains(
            "is in the future by 400 seconds (tolerance 300 seconds)",
        ));
}

#[test]
fn tolerance_flag_sets_the_window() {
    let s = secrets();
    let now = (TS_COMPLETED + 1000).to_string();
    let mut cmd = verify_completed(&s, SIG_COMPLETED);
    cmd.env("CIPHERSTREAM_NOW", &now)
        .args(["--tolerance", "1000"])
        .assert()
        .success();
    let mut cmd = verify_completed(&s, SIG_COMPLETED);
    cmd.env("CIPHERSTREAM_NOW", &now)
        .args(["--tolerance", "999"])
        .assert()
        .code(3)
        .stderr(contains("too old: 1000 seconds"));
}

#[test]
fn the_real_clock_rejects_a_2024_body_unless_the_check_is_off() {
    let s = secrets();
    let mut cmd = verify_completed(&s, SIG_COMPLETED);
    cmd.env_remove("CIPHERSTREAM_NOW")
        .assert()
        .code(3)
        .stderr(contains("is too old"));
    let mut cmd = verify_completed(&s, SIG_COMPLETED);
    cmd.env_remove("CIPHERSTREAM_NOW")
        .arg("--no-timestamp-check")
        .assert()
        .success()
        .stdout(completed());
}

#[test]
fn no_timestamp_check_replays_a_saved_payload() {
    let s = secrets();
    let mut cmd = verify_completed(&s, SIG_COMPLETED);
    cmd.env(
        "CIPHERSTREAM_NOW",
        (TS_COMPLETED + 86_400 * 365).to_string(),
    )
    .arg("--no-timestamp-check")
    .assert()
    .success()
    .stdout(completed());
    // The signature is still checked.
    let mut cmd = verify_completed(&s, &SIG_NOT_JSON[7..]);
    cmd.arg("--no-timestamp-check").assert().code(3);
}

#[test]
fn a_body_that_is_not_json_exits_1_but_only_once_it_is_authentic() {
    let s = secrets();
    let run = |sig: &str| {
        let mut cmd = cipherstream_at(TS_COMPLETED);
        cmd.args(["webhook", "verify", "--signature", sig, "--secret-file"])
            .arg(&s.new)
            .arg(body_path("not-json.txt"));
        cmd
    };
    run(SIG_NOT_JSON)
        .assert()
        .code(1)
        .stdout("")
        .stderr(contains("the signature verified, but the body is not JSON"));
    run(SIG_COMPLETED)
        .assert()
        .code(3)
        .stderr(contains("signature does not match"));
}

#[test]
fn a_body_without_timestamp_exits_1() {
    let s = secrets();
    let run = || {
        let mut cmd = cipherstream_at(TS_COMPLETED);
        cmd.args([
            "webhook",
            "verify",
            "--signature",
            SIG_NO_TIMESTAMP,
            "--secret-file",
        ])
        .arg(&s.new)
        .arg(body_path("no-timestamp.json"));
        cmd
    };
    run()
        .assert()
        .code(1)
        .stdout("")
        .stderr(contains("has no \"timestamp\" field"));
    run().arg("--no-timestamp-check").assert().success();
}

#[test]
fn an_added_newline_gets_a_precise_hint() {
    let s = secrets();
    let mut body = completed();
    body.push(b'\n');
    cipherstream_at(TS_COMPLETED)
        .args([
            "webhook",
            "verify",
            "--signature",
            SIG_COMPLETED,
            "--secret-file",
        ])
        .arg(&s.new)
        .write_stdin(body)
        .assert()
        .code(3)
        .stderr(contains(
            "hint: the signature matches the body WITHOUT its final newline",
        ));
}

#[test]
fn seen_file_accepts_a_delivery_once() {
    let s = secrets();
    let seen = s.dir.path().join("seen");
    verify_completed(&s, SIG_COMPLETED)
        .arg("--seen-file")
        .arg(&seen)
        .assert()
        .success()
        .stdout(completed());
    assert_eq!(
        fs::read_to_string(&seen).unwrap(),
        format!("{DELIVERY_ID}\n")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&seen).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    verify_completed(&s, SIG_COMPLETED)
        .arg("--seen-file")
        .arg(&seen)
        .assert()
        .code(4)
        .stdout("")
        .stderr(contains("duplicate delivery").and(contains(DELIVERY_ID)));
    assert_eq!(
        fs::read_to_string(&seen).unwrap(),
        format!("{DELIVERY_ID}\n")
    );
}

#[test]
fn seen_file_records_only_verified_deliveries() {
    let s = secrets();
    let seen = s.dir.path().join("seen");
    // A bad signature and a stale timestamp both fail before anything is recorded...
    verify_completed(&s, &SIG_NOT_JSON[7..])
        .arg("--seen-file")
        .arg(&seen)
        .assert()
        .code(3);
    let mut stale = verify_completed(&s, SIG_COMPLETED);
    stale.env("CIPHERSTREAM_NOW", (TS_COMPLETED + 3600).to_string());
    stale.arg("--seen-file").arg(&seen).assert().code(3);
    assert!(!seen.exists());
    // ...so the genuine delivery is still accepted.
    verify_completed(&s, SIG_COMPLETED)
        .arg("--seen-file")
        .arg(&seen)
        .assert()
        .success();
}

#[test]
fn seen_file_needs_a_delivery_id() {
    let s = secrets();
    let seen = s.dir.path().join("seen");
    cipherstream_at(TS_COMPLETED)
        .args([
            "webhook",
            "verify",
            "--signature",
            SIG_NO_DELIVERY_ID,
            "--secret-file",
        ])
        .arg(&s.new)
        .arg("--seen-file")
        .arg(&seen)
        .arg(body_path("no-delivery-id.json"))
        .assert()
        .code(1)
        .stdout("")
        .stderr(contains("has no \"delivery_id\" field"));
    // Without --seen-file the delivery id is not needed.
    cipherstream_at(TS_COMPLETED)
        .args([
            "webhook",
            "verify",
            "--signature",
            SIG_NO_DELIVERY_ID,
            "--secret-file",
        ])
        .arg(&s.new)
        .arg(body_path("no-delivery-id.json"))
        .assert()
        .success();
}

#[test]
fn concurrent_verifiers_accept_a_delivery_exactly_once() {
    const PROCESSES: usize = 8;
    let s = secrets();
    // A seen-file with a long history makes each verifier's read take a while, which widens the
    // window in which verifiers without a lock would all miss each other's append.
    let history: String = (0..200_000)
        .map(|i| format!("del_history_{i:012}\n"))
        .collect();
    for round in 0..3 {
        let seen = s.dir.path().join(format!("seen-{round}"));
        fs::write(&seen, &history).unwrap();
        let children: Vec<_> = (0..PROCESSES)
            .map(|_| {
                std::process::Command::new(BIN)
                    .env_remove("CIPHERSTREAM_WEBHOOK_SECRET")
                    .env("CIPHERSTREAM_NOW", TS_COMPLETED.to_string())
                    .args([
                        "webhook",
                        "verify",
                        "--signature",
                        SIG_COMPLETED,
                        "--secret-file",
                    ])
                    .arg(&s.new)
                    .arg("--seen-file")
                    .arg(&seen)
                    .arg(body_path("completed.json"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outputs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let codes: Vec<_> = outputs.iter().map(|o| o.status.code()).collect();
        let accepted = codes.iter().filter(|&&c| c == Some(0)).count();
        let duplicates = codes.iter().filter(|&&c| c == Some(4)).count();
        assert_eq!(
            (accepted, duplicates),
            (1, PROCESSES - 1),
            "round {round}: {codes:?}"
        );
        let printed: Vec<_> = outputs.iter().filter(|o| !o.stdout.is_empty()).collect();
        assert_eq!(printed.len(), 1);
        assert_eq!(printed[0].stdout, completed());
        let recorded = fs::read_to_string(&seen).unwrap();
        assert_eq!(
            recorded.strip_prefix(history.as_str()),
            Some(format!("{DELIVERY_ID}\n").as_str())
        );
    }
}

#[test]
fn sign_prints_what_python_computes() {
    let s = secrets();
    for (body, want) in [
        ("completed.json", SIG_COMPLETED),
        ("not-json.txt", SIG_NOT_JSON),
        ("no-timestamp.json", SIG_NO_TIMESTAMP),
    ] {
        Command::new(BIN)
            .env_remove("CIPHERSTREAM_WEBHOOK_SECRET")
            .args(["webhook", "sign", "--secret-file"])
            .arg(&s.new)
            .arg(body_path(body))
            .assert()
            .success()
            .stdout(format!("{want}\n"))
            .stderr("");
    }
    // Standard input, secret from the environment.
    Command::new(BIN)
        .env("CIPHERSTREAM_WEBHOOK_SECRET", SECRET_NEW)
        .args(["webhook", "sign"])
        .write_stdin(completed())
        .assert()
        .success()
        .stdout(format!("{SIG_COMPLETED}\n"));
}

#[test]
fn sign_then_verify_round_trips() {
    let s = secrets();
    let body =
        br#"{"event":"job.progress","timestamp":"2024-09-26T10:00:00+00:00","delivery_id":"x"}"#;
    let out = Command::new(BIN)
        .args(["webhook", "sign", "--secret-file"])
        .arg(&s.old)
        .write_stdin(&body[..])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let sig = String::from_utf8(out).unwrap();
    cipherstream_at(TS_COMPLETED - 135)
        .args([
            "webhook",
            "verify",
            "--signature",
            sig.trim(),
            "--secret-file",
        ])
        .arg(&s.old)
        .write_stdin(&body[..])
        .assert()
        .success()
        .stdout(&body[..]);
}

#[test]
fn an_empty_secret_file_is_refused() {
    let s = secrets();
    let empty = s.dir.path().join("empty.secret");
    fs::write(&empty, " \n").unwrap();
    Command::new(BIN)
        .args(["webhook", "sign", "--secret-file"])
        .arg(&empty)
        .write_stdin("{}")
        .assert()
        .code(1)
        .stdout("")
        .stderr(contains("is empty"));
}
