//! The HTTP client: one `ureq` agent, configured for downloading stored objects exactly.
//!
//! Why `ureq` 3 (issue 13): small and synchronous like the rest of the tool, pure Rust, and its
//! `rustls` feature uses the `ring` provider the tool already links for AES-GCM, so no second
//! crypto library and no C build; it has a per-read timeout, which is what detects a stalled
//! download (a total deadline would kill a slow but healthy multi-GB transfer). Its `gzip`
//! feature stays off and no `Accept-Encoding` is sent: a byte offset must be an offset of the
//! stored object, never of a decompressed view. Statuses are answers, not errors
//! (`http_status_as_error(false)`), so S3's XML error bodies can be read.
//!
//! Trust: the system's certificate store (`rustls-native-certs`), plus the certificates of
//! `--ca-file` (a TLS-inspecting proxy's CA); Mozilla's bundled roots only when the system has
//! none. `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` are honoured (ureq reads them), except
//! that a loopback address is never reached through a proxy.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ureq::config::AutoHeaderValue;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::error::{Error, Result};
use crate::net::url::DownloadUrl;

/// A connection's buffer for what the server sends (and the largest response head accepted).
const INPUT_BUFFER: usize = 64 * 1024;
/// A connection's buffer for what is sent: request heads only.
const OUTPUT_BUFFER: usize = 16 * 1024;

/// How long a connection may take to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to start answering a request.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings of the client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Extra trusted certificates (PEM), for a TLS-inspecting proxy.
    pub ca_file: Option<std::path::PathBuf>,
    /// A read that waits this long for a single byte is a stall (an idle-read timeout, not a
    /// total deadline).
    pub idle_timeout: Duration,
    /// Refuse plain `http://`, redirects included (false only for a loopback `http://` URL).
    pub https_only: bool,
}

/// A configured HTTP client.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

/// The parts of an answer the downloader uses, and its body.
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `ETag` header.
    pub etag: Option<String>,
    /// The `Content-Range` header, parsed.
    pub content_range: Option<ContentRange>,
    /// The `Content-Length` header.
    pub content_length: Option<u64>,
    /// The body.
    pub body: ureq::BodyReader<'static>,
}

/// A `Content-Range` value: `bytes START-END/TOTAL` or `bytes */TOTAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// The first and last byte sent (inclusive), when any was.
    pub range: Option<(u64, u64)>,
    /// The object's whole size, when the server says it.
    pub total: Option<u64>,
}

impl ContentRange {
    /// Parse a `Content-Range` header value; `None` when it is not a byte range.
    pub fn parse(value: &str) -> Option<ContentRange> {
        let rest = value.trim().strip_prefix("bytes")?.trim_start();
        let (range, total) = rest.split_once('/')?;
        let total = match total.trim() {
            "*" => None,
            t => Some(t.parse().ok()?),
        };
        let range = match range.trim() {
            "*" => None,
            r => {
                let (a, b) = r.split_once('-')?;
                let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
                // `b` is the last byte: one past it must be a position (a server's `.../*` with
                // a last byte of u64::MAX would overflow every length taken from it).
                if b < a || b == u64::MAX || total.is_some_and(|t| b >= t) {
                    return None;
                }
                Some((a, b))
            }
        };
        Some(ContentRange { range, total })
    }
}

impl Client {
    /// A client with the system's trust store, `--ca-file`'s certificates, and the timeouts.
    pub fn new(options: &ClientOptions) -> Result<Client> {
        let mut roots: Vec<Certificate<'static>> = Vec::new();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            roots.push(Certificate::from_der(cert.as_ref()).to_owned());
        }
        if let Some(path) = &options.ca_file {
            roots.extend(ca_file(path)?);
        }
        let root_certs = if roots.is_empty() {
            RootCerts::WebPki
        } else {
            RootCerts::Specific(Arc::new(roots))
        };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .accept_encoding(AutoHeaderValue::None)
            .user_agent(concat!("cipherstream/", env!("CARGO_PKG_VERSION")))
            .tls_config(TlsConfig::builder().root_certs(root_certs).build())
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .timeout_per_read(Some(options.idle_timeout))
            .max_redirects(5)
            .https_only(options.https_only)
            // Each connection's buffers (128 KiB each way by default) count once per read-ahead
            // connection: a request is a head of a few hundred bytes (a presigned URL is about
            // 1.5 KB), and 64 KiB in still holds any TLS record and the largest head accepted.
            .input_buffer_size(INPUT_BUFFER)
            .output_buffer_size(OUTPUT_BUFFER)
            .max_response_header_size(INPUT_BUFFER)
            .build();
        Ok(Client {
            agent: ureq::Agent::new_with_config(config),
        })
    }

    /// `GET` the object from byte `from` on (`Range: bytes=from-`), or only up to byte `to`
    /// inclusive (`Range: bytes=from-to`), conditional on `if_match` (the ETag first seen) so a
    /// resumed range is of the same object. A transport failure (connection refused or reset, a
    /// timeout) is returned as its description, inside `Ok`: the caller decides whether to retry;
    /// the URL is never part of it. A certificate that is not trusted is [`Error::Untrusted`]: no
    /// retry can fix it.
    pub fn get(
        &self,
        url: &DownloadUrl,
        from: u64,
        to: Option<u64>,
        if_match: Option<&str>,
    ) -> Result<std::result::Result<Answer, String>> {
        // Always a range, `bytes=0-` too: the answer then says the object's total and ETag in
        // its Content-Range, and a reader that only wants the first bytes does not start a
        // whole-object transfer it will drop.
        let range = match to {
            Some(to) => format!("bytes={from}-{to}"),
            None => format!("bytes={from}-"),
        };
        let mut request = self.agent.get(url.secret_text()).header("Range", range);
        if url.is_loopback() {
            // Never through a proxy (HTTPS_PROXY and the like): plain http:// is allowed to a
            // loopback address only because its bytes never leave this machine, and a proxy's
            // loopback is not ours.
            request = request.config().proxy(None).build();
        }
        if let Some(etag) = if_match {
            request = request.header("If-Match", etag);
        }
        let response = match request.call() {
            Ok(response) => response,
            Err(e) => {
                return match certificate_problem(&e) {
                    Some(why) => Err(Error::Untrusted {
                        url: url.shown().to_owned(),
                        why: certificate_words(why),
                    }),
                    None => Ok(Err(describe(e))),
                }
            }
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let answer = Answer {
            status: response.status().as_u16(),
            etag: header("etag"),
            content_range: header("content-range").and_then(|v| ContentRange::parse(&v)),
            content_length: header("content-length").and_then(|v| v.trim().parse().ok()),
            body: response.into_body().into_reader(),
        };
        Ok(Ok(answer))
    }
}

/// The certificate problem behind `e`, if that is what failed (ureq passes rustls's error on
/// as its own variant, or inside an `io::Error` from the handshake).
fn certificate_problem(e: &ureq::Error) -> Option<&rustls::CertificateError> {
    let tls = match e {
        ureq::Error::Rustls(tls) => Some(tls),
        ureq::Error::Io(io) => io.get_ref().and_then(|x| x.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    match tls? {
        rustls::Error::InvalidCertificate(why) => Some(why),
        _ => None,
    }
}

/// A name as rustls lists a certificate's names (`DnsName("a.example")`, `IpAddress(...)`).
fn bare_name(name: &str) -> &str {
    let inner = name
        .strip_prefix("DnsName(")
        .or_else(|| name.strip_prefix("IpAddress("))
        .and_then(|n| n.strip_suffix(')'))
        .unwrap_or(name);
    inner.trim_matches('"')
}

/// Why a certificate is not trusted, in words.
fn certificate_words(e: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    match e {
        E::UnknownIssuer => "it is signed by an unknown issuer".to_owned(),
        E::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "it is valid for {}, not {}",
            if presented.is_empty() {
                "no name".to_owned()
            } else {
                let names: Vec<&str> = presented.iter().map(|n| bare_name(n)).collect();
                names.join(", ")
            },
            expected.to_str()
        ),
        E::NotValidForName => "it is not valid for this host name".to_owned(),
        E::Expired | E::ExpiredContext { .. } => "it has expired".to_owned(),
        E::NotValidYet | E::NotValidYetContext { .. } => "it is not valid yet".to_owned(),
        E::Revoked => "it has been revoked".to_owned(),
        other => format!("{other}"),
    }
}

/// What went wrong with a request, in words, without the URL (ureq's errors can quote it).
pub fn describe(e: ureq::Error) -> String {
    words(&e)
}

fn words(e: &ureq::Error) -> String {
    match e {
        // The only per-read deadline is the idle timeout: say so in the flag's terms.
        ureq::Error::Timeout(ureq::Timeout::PerRead) => {
            "no byte arrived within the idle timeout (--idle-timeout): the connection stalled"
                .to_owned()
        }
        ureq::Error::Timeout(which) => format!("timed out ({which})"),
        ureq::Error::Io(io) => io_words(io),
        ureq::Error::ConnectionFailed => "the connection failed".to_owned(),
        ureq::Error::HostNotFound => "the host name was not found".to_owned(),
        ureq::Error::Tls(why) => format!("TLS failed: {why}"),
        ureq::Error::Rustls(why) => format!("TLS failed: {why}"),
        ureq::Error::TooManyRedirects => "too many redirects".to_owned(),
        ureq::Error::RedirectFailed => "a redirect could not be followed".to_owned(),
        _ => "the request failed".to_owned(),
    }
}

/// An I/O error in words, without Rust's " (os error N)". A body read fails with ureq's own
/// error wrapped in an `io::Error` (a stall is its per-read timeout): that one is described as
/// [`describe`] does.
pub fn io_words(e: &std::io::Error) -> String {
    if let Some(inner) = e.get_ref().and_then(|x| x.downcast_ref::<ureq::Error>()) {
        return words(inner);
    }
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// The certificates of a PEM file.
fn ca_file(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::io(format!("cannot read --ca-file {}", path.display()), e))?;
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(Error::Usage(format!(
            "--ca-file {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(
            ContentRange::parse("bytes 100-199/1000"),
            Some(ContentRange {
                range: Some((100, 199)),
                total: Some(1000)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes */1000"),
            Some(ContentRange {
                range: None,
                total: Some(1000)
            })
        );
        assert_eq!(
            ContentRange::parse("bytes 0-9/*"),
            Some(ContentRange {
                range: Some((0, 9)),
                total: None
            })
        );
        for bad in [
            "bytes 9-0/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes 0-x/10",
            "bytes 0-18446744073709551615/*",
            "",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad}");
        }
    }
}
