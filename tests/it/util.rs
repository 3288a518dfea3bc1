//! Helpers shared by the integration tests: a clean `cipherstream` command and paths.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The repository's `fixtures/` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// `cipherstream` with no CIPHERSTREAM_* variables inherited from the environment.
pub fn cipherstream() -> Command {
    let mut cmd = Command::cargo_bin("cipherstream").expect("binary built");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CIPHERSTREAM_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// The SHA-256 of `bytes` in lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A private copy of a fixture key (mode 0600, so no permission warning clutters stderr).
pub fn private_key(dir: &Path, fixture_key: &str) -> PathBuf {
    let dest = dir.join(Path::new(fixture_key).file_name().unwrap());
    std::fs::copy(fixtures().join(fixture_key), &dest).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dest
}

/// The names of the entries in `dir`, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// True if `python3` with the `cryptography` package is available. Without it a test that needs
/// it prints why and passes, except under CI (`CI` set), where it fails: CI installs it.
pub fn python_cryptography_available(test: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: python3 with `cryptography` is required under CI \
             (python3 -m pip install -r fixtures/requirements.txt)"
        );
        eprintln!("{test}: skipped: python3 with `cryptography` is not installed");
    }
    ok
}

/// Wait (up to 20 s) until the process that `pid` finds has its output file open in `dir`, and
/// return its id: a new name in `dir` (a named temporary file), or a descriptor on a file in `dir`
/// that has no name there, which is how `/proc/PID/fd` shows an unnamed `O_TMPFILE` (Linux:
/// `DIR/#INODE (deleted)`).
pub fn wait_until_writing(dir: &Path, pid: impl Fn() -> Option<u32>) -> u32 {
    let before = entries(dir);
    let dir = dir.canonicalize().unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Some(pid) = pid() {
            if entries(&dir).len() > before.len() {
                return pid;
            }
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten();
            let unnamed = fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|target| {
                    target.parent() == Some(&dir) && !before.iter().any(|n| target == dir.join(n))
                })
            });
            if unnamed {
                return pid;
            }
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the run never opened its output file"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
