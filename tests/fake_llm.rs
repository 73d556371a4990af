//! A local OpenAI-compatible chat-completions server for tests, examples and benchmarks.
//!
//! It listens on 127.0.0.1, answers `POST .../chat/completions` with a deterministic
//! answer derived from the prompt ([`answer`]), counts requests, and can be told to
//! misbehave: add latency, return 429/503/529 (or any status) in bursts, hang, reset
//! connections, return malformed JSON or the wrong content type, or stop early
//! (`finish_reason: length`). The same server ships as the `fake-llm` binary.
//!
//! It is a test fixture, not a web server: HTTP/1.1 with `Content-Length` bodies, one
//! thread per connection, keep-alive honoured.

use socket2::SockRef;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the server answers one request instead of normally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// This status, with a JSON error body (429 also says `Retry-After: 1`).
    Status(u16),
    /// Read the request and never answer (until the server stops or the hang limit).
    Hang,
    /// Read the request and reset the connection (TCP RST).
    Reset,
    /// 200 with `application/json` and a body that is not JSON.
    MalformedJson,
    /// 200 with `text/html`.
    WrongContentType,
    /// A normal answer that stopped early: `finish_reason: "length"`.
    Truncated,
}

impl Fault {
    /// Parses `429`, `hang`, `reset`, `malformed`, `html`, `truncated`.
    pub fn parse(s: &str) -> Option<Fault> {
        Some(match s {
            "hang" => Fault::Hang,
            "reset" => Fault::Reset,
            "malformed" => Fault::MalformedJson,
            "html" => Fault::WrongContentType,
            "truncated" => Fault::Truncated,
            n => Fault::Status(n.parse().ok()?),
        })
    }
}

/// What the answer to a prompt is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answering {
    /// The last user message, verbatim: every row's answer is its own prompt.
    Echo,
    /// `positive`, `negative` or `neutral`, from a small word list. A request that asks
    /// for a JSON schema (`response_format.json_schema`, multi-query `structured` mode) is
    /// answered with an object filling each of the schema's properties from that verdict
    /// ([`structured_answer`]).
    Sentiment,
}

/// The deterministic answer to `prompt`.
pub fn answer(prompt: &str, how: Answering) -> String {
    match how {
        Answering::Echo => prompt.to_string(),
        Answering::Sentiment => sentiment(prompt).to_string(),
    }
}

/// A JSON object for `schema` (a JSON schema of an object), each property filled from
/// the sentiment of `prompt`: an enum takes the verdict if it lists it (else its first
/// value), a string the verdict, an integer the sentiment score (words counted as good
/// minus bad), a number that score as a float, a boolean whether the verdict is
/// `positive`. Deterministic, so examples have fixed output.
pub fn structured_answer(prompt: &str, schema: &serde_json::Value) -> serde_json::Value {
    let verdict = sentiment(prompt);
    let score = sentiment_score(prompt);
    let mut out = serde_json::Map::new();
    if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, spec) in props {
            let value = match (
                spec.get("enum").and_then(|e| e.as_array()),
                spec.get("type").and_then(|t| t.as_str()),
            ) {
                (Some(values), _) => values
                    .iter()
                    .find(|v| v.as_str() == Some(verdict))
                    .or(values.first())
                    .cloned()
                    .unwrap_or(serde_json::Value::Null),
                (None, Some("integer")) => serde_json::json!(score),
                (None, Some("number")) => serde_json::json!(f64::from(score)),
                (None, Some("boolean")) => serde_json::json!(verdict == "positive"),
                _ => serde_json::json!(verdict),
            };
            out.insert(name.clone(), value);
        }
    }
    serde_json::Value::Object(out)
}

fn sentiment(text: &str) -> &'static str {
    match sentiment_score(text) {
        s if s > 0 => "positive",
        s if s < 0 => "negative",
        _ => "neutral",
    }
}

/// Words from the good list minus words from the bad list.
fn sentiment_score(text: &str) -> i32 {
    const GOOD: &[&str] = &[
        "good",
        "great",
        "love",
        "loved",
        "excellent",
        "happy",
        "wonderful",
        "best",
        "amazing",
        "fantastic",
        "fast",
        "perfect",
        "recommend",
    ];
    const BAD: &[&str] = &[
        "bad",
        "terrible",
        "hate",
        "hated",
        "awful",
        "worst",
        "poor",
        "broken",
        "disappointed",
        "slow",
        "refund",
        "never",
    ];
    let mut score = 0i32;
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
    {
        if GOOD.contains(&word.as_str()) {
            score += 1;
        } else if BAD.contains(&word.as_str()) {
            score -= 1;
        }
    }
    score
}

struct Shared {
    requests: AtomicU64,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    latency_ms: AtomicU64,
    faults: Mutex<Faults>,
    answering: Answering,
    /// Values of `Authorization` / `api-key` headers seen, in arrival order.
    credentials: Mutex<Vec<String>>,
    stop: AtomicBool,
    hang_limit: Duration,
}

#[derive(Default)]
struct Faults {
    /// Taken one per request, before `always`.
    burst: VecDeque<Fault>,
    always: Option<Fault>,
    /// Every `n`th request (1-based count) gets the fault.
    every: Option<(u64, Fault)>,
}

/// A running server; stops when dropped.
pub struct FakeLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl FakeLlm {
    /// Starts an echoing server on a free port of 127.0.0.1.
    pub fn start() -> FakeLlm {
        FakeLlm::bind("127.0.0.1:0", Answering::Echo).expect("bind 127.0.0.1")
    }

    /// Starts a server on `addr` (which must be on the loopback interface).
    pub fn bind(addr: &str, answering: Answering) -> io::Result<FakeLlm> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the fake server only listens on the loopback interface",
            ));
        }
        let shared = Arc::new(Shared {
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            latency_ms: AtomicU64::new(0),
            faults: Mutex::new(Faults::default()),
            answering,
            credentials: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            hang_limit: Duration::from_secs(60),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("fake-llm-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let s = s.clone();
                    let _ = std::thread::Builder::new()
                        .name("fake-llm-conn".into())
                        .spawn(move || serve(conn, &s));
                }
            })?;
        Ok(FakeLlm {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to configure (`base_url`): `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests received so far (each counted when it has been read whole).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The most requests that were being answered at the same moment.
    pub fn max_in_flight(&self) -> u64 {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Every answer waits this long first.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// The next `n` requests get `fault` (after any burst already queued).
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut f = self.faults();
        f.burst.extend(std::iter::repeat_n(fault, n));
    }

    /// Every request gets `fault` (after any queued burst); `None` answers normally again.
    pub fn fail_always(&self, fault: Option<Fault>) {
        self.faults().always = fault;
    }

    /// Every `n`th request gets `fault`.
    pub fn fail_every(&self, n: u64, fault: Fault) {
        self.faults().every = Some((n.max(1), fault));
    }

    /// The credential header values received, in order.
    pub fn credentials(&self) -> Vec<String> {
        self.shared
            .credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.shared.faults.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// One parsed request.
struct Incoming {
    path: String,
    body: Vec<u8>,
    close: bool,
}

/// Serves requests on one connection until it closes or a fault ends it.
fn serve(mut conn: TcpStream, s: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    // Answers go out at once: with Nagle's algorithm a small write waits for the client's
    // (delayed) acknowledgement, which adds up to 40 ms to every answer.
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let req = match read_request(&mut conn, &mut buf, s) {
            Ok(Some(r)) => r,
            _ => return,
        };
        let n = s.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let keep_going = answer_one(&mut conn, s, &req, n);
        s.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !keep_going {
            return;
        }
    }
}

/// Answers one request; false when the connection is finished with.
fn answer_one(conn: &mut TcpStream, s: &Shared, req: &Incoming, n: u64) -> bool {
    let latency = s.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        std::thread::sleep(Duration::from_millis(latency));
    }
    let fault = {
        let mut f = s.faults.lock().unwrap_or_else(|p| p.into_inner());
        let every = f
            .every
            .clone()
            .filter(|(k, _)| n.is_multiple_of(*k))
            .map(|(_, fault)| fault);
        f.burst.pop_front().or(every).or_else(|| f.always.clone())
    };
    let (status, content_type, body) = match fault {
        Some(Fault::Hang) => {
            let until = Instant::now() + s.hang_limit;
            while Instant::now() < until && !s.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return false;
        }
        Some(Fault::Reset) => {
            // The caller then drops the socket: closed with linger 0, it sends RST.
            let _ = SockRef::from(&*conn).set_linger(Some(Duration::ZERO));
            return false;
        }
        Some(Fault::MalformedJson) => (
            200,
            "application/json",
            b"{\"choices\": [{\"message\": ".to_vec(),
        ),
        Some(Fault::WrongContentType) => {
            (200, "text/html", b"<html><body>oops</body></html>".to_vec())
        }
        Some(Fault::Status(code)) => (
            code,
            "application/json",
            format!(r#"{{"error": {{"message": "fake-llm says {code}", "code": {code}}}}}"#)
                .into_bytes(),
        ),
        Some(Fault::Truncated) => (200, "application/json", completion(req, s, "length")),
        None => {
            let path = req.path.split('?').next().unwrap_or("");
            if path.ends_with("/chat/completions") {
                (200, "application/json", completion(req, s, "stop"))
            } else {
                (
                    404,
                    "application/json",
                    br#"{"error": {"message": "no such path"}}"#.to_vec(),
                )
            }
        }
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
        reason(status),
        body.len()
    );
    if status == 429 {
        head.push_str("retry-after: 1\r\n");
    }
    if req.close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(&body);
    if conn.write_all(&message).is_err() {
        return false;
    }
    if req.close {
        let _ = conn.shutdown(Shutdown::Both);
        return false;
    }
    true
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        529 => "Site Overloaded",
        _ => "Status",
    }
}

/// Reads one request (headers and `Content-Length` body). `None` when the peer closed the
/// connection or the server is stopping.
fn read_request(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    s: &Shared,
) -> io::Result<Option<Incoming>> {
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(head_len) = parsed
            .parse(buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            let mut length = 0usize;
            let mut close = false;
            for h in parsed.headers.iter() {
                let value = String::from_utf8_lossy(h.value).into_owned();
                if h.name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if h.name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                } else if h.name.eq_ignore_ascii_case("authorization")
                    || h.name.eq_ignore_ascii_case("api-key")
                {
                    s.credentials
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(value);
                }
            }
            let path = parsed.path.unwrap_or("/").to_string();
            while buf.len() < head_len + length {
                if !fill(conn, buf, &mut chunk, s)? {
                    return Ok(None);
                }
            }
            let body = buf[head_len..head_len + length].to_vec();
            buf.drain(..head_len + length);
            return Ok(Some(Incoming { path, body, close }));
        }
        if !fill(conn, buf, &mut chunk, s)? {
            return Ok(None);
        }
    }
}

/// Reads more bytes; false on end of stream or when the server stops.
fn fill(conn: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8], s: &Shared) -> io::Result<bool> {
    loop {
        if s.stop.load(Ordering::SeqCst) {
            return Ok(false);
        }
        match conn.read(chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(true);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// A chat completion answering the request's last user message.
fn completion(req: &Incoming, s: &Shared, finish: &str) -> Vec<u8> {
    let request: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let messages = request
        .get("messages")
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    let prompt = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(|r| r.as_str()) == Some("user"))
        .and_then(|m| m.get("content"))
        .and_then(|c| c.as_str())
        .unwrap_or("");
    let words = |t: &str| t.split_whitespace().count() as u64;
    let prompt_tokens: u64 = messages
        .iter()
        .filter_map(|m| m.get("content").and_then(|c| c.as_str()))
        .map(words)
        .sum();
    let schema = request.pointer("/response_format/json_schema/schema");
    let text = match (s.answering, schema) {
        (Answering::Sentiment, Some(schema)) => structured_answer(prompt, schema).to_string(),
        (how, _) => answer(prompt, how),
    };
    let completion_tokens = words(&text);
    let model = request
        .get("model")
        .and_then(|m| m.as_str())
        .unwrap_or("fake")
        .to_string();
    serde_json::json!({
        "id": format!("fake-{}", s.requests.load(Ordering::SeqCst)),
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish,
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    })
    .to_string()
    .into_bytes()
}
