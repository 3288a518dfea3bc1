//! Downloads (SPEC section 4): presigned URLs and what their servers say. This is the start of
//! the network source (issue 13) that plugs into `crate::source`; the HTTP client, resumable
//! downloads and `fetch` build on these pieces.
//!
//! - [`url`]: a download URL, what may be shown of it, when it expires.
//! - [`s3`]: an S3-compatible server's error body.
//! - [`client`]: the HTTP client (ureq, rustls with ring, per-read timeouts).
//! - [`download`]: a resumable, atomic, never-spliced download to a file.
//! - [`reader`]: a remote object read like a file (`decrypt URL`).

pub mod client;
pub mod download;
pub mod reader;
pub mod s3;
pub mod url;
