//! E-mail over SMTP (plain, STARTTLS or TLS, optionally authenticated), as a text and an HTML
//! part. The message was rendered when the delivery was written; sending only transmits it.

use futures_util::future::BoxFuture;
use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::authentication::Credentials,
};
use pim_config::{SmtpSettings, SmtpTls};
use serde::{Deserialize, Serialize};

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
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl EmailChannel {
    /// `password` is the opened SMTP password, if any.
    pub fn new(settings: &SmtpSettings, password: Option<String>) -> anyhow::Result<Self> {
        let mut builder = match settings.tls {
            SmtpTls::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            }
            SmtpTls::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)?
            }
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)?,
        }
        .port(settings.port)
        .timeout(Some(settings.timeout));
        if let Some(user) = &settings.username {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.unwrap_or_default()));
        }
        let from = settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("PIM_SMTP_FROM is not a mailbox: {e}"))?;
        Ok(Self {
            transport: builder.build(),
            from,
        })
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
            match self.transport.send(message).await {
                Ok(response) => Ok(u32::from(u16::from(response.code()))),
                Err(e) => Err(Failure::new(format!("SMTP: {e}"))),
            }
        })
    }
}
