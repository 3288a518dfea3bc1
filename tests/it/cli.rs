//! Command-line contract: help text, usage errors, key sources, several inputs, broken pipes.

use crate::util::{cipherstream, fixtures, private_key};

const DEMO_ZIP: &str = "demo/appointments_1758630144658_c7511999.zip";
const DEMO_ID: &str = "cust_demo_123";

#[test]
fn help_lists_exit_codes() {
    // Fixed width, so the snapshot does not depend on the terminal running the tests.
    let out = cipherstream()
        .args(["decrypt", "--help"])
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    insta::assert_snapshot!("decrypt_help", help);
    let out = cipherstream()
        .arg("--help")
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    insta::assert_snapshot!("top_help", String::from_utf8(out.stdout).unwrap());
}

#[test]
fn key_on_the_command_line_is_refused() {
    let out = cipherstream()
        .args(["decrypt", "--customer-id", "c", "--key", "AAAA"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn key_and_customer_from_environment() {
    let key = std::fs::read_to_string(fixtures().join("demo/demo.key")).unwrap();
    let expected = std::fs::read(fixtures().join("demo/expected.ndjson")).unwrap();
    let out = cipherstream()
        .arg("decrypt")
        .arg(fixtures().join(DEMO_ZIP))
        .env("CIPHERSTREAM_KEY", key.trim())
        .env("CIPHERSTREAM_CUSTOMER_ID", DEMO_ID)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, expected);
    assert!(out.stderr.is_empty());
}

#[test]
fn key_file_env_wins_over_key_env_and_loose_mode_warns() {
    let expected = std::fs::read(fixtures().join("demo/expected.ndjson")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::copy(fixtures().join("demo/demo.key"), &key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = cipherstream()
        .arg("decrypt")
        .arg(fixtures().join(DEMO_ZIP))
        .args(["--customer-id", DEMO_ID])
        .env("CIPHERSTREAM_KEY_FILE", &key)
        .env("CIPHERSTREAM_KEY", "bm90IHRoZSBrZXk=")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, expected);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "warning: key file {0} is readable by group or others (mode 0644); run: chmod 600 {0}\n",
            key.display()
        )
    );
}

#[test]
fn key_errors_never_echo_the_key() {
    let secret = "c2VjcmV0LWtleS1tYXRlcmlhbC10aGF0LWlzLXRvby1sb25nLWZvci1hZXM=";
    let out = cipherstream()
        .arg("decrypt")
        .arg(fixtures().join(DEMO_ZIP))
        .args(["--customer-id", DEMO_ID])
        .env("CIPHERSTREAM_KEY", secret)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with(
        "error: CIPHERSTREAM_KEY decodes to 44 bytes, but an AES-256 key needs exactly 32 bytes\n"
    ));
    assert!(!stderr.contains(secret) && !stderr.contains("secret-key"));
}

#[test]
fn missing_customer_id_is_a_usage_error() {
    let out = cipherstream().args(["decrypt", "x.zip"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: no customer id given: use --customer-id ID or set CIPHERSTREAM_CUSTOMER_ID\n\
         hint: run with --help for usage\n"
    );
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let out = cipherstream()
            .args(["decrypt", "x.zip"])
            .env(
                "CIPHERSTREAM_CUSTOMER_ID",
                std::ffi::OsStr::from_bytes(b"cust_\xff"),
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8(out.stderr).unwrap().starts_with(
            "error: CIPHERSTREAM_CUSTOMER_ID is not valid UTF-8; the customer id is text"
        ));
    }
}

fn demo(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "demo/demo.key");
    cipherstream()
        .arg("decrypt")
        .args(["--customer-id", DEMO_ID])
        .arg("--key-file")
        .arg(key)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn several_inputs_to_stdout_are_concatenated_in_order() {
    let zip = fixtures().join(DEMO_ZIP);
    let z = zip.to_str().unwrap();
    let out = demo(&[z, z]);
    assert_eq!(out.status.code(), Some(0));
    let one = std::fs::read(fixtures().join("demo/expected.ndjson")).unwrap();
    assert_eq!(out.stdout, [one.clone(), one].concat());
}

#[test]
fn output_dir_writes_each_and_keeps_going_past_a_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let zip = fixtures().join(DEMO_ZIP);
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(
        &bad,
        "{\"encrypted_data\":\"k:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA==\"}\n",
    )
    .unwrap();
    let other = dir.path().join("second.zip");
    std::fs::copy(&zip, &other).unwrap();
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    std::fs::write(outdir.join("bad.ndjson"), "old\n").unwrap();
    let out = demo(&[
        zip.to_str().unwrap(),
        bad.to_str().unwrap(),
        other.to_str().unwrap(),
        "--output-dir",
        outdir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("bad.ndjson: row 0: authentication failed"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("error: 1 of 3 inputs failed\n"),
        "{stderr}"
    );
    let expected = std::fs::read(fixtures().join("demo/expected.ndjson")).unwrap();
    let stem = "appointments_1758630144658_c7511999.ndjson";
    assert_eq!(std::fs::read(outdir.join(stem)).unwrap(), expected);
    assert_eq!(
        std::fs::read(outdir.join("second.ndjson")).unwrap(),
        expected
    );
    assert_eq!(std::fs::read(outdir.join("bad.ndjson")).unwrap(), b"old\n");
    assert_eq!(
        crate::util::entries(&outdir),
        [stem, "bad.ndjson", "second.ndjson"]
    );
}

#[test]
fn output_over_the_input_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("e.zip");
    std::fs::copy(fixtures().join(DEMO_ZIP), &zip).unwrap();
    let before = std::fs::read(&zip).unwrap();
    let out = demo(&[zip.to_str().unwrap(), "-o", zip.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("refusing to overwrite the export"));
    assert_eq!(std::fs::read(&zip).unwrap(), before);
}

#[test]
fn closed_stdout_is_quiet() {
    // A large export piped into a reader that stops at once.
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "demo/demo.key");
    let zip = fixtures().join(DEMO_ZIP);
    let zips: Vec<_> = std::iter::repeat_n(zip, 4000).collect();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("cipherstream"))
        .arg("decrypt")
        .args(["--customer-id", DEMO_ID, "--key-file"])
        .arg(&key)
        .args(&zips)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8(out.stderr).unwrap(), "");
}

#[test]
fn keygen_prints_fresh_32_byte_keys() {
    use base64::Engine;
    let a = cipherstream().arg("keygen").output().unwrap();
    let b = cipherstream().arg("keygen").output().unwrap();
    assert_eq!(a.status.code(), Some(0));
    let a = String::from_utf8(a.stdout).unwrap();
    let b = String::from_utf8(b.stdout).unwrap();
    assert_eq!(a.len(), 45, "44 base64 characters and a newline");
    assert!(a.ends_with('\n'));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(a.trim_end())
        .unwrap();
    assert_eq!(bytes.len(), 32);
    assert_ne!(a, b);
}

#[test]
fn keygen_file_is_private_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let out = cipherstream()
        .arg("keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty(), "the key goes only to the file");
    let first = std::fs::read(&key).unwrap();
    assert_eq!(first.len(), 45);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let out = cipherstream()
        .arg("keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("already exists"));
    assert_eq!(std::fs::read(&key).unwrap(), first);
}

#[test]
fn completions_and_man_page_come_from_the_clap_definitions() {
    for (shell, marker) in [
        ("bash", "_cipherstream()"),
        ("zsh", "#compdef cipherstream"),
        ("fish", "complete -c cipherstream"),
    ] {
        let out = cipherstream()
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(marker), "{shell}");
        for flag in [
            "--customer-id",
            "--key-file",
            "--expect-rows",
            "--seen-file",
        ] {
            assert!(
                text.contains(flag.trim_start_matches('-')),
                "{shell} lacks {flag}"
            );
        }
    }
    let out = cipherstream().arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let roff = String::from_utf8(out.stdout).unwrap();
    for page in [
        "cipherstream",
        "cipherstream-decrypt",
        "cipherstream-verify",
        "cipherstream-encrypt",
        "cipherstream-keygen",
        "cipherstream-webhook",
        "cipherstream-completions",
    ] {
        assert!(
            roff.contains(&format!(".TH {page} 1")),
            "no page for {page}"
        );
    }
    assert!(
        roff.contains("authentication failed"),
        "the exit statuses are in the man page"
    );
    // In a section of their own, one tagged paragraph per status, not under "EXTRA" with the
    // table's lines run together (issue 12, item 12).
    assert!(!roff.contains("EXTRA"), "{roff}");
    assert!(
        roff.contains(".SH \"EXIT STATUS\"\n.TP\n\\fB0\\fR\nsuccess\n.TP\n\\fB1\\fR\n"),
        "{roff}"
    );
    // --out-dir: one file per page, and every page the main one refers to is there.
    let dir = tempfile::tempdir().unwrap();
    let out = cipherstream()
        .args(["man", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    let mut pages = crate::util::entries(dir.path());
    pages.sort();
    assert_eq!(
        pages,
        [
            "cipherstream-completions.1",
            "cipherstream-decrypt.1",
            "cipherstream-encrypt.1",
            "cipherstream-fetch.1",
            "cipherstream-keygen.1",
            "cipherstream-man.1",
            "cipherstream-verify.1",
            "cipherstream-webhook-replay.1",
            "cipherstream-webhook-serve.1",
            "cipherstream-webhook-sign.1",
            "cipherstream-webhook-status.1",
            "cipherstream-webhook-verify.1",
            "cipherstream-webhook.1",
            "cipherstream.1",
        ]
    );
    for page in &pages {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert_eq!(text.matches(".TH ").count(), 1, "{page}");
        // The pages whose --help ends with the exit statuses.
        let with_statuses = [
            "cipherstream.1",
            "cipherstream-decrypt.1",
            "cipherstream-verify.1",
            "cipherstream-encrypt.1",
            "cipherstream-fetch.1",
            "cipherstream-webhook-verify.1",
            "cipherstream-webhook-serve.1",
            "cipherstream-webhook-replay.1",
        ]
        .contains(&page.as_str());
        assert_eq!(
            text.matches(".SH \"EXIT STATUS\"\n").count(),
            usize::from(with_statuses),
            "{page}"
        );
        // Every page referred to (`cipherstream\-decrypt(1)` in roff) is one of the files.
        for rest in text.split("cipherstream\\-").skip(1) {
            if let Some((name, _)) = rest.split_once("(1)") {
                let file = format!("cipherstream-{}.1", name.replace("\\-", "-"));
                assert!(
                    pages.contains(&file),
                    "{page} refers to {file}, which is missing"
                );
            }
        }
    }
}

#[test]
fn verify_json_reports_every_input_and_the_first_failure_status() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let good = fixtures().join("vectors/zip_deflated.zip");
    let bad = fixtures().join("vectors/auth_tag_flipped_row2.ndjson");
    let out = cipherstream()
        .args([
            "verify",
            "--json",
            "--customer-id",
            "cust_4f9a2c71",
            "--key-file",
        ])
        .arg(&key)
        .arg(&bad)
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["input"], bad.display().to_string());
    assert_eq!(lines[0]["ok"], false);
    assert_eq!(lines[0]["exit_code"], 3);
    assert_eq!(lines[0]["error"]["row"], 2);
    assert_eq!(
        lines[0]["error"]["message"],
        format!("{}: row 2: authentication failed", bad.display())
    );
    assert_eq!(lines[1]["input"], good.display().to_string());
    assert_eq!(lines[1]["ok"], true);
    assert_eq!(lines[1]["rows"], 7);
    assert_eq!(lines[1]["container"], "ZIP");
    assert_eq!(lines[1]["error"], serde_json::Value::Null);
    assert!(lines[1]["key_ids"].as_array().is_some_and(|k| k.len() == 1));
    // A failure has the same keys as a success.
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&lines[0]), keys(&lines[1]));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.ends_with("error: 1 of 2 inputs failed\n"),
        "{stderr}"
    );
}

/// Issue 12, item 7: with a malformed input (exit 1) and a tampered one (exit 3), the run exits 3
/// in either order, for `verify` and for `decrypt --output-dir`.
#[test]
fn several_failing_inputs_exit_with_the_most_severe_status_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let tampered = fixtures().join("vectors/auth_tag_flipped_row2.ndjson");
    let malformed = dir.path().join("malformed.ndjson");
    std::fs::write(&malformed, "{\"encrypted_data\":\"no colons here\"}\n").unwrap();
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    for order in [[&malformed, &tampered], [&tampered, &malformed]] {
        for decrypt in [false, true] {
            let mut cmd = cipherstream();
            cmd.arg(if decrypt { "decrypt" } else { "verify" })
                .args(["--customer-id", "cust_4f9a2c71", "--key-file"])
                .arg(&key)
                .args(order);
            if decrypt {
                cmd.arg("--output-dir").arg(&outdir);
            }
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8(out.stderr).unwrap();
            assert_eq!(
                out.status.code(),
                Some(3),
                "{order:?} decrypt={decrypt}: {stderr}"
            );
            assert!(stderr.contains("row 0: malformed line"), "{stderr}");
            assert!(stderr.contains("row 2: authentication failed"), "{stderr}");
            assert!(
                stderr.ends_with("error: 2 of 2 inputs failed\n"),
                "{stderr}"
            );
        }
    }
}

/// A webhook body or encrypt's plaintext is a file (or `-`), never a download: an argument that
/// looks like a URL is a path that is not found, not a request made without the download flags.
#[test]
fn only_decrypt_and_verify_take_urls() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "whsec_test_secret_1\n").unwrap();
    let url = "https://127.0.0.1:9/body.json";
    let out = cipherstream()
        .args(["webhook", "sign", "--secret-file"])
        .arg(&secret)
        .arg(url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "\nerror: cannot open {url}: No such file or directory\n"
        )),
        "{stderr}"
    );
}
