//! `fetch` and `decrypt URL` against a real S3 server (SeaweedFS, URLs presigned by boto3), with
//! faults injected by our proxy: every resume is a conditional ranged request, every outcome the
//! exact bytes or the exact exit status (issue 13).

use std::time::{Duration, SystemTime};

use super::proxy::{first, Fault, Proxy};
use super::seaweed::{Presign, Seaweed};
use crate::util::{cipherstream, fixtures, private_key};

/// `n` bytes that differ at every offset from those of another seed.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn via(s3: &Seaweed, proxy: &Proxy, key: &str) -> String {
    s3.presign_with(
        key,
        Presign {
            expires_in: 600,
            host: Some(proxy.addr()),
            signed_at: None,
        },
    )
}

#[test]
fn fetch_resumes_after_resets_early_ends_and_503s_with_conditional_ranges() {
    let Some(s3) = Seaweed::start("fetch_resumes_after_resets") else {
        return;
    };
    let body = pattern(3 << 20, 7);
    let object = s3.put("jobs/a.zip", &body);
    let proxy = Proxy::http(
        s3.addr(),
        first(vec![
            Fault::Reset { after: 700_000 },
            Fault::Status { code: 503 },
            Fault::Close { after: 900_000 },
        ]),
    );
    let url = via(&s3, &proxy, "jobs/a.zip");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.zip");
    let out = cipherstream()
        .args(["fetch", &url, "-o"])
        .arg(&dest)
        .args(["--expect-size", &body.len().to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(std::fs::read(&dest).unwrap() == body, "the bytes differ");
    // Nothing but the file is left, and nothing of the URL's query was shown.
    assert_eq!(crate::util::entries(dir.path()), ["a.zip"]);
    assert!(!stderr.contains("X-Amz"), "{stderr}");
    // Every request was a range; every one after the first was conditional on the first ETag,
    // and each resumed exactly where the bytes on disk ended.
    let seen = proxy.requests();
    assert_eq!(
        seen.len(),
        4,
        "{:?}",
        seen.iter().map(|r| &r.line).collect::<Vec<_>>()
    );
    assert_eq!(seen[0].header("range"), Some("bytes=0-"));
    assert_eq!(seen[0].header("if-match"), None);
    // The proxy cut the first body after 700,000 bytes and the third after 900,000 more.
    assert_eq!(seen[1].header("range"), Some("bytes=700000-"));
    assert_eq!(seen[2].header("range"), Some("bytes=700000-"));
    assert_eq!(seen[3].header("range"), Some("bytes=1600000-"));
    for r in &seen[1..] {
        assert_eq!(r.header("if-match"), Some(object.etag.as_str()));
    }
}

#[test]
fn an_expired_url_exits_5_and_says_when_without_showing_its_query() {
    let Some(s3) = Seaweed::start("an_expired_url_exits_5") else {
        return;
    };
    s3.put("jobs/old.zip", b"PK\x03\x04 no matter");
    let url = s3.presign_with(
        "jobs/old.zip",
        Presign {
            expires_in: 60,
            host: None,
            signed_at: Some(SystemTime::now() - Duration::from_secs(3600)),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("old.zip");
    let out = cipherstream()
        .args(["fetch", &url, "-o"])
        .arg(&dest)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    let shown = format!("http://{}/exports/jobs/old.zip", s3.addr());
    let first = stderr.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("error: {shown}: the download URL expired at ")),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: a presigned URL lives 12 hours"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("X-Amz") && !stderr.contains('?'),
        "{stderr}"
    );
    assert!(!dest.exists());
}

#[test]
fn an_object_replaced_between_runs_is_downloaded_again_never_spliced() {
    let Some(s3) = Seaweed::start("an_object_replaced_between_runs") else {
        return;
    };
    let old = pattern(2 << 20, 1);
    s3.put("jobs/b.zip", &old);
    // The first run is cut after 1 MB, then refused (503), and gives up at once
    // (`--retries 0`), leaving the partial bytes.
    let proxy = Proxy::http(s3.addr(), |i| match i {
        0 => Fault::Close { after: 1_000_000 },
        1 => Fault::Status { code: 503 },
        _ => Fault::Pass,
    });
    let url = via(&s3, &proxy, "jobs/b.zip");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("b.zip");
    let out = cipherstream()
        .args(["fetch", &url, "--retries", "0", "-o"])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!dest.exists());
    // The object is replaced; the next run, with a freshly signed URL for the same object, resumes
    // with If-Match on the first ETag, gets 412, and starts again.
    let new = pattern(2 << 20, 2);
    s3.put("jobs/b.zip", &new);
    let out = cipherstream()
        .args(["fetch", &via(&s3, &proxy, "jobs/b.zip"), "-o"])
        .arg(&dest)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        std::fs::read(&dest).unwrap() == new,
        "spliced or stale bytes"
    );
    assert!(stderr.contains("the object changed"), "{stderr}");
    let seen = proxy.requests();
    let last_two: Vec<_> = seen[seen.len() - 2..]
        .iter()
        .map(|r| (r.header("range"), r.header("if-match").is_some()))
        .collect();
    assert_eq!(
        last_two,
        [(Some("bytes=1000000-"), true), (Some("bytes=0-"), false)]
    );
}

#[test]
fn decrypt_url_reads_a_zip_with_ranges_through_resets() {
    let Some(s3) = Seaweed::start("decrypt_url_reads_a_zip") else {
        return;
    };
    let zip =
        std::fs::read(fixtures().join("demo/appointments_1758630144658_c7511999.zip")).unwrap();
    s3.put("jobs/demo.zip", &zip);
    let proxy = Proxy::http(
        s3.addr(),
        first(vec![Fault::Pass, Fault::Reset { after: 1500 }]),
    );
    let url = via(&s3, &proxy, "jobs/demo.zip");
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "demo/demo.key");
    let dest = dir.path().join("out.ndjson");
    let out = cipherstream()
        .args([
            "decrypt",
            &url,
            "--customer-id",
            "cust_demo_123",
            "--key-file",
        ])
        .arg(&key)
        .arg("-o")
        .arg(&dest)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(fixtures().join("demo/expected.ndjson")).unwrap()
    );
    // No request asked for the whole object without a range.
    for r in proxy.requests() {
        assert!(r.header("range").is_some(), "{}", r.line);
    }
}
