//! Decoding `[service]` (how an instance is started, confined and checked
//! for health) and `[signing]`.

use super::*;

pub(super) fn decode_service(w: &mut Walker<'_>, v: &Val<'_>) -> Option<Service> {
    let t = w.table(v, "service")?;
    w.check_keys::<crate::schema::ServiceSection>(t, "service");
    let name = required(w, t, v, "service", "name", |w, v, p| {
        let s = w.non_empty_string(v, p)?;
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            w.error(
                v.span(),
                p,
                format!("{s:?} may contain only letters, digits, '-' and '_'"),
            );
            return None;
        }
        Some(s)
    });
    let command = required(w, t, v, "service", "command", |w, v, p| {
        let s = w.non_empty_string(v, p)?;
        w.exec_safe(v.span(), p, &s).then_some(s)
    });
    let args = match t.get("args") {
        Some(a) => w.exec_list(a, "service.args").inspect(|args| {
            for (n, arg) in args.iter().enumerate() {
                check_placeholders(w, a.span(), &format!("service.args[{n}]"), arg);
            }
        }),
        None => Some(Vec::new()),
    };
    let port_env = match t.get("port_env") {
        Some(p) => w.non_empty_string(p, "service.port_env").inspect(|name| {
            w.check_env_name(p.span(), "service.port_env", name);
        }),
        None => Some("PORT".to_owned()),
    };
    let env = t
        .get("env")
        .map(|e| w.env_vars(e, "service.env"))
        .unwrap_or_default();
    let secrets = t
        .get("secrets")
        .map(|s| w.secrets(s, "service.secrets"))
        .unwrap_or_default();
    let run_as = match t.get("run_as") {
        Some(v) => w.non_empty_string(v, "service.run_as").and_then(|name| {
            let ok = name.len() <= 32
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                w.error(
                    v.span(),
                    "service.run_as",
                    format!(
                        "{name:?} is not a user name (letters, digits, '-', '_', '.'; at most 32)"
                    ),
                );
                return None;
            }
            if name == "root" {
                w.error(
                    v.span(),
                    "service.run_as",
                    "instances must not run as root: a deployed release is untrusted code",
                );
                return None;
            }
            Some(Some(name))
        }),
        None => Some(None),
    };
    let sandbox = match t.get("sandbox") {
        Some(v) => decode_sandbox(w, v),
        None => Some(Sandbox::default()),
    };
    Some(Service {
        name: name?,
        command: command?,
        args: args?,
        port_env: port_env?,
        env,
        secrets,
        run_as: run_as?,
        sandbox: sandbox?,
    })
}

/// `sandbox = false`, or `sandbox = { read = [...], write = [...] }` of absolute paths.
fn decode_sandbox(w: &mut Walker<'_>, v: &Val<'_>) -> Option<Sandbox> {
    if let DeValue::Boolean(enabled) = v.get_ref() {
        return Some(Sandbox {
            enabled: *enabled,
            ..Sandbox::default()
        });
    }
    let t = w.table(v, "service.sandbox")?;
    w.check_keys::<crate::schema::SandboxPaths>(t, "service.sandbox");
    let mut paths = |key: &str| -> Option<Vec<PathBuf>> {
        let Some(list) = t.get(key) else {
            return Some(Vec::new());
        };
        let at = format!("service.sandbox.{key}");
        let items = w.string_list(list, &at)?;
        let mut ok = true;
        for (n, p) in items.iter().enumerate() {
            if !p.starts_with('/') || p.contains('\0') || p.split('/').any(|c| c == "..") {
                w.error(
                    list.span(),
                    &format!("{at}[{n}]"),
                    format!("{p:?} must be an absolute path without \"..\""),
                );
                ok = false;
            }
        }
        ok.then(|| items.into_iter().map(PathBuf::from).collect())
    };
    let read = paths("read");
    let write = paths("write");
    Some(Sandbox {
        enabled: true,
        read: read?,
        write: write?,
    })
}

pub(super) fn decode_health(w: &mut Walker<'_>, v: &Val<'_>) -> Option<Health> {
    let t = w.table(v, "health")?;
    w.check_keys::<crate::schema::HealthSection>(t, "health");
    let path = required(w, t, v, "health", "path", |w, v, p| w.request_path(v, p));
    let interval = optional_duration(w, t, "health.interval", "interval", 1000);
    let timeout = optional_duration(w, t, "health.timeout", "timeout", 1000);
    let start_timeout = optional_duration(w, t, "health.start_timeout", "start_timeout", 30_000);
    let threshold = match t.get("failure_threshold") {
        Some(v) => w.count::<crate::schema::HealthSection>(v, "health", "failure_threshold"),
        None => Some(3),
    };
    Some(Health {
        path: path?,
        interval_ms: interval?,
        timeout_ms: timeout?,
        failure_threshold: threshold?,
        start_timeout_ms: start_timeout?,
    })
}

pub(super) fn decode_signing(w: &mut Walker<'_>, v: &Val<'_>) -> Option<Signing> {
    let t = w.table(v, "signing")?;
    w.check_keys::<crate::schema::SigningSection>(t, "signing");
    let Some(keys_v) = t.get("public_keys") else {
        return Some(Signing::default());
    };
    let keys = w.string_list(keys_v, "signing.public_keys")?;
    let mut ok = true;
    for (n, k) in keys.iter().enumerate() {
        // A minisign public key is 42 bytes, base64: 56 characters starting "RW".
        if k.len() != 56 || !k.starts_with("RW") {
            w.error(
                keys_v.span(),
                &format!("signing.public_keys[{n}]"),
                "expected a minisign public key: the 56-character line starting with \"RW\" from a .pub file",
            );
            ok = false;
        }
    }
    ok.then_some(Signing { public_keys: keys })
}
