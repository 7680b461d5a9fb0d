//! E-mail over SMTP (plain, STARTTLS or TLS, optionally authenticated), as a text and an HTML
//! part. The message was rendered when the delivery was written; sending only transmits it.

use std::time::Duration;

use futures_util::future::BoxFuture;
use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::{
        authentication::{Credentials, DEFAULT_MECHANISMS},
        client::{AsyncSmtpConnection, TlsParameters},
        extension::ClientId,
    },
};
use pim_config::{SmtpSettings, SmtpTls};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use super::{Channel, Failure, Outgoing, SendResult};

/// The stored form of one rendered e-mail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmailMessage {
    pub to: String,
    pub to_name: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub struct EmailChannel {
    host: String,
    port: u16,
    tls: SmtpTls,
    /// The server's name to check its certificate against (STARTTLS and TLS).
    tls_parameters: Option<TlsParameters>,
    credentials: Option<Credentials>,
    timeout: Duration,
    /// Implicit TLS goes through lettre's own transport.
    wrapped: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
}

impl EmailChannel {
    /// `password` is the opened SMTP password, if any.
    pub fn new(settings: &SmtpSettings, password: Option<String>) -> anyhow::Result<Self> {
        let credentials = settings
            .username
            .as_ref()
            .map(|user| Credentials::new(user.clone(), password.unwrap_or_default()));
        let wrapped = match settings.tls {
            SmtpTls::Tls => {
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)?
                    .port(settings.port)
                    .timeout(Some(settings.timeout));
                if let Some(credentials) = &credentials {
                    builder = builder.credentials(credentials.clone());
                }
                Some(builder.build())
            }
            SmtpTls::None | SmtpTls::StartTls => None,
        };
        let tls_parameters = match settings.tls {
            SmtpTls::None => None,
            SmtpTls::StartTls | SmtpTls::Tls => Some(TlsParameters::new(settings.host.clone())?),
        };
        let from = settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("PIM_SMTP_FROM is not a mailbox: {e}"))?;
        Ok(Self {
            host: settings.host.clone(),
            port: settings.port,
            tls: settings.tls,
            tls_parameters,
            credentials,
            timeout: settings.timeout,
            wrapped,
            from,
        })
    }

    /// One SMTP session for one message, plain or STARTTLS, over a socket of our own with
    /// `TCP_NODELAY`: lettre writes a message's body and its final dot in two writes, and with
    /// Nagle's algorithm the dot waits for the server's delayed ACK of the body, about 40 ms
    /// per message, which capped one endpoint's four sessions near 100 messages a second.
    async fn send_direct(&self, message: &Message) -> Result<u16, Failure> {
        let smtp = |e: lettre::transport::smtp::Error| Failure::new(format!("SMTP: {e}"));
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| Failure::new(format!("SMTP: connecting to {}: {e}", self.host)))?;
        // Without it only the latency suffers; the message still goes.
        let _ = stream.set_nodelay(true);
        let hello = ClientId::default();
        let mut connection = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello)
            .await
            .map_err(smtp)?;
        if let (SmtpTls::StartTls, Some(tls)) = (self.tls, &self.tls_parameters) {
            connection
                .starttls(tls.clone(), &hello)
                .await
                .map_err(smtp)?;
        }
        if let Some(credentials) = &self.credentials {
            connection
                .auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(smtp)?;
        }
        let response = connection
            .send(message.envelope(), &message.formatted())
            .await
            .map_err(smtp)?;
        // The message is accepted; a failed goodbye changes nothing.
        let _ = connection.quit().await;
        Ok(u16::from(response.code()))
    }

    fn message(&self, email: &EmailMessage) -> Result<Message, Failure> {
        let to = Mailbox::new(
            (!email.to_name.is_empty()).then(|| email.to_name.clone()),
            email
                .to
                .parse()
                .map_err(|e| Failure::permanent(format!("bad address {:?}: {e}", email.to)))?,
        );
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&email.subject)
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|e| Failure::new(format!("building the message: {e}")))
    }
}

impl Channel for EmailChannel {
    fn name(&self) -> &'static str {
        "email"
    }

    fn send<'a>(&'a self, outgoing: &'a Outgoing) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            let email: EmailMessage = serde_json::from_slice(&outgoing.body)
                .map_err(|e| Failure::permanent(format!("stored message unreadable: {e}")))?;
            let message = self.message(&email)?;
            let code = match &self.wrapped {
                Some(transport) => transport
                    .send(message)
                    .await
                    .map(|response| u16::from(response.code()))
                    .map_err(|e| Failure::new(format!("SMTP: {e}")))?,
                None => tokio::time::timeout(self.timeout, self.send_direct(&message))
                    .await
                    .map_err(|_| {
                        Failure::new(format!("SMTP: no answer within {:?}", self.timeout))
                    })??,
            };
            Ok(u32::from(code))
        })
    }
}
