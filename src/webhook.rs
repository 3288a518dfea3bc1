//! Webhook bodies: signatures (HMAC-SHA256), timestamps, and the row count a body announces.

use std::path::Path;

use crate::error::{Error, Exit, Result};

/// Read `data.rows_processed` from a (verified) webhook body, for `--expect-rows-from`.
pub fn rows_processed(path: &Path) -> Result<u64> {
    let text =
        std::fs::read(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    let body: serde_json::Value = serde_json::from_slice(&text).map_err(|e| Error::Webhook {
        message: format!("{}: not a JSON webhook body ({e})", path.display()),
        hint: None,
        exit: Exit::Failure,
    })?;
    body.pointer("/data/rows_processed")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| Error::Webhook {
            message: format!("{}: no whole number at data.rows_processed", path.display()),
            hint: Some("pass the body of a job.completed webhook".into()),
            exit: Exit::Failure,
        })
}
