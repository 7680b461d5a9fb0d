//! A real HTTP receiver for webhook tests. It verifies every request's Standard Webhooks
//! signature with the reference library (`standardwebhooks`), not with PIM's own code, and
//! answers as a test scripts it: a status code, or no answer at all.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Status(u16),
    /// Reads the request and never answers.
    Hang,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct ReceivedWebhook {
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    /// Whether the signature verified with the receiver's secret at the time.
    pub verified: bool,
    pub reply: Reply,
}

impl ReceivedWebhook {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// Whether the 2xx answer accepted it.
    pub fn accepted(&self) -> bool {
        matches!(self.reply, Reply::Status(code) if (200..300).contains(&code))
    }
}

/// Verifies `body` against `headers` with the Standard Webhooks reference library.
pub fn verify_standard_webhook(
    secret: &str,
    body: &[u8],
    headers: &http::HeaderMap,
) -> Result<(), String> {
    let webhook = standardwebhooks::Webhook::new(secret).map_err(|e| format!("{e:?}"))?;
    webhook.verify(body, headers).map_err(|e| format!("{e:?}"))
}

#[derive(Default)]
struct State {
    secret: String,
    script: VecDeque<Reply>,
    received: Vec<ReceivedWebhook>,
}

pub struct WebhookReceiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    cancel: CancellationToken,
}

impl WebhookReceiver {
    /// Starts on a free loopback port; it answers 200 to anything not scripted.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let receiver = Self {
            addr: listener.local_addr()?,
            state: Arc::default(),
            cancel: CancellationToken::new(),
        };
        let state = receiver.state.clone();
        let cancel = receiver.cancel.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = cancel.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        _ = connection(stream, state) => {}
                    }
                });
            }
        });
        Ok(receiver)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The secret signatures are verified with from now on.
    pub fn set_secret(&self, secret: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.secret = secret.to_owned();
        }
    }

    /// The next answers, in order; after them it answers 200.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        if let Ok(mut state) = self.state.lock() {
            state.script.extend(replies);
        }
    }

    pub fn received(&self) -> Vec<ReceivedWebhook> {
        self.state
            .lock()
            .map(|s| s.received.clone())
            .unwrap_or_default()
    }

    /// The requests it accepted with a 2xx answer.
    pub fn accepted(&self) -> Vec<ReceivedWebhook> {
        self.received()
            .into_iter()
            .filter(ReceivedWebhook::accepted)
            .collect()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Serves one keep-alive connection: request after request.
async fn connection(mut stream: TcpStream, state: Arc<Mutex<State>>) -> anyhow::Result<()> {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_owned();
        let mut headers = http::HeaderMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            if let Some((name, value)) = line.split_once(':')
                && let (Ok(name), Ok(value)) = (
                    http::HeaderName::from_bytes(name.trim().as_bytes()),
                    http::HeaderValue::from_str(value.trim()),
                )
            {
                headers.append(name, value);
            }
        }
        let length: usize = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        let body = buffer[head_end..head_end + length].to_vec();
        buffer.drain(..head_end + length);
        let reply = {
            let mut state = state
                .lock()
                .map_err(|_| anyhow::anyhow!("receiver state poisoned"))?;
            let verified = !state.secret.is_empty()
                && verify_standard_webhook(&state.secret, &body, &headers).is_ok();
            let reply = state.script.pop_front().unwrap_or(Reply::Status(200));
            state.received.push(ReceivedWebhook {
                path,
                headers,
                body,
                verified,
                reply,
            });
            reply
        };
        match reply {
            Reply::Status(code) => {
                let answer = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n");
                stream.write_all(answer.as_bytes()).await?;
            }
            Reply::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
        }
    }
}
