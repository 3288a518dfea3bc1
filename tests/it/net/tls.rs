//! HTTPS with certificates checked, and plain `http://` only to loopback addresses (issue 13,
//! items 6 and 7): nginx over TLS with a CA made for the test, trusted only through `--ca-file`.

use std::process::Output;
use std::time::{Duration, Instant};

use super::nginx::{Nginx, Options};
use super::{
    assert_no_query, cipherstream, decrypt_demo, demo_rows, demo_zip, fetch, signed, stderr,
};

#[test]
fn https_with_the_ca_file_gives_the_exact_bytes_and_rows() {
    let Some(nginx) = Nginx::start("https_with_the_ca_file", Options::default()) else {
        return;
    };
    let zip = demo_zip();
    nginx.put("demo.zip", &zip);
    let url = signed(&nginx.url("/demo.zip"));
    assert!(url.starts_with("https://127.0.0.1:"));
    let ca = nginx.ca_file();
    let ca = ca.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("demo.zip");
    let out = fetch(&url, &dest, &["--ca-file", ca]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(&dest).unwrap(), zip);
    let out = decrypt_demo(&url, dir.path(), &["--ca-file", ca]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout == demo_rows(), "the rows differ");
}

/// The certificate failures of fetch and decrypt URL: exit 6 at once (a retry cannot make a
/// certificate trusted), one error line naming scheme, host and path and the reason, and the
/// hint; nothing at -o and nothing of the query.
#[track_caller]
fn assert_certificate_refused(out: &Output, url: &str, shown: &str, reason: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(6), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            format!("error: {shown}: the server's certificate is not trusted: {reason}").as_str(),
            "hint: if a TLS-inspecting proxy sits between you and the server, give its CA \
             certificate with --ca-file",
        ],
        "{err}"
    );
    assert_no_query(url, out);
}

#[test]
fn https_without_the_ca_file_fails_at_once_with_a_certificate_error() {
    let Some(nginx) = Nginx::start("https_without_the_ca_file", Options::default()) else {
        return;
    };
    nginx.put("demo.zip", &demo_zip());
    let url = signed(&nginx.url("/demo.zip"));
    let shown = nginx.url("/demo.zip");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("demo.zip");
    // The default retries (8, backing off to many seconds) would take minutes if a certificate
    // failure were retried.
    let start = Instant::now();
    let out = fetch(&url, &dest, &[]);
    assert_certificate_refused(&out, &url, &shown, "it is signed by an unknown issuer");
    assert!(!dest.exists());
    let out = decrypt_demo(&url, dir.path(), &[]);
    assert_certificate_refused(&out, &url, &shown, "it is signed by an unknown issuer");
    assert!(out.stdout.is_empty());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let Some(nginx) = Nginx::start(
        "a_certificate_for_another_name_is_refused",
        Options {
            cert_names: &["exports.cipherstream.test"],
            ..Options::default()
        },
    ) else {
        return;
    };
    nginx.put("demo.zip", &demo_zip());
    let url = signed(&nginx.url("/demo.zip"));
    let shown = nginx.url("/demo.zip");
    let ca = nginx.ca_file();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("demo.zip");
    let out = fetch(&url, &dest, &["--ca-file", ca.to_str().unwrap()]);
    assert_certificate_refused(
        &out,
        &url,
        &shown,
        "it is valid for exports.cipherstream.test, not 127.0.0.1",
    );
    assert!(!dest.exists());
}

#[test]
fn plain_http_is_refused_except_to_loopback_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.zip");
    // Refused before any connection: these hosts need not exist.
    for host in [
        "exports.cipherstream.test",
        "10.0.0.1",
        "[2001:db8::1]",
        "127.0.0.1.nip.io",
        "localhost.cipherstream.test",
    ] {
        let url = signed(&format!("http://{host}/jobs/a.zip"));
        let verify = cipherstream()
            .args(["verify", &url, "--customer-id", "cust_demo_123"])
            .output()
            .unwrap();
        for out in [
            fetch(&url, &dest, &[]),
            decrypt_demo(&url, dir.path(), &[]),
            verify,
        ] {
            assert_eq!(out.status.code(), Some(2), "{host}: {}", stderr(&out));
            assert_eq!(
                stderr(&out),
                "error: the download URL cannot be used: it is plain http://, which is refused \
                 except to a loopback address (the export and the URL's credentials would cross \
                 the network unencrypted)\n",
                "{host}"
            );
            assert!(out.stdout.is_empty());
            assert_no_query(&url, &out);
        }
    }
    assert!(!dest.exists());
}

#[test]
fn plain_http_to_loopback_addresses_works() {
    let Some(nginx) = Nginx::start(
        "plain_http_to_loopback_addresses_works",
        Options {
            plain: true,
            ..Options::default()
        },
    ) else {
        return;
    };
    let zip = demo_zip();
    nginx.put("demo.zip", &zip);
    let port = nginx.addr().port();
    let dir = tempfile::tempdir().unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let url = signed(&format!("http://{host}:{port}/demo.zip"));
        let dest = dir.path().join(format!("{host}.zip"));
        let out = fetch(&url, &dest, &[]);
        assert_eq!(out.status.code(), Some(0), "{host}: {}", stderr(&out));
        assert_eq!(std::fs::read(&dest).unwrap(), zip);
        let out = decrypt_demo(&url, dir.path(), &[]);
        assert_eq!(out.status.code(), Some(0), "{host}: {}", stderr(&out));
        assert!(out.stdout == demo_rows(), "the rows differ");
    }
}
