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
/// The classic text format, for clients that do not ask for OpenMetrics.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
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

/// What a request asks: its method, path and Accept header.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
    accept: Option<String>,
}

/// The request's line and Accept header, once the head is complete; None
/// while it is not.
fn request(head: &[u8]) -> Option<Result<Request, ()>> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&head[..end]).map_err(|_| ());
    Some(head.and_then(|h| {
        let mut lines = h.split("\r\n");
        let line = lines.next().ok_or(())?;
        let mut parts = line.split(' ');
        let (method, path) = match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(p), Some(v)) if v.starts_with("HTTP/1.") => (m, p),
            _ => return Err(()),
        };
        let accept = lines.find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("accept")
                .then(|| value.trim().to_string())
        });
        Ok(Request {
            method: method.to_string(),
            path: path.to_string(),
            accept,
        })
    }))
}

/// Whether the client prefers OpenMetrics to the classic text format, by
/// the quality values of its Accept header (as Prometheus's client
/// libraries decide): without the header, or with only `*/*`, the classic
/// format, which every scraper and `promtool check metrics` read.
fn wants_openmetrics(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let (mut openmetrics, mut text) = (None::<f32>, None::<f32>);
    for entry in accept.split(',') {
        let mut params = entry.split(';').map(str::trim);
        let media = params.next().unwrap_or("").to_ascii_lowercase();
        let q = params
            .find_map(|p| p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
            .unwrap_or(1.0);
        let slot = match media.as_str() {
            "application/openmetrics-text" => &mut openmetrics,
            "text/plain" => &mut text,
            _ => continue,
        };
        *slot = Some(slot.map_or(q, |best| best.max(q)));
    }
    match (openmetrics, text) {
        (Some(om), Some(t)) => om > 0.0 && om >= t,
        (Some(om), None) => om > 0.0,
        _ => false,
    }
}

/// The classic text format (0.0.4) from the OpenMetrics encoding: no
/// `# EOF` or `# UNIT`, counters typed under their `_total` name, info
/// metrics as gauges named `_info`, unknown as untyped.
fn classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // HELP comes before TYPE, and its name changes with the type.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" if !family.ends_with("_total") => (format!("{family}_total"), "counter"),
                "info" => (format!("{family}_info"), "gauge"),
                "counter" | "gauge" | "histogram" | "summary" => (family.to_string(), kind),
                _ => (family.to_string(), "untyped"),
            };
            if let Some((_, text)) = help.take().filter(|(h, _)| *h == family) {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
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
            if let Some(r) = request(&head) {
                return Some(r);
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
        Ok(r) if r.method != "GET" && r.method != "HEAD" => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
        Ok(r) if r.path == "/metrics" || r.path.starts_with("/metrics?") => {
            let t0 = Instant::now();
            let mut body = String::with_capacity(last_size.load(Ordering::Relaxed) + 1024);
            if text::encode(&mut body, registry).is_err() {
                return Ok(());
            }
            last_size.store(body.len(), Ordering::Relaxed);
            let (body, content_type) = if wants_openmetrics(r.accept.as_deref()) {
                (body, CONTENT_TYPE)
            } else {
                (classic(&body), CLASSIC_CONTENT_TYPE)
            };
            log::debug!(
                "metrics: {} bytes encoded in {:?}",
                body.len(),
                t0.elapsed()
            );
            if r.method == "HEAD" {
                let len = body.len();
                return write(&mut stream, "200 OK", content_type, len, "").await;
            }
            ("200 OK", content_type, body)
        }
        Ok(r) if r.path == "/" => (
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
    fn requests() {
        assert_eq!(
            request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            None,
            "incomplete"
        );
        assert_eq!(
            request(b"GET /metrics HTTP/1.1\r\nHost: x\r\nACCEPT:  text/plain \r\n\r\n"),
            Some(Ok(Request {
                method: "GET".into(),
                path: "/metrics".into(),
                accept: Some("text/plain".into())
            }))
        );
        assert_eq!(
            request(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().accept,
            None
        );
        assert_eq!(request(b"GARBAGE\r\n\r\n"), Some(Err(())));
        assert_eq!(request(b"\xff\xfe\r\n\r\n"), Some(Err(())));
    }

    #[test]
    fn openmetrics_only_when_preferred() {
        // What Prometheus 3 sends by default.
        let prometheus = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
            application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,\
            text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(wants_openmetrics(Some("application/openmetrics-text")));
        // Prometheus configured for the classic format only.
        assert!(!wants_openmetrics(Some(
            "text/plain;version=0.0.4;q=1,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some(
            "text/plain;q=0.9, application/openmetrics-text;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
        for plain in [
            None,
            Some("*/*"),
            Some(""),
            Some("text/html"),
            Some(";;,q="),
        ] {
            assert!(!wants_openmetrics(plain), "{plain:?}");
        }
    }

    #[test]
    fn the_classic_format_types_counters_and_info_as_it_expects() {
        let om =
            "# HELP a_changes Changes.\n# TYPE a_changes counter\na_changes_total{r=\"x\"} 2\n\
            # HELP a_build The version.\n# TYPE a_build info\na_build_info{version=\"1\"} 1\n\
            # HELP a_bytes Size.\n# TYPE a_bytes gauge\n# UNIT a_bytes bytes\na_bytes 3.0\n\
            # TYPE a_odd stateset\na_odd{a_odd=\"x\"} 1\n# EOF\n";
        assert_eq!(
            classic(om),
            "# HELP a_changes_total Changes.\n# TYPE a_changes_total counter\na_changes_total{r=\"x\"} 2\n\
             # HELP a_build_info The version.\n# TYPE a_build_info gauge\na_build_info{version=\"1\"} 1\n\
             # HELP a_bytes Size.\n# TYPE a_bytes gauge\na_bytes 3.0\n\
             # TYPE a_odd untyped\na_odd{a_odd=\"x\"} 1\n"
        );
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
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n",
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
        let plain = get(
            server.addr,
            b"GET /metrics HTTP/1.1\r\nAccept: text/plain;version=0.0.4\r\n\r\n",
        );
        assert!(
            plain.contains(&format!("\r\nContent-Type: {CLASSIC_CONTENT_TYPE}\r\n")),
            "{plain}"
        );
        assert!(
            plain.contains("\n# TYPE threadtrace_build_info gauge\n"),
            "{plain}"
        );
        assert!(!plain.contains("# EOF"), "{plain}");
        assert!(get(server.addr, b"GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(server.addr, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(server.addr, &[b'a'; REQUEST_MAX + 10]).starts_with("HTTP/1.1 400"));
        // A client that sends nothing does not hold up the others.
        let _idle = std::net::TcpStream::connect(server.addr).unwrap();
        assert!(get(server.addr, b"GET /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200"));
        drop(server);
    }
}
