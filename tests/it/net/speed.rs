//! Parallel `fetch` and read-ahead for `decrypt URL` (issue 13, items 4 and 5) against real
//! servers through the fault proxy: resets on several connections, a kill -9 mid-download, a state
//! file of an older version, a decrypt through resets, and nothing but retry lines on a stderr that
//! is not a terminal. No test here is timed: the speed is the benchmark's.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::nginx::{self, Nginx};
use super::proxy::{first, Fault, Proxy};
use super::wait_until;
use crate::util::{cipherstream, entries};

/// `cipherstream decrypt INPUT` for the exports of [`export`] (customer `cust_1`, key `key`).
fn decrypt(input: impl AsRef<std::ffi::OsStr>, key: &Path) -> assert_cmd::Command {
    let mut cmd = cipherstream();
    cmd.arg("decrypt")
        .arg(input)
        .args(["--customer-id", "cust_1", "--key-file"])
        .arg(key);
    cmd
}

/// `n` bytes that differ at every offset from those of another seed.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// `http://PROXY/NAME`: nginx's file through the proxy.
fn via(proxy: &Proxy, name: &str) -> String {
    format!("http://{}/{name}", proxy.addr())
}

fn plain_nginx(test: &str, limit_rate: Option<u64>) -> Option<Nginx> {
    Nginx::start(
        test,
        nginx::Options {
            limit_rate,
            plain: true,
            ..Default::default()
        },
    )
}

/// The `Range` header of every request, in order.
fn ranges(proxy: &Proxy) -> Vec<String> {
    proxy
        .requests()
        .iter()
        .map(|r| r.header("range").unwrap_or("none").to_owned())
        .collect()
}

#[test]
fn a_parallel_fetch_survives_resets_on_several_connections_with_exact_bytes() {
    let Some(web) = plain_nginx("a_parallel_fetch_survives_resets", None) else {
        return;
    };
    let body = pattern(24 << 20, 3);
    web.put("big.zip", &body);
    // The first request (the whole object, kept for its first range) passes; of the three other
    // ranges' connections, two are reset and one closed early, then a 503.
    let proxy = Proxy::http(
        web.addr(),
        first(vec![
            Fault::Pass,
            Fault::Reset { after: 1_000_000 },
            Fault::Reset { after: 2_500_000 },
            Fault::Close { after: 300_000 },
            Fault::Status { code: 503 },
        ]),
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big.zip");
    let out = cipherstream()
        .args(["fetch", &via(&proxy, "big.zip"), "--connections", "4", "-o"])
        .arg(&dest)
        .args(["--expect-size", &body.len().to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(std::fs::read(&dest).unwrap() == body, "the bytes differ");
    assert_eq!(entries(dir.path()), ["big.zip"]);
    // One retry line per failure (stderr is not a terminal: no bar, no summary).
    let retries: Vec<&str> = stderr.lines().collect();
    assert!(retries.len() >= 4, "{stderr}");
    assert!(
        retries
            .iter()
            .all(|l| l.starts_with("warning: ") && l.contains("; retry ")),
        "{stderr}"
    );
    let seen = proxy.requests();
    let etag = web_etag(&web, "big.zip");
    assert_eq!(seen[0].header("range"), Some("bytes=0-"));
    assert_eq!(seen[0].header("if-match"), None);
    for r in &seen[1..] {
        assert_eq!(
            r.header("if-match"),
            Some(etag.as_str()),
            "{:?}",
            ranges(&proxy)
        );
    }
    // The object was cut in four ranges of 6 MiB; the first came with the first request.
    let quarter = 6u64 << 20;
    let asked = ranges(&proxy);
    for k in 1..3u64 {
        let range = format!("bytes={}-{}", k * quarter, (k + 1) * quarter - 1);
        assert!(asked.contains(&range), "{range} not in {asked:?}");
    }
    assert!(
        asked.contains(&format!("bytes={}-", 3 * quarter)),
        "{asked:?}"
    );
    // The first request's body was kept for the first range, not asked for again.
    assert!(
        !asked
            .iter()
            .any(|r| r.starts_with("bytes=0-") && r != "bytes=0-"),
        "{asked:?}"
    );
}

/// The ETag nginx gives `name` (asked directly, not through the proxy).
fn web_etag(web: &Nginx, name: &str) -> String {
    let mut s = std::net::TcpStream::connect(web.addr()).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "HEAD /{name} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .expect("nginx sends an ETag")
        .trim()
        .to_owned()
}

/// The ranges the state file claims done, and the file's JSON.
fn claimed(state: &Path) -> Option<(Vec<(u64, u64)>, serde_json::Value)> {
    let text = std::fs::read(state).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let done = json["done"]
        .as_array()?
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
        .collect();
    Some((done, json))
}

#[test]
fn a_parallel_fetch_killed_with_sigkill_resumes_the_claimed_ranges_exactly() {
    // 1 MB/s per connection: 24 MiB takes about 6 s on 4 connections, time to kill it midway.
    let Some(web) = plain_nginx("a_parallel_fetch_killed_with_sigkill", Some(1_000_000)) else {
        return;
    };
    let body = pattern(24 << 20, 5);
    web.put("job.zip", &body);
    let proxy = Proxy::http(web.addr(), |_| Fault::Pass);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("job.zip");
    let state = dir.path().join(".job.zip.cipherstream-download.json");
    let part = dir.path().join(".job.zip.cipherstream-download");
    let url = format!("{}?token=secret", via(&proxy, "job.zip"));
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("cipherstream"))
        .args(["fetch", &url, "-o"])
        .arg(&dest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the state claims bytes in at least two ranges (several connections), then kill.
    let done = wait_until("claimed ranges", Duration::from_secs(60), || {
        Ok(claimed(&state).filter(|(done, _)| {
            done.len() >= 2 && done.iter().map(|(a, b)| b - a).sum::<u64>() >= 2 << 20
        }))
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let (done, json) = done.unwrap();
    assert!(!dest.exists());
    assert_eq!(json["version"], 2);
    assert_eq!(
        json["url"],
        via(&proxy, "job.zip"),
        "the query is never kept"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Every byte the state claims is on disk, and right.
    let (done, _) = claimed(&state).unwrap_or((done, json));
    let partial = std::fs::read(&part).unwrap();
    let mut claimed_bytes = 0;
    for &(a, b) in &done {
        let (a, b) = (a as usize, b as usize);
        assert!(
            partial.len() >= b,
            "claimed up to {b}, {} on disk",
            partial.len()
        );
        assert!(partial[a..b] == body[a..b], "claimed bytes {a}-{b} differ");
        claimed_bytes += b - a;
    }
    // The next run fetches only what is missing (the proxy counts the bytes it delivers after a
    // connection's first header block: a connection reused for another range adds that answer's
    // headers, a few hundred bytes each).
    let before: u64 = proxy.delivered().iter().sum();
    let requests_before = proxy.requests().len();
    let out = cipherstream()
        .args(["fetch", &url, "-o"])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&dest).unwrap() == body, "the bytes differ");
    assert_eq!(entries(dir.path()), ["job.zip"]);
    let second: u64 = proxy.delivered().iter().sum::<u64>() - before;
    assert!(
        second <= (body.len() - claimed_bytes) as u64 + 16 * 1024,
        "the second run received {second} bytes, though {claimed_bytes} of {} were claimed",
        body.len()
    );
    // And every one of its requests was a range conditional on the first run's ETag.
    let etag = web_etag(&web, "job.zip");
    for r in &proxy.requests()[requests_before..] {
        assert_eq!(r.header("if-match"), Some(etag.as_str()), "{}", r.line);
    }
}

#[test]
fn a_state_file_of_an_older_version_is_not_trusted() {
    let Some(web) = plain_nginx("a_state_file_of_an_older_version", None) else {
        return;
    };
    let body = pattern(3 << 20, 9);
    web.put("old.zip", &body);
    let proxy = Proxy::http(web.addr(), |_| Fault::Pass);
    let url = via(&proxy, "old.zip");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("old.zip");
    // What an earlier cipherstream left: bytes it claimed by their count alone.
    std::fs::write(
        dir.path().join(".old.zip.cipherstream-download"),
        pattern(1 << 20, 0xff),
    )
    .unwrap();
    let etag = web_etag(&web, "old.zip");
    std::fs::write(
        dir.path().join(".old.zip.cipherstream-download.json"),
        serde_json::json!({"version": 1, "url": url, "etag": etag, "total": body.len()})
            .to_string(),
    )
    .unwrap();
    let out = cipherstream()
        .args(["fetch", &url, "-o"])
        .arg(&dest)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(std::fs::read(&dest).unwrap() == body, "spliced bytes");
    assert_eq!(
        stderr,
        format!(
            "warning: {url}: the partial download was left by another version of cipherstream; \
             starting the download again\n"
        )
    );
    assert_eq!(ranges(&proxy), ["bytes=0-"]);
}

#[test]
fn decrypt_url_reads_ahead_on_several_connections_through_resets() {
    let Some(web) = plain_nginx("decrypt_url_reads_ahead", None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (rows, key, bytes) = export(dir.path());
    web.put("rows.ndjson.gz", &bytes);
    // The first request passes; read-ahead connections are reset, closed and refused.
    let proxy = Proxy::http(
        web.addr(),
        first(vec![
            Fault::Pass,
            Fault::Reset { after: 300_000 },
            Fault::Close { after: 100_000 },
            Fault::Pass,
            Fault::Status { code: 503 },
            Fault::Reset { after: 10 },
        ]),
    );
    let dest = dir.path().join("out.ndjson");
    let out = decrypt(via(&proxy, "rows.ndjson.gz"), &key)
        .arg("-o")
        .arg(&dest)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        std::fs::read_to_string(&dest).unwrap() == rows,
        "rows differ"
    );
    assert!(
        stderr
            .lines()
            .all(|l| l.starts_with("warning: ") && l.contains("; retry ")),
        "{stderr}"
    );
    // It read ahead in closed ranges of 1 MiB, each conditional on the ETag.
    let etag = web_etag(&web, "rows.ndjson.gz");
    let seen = proxy.requests();
    let closed: Vec<_> = seen
        .iter()
        .filter(|r| r.header("range").is_some_and(|v| !v.ends_with('-')))
        .collect();
    assert!(closed.len() >= 4, "{:?}", ranges(&proxy));
    for r in &seen[1..] {
        assert_eq!(r.header("if-match"), Some(etag.as_str()), "{}", r.line);
    }
}

#[test]
fn a_server_that_ignores_range_is_read_on_one_connection() {
    let Some(web) = Nginx::start(
        "a_server_that_ignores_range",
        nginx::Options {
            plain: true,
            ignore_range: true,
            ..Default::default()
        },
    ) else {
        return;
    };
    let body = pattern(20 << 20, 11);
    web.put("whole.zip", &body);
    let proxy = Proxy::http(web.addr(), |_| Fault::Pass);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("whole.zip");
    let out = cipherstream()
        .args(["fetch", &via(&proxy, "whole.zip"), "-o"])
        .arg(&dest)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(std::fs::read(&dest).unwrap() == body, "the bytes differ");
    assert_eq!(stderr, "");
    // The first answer was the whole object: no other range was asked for.
    assert_eq!(ranges(&proxy), ["bytes=0-"]);
}

/// About 6 MB of rows, and a gzip export of them (more than 4 MiB) encrypted by cipherstream
/// itself for customer `cust_1` under the key at the path returned.
fn export(dir: &Path) -> (String, std::path::PathBuf, Vec<u8>) {
    let plain = dir.join("plain.ndjson");
    let mut rows = String::new();
    for i in 0..40_000 {
        rows.push_str(&format!(
            "{{\"id\":{i},\"note\":\"{}\"}}\n",
            "abcdefghij".repeat(12)
        ));
    }
    std::fs::write(&plain, &rows).unwrap();
    let key = dir.join("k.key");
    std::fs::write(&key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let export = dir.join("rows.ndjson.gz");
    let made = cipherstream()
        .arg("encrypt")
        .arg(&plain)
        .arg("-o")
        .arg(&export)
        .args(["--format", "gzip", "--customer-id", "cust_1", "--key-file"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(made.status.code(), Some(0), "{made:?}");
    let bytes = std::fs::read(&export).unwrap();
    assert!(bytes.len() > 4 << 20, "{} bytes", bytes.len());
    (rows, key, bytes)
}

#[test]
fn decrypt_url_from_a_server_that_ignores_range_does_not_read_ahead() {
    let Some(web) = Nginx::start(
        "decrypt_url_from_a_server_that_ignores_range",
        nginx::Options {
            plain: true,
            ignore_range: true,
            ..Default::default()
        },
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (rows, key, bytes) = export(dir.path());
    web.put("rows.ndjson.gz", &bytes);
    let proxy = Proxy::http(web.addr(), |_| Fault::Pass);
    let out = decrypt(via(&proxy, "rows.ndjson.gz"), &key)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        String::from_utf8(out.stdout).unwrap() == rows,
        "rows differ"
    );
    assert_eq!(stderr, "");
    // No range but the whole object was asked for (the container's sniffing may read the start
    // twice): a range ahead would have brought the whole object again.
    let asked = ranges(&proxy);
    assert!(asked.iter().all(|r| r == "bytes=0-"), "{asked:?}");
}

#[test]
fn a_first_request_that_fails_is_made_again() {
    let Some(web) = plain_nginx("a_first_request_that_fails", None) else {
        return;
    };
    let body = pattern(12 << 20, 13);
    web.put("late.zip", &body);
    // The first request is refused (503); the next one's body is reset before its first byte.
    let proxy = Proxy::http(
        web.addr(),
        first(vec![Fault::Status { code: 503 }, Fault::Reset { after: 0 }]),
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("late.zip");
    let out = cipherstream()
        .args(["fetch", &via(&proxy, "late.zip"), "-o"])
        .arg(&dest)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(std::fs::read(&dest).unwrap() == body, "the bytes differ");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "warning: {}: the server answered 503 at byte 0; retry 1 of 8 in ",
            via(&proxy, "late.zip")
        )),
        "{stderr}"
    );
    // (Retry 1 or 2: the other range's new bytes may have come first, and they are progress.)
    assert!(lines[1].contains("at byte 0; retry "), "{stderr}");
    // Asked again: the whole object, then (its size known) the first range alone.
    let asked = ranges(&proxy);
    assert_eq!(asked[..2], ["bytes=0-", "bytes=0-"], "{asked:?}");
    assert!(asked.contains(&"bytes=0-6291455".to_owned()), "{asked:?}");
}

#[test]
fn a_failed_input_stops_its_download_before_the_next_input_is_read() {
    let test = "a_failed_input_stops_its_download";
    let Some(fast) = plain_nginx(test, None) else {
        return;
    };
    // The second input takes about 4 s: 2 MB at 500 kB/s on one connection.
    let Some(slow) = plain_nginx(test, Some(500_000)) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, key, good) = export(dir.path());
    slow.put("good.ndjson.gz", &good[..]);
    // The first input is sealed for another customer: row 0 fails (exit 3) while its download,
    // cut after 600 kB and refused from then on, waits to retry (up to 30 s a wait).
    let plain = dir.path().join("other.ndjson");
    std::fs::write(&plain, "{\"n\":1}\n".repeat(200_000)).unwrap();
    let other = dir.path().join("other.export");
    let made = cipherstream()
        .arg("encrypt")
        .arg(&plain)
        .arg("-o")
        .arg(&other)
        .args([
            "--format",
            "ndjson",
            "--customer-id",
            "cust_other",
            "--key-file",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(made.status.code(), Some(0), "{made:?}");
    fast.put("bad.ndjson", &std::fs::read(&other).unwrap());
    // (Two connections pass 600 kB: the container's sniffing reads the start, then reads again
    // from byte 0.)
    let refusing = Proxy::http(fast.addr(), |i| match i {
        0 | 1 => Fault::Close { after: 600_000 },
        _ => Fault::Status { code: 503 },
    });
    let slow_proxy = Proxy::http(slow.addr(), |_| Fault::Pass);
    let bad_url = via(&refusing, "bad.ndjson");
    let out = cipherstream()
        .args(["verify", &bad_url, &via(&slow_proxy, "good.ndjson.gz")])
        .args(["--customer-id", "cust_1", "--retries", "6", "--key-file"])
        .arg(&key)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    // Once the first input's error is reported, its download says nothing more: its retry waits
    // ended with the run (before, they went on, a line each, while the second input was read).
    let lines: Vec<&str> = stderr.lines().collect();
    let failed = lines
        .iter()
        .position(|l| l.starts_with(&format!("error: {bad_url}")))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        lines[failed + 1..]
            .iter()
            .all(|l| !(l.starts_with("warning: ") && l.contains(&bad_url))),
        "{stderr}"
    );
}

/// On a terminal, `fetch` draws a bar with the bytes of the total, the retries so far, the rate
/// and the ETA, then a one-line summary; the URL's query is in neither. Off a terminal (stderr a
/// pipe), a download without retries prints nothing at all (issue 13, item 5).
#[test]
fn the_download_bar_is_drawn_on_a_terminal_only() {
    let test = "the_download_bar_is_drawn_on_a_terminal_only";
    if !crate::hardening::script_available() {
        return;
    }
    // 300 KB at 100 KB/s: a few seconds, time for the bar to be drawn more than once.
    let Some(nginx) = plain_nginx(test, Some(100_000)) else {
        return;
    };
    let body = pattern(300_000, 7);
    nginx.put("bar.bin", &body);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("bar.bin");
    let url = format!("http://{}/bar.bin?X-Amz-Signature=sekrit", nginx.addr());
    let command = format!(
        "{} fetch --connections 1 '{url}' -o {}",
        assert_cmd::cargo::cargo_bin("cipherstream").display(),
        dest.display()
    );
    let screen = crate::hardening::under_pty(&command);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    let shown = format!("http://{}/bar.bin", nginx.addr());
    assert!(
        screen.contains(&format!("{shown}: [")),
        "no bar: {screen:?}"
    );
    assert!(
        screen.contains("/292.97 KiB, 0 retries, "),
        "no bytes of the total: {screen:?}"
    );
    assert!(screen.contains("/s, ETA "), "no rate and ETA: {screen:?}");
    assert!(
        screen.contains(&format!(
            "{}: 300000 bytes (300000 this run, 0 retries) in ",
            dest.display()
        )),
        "no summary: {screen:?}"
    );
    assert!(!screen.contains("sekrit"), "{screen:?}");

    std::fs::remove_file(&dest).unwrap();
    let out = cipherstream()
        .args(["fetch", "--connections", "1", &url, "-o"])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
}

/// `cipherstream ARGS` started in the background with its output captured (and no
/// `CIPHERSTREAM_*` variable of the test's own environment).
fn spawn_cipherstream(args: &[&std::ffi::OsStr]) -> std::process::Child {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("cipherstream"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CIPHERSTREAM_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait (up to 20 s) until the proxy has forwarded `bytes` on one connection.
fn wait_for_delivered(proxy: &Proxy, bytes: u64) {
    wait_until("a connection's bytes", Duration::from_secs(20), || {
        Ok(proxy.delivered().iter().any(|&n| n >= bytes).then_some(()))
    })
    .unwrap();
}

/// The object replaced on the server in the middle of one run (issue 13, item 7): the first
/// connection stalls after 1 MB, the object is replaced, and the request made after the stall
/// carries `If-Match` with the first ETag. `fetch` is refused (412), says it starts over, and
/// ends with exactly the new object; `decrypt URL` stops with exit 1 and the reason, and
/// leaves nothing at `-o`. Never a splice of the two.
#[test]
fn an_object_replaced_mid_download_is_never_spliced() {
    let Some(web) = plain_nginx("an_object_replaced_mid_download", None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let old = pattern(3_000_000, 1);
    let new = pattern(3_500_000, 2);
    web.put("obj.bin", &old);
    let first_etag = web_etag(&web, "obj.bin");
    let proxy = Proxy::http(web.addr(), first(vec![Fault::Stall { after: 1_000_000 }]));
    let dest = dir.path().join("obj.bin");
    let url = via(&proxy, "obj.bin");
    let child = spawn_cipherstream(&[
        "fetch".as_ref(),
        url.as_ref(),
        "--connections".as_ref(),
        "1".as_ref(),
        "--idle-timeout".as_ref(),
        "2".as_ref(),
        "-o".as_ref(),
        dest.as_os_str(),
    ]);
    wait_for_delivered(&proxy, 1_000_000);
    web.put("obj.bin", &new);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(std::fs::read(&dest).unwrap() == new, "not the new object");
    assert_eq!(entries(dir.path()), ["obj.bin"]);
    assert!(
        stderr.contains(&format!(
            "warning: {}: the object changed since the download started (its ETag no longer \
             matches); starting the download again",
            url.split('?').next().unwrap()
        )),
        "{stderr}"
    );
    let seen = proxy.requests();
    assert!(seen.len() >= 3, "{:?}", ranges(&proxy));
    assert_eq!(seen[1].header("if-match"), Some(first_etag.as_str()));
    assert!(
        seen[1].header("range").unwrap().starts_with("bytes=1"),
        "{:?}",
        ranges(&proxy)
    );
    assert_eq!(seen[2].header("range"), Some("bytes=0-"));

    // decrypt URL on one connection: the same replacement is an error, never new rows after
    // old ones.
    let (_, key, bytes) = export(dir.path());
    web.put("rows.ndjson.gz", &bytes);
    // The first request's body is dropped once the input's kind is known (the reader seeks back
    // to byte 0), so the first two connections stall; whichever is reading when the object is
    // replaced, every request after the first is conditional on the first ETag.
    let proxy = Proxy::http(web.addr(), |i| match i {
        0 | 1 => Fault::Stall { after: 1_000_000 },
        _ => Fault::Pass,
    });
    let out_path = dir.path().join("rows.ndjson");
    let url = via(&proxy, "rows.ndjson.gz");
    let child = spawn_cipherstream(&[
        "decrypt".as_ref(),
        url.as_ref(),
        "--connections".as_ref(),
        "1".as_ref(),
        "--idle-timeout".as_ref(),
        "2".as_ref(),
        "--customer-id".as_ref(),
        "cust_1".as_ref(),
        "--key-file".as_ref(),
        key.as_os_str(),
        "-o".as_ref(),
        out_path.as_os_str(),
    ]);
    wait_for_delivered(&proxy, 1_000_000);
    let again = dir.path().join("again");
    std::fs::create_dir(&again).unwrap();
    let (_, _, other) = export(&again);
    web.put("rows.ndjson.gz", &other);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let shown = format!("http://{}/rows.ndjson.gz", proxy.addr());
    assert!(
        stderr.contains(&format!(
            "error: {shown}: the object changed while it was being read (its ETag or size moved)"
        )),
        "{stderr}"
    );
    assert!(!out_path.exists());
}

/// A server that names the object by no ETag (Python's `http.server`): `decrypt URL` reads it
/// in one request, but the second request it needs (after reading what kind of input it is)
/// cannot be checked to be of the same object, so it stops with exit 1 and says to `fetch` it
/// instead, which does so exactly (it starts over rather than resume).
#[test]
fn a_server_without_a_strong_etag_is_not_read_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, key, bytes) = export(dir.path());
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("rows.ndjson.gz"), &bytes).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the file server", Duration::from_secs(10), || {
        Ok(std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok()
            .then_some(()))
    })
    .unwrap();
    let url = format!("http://127.0.0.1:{port}/rows.ndjson.gz");
    let out = decrypt(&url, &key).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: {url}: the server gives the object no strong ETag, so a second request \
             cannot be checked to read the same object\nhint: download it whole with \
             `cipherstream fetch URL -o FILE` (without an ETag it starts over rather than \
             resume), then decrypt FILE\n"
        )
    );
    let dest = dir.path().join("rows.ndjson.gz");
    let fetched = cipherstream()
        .args(["fetch", &url, "-o"])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(fetched.status.code(), Some(0), "{fetched:?}");
    let decrypted = decrypt(&dest, &key).output().unwrap();
    assert_eq!(decrypted.status.code(), Some(0));
    assert!(decrypted.stdout == rows.as_bytes(), "rows differ");
    let _ = server.kill();
    let _ = server.wait();
}
