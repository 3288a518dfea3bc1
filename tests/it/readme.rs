//! The README's examples run as written (issue 12, item 13).
//!
//! Every ```` ```sh ```` block of README.md is run with `bash -eu -o pipefail`, and every
//! ```` ```console ```` block is a transcript whose `$ ` commands are run and whose other lines
//! are the exact output expected. Other fences (`text`, `crontab`, `ini`, ...) are shown, not run.
//! Blocks that build or test this repository (`cargo ...`) are left to CI itself.
//!
//! They run in a sandbox that stands in for a customer's machine: `HOME` is a temporary
//! directory, `cipherstream` is on `PATH`, and the files the examples name exist there: a
//! throwaway key at `~/.config/cipherstream/key`, `export.zip` (the demo export encrypted again
//! for `cust_123` with that key), `damaged.zip` (row 3 altered), `sample.ndjson`, a webhook secret
//! and a body signed with it, and `$S3_URL`: `export.zip` served over HTTP on a loopback port by
//! Python's `http.server` with a strong ETag added (it ignores `Range`, so the examples also meet
//! a server that answers `200`). `jq` and `curl` are needed, as the examples use them (CI installs them). A block that
//! needs other tools says so in a first line `# requires: TOOL...` (the key recipes: `pass`,
//! `gpg`, `age`); without them it is skipped with a message, except under CI, which installs them.
//! A `gpg-agent` that a block started is stopped after it.

use std::io::Write;

/// Python's `http.server` for the sandbox's files, plus a strong ETag (the file's size and
/// modification time, as nginx makes one): `decrypt URL` reads an object in several requests
/// only when an ETag says they are of the same object. It still ignores `Range`.
const FILE_SERVER: &str = r#"
import http.server, os, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self):
        path = self.translate_path(self.path)
        if os.path.isfile(path):
            st = os.stat(path)
            self.send_header("ETag", '"%x-%x"' % (st.st_mtime_ns, st.st_size))
        super().end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::fixtures;

/// One fenced block: its language, its first line's number and its text.
struct Block {
    lang: String,
    line: usize,
    text: String,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in readme.lines().enumerate() {
        if let Some(fence) = line.strip_prefix("```") {
            match current.take() {
                Some(block) => out.push(block),
                None => {
                    current = Some(Block {
                        lang: fence.trim().to_owned(),
                        line: i + 2,
                        text: String::new(),
                    })
                }
            }
        } else if let Some(block) = current.as_mut() {
            block.text.push_str(line);
            block.text.push('\n');
        }
    }
    out
}

/// The directory holding the `cipherstream` binary under test.
fn bin_dir() -> PathBuf {
    assert_cmd::cargo::cargo_bin("cipherstream")
        .parent()
        .unwrap()
        .to_path_buf()
}

struct Sandbox {
    dir: tempfile::TempDir,
    path: String,
    server: std::process::Child,
    port: u16,
}

impl Drop for Sandbox {
    /// Stop the file server, and a `gpg-agent` that a block started (`pass`), which would
    /// outlive the sandbox.
    fn drop(&mut self) {
        if self.home().join(".gnupg").exists() {
            let _ = self.run("gpgconf --kill all");
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // A free loopback port for the file server.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Command::new("python3")
            .args(["-c", FILE_SERVER, &port.to_string()])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sandbox = Sandbox {
            dir,
            path,
            server,
            port,
        };
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "the sandbox's file server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        sandbox.prepare();
        sandbox
    }

    fn home(&self) -> &Path {
        self.dir.path()
    }

    /// A file of the sandbox's home, as served over HTTP on loopback.
    fn url(&self, file: &str) -> String {
        format!("http://127.0.0.1:{}/{file}", self.port)
    }

    /// A shell in the sandbox, with no CIPHERSTREAM_* variable from the test's environment.
    fn shell(&self, script: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.args(["-eu", "-o", "pipefail", "-c", script])
            .current_dir(self.home())
            .env("HOME", self.home())
            .env("PATH", &self.path)
            .env("S3_URL", self.url("export.zip"))
            .env("SIGNATURE", self.signature())
            .stdin(Stdio::null());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CIPHERSTREAM_") {
                cmd.env_remove(k);
            }
        }
        cmd
    }

    fn run(&self, script: &str) -> std::process::Output {
        self.shell(script).output().unwrap()
    }

    fn must(&self, script: &str) {
        let out = self.run(script);
        assert!(
            out.status.success(),
            "sandbox setup failed: {script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The tools a block's `# requires:` line names that are not installed.
    fn missing(&self, block: &Block) -> Vec<String> {
        let Some(tools) = block
            .text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# requires:"))
        else {
            return Vec::new();
        };
        tools
            .split_whitespace()
            .filter(|tool| !self.run(&format!("command -v {tool}")).status.success())
            .map(str::to_owned)
            .collect()
    }

    fn signature(&self) -> String {
        std::fs::read_to_string(self.home().join(".signature")).unwrap_or_default()
    }

    fn prepare(&self) {
        let demo = fixtures().join("demo/expected.ndjson");
        let home = self.home();
        std::fs::copy(&demo, home.join("sample.ndjson")).unwrap();
        self.must(
            "mkdir -p ~/.config/cipherstream && cipherstream keygen -o ~/.config/cipherstream/key \
             && cipherstream encrypt sample.ndjson --customer-id cust_123 \
                --key-file ~/.config/cipherstream/key --key-id k2024 \
                --job-id appointments_1758630144658_c7511999 -o export.zip \
             && cipherstream encrypt sample.ndjson --customer-id cust_123 \
                --key-file ~/.config/cipherstream/key --key-id k2024 --format ndjson \
                -o .damaged.ndjson",
        );
        // damaged.zip: row 3's ciphertext altered, in an intact ZIP.
        let text = std::fs::read_to_string(home.join(".damaged.ndjson")).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let flip = lines[3].len() - 10;
        let c = if &lines[3][flip..=flip] == "A" {
            "B"
        } else {
            "A"
        };
        lines[3].replace_range(flip..=flip, c);
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.start_file("damaged.ndjson", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
        std::fs::write(home.join("damaged.zip"), zip.finish().unwrap().into_inner()).unwrap();
        // A webhook secret, and a delivery signed with it whose export is `$S3_URL`.
        std::fs::write(home.join("webhook-secret"), "whsec_readme_example\n").unwrap();
        let rows = text.lines().count();
        let size = std::fs::metadata(home.join("export.zip")).unwrap().len();
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let body = format!(
            r#"{{"event":"job.completed","timestamp":"{now}","delivery_id":"dlv_readme_1","attempt":1,"data":{{"job_id":"appointments_1758630144658_c7511999","customer_id":"cust_123","rows_processed":{rows},"file_size_bytes":{size},"s3_url":"{}","output_format":"ndjson","compression":"zip"}}}}"#,
            self.url("export.zip")
        );
        std::fs::write(home.join("body.json"), &body).unwrap();
        let out = self.run("cipherstream webhook sign --secret-file webhook-secret body.json");
        assert!(out.status.success());
        std::fs::write(
            home.join(".signature"),
            String::from_utf8(out.stdout).unwrap().trim(),
        )
        .unwrap();
    }
}

/// Run the commands of a transcript and compare each one's standard output with the lines after
/// it, exactly.
fn check_transcript(sandbox: &Sandbox, block: &Block) {
    let mut steps: Vec<(String, String)> = Vec::new();
    for line in block.text.lines() {
        match line.strip_prefix("$ ") {
            Some(command) => steps.push((command.to_owned(), String::new())),
            None => {
                let (_, expected) = steps.last_mut().unwrap_or_else(|| {
                    panic!("README line {}: output before a $ command", block.line)
                });
                expected.push_str(line);
                expected.push('\n');
            }
        }
    }
    for (command, expected) in steps {
        let out = sandbox.run(&command);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            expected,
            "README line {}: `{command}` printed something else; stderr:\n{}",
            block.line,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_example_in_the_readme_runs_as_written() {
    for tool in ["jq", "curl"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var_os("CI").is_none(),
                "the README examples need {tool}; CI installs it"
            );
            eprintln!("every_example_in_the_readme_runs_as_written: skipped: no {tool}");
            return;
        }
    }
    let readme = std::fs::read_to_string(fixtures().join("../README.md")).unwrap();
    let blocks = blocks(&readme);
    let mut ran = 0;
    for block in &blocks {
        let first = block.text.trim_start();
        match block.lang.as_str() {
            "sh" if first.starts_with("cargo ") => {}
            "sh" => {
                // A fresh sandbox per block, so no block depends on another's leftovers.
                let sandbox = Sandbox::new();
                let missing = sandbox.missing(block);
                if !missing.is_empty() {
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "README line {}: the example needs {}; CI installs it",
                        block.line,
                        missing.join(" ")
                    );
                    eprintln!(
                        "README line {}: skipped: {} not installed",
                        block.line,
                        missing.join(" ")
                    );
                    continue;
                }
                let out = sandbox.run(&block.text);
                assert!(
                    out.status.success(),
                    "README line {}: the example failed (exit {:?}):\n{}\nstderr:\n{}",
                    block.line,
                    out.status.code(),
                    block.text,
                    String::from_utf8_lossy(&out.stderr)
                );
                ran += 1;
            }
            "console" => {
                check_transcript(&Sandbox::new(), block);
                ran += 1;
            }
            _ => {}
        }
    }
    assert!(ran >= 7, "only {ran} README examples ran");
}
