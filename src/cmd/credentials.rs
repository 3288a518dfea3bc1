//! Credentials from flags and the environment, resolved once for every command: the customer id,
//! the key and the webhook secrets (SPEC section 3).
//!
//! - Customer id: `--customer-id`, else `CIPHERSTREAM_CUSTOMER_ID`; missing is a usage error.
//! - Key: `--key-file` or `--key-cmd`, else the file named by `CIPHERSTREAM_KEY_FILE`, else the
//!   command in `CIPHERSTREAM_KEY_CMD`, else the base64 text in `CIPHERSTREAM_KEY`. A key is never
//!   a command-line value.
//! - Keys for reading exports ([`keys`], issue 15): every `--key-file`, every file of a
//!   `--keyring` directory (one private file per key id, named by it) and every `--key-cmd`, else
//!   the environment's one key or command as above. Which of them opens a row is the key set's
//!   business ([`crate::format::keyset`]); a key command runs when a row needs it, once per key
//!   id, told the key id and customer id in its environment ([`crate::cmd::helper`]).
//! - Webhook secrets: every `--secret-file` and what every `--secret-cmd` prints (any one may
//!   match, for a rotation), else `CIPHERSTREAM_WEBHOOK_SECRET`.
//!
//! Secret files are small: they are refused above [`MAX_SECRET_FILE_BYTES`] before being read, and
//! read into buffers that are wiped when dropped. A file readable by group or others is a warning,
//! not a refusal.
//!
//! A key or secret given where the path of its file belongs (`CIPHERSTREAM_KEY_FILE="$(cat key)"`,
//! `--secret-file "$SECRET"`) names no file, and an error naming the missing file would print the
//! key into cron mail and logs. So a file that does not exist is named only when its name cannot
//! be the key or secret itself; otherwise the error says where the value came from and which
//! variable takes the text ([`Error::SecretGivenAsPath`]). The rule is `looks_like_secret`'s
//! (issue 12, item 1).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use zeroize::{Zeroize, Zeroizing};

use crate::cli::KeyArgs;
use crate::cmd::helper::Helper;
use crate::error::{CommandFailure, CommandProblem, Error, KeyringProblem, Result};
use crate::format::key::{Key, KeySource};
use crate::format::keyset::{Fetch, KeySet};
use crate::text;
use crate::warning::{Warn, Warning};
use crate::webhook::{Secret, ENV_SECRET};

/// Environment variable holding the customer id.
pub const ENV_CUSTOMER_ID: &str = "CIPHERSTREAM_CUSTOMER_ID";
/// Environment variable naming a key file.
pub const ENV_KEY_FILE: &str = "CIPHERSTREAM_KEY_FILE";
/// Environment variable holding the key's base64 text.
pub const ENV_KEY: &str = "CIPHERSTREAM_KEY";
/// Environment variable holding a key command.
pub const ENV_KEY_CMD: &str = "CIPHERSTREAM_KEY_CMD";
/// Environment variable that tells a key command which key id the rows need.
pub const ENV_KEY_ID: &str = "CIPHERSTREAM_KEY_ID";

/// Key and secret files larger than this are certainly not a key; refuse before reading them.
pub const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// A keyring holding more files than this is refused: every file is read, and every key is tried
/// on a row no key is named for.
pub const MAX_KEYRING_FILES: usize = 1000;

/// Where the path of a key or secret file came from, and where the text itself belongs: what the
/// error says when the "path" is the key or secret itself.
#[derive(Clone, Copy)]
struct PathFrom {
    what: &'static str,
    given: &'static str,
    meant: &'static str,
}

const KEY_FILE_FLAG: PathFrom = PathFrom {
    what: "key file",
    given: "--key-file",
    meant: ENV_KEY,
};
const KEY_FILE_ENV: PathFrom = PathFrom {
    what: "key file",
    given: ENV_KEY_FILE,
    meant: ENV_KEY,
};
const KEYRING_FILE: PathFrom = PathFrom {
    what: "key file",
    given: "--keyring",
    meant: ENV_KEY,
};
const SECRET_FILE_FLAG: PathFrom = PathFrom {
    what: "webhook secret file",
    given: "--secret-file",
    meant: ENV_SECRET,
};

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

/// Where `encrypt`'s one key comes from.
pub struct OneKey<'a> {
    /// `--key-file`.
    pub file: Option<&'a Path>,
    /// `--key-cmd`.
    pub command: Option<&'a str>,
    /// `--key-cmd-timeout`.
    pub timeout: Duration,
    /// The key id the key is for (`--key-id`), told to a key command when given.
    pub key_id: Option<&'a str>,
    /// The customer id, told to a key command.
    pub customer_id: &'a str,
}

/// The key: `--key-file`, else `--key-cmd`, else `CIPHERSTREAM_KEY_FILE`, else
/// `CIPHERSTREAM_KEY_CMD`, else `CIPHERSTREAM_KEY`. A missing key is a usage error.
pub fn key(from: &OneKey<'_>, warn: &dyn Warn) -> Result<Key> {
    let timeout = from.timeout;
    let command = |text: &str, given: &str| -> Result<Key> {
        let helper = Helper::parse(text, given, None, "key", timeout)?;
        key_from_command(&helper, from.key_id, from.customer_id)
            .map_err(|failure| Error::Command(Box::new(failure)))
    };
    if let Some(path) = from.file {
        return key_file_at(path, KEY_FILE_FLAG, warn);
    }
    if let Some(text) = from.command {
        return command(text, "--key-cmd");
    }
    match env_key()? {
        Some(EnvKey::File(path)) => key_file_at(&path, KEY_FILE_ENV, warn),
        Some(EnvKey::Command(text)) => command(&text, ENV_KEY_CMD),
        Some(EnvKey::Text(text)) => Key::from_base64(&text, &KeySource::Env(ENV_KEY)),
        None => Err(Error::Usage(format!(
            "no key given: use --key-file PATH or --key-cmd CMD, or set {ENV_KEY_FILE}, \
             {ENV_KEY_CMD} or {ENV_KEY}"
        ))),
    }
}

/// The keys for reading exports: every `--key-file`, then every file of the `--keyring`, then
/// every `--key-cmd` (run when a row needs it); with none of them, the environment's key or key
/// command (`CIPHERSTREAM_KEY_FILE`, else `CIPHERSTREAM_KEY_CMD`, else `CIPHERSTREAM_KEY`). No key
/// at all is a usage error.
pub fn keys(args: &KeyArgs, customer_id: &str, warn: &dyn Warn) -> Result<KeySet> {
    let mut set = KeySet::builder();
    let timeout = Duration::from_secs(args.key_cmd_timeout);
    if args.key_file.is_empty() && args.key_cmd.is_empty() && args.keyring.is_none() {
        match env_key()? {
            Some(EnvKey::File(path)) => {
                let key = key_file_at(&path, KEY_FILE_ENV, warn)?;
                set.key(&key, KeySource::File(path).to_string(), None);
            }
            Some(EnvKey::Command(text)) => {
                let helper = Helper::parse(&text, ENV_KEY_CMD, None, "key", timeout)?;
                set.fetch(Box::new(KeyCommands {
                    helpers: vec![helper],
                    customer_id: customer_id.to_owned(),
                }));
            }
            Some(EnvKey::Text(text)) => {
                let source = KeySource::Env(ENV_KEY);
                set.key(&Key::from_base64(&text, &source)?, source.to_string(), None);
            }
            None => {
                return Err(Error::Usage(format!(
                    "no key given: use --key-file PATH, --key-cmd CMD or --keyring DIR, or set \
                     {ENV_KEY_FILE}, {ENV_KEY_CMD} or {ENV_KEY}"
                )))
            }
        }
        return Ok(set.build());
    }
    for path in &args.key_file {
        let key = key_file_at(path, KEY_FILE_FLAG, warn)?;
        set.key(&key, KeySource::File(path.clone()).to_string(), None);
    }
    if let Some(dir) = &args.keyring {
        for (name, path, key) in keyring(dir, warn)? {
            set.key(&key, format!("keyring file {}", path.display()), name);
        }
    }
    let numbered = args.key_cmd.len() > 1;
    let helpers = args
        .key_cmd
        .iter()
        .enumerate()
        .map(|(i, text)| {
            Helper::parse(text, "--key-cmd", numbered.then_some(i + 1), "key", timeout)
        })
        .collect::<Result<Vec<_>>>()?;
    set.fetch(Box::new(KeyCommands {
        helpers,
        customer_id: customer_id.to_owned(),
    }));
    if set.is_empty() {
        return Err(Error::Usage(format!(
            "no key given: the keyring {} holds no key files",
            args.keyring.as_deref().unwrap_or(Path::new("")).display()
        )));
    }
    Ok(set.build())
}

/// The environment's key: `CIPHERSTREAM_KEY_FILE`, else `CIPHERSTREAM_KEY_CMD`, else
/// `CIPHERSTREAM_KEY`, the first one set.
enum EnvKey {
    File(PathBuf),
    Command(String),
    Text(Zeroizing<Vec<u8>>),
}

fn env_key() -> Result<Option<EnvKey>> {
    if let Some(path) = std::env::var_os(ENV_KEY_FILE).filter(|v| !v.is_empty()) {
        return Ok(Some(EnvKey::File(PathBuf::from(path))));
    }
    if let Some(text) = std::env::var_os(ENV_KEY_CMD).filter(|v| !v.is_empty()) {
        let text = text
            .into_string()
            .map_err(|_| Error::Usage(format!("{ENV_KEY_CMD} is not valid UTF-8")))?;
        return Ok(Some(EnvKey::Command(text)));
    }
    Ok(std::env::var_os(ENV_KEY)
        .map(|value| EnvKey::Text(Zeroizing::new(value.into_encoded_bytes()))))
}

/// Key commands, each asked for the key of one key id at a time.
struct KeyCommands {
    helpers: Vec<Helper>,
    customer_id: String,
}

impl Fetch for KeyCommands {
    fn count(&self) -> usize {
        self.helpers.len()
    }

    fn name(&self, i: usize) -> String {
        self.helpers[i].name().to_owned()
    }

    fn fetch(&self, i: usize, key_id: &str) -> Result<(Key, String), CommandFailure> {
        let helper = &self.helpers[i];
        let key = key_from_command(helper, Some(key_id), &self.customer_id)?;
        Ok((key, helper.name().to_owned()))
    }
}

/// Run a key command for `key_id` (unset in its environment when `None`) and read its key.
fn key_from_command(
    helper: &Helper,
    key_id: Option<&str>,
    customer_id: &str,
) -> Result<Key, CommandFailure> {
    let text = helper
        .run(&[(ENV_KEY_ID, key_id), (ENV_CUSTOMER_ID, Some(customer_id))])
        .map_err(|problem| helper.failure(key_id, problem))?;
    let source = KeySource::Command(match key_id {
        Some(key_id) => format!("{} for key id {}", helper.name(), text::quote(key_id)),
        None => helper.name().to_owned(),
    });
    Key::from_base64(&text, &source).map_err(|e| {
        let why = match e {
            Error::Key(why) => why,
            other => other.to_string(),
        };
        helper.failure(key_id, CommandProblem::Unusable(why))
    })
}

/// Read the key file at `path`.
fn key_file_at(path: &Path, from: PathFrom, warn: &dyn Warn) -> Result<Key> {
    let text = read_secret_file(path, from, warn)?;
    Key::from_base64(&text, &KeySource::File(path.to_path_buf()))
}

/// The keys of a keyring directory: (key id it is named for, path, key) for every file whose name
/// does not start with a dot, in name order. The directory must be open to its owner only, and
/// every file too: a keyring is refused rather than used with a warning, as a key file is, since
/// it holds many keys, and the error says how to fix it. A file name that is not UTF-8 names no
/// key id (key ids are UTF-8); its key is still tried.
fn keyring(dir: &Path, warn: &dyn Warn) -> Result<Vec<(Option<String>, PathBuf, Key)>> {
    let shown = dir.display();
    let meta =
        fs::metadata(dir).map_err(|e| Error::io(format!("cannot open keyring {shown}"), e))?;
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "--keyring {shown} is not a directory"
        )));
    }
    let refuse = |problem| Error::Keyring {
        dir: dir.to_path_buf(),
        problem,
    };
    if let Some(mode) = shared_mode(&meta) {
        return Err(refuse(KeyringProblem::SharedDirectory { mode }));
    }
    let mut entries = Vec::new();
    for entry in
        fs::read_dir(dir).map_err(|e| Error::io(format!("cannot read keyring {shown}"), e))?
    {
        let entry = entry.map_err(|e| Error::io(format!("cannot read keyring {shown}"), e))?;
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        if entries.len() == MAX_KEYRING_FILES {
            return Err(refuse(KeyringProblem::TooMany {
                limit: MAX_KEYRING_FILES,
            }));
        }
        entries.push((name, entry.path()));
    }
    entries.sort();
    let mut keys = Vec::with_capacity(entries.len());
    for (name, path) in entries {
        // Following a symbolic link, as opening the file does.
        let meta = fs::metadata(&path)
            .map_err(|e| Error::io(format!("cannot open key file {}", path.display()), e))?;
        if !meta.is_file() {
            return Err(refuse(KeyringProblem::NotAFile { entry: path }));
        }
        if let Some(mode) = shared_mode(&meta) {
            return Err(refuse(KeyringProblem::SharedFile { file: path, mode }));
        }
        let key = key_file_at(&path, KEYRING_FILE, warn)?;
        keys.push((name.into_string().ok(), path, key));
    }
    Ok(keys)
}

/// The permission bits of a file open to group or others; `None` when it is private.
fn shared_mode(meta: &fs::Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Where webhook secrets come from: `--secret-file`s and `--secret-cmd`s.
pub struct SecretSources<'a> {
    /// Every `--secret-file`.
    pub files: &'a [PathBuf],
    /// Every `--secret-cmd`.
    pub commands: &'a [String],
    /// `--secret-cmd-timeout`.
    pub timeout: Duration,
}

/// The webhook secrets: every file and what every command prints (any one may match, for a
/// rotation's grace period), else `CIPHERSTREAM_WEBHOOK_SECRET`. None at all is a usage error, so
/// the list returned is never empty. The commands run now, each once, told nothing in their
/// environment; one that fails is an error (exit 1), as a secret file that cannot be read is.
pub fn secrets(from: &SecretSources<'_>, warn: &dyn Warn) -> Result<Vec<Secret>> {
    let (files, commands) = (from.files, from.commands);
    if files.is_empty() && commands.is_empty() {
        if let Some(value) = std::env::var_os(ENV_SECRET) {
            let text = Zeroizing::new(value.into_encoded_bytes());
            return Ok(vec![Secret::from_text(&text, ENV_SECRET)?]);
        }
        return Err(Error::Usage(format!(
            "no webhook secret given: use --secret-file PATH or --secret-cmd CMD, or set \
             {ENV_SECRET}"
        )));
    }
    let mut secrets = Vec::with_capacity(files.len() + commands.len());
    if !files.is_empty() {
        // During a rotation the receiver lists the old and the new file; once one of them is
        // removed, the others must still work (with a warning, so the configuration gets fixed).
        // A file that exists but cannot be read is still an error, as is every file missing
        // when no command gives a secret either.
        let present: Vec<&PathBuf> = files
            .iter()
            .filter(|p| !matches!(p.try_exists(), Ok(false)))
            .collect();
        if present.is_empty() && commands.is_empty() {
            return Err(secret_file(&files[0], warn)
                .err()
                .unwrap_or_else(|| Error::Usage("no webhook secret file exists".to_owned())));
        }
        for missing in files.iter().filter(|p| !present.contains(p)) {
            warn.warn(Warning::MissingSecretFile {
                path: (!looks_like_secret(missing)).then(|| missing.clone()),
                remaining: present.len() + commands.len(),
            });
        }
        for path in present {
            secrets.push(secret_file(path, warn)?);
        }
    }
    let numbered = commands.len() > 1;
    for (i, text) in commands.iter().enumerate() {
        let number = numbered.then_some(i + 1);
        let helper = Helper::parse(text, "--secret-cmd", number, "webhook secret", from.timeout)?;
        let printed = helper
            .run(&[])
            .map_err(|problem| Error::Command(Box::new(helper.failure(None, problem))))?;
        secrets.push(Secret::from_text(
            &printed,
            format!("the output of {}", helper.name()),
        )?);
    }
    Ok(secrets)
}

/// Read one webhook secret file.
fn secret_file(path: &Path, warn: &dyn Warn) -> Result<Secret> {
    let text = read_secret_file(path, SECRET_FILE_FLAG, warn)?;
    Secret::from_text(
        &text,
        format!("{} {}", SECRET_FILE_FLAG.what, path.display()),
    )
}

/// Read a small secret file (key or webhook secret) into a wiped-on-drop buffer, warning when the
/// file is readable by group or others (SPEC: warn, do not refuse). A file that does not exist
/// is named in the error unless its name [`looks_like_secret`].
fn read_secret_file(path: &Path, from: PathFrom, warn: &dyn Warn) -> Result<Zeroizing<Vec<u8>>> {
    let what = from.what;
    let shown = path.display();
    let mut file = fs::File::open(path).map_err(|e| {
        if fs::symlink_metadata(path).is_err() && looks_like_secret(path) {
            Error::SecretGivenAsPath {
                what,
                given: from.given,
                meant: from.meant,
            }
        } else {
            Error::io(format!("cannot open {what} {shown}"), e)
        }
    })?;
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

/// Whether a key or secret file's name, for a file that does not exist, could be the key or
/// secret itself, and so must not be shown. It could when it is one token (surrounding whitespace
/// aside: `$(cat key)` keeps a `\r`) and either
///
/// - is the base64 of exactly 32 bytes (standard or URL-safe alphabet, padding optional), as an
///   AES-256 key is, `/` and all (about half of all keys hold a `/`), read leniently; or
/// - is at least 12 characters long, holds letters and digits, and has neither `/`, `\` nor `.`:
///   generated secrets (`whsec_7f3c...`, hex, base64 keys of other lengths) look like that, while
///   a file name nearly always has a directory or an extension.
///
/// A missing file caught by mistake only goes unnamed (the message still says where its name came
/// from); a key caught by nothing would be printed.
pub(crate) fn looks_like_secret(path: &Path) -> bool {
    let Some(text) = path.to_str() else {
        return false;
    };
    let text = text.trim_ascii();
    if text.is_empty() || text.chars().any(char::is_whitespace) {
        return false;
    }
    // Lenient (any padding, any trailing bits): better unshown than a near-key shown.
    let config = base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    let key_like = [&base64::alphabet::STANDARD, &base64::alphabet::URL_SAFE]
        .into_iter()
        .any(|alphabet| {
            let mut bytes = Zeroizing::new(Vec::with_capacity(text.len()));
            base64::engine::GeneralPurpose::new(alphabet, config)
                .decode_vec(text, &mut bytes)
                .is_ok()
                && bytes.len() == 32
        });
    let token_like = text.chars().count() >= 12
        && !text.contains(['/', '\\', '.'])
        && text.chars().any(|c| c.is_alphabetic())
        && text.chars().any(|c| c.is_ascii_digit());
    key_like || token_like
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_secrets_look_like_secrets_and_file_names_do_not() {
        for secret in [
            // Keys: standard base64 of 32 bytes, with `+`, with `/`, unpadded, URL-safe, with
            // the `\r` of a CRLF file.
            "KWYaVYUN8EaMDLRkhRmZowpWIjT3d9be5zmL+R9tGKw=",
            "Wj34nae/I9cexj8RHZFxw/BQRzgKF4EvICSOY8/e1Ps=",
            "Wj34nae/I9cexj8RHZFxw/BQRzgKF4EvICSOY8/e1Ps",
            "Wj34nae_I9cexj8RHZFxw_BQRzgKF4EvICSOY8_e1Ps=",
            "/BQRzgKF4EvICSOY8/e1Ps0aWsmgFfrC73s0FnNjVRK=",
            "KWYaVYUN8EaMDLRkhRmZowpWIjT3d9be5zmL+R9tGKw=\r",
            // Keys of other lengths, and webhook secrets.
            "AAECAwQFBgcICQoLDA0ODw==",
            "whsec_7f3c9a1e5b2d4068",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ] {
            assert!(looks_like_secret(Path::new(secret)), "{secret:?}");
        }
        for name in [
            "customer.key",
            "/etc/cipherstream/key",
            "/etc/cipherstream/secret",
            "keys/prod-2024",
            "webhook-secret",
            "customer_webhook_secret",
            "secret2024",
            "My Keys 2024 backup",
            "",
        ] {
            assert!(!looks_like_secret(Path::new(name)), "{name:?}");
        }
    }
}
