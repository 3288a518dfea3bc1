//! A fault-injecting TCP proxy of our own: the network failures a download must survive (a reset
//! mid-body, a stall, an early clean end) made on demand, after an exact number of bytes, in
//! front of a real server.
//!
//! It listens on `127.0.0.1:0` and forwards each connection to a target, two threads per
//! connection (std only). The fault for a connection is chosen by its index, in the order the
//! connections were accepted, from 0: `Proxy::http(target, first(vec![reset, reset]))` resets
//! the first two and lets the rest pass.
//!
//! Counting: [`Proxy::http`] counts the response's body bytes (the bytes after the first header
//! block the server sends on the connection; with one request per connection, exactly the body
//! bytes the client received) and records the requests that pass, for a test to check the
//! `Range` and `If-Match` a client sent. [`Proxy::tcp`] counts every byte from the server (for
//! TLS, which it cannot read).
//!
//! On drop it stops accepting, shuts every connection down and joins its threads.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the proxy does to one connection's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything, both ways.
    Pass,
    /// Forward `after` bytes, then reset the connection to the client (`RST`: `SO_LINGER` 0 and
    /// close). curl exits 56.
    Reset { after: u64 },
    /// Forward `after` bytes, then forward nothing more and keep the connection open until the
    /// client closes it (or the proxy is dropped): what an idle-read timeout must catch.
    Stall { after: u64 },
    /// Forward `after` bytes, then close the connection to the client cleanly (`FIN`), before
    /// the body is complete. curl exits 18.
    Close { after: u64 },
    /// Answer the request with this HTTP status and S3's XML error body, without asking the
    /// server, then close: what a load balancer in front of S3 does under load (`503`
    /// `SlowDown`, `500` `InternalError`). [`Proxy::http`] only.
    Status { code: u16 },
}

impl Fault {
    fn after(self) -> Option<u64> {
        match self {
            Fault::Pass | Fault::Status { .. } => None,
            Fault::Reset { after } | Fault::Stall { after } | Fault::Close { after } => Some(after),
        }
    }
}

/// A plan that gives the connection of index `i` `faults[i]`, and [`Fault::Pass`] after them.
pub fn first(faults: Vec<Fault>) -> impl Fn(usize) -> Fault + Send + Sync + 'static {
    move |i| faults.get(i).copied().unwrap_or(Fault::Pass)
}

/// One request as the client sent it through the proxy ([`Proxy::http`] only).
#[derive(Clone, Debug)]
pub struct Request {
    /// The index of the connection it came on.
    pub connection: usize,
    /// The request line, `GET /path?query HTTP/1.1`.
    pub line: String,
    /// The header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The value of the header `name` (case-insensitive), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What one connection carried.
#[derive(Clone, Debug, Default)]
struct Log {
    /// Bytes forwarded to the client.
    delivered: u64,
    /// The first [`RECORD_LIMIT`] bytes the client sent.
    sent: Vec<u8>,
}

/// How much of what each client sends is kept for [`Proxy::requests`].
const RECORD_LIMIT: usize = 64 * 1024;

type Plan = Box<dyn Fn(usize) -> Fault + Send + Sync>;

struct Shared {
    target: SocketAddr,
    http: bool,
    plan: Plan,
    stop: AtomicBool,
    /// Clones of each live connection's two sockets, for drop to shut them down. A connection's
    /// thread removes its entry before it closes: a reset needs its socket's last descriptor
    /// closed.
    live: Mutex<HashMap<usize, (TcpStream, TcpStream)>>,
    logs: Mutex<Vec<Log>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A running proxy; stopped on drop.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy to `target` (plain HTTP) that counts body bytes and records requests.
    pub fn http(
        target: SocketAddr,
        plan: impl Fn(usize) -> Fault + Send + Sync + 'static,
    ) -> Proxy {
        Self::start(target, true, Box::new(plan))
    }

    /// A proxy to `target` that counts every byte from the server (use it for TLS).
    pub fn tcp(target: SocketAddr, plan: impl Fn(usize) -> Fault + Send + Sync + 'static) -> Proxy {
        Self::start(target, false, Box::new(plan))
    }

    fn start(target: SocketAddr, http: bool, plan: Plan) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            http,
            plan,
            stop: AtomicBool::new(false),
            live: Mutex::new(HashMap::new()),
            logs: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let index = {
                    let mut logs = s.logs.lock().unwrap();
                    logs.push(Log::default());
                    logs.len() - 1
                };
                let s2 = Arc::clone(&s);
                let t = std::thread::spawn(move || serve(&s2, index, client));
                s.threads.lock().unwrap().push(t);
            }
        });
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// The address to connect to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.shared.logs.lock().unwrap().len()
    }

    /// The bytes forwarded to the client, per connection, in accept order.
    pub fn delivered(&self) -> Vec<u64> {
        let logs = self.shared.logs.lock().unwrap();
        logs.iter().map(|l| l.delivered).collect()
    }

    /// The requests clients sent, in accept order then sending order (requests without a body,
    /// as a download sends; [`Proxy::http`] only).
    pub fn requests(&self) -> Vec<Request> {
        let logs = self.shared.logs.lock().unwrap();
        let mut out = Vec::new();
        for (connection, log) in logs.iter().enumerate() {
            let text = String::from_utf8_lossy(&log.sent);
            for head in text.split("\r\n\r\n").filter(|h| !h.is_empty()) {
                let mut lines = head.split("\r\n");
                let line = lines.next().unwrap_or_default().to_owned();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.to_owned(), v.trim().to_owned()))
                    .collect();
                out.push(Request {
                    connection,
                    line,
                    headers,
                });
            }
        }
        out
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for (client, server) in self.shared.live.lock().unwrap().values() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *self.shared.threads.lock().unwrap());
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Finds the end of the first header block (`\r\n\r\n`) in a stream fed in pieces.
#[derive(Default)]
struct HeadEnd {
    matched: usize,
    found: bool,
}

impl HeadEnd {
    /// How many bytes of `data` belong to the header block (all of them until its end is seen).
    fn header_bytes(&mut self, data: &[u8]) -> usize {
        if self.found {
            return 0;
        }
        for (i, &b) in data.iter().enumerate() {
            if b == b"\r\n\r\n"[self.matched] {
                self.matched += 1;
                if self.matched == 4 {
                    self.found = true;
                    return i + 1;
                }
            } else {
                self.matched = usize::from(b == b'\r');
            }
        }
        data.len()
    }
}

/// Forward one connection, applying its fault to the server's bytes.
fn serve(s: &Shared, index: usize, client: TcpStream) {
    let fault = (s.plan)(index);
    if let Fault::Status { code } = fault {
        answer(s, index, client, code);
        return;
    }
    let Ok(server) = TcpStream::connect_timeout(&s.target, Duration::from_secs(5)) else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut live = s.live.lock().unwrap();
        live.insert(
            index,
            (client.try_clone().unwrap(), server.try_clone().unwrap()),
        );
        // Drop sets `stop` before it shuts down what `live` holds: a connection registered
        // after that must end itself.
        if s.stop.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
    std::thread::scope(|scope| {
        // Client to server, recording what the client sends.
        let (mut from, mut to) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        scope.spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        record(s, index, &buf[..n]);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
        match down(s, index, fault, &client, &server) {
            // The response is complete: the client ends the exchange.
            End::Server => {
                let _ = client.shutdown(Shutdown::Write);
            }
            End::Broken | End::Close => {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
            }
            // Everything stays open until the client (or the proxy's drop) ends it.
            End::Stall => {}
            End::Reset => {
                drain(&client);
                reset(&client);
                // Wakes the other thread's read, sends nothing.
                let _ = client.shutdown(Shutdown::Read);
                let _ = server.shutdown(Shutdown::Both);
            }
        }
        // The scope joins the other direction here.
    });
    // The last descriptors: for a reset, closing the client's is what sends the RST.
    s.live.lock().unwrap().remove(&index);
    drop(server);
    drop(client);
}

/// Read the client's request head, answer it with `code` and an S3 error body, and close.
fn answer(s: &Shared, index: usize, mut client: TcpStream, code: u16) {
    assert!(s.http, "Fault::Status needs Proxy::http");
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = HeadEnd::default();
    let mut buf = [0u8; 16 * 1024];
    while !head.found {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                record(s, index, &buf[..n]);
                head.header_bytes(&buf[..n]);
            }
        }
    }
    let (reason, s3_code, message) = match code {
        500 => (
            "Internal Server Error",
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
        503 => (
            "Service Unavailable",
            "SlowDown",
            "Please reduce your request rate.",
        ),
        _ => (
            "Injected",
            "Injected",
            "An error injected by the test proxy.",
        ),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Error><Code>{s3_code}</Code><Message>{message}</Message></Error>"
    );
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if client.write_all(response.as_bytes()).is_ok() {
        s.logs.lock().unwrap()[index].delivered += response.len() as u64;
    }
    let _ = client.shutdown(Shutdown::Write);
    // Until the client closes, so that nothing unread turns the close into a reset.
    while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
}

/// Keep what the client sent, up to [`RECORD_LIMIT`] bytes per connection.
fn record(s: &Shared, index: usize, bytes: &[u8]) {
    let mut logs = s.logs.lock().unwrap();
    let sent = &mut logs[index].sent;
    let room = RECORD_LIMIT.saturating_sub(sent.len());
    sent.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// Why the server-to-client direction stopped.
enum End {
    /// The server closed its side.
    Server,
    /// A read or write failed (a side went away, or the proxy is stopping).
    Broken,
    Reset,
    Stall,
    Close,
}

/// Server to client, until the server ends, something breaks, or the fault's byte count.
fn down(s: &Shared, index: usize, fault: Fault, client: &TcpStream, server: &TcpStream) -> End {
    let (mut from, mut to) = (server, client);
    let mut left = fault.after();
    let mut head = HeadEnd::default();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return End::Server,
            Ok(n) => n,
            Err(_) => return End::Broken,
        };
        // In HTTP mode nothing counts until the header block has ended.
        let free = if s.http {
            head.header_bytes(&buf[..n])
        } else {
            0
        };
        let counting = !s.http || head.found;
        let mut send = n;
        let mut fire = false;
        if let Some(l) = left.as_mut().filter(|_| counting) {
            let counted = (n - free) as u64;
            if counted >= *l {
                send = free + *l as usize;
                fire = true;
            } else {
                *l -= counted;
            }
        }
        if to.write_all(&buf[..send]).is_err() {
            return End::Broken;
        }
        s.logs.lock().unwrap()[index].delivered += send as u64;
        if fire {
            return match fault {
                Fault::Reset { .. } => End::Reset,
                Fault::Stall { .. } => End::Stall,
                Fault::Close { .. } => End::Close,
                Fault::Pass | Fault::Status { .. } => unreachable!("no byte count"),
            };
        }
    }
}

/// Wait (at most 2 s) until the kernel holds none of the bytes written to `stream` unacknowledged:
/// `SO_LINGER` 0 discards the send queue, so a reset right after a write would cut the client
/// short of bytes the proxy counted as delivered. The queue's length is read from
/// `/proc/net/tcp` (std and socket2 have no `SIOCOUTQ`); where that file is missing, no wait.
fn drain(stream: &TcpStream) {
    let (Ok(SocketAddr::V4(local)), Ok(SocketAddr::V4(peer))) =
        (stream.local_addr(), stream.peer_addr())
    else {
        return;
    };
    // As the kernel prints them: the address as a native-endian number, the port in host order.
    let hex = |a: std::net::SocketAddrV4| {
        format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(a.ip().octets()),
            a.port()
        )
    };
    let (local, peer) = (hex(local), hex(peer));
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
            return;
        };
        // Fields: sl local_address rem_address st tx_queue:rx_queue ...
        let queued = table.lines().find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 4 && f[1] == local && f[2] == peer)
                .then(|| u64::from_str_radix(f[4].split(':').next()?, 16).ok())
                .flatten()
        });
        if queued.unwrap_or(0) == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Make the close of `stream`'s last descriptor a reset (`RST`): `SO_LINGER` on, timeout 0.
fn reset(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .expect("set SO_LINGER");
}
