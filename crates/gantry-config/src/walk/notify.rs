//! Decoding `[[notify]]`: the channels that hear about deployments.

use super::{describe, join, Val, Walker};
use crate::{Credential, EmailChannel, NotifyChannel, NotifyTarget, SmtpTls};
use gantry_core::notify::{ChannelKind, NoticeKind};
use gantry_core::EnvName;
use toml::de::DeValue;

pub(crate) const NOTIFY_KEYS: &[&str] = &[
    "name",
    "kind",
    "events",
    "environments",
    "url",
    "routing_key",
    "secret",
    "smtp",
    "from",
    "to",
];
pub(crate) const SMTP_KEYS: &[&str] = &["host", "port", "tls", "username", "password"];

const KINDS: &[&str] = &["slack", "pagerduty", "email", "webhook"];
const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

pub(super) fn decode_notify(
    w: &mut Walker<'_>,
    v: &Val<'_>,
    env_names: &[String],
) -> Option<Vec<NotifyChannel>> {
    let DeValue::Array(items) = v.get_ref() else {
        w.error(
            v.span(),
            "notify",
            format!(
                "expected an array of tables ([[notify]]) with name, kind and where to send, found {}",
                describe(v.get_ref())
            ),
        );
        return None;
    };
    let mut out: Vec<NotifyChannel> = Vec::new();
    let mut ok = true;
    for (n, item) in items.iter().enumerate() {
        let path = format!("notify[{n}]");
        match decode_channel(w, item, &path, env_names) {
            Some(c) if out.iter().any(|o| o.name == c.name) => {
                w.error(
                    item.span(),
                    &join(&path, "name"),
                    format!("channel name {:?} is used twice", c.name),
                );
                ok = false;
            }
            Some(c) => out.push(c),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A value that is a secret: `{ env = ".." }` / `{ file = ".." }`, or a
/// plain string (warned about: it ends up in the config file).
fn credential(w: &mut Walker<'_>, v: &Val<'_>, path: &str, secretive: bool) -> Option<Credential> {
    match v.get_ref() {
        DeValue::String(s) => {
            if secretive {
                w.warn(
                    v.span(),
                    path,
                    "a secret written in the config; reference it as { env = \"VARIABLE\" } or { file = \"/path\" } instead",
                );
            }
            Some(Credential::Plain(s.to_string()))
        }
        _ => w.secret_ref(v, path).map(Credential::Secret),
    }
}

fn required<'a, 'i>(
    w: &mut Walker<'_>,
    t: &'a toml::de::DeTable<'i>,
    v: &Val<'_>,
    path: &str,
    key: &str,
    kind: &str,
) -> Option<&'a Val<'i>> {
    let found = t.get(key);
    if found.is_none() {
        w.error(
            v.span(),
            &join(path, key),
            format!("a {kind} channel needs {key:?}"),
        );
    }
    found
}

fn decode_channel(
    w: &mut Walker<'_>,
    v: &Val<'_>,
    path: &str,
    env_names: &[String],
) -> Option<NotifyChannel> {
    let t = w.table(v, path)?;
    w.check_keys(t, path, NOTIFY_KEYS);
    let name = super::required(w, t, v, path, "name", |w, v, p| w.non_empty_string(v, p));
    let kind = match t.get("kind") {
        Some(k) => {
            let p = join(path, "kind");
            match w.string(k, &p).as_deref() {
                Some("slack") => Some(ChannelKind::Slack),
                Some("pagerduty") => Some(ChannelKind::Pagerduty),
                Some("email") => Some(ChannelKind::Email),
                Some("webhook") => Some(ChannelKind::Webhook),
                Some(other) => {
                    w.error(
                        k.span(),
                        &p,
                        format!(
                            "unknown channel kind {other:?}; expected one of: {}",
                            KINDS.join(", ")
                        ),
                    );
                    None
                }
                None => None,
            }
        }
        None => {
            w.error(
                v.span(),
                &join(path, "kind"),
                format!("missing required key \"kind\" ({})", KINDS.join(", ")),
            );
            None
        }
    }?;
    let events = match t.get("events") {
        Some(e) => {
            let p = join(path, "events");
            let names = w.string_list(e, &p)?;
            let mut out = Vec::new();
            for n in names {
                match NoticeKind::parse(&n) {
                    Ok(k) => out.push(k),
                    Err(msg) => {
                        w.error(e.span(), &p, msg);
                        return None;
                    }
                }
            }
            Some(out)
        }
        None => Some(NoticeKind::standard_for(kind)),
    };
    let environments = match t.get("environments") {
        Some(e) => {
            let p = join(path, "environments");
            let names = w.string_list(e, &p)?;
            let mut out = Vec::new();
            for n in names {
                if !env_names.contains(&n) {
                    w.error(
                        e.span(),
                        &p,
                        format!(
                            "{n:?} is not an environment; known: {}",
                            env_names.join(", ")
                        ),
                    );
                    return None;
                }
                out.push(n.parse::<EnvName>().ok()?);
            }
            Some(out)
        }
        None => Some(Vec::new()),
    };
    let target = match kind {
        ChannelKind::Slack => {
            let u = required(w, t, v, path, "url", "slack")?;
            credential(w, u, &join(path, "url"), false).map(|url| NotifyTarget::Slack { url })
        }
        ChannelKind::Webhook => {
            let u = required(w, t, v, path, "url", "webhook")?;
            let url = w.non_empty_string(u, &join(path, "url"));
            let s = required(
                w,
                t,
                v,
                path,
                "secret",
                "webhook (its payloads are signed with HMAC-SHA256)",
            )?;
            let secret = credential(w, s, &join(path, "secret"), true);
            Some(NotifyTarget::Webhook {
                url: url?,
                secret: secret?,
            })
        }
        ChannelKind::Pagerduty => {
            let k = required(w, t, v, path, "routing_key", "pagerduty")?;
            let routing_key = credential(w, k, &join(path, "routing_key"), true);
            let url = match t.get("url") {
                Some(u) => w.non_empty_string(u, &join(path, "url")),
                None => Some(PAGERDUTY_URL.to_owned()),
            };
            Some(NotifyTarget::Pagerduty {
                routing_key: routing_key?,
                url: url?,
            })
        }
        ChannelKind::Email => decode_email(w, t, v, path).map(NotifyTarget::Email),
    };
    Some(NotifyChannel {
        name: name?,
        kind,
        events: events?,
        environments: environments?,
        target: target?,
    })
}

fn decode_email(
    w: &mut Walker<'_>,
    t: &toml::de::DeTable<'_>,
    v: &Val<'_>,
    path: &str,
) -> Option<EmailChannel> {
    let smtp_v = required(w, t, v, path, "smtp", "email")?;
    let sp = join(path, "smtp");
    let st = w.table(smtp_v, &sp)?;
    w.check_keys(st, &sp, SMTP_KEYS);
    let host = super::required(w, st, smtp_v, &sp, "host", |w, v, p| {
        w.non_empty_string(v, p)
    });
    let tls = match st.get("tls") {
        Some(tv) => {
            let p = join(&sp, "tls");
            match w.string(tv, &p).as_deref() {
                Some("none") => Some(SmtpTls::None),
                Some("starttls") => Some(SmtpTls::StartTls),
                Some("tls") => Some(SmtpTls::Tls),
                Some(other) => {
                    w.error(
                        tv.span(),
                        &p,
                        format!("unknown tls mode {other:?}; expected none, starttls or tls"),
                    );
                    None
                }
                None => None,
            }
        }
        None => Some(SmtpTls::StartTls),
    };
    let port = match st.get("port") {
        Some(p) => w.count(p, &join(&sp, "port"), 1, 65_535).map(|p| p as u16),
        None => Some(match tls {
            Some(SmtpTls::Tls) => 465,
            Some(SmtpTls::None) => 25,
            _ => 587,
        }),
    };
    let username = match st.get("username") {
        Some(u) => w.non_empty_string(u, &join(&sp, "username")).map(Some),
        None => Some(None),
    };
    let password = match st.get("password") {
        Some(pv) => credential(w, pv, &join(&sp, "password"), true).map(Some),
        None => Some(None),
    };
    let from = required(w, t, v, path, "from", "email")
        .and_then(|f| w.non_empty_string(f, &join(path, "from")));
    let to = required(w, t, v, path, "to", "email").and_then(|tv| {
        let list = w.string_list(tv, &join(path, "to"))?;
        if list.is_empty() {
            w.error(tv.span(), &join(path, "to"), "give at least one recipient");
            return None;
        }
        Some(list)
    });
    for addr in from.iter().chain(to.iter().flatten()) {
        if !addr.contains('@') {
            w.error(v.span(), path, format!("{addr:?} is not an email address"));
            return None;
        }
    }
    Some(EmailChannel {
        host: host?,
        port: port?,
        tls: tls?,
        username: username?,
        password: password?,
        from: from?,
        to: to?,
    })
}
