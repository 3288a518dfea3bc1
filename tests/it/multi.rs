//! Several inputs at once (`--output-dir`, `verify`) and standard output into a pipe (issue 16).

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use crate::util::{fixtures, private_key, sha256_hex};

const VEC_ID: &str = "cust_4f9a2c71";
/// The plaintext of `vectors/plain.ndjson` (`fixtures/manifest.json`).
const PLAIN_SHA256: &str = "f0bce1a6ec4288e5586f63ce1c017a9511f24e8846cba7c48e472c68b46be2eb";

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("cipherstream")
}

fn vector(name: &str) -> PathBuf {
    fixtures().join("vectors").join(name)
}

/// `decrypt - --customer-id ... --key-file KEY` with its standard streams piped, for runs the
/// test watches while they wait for more input.
fn decrypt_stdin(key: &Path) -> StdCommand {
    let mut cmd = StdCommand::new(bin());
    cmd.args(["decrypt", "-", "--customer-id", VEC_ID, "--key-file"])
        .arg(key)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Standard output that is a pipe is grown to 1 MiB, or to as much as the kernel allows an
/// unprivileged process (`pipe-max-size`), for `| jq` (issue 16, item 2).
#[cfg(target_os = "linux")]
#[test]
fn a_pipe_on_standard_output_is_grown_to_one_mib() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let mut child = decrypt_stdin(&key).stdout(Stdio::piped()).spawn().unwrap();
    let export = std::fs::read(vector("plain.ndjson")).unwrap();
    child.stdin.take().unwrap().write_all(&export).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut rows = Vec::new();
    stdout.read_to_end(&mut rows).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty());
    assert_eq!(sha256_hex(&rows), PLAIN_SHA256);
    // The pipe outlives the run while the test holds its read end.
    let size = rustix::pipe::fcntl_getpipe_size(&stdout).unwrap();
    let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(size == 1 << 20 || size == max, "pipe size {size}");
    assert!(size > 64 << 10, "pipe size {size}");
}

/// The threads named `worker-N` of a running process.
#[cfg(target_os = "linux")]
fn workers(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("worker-"))
        })
        .count()
}

/// How many workers a decrypt of the vector `name` from standard input starts by default when
/// its standard output is `stdout`: counted while the run waits for the rest of its input.
#[cfg(target_os = "linux")]
fn default_workers(name: &str, stdout: Stdio) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let mut child = decrypt_stdin(&key).stdout(stdout).spawn().unwrap();
    let export = std::fs::read(vector(name)).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (head, tail) = export.split_at(export.len() / 2);
    stdin.write_all(head).unwrap();
    let started = Instant::now();
    let mut seen = 0;
    // Workers start one after another: wait until the count has held for a while.
    let mut steady = 0;
    while steady < 10 {
        let now = workers(child.id());
        steady = if now > 0 && now == seen {
            steady + 1
        } else {
            0
        };
        seen = now;
        assert!(started.elapsed() < Duration::from_secs(20), "no workers");
        std::thread::sleep(Duration::from_millis(20));
    }
    stdin.write_all(tail).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    seen
}

/// Into a pipe, the default leaves a core for the pipe's reader when the input is compressed
/// (the inflating thread bounds the run), not for plain NDJSON (the workers bound it); into a
/// file it uses every core (issue 16, item 2: on 2 cores `--threads 1` beat the default into a
/// pipe).
#[cfg(target_os = "linux")]
#[test]
fn the_default_thread_count_leaves_a_pipe_s_reader_a_core() {
    let cores = std::thread::available_parallelism().unwrap().get();
    for name in ["gzip.ndjson.gz", "plain.ndjson"] {
        let file = tempfile::tempfile().unwrap();
        assert_eq!(default_workers(name, Stdio::from(file)), cores, "{name}");
    }
    assert_eq!(
        default_workers("gzip.ndjson.gz", Stdio::piped()),
        (cores - 1).max(1)
    );
    assert_eq!(default_workers("plain.ndjson", Stdio::piped()), cores);
}

/// A mix of good and bad inputs in a directory of their own: (path, SHA-256 of the complete
/// plaintext, for the ones that decrypt). The first is the largest, so the small ones after it
/// finish first and must wait for it to have their say.
fn mixed_inputs(dir: &Path, key: &Path) -> Vec<(PathBuf, Option<String>)> {
    // An export of 20,000 rows, made by the tool from plaintext whose lines it leaves unchanged.
    let plain = dir.join("big.jsonl");
    let rows: String = (0..20_000)
        .map(|i| {
            format!(
                "{{\"row\":{i},\"patient\":\"p{i:06}\",\"note\":\"{}\"}}\n",
                "x".repeat(i % 97)
            )
        })
        .collect();
    std::fs::write(&plain, &rows).unwrap();
    let big = dir.join("big.zip");
    let out = StdCommand::new(bin())
        .args(["encrypt", "--customer-id", VEC_ID, "--key-file"])
        .arg(key)
        .arg(&plain)
        .arg("-o")
        .arg(&big)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    std::fs::remove_file(&plain).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("manifest.json")).unwrap()).unwrap();
    let vectors = manifest["vectors"].as_array().unwrap();
    let mut inputs = vec![(big, Some(sha256_hex(rows.as_bytes())))];
    for name in [
        "plain.ndjson",
        "auth_tag_flipped_row2.ndjson",
        "nonce_reused_rows_1_4.ndjson",
        "parse_line_not_json_row1.ndjson",
        "gzip.ndjson.gz",
        "container_zip_truncated.zip",
        "auth_zip_tag_flipped_row5.zip",
        "large_row_1mib.ndjson.gz",
        "zip_deflated.zip",
        "plaintext_multiline.ndjson",
    ] {
        let v = vectors
            .iter()
            .find(|v| v["file"] == format!("vectors/{name}"))
            .unwrap();
        let path = dir.join(name);
        std::fs::copy(vector(name), &path).unwrap();
        let sha = (v["exit_code"] == 0).then(|| v["stdout_sha256"].as_str().unwrap().to_owned());
        inputs.push((path, sha));
    }
    inputs
}

/// A run's exit status, standard output and standard error.
type Run = (Option<i32>, String, String);

fn run(args: &[&OsStr]) -> Run {
    let out = StdCommand::new(bin()).args(args).output().unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.code(), text(out.stdout), text(out.stderr))
}

/// Several inputs, at 1, 2 and 8 threads (1, 2 and 8 inputs at once), say exactly what the same
/// inputs say when run one by one, in input order: the same standard output (`verify`'s lines),
/// the same standard error line for line (warnings, errors, hints), the same exit status; each
/// output file holds exactly the input's plaintext, a failed input leaves none, and no temporary
/// file is left (issue 16, item 1).
#[test]
fn several_inputs_at_once_say_exactly_what_one_at_a_time_says() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let exports = dir.path().join("exports");
    std::fs::create_dir(&exports).unwrap();
    let inputs = mixed_inputs(&exports, &key);
    let base: Vec<&OsStr> = vec![
        OsStr::new("--customer-id"),
        OsStr::new(VEC_ID),
        OsStr::new("--key-file"),
        key.as_os_str(),
    ];
    assert_eq!(inputs.iter().filter(|(_, sha)| sha.is_none()).count(), 4);
    let stem = |p: &Path| {
        let name = p.file_name().unwrap().to_str().unwrap();
        let stem = name.split('.').next().unwrap();
        format!("{stem}.ndjson")
    };

    // One at a time, one process per input: what each says.
    let mut one_by_one: Vec<(&str, Vec<Run>)> = Vec::new();
    for (command, extra) in [
        ("decrypt", Some("--output-dir")),
        ("verify", None),
        ("verify", Some("--json")),
    ] {
        let mut runs = Vec::new();
        for (input, _) in &inputs {
            let outdir = tempfile::tempdir().unwrap();
            let mut args: Vec<&OsStr> = vec![OsStr::new(command), input.as_os_str()];
            args.extend(&base);
            match extra {
                Some("--output-dir") => {
                    args.extend([OsStr::new("--output-dir"), outdir.path().as_os_str()])
                }
                Some(flag) => args.push(OsStr::new(flag)),
                None => {}
            }
            runs.push(run(&args));
        }
        one_by_one.push((command, runs));
    }
    let expected = |runs: &[Run]| -> Run {
        let exit = runs.iter().filter_map(|r| r.0.filter(|&c| c != 0)).max();
        let stdout = runs.iter().map(|r| r.1.as_str()).collect();
        let mut stderr: String = runs.iter().map(|r| r.2.as_str()).collect();
        let failed = runs.iter().filter(|r| r.0 != Some(0)).count();
        stderr.push_str(&format!(
            "error: {failed} of {} inputs failed\n",
            inputs.len()
        ));
        (exit, stdout, stderr)
    };
    let (decrypt_expected, verify_expected, json_expected) = (
        expected(&one_by_one[0].1),
        expected(&one_by_one[1].1),
        expected(&one_by_one[2].1),
    );
    // The exit statuses that one-by-one gives (3 is the most severe of 1 and 3).
    assert_eq!(decrypt_expected.0, Some(3));
    assert!(
        decrypt_expected.2.contains("warning: "),
        "{}",
        decrypt_expected.2
    );
    assert_eq!(verify_expected.1.lines().count(), inputs.len());

    for threads in ["1", "2", "8"] {
        let outdir = dir.path().join(format!("out-{threads}"));
        std::fs::create_dir(&outdir).unwrap();
        let mut args: Vec<&OsStr> = vec![OsStr::new("decrypt")];
        args.extend(inputs.iter().map(|(p, _)| p.as_os_str()));
        args.extend(&base);
        args.extend([
            OsStr::new("--threads"),
            OsStr::new(threads),
            OsStr::new("--output-dir"),
            outdir.as_os_str(),
        ]);
        assert_eq!(run(&args), decrypt_expected, "decrypt --threads {threads}");
        let mut written: Vec<String> = Vec::new();
        for (input, sha) in &inputs {
            let out = outdir.join(stem(input));
            match sha {
                Some(sha) => {
                    assert_eq!(&sha256_hex(&std::fs::read(&out).unwrap()), sha, "{out:?}");
                    written.push(stem(input));
                }
                None => assert!(!out.exists(), "{out:?}"),
            }
        }
        written.sort();
        // Nothing else: no temporary file, named or not.
        assert_eq!(
            crate::util::entries(&outdir),
            written,
            "--threads {threads}"
        );

        for (json, want) in [(false, &verify_expected), (true, &json_expected)] {
            let mut args: Vec<&OsStr> = vec![OsStr::new("verify")];
            args.extend(inputs.iter().map(|(p, _)| p.as_os_str()));
            args.extend(&base);
            args.extend([OsStr::new("--threads"), OsStr::new(threads)]);
            if json {
                args.push(OsStr::new("--json"));
            }
            assert_eq!(&run(&args), want, "verify --threads {threads} json={json}");
        }
    }
}

/// Open the FIFO `path` for writing once a reader has it open, or fail after 20 s.
#[cfg(unix)]
fn open_when_read(path: &Path, what: &str) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    let started = Instant::now();
    loop {
        // Without a reader a non-blocking open fails (ENXIO) instead of waiting.
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => return f,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) => panic!("{what}: {e}"),
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    assert!(StdCommand::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success());
}

/// Wait until process `pid` no longer has `path` open (it has read an input to its end).
#[cfg(target_os = "linux")]
fn wait_until_closed(pid: u32, path: &Path) {
    let started = Instant::now();
    while std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == path))
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{path:?} never closed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The inputs really run at once: the second input is opened and read to its end while the first
/// has not yet received a byte. Its file is put in place only after the first's, as one input
/// after another would: what is on disk is never ahead of what was said.
#[cfg(target_os = "linux")]
#[test]
fn a_later_input_completes_while_an_earlier_one_waits() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let (first, second) = (
        dir.path().join("first.ndjson"),
        dir.path().join("second.ndjson"),
    );
    mkfifo(&first);
    mkfifo(&second);
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let child = StdCommand::new(bin())
        .args(["decrypt", "--customer-id", VEC_ID, "--key-file"])
        .arg(&key)
        .args([&first, &second])
        .args(["--threads", "2", "--output-dir"])
        .arg(&outdir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let export = std::fs::read(vector("plain.ndjson")).unwrap();
    // One input after another, the second would not be opened before the first is done.
    let mut w = open_when_read(&second, "the second input was never opened");
    w.write_all(&export).unwrap();
    drop(w);
    wait_until_closed(child.id(), &second);
    // Read to its end and decrypted; not in place before the first input is.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(crate::util::entries(&outdir), [] as [&str; 0]);
    let mut w = open_when_read(&first, "the first input was never opened");
    w.write_all(&export).unwrap();
    drop(w);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    assert_eq!(
        crate::util::entries(&outdir),
        ["first.ndjson", "second.ndjson"]
    );
    for name in ["first.ndjson", "second.ndjson"] {
        assert_eq!(
            sha256_hex(&std::fs::read(outdir.join(name)).unwrap()),
            PLAIN_SHA256
        );
    }
}

/// The output files being written in `dir` by process `pid`: its descriptors on files in `dir`
/// that have no name there (an `O_TMPFILE` shows as `DIR/#INODE (deleted)`), plus names in `dir`
/// not in `before`.
#[cfg(target_os = "linux")]
fn outputs_open(pid: u32, dir: &Path, before: &[String]) -> usize {
    let dir = dir.canonicalize().unwrap();
    let unnamed = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                target.parent() == Some(&dir) && !before.iter().any(|n| target == dir.join(n))
            })
        })
        .count();
    let named = crate::util::entries(&dir)
        .iter()
        .filter(|n| !before.contains(n))
        .count();
    unnamed + named
}

/// SIGTERM while two inputs run at once: both half-read, or the first half-read and the second
/// decrypted but held back (nothing has been said about it). Neither leaves a file, temporary or
/// final, the previous outputs are intact, and the run dies of the signal, as one input at a
/// time would have.
#[cfg(target_os = "linux")]
#[test]
fn a_signal_during_several_outputs_leaves_none_of_them() {
    use std::os::unix::process::ExitStatusExt;
    for second_complete in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let key = private_key(dir.path(), "keys/customer.key");
        let (first, second) = (
            dir.path().join("first.ndjson"),
            dir.path().join("second.ndjson"),
        );
        mkfifo(&first);
        mkfifo(&second);
        let outdir = dir.path().join("out");
        std::fs::create_dir(&outdir).unwrap();
        std::fs::write(outdir.join("first.ndjson"), "previous\n").unwrap();
        let before = crate::util::entries(&outdir);
        let child = StdCommand::new(bin())
            .args(["decrypt", "--customer-id", VEC_ID, "--key-file"])
            .arg(&key)
            .args([&first, &second])
            .args(["--threads", "2", "--output-dir"])
            .arg(&outdir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let export = std::fs::read(vector("plain.ndjson")).unwrap();
        let half = &export[..export.len() / 2];
        // The first input holds half an export and waits for the rest, its output open.
        let mut writers = vec![open_when_read(&first, "the first input was never opened")];
        writers[0].write_all(half).unwrap();
        let mut w = open_when_read(&second, "the second input was never opened");
        if second_complete {
            w.write_all(&export).unwrap();
            drop(w);
            wait_until_closed(child.id(), &second);
        } else {
            w.write_all(half).unwrap();
            writers.push(w);
        }
        let started = Instant::now();
        while outputs_open(child.id(), &outdir, &before) < 2 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "outputs never opened"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = StdCommand::new("kill")
            .args(["-15", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        drop(writers);
        assert_eq!(out.status.signal(), Some(15), "{second_complete}");
        assert_eq!(
            String::from_utf8(out.stderr).unwrap(),
            "error: interrupted by SIGTERM; no output file was left behind\n"
        );
        assert_eq!(crate::util::entries(&outdir), before, "{second_complete}");
        assert_eq!(
            std::fs::read(outdir.join("first.ndjson")).unwrap(),
            b"previous\n"
        );
    }
}

/// On a terminal, inputs running at once each draw a bar (in one group), and their summary lines
/// and `verify`'s lines still come in input order: the second input, a file, is done long
/// before the first, which arrives slowly on standard input.
#[cfg(unix)]
#[test]
fn bars_for_inputs_at_once_and_lines_in_input_order_on_a_terminal() {
    if StdCommand::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "script(1) is needed under CI"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let plain = vector("plain.ndjson");
    let command = format!(
        "(head -n 3 {p}; sleep 1.2; tail -n +4 {p}) | {} verify - {p} --threads 2 \
         --customer-id {VEC_ID} --key-file {}",
        bin().display(),
        key.display(),
        p = plain.display(),
    );
    let out = StdCommand::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(screen.contains("3 rows"), "no progress bar: {screen:?}");
    let at = |text: &str| {
        screen
            .find(text)
            .unwrap_or_else(|| panic!("{text:?} not in {screen:?}"))
    };
    let file = plain.display().to_string();
    let order = [
        at("<stdin>: verified 7 rows in "),
        at("<stdin>: ok, 7 rows"),
        at(&format!("{file}: verified 7 rows in ")),
        at(&format!("{file}: ok, 7 rows")),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{screen:?}");
}

/// On a terminal, a warning while inputs run one at a time (`--threads 1`) is printed with the
/// bars out of the way, once: suspending the input's bar and then its group waited forever.
#[cfg(unix)]
#[test]
fn a_warning_on_a_terminal_one_input_at_a_time() {
    if StdCommand::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "script(1) is needed under CI"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let reused = vector("nonce_reused_rows_1_4.ndjson");
    let plain = vector("plain.ndjson");
    let command = format!(
        "timeout 20 {} decrypt {} {} --threads 1 --output-dir {} --customer-id {VEC_ID} \
         --key-file {}; echo status $?",
        bin().display(),
        reused.display(),
        plain.display(),
        outdir.display(),
        key.display(),
    );
    let out = StdCommand::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    let at = |text: &str| {
        screen
            .find(text)
            .unwrap_or_else(|| panic!("{text:?} not in {screen:?}"))
    };
    let order = [
        at("warning: "),
        at(&format!("{}: decrypted 6 rows in ", reused.display())),
        at(&format!("{}: decrypted 7 rows in ", plain.display())),
        at("status 0"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{screen:?}");
    assert_eq!(
        crate::util::entries(&outdir),
        ["nonce_reused_rows_1_4.ndjson", "plain.ndjson"]
    );
}

/// `verify A B ... | head -1`: a reader that goes away stops neither the checking of the other
/// inputs nor hides a failure, at one input at a time and several at once; with every input
/// good, the run ends quietly.
#[test]
fn verify_checks_every_input_after_its_reader_went_away() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let good = vector("plain.ndjson");
    let bad = vector("auth_tag_flipped_row2.ndjson");
    for threads in ["1", "4"] {
        for last in [&good, &bad] {
            let mut child = StdCommand::new(bin())
                .args(["verify", "--customer-id", VEC_ID, "--key-file"])
                .arg(&key)
                .args(std::iter::repeat_n(&good, 200))
                .arg(last)
                .args(["--threads", threads])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdout = child.stdout.take().unwrap();
            let mut first = [0u8; 10];
            stdout.read_exact(&mut first).unwrap();
            drop(stdout);
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8(out.stderr).unwrap();
            if last == &bad {
                assert_eq!(out.status.code(), Some(3), "--threads {threads}: {stderr}");
                assert!(
                    stderr.starts_with(&format!(
                        "error: {}: row 2: authentication failed\n",
                        bad.display()
                    )),
                    "{stderr}"
                );
                assert!(
                    stderr.ends_with("error: 1 of 201 inputs failed\n"),
                    "{stderr}"
                );
            } else {
                assert_eq!(out.status.code(), Some(0), "--threads {threads}: {stderr}");
                assert_eq!(stderr, "");
            }
        }
    }
}
