//! `cipherstream encrypt`: plain NDJSON in, a vendor-format export out.

use crate::cli::EncryptArgs;
use crate::error::{Error, Result};

/// Run `encrypt`.
pub fn run(_args: &EncryptArgs) -> Result<()> {
    Err(Error::Usage("encrypt is not implemented yet".into()))
}
