//! Faults and limits: huge rows, row-count checks, salvage, signals, full disks, progress on a
//! terminal.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use crate::util::{
    cipherstream, entries, fixtures, private_key, python_cryptography_available, sha256_hex,
    wait_until_writing,
};

const DEMO_ZIP: &str = "demo/appointments_1758630144658_c7511999.zip";
const DEMO_ID: &str = "cust_demo_123";
const VEC_ID: &str = "cust_4f9a2c71";

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("cipherstream")
}

fn vector(name: &str) -> PathBuf {
    fixtures().join("vectors").join(name)
}

#[test]
fn a_forty_mib_row_from_the_independent_generator() {
    if !python_cryptography_available("a_forty_mib_row_from_the_independent_generator") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = StdCommand::new("python3")
        .arg(fixtures().join("generate.py"))
        .arg("--large")
        .arg(dir.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    let vectors = manifest["vectors"].as_array().unwrap();
    assert!(!vectors.is_empty());
    for v in vectors {
        let key_file = v["key_file"].as_str().unwrap();
        let key = [dir.path().join(key_file), fixtures().join(key_file)]
            .into_iter()
            .find(|p| p.exists())
            .expect("the large vector's key file");
        let out = cipherstream()
            .arg("decrypt")
            .arg(dir.path().join(v["file"].as_str().unwrap()))
            .args([
                "--customer-id",
                v["customer_id"].as_str().unwrap(),
                "--key-file",
            ])
            .arg(&key)
            .args(["--threads", "2"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(v["exit_code"].as_i64().unwrap() as i32)
        );
        assert_eq!(out.stdout.len() as u64, v["stdout_len"].as_u64().unwrap());
        assert_eq!(
            sha256_hex(&out.stdout),
            v["stdout_sha256"].as_str().unwrap()
        );
        // The same export through a pipe on stdin, where the input's size is unknown and the
        // row arrives a pipe buffer at a time.
        let export = std::fs::read(dir.path().join(v["file"].as_str().unwrap())).unwrap();
        let mut child = StdCommand::new(bin())
            .args(["decrypt", "-", "--threads", "2", "--key-file"])
            .arg(&key)
            .args(["--customer-id", v["customer_id"].as_str().unwrap()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            for piece in export.chunks(100_000) {
                if stdin.write_all(piece).is_err() {
                    break;
                }
            }
        });
        let piped = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        assert_eq!(
            piped.status.code(),
            Some(v["exit_code"].as_i64().unwrap() as i32),
            "{}",
            String::from_utf8_lossy(&piped.stderr)
        );
        assert_eq!(
            sha256_hex(&piped.stdout),
            v["stdout_sha256"].as_str().unwrap()
        );
        // The same row with a limit below its size is a clear error naming the row, not an OOM.
        let out = cipherstream()
            .arg("decrypt")
            .arg(dir.path().join(v["file"].as_str().unwrap()))
            .args([
                "--customer-id",
                v["customer_id"].as_str().unwrap(),
                "--key-file",
            ])
            .arg(&key)
            .args(["--max-line-bytes", "1000000"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains(": row 3: line is longer than the limit of 1000000 bytes\n"),
            "{stderr}"
        );
    }
}

fn decrypt_vector(name: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    decrypt_file(&vector(name), &key, args)
}

/// Decrypt `input` with the vectors' customer id and `key`.
fn decrypt_file(
    input: &std::path::Path,
    key: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    cipherstream()
        .arg("decrypt")
        .arg(input)
        .args(["--customer-id", VEC_ID, "--key-file"])
        .arg(key)
        .args(args)
        .output()
        .unwrap()
}

/// The NDJSON inside `zip_stored.zip`: 7 rows, each ending in `\n`.
fn stored_vector_ndjson() -> Vec<u8> {
    use std::io::Read;
    let mut archive =
        zip::ZipArchive::new(std::fs::File::open(vector("zip_stored.zip")).unwrap()).unwrap();
    let mut plain = Vec::new();
    archive
        .by_index(0)
        .unwrap()
        .read_to_end(&mut plain)
        .unwrap();
    plain
}

#[test]
fn expect_rows_catches_truncation() {
    let out = decrypt_vector("truncated_last_two_rows.ndjson", &["--expect-rows", "7"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.ends_with(
        "truncated_last_two_rows.ndjson: expected 7 rows, found 5\nhint: 2 row(s) are missing from \
         the end: the download was probably cut short; download it again\n"
    ), "{stderr}");
    let out = decrypt_vector("truncated_last_two_rows.ndjson", &["--expect-rows", "5"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn expect_rows_from_a_webhook_body() {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("hook.json");
    std::fs::write(
        &body,
        r#"{"event":"job.completed","data":{"rows_processed":7}}"#,
    )
    .unwrap();
    let dest = dir.path().join("out.ndjson");
    let out = decrypt_vector(
        "truncated_last_two_rows.ndjson",
        &[
            "--expect-rows-from",
            body.to_str().unwrap(),
            "-o",
            dest.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(!dest.exists(), "a short export never lands at -o");
    std::fs::write(&body, r#"{"data":{}}"#).unwrap();
    let out = decrypt_vector(
        "plain.ndjson",
        &["--expect-rows-from", body.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("data.rows_processed"));
}

#[test]
fn skip_bad_rows_salvages_the_rest_and_still_fails() {
    let full = decrypt_vector("plain.ndjson", &[]);
    let all: Vec<&[u8]> = full.stdout.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(all.len(), 7);
    let out = decrypt_vector("auth_ciphertext_flipped_row3.ndjson", &["--skip-bad-rows"]);
    assert_eq!(out.status.code(), Some(3));
    let got: Vec<&[u8]> = out.stdout.split_inclusive(|&b| b == b'\n').collect();
    // The tampered row is missing; all others are there, in order. (Same records as plain.ndjson.)
    let expected: Vec<&[u8]> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, l)| *l)
        .collect();
    assert_eq!(got, expected);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("skipped: "), "{stderr}");
    assert!(stderr.contains("auth_ciphertext_flipped_row3.ndjson: row 3: authentication failed\n"));
    assert!(
        stderr.contains("1 row(s) were skipped; the output is incomplete\n"),
        "{stderr}"
    );
    let out = decrypt_vector("parse_line_not_json_row1.ndjson", &["--skip-bad-rows"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("row 1: malformed line"));

    // -o and --output-dir only ever hold complete exports: a salvage there is refused up front,
    // and a previous file stays as it was (a wrong key would otherwise have emptied it).
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let dest = dir.path().join("appts.ndjson");
    std::fs::write(&dest, "previous\n").unwrap();
    for output in [
        &["-o", dest.to_str().unwrap()][..],
        &["--output-dir", dir.path().to_str().unwrap()][..],
    ] {
        let out = decrypt_vector(
            "auth_ciphertext_flipped_row3.ndjson",
            &[&["--skip-bad-rows"][..], output].concat(),
        );
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8(out.stderr)
            .unwrap()
            .starts_with("error: --skip-bad-rows cannot write to -o or --output-dir, which only ever hold a complete export"));
        assert_eq!(std::fs::read(&dest).unwrap(), b"previous\n");
    }
    assert_eq!(entries(dir.path()), ["appts.ndjson", "customer.key"]);

    // To standard output, a salvaged input does not stop the run, and whatever ends the run
    // later (a hard error, a reader that went away) does not turn it into a success.
    // `read_first`: read that many bytes of the output, then close the pipe (`| head -c N`).
    let run = |inputs: &[&str], read_first: Option<usize>| {
        let mut child = StdCommand::new(bin())
            .arg("decrypt")
            .args(inputs.iter().map(|i| vector(i)))
            .args(["--customer-id", VEC_ID, "--key-file"])
            .arg(&key)
            .arg("--skip-bad-rows")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(n) = read_first {
            let mut stdout = child.stdout.take().unwrap();
            let mut head = vec![0u8; n];
            std::io::Read::read_exact(&mut stdout, &mut head).unwrap();
            drop(stdout);
        }
        child.wait_with_output().unwrap()
    };
    let out = run(
        &["auth_ciphertext_flipped_row3.ndjson", "plain.ndjson"],
        None,
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        out.stdout,
        [expected.concat(), full.stdout.clone()].concat()
    );
    let out = run(
        &[
            "auth_ciphertext_flipped_row3.ndjson",
            "container_zip_truncated.zip",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("1 row(s) were skipped; the output is incomplete\n"),
        "{stderr}"
    );
    assert!(stderr.contains("container_zip_truncated.zip"), "{stderr}");
    assert!(
        stderr.ends_with("error: 2 of 2 inputs failed\n"),
        "{stderr}"
    );
    // The salvaged input is read whole, then the reader goes away while later inputs are being
    // written (their 300 KB cannot all sit in the pipe): still exit 3.
    let big: Vec<&str> = std::iter::once("auth_ciphertext_flipped_row3.ndjson")
        .chain(std::iter::repeat_n("plain.ndjson", 100))
        .collect();
    let out = run(&big, Some(expected.concat().len()));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn stdout_on_a_full_disk_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "demo/demo.key");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = StdCommand::new(bin())
        .arg("decrypt")
        .arg(fixtures().join(DEMO_ZIP))
        .args(["--customer-id", DEMO_ID, "--key-file"])
        .arg(key)
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Issue 12, item 9: the message names the input and the output, and the hint says why.
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "error: {}: cannot write standard output: No space left on device\nhint: the disk \
             that holds standard output is full, or a file size limit was reached: free space \
             (or raise the limit) and run again\n",
            fixtures().join(DEMO_ZIP).display()
        )
    );
}

/// A ZIP from standard input is spooled to `$TMPDIR`, which needs room for the whole ZIP: a spool
/// that cannot be made or filled says where, how far it got, and what to do (issue 12, item 12).
#[test]
fn a_zip_from_standard_input_that_tmpdir_cannot_hold_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "demo/demo.key");
    let run = |tmpdir: &std::path::Path, limit: &str| {
        StdCommand::new("sh")
            .arg("-c")
            .arg(format!(
                r#"trap '' XFSZ; {limit} exec "$0" decrypt - --customer-id {DEMO_ID} --key-file "$1""#
            ))
            .arg(bin())
            .arg(&key)
            .env("TMPDIR", tmpdir)
            .stdin(std::fs::File::open(fixtures().join(DEMO_ZIP)).unwrap())
            .output()
            .unwrap()
    };
    // No such directory.
    let missing = dir.path().join("no-such-dir");
    let out = run(&missing, "");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "error: <stdin>: cannot create a temporary file in {} ($TMPDIR) to spool the ZIP: No \
             such file or directory\nhint: a ZIP read from standard input is first copied to \
             $TMPDIR (a ZIP's index is at its end): set TMPDIR to a writable directory with room \
             for the ZIP, or pass the ZIP by path, which needs no copy\n",
            missing.display()
        )
    );
    // Full: a file size limit (4 blocks of 512 bytes in dash, of 1024 in bash) stands in for a full
    // disk; the 4612-byte ZIP does not fit.
    let out = run(dir.path(), "ulimit -f 4;");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let expected = |n: u64| {
        format!(
            "error: <stdin>: spooling the ZIP to a temporary file in {} ($TMPDIR) failed after {n} \
             bytes: File too large\nhint: a ZIP read from standard input is first copied to \
             $TMPDIR (a ZIP's index is at its end), which needs free space there the size of the \
             ZIP, more than {n} bytes here: set TMPDIR to a directory with room, or pass the ZIP \
             by path, which needs no copy\n",
            dir.path().display()
        )
    };
    assert!(
        stderr == expected(2048) || stderr == expected(4096),
        "{stderr}"
    );
    // With room, the same run works, and leaves nothing in $TMPDIR.
    let out = run(dir.path(), "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        out.stdout,
        std::fs::read(fixtures().join("demo/expected.ndjson")).unwrap()
    );
    assert_eq!(entries(dir.path()), ["demo.key"]);
}

#[test]
fn output_file_hitting_a_size_limit_leaves_nothing() {
    // RLIMIT_FSIZE with SIGXFSZ ignored makes writes fail with EFBIG, like a full disk.
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "demo/demo.key");
    let dest = dir.path().join("out.ndjson");
    std::fs::write(&dest, "old\n").unwrap();
    let zips = vec![fixtures().join(DEMO_ZIP).display().to_string(); 50].join(" ");
    let script = format!(
        "trap '' XFSZ; ulimit -f 4; exec {} decrypt {zips} --customer-id {DEMO_ID} --key-file {} -o {}",
        bin().display(),
        key.display(),
        dest.display()
    );
    let out = StdCommand::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.ends_with(&format!(
            "error: writing {}: File too large\nhint: the disk is full, or a file size limit was \
             reached: free space (or raise the limit) and run again\n",
            dest.display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"old\n");
    let mut names = entries(dir.path());
    names.retain(|n| n != "demo.key");
    assert_eq!(names, ["out.ndjson"]);
}

#[test]
fn output_directory_missing_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("no/such/dir/out.ndjson");
    let out = decrypt_vector("plain.ndjson", &["-o", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("error: cannot create a temporary file in "),
        "{stderr}"
    );
    assert!(
        stderr.contains("no/such/dir: No such file or directory"),
        "{stderr}"
    );
}

/// Start `decrypt - -o dest` fed by a pipe we hold open, so it is mid-run when signalled.
fn interrupted_run(signal: i32) -> (std::process::Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let dest = dir.path().join("out.ndjson");
    std::fs::write(&dest, "previous\n").unwrap();
    let mut command = StdCommand::new(bin());
    command
        .args(["decrypt", "-", "--customer-id", VEC_ID, "--key-file"])
        .arg(&key)
        .arg("-o")
        .arg(&dest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The tool leaves a signal ignored at start ignored (nohup, background jobs). If this test
    // runs under such a harness, the child must still get the default dispositions, or it would
    // ignore the signal sent below and the test would wait forever.
    // SAFETY: the closure runs in the forked child before exec and only calls signal(2), which is
    // async-signal-safe; it allocates nothing and takes no lock.
    #[cfg(unix)]
    #[allow(unsafe_code, clippy::multiple_unsafe_ops_per_block)]
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            for s in [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM] {
                libc::signal(s, libc::SIG_DFL);
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(&std::fs::read(vector("plain.ndjson")).unwrap())
        .unwrap();
    // Wait until the temporary file is open: the run is under way.
    wait_until_writing(dir.path(), || Some(child.id()));
    unsafe_kill(child.id(), signal);
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    (out, dir)
}

fn unsafe_kill(pid: u32, signal: i32) {
    let status = StdCommand::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
    assert!(status.unwrap().success());
}

#[test]
fn sigterm_sigint_sighup_and_sigquit_during_output_leave_nothing() {
    for (signal, code, name) in [
        (15, 143, "SIGTERM"),
        (2, 130, "SIGINT"),
        (1, 129, "SIGHUP"),
        (3, 131, "SIGQUIT"),
    ] {
        let (out, dir) = interrupted_run(signal);
        // The process dies of the signal itself (so a shell loop stops too), and a shell reports
        // 128 + its number.
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(out.status.code(), None, "{name}");
            assert_eq!(out.status.signal(), Some(signal), "{name}");
            assert!(!out.status.core_dumped(), "{name}");
        }
        assert_eq!(128 + signal, code, "{name}");
        assert_eq!(
            String::from_utf8(out.stderr).unwrap(),
            format!("error: interrupted by {name}; no output file was left behind\n")
        );
        assert_eq!(
            entries(dir.path()),
            ["customer.key", "out.ndjson"],
            "{name}"
        );
        assert_eq!(
            std::fs::read(dir.path().join("out.ndjson")).unwrap(),
            b"previous\n"
        );
    }
}

/// SIGKILL (also what an out-of-memory kill sends) cannot be caught, so no handler can clean up:
/// on Linux the output's temporary file has no name until the commit, and a killed run leaves
/// nothing beside the target (issue 12, item 4).
#[cfg(target_os = "linux")]
#[test]
fn sigkill_during_output_leaves_nothing() {
    let (out, dir) = interrupted_run(9);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9));
    assert!(out.stderr.is_empty());
    assert_eq!(entries(dir.path()), ["customer.key", "out.ndjson"]);
    assert_eq!(
        std::fs::read(dir.path().join("out.ndjson")).unwrap(),
        b"previous\n"
    );
}

/// Where a killed run could leave a named temporary file (no `O_TMPFILE`), the next run over the
/// same target removes it: mode 0600, our owner, the name we give, and no live writer's lock.
#[cfg(unix)]
#[test]
fn a_later_run_removes_a_killed_runs_temporary_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.ndjson");
    let stale = dir.path().join(".out.ndjson.Ab3xY9.partial");
    let foreign = dir.path().join(".out.ndjson.Zz9Zz9.partial");
    for (path, mode) in [(&stale, 0o600), (&foreign, 0o644)] {
        std::fs::write(path, "{\"patient\":\"plaintext\"}\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let out = decrypt_vector("plain.ndjson", &["-o", dest.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty());
    assert_eq!(
        entries(dir.path()),
        [".out.ndjson.Zz9Zz9.partial", "out.ndjson"],
        "only the temporary file that is provably ours goes"
    );
}

/// What a shell reports for a run ended by SIGTERM: 143.
#[cfg(unix)]
#[test]
fn a_shell_reports_143_for_a_run_ended_by_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    // The tool runs in the foreground of a shell, which then reports its status.
    let mut child = StdCommand::new("sh")
        .arg("-c")
        .arg(r#""$0" decrypt - --customer-id "$1" --key-file "$2" -o "$3"; echo "status $?""#)
        .arg(bin())
        .arg(VEC_ID)
        .arg(&key)
        .arg(dir.path().join("out.ndjson"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\n").unwrap();
    // The shell's child, from /proc (Linux).
    let sh = child.id();
    let pid = wait_until_writing(dir.path(), || {
        std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    });
    unsafe_kill(pid, 15);
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "status 143\n");
}

#[test]
fn a_signal_ignored_at_start_stays_ignored() {
    // As under `nohup`: SIGHUP ignored when the process starts. A hang-up must not end the run.
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let dest = dir.path().join("out.ndjson");
    let mut child = StdCommand::new("sh")
        .arg("-c")
        .arg(r#"trap '' HUP; exec "$0" decrypt - --customer-id "$1" --key-file "$2" -o "$3""#)
        .arg(bin())
        .arg(VEC_ID)
        .arg(&key)
        .arg(&dest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let export = std::fs::read(vector("plain.ndjson")).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (head, tail) = export.split_at(export.len() / 2);
    stdin.write_all(head).unwrap();
    wait_until_writing(dir.path(), || Some(child.id()));
    unsafe_kill(child.id(), 1);
    std::thread::sleep(Duration::from_millis(100));
    stdin.write_all(tail).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        decrypt_vector("plain.ndjson", &[]).stdout
    );
}

#[test]
fn verify_with_its_reader_gone_still_checks_every_input_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    for inputs in [
        &["auth_tag_flipped_row2.ndjson"][..],
        &["plain.ndjson", "auth_tag_flipped_row2.ndjson"][..],
    ] {
        let mut child = StdCommand::new(bin())
            .arg("verify")
            .args(inputs.iter().map(|i| vector(i)))
            .args(["--customer-id", VEC_ID, "--key-file"])
            .arg(&key)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the pipe's read end before verify writes its first line (`| true`).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(3), "{inputs:?}: {stderr}");
        assert!(
            stderr.contains("auth_tag_flipped_row2.ndjson: row 2: authentication failed"),
            "{stderr}"
        );
    }
}

#[test]
fn standard_input_is_never_overwritten_by_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let export = dir.path().join("same.zip");
    std::fs::copy(vector("zip_deflated.zip"), &export).unwrap();
    let before = std::fs::read(&export).unwrap();
    for command in [&["decrypt", "-"][..], &["encrypt", "-"][..]] {
        let out = StdCommand::new(bin())
            .args(command)
            .args(["--customer-id", VEC_ID, "--key-file"])
            .arg(&key)
            .arg("-o")
            .arg(&export)
            .stdin(std::fs::File::open(&export).unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{command:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "the output {} is the input <stdin>: refusing to overwrite the",
                export.display()
            )),
            "{stderr}"
        );
        assert_eq!(std::fs::read(&export).unwrap(), before);
        assert_eq!(entries(dir.path()), ["customer.key", "same.zip"]);
    }
}

#[test]
fn a_named_pipe_or_dev_stdin_is_read_as_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    for name in ["zip_deflated.zip", "gzip.ndjson.gz", "plain.ndjson"] {
        let want = decrypt_vector(name, &[]);
        assert_eq!(want.status.code(), Some(0));
        // `cat export | cipherstream decrypt /dev/stdin`
        let out = StdCommand::new("sh")
            .arg("-c")
            .arg(r#"cat "$1" | "$0" decrypt /dev/stdin --customer-id "$2" --key-file "$3""#)
            .arg(bin())
            .arg(vector(name))
            .arg(VEC_ID)
            .arg(&key)
            .output()
            .unwrap();
        assert_eq!(
            (out.status.code(), &out.stdout),
            (Some(0), &want.stdout),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A FIFO, as `<(curl ...)` gives.
        let fifo = dir.path().join("fifo");
        let _ = std::fs::remove_file(&fifo);
        assert!(StdCommand::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let (path, source) = (fifo.clone(), vector(name));
        let writer = std::thread::spawn(move || {
            let mut pipe = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            let _ = pipe.write_all(&std::fs::read(source).unwrap());
        });
        let out = StdCommand::new(bin())
            .arg("decrypt")
            .arg(&fifo)
            .args(["--customer-id", VEC_ID, "--key-file"])
            .arg(&key)
            .output()
            .unwrap();
        writer.join().unwrap();
        assert_eq!(
            (out.status.code(), &out.stdout),
            (Some(0), &want.stdout),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn an_empty_stream_is_a_failed_download_not_an_empty_export() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let dest = dir.path().join("out.ndjson");
    std::fs::write(&dest, "previous\n").unwrap();
    // `curl -sf "$expired_link" | cipherstream decrypt - -o out.ndjson`
    let out = StdCommand::new(bin())
        .args(["decrypt", "-", "--customer-id", VEC_ID, "--key-file"])
        .arg(&key)
        .arg("-o")
        .arg(&dest)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: <stdin>: no data at all (0 bytes): even an export with no rows has some, so the \
         download probably failed\nhint: check that the download completed (compare its size with the \
         webhook's file_size_bytes) and that this is the export file itself\n"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"previous\n");
    assert_eq!(entries(dir.path()), ["customer.key", "out.ndjson"]);
}

#[test]
fn dash_as_the_output_is_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let out = cipherstream()
        .current_dir(dir.path())
        .arg("decrypt")
        .arg(vector("plain.ndjson"))
        .args(["--customer-id", VEC_ID, "--key-file"])
        .arg(&key)
        .args(["-o", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, decrypt_vector("plain.ndjson", &[]).stdout);
    assert_eq!(entries(dir.path()), ["customer.key"]);
    let out = cipherstream()
        .current_dir(dir.path())
        .args(["keygen", "-o", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout.len(), 45);
    assert_eq!(entries(dir.path()), ["customer.key"]);
}

pub(crate) fn under_pty(command: &str) -> String {
    let out = StdCommand::new("script")
        .args(["-qec", command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script(1) from util-linux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True if script(1) is there to give a command a terminal (it must be, under CI).
pub(crate) fn script_available() -> bool {
    let there = StdCommand::new("script").arg("--version").output().is_ok();
    assert!(
        there || std::env::var_os("CI").is_none(),
        "script(1) is needed under CI"
    );
    there
}

#[test]
fn progress_and_summary_on_a_terminal_only() {
    if !script_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let dest = dir.path().join("out.ndjson");
    let plain = vector("plain.ndjson");
    let base = format!(
        "{} decrypt - --customer-id {VEC_ID} --key-file {} -o {}",
        bin().display(),
        key.display(),
        dest.display()
    );
    // Half the rows, a pause long enough for the bar to draw, then the rest.
    let slow_feed = format!(
        "(head -n 3 {p}; sleep 1.2; tail -n +4 {p}) | ",
        p = plain.display()
    );
    let screen = under_pty(&format!("{slow_feed}{base}"));
    assert!(screen.contains("<stdin>: "), "no progress line: {screen:?}");
    assert!(screen.contains("3 rows"), "progress shows rows: {screen:?}");
    assert!(
        screen.contains("<stdin>: decrypted 7 rows in "),
        "no summary: {screen:?}"
    );
    let screen = under_pty(&format!("{slow_feed}{base} --quiet"));
    assert_eq!(screen, "", "--quiet shows nothing");
    // Not a terminal: nothing either (stderr captured by a pipe).
    let out = StdCommand::new("sh")
        .args(["-c", &format!("{base} < {}", plain.display())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty());
}

/// Rows going to a terminal get no progress bar on the same screen: its redraws left a stale bar
/// line among the data (issue 12, item 12). The screen holds the rows and nothing else.
#[test]
fn no_progress_bar_among_rows_on_a_terminal() {
    if !script_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let plain = vector("plain.ndjson");
    // A pause long enough for a bar to draw, between rows.
    let screen = under_pty(&format!(
        "(head -n 3 {p}; sleep 1.2; tail -n +4 {p}) | {} decrypt - --customer-id {VEC_ID} \
         --key-file {}",
        bin().display(),
        key.display(),
        p = plain.display(),
    ));
    let rows = String::from_utf8(decrypt_vector("plain.ndjson", &[]).stdout).unwrap();
    assert_eq!(rows.lines().count(), 7);
    // The terminal turns each "\n" into "\r\n".
    assert_eq!(screen, rows.replace('\n', "\r\n"));
}

#[test]
fn authentication_failures_say_what_moved() {
    let hint = |name: &str, args: &[&str]| {
        let out = decrypt_vector(name, args);
        assert_eq!(out.status.code(), Some(3), "{name}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        stderr
            .lines()
            .find_map(|l| l.strip_prefix("hint: "))
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        hint("auth_row2_deleted.ndjson", &[]),
        "the line authenticates as row 3: 1 row(s) are missing before it"
    );
    // Issue 12, item 9: a swap is called a swap, not "1 row(s) missing".
    assert_eq!(
        hint("auth_rows_swapped_2_3.ndjson", &[]),
        "rows 2 and 3 are swapped: each line authenticates at the other's place, so the export \
         was reordered after it was sealed; download it again"
    );
    assert_eq!(
        hint("auth_row1_duplicated.ndjson", &[]),
        "the line authenticates as row 1: 1 row(s) are duplicated (or inserted, or reordered) \
         before it"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = cipherstream()
        .arg("decrypt")
        .arg(vector("plain.ndjson"))
        .args(["--customer-id", "cust_someone_else", "--key-file"])
        .arg(private_key(dir.path(), "keys/customer.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap().lines().nth(1).unwrap(),
        "hint: row 0 fails at every nearby index: the key or the --customer-id is wrong (the two look \
         the same)"
    );
    assert_eq!(
        hint("auth_ciphertext_flipped_row3.ndjson", &[]),
        "earlier rows verified, so the key and customer id are right: this line was altered, or \
         lines were reordered, inserted or removed; download the export again"
    );
}

#[test]
fn a_terminal_on_standard_input_is_not_waited_on() {
    if StdCommand::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "script(1) is needed under CI"
        );
        return;
    }
    let screen = under_pty(&format!(
        "{} decrypt --customer-id x; echo EXIT=$?",
        bin().display()
    ));
    assert!(
        screen.contains(
            "error: no export given: name an INPUT file, or pipe an export into standard input"
        ),
        "{screen:?}"
    );
    assert!(screen.contains("EXIT=2"), "{screen:?}");
}

#[cfg(target_os = "linux")]
#[test]
fn output_directory_not_writable_is_an_error_naming_it() {
    // sysfs refuses new files even to root, so this holds for any user running the tests.
    let out = decrypt_vector("plain.ndjson", &["-o", "/sys/out.ndjson"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: cannot create a temporary file in /sys: Permission denied\n"
    );
}

/// A checksum that fails at the end of the data holds back an unterminated last line in every
/// container (a deflated ZIP member, whose CRC-32 the workers check after inflating; a stored
/// one and gzip, whose readers check it themselves) and releases the complete lines before it,
/// at every thread count.
#[test]
fn a_bad_checksum_holds_back_an_unterminated_last_line_in_every_container() {
    let mut plain = stored_vector_ndjson();
    assert_eq!(plain.pop(), Some(b'\n'));
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let decrypt = |bytes: &[u8], threads: &str| {
        let input = dir.path().join("input");
        std::fs::write(&input, bytes).unwrap();
        decrypt_file(&input, &key, &["--threads", threads])
    };
    let all = decrypt(&plain, "1");
    assert_eq!(all.status.code(), Some(0));
    assert_eq!(all.stdout.iter().filter(|&&b| b == b'\n').count(), 7);
    let six = all
        .stdout
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(5)
        .unwrap()
        .0;
    let expected = &all.stdout[..=six];

    let zip_with_bad_crc = |method| {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        w.start_file("job.ndjson", opts).unwrap();
        w.write_all(&plain).unwrap();
        let mut bytes = w.finish().unwrap().into_inner();
        assert_eq!(&bytes[..4], b"PK\x03\x04");
        bytes[14] ^= 1;
        let cd = bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        bytes[cd + 16] ^= 1;
        bytes
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let mut gzip = gz.finish().unwrap();
    let crc_at = gzip.len() - 8;
    gzip[crc_at] ^= 1;
    for (what, bytes) in [
        (
            "deflated ZIP",
            zip_with_bad_crc(zip::CompressionMethod::Deflated),
        ),
        (
            "stored ZIP",
            zip_with_bad_crc(zip::CompressionMethod::Stored),
        ),
        ("gzip", gzip),
    ] {
        for threads in ["1", "2", "8"] {
            let out = decrypt(&bytes, threads);
            assert_eq!(out.status.code(), Some(1), "{what}, {threads} threads");
            assert!(
                out.stdout == expected,
                "{what}, {threads} threads: released {} bytes, expected the first 6 rows",
                out.stdout.len()
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("corrupt"), "{what}: {stderr}");
        }
    }
}

/// A blank line longer than `--max-line-bytes` is refused at every thread count: whether the
/// reader (a buffer with no line end) or a worker sees it depends on buffer sizes, and the two
/// once disagreed about blank lines.
#[test]
fn a_long_blank_line_is_refused_at_every_thread_count() {
    let plain = stored_vector_ndjson();
    let first = plain.iter().position(|&b| b == b'\n').unwrap() + 1;
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    // Short blank lines (one buffer) and long ones (several buffers).
    for blank in [2_000usize, 600_000] {
        let mut input = plain[..first].to_vec();
        input.extend(std::iter::repeat_n(b' ', blank));
        input.push(b'\n');
        input.extend_from_slice(&plain[first..]);
        let path = dir.path().join("input.ndjson");
        std::fs::write(&path, &input).unwrap();
        for threads in ["1", "2", "3", "8"] {
            let out = decrypt_file(
                &path,
                &key,
                &["--threads", threads, "--max-line-bytes", "1000"],
            );
            assert_eq!(
                out.status.code(),
                Some(1),
                "{blank} spaces, {threads} threads"
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("row 1: line is longer than the limit of 1000 bytes"),
                "{blank} spaces, {threads} threads: {stderr}"
            );
            assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), 1);
        }
    }
}

/// Issue 12, item 5: a bit flipped inside a ZIP's or gzip's compressed data is a damaged
/// download (exit 1, download it again), not tampering (exit 3), even though the row it lands in
/// no longer authenticates; nothing is written to -o.
#[test]
fn a_corrupted_download_is_a_container_failure_not_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let demo_key = private_key(dir.path(), "demo/demo.key");
    let vec_key = private_key(dir.path(), "keys/customer.key");
    let demo = std::fs::read(fixtures().join(DEMO_ZIP)).unwrap();
    let start = {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&demo)).unwrap();
        let start = zip.by_index_raw(0).unwrap().data_start().unwrap();
        start as usize
    };
    let gzip = std::fs::read(vector("gzip.ndjson.gz")).unwrap();
    let cases = [
        (
            "flipped.zip",
            demo.clone(),
            start + 200,
            DEMO_ID,
            &demo_key,
            "the ZIP data is corrupt (its CRC-32 does not match the one the archive records)",
        ),
        (
            "flipped.ndjson.gz",
            gzip.clone(),
            gzip.len() / 2,
            VEC_ID,
            &vec_key,
            "the gzip data is corrupt (its CRC-32 or length does not match the one its trailer \
             records)",
        ),
        (
            "early.ndjson.gz",
            gzip.clone(),
            40,
            VEC_ID,
            &vec_key,
            "the gzip data is corrupt (the compressed data is invalid)",
        ),
    ];
    for (name, mut bytes, at, customer, key, what) in cases {
        bytes[at] ^= 1;
        let input = dir.path().join(name);
        std::fs::write(&input, &bytes).unwrap();
        let dest = dir.path().join(format!("{name}.out"));
        let out = cipherstream()
            .arg("decrypt")
            .arg(&input)
            .args(["--customer-id", customer, "--key-file"])
            .arg(key)
            .arg("-o")
            .arg(&dest)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert_eq!(
            String::from_utf8(out.stderr).unwrap(),
            format!(
                "error: {}: {what}\nhint: check that the download completed (compare its size \
                 with the webhook's file_size_bytes) and that this is the export file itself\n",
                input.display()
            ),
            "{name}"
        );
        assert!(!dest.exists(), "{name}");
    }
}

/// Issue 12, item 9: a password-protected ZIP is named as such, with a hint about re-packing,
/// not told to "check that the download completed".
#[test]
fn a_password_protected_zip_is_named_as_such() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("job.ndjson", opts).unwrap();
    zip.write_all(&std::fs::read(vector("plain.ndjson")).unwrap())
        .unwrap();
    let mut bytes = zip.finish().unwrap().into_inner();
    // Set general-purpose flag bit 0 (encrypted) in the local header and the directory entry.
    bytes[6] |= 1;
    let cd = bytes.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
    bytes[cd + 8] |= 1;
    let input = dir.path().join("locked.zip");
    std::fs::write(&input, &bytes).unwrap();
    let out = cipherstream()
        .arg("verify")
        .arg(&input)
        .args(["--customer-id", VEC_ID, "--key-file"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "error: {0}: the ZIP member is encrypted with a password, which cipherstream does not \
             read\nhint: the vendor's exports are not password-protected, so this ZIP was \
             re-packed: use the export as downloaded, or unpack it with its password (unzip -P) \
             and decrypt the .ndjson inside\n",
            input.display()
        )
    );
}

/// Issue 12, item 9: SIGINT while the rows go to standard output says that output is incomplete
/// and how far it got, not that "no output file was left behind".
#[cfg(unix)]
#[test]
fn sigint_while_writing_to_stdout_says_the_output_is_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let export = std::fs::read(vector("plain.ndjson")).unwrap();
    let rows = export
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    let stdout_file = dir.path().join("stdout");
    let mut command = StdCommand::new(bin());
    command
        .args(["decrypt", "-", "--customer-id", VEC_ID, "--key-file"])
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&stdout_file).unwrap())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only calls signal(2), which is
    // async-signal-safe; it restores the default disposition a test harness may have changed.
    #[allow(unsafe_code, clippy::multiple_unsafe_ops_per_block)]
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&export).unwrap();
    stdin.flush().unwrap();
    // The rows sent are written as they arrive (standard input is a stream); wait for all of
    // them, then interrupt the run while it waits for more.
    let started = Instant::now();
    while std::fs::read(&stdout_file)
        .unwrap()
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        < rows
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "rows never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe_kill(child.id(), 2);
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "error: interrupted by SIGINT; the output on standard output is incomplete: it stops \
             after {rows} complete row(s)\n"
        )
    );
}
