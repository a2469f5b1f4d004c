//! Decoding an environment's `[[environments.X.hooks]]`.

use super::{describe, join, Val, Walker};
use crate::HookConfig;
use gantry_core::machine::hooks::{Hook, HookCall, HookPoint};
use toml::de::DeValue;

/// At most this many hooks per environment: each is a call at its point.
const MAX_HOOKS: usize = 16;
/// At most this many words in a hook's command.
const MAX_ARGS: usize = 64;

const POINTS: [(&str, HookPoint); 5] = [
    ("before_rollout", HookPoint::BeforeRollout),
    ("before_traffic_increase", HookPoint::BeforeTrafficIncrease),
    ("before_promotion", HookPoint::BeforePromotion),
    ("after_rollout", HookPoint::AfterRollout),
    ("on_rollback", HookPoint::OnRollback),
];

pub(super) fn decode_hooks(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<Vec<HookConfig>> {
    let DeValue::Array(items) = v.get_ref() else {
        w.error(
            v.span(),
            path,
            format!(
                "expected an array of tables ([[{path}]]), found {}",
                describe(v.get_ref())
            ),
        );
        return None;
    };
    if items.len() > MAX_HOOKS {
        w.error(
            v.span(),
            path,
            format!("{} hooks; at most {MAX_HOOKS}", items.len()),
        );
        return None;
    }
    let mut out: Vec<HookConfig> = Vec::new();
    let mut ok = true;
    for (n, item) in items.iter().enumerate() {
        let ip = format!("{path}[{n}]");
        match decode_hook(w, item, &ip) {
            Some(h) if out.iter().any(|o| o.hook.name == h.hook.name) => {
                w.error(
                    item.span(),
                    &join(&ip, "name"),
                    format!("{:?} is already a hook's name", h.hook.name),
                );
                ok = false;
            }
            Some(h) => out.push(h),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn decode_hook(w: &mut Walker<'_>, v: &Val<'_>, path: &str) -> Option<HookConfig> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::HookSection>(t, path);
    let name = super::required(w, t, v, path, "name", |w, v, p| w.non_empty_string(v, p));
    let at = super::required(w, t, v, path, "at", |w, v, p| {
        let s = w.string(v, p)?;
        match POINTS.iter().find(|(k, _)| *k == s) {
            Some((_, point)) => Some(*point),
            None => {
                let known: Vec<&str> = POINTS.iter().map(|(k, _)| *k).collect();
                w.error(
                    v.span(),
                    p,
                    format!(
                        "{s:?} is not a point of the rollout; expected one of {}",
                        known.join(", ")
                    ),
                );
                None
            }
        }
    });
    let call = match (t.get("command"), t.get("url")) {
        (Some(c), None) => {
            let cp = join(path, "command");
            w.exec_list(c, &cp).and_then(|argv| {
                if argv.is_empty() || argv[0].is_empty() {
                    w.error(c.span(), &cp, "empty; expected a program and its arguments, e.g. [\"/usr/local/bin/check-flags\", \"--env\", \"production\"]");
                    None
                } else if argv.len() > MAX_ARGS {
                    w.error(c.span(), &cp, format!("{} words; at most {MAX_ARGS}", argv.len()));
                    None
                } else {
                    Some(HookCall::Command { argv })
                }
            })
        }
        (None, Some(u)) => {
            super::notify::http_url(w, u, &join(path, "url")).map(|url| HookCall::Http { url })
        }
        (Some(_), Some(_)) => {
            w.error(
                v.span(),
                path,
                "both command and url; a hook is one or the other",
            );
            None
        }
        (None, None) => {
            w.error(
                v.span(),
                path,
                "no call; set command (a program and its arguments) or url (a signed POST)",
            );
            None
        }
    };
    let secret = match t.get("secret") {
        Some(s) if t.get("url").is_some() => {
            super::notify::credential(w, s, &join(path, "secret"), true).map(Some)
        }
        Some(s) => {
            w.error(
                s.span(),
                &join(path, "secret"),
                "only for a url hook (it signs the POST)",
            );
            None
        }
        None => Some(None),
    };
    let bounded =
        |w: &mut Walker<'_>, key: &str, default: u64, min: u64, max: u64, what: &str| match t
            .get(key)
        {
            Some(d) => {
                let dp = join(path, key);
                w.duration(d, &dp).and_then(|ms| {
                    if (min..=max).contains(&ms) {
                        Some(ms)
                    } else {
                        w.error(d.span(), &dp, format!("expected a duration {what}"));
                        None
                    }
                })
            }
            None => Some(default),
        };
    let timeout_ms = bounded(w, "timeout", 30_000, 100, 600_000, "from 100ms to 10m");
    let hold_ms = bounded(w, "hold", 600_000, 0, 86_400_000, "from 0s to 24h");
    let retry_ms = bounded(w, "retry", 15_000, 1_000, 600_000, "from 1s to 10m");
    Some(HookConfig {
        hook: Hook {
            name: name?,
            at: at?,
            call: call?,
            timeout_ms: timeout_ms?,
            hold_ms: hold_ms?,
            retry_ms: retry_ms?,
        },
        secret: secret?,
    })
}
