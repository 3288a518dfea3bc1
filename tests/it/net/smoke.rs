//! Smoke tests of the test servers themselves, driven by curl: each behaviour in the table of
//! `net/mod.rs`, so that a test of our client that leans on them leans on something pinned.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

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
    let out = Command::new("curl")
        .args(["-sS", "--no-progress-meter", "-w", "%{http_code}"])
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(args)
        .output()
        .expect("run curl");
    let read = |p: &Path| std::fs::read(p).unwrap_or_default();
    Curl {
        exit: out.status.code().expect("curl exited"),
        status: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap(),
        head: String::from_utf8_lossy(&read(&head)).into_owned(),
        body: read(&body),
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

    // A URL that expires 2 s after it is signed: valid now, tried again at the end.
    let signed = Instant::now();
    let short = s3.presign(key, 2);
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

    // Deleted: the next GET is a 404.
    s3.delete(during);
    assert_eq!(get(&[&s3.presign(during, 600)]).status, 404);

    // The short-lived URL, now past its expiry.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(signed.elapsed()));
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
