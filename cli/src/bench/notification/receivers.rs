//! The far ends of the notification suite: an SMTP server and an HTTP receiver on loopback
//! that accept everything at once and note when each message was accepted. They only time:
//! the real servers of the tests (`pim-testkit`, which depends on this crate, so cannot be used
//! here) also parse MIME and check signatures. Every connection is kept alive, as a real
//! receiver's would be.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

/// A message and the wall-clock microsecond at which it was accepted.
#[derive(Debug, Clone)]
pub(super) struct Accepted {
    pub at_us: i64,
    /// The raw e-mail, or the request's path and body.
    pub data: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Accepted>>>;
/// One connection's conversation, until the peer closes it.
type Session = fn(TcpStream, Log) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

pub(super) struct Receiver {
    pub addr: SocketAddr,
    log: Log,
    cancel: CancellationToken,
}

impl Receiver {
    pub(super) async fn smtp() -> anyhow::Result<Self> {
        Self::start(|stream, log| Box::pin(smtp_session(stream, log))).await
    }

    pub(super) async fn http() -> anyhow::Result<Self> {
        Self::start(|stream, log| Box::pin(http_connection(stream, log))).await
    }

    async fn start(session: Session) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let receiver = Self {
            addr: listener.local_addr()?,
            log: Arc::default(),
            cancel: CancellationToken::new(),
        };
        let (log, cancel) = (receiver.log.clone(), receiver.cancel.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = cancel.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let (log, cancel) = (log.clone(), cancel.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        _ = session(stream, log) => {}
                    }
                });
            }
        });
        Ok(receiver)
    }

    /// How many messages were accepted so far.
    pub(super) fn count(&self) -> usize {
        self.log.lock().map(|l| l.len()).unwrap_or_default()
    }

    /// Takes what was accepted so far.
    pub(super) fn take(&self) -> Vec<Accepted> {
        self.log
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn note(log: &Log, data: Vec<u8>) {
    let at_us = super::super::chrono_now_us();
    if let Ok(mut log) = log.lock() {
        log.push(Accepted { at_us, data });
    }
}

/// Enough of RFC 5321 for lettre: every command succeeds; a message is accepted at its final dot.
async fn smtp_session(stream: TcpStream, log: Log) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 pim-bench ESMTP\r\n").await?;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250-pim-bench\r\n250 8BITMIME\r\n",
            "DATA" => {
                write.write_all(b"354 go ahead\r\n").await?;
                let mut message = Vec::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    message.extend_from_slice(line.as_bytes());
                }
                note(&log, message);
                b"250 accepted\r\n"
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"250 ok\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// HTTP/1.1 with keep-alive: every request gets `200` once its body is read.
async fn http_connection(stream: TcpStream, log: Log) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let path = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let mut length = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or_default();
            }
        }
        let mut data = path.into_bytes();
        data.push(b' ');
        let start = data.len();
        data.resize(start + length, 0);
        reader.read_exact(&mut data[start..]).await?;
        note(&log, data);
        write
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await?;
    }
}
