//! A fault-injecting HTTP/1.1 proxy: it listens on 127.0.0.1 and forwards every request to a
//! server (the in-process S3 of [`super::s3`], or any other), and, as a programmed [`Rule`] says,
//! breaks what passes: answers 500 or 503 without forwarding, drops the connection part-way
//! through a response's body or a request's, cuts a response's body short while its
//! `Content-Length` promises more, or waits before answering. It speaks just enough HTTP/1.1 to
//! find a message's end (`Content-Length`, chunked, or the connection's close) and passes every
//! byte through unchanged, so signed requests still verify. Every request is logged with the fault
//! it met, so a test can check its faults happened. Local and bounded: loopback only, heads of at
//! most 64 KiB, and every connection ends with the proxy, when it is dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Where in a body a fault strikes: after this many bytes, or after this fraction of the bytes
/// its `Content-Length` says (0 when it says none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum At {
    Bytes(u64),
    Fraction(f64),
}

impl At {
    fn of(self, length: Option<u64>) -> u64 {
        match self {
            At::Bytes(n) => n,
            At::Fraction(f) => length.map_or(0, |n| (n as f64 * f.clamp(0.0, 1.0)) as u64),
        }
    }
}

/// What happens to a request a rule matches.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answered with this status and an S3-style XML error, not forwarded.
    Status(u16),
    /// Forwarded; the connection is reset after this much of the response's body.
    DropResponse(At),
    /// Forwarded; the response's body stops after this much and the connection closes cleanly,
    /// its `Content-Length` unchanged: the client meets an unexpected end of the stream.
    CutResponse(At),
    /// This much of the request's body is forwarded, then both connections are reset.
    DropRequest(At),
    /// Forwarded after this wait.
    Delay(Duration),
}

/// A fault for the requests it matches: a method, a piece of the request target (path and
/// query), and how many times (every time unless limited).
#[derive(Debug, Clone)]
pub struct Rule {
    method: Option<String>,
    target: Option<String>,
    fault: Fault,
    times: Option<u32>,
}

impl Rule {
    pub fn new(fault: Fault) -> Rule {
        Rule {
            method: None,
            target: None,
            fault,
            times: None,
        }
    }

    /// Only requests of this method (`GET`, `PUT`, ...).
    pub fn method(mut self, method: &str) -> Rule {
        self.method = Some(method.to_string());
        self
    }

    /// Only requests whose target (path and query) contains `piece`.
    pub fn target(mut self, piece: &str) -> Rule {
        self.target = Some(piece.to_string());
        self
    }

    /// Only the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Rule {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.times != Some(0)
            && self.method.as_deref().is_none_or(|m| m == method)
            && self.target.as_deref().is_none_or(|t| target.contains(t))
    }
}

/// One request as the proxy saw it, with the fault it met and whether the fault struck (a cut
/// after more bytes than the body has does not).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub method: String,
    pub target: String,
    /// The request's `Range` and `If-Match` headers.
    pub range: Option<String>,
    pub if_match: Option<String>,
    pub fault: Option<Fault>,
    pub struck: bool,
}

#[derive(Default)]
struct State {
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Event>>,
}

impl State {
    /// The fault of the first rule matching the request, counted off it, and the request's
    /// place in the log.
    fn decide(&self, request: &Head) -> (Option<Fault>, usize) {
        let mut words = request.start.split(' ');
        let (method, target) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
        );
        let fault = {
            let mut rules = self.rules.lock().unwrap();
            rules
                .iter_mut()
                .find(|r| r.matches(method, target))
                .map(|rule| {
                    if let Some(n) = &mut rule.times {
                        *n -= 1;
                    }
                    rule.fault.clone()
                })
        };
        let mut log = self.log.lock().unwrap();
        log.push(Event {
            method: method.to_string(),
            target: target.to_string(),
            range: request.header("range").map(str::to_string),
            if_match: request.header("if-match").map(str::to_string),
            struck: matches!(fault, Some(Fault::Status(_) | Fault::Delay(_))),
            fault,
        });
        (log.last().unwrap().fault.clone(), log.len() - 1)
    }

    fn struck(&self, at: usize) {
        self.log.lock().unwrap()[at].struck = true;
    }
}

pub struct FaultProxy {
    /// The proxy's endpoint, as `AWS_ENDPOINT_URL_S3` takes it.
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    /// Stops listening and ends every connection: they run in a set the listening task owns.
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (`http://127.0.0.1:PORT`), with no faults yet.
    pub async fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("an http:// upstream")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (state, upstream) = (shared.clone(), upstream.clone());
                connections.spawn(async move {
                    let _ = serve(client, &upstream, &state).await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        FaultProxy { url, state, task }
    }

    /// Adds a rule after the ones already there (the first that matches a request decides).
    pub fn inject(&self, rule: Rule) -> &FaultProxy {
        self.state.rules.lock().unwrap().push(rule);
        self
    }

    /// Removes every rule: what follows passes untouched.
    pub fn heal(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    pub fn log(&self) -> Vec<Event> {
        self.state.log.lock().unwrap().clone()
    }

    /// The requests a fault struck.
    pub fn struck(&self) -> Vec<Event> {
        self.log().into_iter().filter(|e| e.struck).collect()
    }
}

/// A message's start line and headers, as received.
struct Head {
    raw: Vec<u8>,
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn framing(&self) -> Framing {
        if self
            .header("transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
        {
            Framing::Chunked
        } else if let Some(n) = self.header("content-length") {
            Framing::Length(n.trim().parse().unwrap_or(0))
        } else {
            Framing::Empty
        }
    }
}

/// Where a body ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

impl Framing {
    fn length(self) -> Option<u64> {
        match self {
            Framing::Empty => Some(0),
            Framing::Length(n) => Some(n),
            Framing::Chunked | Framing::UntilClose => None,
        }
    }
}

const MAX_HEAD: usize = 64 * 1024;

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// The next message head, or `None` at a clean end of the connection.
async fn read_head(reader: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let before = raw.len();
        if reader.read_until(b'\n', &mut raw).await? == 0 {
            return match raw.is_empty() {
                true => Ok(None),
                false => Err(invalid("the connection ended inside a head")),
            };
        }
        if raw.len() > MAX_HEAD {
            return Err(invalid("head too large"));
        }
        if raw[before..] == *b"\r\n" && before > 0 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Some(Head {
        raw,
        start,
        headers,
    }))
}

/// Writes at most `left` bytes (all when `None`), and says whether everything offered went.
struct Limited<'w, W> {
    writer: &'w mut W,
    left: Option<u64>,
}

impl<W: AsyncWrite + Unpin> Limited<'_, W> {
    async fn put(&mut self, bytes: &[u8]) -> std::io::Result<bool> {
        let n = self
            .left
            .map_or(bytes.len(), |left| left.min(bytes.len() as u64) as usize);
        self.writer.write_all(&bytes[..n]).await?;
        if let Some(left) = &mut self.left {
            *left -= n as u64;
        }
        Ok(n == bytes.len())
    }
}

/// Copies a body framed as `framing` from `reader` to `writer`, stopping after `limit` bytes when
/// given. Returns whether the whole body went.
async fn forward_body(
    reader: &mut (impl AsyncBufRead + Unpin),
    writer: &mut (impl AsyncWrite + Unpin),
    framing: Framing,
    limit: Option<u64>,
) -> std::io::Result<bool> {
    let mut out = Limited {
        writer,
        left: limit,
    };
    let whole = match framing {
        Framing::Empty => true,
        Framing::Length(n) => copy_exact(reader, &mut out, n).await?,
        Framing::UntilClose => copy_exact(reader, &mut out, u64::MAX).await?,
        Framing::Chunked => loop {
            let mut line = Vec::new();
            reader.read_until(b'\n', &mut line).await?;
            if !out.put(&line).await? {
                break false;
            }
            let text = String::from_utf8_lossy(&line);
            let size = text.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| invalid("chunk size"))?;
            if size == 0 {
                break loop {
                    let mut trailer = Vec::new();
                    reader.read_until(b'\n', &mut trailer).await?;
                    if !out.put(&trailer).await? {
                        break false;
                    }
                    if trailer == b"\r\n" || trailer.is_empty() {
                        break true;
                    }
                };
            }
            // The chunk and its closing CRLF.
            if !copy_exact(reader, &mut out, size + 2).await? {
                break false;
            }
        },
    };
    out.writer.flush().await?;
    Ok(whole)
}

/// Copies `n` bytes (or until the end, for `u64::MAX`); whether all of them went.
async fn copy_exact<W: AsyncWrite + Unpin>(
    reader: &mut (impl AsyncBufRead + Unpin),
    out: &mut Limited<'_, W>,
    mut n: u64,
) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    while n > 0 {
        let want = n.min(buf.len() as u64) as usize;
        let got = reader.read(&mut buf[..want]).await?;
        if got == 0 {
            return match n {
                u64::MAX => Ok(true),
                _ => Err(invalid("the body ended early")),
            };
        }
        if n != u64::MAX {
            n -= got as u64;
        }
        if !out.put(&buf[..got]).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The answer of [`Fault::Status`]: S3's error document for the status.
fn status_answer(status: u16) -> Vec<u8> {
    let (reason, code) = match status {
        503 => ("Service Unavailable", "SlowDown"),
        500 => ("Internal Server Error", "InternalError"),
        _ => ("Error", "InternalError"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Ends a connection with a reset rather than a clean close.
fn reset(reader: BufReader<OwnedReadHalf>, writer: OwnedWriteHalf) {
    if let Ok(stream) = reader.into_inner().reunite(writer) {
        // A zero linger sends RST on close without blocking: nothing is left to send.
        #[allow(deprecated)]
        let _ = stream.set_linger(Some(Duration::ZERO));
    }
}

type Halves = (BufReader<OwnedReadHalf>, OwnedWriteHalf);

fn halves(stream: TcpStream) -> Halves {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    (BufReader::new(r), w)
}

/// Serves one client connection: request after request, each over the connection to `upstream`
/// this client has (opened when first needed, and again after a fault closed it).
async fn serve(client: TcpStream, upstream: &str, state: &State) -> std::io::Result<()> {
    let (mut client_r, mut client_w) = halves(client);
    let mut server: Option<Halves> = None;
    loop {
        let Some(request) = read_head(&mut client_r).await? else {
            return Ok(());
        };
        let method = request
            .start
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_string();
        let (fault, at) = state.decide(&request);
        let body = request.framing();
        match &fault {
            Some(Fault::Status(status)) => {
                forward_body(&mut client_r, &mut tokio::io::sink(), body, None).await?;
                client_w.write_all(&status_answer(*status)).await?;
                client_w.flush().await?;
                continue;
            }
            Some(Fault::Delay(wait)) => tokio::time::sleep(*wait).await,
            _ => {}
        }
        if server.is_none() {
            server = Some(halves(TcpStream::connect(upstream).await?));
        }
        let (server_r, server_w) = server.as_mut().unwrap();
        server_w.write_all(&request.raw).await?;
        let limit = match &fault {
            Some(Fault::DropRequest(cut)) => Some(cut.of(body.length())),
            _ => None,
        };
        if !forward_body(&mut client_r, server_w, body, limit).await? {
            state.struck(at);
            let (server_r, server_w) = server.take().unwrap();
            reset(server_r, server_w);
            reset(client_r, client_w);
            return Ok(());
        }
        // Interim answers (100 Continue) go through as they are.
        let response = loop {
            let head = read_head(server_r)
                .await?
                .ok_or_else(|| invalid("the server closed without answering"))?;
            let status: u16 = head
                .start
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if (100..200).contains(&status) && status != 101 {
                client_w.write_all(&head.raw).await?;
                continue;
            }
            break (head, status);
        };
        let (head, status) = response;
        let framing = if method == "HEAD" || status == 204 || status == 304 {
            Framing::Empty
        } else {
            match head.framing() {
                Framing::Empty if head.header("content-length").is_none() => Framing::UntilClose,
                framing => framing,
            }
        };
        let limit = match &fault {
            Some(Fault::DropResponse(cut) | Fault::CutResponse(cut)) => {
                Some(cut.of(framing.length()))
            }
            _ => None,
        };
        client_w.write_all(&head.raw).await?;
        if !forward_body(server_r, &mut client_w, framing, limit).await? {
            state.struck(at);
            let (server_r, server_w) = server.take().unwrap();
            reset(server_r, server_w);
            if let Some(Fault::DropResponse(_)) = fault {
                reset(client_r, client_w);
            } else {
                client_w.shutdown().await?;
            }
            return Ok(());
        }
        let closing = head
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        if framing == Framing::UntilClose || closing {
            return Ok(());
        }
    }
}
