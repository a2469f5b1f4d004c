//! Decoding `[hosts.*]`, `[ssh]` and each environment's `hosts`, resolved to
//! host names at load. Every value is bounded to a plain character set: none
//! is ever put in a shell string, but an address starting with '-' would read
//! as an ssh option and a line break in a data directory would split the
//! lines the bootstrap script reads.

use super::fleet::decode_fleet;
use super::*;
use crate::hosts::{Host, SshKey, SshSettings, DEFAULT_HOST_DATA_DIR};
use std::path::Path;

/// Longest host name, site, label key or value (a DNS label's length).
const MAX_NAME: usize = 63;
/// Longest address (a DNS name's length).
const MAX_ADDRESS: usize = 253;
/// Longest login (Linux's `useradd` limit).
const MAX_USER: usize = 32;
/// Longest data directory or known_hosts path: the ssh control sockets live
/// below the controller's, and Unix socket paths are short.
const MAX_PATH: usize = 200;

/// Letters, digits, '.', '-', '_', starting with a letter or digit.
fn is_plain_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// An IP address, or a DNS name of letters, digits, '-' and '.' whose labels
/// start and end with a letter or digit.
fn is_address(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    s.len() <= MAX_ADDRESS
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_NAME
                && label.starts_with(|c: char| c.is_ascii_alphanumeric())
                && label.ends_with(|c: char| c.is_ascii_alphanumeric())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A path of letters, digits, '.', '-', '_' and '/', without `..` parts.
fn is_plain_path(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PATH
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
        && !s.split('/').any(|part| part == "..")
}

const NAME_RULE: &str = "letters, digits, '.', '-' and '_', starting with a letter or digit";

impl Walker<'_> {
    fn plain_name(&mut self, v: &Val<'_>, path: &str, what: &str) -> Option<String> {
        let s = self.string(v, path)?;
        self.plain_name_at(v.span(), path, what, &s).then_some(s)
    }

    fn plain_name_at(&mut self, span: Range<usize>, path: &str, what: &str, s: &str) -> bool {
        if is_plain_name(s, MAX_NAME) {
            return true;
        }
        self.error(
            span,
            path,
            format!("{s:?} is not a valid {what}; expected 1 to {MAX_NAME} {NAME_RULE}"),
        );
        false
    }

    fn labels(&mut self, v: &Val<'_>, path: &str) -> Option<BTreeMap<String, String>> {
        let t = self.table(v, path)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in t.iter() {
            let k: &str = key.get_ref();
            let p = join(path, k);
            ok &= self.plain_name_at(key.span(), &p, "label name", k);
            match self.plain_name(value, &p, "label value") {
                Some(val) => {
                    out.insert(k.to_owned(), val);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// `[hosts]`: every host, sorted by name, or None if any is invalid.
pub(super) fn decode_hosts(w: &mut Walker<'_>, v: &Val<'_>) -> Option<Vec<Host>> {
    let t = w.table(v, "hosts")?;
    let mut out = Vec::new();
    let mut ok = true;
    let mut seen: Vec<((String, u16), String)> = Vec::new();
    for (key, value) in t.iter() {
        let name: &str = key.get_ref();
        let path = join("hosts", name);
        ok &= w.plain_name_at(key.span(), &path, "host name", name);
        let Some(host) = decode_host(w, value, &path, name) else {
            ok = false;
            continue;
        };
        let endpoint = (canonical_address(&host.address), host.port);
        if let Some((_, other)) = seen.iter().find(|(e, _)| *e == endpoint) {
            let span = match value.get_ref() {
                DeValue::Table(ht) => ht.get("address").map_or(value.span(), |a| a.span()),
                _ => value.span(),
            };
            w.error(
                span,
                &join(&path, "address"),
                format!(
                    "{}:{} is already host {other:?}; each host needs its own address and port",
                    host.address, host.port
                ),
            );
            ok = false;
        }
        seen.push((endpoint, name.to_owned()));
        out.push(host);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    ok.then_some(out)
}

/// The form two spellings of one address share: IPs parsed, names lowercased.
fn canonical_address(s: &str) -> String {
    match s.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => s.to_ascii_lowercase(),
    }
}

fn decode_host(w: &mut Walker<'_>, v: &Val<'_>, path: &str, name: &str) -> Option<Host> {
    let t = w.table(v, path)?;
    w.check_keys::<crate::schema::HostSection>(t, path);
    let address = required(w, t, v, path, "address", |w, v, p| {
        let s = w.string(v, p)?;
        if is_address(&s) {
            return Some(s);
        }
        w.error(
            v.span(),
            p,
            format!("{s:?} is not an address; expected an IP address or a DNS name (letters, digits, '-', '.'), such as \"10.0.0.5\" or \"web-1.example.com\""),
        );
        None
    });
    let user = match t.get("user") {
        Some(u) => decode_user(w, u, &join(path, "user")).map(Some),
        None => Some(None),
    };
    let port = match t.get("port") {
        Some(p) => w
            .count::<crate::schema::HostSection>(p, path, "port")
            .map(|n| n as u16),
        None => Some(22),
    };
    let site = match t.get("site") {
        Some(s) => w.plain_name(s, &join(path, "site"), "site").map(Some),
        None => Some(None),
    };
    let labels = match t.get("labels") {
        Some(l) => w.labels(l, &join(path, "labels")),
        None => Some(BTreeMap::new()),
    };
    let key = required(w, t, v, path, "key", decode_key);
    let data_dir = match t.get("data_dir") {
        Some(d) => decode_data_dir(w, d, &join(path, "data_dir")),
        None => Some(DEFAULT_HOST_DATA_DIR.to_owned()),
    };
    Some(Host {
        name: name.to_owned(),
        address: address?,
        user: user?,
        port: port?,
        site: site?,
        labels: labels?,
        key: key?,
        data_dir: data_dir?,
    })
}

fn decode_user(w: &mut Walker<'_>, v: &Val<'_>, p: &str) -> Option<String> {
    let s = w.string(v, p)?;
    let ok = s.len() <= MAX_USER
        && s.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        return Some(s);
    }
    w.error(
        v.span(),
        p,
        format!("{s:?} is not a login name; expected 1 to {MAX_USER} letters, digits, '.', '-' and '_', not starting with '-' or '.'"),
    );
    None
}

fn decode_data_dir(w: &mut Walker<'_>, v: &Val<'_>, p: &str) -> Option<String> {
    let s = w.string(v, p)?;
    if is_plain_path(&s) {
        return Some(s);
    }
    w.error(
        v.span(),
        p,
        format!("{s:?} is not a usable data directory; expected a path of up to {MAX_PATH} letters, digits, '.', '-', '_' and '/', without \"..\" (relative to the host's HOME, or absolute)"),
    );
    None
}

/// `"agent"` or `{ file = "/abs/path" }`, the file present now.
fn decode_key(w: &mut Walker<'_>, v: &Val<'_>, p: &str) -> Option<SshKey> {
    match v.get_ref() {
        DeValue::String(s) if s.as_ref() == "agent" => Some(SshKey::Agent),
        DeValue::Table(t) => {
            w.check_keys::<crate::schema::KeyFileSection>(t, p);
            required(w, t, v, p, "file", |w, f, fp| {
                let s = w.string(f, fp)?;
                let file = Path::new(&s);
                if !file.is_absolute() || s.contains(['\n', '\r', '\0']) {
                    w.error(
                        f.span(),
                        fp,
                        format!("{s:?} is not an absolute path; expected the private key's full path, such as \"/etc/gantry/ssh/id_ed25519\""),
                    );
                    return None;
                }
                if !file.is_file() {
                    w.error(
                        f.span(),
                        fp,
                        format!("no key file at {s:?}; create it (ssh-keygen -t ed25519 -f {s}) or point to an existing private key"),
                    );
                    return None;
                }
                Some(SshKey::File(file.to_path_buf()))
            })
        }
        other => {
            w.error(
                v.span(),
                p,
                format!(
                    "expected \"agent\" or {{ file = \"/path/to/key\" }}, found {}",
                    describe(other)
                ),
            );
            None
        }
    }
}

/// `[ssh]`, every key optional.
pub(super) fn decode_ssh(w: &mut Walker<'_>, v: &Val<'_>) -> Option<SshSettings> {
    let t = w.table(v, "ssh")?;
    w.check_keys::<crate::schema::SshSection>(t, "ssh");
    let d = SshSettings::default();
    let known_hosts = match t.get("known_hosts") {
        Some(k) => decode_known_hosts(w, k, "ssh.known_hosts"),
        None => Some(d.known_hosts.clone()),
    };
    let connect_timeout_ms = match t.get("connect_timeout") {
        // ssh takes whole seconds.
        Some(c) => w.duration(c, "ssh.connect_timeout").and_then(|ms| {
            if (1_000..=300_000).contains(&ms) {
                return Some(ms);
            }
            w.error(
                c.span(),
                "ssh.connect_timeout",
                "expected a duration from 1s to 5m",
            );
            None
        }),
        None => Some(d.connect_timeout_ms),
    };
    let mut cap = |key: &str, default: u32| match t.get(key) {
        Some(c) => w.count::<crate::schema::SshSection>(c, "ssh", key),
        None => Some(default),
    };
    let max_connecting = cap("max_connecting", d.max_connecting);
    let max_sessions_per_host = cap("max_sessions_per_host", d.max_sessions_per_host);
    let max_transfers = cap("max_transfers", d.max_transfers);
    Some(SshSettings {
        known_hosts: known_hosts?,
        connect_timeout_ms: connect_timeout_ms?,
        max_connecting: max_connecting?,
        max_sessions_per_host: max_sessions_per_host?,
        max_transfers: max_transfers?,
    })
}

fn decode_known_hosts(w: &mut Walker<'_>, v: &Val<'_>, p: &str) -> Option<PathBuf> {
    let s = w.string(v, p)?;
    if is_plain_path(&s) {
        return Some(PathBuf::from(s));
    }
    w.error(
        v.span(),
        p,
        format!("{s:?} is not a usable path; expected up to {MAX_PATH} letters, digits, '.', '-', '_' and '/', without \"..\""),
    );
    None
}

/// Resolves each environment's `hosts` (names and label selectors) to host
/// names, in the order listed (a selector's hosts by name), without repeats.
/// `hosts` is None when `[hosts]` itself failed: then names are not checked
/// against it, so one bad host gives one error, not one per environment.
pub(super) fn resolve_environment_hosts(
    w: &mut Walker<'_>,
    environments_value: &Val<'_>,
    hosts: Option<&[Host]>,
    environments: &mut Option<Vec<Environment>>,
) -> bool {
    let DeValue::Table(envs) = environments_value.get_ref() else {
        return true;
    };
    let mut ok = true;
    for (key, value) in envs.iter() {
        let DeValue::Table(t) = value.get_ref() else {
            continue;
        };
        let env_path = join("environments", key.get_ref());
        let fleet_value = t.get("fleet");
        let Some(list) = t.get("hosts") else {
            if let Some(f) = fleet_value {
                w.error(
                    f.span(),
                    &join(&env_path, "fleet"),
                    "fleet settings need `hosts`: without them the environment runs on the controller's machine",
                );
                ok = false;
            }
            continue;
        };
        let path = join(&env_path, "hosts");
        let Some(names) = resolve_list(w, list, &path, hosts) else {
            ok = false;
            continue;
        };
        let fleet = match (fleet_value, hosts) {
            (Some(f), Some(all)) => {
                let of_env: Vec<&Host> = names
                    .iter()
                    .filter_map(|n| all.iter().find(|h| &h.name == n))
                    .collect();
                let plan = decode_fleet(w, f, &join(&env_path, "fleet"), &of_env);
                ok &= plan.is_some();
                plan
            }
            _ => None,
        };
        if let Some(env) = environments
            .as_mut()
            .and_then(|envs| envs.iter_mut().find(|e| e.name.as_str() == key.get_ref()))
        {
            env.hosts = names;
            env.fleet = fleet;
        }
    }
    ok
}

fn resolve_list(
    w: &mut Walker<'_>,
    v: &Val<'_>,
    path: &str,
    hosts: Option<&[Host]>,
) -> Option<Vec<String>> {
    let DeValue::Array(items) = v.get_ref() else {
        w.error(
            v.span(),
            path,
            format!(
                "expected an array of host names and {{ labels = {{ … }} }} selectors, found {}",
                describe(v.get_ref())
            ),
        );
        return None;
    };
    if items.is_empty() {
        w.error(
            v.span(),
            path,
            "lists no host; name at least one, or leave `hosts` out to run on the controller's machine",
        );
        return None;
    }
    let known: Vec<String> = hosts
        .unwrap_or_default()
        .iter()
        .map(|h| h.name.clone())
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut ok = true;
    for (n, item) in items.iter().enumerate() {
        let p = format!("{path}[{n}]");
        let found: Vec<String> = match item.get_ref() {
            DeValue::String(name) => {
                let name: &str = name.as_ref();
                match hosts {
                    None => continue,
                    Some(_) if known.iter().any(|k| k == name) => vec![name.to_owned()],
                    Some(_) => {
                        let hint = match closest(name, &known) {
                            Some(s) => format!("did you mean {s:?}? "),
                            None => String::new(),
                        };
                        w.error(
                            item.span(),
                            &p,
                            format!(
                                "no host named {name:?} in [hosts]; {hint}known: {}",
                                if known.is_empty() {
                                    "none".to_owned()
                                } else {
                                    known.join(", ")
                                }
                            ),
                        );
                        ok = false;
                        continue;
                    }
                }
            }
            DeValue::Table(t) => {
                w.check_keys::<crate::schema::HostSelectorSection>(t, &p);
                let Some(labels) = required(w, t, item, &p, "labels", |w, l, lp| w.labels(l, lp))
                else {
                    ok = false;
                    continue;
                };
                if labels.is_empty() {
                    w.error(
                        item.span(),
                        &join(&p, "labels"),
                        "an empty selector would take every host; name the labels the hosts must carry",
                    );
                    ok = false;
                    continue;
                }
                let Some(hosts) = hosts else { continue };
                let matching: Vec<String> = hosts
                    .iter()
                    .filter(|h| labels.iter().all(|(k, v)| h.labels.get(k) == Some(v)))
                    .map(|h| h.name.clone())
                    .collect();
                if matching.is_empty() {
                    let wanted: Vec<String> =
                        labels.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
                    w.error(
                        item.span(),
                        &p,
                        format!(
                            "no host in [hosts] carries the labels {{ {} }}; check the labels of the hosts you meant",
                            wanted.join(", ")
                        ),
                    );
                    ok = false;
                    continue;
                }
                matching
            }
            other => {
                w.error(
                    item.span(),
                    &p,
                    format!(
                        "expected a host name or {{ labels = {{ … }} }}, found {}",
                        describe(other)
                    ),
                );
                ok = false;
                continue;
            }
        };
        for name in found {
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_addresses_and_paths() {
        for good in ["web-1", "h1", "eu-west.a", "A_b"] {
            assert!(is_plain_name(good, MAX_NAME), "{good}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a;b",
            "a$(x)",
            "a'b",
            &"x".repeat(64),
        ] {
            assert!(!is_plain_name(bad, MAX_NAME), "{bad}");
        }
        for good in ["10.0.0.5", "::1", "fe80::1", "web-1.example.com", "h1"] {
            assert!(is_address(good), "{good}");
        }
        for bad in [
            "-oProxyCommand=x",
            "a..b",
            "a b",
            "web_1.example",
            "x-",
            "",
            "a;b",
        ] {
            assert!(!is_address(bad), "{bad}");
        }
        for good in [".gantry", "/srv/gantry", "a/b-c_d.e"] {
            assert!(is_plain_path(good), "{good}");
        }
        for bad in ["", "../x", "a/../b", "a b", "a\nb", "$HOME/x", "~/x", "a'b"] {
            assert!(!is_plain_path(bad), "{bad}");
        }
    }
}
