//! The receiver's HTTP server: one request per connection, every wait under a deadline
//! (issue 14, items 1 and 2).
//!
//! Why by hand, on std threads, and not hyper and tokio: the survey of issue 14 found hyper 1
//! with hyper-util, tokio and tokio-rustls to be about 33 more crates, whose header-read timeout
//! is silently off unless a timer is configured; `tiny_http` is unmaintained. What a webhook
//! receiver needs of HTTP/1.1 is small: read one request head (parsed by `httparse`, hyper's own
//! parser, already built for the download client), read a body of known length, write one
//! answer, close. Keep-alive, pipelining and chunked bodies are not offered (`Connection: close`
//! on every answer, `411` for a body without `Content-Length`), which also removes the request
//! smuggling surface that lives between a proxy and a keep-alive backend. TLS is rustls on ring,
//! TLS 1.3 only, also already built. The receiver adds no crate to the build.
//!
//! Slow clients: each connection has its own thread (a small stack) and its own deadlines: the
//! whole request head (and the TLS handshake) within `Limits::header_timeout` of the accept, the
//! whole body within `Limits::body_timeout` of the head, the answer within the same time again.
//! A read waits at most until its deadline, so a client sending one byte a second is closed at the
//! deadline however many bytes it sends. At most `Limits::max_connections` connections are open.
//! At the cap, a new connection makes room by closing the one that has waited longest for its
//! request head (a sender's head takes milliseconds, a slow client's the whole deadline), so a
//! flood of idle connections cannot lock a genuine delivery out; only when every open connection
//! is past its head is a new one answered `503` at once and closed. Either way the process cannot
//! run out of threads. The jobs run on
//! the worker's own threads: no connection ever waits for a download.
//!
//! Answers carry no detail (`401 unauthorized`): the reason goes to the log only.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
#[cfg(unix)]
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use crate::error::{Error, Result};
use crate::webhook::log::{Event, Log};

/// Largest request head (request line and headers).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in a request head.
const MAX_HEADERS: usize = 64;
/// Stack of a connection's thread: parsing, TLS and the signature check need far less.
const CONNECTION_STACK: usize = 256 * 1024;
/// After an answer, how long unread request bytes are drained before closing (closing with
/// unread bytes sends a reset, which can destroy the answer before the client reads it).
const LINGER: Duration = Duration::from_secs(1);

/// The bounds on every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From the accept to the end of the request head (the TLS handshake included).
    pub header_timeout: Duration,
    /// From the end of the head to the end of the body; also bounds writing the answer.
    pub body_timeout: Duration,
    /// Largest body accepted; a larger `Content-Length` is answered `413` unread.
    pub max_body: u64,
    /// Most connections open at once (the oldest still sending its head is closed to make room
    /// for a new one).
    pub max_connections: usize,
}

/// What the server does with a request to its path: check and record a delivery.
pub trait Handler: Send + Sync {
    /// Answer a `POST` to the configured path: the status to send. `signature` is the
    /// `X-CipherStream-Signature` header, when there is exactly one.
    fn delivery(&self, signature: Option<&str>, body: &[u8]) -> u16;
}

/// Where the server listens.
pub enum Listener {
    /// A TCP address.
    Tcp(TcpListener),
    /// A Unix socket; removed when the server stops if the server made it (`true`).
    #[cfg(unix)]
    Unix(UnixListener, PathBuf, bool),
}

impl Listener {
    /// Bind `addr`: `host:port` (port 0 picks a free port), or `unix:PATH`. A stale socket file
    /// at `PATH` (no process answers on it) is replaced. `systemd` takes the socket systemd
    /// passed ([`Listener::from_systemd`]).
    pub fn bind(addr: &str) -> Result<Listener> {
        if addr == "systemd" {
            return Listener::from_systemd();
        }
        if let Some(path) = addr.strip_prefix("unix:") {
            #[cfg(unix)]
            {
                let path = PathBuf::from(path);
                if UnixStream::connect(&path).is_err() && path.exists() {
                    let meta = std::fs::symlink_metadata(&path)
                        .map_err(|e| Error::io(format!("cannot look at {}", path.display()), e))?;
                    if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                let listener = UnixListener::bind(&path)
                    .map_err(|e| Error::io(format!("cannot listen on {addr}"), e))?;
                deepen_backlog(&listener, addr)?;
                return Ok(Listener::Unix(listener, path, true));
            }
            #[cfg(not(unix))]
            return Err(Error::Usage(format!(
                "--listen {addr}: Unix sockets exist only on Unix"
            )));
        }
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|_| {
                Error::Usage(format!(
                    "--listen {}: expected HOST:PORT or unix:PATH",
                    crate::text::escape(addr)
                ))
            })?
            .collect();
        let listener = TcpListener::bind(&addrs[..])
            .map_err(|e| Error::io(format!("cannot listen on {addr}"), e))?;
        #[cfg(unix)]
        deepen_backlog(&listener, addr)?;
        Ok(Listener::Tcp(listener))
    }

    /// The listening socket that systemd's socket activation passed (`sd_listen_fds(3)`): file
    /// descriptor 3, when `LISTEN_PID` is this process and `LISTEN_FDS` is 1. During a restart
    /// the socket stays open in systemd, so connections wait in the kernel instead of being
    /// refused. The descriptor is marked close-on-exec, so that `--exec` commands do not inherit
    /// it.
    #[cfg(unix)]
    pub fn from_systemd() -> Result<Listener> {
        use std::os::fd::{FromRawFd, OwnedFd};
        let var = |name| std::env::var(name).ok();
        let ours =
            var("LISTEN_PID").and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
        match (ours, var("LISTEN_FDS").as_deref()) {
            (true, Some("1")) => {}
            (true, Some(n)) => {
                return Err(Error::Usage(format!(
                    "--listen systemd takes one socket; systemd passed {}",
                    crate::text::escape(n)
                )))
            }
            _ => {
                return Err(Error::Usage(
                    "--listen systemd: no socket was passed (LISTEN_PID and LISTEN_FDS are not \
                     set for this process); start it from a .socket unit"
                        .into(),
                ))
            }
        }
        const SD_LISTEN_FDS_START: i32 = 3;
        // SAFETY: LISTEN_PID names this process and LISTEN_FDS is 1, so by the socket-activation
        // protocol (sd_listen_fds(3)) descriptor 3 was open when the process started and belongs
        // to it; nothing else in this process takes ownership of descriptor 3 (this runs once,
        // at start, before any file is opened by the receiver). No safe API turns an inherited
        // descriptor number into an owned socket; what it buys is socket activation itself.
        #[allow(unsafe_code)]
        let fd = unsafe { OwnedFd::from_raw_fd(SD_LISTEN_FDS_START) };
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC)
            .map_err(|e| Error::io("cannot use the socket systemd passed", e.into()))?;
        let tcp = TcpListener::from(fd);
        let _ = tcp.set_nonblocking(false);
        if tcp.local_addr().is_ok() {
            return Ok(Listener::Tcp(tcp));
        }
        // Not an IP socket: a Unix one (std reads no address of another family).
        let unix = UnixListener::from(OwnedFd::from(tcp));
        let path = unix
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            .ok_or_else(|| {
                Error::Usage(
                    "--listen systemd: the socket passed is neither IP nor a Unix path".into(),
                )
            })?;
        // systemd owns the socket file: it is not removed at the stop.
        Ok(Listener::Unix(unix, path, false))
    }

    /// `--listen systemd` exists only on Unix.
    #[cfg(not(unix))]
    pub fn from_systemd() -> Result<Listener> {
        Err(Error::Usage("--listen systemd exists only on Unix".into()))
    }

    /// The bound address as shown in the log: `127.0.0.1:8080`, `unix:PATH`.
    pub fn shown(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into()),
            #[cfg(unix)]
            Listener::Unix(_, path, _) => format!("unix:{}", path.display()),
        }
    }

    fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
            #[cfg(unix)]
            Listener::Unix(l, _, _) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }

    /// Connect to ourselves, so that a blocked `accept` returns and sees the stop flag.
    fn wake(&self) {
        match self {
            Listener::Tcp(l) => {
                if let Ok(mut addr) = l.local_addr() {
                    if addr.ip().is_unspecified() {
                        addr.set_ip(match addr {
                            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                        });
                    }
                    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
                }
            }
            #[cfg(unix)]
            Listener::Unix(_, path, _) => {
                let _ = UnixStream::connect(path);
            }
        }
    }

    fn remove_socket_file(&self) {
        #[cfg(unix)]
        if let Listener::Unix(_, path, true) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An accepted connection.
enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

impl Stream {
    fn set_timeouts(&self, read: Duration, write: Duration) -> io::Result<()> {
        // A zero timeout means "none" to std: never pass one.
        let (read, write) = (
            read.max(Duration::from_millis(1)),
            write.max(Duration::from_millis(1)),
        );
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(read))?;
                s.set_write_timeout(Some(write))
            }
            #[cfg(unix)]
            Stream::Unix(s) => {
                s.set_read_timeout(Some(read))?;
                s.set_write_timeout(Some(write))
            }
        }
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            #[cfg(unix)]
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }

    fn try_clone(&self) -> io::Result<Stream> {
        match self {
            Stream::Tcp(s) => s.try_clone().map(Stream::Tcp),
            #[cfg(unix)]
            Stream::Unix(s) => s.try_clone().map(Stream::Unix),
        }
    }

    /// End both directions: a read blocked on the connection in another thread returns.
    fn shutdown_both(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            #[cfg(unix)]
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    fn set_nonblocking(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.set_nonblocking(true),
            #[cfg(unix)]
            Stream::Unix(s) => s.set_nonblocking(true),
        };
    }
}

thread_local! {
    /// The deadline of what the connection served by this thread is doing (each connection has
    /// its own thread). Every read and write of its socket waits at most until then: TLS reads a
    /// record in as many socket reads as the client cares to send, and a timeout set once per
    /// call would start again with every byte (a client sending one byte a second would hold
    /// its connection for hours).
    static DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Bound every socket read and write of this thread's connection by `deadline` from now on.
fn set_deadline(deadline: Instant) {
    DEADLINE.with(|d| d.set(Some(deadline)));
}

impl Stream {
    /// Before a read or write: fail once this thread's deadline has passed, else let the socket
    /// wait only for the time left.
    fn within_deadline(&self) -> io::Result<()> {
        let Some(deadline) = DEADLINE.with(|d| d.get()) else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.set_timeouts(left, left)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.within_deadline()?;
        match self {
            Stream::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.within_deadline()?;
        match self {
            Stream::Tcp(s) => s.write(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection, plain or TLS.
enum Conn {
    Plain(Stream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, Stream>>),
}

impl Conn {
    /// Close: TLS's close_notify, then no more writes, then drain what the client still sends
    /// (briefly), so the answer is not lost to a reset.
    fn close(mut self) {
        set_deadline(Instant::now() + LINGER);
        if let Conn::Tls(t) = &mut self {
            t.conn.send_close_notify();
            let _ = t.flush();
        }
        let stream = match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => t.sock,
        };
        stream.shutdown_write();
        let mut stream = stream;
        if stream.set_timeouts(LINGER, LINGER).is_ok() {
            let until = Instant::now() + LINGER;
            let mut sink = [0u8; 4096];
            let mut drained = 0usize;
            while Instant::now() < until && drained < 256 * 1024 {
                match stream.read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(t) => t.flush(),
        }
    }
}

/// The TLS certificate and key, reloadable (SIGHUP).
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    config: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Load the certificate chain and private key (PEM files).
    pub fn load(cert: &Path, key: &Path) -> Result<Tls> {
        let config = tls_config(cert, key)?;
        Ok(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            config: RwLock::new(Arc::new(config)),
        })
    }

    /// Read the files again; on any error the previous certificate stays in use.
    pub fn reload(&self) -> Result<()> {
        let config = tls_config(&self.cert, &self.key)?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A server configuration for TLS 1.3 only, on ring, from PEM files.
fn tls_config(cert: &Path, key: &Path) -> Result<ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let unusable = |path: &Path, why: String| Error::TlsFile {
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| unusable(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(unusable(cert, "it holds no certificate".into()));
    }
    // The key's error never quotes the file's content.
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        unusable(
            key,
            match e {
                rustls::pki_types::pem::Error::Io(e) => e.to_string(),
                _ => "it holds no PEM private key".into(),
            },
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, private))
        .map_err(|e| unusable(cert, format!("the certificate and key cannot be used: {e}")))
}

/// The server: a listener, the configured path, the limits, and the handler.
pub struct Server {
    listener: Listener,
    path: String,
    limits: Limits,
    tls: Option<Tls>,
    handler: Arc<dyn Handler>,
    log: Arc<dyn Log>,
    stop: AtomicBool,
    open: AtomicUsize,
    answering: AtomicUsize,
    /// Connections still sending their request head, oldest first: the ones to close when the
    /// connection cap is reached.
    waiting: Mutex<BTreeMap<u64, Stream>>,
    next_id: AtomicU64,
}

/// One counted in a counter (connections open, answers under way) until dropped, even by a
/// panic: a connection's thread that panics still gives its place back.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's place in [`Server::waiting`], given up when dropped.
struct Waiting<'a> {
    server: &'a Server,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.server
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl Server {
    /// A server on `listener` that hands `POST`s to `path` to `handler`.
    pub fn new(
        listener: Listener,
        path: String,
        limits: Limits,
        tls: Option<Tls>,
        handler: Arc<dyn Handler>,
        log: Arc<dyn Log>,
    ) -> Server {
        Server {
            listener,
            path,
            limits,
            tls,
            handler,
            log,
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            answering: AtomicUsize::new(0),
            waiting: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// The TLS configuration, when serving HTTPS.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Accept connections until [`Server::stop`]; each gets a thread of its own.
    pub fn run(self: &Arc<Self>) {
        self.log.log(Event::Listening {
            addr: self.listener.shown(),
            tls: self.tls.is_some(),
        });
        loop {
            let accepted = self.listener.accept();
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let stream = match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    // Out of descriptors or the like: say so, and give it a moment.
                    self.log.log(Event::ConnectionLost {
                        why: format!("cannot accept a connection: {e}"),
                    });
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            // At the cap, make room by closing the connection that has waited longest for its
            // request head (a slow client's, most likely; a sender's head takes milliseconds).
            // Its thread ends at once, so the cap is exceeded only for that moment.
            let mut room = self.open.load(Ordering::SeqCst) < self.limits.max_connections;
            if !room {
                let oldest = self
                    .waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop_first();
                if let Some((_, oldest)) = oldest {
                    oldest.shutdown_both();
                    self.log.log(Event::Rejected {
                        status: 408,
                        why: format!(
                            "{} connections are open (--max-connections): the one that had \
                             waited longest for its request head was closed to make room",
                            self.limits.max_connections
                        ),
                    });
                    room = true;
                }
            }
            if !room {
                self.log.log(Event::Rejected {
                    status: 503,
                    why: format!(
                        "{} connections are open already (--max-connections)",
                        self.limits.max_connections
                    ),
                });
                // The answer fits in the socket's buffer: a write that would block is skipped.
                let mut stream = stream;
                stream.set_nonblocking();
                let _ = stream.write_all(&answer_bytes(503, &[]));
                stream.shutdown_write();
                continue;
            }
            self.open.fetch_add(1, Ordering::SeqCst);
            // Registered before its thread starts, so the next accept can already close it.
            let id = self.next_id.fetch_add(1, Ordering::SeqCst);
            if let Ok(handle) = stream.try_clone() {
                self.waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, handle);
            }
            let server = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("connection".into())
                .stack_size(CONNECTION_STACK)
                .spawn(move || {
                    let _open = Counted(&server.open);
                    server.connection(stream, id);
                });
            if let Err(e) = spawned {
                self.waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                self.open.fetch_sub(1, Ordering::SeqCst);
                self.log.log(Event::ConnectionLost {
                    why: format!("cannot start a thread for a connection: {e}"),
                });
            }
        }
        self.listener.remove_socket_file();
    }

    /// Stop accepting connections; [`Server::run`] returns.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.listener.wake();
    }

    /// Wait until no request that arrived whole is still being answered, at most `within`.
    pub fn wait_for_answers(&self, within: Duration) {
        let until = Instant::now() + within;
        while self.answering.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Serve one connection; `id` is its place in [`Server::waiting`].
    fn connection(&self, stream: Stream, id: u64) {
        let accepted = Instant::now();
        let waiting = Waiting { server: self, id };
        let mut conn = match &self.tls {
            None => Conn::Plain(stream),
            Some(tls) => match rustls::ServerConnection::new(tls.current()) {
                Ok(c) => Conn::Tls(Box::new(rustls::StreamOwned::new(c, stream))),
                Err(_) => return,
            },
        };
        let head_deadline = accepted + self.limits.header_timeout;
        let mut buf = Vec::with_capacity(4096);
        let head = loop {
            match parse_head(&buf) {
                Ok(Some(head)) => break head,
                Ok(None) if buf.len() >= MAX_HEAD_BYTES => {
                    return self.reject(conn, 431, "the request head is larger than 16 KiB".into())
                }
                Ok(None) => {}
                Err((status, why)) => return self.reject(conn, status, why),
            }
            let room = (MAX_HEAD_BYTES - buf.len()).min(4096);
            match read_some(&mut conn, &mut buf, room, head_deadline) {
                Ok(0) => return, // closed before a whole head: nothing to answer
                Ok(_) => {}
                Err(e) if timed_out(&e) => {
                    return self.timed_out(
                        conn,
                        format!(
                            "the request head did not arrive within {}s",
                            self.limits.header_timeout.as_secs()
                        ),
                    )
                }
                Err(_) => return,
            }
        };
        // The head is whole: from now on the connection is not the one to close for room.
        drop(waiting);
        let routed = if head.path == "/healthz" && self.path != "/healthz" {
            match head.method.as_str() {
                "GET" => return self.answer(conn, 200, &[]),
                "HEAD" => {
                    let mut conn = conn;
                    let head = answer_bytes(200, &[]);
                    let end = head.len() - b"ok\n".len();
                    let deadline = Instant::now() + self.limits.body_timeout;
                    if write_all_by(&mut conn, &head[..end], deadline).is_ok() {
                        conn.close();
                    }
                    return;
                }
                _ => Err((405, "only GET is answered at /healthz".to_owned())),
            }
        } else if head.path != self.path {
            Err((404, "no such path".to_owned()))
        } else if head.method != "POST" {
            Err((
                405,
                format!("{} is not POST", crate::text::shorten(&head.method)),
            ))
        } else {
            Ok(())
        };
        if let Err((status, why)) = routed {
            return self.reject(conn, status, why);
        }
        let length = match head.length {
            Length::Known(n) => n,
            Length::Chunked => {
                return self.reject(
                    conn,
                    411,
                    "the body has no Content-Length (chunked bodies are not accepted)".into(),
                )
            }
            Length::Missing => {
                return self.reject(conn, 411, "the request has no Content-Length".into())
            }
        };
        if length > self.limits.max_body {
            return self.reject(
                conn,
                413,
                format!(
                    "the body of {length} bytes is larger than --max-body {}",
                    self.limits.max_body
                ),
            );
        }
        let body_deadline = Instant::now() + self.limits.body_timeout;
        if head.expect_continue
            && write_all_by(&mut conn, b"HTTP/1.1 100 Continue\r\n\r\n", body_deadline).is_err()
        {
            return;
        }
        let mut body = buf.split_off(head.len);
        // Bytes past the body (a pipelined request) are not read: one request per connection.
        let want = usize::try_from(length).unwrap_or(usize::MAX);
        while body.len() < want {
            let room = (want - body.len()).min(16 * 1024);
            match read_some(&mut conn, &mut body, room, body_deadline) {
                Ok(0) => return, // the client went away mid-body
                Ok(_) => {}
                Err(e) if timed_out(&e) => {
                    return self.timed_out(
                        conn,
                        format!(
                            "the body did not arrive within {}s",
                            self.limits.body_timeout.as_secs()
                        ),
                    )
                }
                Err(_) => return,
            }
        }
        body.truncate(want);
        self.answering.fetch_add(1, Ordering::SeqCst);
        let _answering = Counted(&self.answering);
        let status = self.handler.delivery(head.signature.as_deref(), &body);
        self.answer(conn, status, &[]);
    }

    fn reject(&self, conn: Conn, status: u16, why: String) {
        self.log.log(Event::Rejected { status, why });
        let extra: &[(&str, &str)] = if status == 405 {
            &[("Allow", "POST")]
        } else {
            &[]
        };
        self.answer(conn, status, extra);
    }

    /// A deadline passed: log it and close. Nothing is answered: the client is not reading, or
    /// not there.
    fn timed_out(&self, conn: Conn, why: String) {
        self.log.log(Event::Rejected { status: 408, why });
        let mut conn = conn;
        set_deadline(Instant::now() + Duration::from_millis(100));
        let _ = conn.write_all(&answer_bytes(408, &[]));
        conn.close();
    }

    fn answer(&self, mut conn: Conn, status: u16, extra: &[(&str, &str)]) {
        let deadline = Instant::now() + self.limits.body_timeout;
        if write_all_by(&mut conn, &answer_bytes(status, extra), deadline).is_ok() {
            conn.close();
        }
    }
}

/// How the body's length is given.
#[derive(Debug, PartialEq, Eq)]
enum Length {
    Known(u64),
    Chunked,
    Missing,
}

/// What the server needs from a request head.
#[derive(Debug)]
struct Head {
    /// Bytes of the head, the blank line included.
    len: usize,
    method: String,
    /// The path without its query.
    path: String,
    length: Length,
    expect_continue: bool,
    signature: Option<String>,
}

/// Parse a request head: `Ok(None)` until it is whole; `Err((status, why))` when it is not HTTP
/// the server accepts.
fn parse_head(buf: &[u8]) -> std::result::Result<Option<Head>, (u16, String)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err((431, format!("more than {MAX_HEADERS} headers")))
        }
        Err(e) => return Err((400, format!("not an HTTP/1.1 request: {e}"))),
    };
    let method = req.method.unwrap_or_default().to_owned();
    let target = req.path.unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let mut lengths = Vec::new();
    let mut chunked = false;
    let mut expect_continue = false;
    let mut signatures = Vec::new();
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map(str::trim);
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or((400, "a Content-Length is not a number".to_owned()))?;
            lengths.push(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = value.is_ok_and(|v| v.eq_ignore_ascii_case("100-continue"));
        } else if h.name.eq_ignore_ascii_case("x-cipherstream-signature") {
            signatures.push(value.unwrap_or_default().to_owned());
        }
    }
    let length = match (chunked, lengths.as_slice()) {
        // Both is how requests are smuggled past a proxy (RFC 9112 section 6.3): refuse.
        (true, [_, ..]) => {
            return Err((
                400,
                "the request has both Transfer-Encoding and Content-Length".into(),
            ))
        }
        (true, []) => Length::Chunked,
        (false, []) => Length::Missing,
        (false, [n, rest @ ..]) if rest.iter().all(|m| m == n) => Length::Known(*n),
        (false, _) => return Err((400, "the request has differing Content-Lengths".into())),
    };
    Ok(Some(Head {
        len,
        method,
        path,
        length,
        expect_continue,
        signature: (signatures.len() == 1).then(|| signatures.remove(0)),
    }))
}

/// Read at most `room` more bytes into `buf`, waiting no later than `deadline`.
fn read_some(
    conn: &mut Conn,
    buf: &mut Vec<u8>,
    room: usize,
    deadline: Instant,
) -> io::Result<usize> {
    set_deadline(deadline);
    let start = buf.len();
    buf.resize(start + room, 0);
    let result = loop {
        match conn.read(&mut buf[start..]) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    buf.truncate(start + *result.as_ref().unwrap_or(&0));
    result
}

fn write_all_by(conn: &mut Conn, bytes: &[u8], deadline: Instant) -> io::Result<()> {
    set_deadline(deadline);
    conn.write_all(bytes)?;
    conn.flush()
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// A whole answer: status line, headers, and the reason phrase as the body.
fn answer_bytes(status: u16, extra: &[(&str, &str)]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let body = format!("{}\n", reason.to_ascii_lowercase());
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// Connections the kernel completes and holds for us before we accept them: std listens with 128,
/// and a burst of deliveries past that had its SYNs dropped and sent again a second later (p99
/// 1 s for 1,000 at once, `bench/webhook_burst.py`). Linux caps it at `net.core.somaxconn`
/// (4096 by default); it is what systemd's `Backlog=` defaults to.
const BACKLOG: i32 = 4096;

/// `listen` again on a bound, listening socket: Linux then uses the new backlog.
#[cfg(unix)]
fn deepen_backlog(listener: &impl std::os::fd::AsFd, addr: &str) -> Result<()> {
    rustix::net::listen(listener, BACKLOG)
        .map_err(|e| Error::io(format!("cannot listen on {addr}"), e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_strictly() {
        let head = parse_head(
            b"POST /hook?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\
              X-CipherStream-Signature: sha256=ab\r\n\r\nbody",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.path, "/hook");
        assert_eq!(head.length, Length::Known(12));
        assert_eq!(head.signature.as_deref(), Some("sha256=ab"));
        assert!(!head.expect_continue);
        assert!(parse_head(b"POST / HTTP/1.1\r\nHost: h\r\n")
            .unwrap()
            .is_none());
        let status = |raw: &[u8]| parse_head(raw).unwrap_err().0;
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            400
        );
        assert_eq!(status(b"\x16\x03\x01 not http\r\n\r\n"), 400);
        // Two signature headers: neither is used.
        let two = parse_head(
            b"POST / HTTP/1.1\r\nX-CipherStream-Signature: a\r\nX-CipherStream-Signature: b\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(two.signature, None);
        assert_eq!(two.length, Length::Missing);
    }

    #[test]
    fn answers_say_nothing_but_their_status() {
        assert_eq!(
            String::from_utf8(answer_bytes(401, &[])).unwrap(),
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 13\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n\
             unauthorized\n"
        );
    }
}
