//! Several inputs at once (`--output-dir`, `verify`) and standard output into a pipe (issue 16).

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

/// How many workers a decrypt of standard input starts by default when its standard output is
/// `stdout`: counted while the run waits for the rest of its input.
#[cfg(target_os = "linux")]
fn default_workers(stdout: Stdio) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "keys/customer.key");
    let mut child = decrypt_stdin(&key).stdout(stdout).spawn().unwrap();
    let export = std::fs::read(vector("plain.ndjson")).unwrap();
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
    assert_eq!(out.status.code(), Some(0));
    seen
}

/// Into a pipe, the default leaves a core for the pipe's reader; into a file it uses every core
/// (issue 16, item 2: on 2 cores `--threads 1` beat the default into a pipe).
#[cfg(target_os = "linux")]
#[test]
fn the_default_thread_count_leaves_a_pipe_s_reader_a_core() {
    let cores = std::thread::available_parallelism().unwrap().get();
    let file = tempfile::tempfile().unwrap();
    assert_eq!(default_workers(Stdio::from(file)), cores);
    assert_eq!(default_workers(Stdio::piped()), (cores - 1).max(1));
}
