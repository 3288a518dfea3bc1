//! Credentials from flags and the environment, resolved once for every command: the customer id,
//! the key and the webhook secrets (SPEC section 3).
//!
//! - Customer id: `--customer-id`, else `CIPHERSTREAM_CUSTOMER_ID`; missing is a usage error.
//! - Key: `--key-file`, else the file named by `CIPHERSTREAM_KEY_FILE`, else the base64 text in
//!   `CIPHERSTREAM_KEY`. A key is never a command-line value.
//! - Webhook secrets: every `--secret-file` (any one may match, for a rotation), else
//!   `CIPHERSTREAM_WEBHOOK_SECRET`.
//!
//! Secret files are small: they are refused above [`MAX_SECRET_FILE_BYTES`] before being read, and
//! read into buffers that are wiped when dropped. A file readable by group or others is a warning,
//! not a refusal.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::format::key::{Key, KeySource};
use crate::warning::{Warn, Warning};
use crate::webhook::{Secret, ENV_SECRET};

/// Environment variable holding the customer id.
pub const ENV_CUSTOMER_ID: &str = "CIPHERSTREAM_CUSTOMER_ID";
/// Environment variable naming a key file.
pub const ENV_KEY_FILE: &str = "CIPHERSTREAM_KEY_FILE";
/// Environment variable holding the key's base64 text.
pub const ENV_KEY: &str = "CIPHERSTREAM_KEY";

/// Key and secret files larger than this are certainly not a key; refuse before reading them.
pub const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// The customer id: `--customer-id`, else `CIPHERSTREAM_CUSTOMER_ID`; missing is a usage error.
pub fn customer_id(flag: Option<&str>) -> Result<String> {
    let id = match flag {
        Some(id) => id.to_owned(),
        None => std::env::var(ENV_CUSTOMER_ID).map_err(|e| match e {
            std::env::VarError::NotUnicode(_) => Error::Usage(format!(
                "{ENV_CUSTOMER_ID} is not valid UTF-8; the customer id is text (it is bound \
                 into each row's AAD as UTF-8)"
            )),
            std::env::VarError::NotPresent => Error::Usage(format!(
                "no customer id given: use --customer-id ID or set {ENV_CUSTOMER_ID}"
            )),
        })?,
    };
    if id.is_empty() {
        return Err(Error::Usage("the customer id is empty".into()));
    }
    Ok(id)
}

/// The key: `key_file`, else `CIPHERSTREAM_KEY_FILE`, else `CIPHERSTREAM_KEY`. A missing key is a
/// usage error.
pub fn key(key_file: Option<&Path>, warn: &dyn Warn) -> Result<Key> {
    let file = key_file.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(ENV_KEY_FILE)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = file {
        let source = KeySource::File(path.clone());
        let text = read_secret_file(&path, "key file", warn)?;
        return Key::from_base64(&text, &source);
    }
    if let Some(value) = std::env::var_os(ENV_KEY) {
        let text = Zeroizing::new(value.into_encoded_bytes());
        return Key::from_base64(&text, &KeySource::Env(ENV_KEY));
    }
    Err(Error::Usage(format!(
        "no key given: use --key-file PATH, or set {ENV_KEY_FILE} or {ENV_KEY}"
    )))
}

/// The webhook secrets: every file in `files` (any one may match, for a rotation's grace period),
/// else `CIPHERSTREAM_WEBHOOK_SECRET`. None at all is a usage error, so the list returned is never
/// empty.
pub fn secrets(files: &[PathBuf], warn: &dyn Warn) -> Result<Vec<Secret>> {
    if !files.is_empty() {
        // During a rotation the receiver lists the old and the new file; once one of them is
        // removed, the others must still work (with a warning, so the configuration gets fixed).
        // A file that exists but cannot be read is still an error, as is every file missing.
        let present: Vec<&PathBuf> = files
            .iter()
            .filter(|p| !matches!(p.try_exists(), Ok(false)))
            .collect();
        if present.is_empty() {
            return Err(secret_file(&files[0], warn)
                .err()
                .unwrap_or_else(|| Error::Usage("no webhook secret file exists".to_owned())));
        }
        for missing in files.iter().filter(|p| !present.contains(p)) {
            warn.warn(Warning::MissingSecretFile {
                path: missing.clone(),
                remaining: present.len(),
            });
        }
        return present.iter().map(|path| secret_file(path, warn)).collect();
    }
    if let Some(value) = std::env::var_os(ENV_SECRET) {
        let text = Zeroizing::new(value.into_encoded_bytes());
        return Ok(vec![Secret::from_text(&text, ENV_SECRET)?]);
    }
    Err(Error::Usage(format!(
        "no webhook secret given: use --secret-file PATH or set {ENV_SECRET}"
    )))
}

/// Read one webhook secret file.
fn secret_file(path: &Path, warn: &dyn Warn) -> Result<Secret> {
    let what = "webhook secret file";
    let text = read_secret_file(path, what, warn)?;
    Secret::from_text(&text, format!("{what} {}", path.display()))
}

/// Read a small secret file (key or webhook secret) into a wiped-on-drop buffer, warning when the
/// file is readable by group or others (SPEC: warn, do not refuse).
fn read_secret_file(
    path: &Path,
    what: &'static str,
    warn: &dyn Warn,
) -> Result<Zeroizing<Vec<u8>>> {
    let shown = path.display();
    let mut file =
        fs::File::open(path).map_err(|e| Error::io(format!("cannot open {what} {shown}"), e))?;
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot read {what} {shown}"), e))?;
    if meta.is_dir() || meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(Error::SecretFile {
            what,
            path: path.to_path_buf(),
            size: (!meta.is_dir()).then_some(meta.len()),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            warn.warn(Warning::SharedSecretFile {
                what,
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let mut text = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    if let Err(e) = file
        .by_ref()
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut text)
    {
        text.zeroize();
        return Err(Error::io(format!("cannot read {what} {shown}"), e));
    }
    Ok(text)
}
