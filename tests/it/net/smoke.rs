//! Smoke tests of the test servers themselves, driven by curl: each behaviour in the table of
//! `net/mod.rs`, the TLS set-up, the rate limit, and every proxy fault, so that a test of our
//! client that leans on them leans on something pinned.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use super::nginx::{self, Nginx};
use super::proxy::{first, Fault, Proxy};
use super::seaweed::{Presign, Seaweed};
use super::{available, find_program};

/// What one curl run gave.
struct Curl {
    /// curl's exit status.
    exit: i32,
    /// The HTTP status (0 when no response came).
    status: u16,
    /// The response header block.
    head: String,
    /// The body as received.
    body: Vec<u8>,
    elapsed: Duration,
}

impl Curl {
    /// The value of the response header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn curl_available(test: &str) -> bool {
    available(
        test,
        "curl",
        "apt-get install curl",
        find_program("curl", &[]).is_some(),
    )
}

/// Run `curl ARGS` (one request), keeping the head and the body apart.
fn curl(args: &[&str]) -> Curl {
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("head"), dir.path().join("body"));
    let start = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--no-progress-meter", "-w", "%{http_code}"])
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(args)
        .output()
        .expect("run curl");
    let elapsed = start.elapsed();
    let read = |p: &Path| std::fs::read(p).unwrap_or_default();
    Curl {
        exit: out.status.code().expect("curl exited"),
        status: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap(),
        head: String::from_utf8_lossy(&read(&head)).into_owned(),
        body: read(&body),
        elapsed,
    }
}

/// Assert `got == want` without printing megabytes: the lengths, then the first difference.
#[track_caller]
fn same(got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "body length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("the bodies differ from byte {i} on");
    }
}

/// [`curl`] for a request that must get an answer (curl exits 0 for every HTTP status).
#[track_caller]
fn get(args: &[&str]) -> Curl {
    let r = curl(args);
    assert_eq!(r.exit, 0, "curl {args:?}");
    r
}

/// `n` bytes that differ from one offset to the next, so that a shifted range shows.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

#[test]
fn seaweed_answers_presigned_urls_as_the_table_says() {
    let test = "seaweed_answers_presigned_urls_as_the_table_says";
    if !curl_available(test) {
        return;
    }
    let Some(s3) = Seaweed::start(test) else {
        return;
    };
    let key = "jobs/job-1.zip";
    let body = pattern(10240, 0);
    let v1 = s3.put(key, &body);
    assert_eq!(v1.size, 10240);
    assert_eq!(v1, s3.head(key));
    // `"` + 32 hex digits (the MD5 of the bytes) + `"`.
    let hex = v1.etag.trim_matches('"');
    assert!(
        v1.etag.len() == 34 && hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        v1.etag
    );

    // A URL that expires 3 s after it is signed (`X-Amz-Date` is in whole seconds, so at least
    // 2 s from now): valid now, tried again at the end.
    let signed = Instant::now();
    let short = s3.presign(key, 3);
    assert_eq!(s3.endpoint(), format!("http://{}", s3.addr()));
    assert!(short.starts_with(&format!("{}/exports/jobs/job-1.zip?", s3.endpoint())));
    let r = get(&[&short]);
    assert_eq!((r.exit, r.status), (0, 200));
    same(&r.body, &body);
    assert_eq!(r.header("ETag"), Some(v1.etag.as_str()));
    assert_eq!(r.header("Accept-Ranges"), Some("bytes"));

    let url = s3.presign(key, 600);
    let r = get(&["-H", "Range: bytes=10000-", &url]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 10000-10239/10240"));
    same(&r.body, &body[10000..]);

    for start in [10240, 20000] {
        let r = get(&["-H", &format!("Range: bytes={start}-"), &url]);
        assert_eq!(r.status, 416);
        assert_eq!(r.header("Content-Range"), Some("bytes */10240"));
        assert!(r.body_text().contains("<Code>InvalidRange</Code>"));
    }

    let stale = "\"0123456789abcdef0123456789abcdef\"";
    let r = get(&["-H", &format!("If-Match: {stale}"), &url]);
    assert_eq!(r.status, 412);
    assert!(r.body_text().contains("<Code>PreconditionFailed</Code>"));
    let r = get(&[
        "-H",
        &format!("If-Match: {}", v1.etag),
        "-H",
        "Range: bytes=10-19",
        &url,
    ]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 10-19/10240"));
    same(&r.body, &body[10..20]);

    // Refusals: the signature altered, a signed parameter altered, a missing key.
    let (head, sig) = url.split_at(url.len() - 64);
    let flipped: String = sig
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    for forged in [
        format!("{head}{flipped}"),
        url.replace("X-Amz-Expires=600", "X-Amz-Expires=601"),
    ] {
        let r = get(&[&forged]);
        assert_eq!(r.status, 403);
        assert!(
            r.body_text().contains("<Code>SignatureDoesNotMatch</Code>"),
            "{}",
            r.body_text()
        );
    }
    let r = get(&[&s3.presign("jobs/missing.zip", 600)]);
    assert_eq!(r.status, 404);
    assert!(r.body_text().contains("<Code>NoSuchKey</Code>"));

    // Expired: signed an hour ago for a minute.
    let old = s3.presign_with(
        key,
        Presign {
            expires_in: 60,
            host: None,
            signed_at: Some(SystemTime::now() - Duration::from_secs(3600)),
        },
    );
    let r = get(&[&old]);
    assert_eq!(r.status, 403);
    let text = r.body_text();
    assert!(
        text.contains("<Code>AccessDenied</Code><Message>Request has expired</Message>"),
        "{text}"
    );
    assert!(!text.contains("<Expires>"), "{text}");

    // A multipart object: 5 MiB and 1000 bytes in two parts.
    let big = pattern(5 * 1024 * 1024 + 1000, 7);
    let mp = s3.put_multipart("jobs/multi.zip", &big, 5 * 1024 * 1024);
    assert!(mp.etag.ends_with("-2\""), "{}", mp.etag);
    assert_eq!(mp, s3.head("jobs/multi.zip"));
    let multi = s3.presign("jobs/multi.zip", 600);
    let r = get(&[&multi]);
    assert_eq!((r.status, r.header("ETag")), (200, Some(mp.etag.as_str())));
    same(&r.body, &big);
    let r = get(&["-H", "Range: bytes=5242870-5242889", &multi]);
    assert_eq!(
        r.header("Content-Range"),
        Some("bytes 5242870-5242889/5243880")
    );
    same(&r.body, &big[5242870..5242890]);

    // Replaced: a new ETag, If-Match on the old one fails, If-Range on it is ignored.
    let body2 = pattern(10240, 1);
    let v2 = s3.put(key, &body2);
    assert_ne!(v2.etag, v1.etag);
    let r = get(&[
        "-H",
        &format!("If-Match: {}", v1.etag),
        "-H",
        "Range: bytes=5-",
        &url,
    ]);
    assert_eq!(r.status, 412);
    let r = get(&[
        "-H",
        &format!("If-Range: {}", v1.etag),
        "-H",
        "Range: bytes=5-",
        &url,
    ]);
    assert_eq!(r.status, 206, "SeaweedFS ignores If-Range");
    assert_eq!(r.header("ETag"), Some(v2.etag.as_str()));
    same(&r.body, &body2[5..]);
    assert_eq!(s3.put(key, &body2).etag, v2.etag, "same bytes, same ETag");

    // Replaced while a GET is in flight: that GET still delivers the old object, whole.
    let during = "jobs/during.zip";
    let old_body = pattern(12 << 20, 2);
    s3.put(during, &old_body);
    let got = read_while(&s3.presign(during, 600), 1 << 20, || {
        s3.put(during, &pattern(12 << 20, 3));
    });
    assert!(
        got == old_body,
        "the in-flight GET did not deliver the old object"
    );

    // Through the proxy: a URL signed for the proxy's host, and the request it saw.
    let proxy = Proxy::http(s3.addr(), |_| Fault::Pass);
    let via = s3.presign_with(
        key,
        Presign {
            expires_in: 600,
            host: Some(proxy.addr()),
            signed_at: None,
        },
    );
    let r = get(&["-H", "Range: bytes=5-", &via]);
    assert_eq!(r.status, 206);
    same(&r.body, &body2[5..]);
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0]
            .line
            .starts_with("GET /exports/jobs/job-1.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256&"),
        "{}",
        seen[0].line
    );
    assert_eq!(seen[0].header("range"), Some("bytes=5-"));

    // Deleted: the next GET is a 404.
    s3.delete(during);
    assert_eq!(get(&[&s3.presign(during, 600)]).status, 404);

    // The short-lived URL, now past its expiry.
    std::thread::sleep(Duration::from_millis(4200).saturating_sub(signed.elapsed()));
    let r = get(&[&short]);
    assert_eq!(r.status, 403);
    assert!(
        r.body_text()
            .contains("<Code>AccessDenied</Code><Message>Request has expired</Message>"),
        "{}",
        r.body_text()
    );
}

/// GET `url` (plain HTTP) with a client of our own: read the head and `first` body bytes, call
/// `meanwhile`, then read the rest (the body as `Content-Length` gives it).
fn read_while(url: &str, first: usize, meanwhile: impl FnOnce()) -> Vec<u8> {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let body_start = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed before its head");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..body_start]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = got.split_off(body_start);
    while body.len() < first {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        body.extend_from_slice(&buf[..n]);
    }
    meanwhile();
    s.read_to_end(&mut body).unwrap();
    assert_eq!(body.len(), length);
    body
}

#[test]
fn nginx_serves_https_with_the_test_ca_and_ranges() {
    let test = "nginx_serves_https_with_the_test_ca_and_ranges";
    if !curl_available(test) {
        return;
    }
    let Some(web) = Nginx::start(test, nginx::Options::default()) else {
        return;
    };
    let body = pattern(1000, 0);
    web.put("export.zip", &body);
    let url = web.url("/export.zip");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = web.ca_file();
    let ca = ca.to_str().unwrap();

    let r = get(&["--cacert", ca, &url]);
    assert_eq!((r.exit, r.status), (0, 200));
    same(&r.body, &body);
    let etag = r.header("ETag").unwrap().to_owned();
    assert!(etag.ends_with("-3e8\""), "{etag}"); // "<mtime hex>-<size hex>"

    // Not trusted without the test CA: curl's "peer certificate cannot be authenticated".
    let r = curl(&[&url]);
    assert_eq!((r.exit, r.status), (60, 0));
    // The certificate names localhost too.
    let local = url.replace("127.0.0.1", "localhost");
    let r = get(&["--cacert", ca, &local]);
    assert_eq!((r.exit, r.status), (0, 200));

    let r = get(&["--cacert", ca, "-H", "Range: bytes=990-", &url]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 990-999/1000"));
    same(&r.body, &body[990..]);
    let r = get(&["--cacert", ca, "-H", "Range: bytes=1000-", &url]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */1000"));
    let r = get(&["--cacert", ca, "-H", "If-Match: \"0-0\"", &url]);
    assert_eq!(r.status, 412);
    let r = get(&[
        "--cacert",
        ca,
        "-H",
        &format!("If-Match: {etag}"),
        "-H",
        "Range: bytes=10-19",
        &url,
    ]);
    assert_eq!((r.status, r.body.as_slice()), (206, &body[10..20]));
    let r = get(&["--cacert", ca, &web.url("/missing.zip")]);
    assert_eq!(r.status, 404);

    // Replaced with the same size: a new ETag all the same; If-Range on the old one sends all.
    let body2 = pattern(1000, 1);
    web.put("export.zip", &body2);
    let r = get(&[
        "--cacert",
        ca,
        "-H",
        &format!("If-Range: {etag}"),
        "-H",
        "Range: bytes=5-",
        &url,
    ]);
    assert_eq!(r.status, 200);
    same(&r.body, &body2);
    assert_ne!(r.header("ETag"), Some(etag.as_str()));
    let r = get(&["--cacert", ca, "-H", &format!("If-Match: {etag}"), &url]);
    assert_eq!(r.status, 412);
}

#[test]
fn nginx_can_ignore_range() {
    let test = "nginx_can_ignore_range";
    if !curl_available(test) {
        return;
    }
    let options = nginx::Options {
        plain: true,
        ignore_range: true,
        ..Default::default()
    };
    let Some(web) = Nginx::start(test, options) else {
        return;
    };
    let body = pattern(1000, 0);
    web.put("export.zip", &body);
    let url = web.url("/export.zip");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let r = get(&["-H", "Range: bytes=990-", &url]);
    assert_eq!((r.status, r.header("Content-Range")), (200, None));
    same(&r.body, &body);
}

#[test]
fn nginx_limit_rate_throttles_each_connection() {
    let test = "nginx_limit_rate_throttles_each_connection";
    if !curl_available(test) {
        return;
    }
    let options = nginx::Options {
        limit_rate: Some(500_000),
        plain: true,
        ..Default::default()
    };
    let Some(web) = Nginx::start(test, options) else {
        return;
    };
    let body = pattern(1_000_000, 0);
    web.put("export.zip", &body);
    let r = get(&[&web.url("/export.zip")]);
    assert_eq!((r.exit, r.status), (0, 200));
    same(&r.body, &body);
    // 2 s at 500 kB/s; nginx lets the first burst go a little faster.
    assert!(
        r.elapsed >= Duration::from_millis(1500),
        "1 MB at 500 kB/s took {:?}",
        r.elapsed
    );
}

#[test]
fn proxy_faults_as_curl_sees_them() {
    let test = "proxy_faults_as_curl_sees_them";
    if !curl_available(test) {
        return;
    }
    let plain = nginx::Options {
        plain: true,
        ..Default::default()
    };
    let Some(web) = Nginx::start(test, plain) else {
        return;
    };
    let body = pattern(1 << 20, 0);
    web.put("export.zip", &body);
    let through = |proxy: &Proxy, extra: &[&str]| {
        let url = format!("http://{}/export.zip", proxy.addr());
        let mut args: Vec<&str> = extra.to_vec();
        args.push(&url);
        curl(&args)
    };

    // Each fault after exactly 300000 body bytes.
    let after = 300_000;
    let proxy = Proxy::http(
        web.addr(),
        first(vec![
            Fault::Reset { after },
            Fault::Close { after },
            Fault::Stall { after },
        ]),
    );
    let r = through(&proxy, &[]);
    assert_eq!((r.exit, r.status), (56, 200), "a reset");
    same(&r.body, &body[..after as usize]);
    let r = through(&proxy, &[]);
    assert_eq!((r.exit, r.status), (18, 200), "an early clean close");
    same(&r.body, &body[..after as usize]);
    // curl has no idle-read deadline (its speed limit averages over 5 s): a total one, ample
    // for 300 kB over loopback.
    let r = through(&proxy, &["--max-time", "1"]);
    assert_eq!(
        (r.exit, r.status),
        (28, 200),
        "a stall, cut by curl's deadline"
    );
    same(&r.body, &body[..after as usize]);
    assert!(r.elapsed < Duration::from_secs(5), "{:?}", r.elapsed);
    let r = through(&proxy, &["-H", "Range: bytes=300000-"]);
    assert_eq!((r.exit, r.status), (0, 206), "then everything passes");
    same(&r.body, &body[300_000..]);
    assert_eq!(proxy.connections(), 4);
    // What reached the client: the same head each time, then exactly `after` body bytes.
    let delivered = proxy.delivered();
    let head = delivered[0] - after;
    assert!((100..1000).contains(&head), "{delivered:?}");
    assert_eq!(delivered[..3], [head + after; 3]);
    let head206 = delivered[3] - ((1 << 20) - after);
    assert!((100..1000).contains(&head206), "{delivered:?}");
    let requests = proxy.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(
        requests.iter().map(|r| r.connection).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(requests[3].header("Range"), Some("bytes=300000-"));
    assert_eq!(requests[0].header("range"), None);
    assert_eq!(requests[0].line, "GET /export.zip HTTP/1.1");

    // The first two connections reset, then pass; a fault right at the first body byte.
    let proxy = Proxy::http(
        web.addr(),
        first(vec![
            Fault::Reset { after: 0 },
            Fault::Reset { after: 1 << 19 },
        ]),
    );
    let r = through(&proxy, &[]);
    assert_eq!((r.exit, r.status, r.body.len()), (56, 200, 0));
    let r = through(&proxy, &[]);
    assert_eq!((r.exit, r.body.len()), (56, 1 << 19));
    same(&r.body, &body[..1 << 19]);
    let r = through(&proxy, &[]);
    assert_eq!((r.exit, r.status), (0, 200));
    same(&r.body, &body);

    // An answer from the proxy itself, then the server's.
    let proxy = Proxy::http(web.addr(), first(vec![Fault::Status { code: 503 }]));
    let r = through(&proxy, &["-H", "Range: bytes=7-"]);
    assert_eq!((r.exit, r.status), (0, 503));
    assert!(r.body_text().ends_with("<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"), "{}", r.body_text());
    let r = through(&proxy, &["-H", "Range: bytes=7-"]);
    assert_eq!((r.exit, r.status), (0, 206));
    same(&r.body, &body[7..]);
    let requests = proxy.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests
        .iter()
        .all(|r| r.header("Range") == Some("bytes=7-")));

    // Counting raw bytes, in front of TLS: the handshake passes, the body is cut.
    let Some(tls) = Nginx::start(test, nginx::Options::default()) else {
        return;
    };
    tls.put("export.zip", &body);
    let proxy = Proxy::tcp(tls.addr(), first(vec![Fault::Reset { after: 100_000 }]));
    let ca = tls.ca_file();
    let url = format!("https://{}/export.zip", proxy.addr());
    let r = curl(&["--cacert", ca.to_str().unwrap(), &url]);
    assert_eq!((r.exit, r.status), (56, 200));
    assert!(!r.body.is_empty() && r.body.len() < 100_000);
    same(&r.body, &body[..r.body.len()]);
    assert_eq!(proxy.delivered(), [100_000]);
    let r = curl(&["--cacert", ca.to_str().unwrap(), &url]);
    assert_eq!((r.exit, r.status, r.body == body), (0, 200, true));
}
