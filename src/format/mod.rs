//! The vendor's export format (SPEC section 1): keys, AES-256-GCM, one row's line, the plaintext
//! JSON check, nonce-reuse tracking and the containers the NDJSON arrives in.
//!
//! Nothing here opens files, starts threads, reads flags or the environment, or prints: every
//! function takes bytes or a reader and returns a value or an error, so the engine, the fuzz
//! targets and the tests all call the same code.

pub mod aead;
pub mod container;
pub mod gzip;
pub mod inflate;
#[cfg(feature = "isal")]
pub mod isal;
pub mod json;
pub mod key;
pub mod keyset;
pub mod nonce;
pub mod record;
pub mod seal;
