//! Decoding `[[notify]]`: the channels that hear about deployments.

use super::{describe, join, Val, Walker};
use crate::{Credential, EmailChannel, NotifyChannel, NotifyTarget, SmtpTls};
use gantry_core::notify::{ChannelKind, NoticeKind};
use gantry_core::EnvName;
use std::net::IpAddr;
use toml::de::DeValue;

const KINDS: &[&str] = &["slack", "pagerduty", "email", "webhook"];
const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

pub(super) fn decode_notify(
    w: &mut Walker<'_>,
    v: &Val<'_>,
    env_names: Option<&[String]>,
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
pub(super) fn credential(
    w: &mut Walker<'_>,
    v: &Val<'_>,
    path: &str,
    secretive: bool,
) -> Option<Credential> {
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
    env_names: Option<&[String]>,
) -> Option<NotifyChannel> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::NotifySection>(t, path);
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
                // Unknown environments (the table is broken): already an error.
                let env_names = env_names?;
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
            let p = join(path, "url");
            match u.get_ref() {
                DeValue::String(_) => http_url(w, u, &p).map(Credential::Plain),
                _ => credential(w, u, &p, false),
            }
            .map(|url| NotifyTarget::Slack { url })
        }
        ChannelKind::Webhook => {
            let u = required(w, t, v, path, "url", "webhook")?;
            let url = http_url(w, u, &join(path, "url"));
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
                Some(u) => http_url(w, u, &join(path, "url")),
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
    w.check_keys::<crate::schema::SmtpSection>(st, &sp);
    let host = super::required(w, st, smtp_v, &sp, "host", |w, v, p| {
        let host = w.non_empty_string(v, p)?;
        let ok = host.parse::<IpAddr>().is_ok()
            || (!host.contains(|c: char| c.is_control() || c.is_whitespace() || c == ':')
                && url::Host::parse(&host).is_ok());
        if !ok {
            w.error(
                v.span(),
                p,
                format!("{host:?} is not a host name or IP address; expected e.g. \"smtp.example.com\" or \"127.0.0.1\""),
            );
        }
        ok.then_some(host)
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
        Some(p) => w
            .count::<crate::schema::SmtpSection>(p, &sp, "port")
            .map(|p| p as u16),
        None => Some(match tls {
            Some(SmtpTls::Tls) => 465,
            Some(SmtpTls::None) => 25,
            _ => 587,
        }),
    };
    let username = match st.get("username") {
        Some(u) => {
            let p = join(&sp, "username");
            w.non_empty_string(u, &p).and_then(|name| {
                if name.contains(|c: char| c.is_control()) {
                    w.error(
                        u.span(),
                        &p,
                        "contains control characters (such as a line break), which would break the SMTP dialogue; expected a user name",
                    );
                    return None;
                }
                Some(Some(name))
            })
        }
        None => Some(None),
    };
    let password = match st.get("password") {
        Some(pv) => {
            let p = join(&sp, "password");
            let password = credential(w, pv, &p, true);
            match (tls, &host, password) {
                (Some(SmtpTls::None), Some(h), Some(_)) if !is_loopback(h) => {
                    w.error(
                        pv.span(),
                        &p,
                        format!("the password would cross the network in plain text: tls = \"none\" to {h:?}, which is not this machine; use tls = \"starttls\" or \"tls\", or a relay on localhost"),
                    );
                    None
                }
                (_, _, password) => password.map(Some),
            }
        }
        None => Some(None),
    };
    let from = required(w, t, v, path, "from", "email").and_then(|f| {
        let p = join(path, "from");
        let addr = w.string(f, &p)?;
        mailbox(w, f, &p, &addr).then_some(addr)
    });
    let to = required(w, t, v, path, "to", "email").and_then(|tv| {
        let p = join(path, "to");
        let list = w.string_list(tv, &p)?;
        if list.is_empty() {
            w.error(tv.span(), &p, "give at least one recipient");
            return None;
        }
        let DeValue::Array(items) = tv.get_ref() else {
            return None;
        };
        let mut ok = true;
        for (n, (item, addr)) in items.iter().zip(&list).enumerate() {
            ok &= mailbox(w, item, &format!("{p}[{n}]"), addr);
        }
        ok.then_some(list)
    });
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

/// A URL Gantry posts notifications to: absolute http or https with a host.
/// Spaces and control characters are refused before parsing, because URL
/// parsing silently drops line breaks and tabs (what runs would differ from
/// what was written). The value is not echoed: a Slack URL is itself a secret.
pub(super) fn http_url(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<String> {
    let s = w.non_empty_string(v, path)?;
    let problem = if s.contains(|c: char| c.is_control()) {
        "it contains control characters (such as a line break)".to_owned()
    } else if s.contains(char::is_whitespace) {
        "it contains spaces".to_owned()
    } else {
        match url::Url::parse(&s) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                format!("its scheme {:?} is not http or https", u.scheme())
            }
            Ok(u) if u.host().is_none() => "it has no host".to_owned(),
            Ok(_) => return Some(s),
            Err(e) => format!("it is not a URL ({e})"),
        }
    };
    w.error(
        v.span(),
        path,
        format!("{problem}; expected an http:// or https:// URL such as \"https://hooks.example.com/gantry\""),
    );
    None
}

/// Whether an SMTP host is this machine, where plain text stays local.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Checks one mailbox, `user@host` or `Name <user@host>`, the forms the
/// mailer accepts: a broken one would otherwise show only when the first
/// mail fails, and a line break in one would inject headers.
fn mailbox(w: &mut Walker<'_>, v: &Val<'_>, path: &str, s: &str) -> bool {
    let problem = mailbox_problem(s);
    if let Some(problem) = problem {
        w.error(
            v.span(),
            path,
            format!("{s:?} is not an email address: {problem}; expected e.g. \"ops@example.com\" or \"Ops <ops@example.com>\""),
        );
    }
    problem.is_none()
}

fn mailbox_problem(s: &str) -> Option<&'static str> {
    if s.contains(|c: char| c.is_control()) {
        return Some("it contains control characters (such as a line break)");
    }
    let s = s.trim();
    let addr = match s.strip_suffix('>') {
        Some(rest) => match rest.rsplit_once('<') {
            Some((_, addr)) => addr,
            None => return Some("it has '>' without '<'"),
        },
        None => s,
    };
    if addr.contains(|c: char| c.is_whitespace() || "<>,;\"()[]\\".contains(c)) {
        return Some("one address only, without spaces, commas or brackets");
    }
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return Some("it has no '@'");
    };
    if local.is_empty() || local.contains('@') {
        return Some("the part before '@' is not a mailbox name");
    }
    if domain.is_empty() || domain.contains(':') || url::Host::parse(domain).is_err() {
        return Some("the part after '@' is not a host name");
    }
    None
}
