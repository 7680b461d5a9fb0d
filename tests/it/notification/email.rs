//! E-mail: a text and an HTML part with a `PIM:` subject, every request value escaped in
//! HTML, and nothing lost while the SMTP server is down.

use pim_proto::notification::v1::{Channel, DeliveryStatus};
use pim_testkit::ADMIN;

use super::{advance, attempted, email_of, past_retry, settled, world};
use crate::{
    activation::{alice_under, guide_policy, submit, ticketed},
    support::make_eligible,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_reaches_the_admins_and_the_requestor_with_the_justification_escaped_in_html()
-> anyhow::Result<()> {
    let w = world(&[]).await?;
    alice_under(&w.h, guide_policy(None)).await?;
    let justification = "<script>alert('pwned')</script> & INC-1";
    submit(
        &w.h,
        pim_proto::activation::v1::SubmitRequest {
            justification: justification.into(),
            ..ticketed("now-1", 60)
        },
    )
    .await?;

    let delivered = settled(
        &w.h,
        "activation.request_granted",
        2,
        DeliveryStatus::Delivered,
    )
    .await?;
    let mut recipients: Vec<_> = delivered.iter().map(|d| d.recipient.clone()).collect();
    recipients.sort();
    assert_eq!(recipients, [email_of(ADMIN), email_of("alice")]);
    assert!(delivered.iter().all(|d| d.channel() == Channel::Email));

    for who in [ADMIN, "alice"] {
        let mails: Vec<_> = w
            .smtp
            .messages_to(&email_of(who))
            .into_iter()
            .filter(|m| m.subject.contains("activated"))
            .collect();
        assert_eq!(mails.len(), 1, "one activation e-mail to {who}");
        let mail = &mails[0];
        assert!(mail.subject.starts_with("PIM: "), "{}", mail.subject);
        assert_eq!(
            (mail.text_parts, mail.html_parts),
            (1, 1),
            "a text and an HTML part"
        );
        assert_eq!(mail.from, "pim@example.test");
        // The HTML part escapes what the requestor wrote; the text part keeps it as written.
        assert!(!mail.html.contains("<script>"), "{}", mail.html);
        assert!(mail.html.contains("&lt;script&gt;alert("), "{}", mail.html);
        assert!(mail.html.contains("&amp; INC-1"), "{}", mail.html);
        assert!(mail.text.contains(justification), "{}", mail.text);
        // What happened, to which role at what scope, who, why, and what to do next.
        for fact in [
            "Security Administrator",
            "/administrativeUnits/au-1",
            "alice (display)",
            "jira OPS-7",
            "What to do next",
        ] {
            assert!(
                mail.text.contains(fact),
                "{fact} missing from {}",
                mail.text
            );
            // minijinja's HTML escaping also writes `/` as `&#x2f;`, which renders as `/`.
            let escaped = fact.replace('/', "&#x2f;");
            assert!(
                mail.html.contains(&escaped),
                "{fact} missing from {}",
                mail.html
            );
        }
    }
    w.h.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_smtp_server_down_nothing_is_lost_and_delivery_completes_when_it_returns()
-> anyhow::Result<()> {
    let mut w = world(&[]).await?;
    w.smtp.stop().await;
    make_eligible(&w.h, "alice", "alice-eligible").await?;

    let pending = settled(
        &w.h,
        "assignment.schedule_created",
        2,
        DeliveryStatus::Pending,
    )
    .await?;
    for delivery in &pending {
        let tried = attempted(&w.h, &delivery.id, 1).await?;
        assert!(!tried.attempts[0].succeeded);
        assert!(tried.last_error.contains("SMTP"), "{}", tried.last_error);
        assert_eq!(tried.status(), DeliveryStatus::Pending, "kept for a retry");
    }
    assert!(w.smtp.messages().is_empty());

    w.smtp.restart().await?;
    advance(&w.h, past_retry(1));
    let delivered = settled(
        &w.h,
        "assignment.schedule_created",
        2,
        DeliveryStatus::Delivered,
    )
    .await?;
    assert!(delivered.iter().all(|d| d.attempts.len() == 2));
    let messages = w.smtp.messages();
    assert_eq!(messages.len(), 2, "each recipient exactly once");
    assert_eq!(w.smtp.messages_to(&email_of("alice")).len(), 1);
    assert_eq!(w.smtp.messages_to(&email_of(ADMIN)).len(), 1);
    w.h.stop().await;
    Ok(())
}
