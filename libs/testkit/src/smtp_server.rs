//! A real SMTP server for the notification tests: it speaks enough of RFC 5321 for a real
//! client (lettre) to deliver to it, keeps every message it accepted, parses its MIME parts
//! with mail-parser, and can be stopped and started again on the same port, as an outage.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use mail_parser::MessageParser;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

/// One message as the server accepted it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    pub raw: Vec<u8>,
    pub subject: String,
    /// The decoded text/plain part.
    pub text: String,
    /// The decoded text/html part.
    pub html: String,
    pub html_parts: usize,
    pub text_parts: usize,
}

pub struct SmtpServer {
    pub addr: SocketAddr,
    messages: Arc<Mutex<Vec<ReceivedMail>>>,
    /// (user, password) of every successful `AUTH PLAIN`.
    logins: Arc<Mutex<Vec<(String, String)>>>,
    running: Option<CancellationToken>,
}

impl SmtpServer {
    /// Starts on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut server = Self {
            addr: listener.local_addr()?,
            messages: Arc::default(),
            logins: Arc::default(),
            running: None,
        };
        server.serve(listener);
        Ok(server)
    }

    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    fn serve(&mut self, listener: TcpListener) {
        let cancel = CancellationToken::new();
        let messages = self.messages.clone();
        let logins = self.logins.clone();
        let stop = cancel.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                let messages = messages.clone();
                let logins = logins.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = session(stream, messages, logins) => {}
                    }
                });
            }
        });
        self.running = Some(cancel);
    }

    /// Stops listening and drops every open session: the server is down.
    pub async fn stop(&mut self) {
        if let Some(cancel) = self.running.take() {
            cancel.cancel();
        }
        // Let the listener task observe the cancellation and close the socket.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// The credentials clients authenticated with (`AUTH PLAIN`), in order.
    pub fn logins(&self) -> Vec<(String, String)> {
        self.logins.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The messages to `address`.
    pub fn messages_to(&self, address: &str) -> Vec<ReceivedMail> {
        self.messages()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(address)))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(cancel) = self.running.take() {
            cancel.cancel();
        }
    }
}

fn address(argument: &str) -> String {
    let start = argument.find('<').map(|i| i + 1).unwrap_or(0);
    let end = argument.rfind('>').unwrap_or(argument.len());
    argument
        .get(start..end)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn parse(from: String, to: Vec<String>, raw: Vec<u8>) -> ReceivedMail {
    let parsed = MessageParser::default().parse(&raw);
    let (subject, text, html, text_parts, html_parts) = match &parsed {
        Some(message) => (
            message.subject().unwrap_or_default().to_owned(),
            message
                .body_text(0)
                .map(|t| t.into_owned())
                .unwrap_or_default(),
            message
                .body_html(0)
                .map(|t| t.into_owned())
                .unwrap_or_default(),
            message.text_body.len(),
            message.html_body.len(),
        ),
        None => Default::default(),
    };
    ReceivedMail {
        from,
        to,
        raw,
        subject,
        text,
        html,
        html_parts,
        text_parts,
    }
}

/// The (user, password) of a SASL PLAIN response: base64 of `authzid\0user\0password`.
fn plain_credentials(response: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(response.trim())
        .ok()?;
    let mut parts = decoded.split(|b| *b == 0).skip(1);
    let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let password = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((user, password))
}

async fn session(
    stream: TcpStream,
    messages: Arc<Mutex<Vec<ReceivedMail>>>,
    logins: Arc<Mutex<Vec<(String, String)>>>,
) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 pim-test ESMTP ready\r\n").await?;
    let mut from = String::new();
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end();
        let verb = command
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-pim-test\r\n250-8BITMIME\r\n250-AUTH PLAIN\r\n250 SMTPUTF8\r\n",
            "AUTH" => {
                let mut words = command.split_whitespace().skip(1);
                let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
                let response = match words.next() {
                    Some(initial) => initial.to_owned(),
                    None => {
                        write.write_all(b"334 \r\n").await?;
                        let mut answer = String::new();
                        lines.read_line(&mut answer).await?;
                        answer
                    }
                };
                match (mechanism.as_str(), plain_credentials(&response)) {
                    ("PLAIN", Some(credentials)) => {
                        if let Ok(mut all) = logins.lock() {
                            all.push(credentials);
                        }
                        b"235 authenticated\r\n"
                    }
                    _ => b"535 authentication failed\r\n",
                }
            }
            "HELO" => b"250 pim-test\r\n",
            "MAIL" => {
                from = address(&command[4..]);
                to.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                to.push(address(&command[4..]));
                b"250 OK\r\n"
            }
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut raw = Vec::new();
                loop {
                    let mut data = String::new();
                    if lines.read_line(&mut data).await? == 0 {
                        return Ok(());
                    }
                    if data == ".\r\n" || data == ".\n" {
                        break;
                    }
                    // Dot-unstuffing (RFC 5321 §4.5.2).
                    let data = data
                        .strip_prefix('.')
                        .filter(|_| data.starts_with(".."))
                        .unwrap_or(&data);
                    raw.extend_from_slice(data.as_bytes());
                }
                let mail = parse(std::mem::take(&mut from), std::mem::take(&mut to), raw);
                if let Ok(mut all) = messages.lock() {
                    all.push(mail);
                }
                b"250 OK queued\r\n"
            }
            "RSET" => {
                from.clear();
                to.clear();
                b"250 OK\r\n"
            }
            "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 command not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}
