//! Several keys and where they come from (issue 15): `--key-file` repeated, `--keyring DIR`, the
//! key chosen by row 0's key id or by trying each key, exports whose rows switch key, what `verify`
//! reports, and that an altered key id can make a row fail but never open it wrongly.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use tempfile::TempDir;

use crate::util::cipherstream;

const CUSTOMER: &str = "cust_keys";

/// Eight records, one per line.
fn plain() -> String {
    (0..8)
        .map(|i| format!("{{\"id\":{i},\"patient\":\"p{i}\"}}\n"))
        .collect()
}

struct Env {
    dir: TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::write(env.path("plain.ndjson"), plain()).unwrap();
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A new key at `name` (mode 0600).
    fn key(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        cipherstream()
            .arg("keygen")
            .arg("-o")
            .arg(&path)
            .assert()
            .success();
        path
    }

    /// The export's lines: the records sealed with `key`, every row naming `key_id`.
    fn sealed(&self, key: &Path, key_id: &str) -> Vec<String> {
        let out = self.path("sealed.ndjson");
        let _ = fs::remove_file(&out);
        cipherstream()
            .arg("encrypt")
            .arg(self.path("plain.ndjson"))
            .arg("-o")
            .arg(&out)
            .args(["--format", "ndjson", "--customer-id", CUSTOMER])
            .args(["--key-id", key_id, "--key-file"])
            .arg(key)
            .assert()
            .success();
        fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// An export at `name` made of `lines`.
    fn export(&self, name: &str, lines: &[String]) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    /// A private keyring directory `name` holding `keys` as (file name, key file).
    fn keyring(&self, name: &str, keys: &[(&str, &Path)]) -> PathBuf {
        let dir = self.path(name);
        fs::create_dir(&dir).unwrap();
        set_mode(&dir, 0o700);
        for (file, key) in keys {
            fs::copy(key, dir.join(file)).unwrap();
            set_mode(&dir.join(file), 0o600);
        }
        dir
    }

    /// Run `cipherstream COMMAND INPUT --customer-id cust_keys ARGS...` in the directory.
    fn run<S: AsRef<OsStr>>(&self, command: &str, input: &Path, args: &[S]) -> Output {
        cipherstream()
            .current_dir(self.dir.path())
            .arg(command)
            .arg(input)
            .args(["--customer-id", CUSTOMER])
            .args(args)
            .output()
            .unwrap()
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Flags from paths.
fn flags(pairs: &[(&str, &Path)]) -> Vec<PathBuf> {
    pairs
        .iter()
        .flat_map(|(flag, path)| [PathBuf::from(flag), path.to_path_buf()])
        .collect()
}

#[test]
fn each_row_is_opened_by_whichever_key_file_authenticates_it() {
    let env = Env::new();
    let (a, b) = (env.key("a.key"), env.key("b.key"));
    let export = env.export("x.ndjson", &env.sealed(&b, "kb"));
    let both = flags(&[("--key-file", &a), ("--key-file", &b)]);
    let out = env.run("decrypt", &export, &both);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), plain());
    assert_eq!(stderr(&out), "");
    let out = env.run("verify", &export, &both);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{}: ok, 8 rows, key ids: kb (key file {})\n",
            export.display(),
            b.display()
        )
    );
    let json_args = [&both[..], &[PathBuf::from("--json")]].concat();
    let out = env.run("verify", &export, &json_args);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["keys"],
        serde_json::json!([{"key_id": "kb", "source": format!("key file {}", b.display())}])
    );
}

#[test]
fn a_keyring_file_named_by_the_key_id_or_any_other_opens_the_rows() {
    let env = Env::new();
    let (a, b) = (env.key("a.key"), env.key("b.key"));
    let export = env.export("x.ndjson", &env.sealed(&b, "kb"));
    let keyring = env.keyring("keys", &[("ka", &a), ("kb", &b)]);
    let out = env.run("verify", &export, &flags(&[("--keyring", &keyring)]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{}: ok, 8 rows, key ids: kb (keyring file {})\n",
            export.display(),
            keyring.join("kb").display()
        )
    );
    // No file is named by the key id: each key is tried.
    let renamed = env.keyring("renamed", &[("2023", &a), ("2024", &b)]);
    let out = env.run("decrypt", &export, &flags(&[("--keyring", &renamed)]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), plain());
    // A keyring and key files together; files starting with a dot are not keys.
    fs::write(renamed.join(".notes"), "not a key\n").unwrap();
    let out = env.run(
        "verify",
        &export,
        &flags(&[("--key-file", &a), ("--keyring", &renamed)]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with(&format!(
            "key ids: kb (keyring file {})\n",
            renamed.join("2024").display()
        )),
        "{}",
        stdout(&out)
    );
}

/// A rotation during the job: rows 0-3 sealed with key A (key id ka), rows 4-7 with key B (kb).
#[test]
fn an_export_whose_rows_switch_key_opens_with_both_keys() {
    let env = Env::new();
    let (a, b) = (env.key("a.key"), env.key("b.key"));
    let mut lines = env.sealed(&a, "ka");
    lines.splice(4.., env.sealed(&b, "kb").drain(4..));
    let export = env.export("rotated.ndjson", &lines);
    let both = flags(&[("--key-file", &a), ("--key-file", &b)]);
    for threads in ["1", "4"] {
        let args = [
            &both[..],
            &[PathBuf::from("--threads"), PathBuf::from(threads)],
        ]
        .concat();
        let out = env.run("decrypt", &export, &args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), plain());
        let out = env.run("verify", &export, &args);
        assert_eq!(
            stdout(&out),
            format!(
                "{}: ok, 8 rows, key ids: ka (key file {}), kb (key file {})\n",
                export.display(),
                a.display(),
                b.display()
            )
        );
    }
    // With the old key only, the first row of the new key id fails, and the hint says why.
    let out = env.run("verify", &export, &flags(&[("--key-file", &a)]));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stderr(&out),
        format!(
            "error: {0}: row 4: authentication failed\nhint: no key given opens it, and it is the \
             first row with key id \"kb\": the export switched keys here (a rotation during the \
             job), so give that key too (--key-file, --key-cmd or --keyring); if there is no such \
             key, this line was altered\n",
            export.display()
        )
    );
    let out = env.run("decrypt", &export, &flags(&[("--key-file", &a)]));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stdout(&out),
        plain()
            .lines()
            .take(4)
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
}

/// The key changes but the key id does not: each row still opens with the key that authenticates it.
#[test]
fn rows_that_switch_key_under_one_key_id_open_too() {
    let env = Env::new();
    let (a, b) = (env.key("a.key"), env.key("b.key"));
    let mut lines = env.sealed(&a, "k");
    lines.splice(3.., env.sealed(&b, "k").drain(3..));
    let export = env.export("x.ndjson", &lines);
    let out = env.run(
        "verify",
        &export,
        &flags(&[("--key-file", &a), ("--key-file", &b)]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{}: ok, 8 rows, key ids: k (key file {}, key file {})\n",
            export.display(),
            a.display(),
            b.display()
        )
    );
}

/// key_id is not authenticated: one that names another key changes which key is tried first, never
/// what a row opens to; a row that no key authenticates fails whatever its key id says.
#[test]
fn an_altered_key_id_can_only_make_a_row_fail() {
    let env = Env::new();
    let (a, b) = (env.key("a.key"), env.key("b.key"));
    let mut lines = env.sealed(&a, "ka");
    lines[2] = lines[2].replacen("\"ka:", "\"kb:", 1);
    let export = env.export("relabelled.ndjson", &lines);
    let keyring = env.keyring("keys", &[("ka", &a), ("kb", &b)]);
    let out = env.run("decrypt", &export, &flags(&[("--keyring", &keyring)]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), plain());
    // Its ciphertext altered as well: no key opens it.
    let flip = lines[2].len() - 10;
    let c = if &lines[2][flip..=flip] == "A" {
        "B"
    } else {
        "A"
    };
    lines[2].replace_range(flip..=flip, c);
    let export = env.export("altered.ndjson", &lines);
    let out = env.run("verify", &export, &flags(&[("--keyring", &keyring)]));
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).starts_with(&format!(
            "error: {}: row 2: authentication failed\n",
            export.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn no_key_given_opens_row_0() {
    let env = Env::new();
    let (a, b, c) = (env.key("a.key"), env.key("b.key"), env.key("c.key"));
    let export = env.export("x.ndjson", &env.sealed(&c, "kc"));
    let out = env.run(
        "verify",
        &export,
        &flags(&[("--key-file", &a), ("--key-file", &b)]),
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        stderr(&out),
        format!(
            "error: {}: row 0: authentication failed\nhint: row 0 fails at every nearby index: \
             the key or the --customer-id is wrong (the two look the same)\n",
            export.display()
        )
    );
}

#[test]
fn a_keyring_open_to_others_is_refused_with_the_fix() {
    let env = Env::new();
    let a = env.key("a.key");
    let export = env.export("x.ndjson", &env.sealed(&a, "ka"));
    let keyring = env.keyring("keys", &[("ka", &a)]);
    set_mode(&keyring, 0o755);
    let out = env.run("verify", &export, &flags(&[("--keyring", &keyring)]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: keyring {0} is open to group or others (mode 0755); it must be private\n\
             hint: run: chmod 700 {0}\n",
            keyring.display()
        )
    );
    assert_eq!(stdout(&out), "");
    set_mode(&keyring, 0o700);
    set_mode(&keyring.join("ka"), 0o640);
    let out = env.run("verify", &export, &flags(&[("--keyring", &keyring)]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: keyring file {0}/ka is open to group or others (mode 0640); key files must \
             be private\nhint: run: chmod 600 {0}/ka (or chmod 600 {0}/* for every key file)\n",
            keyring.display()
        )
    );
}

#[test]
fn a_keyring_holds_key_files_and_nothing_else() {
    let env = Env::new();
    let a = env.key("a.key");
    let export = env.export("x.ndjson", &env.sealed(&a, "ka"));
    let empty = env.keyring("empty", &[]);
    let out = env.run("verify", &export, &flags(&[("--keyring", &empty)]));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "error: no key given: the keyring {} holds no key files\nhint: run with --help for \
             usage\n",
            empty.display()
        )
    );
    let keyring = env.keyring("keys", &[("ka", &a)]);
    fs::create_dir(keyring.join("old")).unwrap();
    let out = env.run("verify", &export, &flags(&[("--keyring", &keyring)]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: keyring {0} holds {0}/old, which is not a regular file\nhint: a keyring \
             holds one key file per key id, named by the key id, and nothing else (names \
             starting with a dot are skipped)\n",
            keyring.display()
        )
    );
    fs::remove_dir(keyring.join("old")).unwrap();
    // A file that is not a key is named, and nothing of what it holds is shown.
    fs::write(keyring.join("short"), "AAECAwQFBgcICQoLDA0ODw==\n").unwrap();
    set_mode(&keyring.join("short"), 0o600);
    let out = env.run("verify", &export, &flags(&[("--keyring", &keyring)]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: key file {}/short decodes to 16 bytes, but an AES-256 key needs exactly 32 \
             bytes\n",
            keyring.display()
        )),
        "{err}"
    );
    assert!(!err.contains("AAECAwQF"), "{err}");
}
