//! The streaming engines: the parallel, ordered decrypt pipeline, the encrypt pipeline, and the
//! progress display they both update.
//!
//! An engine takes an already opened NDJSON reader and a sink; it never sees a path, a flag or
//! the environment.

pub mod decrypt;
pub mod encrypt;
pub mod progress;
