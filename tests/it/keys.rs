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

// Key commands (issue 15, items 1 and 4).

impl Env {
    /// An executable shell script `name` in the directory, run as `./name`.
    fn script(&self, name: &str, body: &str) -> String {
        let path = self.path(name);
        fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        set_mode(&path, 0o755);
        format!("./{name}")
    }

    /// The key file's base64 text.
    fn text(&self, key: &Path) -> String {
        fs::read_to_string(key).unwrap().trim().to_owned()
    }
}

/// Whether process `pid` is alive (not gone, not a zombie).
fn alive(pid: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(") ").next().unwrap_or("").starts_with('Z'))
}

/// Wait up to 5 s for processes to be gone.
fn gone(pids: &[String]) -> bool {
    let start = std::time::Instant::now();
    while pids.iter().any(|p| alive(p)) {
        if start.elapsed() > std::time::Duration::from_secs(5) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

/// The key's text, or any 8 characters of it, appears nowhere in `text`.
fn assert_no_key(text: &str, key: &str) {
    for piece in key.as_bytes().windows(8) {
        let piece = std::str::from_utf8(piece).unwrap();
        assert!(!text.contains(piece), "{piece:?} of the key in {text:?}");
    }
}

#[test]
fn a_key_command_gets_the_key_id_and_customer_id_from_its_environment_only() {
    let env = Env::new();
    let a = env.key("a.key");
    env.export("x.ndjson", &env.sealed(&a, "k1"));
    let cmd = env.script(
        "helper.sh",
        "printf 'args=%s id=%s customer=%s key=%s secret=%s ' \"$#\" \"$CIPHERSTREAM_KEY_ID\" \
         \"$CIPHERSTREAM_CUSTOMER_ID\" \"${CIPHERSTREAM_KEY-unset}\" \
         \"${CIPHERSTREAM_WEBHOOK_SECRET-unset}\" >&2\n\
         if read line; then echo \"stdin=$line\" >&2; else echo stdin=closed >&2; fi\n\
         cat a.key\n",
    );
    let out = cipherstream()
        .current_dir(env.dir.path())
        .args([
            "decrypt",
            "x.ndjson",
            "--customer-id",
            CUSTOMER,
            "--key-cmd",
            &cmd,
        ])
        .env("CIPHERSTREAM_KEY", "not-for-helpers")
        .env("CIPHERSTREAM_WEBHOOK_SECRET", "nor-this")
        .write_stdin("not for the helper either\n")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), plain());
    assert_eq!(
        stderr(&out),
        "args=0 id=k1 customer=cust_keys key=unset secret=unset stdin=closed\n"
    );
}

/// Rows that switch key id: the command runs once for each key id, however many rows and threads
/// (20,000 rows make several chunks, opened by several workers at once).
#[test]
fn a_key_command_runs_once_per_key_id() {
    let env = Env::new();
    let (a, b) = (env.key("a.key"), env.key("b.key"));
    fs::create_dir(env.path("vault")).unwrap();
    fs::copy(&a, env.path("vault/ka")).unwrap();
    fs::copy(&b, env.path("vault/kb")).unwrap();
    let many: String = (0..20_000)
        .map(|i| format!("{{\"id\":{i},\"pad\":\"{:0>100}\"}}\n", i))
        .collect();
    fs::write(env.path("plain.ndjson"), &many).unwrap();
    let mut lines = env.sealed(&a, "ka");
    lines.splice(10_000.., env.sealed(&b, "kb").drain(10_000..));
    env.export("x.ndjson", &lines);
    let cmd = env.script(
        "vault.sh",
        "echo \"$CIPHERSTREAM_KEY_ID\" >> runs.log\ncat \"vault/$CIPHERSTREAM_KEY_ID\"\n",
    );
    for threads in ["1", "3"] {
        let _ = fs::remove_file(env.path("runs.log"));
        let out = env.run(
            "verify",
            Path::new("x.ndjson"),
            &["--key-cmd", &cmd, "--threads", threads],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "x.ndjson: ok, 20000 rows, key ids: ka (--key-cmd \"./vault.sh\"), kb (--key-cmd \
             \"./vault.sh\")\n"
        );
        assert_eq!(
            fs::read_to_string(env.path("runs.log")).unwrap(),
            "ka\nkb\n"
        );
    }
    // A key file that opens the rows: the command is not run at all.
    let _ = fs::remove_file(env.path("runs.log"));
    fs::write(env.path("plain.ndjson"), plain()).unwrap();
    env.export("a-only.ndjson", &env.sealed(&a, "ka"));
    let out = env.run(
        "verify",
        Path::new("a-only.ndjson"),
        &["--key-cmd", &cmd, "--key-file", "a.key"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!env.path("runs.log").exists());
}

#[test]
fn a_key_command_that_hangs_is_killed_with_its_process_group_at_the_timeout() {
    let env = Env::new();
    let a = env.key("a.key");
    env.export("x.ndjson", &env.sealed(&a, "k1"));
    let cmd = env.script(
        "hang.sh",
        "echo $$ > helper.pid\nsleep 1000 &\necho $! > child.pid\nwait\n",
    );
    let started = std::time::Instant::now();
    let out = env.run(
        "decrypt",
        Path::new("x.ndjson"),
        &["--key-cmd", &cmd, "--key-cmd-timeout", "1"],
    );
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: x.ndjson: row 0: --key-cmd \"./hang.sh\" for key id \"k1\" did not finish \
         within 1 second; it was killed, with every process it started\nhint: raise \
         --key-cmd-timeout SECS if it really needs longer; a command that waits for a passphrase \
         cannot get one here\n"
    );
    assert_eq!(stdout(&out), "");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    let pids = ["helper.pid", "child.pid"]
        .map(|f| fs::read_to_string(env.path(f)).unwrap().trim().to_owned());
    assert!(gone(&pids), "the helper or its child survived");
}

/// A command that leaves a child holding its standard output open: what it printed before it
/// exited is the key, and the run goes on without waiting for the child (which is killed).
#[test]
fn a_grandchild_holding_the_output_open_does_not_hang_the_run() {
    let env = Env::new();
    let a = env.key("a.key");
    env.export("x.ndjson", &env.sealed(&a, "k1"));
    let cmd = env.script(
        "daemon.sh",
        "cat a.key\nsleep 1000 &\necho $! > child.pid\nexit 0\n",
    );
    let started = std::time::Instant::now();
    let out = env.run("decrypt", Path::new("x.ndjson"), &["--key-cmd", &cmd]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), plain());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let child = fs::read_to_string(env.path("child.pid"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(gone(&[child]), "the background child survived");
}

#[test]
fn a_key_command_that_fails_exits_1_with_its_status_and_its_message() {
    let env = Env::new();
    let a = env.key("a.key");
    env.export("x.ndjson", &env.sealed(&a, "k1"));
    let cmd = env.script(
        "fail.sh",
        "echo 'vault: permission denied for secret/cipherstream/k1' >&2\nexit 2\n",
    );
    let out = env.run("verify", Path::new("x.ndjson"), &["--key-cmd", &cmd]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "x.ndjson: FAILED\n");
    assert_eq!(
        stderr(&out),
        "vault: permission denied for secret/cipherstream/k1\nerror: x.ndjson: row 0: \
         --key-cmd \"./fail.sh\" for key id \"k1\" failed (exit status 2)\nhint: its own \
         message, if it wrote one, is above; run it by hand to see what it does (cipherstream \
         sets CIPHERSTREAM_KEY_ID=\"k1\" and CIPHERSTREAM_CUSTOMER_ID for it)\n"
    );
    // Even when skipping bad rows: the rows are not bad, the key is missing.
    let out = env.run(
        "decrypt",
        Path::new("x.ndjson"),
        &["--key-cmd", &cmd, "--skip-bad-rows"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert!(!stderr(&out).contains("skipped"), "{}", stderr(&out));
    // Killed by a signal; not found; not a command at all.
    let cmd = env.script("killed.sh", "kill -KILL $$\n");
    let out = env.run("verify", Path::new("x.ndjson"), &["--key-cmd", &cmd]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(
            "error: x.ndjson: row 0: --key-cmd \"./killed.sh\" for key id \"k1\" was killed by \
             signal 9 (SIGKILL)\n"
        ),
        "{}",
        stderr(&out)
    );
    let out = env.run(
        "verify",
        Path::new("x.ndjson"),
        &["--key-cmd", "no-such-helper-here --field key"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: x.ndjson: row 0: --key-cmd \"no-such-helper-here\" for key id \"k1\" could not \
         be started: No such file or directory\nhint: --key-cmd is split into words as a shell \
         would split it, but no shell runs it ($VARIABLES, ~, pipes and redirections are not \
         expanded): check the program's name and PATH, or put the commands in a script\n"
    );
    let out = env.run(
        "verify",
        Path::new("x.ndjson"),
        &["--key-cmd", "pass show 'k"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: --key-cmd is not a command: it is empty, or a quote in it is not closed\nhint: \
         run with --help for usage\n"
    );
}

/// What a command prints that is not a key is refused (exit 1) without being shown.
#[test]
fn a_key_command_that_prints_garbage_megabytes_or_a_short_key_exits_1_unechoed() {
    let env = Env::new();
    let a = env.key("a.key");
    env.export("x.ndjson", &env.sealed(&a, "k1"));
    let key = env.text(&a);
    // 31 bytes: the key less its last byte.
    let short = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        b64.encode(&b64.decode(&key).unwrap()[..31])
    };
    let cases = [
        (
            "short.sh",
            format!("echo {short}\n"),
            "the output of --key-cmd \"./short.sh\" for key id \"k1\" decodes to 31 bytes, but \
             an AES-256 key needs exactly 32 bytes\n",
        ),
        (
            "garbage.sh",
            format!("echo 'Error:{key}sealed'\n"),
            "the output of --key-cmd \"./garbage.sh\" for key id \"k1\" is not valid base64 \
             (standard alphabet)",
        ),
        (
            "flood.sh",
            format!("exec yes {key}\n"),
            "--key-cmd \"./flood.sh\" for key id \"k1\" printed more than 4096 bytes on standard \
             output, more than any key; it was killed\n",
        ),
    ];
    for (name, body, want) in cases {
        let cmd = env.script(name, &body);
        let started = std::time::Instant::now();
        let out = env.run("decrypt", Path::new("x.ndjson"), &["--key-cmd", &cmd]);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{name}"
        );
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{name}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!("error: x.ndjson: row 0: {want}")),
            "{name}: {err}"
        );
        assert!(
            err.ends_with(
                "hint: a key command prints the key's base64 text (32 bytes) and nothing else \
                 on standard output; its messages belong on standard error\n"
            ),
            "{name}: {err}"
        );
        assert_no_key(&err, &key);
        assert_no_key(&err, &short);
    }
    // The key without a final newline (as `vault kv get -field=key` prints it) is a key.
    let cmd = env.script("vault.sh", "printf %s \"$(cat a.key)\"\n");
    let out = env.run("decrypt", Path::new("x.ndjson"), &["--key-cmd", &cmd]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), plain());
}

/// A key that is a key but the wrong one is an authentication failure, as from a file.
#[test]
fn a_wrong_key_from_a_command_is_still_exit_3() {
    let env = Env::new();
    let (a, b) = (env.key("a.key"), env.key("b.key"));
    env.export("x.ndjson", &env.sealed(&a, "k1"));
    let cmd = env.script("other.sh", "cat b.key\n");
    let out = env.run("verify", Path::new("x.ndjson"), &["--key-cmd", &cmd]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).starts_with("error: x.ndjson: row 0: authentication failed\n"),
        "{}",
        stderr(&out)
    );
    assert_no_key(&stderr(&out), &env.text(&b));
}

/// A command that wants the terminal (SIGTTIN: it tried to read a passphrase) is killed at once
/// rather than left stopped until the timeout.
#[test]
fn a_key_command_that_stops_for_the_terminal_is_killed() {
    let env = Env::new();
    let a = env.key("a.key");
    env.export("x.ndjson", &env.sealed(&a, "k1"));
    let cmd = env.script("prompt.sh", "kill -TTIN $$\ncat a.key\n");
    let started = std::time::Instant::now();
    let out = env.run("verify", Path::new("x.ndjson"), &["--key-cmd", &cmd]);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: x.ndjson: row 0: --key-cmd \"./prompt.sh\" for key id \"k1\" was stopped by \
         signal 21 (SIGTTIN) (a key command cannot use the terminal), and killed\nhint: it runs \
         with standard input closed and in a process group of its own, so it cannot prompt for a \
         passphrase: unlock its agent first (gpg-agent, 1Password, vault login), or give the key \
         another way\n"
    );
}

#[test]
fn the_environment_can_name_a_key_command_and_flags_replace_it() {
    let env = Env::new();
    let (a, b) = (env.key("a.key"), env.key("b.key"));
    env.export("x.ndjson", &env.sealed(&a, "k1"));
    let cmd = env.script("a.sh", "cat a.key\n");
    let out = cipherstream()
        .current_dir(env.dir.path())
        .args(["verify", "x.ndjson", "--customer-id", CUSTOMER])
        .env("CIPHERSTREAM_KEY_CMD", &cmd)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "x.ndjson: ok, 8 rows, key ids: k1 (CIPHERSTREAM_KEY_CMD \"./a.sh\")\n"
    );
    // CIPHERSTREAM_KEY_FILE comes first; a flag replaces the environment.
    let out = cipherstream()
        .current_dir(env.dir.path())
        .args(["verify", "x.ndjson", "--customer-id", CUSTOMER])
        .env("CIPHERSTREAM_KEY_CMD", &cmd)
        .env("CIPHERSTREAM_KEY_FILE", &b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let out = cipherstream()
        .current_dir(env.dir.path())
        .args([
            "verify",
            "x.ndjson",
            "--customer-id",
            CUSTOMER,
            "--key-file",
            "a.key",
        ])
        .env("CIPHERSTREAM_KEY_CMD", "false")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// `encrypt --key-cmd` tells the command the key id it seals under.
#[test]
fn encrypt_takes_its_key_from_a_command() {
    let env = Env::new();
    env.key("a.key");
    let cmd = env.script(
        "enc.sh",
        "echo \"id=${CIPHERSTREAM_KEY_ID-unset} customer=$CIPHERSTREAM_CUSTOMER_ID\" >&2\ncat a.key\n",
    );
    for (extra, seen) in [
        (&["--key-id", "k2025"][..], "id=k2025 customer=cust_keys\n"),
        (&[][..], "id=unset customer=cust_keys\n"),
    ] {
        let _ = fs::remove_file(env.path("out.ndjson"));
        let out = cipherstream()
            .current_dir(env.dir.path())
            .args([
                "encrypt",
                "plain.ndjson",
                "-o",
                "out.ndjson",
                "--format",
                "ndjson",
            ])
            .args(["--customer-id", CUSTOMER, "--key-cmd", &cmd])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stderr(&out), seen);
        let out = env.run("decrypt", Path::new("out.ndjson"), &["--key-file", "a.key"]);
        assert_eq!(stdout(&out), plain());
    }
    let fail = env.script("fail.sh", "exit 4\n");
    let out = cipherstream()
        .current_dir(env.dir.path())
        .args(["encrypt", "plain.ndjson", "-o", "never.ndjson"])
        .args(["--customer-id", CUSTOMER, "--key-cmd", &fail])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: --key-cmd \"./fail.sh\" failed (exit status 4)\n"),
        "{}",
        stderr(&out)
    );
    assert!(!env.path("never.ndjson").exists());
}

// Webhook secrets from a command (issue 15, item 1: "the same mechanism").

/// A delivery body from the webhook tests, and its signature under `secret`.
fn delivery(env: &Env, secret: &str) -> (PathBuf, String) {
    let body = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/webhook/completed.json");
    fs::write(env.path("signing.secret"), secret).unwrap();
    let out = cipherstream()
        .args(["webhook", "sign", "--secret-file"])
        .arg(env.path("signing.secret"))
        .arg(&body)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    (body, stdout(&out).trim().to_owned())
}

#[test]
fn webhook_secrets_from_commands() {
    let env = Env::new();
    let (body, signature) = delivery(&env, "whsec_new_5d1e9a");
    let new = env.script("new.sh", "echo whsec_new_5d1e9a\n");
    let old = env.script("old.sh", "printf %s whsec_old_77c3b0\n");
    fs::write(env.path("old.secret"), "whsec_old_77c3b0\n").unwrap();
    set_mode(&env.path("old.secret"), 0o600);
    let verify = |args: &[&str]| {
        cipherstream()
            .current_dir(env.dir.path())
            .args([
                "webhook",
                "verify",
                "--no-timestamp-check",
                "--signature",
                &signature,
            ])
            .args(args)
            .arg(&body)
            .output()
            .unwrap()
    };
    // Alone, beside an old secret's command or file (a rotation): any one may match.
    for args in [
        &["--secret-cmd", &new][..],
        &["--secret-cmd", &old, "--secret-cmd", &new],
        &["--secret-file", "old.secret", "--secret-cmd", &new],
    ] {
        let out = verify(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert_eq!(out.stdout, fs::read(&body).unwrap());
    }
    // Not matching: the secrets tried are named by where they came from, never shown.
    let out = verify(&["--secret-cmd", &old]);
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!(
            "error: {}: webhook signature does not match the body (tried 1 secret: the output of \
             --secret-cmd \"./old.sh\")\n",
            body.display()
        )),
        "{err}"
    );
    assert!(!err.contains("whsec_"), "{err}");
    // A command that fails, hangs or prints nothing.
    let fail = env.script("fail.sh", "echo 'op: not signed in' >&2\nexit 1\n");
    let out = verify(&["--secret-cmd", &new, "--secret-cmd", &fail]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "op: not signed in\nerror: --secret-cmd #2 \"./fail.sh\" failed (exit status 1)\nhint: \
         its own message, if it wrote one, is above; run it by hand to see what it does\n"
    );
    let hang = env.script("hang.sh", "sleep 1000\n");
    let started = std::time::Instant::now();
    let out = verify(&["--secret-cmd", &hang, "--secret-cmd-timeout", "1"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: --secret-cmd \"./hang.sh\" did not finish within 1 second; it was killed, with \
         every process it started\nhint: raise --secret-cmd-timeout SECS if it really needs \
         longer; a command that waits for a passphrase cannot get one here\n"
    );
    let empty = env.script("empty.sh", "echo\n");
    let out = verify(&["--secret-cmd", &empty]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(
            "error: the output of --secret-cmd \"./empty.sh\" is empty: expected a webhook secret\n"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn webhook_sign_takes_its_secret_from_a_command() {
    let env = Env::new();
    let (body, signature) = delivery(&env, "whsec_new_5d1e9a");
    let new = env.script("new.sh", "echo whsec_new_5d1e9a\n");
    let out = cipherstream()
        .current_dir(env.dir.path())
        .args(["webhook", "sign", "--secret-cmd", &new])
        .arg(&body)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{signature}\n"));
    let out = cipherstream()
        .current_dir(env.dir.path())
        .args([
            "webhook",
            "sign",
            "--secret-cmd",
            &new,
            "--secret-file",
            "x",
        ])
        .arg(&body)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Whether `tool` is installed; without it a recipe test says so and passes, except under CI
/// (`CI` set), which installs it (`.ci/run`).
fn installed(tool: &str, test: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: {tool} is required under CI"
        );
        eprintln!("{test}: skipped: {tool} is not installed");
    }
    found
}

/// The systemd credentials recipe (README, "Keys from a secrets manager"), as far as it runs
/// without systemd as the init system: the key encrypted with `systemd-creds` (under a host key
/// of the test's own, never the machine's), decrypted as `LoadCredentialEncrypted=` does into a
/// private directory as a mode-0400 file, and read from `$CREDENTIALS_DIRECTORY`.
#[test]
fn the_systemd_credentials_recipe() {
    if !installed("systemd-creds", "the_systemd_credentials_recipe") {
        return;
    }
    let env = Env::new();
    let a = env.key("a.key");
    env.export("x.ndjson", &env.sealed(&a, "k1"));
    let credentials = env.path("credentials");
    fs::create_dir(&credentials).unwrap();
    set_mode(&credentials, 0o700);
    let script = format!(
        "set -eu\n\
         export SYSTEMD_CREDENTIAL_SECRET=\"$PWD/host.secret\"\n\
         systemd-creds encrypt --with-key=host --name=cipherstream-key a.key key.cred\n\
         systemd-creds decrypt --name=cipherstream-key key.cred \"$CREDENTIALS_DIRECTORY/cipherstream-key\"\n\
         chmod 400 \"$CREDENTIALS_DIRECTORY/cipherstream-key\"\n\
         exec {} decrypt x.ndjson --customer-id {CUSTOMER} --key-file \"$CREDENTIALS_DIRECTORY/cipherstream-key\"\n",
        env!("CARGO_BIN_EXE_cipherstream")
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .current_dir(env.dir.path())
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .env("SYSTEMD_LOG_LEVEL", "err")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), plain());
    // No warning about the key file's mode, nor anything else.
    assert_eq!(stderr(&out), "");
}

/// A signal that ends cipherstream while a key command runs ends the command and what it started
/// too: they are in a process group of their own, which a terminal's signal does not reach.
#[test]
fn a_signal_ends_a_running_key_command_too() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    let a = env.key("a.key");
    env.export("x.ndjson", &env.sealed(&a, "k1"));
    let cmd = env.script(
        "hang.sh",
        "echo $$ > helper.pid\nsleep 1000 &\necho $! > child.pid\nwait\n",
    );
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_cipherstream"))
        .current_dir(env.dir.path())
        .args([
            "verify",
            "x.ndjson",
            "--customer-id",
            CUSTOMER,
            "--key-cmd",
            &cmd,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !fs::read_to_string(env.path("child.pid")).is_ok_and(|p| p.ends_with('\n')) {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the command never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = run.wait().unwrap();
    assert_eq!(status.signal(), Some(15), "{status:?}");
    let pids = ["helper.pid", "child.pid"]
        .map(|f| fs::read_to_string(env.path(f)).unwrap().trim().to_owned());
    assert!(
        gone(&pids),
        "the command or its child outlived cipherstream"
    );
}

/// A key given where the command belongs is not shown when it cannot be run.
#[test]
fn a_key_given_as_the_command_is_not_shown() {
    let env = Env::new();
    let a = env.key("a.key");
    env.export("x.ndjson", &env.sealed(&a, "k1"));
    let key = env.text(&a);
    let out = env.run("verify", Path::new("x.ndjson"), &["--key-cmd", &key]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with(
            "error: x.ndjson: row 0: --key-cmd (program not shown) for key id \"k1\" could not be \
             started: No such file or directory\n"
        ),
        "{err}"
    );
    assert_no_key(&err, &key);
}
