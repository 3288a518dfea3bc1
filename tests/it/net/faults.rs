//! What a download does when the server misbehaves (issue 13, items 1, 2 and 6): a stall caught
//! by the idle-read timeout, a multipart object resumed on its ETag, a server that ignores
//! `Range`, a `416`, and a stored `Content-Encoding` that must not be undone. Each outcome is the
//! exact bytes or rows, the exact exit status and message, and never a splice; no part of the
//! URL's query is ever shown.

use std::path::Path;
use std::time::{Duration, Instant};

use super::nginx::{Nginx, Options};
use super::proxy::{first, Fault, Proxy};
use super::seaweed::{Presign, Seaweed};
use super::{
    assert_no_query, cipherstream, decrypt_demo, demo_rows, demo_zip, fetch, signed, stderr,
};
use crate::util::{fixtures, private_key};

/// `n` bytes that differ at every offset from those of another seed.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// Plain nginx on loopback (plain `http://` is allowed there), Range ignored if asked.
fn plain_nginx(test: &str, ignore_range: bool) -> Option<Nginx> {
    Nginx::start(
        test,
        Options {
            plain: true,
            ignore_range,
            ..Options::default()
        },
    )
}

/// `http://PROXY/NAME` with a presigned-looking query.
fn via(proxy: &Proxy, name: &str) -> String {
    signed(&format!("http://{}/{name}", proxy.addr()))
}

/// Assert the file at `path` holds exactly `want`, without printing megabytes.
#[track_caller]
fn assert_file(path: &Path, want: &[u8]) {
    let got = std::fs::read(path).unwrap();
    assert_eq!(got.len(), want.len(), "{} bytes", path.display());
    assert!(got == want, "{}: the bytes differ", path.display());
}

#[test]
fn a_stall_is_caught_by_the_idle_timeout_and_the_download_resumes() {
    let Some(nginx) = plain_nginx("a_stall_is_caught_by_the_idle_timeout", false) else {
        return;
    };
    let body = pattern(1 << 20, 4);
    nginx.put("a.zip", &body);
    // The first connection delivers 300,000 bytes of the body, then nothing, and stays open.
    let proxy = Proxy::http(nginx.addr(), first(vec![Fault::Stall { after: 300_000 }]));
    let url = via(&proxy, "a.zip");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.zip");
    let start = Instant::now();
    let out = fetch(&url, &dest, &["--idle-timeout", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    assert_file(&dest, &body);
    assert_eq!(crate::util::entries(dir.path()), ["a.zip"]);
    let shown = format!("http://{}/a.zip", proxy.addr());
    assert!(
        stderr(&out).contains(&format!(
            "warning: {shown}: no byte arrived within the idle timeout (--idle-timeout): the \
             connection stalled at byte 300000; retry 1 of 8 in 0.0s"
        )),
        "{}",
        stderr(&out)
    );
    assert_no_query(&url, &out);
    // The stalled connection was given up and the rest asked for where the bytes stopped.
    let resumed = proxy
        .requests()
        .into_iter()
        .filter(|r| r.header("range") == Some("bytes=300000-"))
        .count();
    assert!(resumed >= 1, "{:?}", proxy.requests());
}

#[test]
fn a_server_that_stalls_every_time_fails_within_the_retries() {
    let Some(nginx) = plain_nginx("a_server_that_stalls_every_time_fails", false) else {
        return;
    };
    nginx.put("a.zip", &pattern(100_000, 5));
    // Every connection sends the response's head, then not one byte of the body.
    let proxy = Proxy::http(nginx.addr(), |_| Fault::Stall { after: 0 });
    assert_fails_within_the_idle_timeouts(&proxy);
}

#[test]
fn a_multipart_object_resumes_on_its_multipart_etag() {
    let Some(s3) = Seaweed::start("a_multipart_object_resumes_on_its_multipart_etag") else {
        return;
    };
    // Three parts: 5 MiB, 5 MiB and 1 MiB; the reset comes in the middle of the second.
    let body = pattern(11 << 20, 6);
    let object = s3.put_multipart("jobs/multi.zip", &body, 5 << 20);
    assert!(object.etag.ends_with("-3\""), "{}", object.etag);
    let proxy = Proxy::http(s3.addr(), first(vec![Fault::Reset { after: 7_000_000 }]));
    let url = s3.presign_with(
        "jobs/multi.zip",
        Presign {
            expires_in: 600,
            host: Some(proxy.addr()),
            signed_at: None,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("multi.zip");
    // One connection, so that the reset cuts the range it is planned in (with several, the
    // first connection's range ends before byte 7,000,000).
    let out = fetch(
        &url,
        &dest,
        &[
            "--expect-size",
            &body.len().to_string(),
            "--connections",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_file(&dest, &body);
    assert_no_query(&url, &out);
    // Every request for a range that does not start at byte 0 is conditional on the multipart
    // ETag, and the one after the reset resumed at the byte the reset cut.
    let seen = proxy.requests();
    let resumed: Vec<_> = seen
        .iter()
        .filter(|r| r.header("range").is_some_and(|r| r != "bytes=0-"))
        .collect();
    assert!(
        resumed
            .iter()
            .any(|r| r.header("range") == Some("bytes=7000000-")),
        "{seen:?}"
    );
    for r in resumed {
        assert_eq!(r.header("if-match"), Some(object.etag.as_str()), "{r:?}");
    }
}

#[test]
fn fetch_from_a_server_that_ignores_range_starts_over_and_never_splices() {
    let Some(nginx) = plain_nginx("fetch_from_a_server_that_ignores_range", true) else {
        return;
    };
    let body = pattern(1 << 20, 7);
    nginx.put("a.zip", &body);
    // Cut after 300,000 bytes: the resumed request asks for `bytes=300000-` and gets `200`
    // with the whole file.
    let proxy = Proxy::http(nginx.addr(), first(vec![Fault::Reset { after: 300_000 }]));
    let url = via(&proxy, "a.zip");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.zip");
    let out = fetch(&url, &dest, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_file(&dest, &body);
    assert_eq!(crate::util::entries(dir.path()), ["a.zip"]);
    let shown = format!("http://{}/a.zip", proxy.addr());
    assert!(
        err.lines().any(|l| l
            == format!(
                "warning: {shown}: the server ignored the range asked for and sent the whole \
                 object; starting the download again"
            )),
        "{err}"
    );
    assert_no_query(&url, &out);
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.header("range") == Some("bytes=300000-")),
        "the resumed request was not made"
    );
}

#[test]
fn decrypt_url_from_a_server_that_ignores_range_gives_the_exact_rows() {
    let Some(nginx) = plain_nginx("decrypt_url_from_a_server_that_ignores_range", true) else {
        return;
    };
    nginx.put("demo.zip", &demo_zip());
    // Every request is answered with the whole ZIP; the second is cut after 1,500 bytes.
    let proxy = Proxy::http(
        nginx.addr(),
        first(vec![Fault::Pass, Fault::Reset { after: 1500 }]),
    );
    let url = via(&proxy, "demo.zip");
    let dir = tempfile::tempdir().unwrap();
    let out = decrypt_demo(&url, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout == demo_rows(), "the rows differ");
    assert_no_query(&url, &out);
    assert!(proxy.connections() >= 2);
}

/// The state file a run leaves beside `dest` (`net::download`, version 2): the URL as shown, the
/// ETag, the total when known, and the bytes on disk claimed as one range from byte 0.
fn leave_partial(dest: &Path, shown: &str, etag: &str, total: Option<u64>, bytes: &[u8]) {
    let name = dest.file_name().unwrap().to_str().unwrap();
    let dir = dest.parent().unwrap();
    std::fs::write(dir.join(format!(".{name}.cipherstream-download")), bytes).unwrap();
    let state = serde_json::json!({
        "version": 2,
        "url": shown,
        "etag": etag,
        "total": total,
        "done": [[0, bytes.len()]],
    });
    std::fs::write(
        dir.join(format!(".{name}.cipherstream-download.json")),
        state.to_string(),
    )
    .unwrap();
}

#[test]
fn a_partial_file_that_already_holds_the_whole_object_is_not_downloaded_again() {
    let Some(nginx) = plain_nginx("a_partial_file_that_already_holds_the_whole", false) else {
        return;
    };
    let body = pattern(200_000, 8);
    nginx.put("a.zip", &body);
    let etag = nginx.etag("a.zip");
    let proxy = Proxy::http(nginx.addr(), |_| Fault::Pass);
    let url = via(&proxy, "a.zip");
    let shown = format!("http://{}/a.zip", proxy.addr());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.zip");

    // Killed after the last byte, with the total recorded: nothing to ask the server.
    leave_partial(&dest, &shown, &etag, Some(body.len() as u64), &body);
    let out = fetch(&url, &dest, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_file(&dest, &body);
    assert_eq!(crate::util::entries(dir.path()), ["a.zip"]);
    assert_eq!(proxy.requests().len(), 0, "{:?}", proxy.requests());

    // The total not recorded (no run writes such a state: bytes are claimed only once the
    // total is known): nothing says the bytes are all of the object, so it is downloaded again.
    std::fs::remove_file(&dest).unwrap();
    leave_partial(&dest, &shown, &etag, None, &body);
    let out = fetch(&url, &dest, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert_file(&dest, &body);
    assert_eq!(crate::util::entries(dir.path()), ["a.zip"]);
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].header("range"), Some("bytes=0-"));
    assert_eq!(seen[0].header("if-match"), None);
}

#[test]
fn a_416_for_more_bytes_than_the_object_holds_starts_over_never_spliced() {
    let Some(nginx) = plain_nginx("a_416_for_more_bytes_than_the_object", false) else {
        return;
    };
    let body = pattern(200_000, 9);
    nginx.put("a.zip", &body);
    let proxy = Proxy::http(nginx.addr(), |_| Fault::Pass);
    let url = via(&proxy, "a.zip");
    let shown = format!("http://{}/a.zip", proxy.addr());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.zip");
    // More bytes claimed than the object holds (its ETag the same: the server says so by
    // answering the If-Match): the state says 250,000 bytes of which 200,000 are done, and the
    // 416 to `bytes=200000-` says `bytes */200000`, which cannot be the same download.
    leave_partial(&dest, &shown, &nginx.etag("a.zip"), Some(250_000), &body);
    let out = fetch(&url, &dest, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_file(&dest, &body);
    assert_eq!(crate::util::entries(dir.path()), ["a.zip"]);
    assert!(
        err.lines().any(|l| l
            == format!(
                "warning: {shown}: the server has fewer bytes than were already downloaded; \
                 starting the download again"
            )),
        "{err}"
    );
    assert_no_query(&url, &out);
}

#[test]
fn no_accept_encoding_is_sent_and_a_stored_encoding_is_kept_as_stored() {
    let Some(nginx) = plain_nginx("no_accept_encoding_is_sent", false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A gzip export (made by `encrypt`), served with `Content-Encoding: gzip` as S3 serves an
    // object uploaded with that header.
    let key = private_key(dir.path(), "demo/demo.key");
    let export = dir.path().join("demo.ndjson.gz");
    let made = cipherstream()
        .args(["encrypt"])
        .arg(fixtures().join("demo/expected.ndjson"))
        .args([
            "--customer-id",
            "cust_demo_123",
            "--format",
            "gzip",
            "--key-file",
        ])
        .arg(&key)
        .arg("-o")
        .arg(&export)
        .output()
        .unwrap();
    assert_eq!(made.status.code(), Some(0), "{}", stderr(&made));
    let gz = std::fs::read(&export).unwrap();
    assert_eq!(&gz[..2], b"\x1f\x8b");
    nginx.put("encoded/demo.ndjson.gz", &gz);
    let proxy = Proxy::http(nginx.addr(), |_| Fault::Pass);
    let url = via(&proxy, "encoded/demo.ndjson.gz");

    let dest = dir.path().join("fetched.gz");
    let out = fetch(&url, &dest, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The stored bytes, not a decompressed view of them.
    assert_file(&dest, &gz);

    let out = cipherstream()
        .args([
            "decrypt",
            &url,
            "--customer-id",
            "cust_demo_123",
            "--key-file",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout == demo_rows(), "the rows differ");

    let seen = proxy.requests();
    assert!(seen.len() >= 2);
    for r in &seen {
        assert_eq!(r.header("accept-encoding"), None, "{r:?}");
    }
    // The server did say the body is encoded (else this test would prove nothing).
    let answer = response_head(nginx.addr(), "/encoded/demo.ndjson.gz");
    assert!(
        answer
            .lines()
            .any(|l| l.eq_ignore_ascii_case("content-encoding: gzip")),
        "{answer}"
    );
}

/// The response head nginx sends for `GET path`.
fn response_head(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "HEAD {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn a_server_that_never_answers_fails_within_the_idle_timeouts() {
    let Some(nginx) = plain_nginx("a_server_that_never_answers", false) else {
        return;
    };
    nginx.put("a.zip", &pattern(1000, 11));
    // Every connection is accepted and the request passed on, but not one byte of the answer
    // comes back: the wait for the response's head is an idle read too.
    let proxy = Proxy::tcp(nginx.addr(), |_| Fault::Stall { after: 0 });
    assert_fails_within_the_idle_timeouts(&proxy);
}

/// `fetch` through `proxy`, whose every connection stalls, with a 1 s idle timeout and one retry:
/// exit 1 within seconds with the stall named, nothing at the destination, no query shown.
fn assert_fails_within_the_idle_timeouts(proxy: &Proxy) {
    let url = via(proxy, "a.zip");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.zip");
    let start = Instant::now();
    let out = fetch(&url, &dest, &["--idle-timeout", "1", "--retries", "1"]);
    let elapsed = start.elapsed();
    let err = stderr(&out);
    // Network failures that outlast the retries exit 1 (SPEC section 4).
    assert_eq!(out.status.code(), Some(1), "{err}");
    // Two tries of a 1 s idle timeout and one backoff of at most 0.5 s.
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let shown = format!("http://{}/a.zip", proxy.addr());
    assert_eq!(
        err.lines().rfind(|l| l.starts_with("error: ")),
        Some(
            format!(
                "error: {shown}: the download failed after 2 tries in a row without progress: \
                 no byte arrived within the idle timeout (--idle-timeout): the connection \
                 stalled"
            )
            .as_str()
        ),
        "{err}"
    );
    assert!(!dest.exists());
    assert_no_query(&url, &out);
}
