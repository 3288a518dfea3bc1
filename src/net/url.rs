//! A download URL: what may be shown of it, and when it expires.
//!
//! SPEC section 4: a presigned S3 URL's query string holds credentials (`X-Amz-Credential`,
//! `X-Amz-Signature`, `X-Amz-Security-Token`). It is a secret like the key: it never appears in
//! output, errors, logs or `Debug`. [`DownloadUrl::shown`] is all that may be printed: scheme,
//! host (and port) and path. The full text is handed to the HTTP client only.
//!
//! Plain `http://` is refused except to a loopback address (tests, a local proxy of the user's
//! own): an export is health data and its URL a bearer credential.
//!
//! Parsed by hand rather than with the `url` crate: the tool needs the scheme, the authority, the
//! path and two query parameters, and nothing here normalises or rebuilds the URL, which the
//! signature covers byte for byte (SPEC: query parameters may not change).

use std::fmt;
use std::net::IpAddr;

use zeroize::Zeroizing;

/// Why a URL cannot be used (the URL itself is never quoted: it holds credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlProblem {
    /// Not `https://` (nor `http://` to a loopback address).
    Scheme,
    /// `http://` to a host that is not a loopback address.
    PlainHttp,
    /// No host, or a malformed authority.
    Host,
    /// `user:password@` in the authority.
    UserInfo,
    /// Spaces or control characters, which a URL never holds unescaped.
    Characters,
}

impl fmt::Display for UrlProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlProblem::Scheme => "it is not an https:// URL",
            UrlProblem::PlainHttp => {
                "it is plain http://, which is refused except to a loopback address (the export \
                 and the URL's credentials would cross the network unencrypted)"
            }
            UrlProblem::Host => "it names no host",
            UrlProblem::UserInfo => "it holds a user name or password before the host",
            UrlProblem::Characters => "it holds spaces or control characters",
        })
    }
}

/// A URL to download from. Its `Debug` and [`DownloadUrl::shown`] never include the query.
#[derive(Clone)]
pub struct DownloadUrl {
    full: Zeroizing<String>,
    shown: String,
    host: String,
    expires_at: Option<i64>,
}

impl PartialEq for DownloadUrl {
    fn eq(&self, other: &DownloadUrl) -> bool {
        *self.full == *other.full
    }
}

impl Eq for DownloadUrl {}

impl fmt::Debug for DownloadUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DownloadUrl")
            .field("shown", &self.shown)
            .field("query", &"<redacted>")
            .finish()
    }
}

/// Whether an argument names a URL rather than a path (for `decrypt URL`).
pub fn looks_like_url(arg: &str) -> bool {
    let lower = arg.get(..8).unwrap_or(arg).to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

impl DownloadUrl {
    /// Parse `text`: `https://host[:port]/path[?query]`, or `http://` to a loopback address.
    pub fn parse(text: &str) -> Result<DownloadUrl, UrlProblem> {
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlProblem::Characters);
        }
        let (scheme, rest) = text.split_once("://").ok_or(UrlProblem::Scheme)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return Err(UrlProblem::Scheme);
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => before_query.split_at(i),
            None => (before_query, "/"),
        };
        if authority.contains('@') {
            return Err(UrlProblem::UserInfo);
        }
        let host = host_of(authority).ok_or(UrlProblem::Host)?;
        if scheme == "http" && !is_loopback(&host) {
            return Err(UrlProblem::PlainHttp);
        }
        let expires_at = query.and_then(presigned_expiry);
        Ok(DownloadUrl {
            full: Zeroizing::new(text.split('#').next().unwrap_or(text).to_owned()),
            shown: format!("{scheme}://{}{path}", authority.to_ascii_lowercase()),
            host,
            expires_at,
        })
    }

    /// What may be shown: scheme, host (and port) and path; never the query.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether the URL is `https://` (a redirect from it must stay `https://`).
    pub fn is_https(&self) -> bool {
        self.shown.starts_with("https://")
    }

    /// Whether the host is a loopback address (`localhost`, 127.0.0.0/8, `::1`).
    pub fn is_loopback(&self) -> bool {
        is_loopback(&self.host)
    }

    /// The host, without brackets or port.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The whole URL, credentials included: for the HTTP client only, never for a message.
    pub fn secret_text(&self) -> &str {
        &self.full
    }

    /// When a presigned URL stops working by its own terms (`X-Amz-Date` + `X-Amz-Expires`), in
    /// Unix seconds. The server may refuse it earlier (the signing credentials can expire first):
    /// trust its answer, not this clock.
    pub fn expires_at(&self) -> Option<i64> {
        self.expires_at
    }
}

/// The host of an authority (`host`, `host:port`, `[v6]:port`), lower-cased; `None` when empty or
/// malformed.
fn host_of(authority: &str) -> Option<String> {
    let host = if let Some(v6) = authority.strip_prefix('[') {
        let (inside, after) = v6.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inside.to_owned()
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if port.is_some_and(|p| !is_port(p)) {
            return None;
        }
        host.to_owned()
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `X-Amz-Date` (`20240926T100215Z`) plus `X-Amz-Expires` (seconds) from a presigned URL's query,
/// in Unix seconds; `None` when either is missing or malformed.
fn presigned_expiry(query: &str) -> Option<i64> {
    let param = |name: &str| {
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            k.eq_ignore_ascii_case(name).then_some(v)
        })
    };
    let signed = crate::time::parse_amz_date(param("X-Amz-Date")?).ok()?;
    let seconds: i64 = param("X-Amz-Expires")?.parse().ok()?;
    signed.checked_add(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRESIGNED: &str = "https://exports.s3.eu-west-1.amazonaws.com/cust_123/job_9.zip\
        ?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20240926%2Feu-west-1\
        %2Fs3%2Faws4_request&X-Amz-Date=20240926T100215Z&X-Amz-Expires=43200\
        &X-Amz-SignedHeaders=host&X-Amz-Signature=0f1e2d3c4b5a69788796a5b4c3d2e1f0";

    #[test]
    fn shown_is_scheme_host_and_path_only() {
        let url = DownloadUrl::parse(PRESIGNED).unwrap();
        assert_eq!(
            url.shown(),
            "https://exports.s3.eu-west-1.amazonaws.com/cust_123/job_9.zip"
        );
        assert_eq!(url.secret_text(), PRESIGNED);
        let debug = format!("{url:?}");
        for secret in ["AKIAEXAMPLE", "Signature", "0f1e2d3c", "X-Amz"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert_eq!(url.host(), "exports.s3.eu-west-1.amazonaws.com");
    }

    #[test]
    fn the_expiry_is_the_signing_date_plus_its_lifetime() {
        let url = DownloadUrl::parse(PRESIGNED).unwrap();
        // 2024-09-26T10:02:15Z + 12 hours.
        assert_eq!(url.expires_at(), Some(1_727_344_935 + 43_200));
        let plain = DownloadUrl::parse("https://example.com/a.zip").unwrap();
        assert_eq!(plain.expires_at(), None);
        let broken = DownloadUrl::parse("https://e.com/a?X-Amz-Date=2024&X-Amz-Expires=60");
        assert_eq!(broken.unwrap().expires_at(), None);
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "http://127.0.0.1:9000/b/k",
            "http://localhost:8333/b/k?x=1",
            "http://[::1]:80/k",
            "http://127.1.2.3/k",
        ] {
            assert!(DownloadUrl::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            DownloadUrl::parse("http://example.com/k").unwrap_err(),
            UrlProblem::PlainHttp
        );
        assert_eq!(
            DownloadUrl::parse("http://10.0.0.1/k").unwrap_err(),
            UrlProblem::PlainHttp
        );
    }

    #[test]
    fn malformed_urls_are_refused_without_quoting_them() {
        for (bad, problem) in [
            ("ftp://example.com/k", UrlProblem::Scheme),
            ("example.com/k", UrlProblem::Scheme),
            ("https:///k", UrlProblem::Host),
            ("https://user:pw@example.com/k", UrlProblem::UserInfo),
            ("https://example.com:99999999/k", UrlProblem::Host),
            ("https://exa mple.com/k", UrlProblem::Characters),
            ("https://[::1/k", UrlProblem::Host),
        ] {
            assert_eq!(DownloadUrl::parse(bad).unwrap_err(), problem, "{bad}");
        }
        assert!(!UrlProblem::Host.to_string().contains("example"));
    }

    #[test]
    fn urls_are_told_from_paths() {
        assert!(looks_like_url("https://x/y"));
        assert!(looks_like_url("HTTP://127.0.0.1/y"));
        assert!(!looks_like_url("export.zip"));
        assert!(!looks_like_url("https"));
        assert!(!looks_like_url("./https://x"));
    }
}
