//! Delivering notices: Slack incoming webhooks, PagerDuty Events API v2,
//! email over SMTP, and webhooks signed with HMAC-SHA256.
//!
//! A notice is queued in the store (one delivery per channel) right after
//! the transition that caused it is recorded; a dispatcher task sends what
//! is due, retrying with exponential backoff, and records every outcome. It
//! runs apart from the deployments, so a slow or dead channel never holds
//! up a deployment or a rollback, and a restart resumes what was pending.
//! This file sends one delivery; the queueing and the dispatcher task are
//! the controller's (`controller/notices.rs`).

use crate::clock::now_ms;
use gantry_config::{Credential, EmailChannel, NotifyChannel, NotifyTarget, SmtpTls};
use gantry_core::notify::{Notice, NoticeKind};
use gantry_core::Millis;
use gantry_store::Delivery;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::time::Duration;

/// Attempts before a delivery is given up: after 1, 2, 4, 8 and 16 s.
pub const MAX_ATTEMPTS: u32 = 6;
/// How long one attempt may take.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// A delivery being attempted is leased for this long, so that it is not
/// sent twice; an attempt cut short by a crash is retried after it.
pub(crate) const LEASE_MS: Millis = 60_000;

pub(crate) fn credential(name: &str, c: &Credential) -> Result<String, String> {
    match c {
        Credential::Plain(s) => Ok(s.clone()),
        Credential::Secret(r) => crate::secret_file::resolve(name, r),
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>"): binding the
/// timestamp lets a receiver refuse replays.
pub fn webhook_signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Text made safe for Slack's `mrkdwn`: `&`, `<` and `>` escaped as Slack
/// asks, so a reason or a name cannot ping `<!channel>`, mention a user or
/// smuggle a link.
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// The Slack message: a readable line and the facts under it. Every piece
/// of text from a notice is escaped; the markup around it is Gantry's own.
pub fn slack_payload(service: &str, n: &Notice) -> serde_json::Value {
    let icon = match n.kind {
        NoticeKind::Complete => ":white_check_mark:",
        NoticeKind::Failed => ":x:",
        NoticeKind::RollbackInitiated => ":rewind:",
        NoticeKind::ApprovalRequested => ":raising_hand:",
        NoticeKind::Starting => ":rocket:",
        NoticeKind::Scheduled => ":calendar:",
        NoticeKind::ErrorsLogged => ":warning:",
        NoticeKind::DriftDetected => ":mag:",
    };
    let headline = slack_escape(&n.headline(service));
    let mut facts = vec![
        format!("*Environment:* {}", slack_escape(&n.env)),
        format!("*Version:* {}", slack_escape(&n.version)),
        format!("*Requested by:* {}", slack_escape(&n.requested_by)),
    ];
    if let Some(p) = &n.previous_version {
        facts.push(format!("*Previous:* {}", slack_escape(p)));
    }
    if let Some(r) = &n.reason {
        facts.push(format!("*Reason:* {}", slack_escape(r)));
    }
    json!({
        "text": format!("{icon} {headline}"),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("{icon} *{headline}*")}},
            {"type": "section", "text": {"type": "mrkdwn", "text": facts.join("\n")}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("Gantry · deployment {} · `gantry log {}`", n.deployment, n.deployment)}]}
        ]
    })
}

/// The PagerDuty event: a rollback or a failure triggers an incident keyed
/// by the deployment; the rollback's completion (service restored) resolves it.
pub fn pagerduty_payload(
    service: &str,
    routing_key: &str,
    n: &Notice,
) -> Option<serde_json::Value> {
    let dedup_key = format!("gantry/{service}/{}/deployment-{}", n.env, n.deployment);
    let (action, severity) = match (n.kind, n.phase.as_str()) {
        (NoticeKind::RollbackInitiated, _) => ("trigger", "error"),
        (NoticeKind::ErrorsLogged, _) => ("trigger", "warning"),
        (NoticeKind::Failed, "rolled_back") => ("resolve", "info"),
        (NoticeKind::Failed, _) => ("trigger", "critical"),
        _ => return None,
    };
    if action == "resolve" {
        return Some(json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key,
        }));
    }
    let mut summary = n.headline(service);
    summary.truncate(1024);
    Some(json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key,
        "payload": {
            "summary": summary,
            "source": format!("gantry/{service}/{}", n.env),
            "severity": severity,
            "component": service,
            "group": n.env,
            "class": "deployment",
            "custom_details": n,
        }
    }))
}

/// The email: subject and plain-text body.
pub fn email_text(service: &str, n: &Notice) -> (String, String) {
    let subject = format!("[gantry] {}", n.headline(service));
    let mut body = format!("{}\n\n", n.headline(service));
    body.push_str(&format!(
        "Service:      {service}\nEnvironment:  {}\nVersion:      {}\n",
        n.env, n.version
    ));
    if let Some(p) = &n.previous_version {
        body.push_str(&format!("Previous:     {p}\n"));
    }
    body.push_str(&format!(
        "Deployment:   {}\nRequested by: {}\nState:        {}\n",
        n.deployment, n.requested_by, n.phase
    ));
    if let Some(r) = &n.reason {
        body.push_str(&format!("Reason:       {r}\n"));
    }
    if let Some(at) = n.start_after {
        body.push_str(&format!(
            "Not before:   {}\n",
            gantry_core::governance::rfc3339(at)
        ));
    }
    body.push_str(&format!("\nThe full log: gantry log {}\n", n.deployment));
    (subject, body)
}

/// One attempt at a delivery. Whatever goes wrong, the error text is
/// passed through the channel's [`Redactor`] first: it is stored, shown
/// to viewers and logged, and a receiver may echo what it was sent.
pub(crate) async fn send(
    http: &reqwest::Client,
    service: &str,
    channel: &NotifyChannel,
    d: &Delivery,
) -> Result<(), String> {
    let mut secrets = Redactor::default();
    send_redacting(http, service, channel, d, &mut secrets)
        .await
        .map_err(|e| secrets.clean(&e))
}

async fn send_redacting(
    http: &reqwest::Client,
    service: &str,
    channel: &NotifyChannel,
    d: &Delivery,
    secrets: &mut Redactor,
) -> Result<(), String> {
    let n = &d.notice;
    match &channel.target {
        NotifyTarget::Slack { url } => {
            let url = credential(&format!("notify {} url", channel.name), url)?;
            // The whole address of a Slack webhook is its secret.
            secrets.add_url(&url, true);
            post_json(http, &url, &slack_payload(service, n)).await
        }
        NotifyTarget::Pagerduty { routing_key, url } => {
            let key = credential(&format!("notify {} routing_key", channel.name), routing_key)?;
            secrets.add(&key);
            secrets.add_url(url, false);
            match pagerduty_payload(service, &key, n) {
                Some(body) => post_json(http, url, &body).await,
                None => Ok(()), // Nothing PagerDuty acts on.
            }
        }
        NotifyTarget::Webhook { url, secret } => {
            let secret = credential(&format!("notify {} secret", channel.name), secret)?;
            secrets.add(&secret);
            secrets.add_url(url, false);
            let body = serde_json::to_vec(&json!({
                "service": service,
                "event": n.kind,
                "headline": n.headline(service),
                "delivery": d.id,
                "notice": n,
            }))
            .map_err(|e| e.to_string())?;
            let timestamp = now_ms() / 1000;
            let resp = http
                .post(url)
                .header("content-type", "application/json")
                .header("x-gantry-event", n.kind.as_str())
                .header("x-gantry-delivery", d.id.to_string())
                .header("x-gantry-timestamp", timestamp.to_string())
                .header(
                    "x-gantry-signature",
                    webhook_signature(secret.as_bytes(), timestamp, &body),
                )
                .body(body)
                .send()
                .await
                .map_err(request_error)?;
            answered(resp).await
        }
        NotifyTarget::Email(e) => send_email(&channel.name, e, service, n, secrets).await,
    }
}

async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<(), String> {
    let resp = http
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(request_error)?;
    answered(resp).await
}

/// A receiver's answer: success, or its status and the start of its body.
async fn answered(resp: reqwest::Response) -> Result<(), String> {
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    Err(format!(
        "answered {status}: {}",
        text.chars().take(200).collect::<String>()
    ))
}

/// A request that got no answer, described by its causes without the URL
/// (reqwest puts the URL in its errors, and a webhook URL may be a secret).
fn request_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = format!("POST failed: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// The secrets of one delivery attempt, to be cut out of any error text
/// before it is stored, shown or logged.
#[derive(Default)]
struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    const MASK: &'static str = "[redacted]";

    fn add(&mut self, secret: &str) {
        if !secret.is_empty() && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_owned());
        }
    }

    /// A URL's secret parts: its password and query always, and when the
    /// whole address is the secret (Slack), the URL and its path too.
    fn add_url(&mut self, url: &str, whole: bool) {
        if whole {
            self.add(url);
        }
        let Ok(parsed) = reqwest::Url::parse(url) else {
            // Unparsable: nothing to pick apart; the request fails before it leaves.
            self.add(url);
            return;
        };
        if whole {
            self.add(parsed.as_str());
            if parsed.path() != "/" {
                self.add(parsed.path());
            }
        }
        if let Some(p) = parsed.password() {
            self.add(p);
        }
        if let Some(q) = parsed.query() {
            self.add(q);
        }
    }

    /// `text` with every secret replaced by `[redacted]`, longest first so
    /// that a secret containing another is cut whole.
    fn clean(&self, text: &str) -> String {
        let mut secrets: Vec<&String> = self.secrets.iter().collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut out = text.to_owned();
        for s in secrets {
            out = out.replace(s.as_str(), Self::MASK);
        }
        out
    }
}

async fn send_email(
    channel: &str,
    e: &EmailChannel,
    service: &str,
    n: &Notice,
    secrets: &mut Redactor,
) -> Result<(), String> {
    use base64::Engine as _;
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let (subject, body) = email_text(service, n);
    let mut message = Message::builder()
        .from(
            e.from
                .parse()
                .map_err(|x| format!("from {:?}: {x}", e.from))?,
        )
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for to in &e.to {
        message = message.to(to.parse().map_err(|x| format!("to {to:?}: {x}"))?);
    }
    let message = message.body(body).map_err(|x| x.to_string())?;
    let builder = match e.tls {
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&e.host),
        SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&e.host)
            .map_err(|x| x.to_string())?,
        SmtpTls::Tls => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&e.host).map_err(|x| x.to_string())?
        }
    };
    let mut builder = builder.port(e.port).timeout(Some(ATTEMPT_TIMEOUT));
    if let Some(user) = &e.username {
        let password = match &e.password {
            Some(p) => credential(&format!("notify {channel} password"), p)?,
            None => String::new(),
        };
        // The password, and the forms AUTH PLAIN and LOGIN send it in,
        // should a server quote them back in its refusal.
        let b64 = base64::engine::general_purpose::STANDARD;
        secrets.add(&password);
        if !password.is_empty() {
            secrets.add(&b64.encode(&password));
            secrets.add(&b64.encode(format!("\0{user}\0{password}")));
        }
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    builder
        .build()
        .send(message)
        .await
        .map(drop)
        .map_err(|x| format!("SMTP {}:{}: {x}", e.host, e.port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_core::DeploymentKind;

    fn notice(kind: NoticeKind, phase: &str) -> Notice {
        Notice {
            kind,
            deployment: 12,
            env: "production".into(),
            version: "1.3.0".into(),
            previous_version: Some("1.2.0".into()),
            deployment_kind: DeploymentKind::Deploy,
            requested_by: "alice".into(),
            phase: phase.into(),
            reason: Some("error rate 5.0% above 1%".into()),
            start_after: None,
            at: 0,
        }
    }

    #[test]
    fn pagerduty_triggers_on_rollback_and_resolves_on_recovery_per_deployment() {
        let trigger = pagerduty_payload(
            "shop",
            "key",
            &notice(NoticeKind::RollbackInitiated, "rolling_back"),
        )
        .unwrap();
        assert_eq!(trigger["event_action"], "trigger");
        assert_eq!(trigger["dedup_key"], "gantry/shop/production/deployment-12");
        assert_eq!(trigger["payload"]["severity"], "error");
        assert_eq!(trigger["payload"]["source"], "gantry/shop/production");
        assert!(trigger["payload"]["summary"]
            .as_str()
            .unwrap()
            .contains("rollback initiated"));
        let resolve =
            pagerduty_payload("shop", "key", &notice(NoticeKind::Failed, "rolled_back")).unwrap();
        assert_eq!(resolve["event_action"], "resolve");
        assert_eq!(resolve["dedup_key"], trigger["dedup_key"]);
        assert!(resolve.get("payload").is_none());
        let failed =
            pagerduty_payload("shop", "key", &notice(NoticeKind::Failed, "failed")).unwrap();
        assert_eq!(failed["payload"]["severity"], "critical");
        assert!(
            pagerduty_payload("shop", "key", &notice(NoticeKind::Starting, "preparing")).is_none()
        );
    }

    #[test]
    fn slack_messages_are_readable() {
        let p = slack_payload("shop", &notice(NoticeKind::Failed, "rolled_back"));
        assert_eq!(
            p["text"],
            ":x: shop 1.3.0 to production rolled back (deployment 12): error rate 5.0% above 1%"
        );
        assert_eq!(p["blocks"][0]["type"], "section");
        assert!(p["blocks"][1]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("*Previous:* 1.2.0"));
    }

    #[test]
    fn slack_text_cannot_mention_or_link() {
        let mut n = notice(NoticeKind::Failed, "rolled_back");
        n.reason = Some("<!channel> see <http://evil|here> & more".into());
        n.requested_by = "<@U123>".into();
        let p = slack_payload("shop", &n).to_string();
        assert!(!p.contains('<') && !p.contains('>'), "{p}");
        assert!(p.contains("&lt;!channel&gt; see &lt;http://evil|here&gt; &amp; more"));
        assert!(p.contains("&lt;@U123&gt;"));
        assert_eq!(slack_escape("a&b<c>d"), "a&amp;b&lt;c&gt;d");
    }

    #[test]
    fn redaction_cuts_every_form_of_a_secret() {
        let mut r = Redactor::default();
        r.add_url("https://hooks.slack.com/services/T0/B0/XYZ", true);
        r.add_url("https://user:pw@example.com/hook?token=abc", false);
        r.add("");
        let text = "POST https://hooks.slack.com/services/T0/B0/XYZ failed; \
                    path /services/T0/B0/XYZ; pw and token=abc";
        let cleaned = r.clean(text);
        assert!(
            !cleaned.contains("XYZ") && !cleaned.contains("abc"),
            "{cleaned}"
        );
        assert!(!cleaned.contains(":pw") && cleaned.contains("[redacted]"));
        // An empty secret redacts nothing.
        assert_eq!(r.clean("plain"), "plain");
    }

    #[test]
    fn webhook_signatures_bind_the_timestamp() {
        let a = webhook_signature(b"k", 1, b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
        assert_ne!(a, webhook_signature(b"k", 2, b"{}"));
        assert_ne!(a, webhook_signature(b"j", 1, b"{}"));
    }
}
