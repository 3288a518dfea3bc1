//! SeaweedFS as the S3 server that signs nothing but checks everything: presigned URLs, their
//! expiry, `Range`, `If-Match`, multipart ETags (see the table in `net/mod.rs`).
//!
//! `weed server -s3` would run it all in one process, but that process also opens gRPC sockets
//! under a fixed system directory that no flag moves, and its graceful stop takes 15 s; the four
//! parts run as four processes instead (master, volume, filer, s3), all on loopback ports, all
//! their files in one temporary directory, killed on drop. The master is started first and
//! polled until it is leader, which saves the others a 5 s retry.
//!
//! Objects are written and URLs presigned by boto3 through `tests/net/s3.py`, one helper process
//! per server, so that the signatures come from an implementation independent of ours.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{available, find_program, free_ports, http_get, wait_until, with_retries, Process};

/// The bucket every server starts with.
pub const BUCKET: &str = "exports";

/// The throwaway credentials each server accepts (and that sign every URL).
const ACCESS_KEY: &str = "AKIDCIPHERSTREAMTEST";
const SECRET_KEY: &str = "cipherstream-test-secret-not-a-real-one";

/// How to install what this module needs.
const INSTALL: &str = "python3 -m pip install -r tests/net/requirements.txt";

/// An object as the server stored it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// The ETag, quotes included, as S3 sends it in the `ETag` header.
    pub etag: String,
    /// Its size in bytes.
    pub size: u64,
}

/// How to presign a URL: [`Seaweed::presign_with`].
#[derive(Clone, Copy, Debug)]
pub struct Presign {
    /// `X-Amz-Expires`: seconds from `signed_at` until the URL expires.
    pub expires_in: u64,
    /// The host the URL names, which is signed: a proxy's address for a URL that goes through
    /// it. `None`: the server itself.
    pub host: Option<SocketAddr>,
    /// `X-Amz-Date`: when it was signed. `None`: now. A time far enough back makes a URL that
    /// has already expired, without waiting.
    pub signed_at: Option<SystemTime>,
}

/// A running SeaweedFS S3 server with the bucket [`BUCKET`]; stopped and erased on drop.
pub struct Seaweed {
    s3: SocketAddr,
    helper: Mutex<Helper>,
    // Fields drop in order: the processes are killed before their directory is removed.
    _processes: Vec<Process>,
    dir: tempfile::TempDir,
}

/// The `weed` binary, if it and python3 with boto3 are installed.
fn tools() -> &'static Option<PathBuf> {
    static TOOLS: OnceLock<Option<PathBuf>> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import boto3, sysconfig; print(sysconfig.get_path('scripts'))",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        // The copy pip installed for this python3 first: its scripts directory need not be on PATH.
        let installed = Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("weed");
        Some(installed)
            .filter(|p| p.is_file())
            .or_else(|| find_program("weed", &[]))
    })
}

impl Seaweed {
    /// Start a server, or `None` (the test is skipped) where SeaweedFS or boto3 is missing
    /// outside CI.
    pub fn start(test: &str) -> Option<Seaweed> {
        let weed = tools().as_ref();
        if !available(
            test,
            "SeaweedFS (`weed`) or python3's boto3",
            INSTALL,
            weed.is_some(),
        ) {
            return None;
        }
        let weed = weed.unwrap();
        Some(with_retries("SeaweedFS", || Self::try_start(weed)))
    }

    fn try_start(weed: &Path) -> Result<Seaweed, String> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["master", "volume", "filer", "config"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        let config = d.join("s3.json");
        std::fs::write(
            &config,
            json!({"identities": [{
                "name": "tester",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]})
            .to_string(),
        )
        .unwrap();
        let p = free_ports(8);
        let (master, volume, filer, s3) = (
            format!("127.0.0.1:{}.{}", p[0], p[1]),
            (p[2], p[3]),
            format!("127.0.0.1:{}.{}", p[4], p[5]),
            (p[6], p[7]),
        );
        let weed_cmd = |part: &str, args: Vec<String>| {
            let mut cmd = Command::new(weed);
            // Logs to standard error only (else glog writes files to the system's temporary
            // directory), configuration files looked up only in our directory.
            cmd.arg("-logtostderr")
                .arg(format!("-config_dir={}", d.join("config").display()))
                .arg(part)
                .args(args)
                .current_dir(d)
                .env("HOME", d);
            Process::spawn(&format!("weed {part}"), cmd, &d.join(format!("{part}.log")))
        };
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let path = |sub: &str| d.join(sub).display().to_string();

        let mut processes = vec![weed_cmd(
            "master",
            s(&[
                &format!("-mdir={}", path("master")),
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-port={}", p[0]),
                &format!("-port.grpc={}", p[1]),
                // Reports usage to the project's server unless told not to.
                "-telemetry=false",
                "-volumeSizeLimitMB=64",
            ]),
        )];
        let master_http: SocketAddr = format!("127.0.0.1:{}", p[0]).parse().unwrap();
        wait_until("SeaweedFS master", Duration::from_secs(30), || {
            processes[0].check()?;
            Ok(http_get(master_http, "/cluster/status")
                .ok()
                .filter(|(status, body)| {
                    *status == 200 && String::from_utf8_lossy(body).contains("\"IsLeader\":true")
                }))
        })?;
        processes.push(weed_cmd(
            "volume",
            s(&[
                &format!("-dir={}", path("volume")),
                &format!("-mserver={master}"),
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-port={}", volume.0),
                &format!("-port.grpc={}", volume.1),
                "-max=8",
                "-preStopSeconds=0",
            ]),
        ));
        processes.push(weed_cmd(
            "filer",
            s(&[
                &format!("-defaultStoreDir={}", path("filer")),
                &format!("-master={master}"),
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                &format!("-port={}", p[4]),
                &format!("-port.grpc={}", p[5]),
                &format!("-localSocket={}", path("filer.sock")),
            ]),
        ));
        processes.push(weed_cmd(
            "s3",
            s(&[
                &format!("-filer={filer}"),
                "-ip.bind=127.0.0.1",
                &format!("-port={}", s3.0),
                &format!("-port.grpc={}", s3.1),
                // Off: the Iceberg and Lance catalogues would take fixed ports.
                "-port.iceberg=0",
                "-port.lance=0",
                &format!("-config={}", config.display()),
                &format!("-localSocket={}", path("s3.sock")),
            ]),
        ));
        let s3_addr: SocketAddr = format!("127.0.0.1:{}", s3.0).parse().unwrap();
        let mut helper = Helper::start(s3_addr, d)?;
        helper
            .call(json!({"op": "ready", "bucket": BUCKET, "timeout": 30}))
            .map_err(|e| {
                let logs: Vec<String> = processes.iter_mut().map(|p| p.log_tail()).collect();
                format!("SeaweedFS S3: {e}\n{}", logs.join("\n---\n"))
            })?;
        for p in &mut processes {
            p.check()?;
        }
        Ok(Seaweed {
            s3: s3_addr,
            helper: Mutex::new(helper),
            _processes: processes,
            dir,
        })
    }

    /// The S3 endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.s3
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.s3)
    }

    /// Upload `body` as `key` in one request (creating or replacing it).
    pub fn put(&self, key: &str, body: &[u8]) -> Object {
        let path = self.stage(body);
        let v = self.call(json!({"op": "put", "bucket": BUCKET, "key": key, "path": path}));
        object(&v)
    }

    /// Upload `body` as `key` in parts of `part_size` bytes: its ETag ends in `-N` for N parts.
    /// Every part but the last must be at least 5 MiB.
    pub fn put_multipart(&self, key: &str, body: &[u8], part_size: usize) -> Object {
        let path = self.stage(body);
        let v = self.call(json!({
            "op": "multipart", "bucket": BUCKET, "key": key, "path": path, "part_size": part_size,
        }));
        object(&v)
    }

    /// The stored object's ETag and size.
    pub fn head(&self, key: &str) -> Object {
        object(&self.call(json!({"op": "head", "bucket": BUCKET, "key": key})))
    }

    /// Delete `key`.
    pub fn delete(&self, key: &str) {
        self.call(json!({"op": "delete", "bucket": BUCKET, "key": key}));
    }

    /// A presigned GET URL for `key` on this server, valid for `expires_in` seconds from now.
    pub fn presign(&self, key: &str, expires_in: u64) -> String {
        self.presign_with(
            key,
            Presign {
                expires_in,
                host: None,
                signed_at: None,
            },
        )
    }

    /// A presigned GET URL for `key` as `p` says.
    pub fn presign_with(&self, key: &str, p: Presign) -> String {
        let mut req = json!({
            "op": "presign", "bucket": BUCKET, "key": key, "expires_in": p.expires_in,
            "endpoint": format!("http://{}", p.host.unwrap_or(self.s3)),
        });
        if let Some(at) = p.signed_at {
            req["signed_at"] = at.duration_since(UNIX_EPOCH).unwrap().as_secs().into();
        }
        let v = self.call(req);
        v["url"].as_str().unwrap().to_owned()
    }

    /// Write `body` to a new file in the server's directory for the helper to upload.
    fn stage(&self, body: &[u8]) -> PathBuf {
        let staged = tempfile::NamedTempFile::new_in(self.dir.path()).unwrap();
        std::fs::write(staged.path(), body).unwrap();
        let (_, path) = staged.keep().unwrap();
        path
    }

    fn call(&self, req: Value) -> Value {
        let staged = req.get("path").and_then(Value::as_str).map(PathBuf::from);
        let answer = self.helper.lock().unwrap().call(req.clone());
        if let Some(path) = staged {
            let _ = std::fs::remove_file(path);
        }
        answer.unwrap_or_else(|e| panic!("S3 request {req} failed: {e}"))
    }
}

fn object(v: &Value) -> Object {
    Object {
        etag: v["etag"].as_str().unwrap().to_owned(),
        size: v["size"].as_u64().unwrap(),
    }
}

/// The `tests/net/s3.py` process: one JSON request per line in, one answer per line out.
struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Helper {
    fn start(s3: SocketAddr, dir: &Path) -> Result<Helper, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/net/s3.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(format!("http://{s3}"))
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            // No profile, region or endpoint of the machine's own AWS setup may leak in.
            .env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.join("no-aws-credentials"),
            )
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_ENDPOINT_URL_S3")
            .env_remove("AWS_SESSION_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start tests/net/s3.py: {e}"))?;
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Ok(Helper {
            child,
            stdin,
            stdout,
        })
    }

    fn call(&mut self, req: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{req}").map_err(|e| format!("tests/net/s3.py: {e}"))?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("tests/net/s3.py: {e}"))?;
        let answer: Value = serde_json::from_str(&line)
            .map_err(|e| format!("tests/net/s3.py answered {line:?}: {e}"))?;
        match answer.get("ok") {
            Some(v) => Ok(v.clone()),
            None => Err(answer["error"].as_str().unwrap_or("?").to_owned()),
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
