//! The scrape endpoint: `GET /metrics` over HTTP/1.1, on a thread of its
//! own started before recording (the tracer creates no thread while thread
//! creation may be failing), with a current-thread tokio runtime that
//! creates none either. A scrape encodes the registry on this thread: the
//! collector never waits for it, and the output stage only when it adds a
//! new series while that metric is being encoded.
//!
//! Written by hand rather than with hyper: one route, one method, a
//! response closed after it is sent; requests are bounded in size, time
//! and number.
use std::{
    net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use prometheus_client::{encoding::text, registry::Registry};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

/// What Prometheus 3 requires of an OpenMetrics response.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A request's head at most, and the time to send it.
const REQUEST_MAX: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to send a response: a scraper that stops reading is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
const CONNECTIONS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0:?}: give PORT, HOST:PORT or [IPv6]:PORT (a port alone listens on 127.0.0.1)")]
    Address(String),
    #[error("--metrics: cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("--metrics: cannot start the metrics thread: {0}")]
    Thread(std::io::Error),
}

/// `--metrics`: a port alone listens on loopback, as an exporter of a
/// tracer that sees every command line should unless told otherwise.
pub fn parse_addr(s: &str) -> Result<SocketAddr, HttpError> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    // "localhost:9477": resolved now, at start-up, not while recording.
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| HttpError::Address(s.into()))
}

pub fn bind(addr: SocketAddr) -> Result<StdListener, HttpError> {
    let l = StdListener::bind(addr).map_err(|e| HttpError::Listen(addr, e))?;
    l.set_nonblocking(true)
        .map_err(|e| HttpError::Listen(addr, e))?;
    Ok(l)
}

/// The running server; dropping it stops it.
pub struct Server {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves `registry` on `listener` from a new thread.
pub fn spawn(listener: StdListener, registry: Registry) -> Result<Server, HttpError> {
    let addr = listener.local_addr().map_err(HttpError::Thread)?;
    let (stop, stopped) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("metrics: no runtime ({e}): /metrics is not served");
                    return;
                }
            };
            rt.block_on(serve(listener, Arc::new(registry), stopped));
        })
        .map_err(HttpError::Thread)?;
    Ok(Server {
        stop: Some(stop),
        thread: Some(thread),
        addr,
    })
}

async fn serve(listener: StdListener, registry: Arc<Registry>, mut stopped: oneshot::Receiver<()>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("metrics: {e}: /metrics is not served");
            return;
        }
    };
    let active = Arc::new(AtomicUsize::new(0));
    // The last response's size: the next one is encoded without regrowing.
    let last_size = Arc::new(AtomicUsize::new(4096));
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { continue };
                if active.load(Ordering::Relaxed) >= CONNECTIONS {
                    // Closed at once: the scraper retries at its interval.
                    drop(stream);
                    continue;
                }
                active.fetch_add(1, Ordering::Relaxed);
                let (active, registry, last_size) = (active.clone(), registry.clone(), last_size.clone());
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &registry, &last_size).await {
                        log::debug!("metrics: {e}");
                    }
                    active.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
    }
}

/// The request line's method and path, once the head is complete; None
/// while it is not.
fn request_line(head: &[u8]) -> Option<Result<(&str, &str), ()>> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&head[..end]).map_err(|_| ());
    Some(head.and_then(|h| {
        let line = h.lines().next().ok_or(())?;
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(p), Some(v)) if v.starts_with("HTTP/1.") => Ok((m, p)),
            _ => Err(()),
        }
    }))
}

async fn handle(
    mut stream: TcpStream,
    registry: &Registry,
    last_size: &AtomicUsize,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            if let Some(r) = request_line(&head) {
                return Some(r.map(|(m, p)| (m.to_string(), p.to_string())));
            }
            if head.len() >= REQUEST_MAX {
                return Some(Err(()));
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    let request = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Some(r)) => r,
        Ok(None) | Err(_) => return Ok(()),
    };
    let (status, content_type, body) = match request {
        Err(()) => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
        Ok((m, _)) if m != "GET" && m != "HEAD" => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
        Ok((m, p)) if p == "/metrics" || p.starts_with("/metrics?") => {
            let t0 = Instant::now();
            let mut body = String::with_capacity(last_size.load(Ordering::Relaxed) + 1024);
            if text::encode(&mut body, registry).is_err() {
                return Ok(());
            }
            last_size.store(body.len(), Ordering::Relaxed);
            log::debug!(
                "metrics: {} bytes encoded in {:?}",
                body.len(),
                t0.elapsed()
            );
            if m == "HEAD" {
                let len = body.len();
                return write(&mut stream, "200 OK", CONTENT_TYPE, len, "").await;
            }
            ("200 OK", CONTENT_TYPE, body)
        }
        Ok((_, p)) if p == "/" => (
            "200 OK",
            "text/plain; charset=utf-8",
            "threadtrace: metrics at /metrics\n".to_string(),
        ),
        Ok(_) => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n".to_string(),
        ),
    };
    write(&mut stream, status, content_type, body.len(), &body).await
}

async fn write(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    len: usize,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let send = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, send).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "scraper too slow to read",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("9477").unwrap(),
            "127.0.0.1:9477".parse().unwrap()
        );
        assert_eq!(
            parse_addr("0.0.0.0:9477").unwrap(),
            "0.0.0.0:9477".parse().unwrap()
        );
        assert_eq!(parse_addr("[::1]:80").unwrap(), "[::1]:80".parse().unwrap());
        assert!(parse_addr("localhost:9477").unwrap().ip().is_loopback());
        assert!(parse_addr("nope").is_err());
        assert!(parse_addr("70000").is_err());
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            None,
            "incomplete"
        );
        assert_eq!(
            request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Ok(("GET", "/metrics")))
        );
        assert_eq!(request_line(b"GARBAGE\r\n\r\n"), Some(Err(())));
        assert_eq!(request_line(b"\xff\xfe\r\n\r\n"), Some(Err(())));
    }

    fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_the_exposition_with_its_content_type_and_nothing_else() {
        let (m, registry) = super::super::new(&super::super::MetricsConfig {
            labels: Default::default(),
            max_label_sets: 10,
        });
        drop(m);
        let server = spawn(bind("127.0.0.1:0".parse().unwrap()).unwrap(), registry).unwrap();
        let r = get(
            server.addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains(&format!("\r\nContent-Type: {CONTENT_TYPE}\r\n")),
            "{r}"
        );
        assert!(r.contains("threadtrace_build_info{version=\""), "{r}");
        assert!(r.contains("\nprocess_resident_memory_bytes "), "{r}");
        assert!(r.ends_with("# EOF\n"), "{r}");
        let len: usize = r
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, r.split_once("\r\n\r\n").unwrap().1.len());
        assert!(get(server.addr, b"GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(server.addr, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(server.addr, &[b'a'; REQUEST_MAX + 10]).starts_with("HTTP/1.1 400"));
        // A client that sends nothing does not hold up the others.
        let _idle = std::net::TcpStream::connect(server.addr).unwrap();
        assert!(get(server.addr, b"GET /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200"));
        drop(server);
    }
}
