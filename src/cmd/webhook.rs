//! `cipherstream webhook verify|sign`.

use crate::cli::WebhookCommand;
use crate::error::{Error, Result};

/// Run a `webhook` subcommand.
pub fn run(_cmd: &WebhookCommand) -> Result<()> {
    Err(Error::Usage("webhook is not implemented yet".into()))
}
