//! `HTTPS_PROXY` / `https_proxy` honoured and `NO_PROXY` respected (issue 13, items 6 and 7),
//! through an HTTP `CONNECT` proxy of our own on loopback that records the targets it was asked
//! for and connects every tunnel to one server whatever the name: a URL whose host name no DNS
//! knows works only if the tunnel was asked of the proxy.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::nginx::{Nginx, Options};
use super::{assert_no_query, cipherstream, signed};
use crate::util::{fixtures, private_key};

/// A `CONNECT` proxy that tunnels every request to `upstream`; stopped on drop.
struct ConnectProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    stop: AtomicBool,
    /// The request heads clients sent, as text.
    heads: Mutex<Vec<String>>,
    /// Clones of the live sockets, for drop to shut down.
    live: Mutex<Vec<TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl ConnectProxy {
    fn start(upstream: SocketAddr) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            stop: AtomicBool::new(false),
            heads: Mutex::new(Vec::new()),
            live: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let s2 = Arc::clone(&s);
                let t = std::thread::spawn(move || tunnel(&s2, client));
                s.threads.lock().unwrap().push(t);
            }
        });
        ConnectProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`, what `HTTPS_PROXY` takes.
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request heads clients sent, in arrival order.
    fn heads(&self) -> Vec<String> {
        self.shared.heads.lock().unwrap().clone()
    }

    /// The targets of the `CONNECT` requests (`host:port`).
    fn targets(&self) -> Vec<String> {
        self.heads()
            .iter()
            .filter_map(|h| h.strip_prefix("CONNECT "))
            .filter_map(|rest| rest.split(' ').next())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for s in self.shared.live.lock().unwrap().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *self.shared.threads.lock().unwrap());
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Read one request head, record it, and for a `CONNECT` answer `200` and pipe both ways to
/// the upstream; anything else is answered `405`.
fn tunnel(s: &Shared, mut client: TcpStream) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: nothing after the head may be read here (the TLS handshake follows it).
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    s.heads.lock().unwrap().push(text.clone());
    if !text.starts_with("CONNECT ") {
        let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let Ok(server) = TcpStream::connect_timeout(&s.upstream, Duration::from_secs(5)) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let _ = client.set_read_timeout(None);
    {
        let mut live = s.live.lock().unwrap();
        live.push(client.try_clone().unwrap());
        live.push(server.try_clone().unwrap());
        if s.stop.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
    let pipe = |mut from: TcpStream, mut to: TcpStream| {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    };
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::scope(|scope| {
        scope.spawn(|| pipe(c2, s2));
        pipe(server, client);
    });
}

/// The name the certificate is for; no DNS knows it (`.test` is reserved).
const HOST: &str = "exports.cipherstream.test";

fn demo_zip() -> Vec<u8> {
    std::fs::read(fixtures().join("demo/appointments_1758630144658_c7511999.zip")).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `cipherstream ARGS` with the environment variables `env`.
fn run(args: &[&str], dest: Option<&Path>, env: &[(&str, &str)]) -> Output {
    let mut cmd = cipherstream();
    cmd.args(args);
    if let Some(dest) = dest {
        cmd.arg("-o").arg(dest);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn https_proxy_is_used_for_a_host_only_the_proxy_can_reach() {
    let Some(nginx) = Nginx::start(
        "https_proxy_is_used",
        Options {
            cert_names: &[HOST],
            ..Options::default()
        },
    ) else {
        return;
    };
    let zip = demo_zip();
    nginx.put("demo.zip", &zip);
    let proxy = ConnectProxy::start(nginx.addr());
    let port = nginx.addr().port();
    let url = signed(&format!("https://{HOST}:{port}/demo.zip"));
    let ca = nginx.ca_file();
    let ca = ca.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = private_key(dir.path(), "demo/demo.key");
    let key = key.to_str().unwrap();
    let proxy_url = proxy.url();
    for variable in ["HTTPS_PROXY", "https_proxy"] {
        let dest = dir.path().join(format!("{variable}.zip"));
        let env = [(variable, proxy_url.as_str())];
        let out = run(&["fetch", &url, "--ca-file", ca], Some(&dest), &env);
        assert_eq!(out.status.code(), Some(0), "{variable}: {}", stderr(&out));
        assert_eq!(std::fs::read(&dest).unwrap(), zip, "{variable}");
        assert_no_query(&url, &out);
        let out = run(
            &[
                "decrypt",
                &url,
                "--ca-file",
                ca,
                "--customer-id",
                "cust_demo_123",
                "--key-file",
                key,
            ],
            None,
            &env,
        );
        assert_eq!(out.status.code(), Some(0), "{variable}: {}", stderr(&out));
        assert!(
            out.stdout == std::fs::read(fixtures().join("demo/expected.ndjson")).unwrap(),
            "{variable}: the rows differ"
        );
    }
    // Every tunnel was asked for by name, and the proxy never saw the URL's path or query.
    let targets = proxy.targets();
    assert!(!targets.is_empty());
    for t in &targets {
        assert_eq!(t, &format!("{HOST}:{port}"));
    }
    for head in proxy.heads() {
        assert!(
            !head.contains("X-Amz") && !head.contains("demo.zip"),
            "{head}"
        );
    }
}

#[test]
fn no_proxy_bypasses_the_proxy() {
    let Some(nginx) = Nginx::start(
        "no_proxy_bypasses_the_proxy",
        Options {
            cert_names: &[HOST],
            ..Options::default()
        },
    ) else {
        return;
    };
    let zip = demo_zip();
    nginx.put("demo.zip", &zip);
    let proxy = ConnectProxy::start(nginx.addr());
    let proxy_url = proxy.url();
    let port = nginx.addr().port();
    let url = signed(&format!("https://{HOST}:{port}/demo.zip"));
    let ca = nginx.ca_file();
    let ca = ca.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("demo.zip");
    // Bypassed, the name is looked up directly, and no DNS knows it: the download fails, and
    // the proxy saw nothing. (A loopback address would not tell: those never use the proxy.)
    for (variable, no_proxy) in [
        ("NO_PROXY", HOST),
        ("no_proxy", "example.com,.cipherstream.test"),
    ] {
        let env = [("HTTPS_PROXY", proxy_url.as_str()), (variable, no_proxy)];
        let out = run(
            &["fetch", &url, "--ca-file", ca, "--retries", "0"],
            Some(&dest),
            &env,
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{variable}: {err}");
        assert!(
            err.starts_with(&format!(
                "error: https://{HOST}:{port}/demo.zip: the download failed"
            )),
            "{err}"
        );
        assert!(!dest.exists());
        assert_no_query(&url, &out);
        assert_eq!(proxy.heads(), Vec::<String>::new(), "{variable}");
    }
    // The same without NO_PROXY goes through the proxy and works.
    let out = run(
        &["fetch", &url, "--ca-file", ca],
        Some(&dest),
        &[("HTTPS_PROXY", proxy_url.as_str())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(&dest).unwrap(), zip);
    let targets = proxy.targets();
    assert!(!targets.is_empty());
    assert!(
        targets.iter().all(|t| *t == format!("{HOST}:{port}")),
        "{targets:?}"
    );
}

#[test]
fn loopback_addresses_never_go_through_the_proxy() {
    let Some(nginx) = Nginx::start(
        "loopback_addresses_never_go_through_the_proxy",
        Options {
            plain: true,
            ..Options::default()
        },
    ) else {
        return;
    };
    let zip = demo_zip();
    nginx.put("demo.zip", &zip);
    // Were the proxy used, it would tunnel to the same server: only what it saw tells.
    let proxy = ConnectProxy::start(nginx.addr());
    let proxy_url = proxy.url();
    let port = nginx.addr().port();
    let dir = tempfile::tempdir().unwrap();
    // Plain http:// is allowed to a loopback address only because its bytes never leave the
    // machine; a proxy elsewhere would carry the export and the URL's credentials in clear text.
    for host in ["127.0.0.1", "localhost"] {
        let url = signed(&format!("http://{host}:{port}/demo.zip"));
        let dest = dir.path().join(format!("{host}.zip"));
        let env = [
            ("ALL_PROXY", proxy_url.as_str()),
            ("HTTPS_PROXY", proxy_url.as_str()),
            ("HTTP_PROXY", proxy_url.as_str()),
        ];
        let out = run(&["fetch", &url], Some(&dest), &env);
        assert_eq!(out.status.code(), Some(0), "{host}: {}", stderr(&out));
        assert_eq!(std::fs::read(&dest).unwrap(), zip);
    }
    assert_eq!(proxy.heads(), Vec::<String>::new());
}
