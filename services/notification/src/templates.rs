//! E-mail templates: a text and an HTML template per event type, kept in `templates/` and
//! compiled into the binary, rendered with minijinja. Templates ending in `.html` autoescape
//! every value, so a justification or a name can never inject markup. An operator may replace
//! any of them with a file of the same name in `PIM_NOTIFICATION_TEMPLATE_DIR`.

use std::path::Path;

use minijinja::Environment;
use serde::Serialize;

use crate::notice::Facts;

macro_rules! builtin {
    ($($name:literal),* $(,)?) => {
        &[$(
            (concat!($name, ".txt"), include_str!(concat!("../templates/", $name, ".txt"))),
            (concat!($name, ".html"), include_str!(concat!("../templates/", $name, ".html"))),
        )*]
    };
}

const BUILTIN: &[(&str, &str)] = builtin!(
    "base",
    "activation.request_granted",
    "approval.case_opened",
    "approval.case_escalated",
    "approval.case_decided",
    "approval.case_timed_out",
    "approval.case_canceled",
    "assignment.schedule_created",
    "assignment.schedule_updated",
    "assignment.schedule_removed",
    "assignment.schedule_expiring",
    "assignment.schedule_expired",
    "access_denied",
    "audit.alert_raised",
    "audit.alert_resolved",
    "audit.alert_dismissed",
    "audit.alert_configuration_updated",
    "digest",
);

/// One rendered e-mail.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub struct Templates {
    env: Environment<'static>,
}

#[derive(Serialize)]
struct Context<'a> {
    #[serde(flatten)]
    facts: &'a Facts,
    recipient_name: &'a str,
}

impl Templates {
    /// The built-in templates, replaced by any same-named file in `dir`.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        for (name, source) in BUILTIN {
            env.add_template(name, source)?;
        }
        if let Some(dir) = dir {
            for (name, _) in BUILTIN {
                let path = dir.join(name);
                if path.exists() {
                    let source = std::fs::read_to_string(&path)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    env.add_template_owned(name.to_string(), source)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    tracing::info!(template = name, "using an operator's template");
                }
            }
        }
        Ok(Self { env })
    }

    /// The template family of an event type; every `<producer>.access_denied` shares one.
    pub fn family(event_type: &str) -> &str {
        if event_type.ends_with(".access_denied") {
            "access_denied"
        } else {
            event_type
        }
    }

    pub fn has(&self, event_type: &str) -> bool {
        self.env
            .get_template(&format!("{}.txt", Self::family(event_type)))
            .is_ok()
    }

    pub fn render(&self, facts: &Facts, recipient_name: &str) -> anyhow::Result<Rendered> {
        let context = Context {
            facts,
            recipient_name,
        };
        self.render_family(Self::family(&facts.event_type), &context)
    }

    /// Renders the `family` templates (`<family>.txt` with a `subject` block, `<family>.html`).
    pub fn render_family(
        &self,
        family: &str,
        context: &impl Serialize,
    ) -> anyhow::Result<Rendered> {
        let text_template = self.env.get_template(&format!("{family}.txt"))?;
        // `render_block` needs the evaluated state; minijinja has no other way to it yet.
        #[allow(deprecated)]
        let subject = text_template
            .eval_to_state(context)?
            .render_block("subject")?;
        // One line, whatever a name contains: no header injection.
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        // The subject block is defined but not shown in the body (`{% if false %}` in base.txt).
        let text = text_template.render(context)?.trim_start().to_owned();
        let html = self
            .env
            .get_template(&format!("{family}.html"))?
            .render(context)?;
        Ok(Rendered {
            subject: format!("PIM: {subject}"),
            text,
            html,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            event_type: "activation.request_granted".into(),
            role_name: "Security Administrator".into(),
            scope: "/".into(),
            principal_name: "Alice <a@x>".into(),
            justification: "<script>alert(1)</script> & more".into(),
            ..Facts::default()
        }
    }

    #[test]
    fn html_escapes_every_value_and_text_keeps_it() {
        let rendered = Templates::load(None)
            .unwrap()
            .render(&facts(), "Bob")
            .unwrap();
        assert!(
            rendered.subject.starts_with("PIM: "),
            "{}",
            rendered.subject
        );
        assert!(!rendered.html.contains("<script>"), "{}", rendered.html);
        assert!(
            rendered
                .html
                .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; more")
        );
        assert!(rendered.text.contains("<script>alert(1)</script> & more"));
        assert!(rendered.text.starts_with("Hello Bob,"), "{}", rendered.text);
    }

    #[test]
    fn every_builtin_event_type_renders() {
        let templates = Templates::load(None).unwrap();
        for (name, _) in BUILTIN {
            let Some(family) = name.strip_suffix(".txt") else {
                continue;
            };
            if family == "base" || family == "digest" {
                continue;
            }
            let event_type = if family == "access_denied" {
                "assignment.access_denied".to_owned()
            } else {
                family.to_owned()
            };
            let rendered = templates
                .render(
                    &Facts {
                        event_type,
                        ..facts()
                    },
                    "Bob",
                )
                .unwrap();
            assert!(
                rendered.subject.len() > 10,
                "{family}: {}",
                rendered.subject
            );
        }
    }

    #[test]
    fn an_operator_directory_replaces_a_template() {
        let dir = std::env::temp_dir().join(format!("pim-templates-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("activation.request_granted.txt"),
            "{% block subject %}Custom {{ role_name }}{% endblock %}\nBody",
        )
        .unwrap();
        let rendered = Templates::load(Some(&dir))
            .unwrap()
            .render(&facts(), "Bob")
            .unwrap();
        assert_eq!(rendered.subject, "PIM: Custom Security Administrator");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
