//! nginx as the web server: static files over HTTPS with a certificate from a CA made for this
//! one start (or plain HTTP), `Range` and `If-Match` as nginx does them, and an optional rate
//! limit per connection (`limit_rate`), the way S3 and CDNs throttle each connection.
//!
//! nginx runs as the current user in the foreground (`daemon off`) as a single process
//! (`master_process off`: no workers to outlive a killed master, no switch to another user), with
//! every path it writes (pid, lock, logs, temporary files) in its own temporary directory.
//!
//! The certificates are made with `rcgen` rather than the `openssl` command: pure Rust on the
//! `ring` the tool already links, in-process (no program to find, no flags that differ between
//! OpenSSL versions), and a real CA with a leaf it signs, as a TLS-inspecting proxy's would be.

use std::fs::FileTimes;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use super::{available, find_program, free_ports, wait_until, with_retries, Process};

/// How to serve: [`Nginx::start`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Bytes per second per connection (nginx's `limit_rate`); `None`: as fast as it can.
    pub limit_rate: Option<u64>,
    /// Plain HTTP instead of HTTPS.
    pub plain: bool,
    /// Ignore `Range` and answer `200` with the whole file (`max_ranges 0`), as some servers do.
    pub ignore_range: bool,
    /// The names the server's certificate is valid for; empty: `127.0.0.1`, `::1` and
    /// `localhost`. Another name makes a certificate for the wrong host.
    pub cert_names: &'static [&'static str],
}

/// A running nginx serving the files of [`Nginx::root`]; stopped and erased on drop.
pub struct Nginx {
    addr: SocketAddr,
    plain: bool,
    // Fields drop in order: the process is killed before its directory is removed.
    _process: Process,
    dir: tempfile::TempDir,
}

/// The nginx binary: on `PATH`, or where Debian's package puts it (not on a user's `PATH`).
fn nginx_binary() -> &'static Option<PathBuf> {
    static NGINX: OnceLock<Option<PathBuf>> = OnceLock::new();
    NGINX.get_or_init(|| find_program("nginx", &[Path::new("/usr/sbin")]))
}

impl Nginx {
    /// Start nginx, or `None` (the test is skipped) where it is missing outside CI.
    pub fn start(test: &str, options: Options) -> Option<Nginx> {
        let nginx = nginx_binary().as_ref();
        if !available(test, "nginx", "apt-get install nginx", nginx.is_some()) {
            return None;
        }
        let nginx = nginx.unwrap();
        Some(with_retries("nginx", || Self::try_start(nginx, options)))
    }

    fn try_start(nginx: &Path, options: Options) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("root")).unwrap();
        let port = free_ports(1)[0];
        let tls = if options.plain {
            String::new()
        } else {
            write_certificates(d, options.cert_names);
            format!(
                "ssl_certificate {};\n        ssl_certificate_key {};",
                d.join("server.pem").display(),
                d.join("server.key").display()
            )
        };
        let mut limits = String::new();
        if let Some(rate) = options.limit_rate {
            limits += &format!("limit_rate {rate};");
        }
        if options.ignore_range {
            limits += " max_ranges 0;";
        }
        let p = |name: &str| d.join(name).display().to_string();
        let config = format!(
            "daemon off;
master_process off;
pid {pid};
lock_file {lock};
error_log {error_log} info;
events {{ worker_connections 256; }}
http {{
    access_log {access_log};
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port}{ssl};
        {tls}
        root {root};
        {limits}
        # Files stored compressed and served as such, the way S3 serves an object uploaded
        # with `Content-Encoding: gzip`: the bytes on disk, never decompressed by the server.
        location /encoded/ {{
            add_header Content-Encoding gzip always;
        }}
    }}
}}
",
            pid = p("nginx.pid"),
            lock = p("nginx.lock"),
            error_log = p("error.log"),
            access_log = p("access.log"),
            tmp = d.display(),
            ssl = if options.plain { "" } else { " ssl" },
            root = p("root"),
        );
        std::fs::write(d.join("nginx.conf"), config).unwrap();
        let mut cmd = Command::new(nginx);
        cmd.arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            // Where errors go before the configuration is read.
            .arg("-e")
            .arg(d.join("error.log"));
        let mut process = Process::spawn("nginx", cmd, &d.join("nginx.out"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_until("nginx", Duration::from_secs(10), || {
            process.check().map_err(|e| {
                let log = std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
                format!("{e}\n{log}")
            })?;
            Ok(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        })?;
        Ok(Nginx {
            addr,
            plain: options.plain,
            _process: process,
            dir,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT/PATH` (`http://` when plain); `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.plain { "http" } else { "https" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// The directory it serves.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The PEM certificate of the CA that signed the server's certificate (valid for
    /// `127.0.0.1`, `::1` and `localhost`): what `--ca-file` or `curl --cacert` takes.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The ETag nginx sends for the file at `/NAME`: `"<mtime hex>-<size hex>"`.
    pub fn etag(&self, name: &str) -> String {
        let meta = std::fs::metadata(self.root().join(name)).unwrap();
        let mtime = meta
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        format!("\"{mtime:x}-{:x}\"", meta.len())
    }

    /// Serve `body` at `/NAME`, replacing any file there the way a server replaces an object: a
    /// new file renamed over the old one (a download in flight keeps reading the old one), its
    /// modification time moved on by at least a second so that its ETag (`"<mtime>-<size>"`)
    /// changes even when the size does not.
    pub fn put(&self, name: &str, body: &[u8]) {
        let dest = self.root().join(name);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let mtime = match std::fs::metadata(&dest).and_then(|m| m.modified()) {
            Ok(old) => SystemTime::now().max(old + Duration::from_secs(1)),
            Err(_) => SystemTime::now(),
        };
        let staged = tempfile::NamedTempFile::new_in(self.dir.path()).unwrap();
        std::fs::write(staged.path(), body).unwrap();
        staged
            .as_file()
            .set_times(FileTimes::new().set_modified(mtime))
            .unwrap();
        staged.persist(dest).unwrap();
    }
}

/// A CA, and a server certificate it signs for `names` (empty: the loopback names), in `dir`:
/// `ca.pem`, `server.pem`, `server.key`.
fn write_certificates(dir: &Path, names: &[&str]) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "cipherstream test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let names = if names.is_empty() {
        &["127.0.0.1", "::1", "localhost"][..]
    } else {
        names
    };
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut leaf = CertificateParams::new(names).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "cipherstream test server");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();

    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), leaf_cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), leaf_key.serialize_pem()).unwrap();
}
