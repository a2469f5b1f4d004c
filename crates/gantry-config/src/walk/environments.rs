//! Decoding `[environments.*]`: each environment, and the checks between
//! them (router addresses that would share connections, names others refer to).

use super::*;

/// Every environment, and the names of all of them. The names are kept even
/// where an environment's other fields fail, so that what refers to an
/// environment (`rehearsal_in`, a channel's `environments`) still finds it:
/// one bad value makes one error, not more about its neighbours. No names
/// when the table itself is unusable: then nothing can be checked against it.
pub(super) fn decode_environments(
    w: &mut Walker<'_>,
    v: &Val<'_>,
    signing: Option<&Signing>,
) -> (Option<Vec<String>>, Option<Vec<Environment>>) {
    let Some(t) = w.table(v, "environments") else {
        return (None, None);
    };
    if t.is_empty() {
        w.error(v.span(), "environments", "define at least one environment");
        return (None, None);
    }
    // File order, not the map's sorted order: it is the promotion order.
    let mut entries: Vec<_> = t.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    let names: Vec<String> = entries
        .iter()
        .map(|(k, _)| k.get_ref().to_string())
        .collect();
    let mut out = Vec::new();
    let mut ok = true;
    let mut listens: Vec<(SocketAddr, &str)> = Vec::new();
    let last = entries.len() - 1;
    for (n, (key, value)) in entries.iter().enumerate() {
        let name: &str = key.get_ref();
        let path = join("environments", name);
        let env_name = match name.parse::<EnvName>() {
            Ok(n) => Some(n),
            Err(e) => {
                w.error(key.span(), &path, format!("bad environment name: {e}"));
                None
            }
        };
        let (listen, env) = decode_environment(w, value, &path, signing, n == last && last > 0);
        if let Some(listen) = listen {
            let taken = listens
                .iter()
                .find_map(|(a, other)| Some((a, other, overlap(*a, listen)?)));
            if let Some((a, other, why)) = taken {
                w.error(
                    span_at(value, &["listen"]).unwrap_or(value.span()),
                    &join(&path, "listen"),
                    format!("\"{listen}\" overlaps \"{a}\", already used by environment {other:?} ({why}): both routers would take its connections; give each environment a port of its own"),
                );
                ok = false;
            }
            listens.push((listen, name));
        }
        if let Some(metrics) = env.as_ref().and_then(|e| e.metrics_listen) {
            let taken = listens
                .iter()
                .find_map(|(a, other)| Some((a, other, overlap(*a, metrics)?)));
            if let Some((a, other, why)) = taken {
                w.error(
                    span_at(value, &["metrics_listen"]).unwrap_or(value.span()),
                    &join(&path, "metrics_listen"),
                    format!("\"{metrics}\" overlaps \"{a}\", already used by environment {other:?} ({why}); give the metrics endpoint a port of its own"),
                );
                ok = false;
            }
            listens.push((metrics, name));
        }
        match (env_name, env) {
            (Some(n), Some(mut env)) => {
                env.name = n;
                out.push(env);
            }
            _ => ok = false,
        }
    }
    for env in &out {
        let Some(r) = &env.gates.rehearsal_in else {
            continue;
        };
        let at = names.iter().position(|n| n == env.name.as_str());
        if names[..at.unwrap_or(0)].contains(r) {
            continue;
        }
        let value = entries
            .iter()
            .find(|(k, _)| k.get_ref() == env.name.as_str());
        let span = value
            .and_then(|(_, v)| span_at(v, &["gates", "rehearsal_in"]))
            .unwrap_or(v.span().start..v.span().start);
        let p = join(
            &join("environments", env.name.as_str()),
            "gates.rehearsal_in",
        );
        w.error(
            span,
            &p,
            format!(
                "{r:?} is not an environment before {} in the promotion order; expected one of: {}",
                env.name,
                names[..at.unwrap_or(0)].join(", ")
            ),
        );
        ok = false;
    }
    (Some(names), ok.then_some(out))
}

/// Why two router addresses would share connections, if they would. Routers
/// bind with SO_REUSEPORT, so the OS does not refuse the second: it would
/// quietly split or take the first environment's traffic.
fn overlap(a: SocketAddr, b: SocketAddr) -> Option<&'static str> {
    if a.port() != b.port() || a.port() == 0 {
        return None;
    }
    let (a, b) = (a.ip().to_canonical(), b.ip().to_canonical());
    let every_v6 = |ip: IpAddr| matches!(ip, IpAddr::V6(v6) if v6.is_unspecified());
    let every_v4 = |ip: IpAddr| matches!(ip, IpAddr::V4(v4) if v4.is_unspecified());
    if a == b {
        Some("the same address and port")
    } else if every_v6(a) || every_v6(b) {
        // Dual-stack: "::" takes IPv4 connections too.
        Some("\"::\" listens on every address, IPv4 included, at that port")
    } else if (every_v4(a) && b.is_ipv4()) || (every_v4(b) && a.is_ipv4()) {
        Some("\"0.0.0.0\" listens on every IPv4 address at that port")
    } else {
        None
    }
}

/// The span of the value at `keys` below the table `v`, if it is there.
fn span_at(v: &Val<'_>, keys: &[&str]) -> Option<Range<usize>> {
    let mut v = v;
    for key in keys {
        let DeValue::Table(t) = v.get_ref() else {
            return None;
        };
        v = t.get(*key)?;
    }
    Some(v.span())
}

fn decode_environment(
    w: &mut Walker<'_>,
    v: &Val<'_>,
    path: &str,
    signing: Option<&Signing>,
    last_of_several: bool,
) -> (Option<SocketAddr>, Option<Environment>) {
    let Some(t) = w.table(v, path) else {
        return (None, None);
    };
    // Absent is off, as in every earlier environment; where it matters, say so.
    if last_of_several && t.get("watch").is_none() {
        w.warn(
            v.span(),
            &join(path, "watch"),
            "absent, so the last environment of the promotion order is not watched after a full rollout; the standards watch 30 minutes: set watch = \"30m\" (or \"0s\" to say no watch on purpose)",
        );
    }
    w.check_keys::<crate::schema::EnvironmentSection>(t, path);
    let listen = required(w, t, v, path, "listen", |w, v, p| {
        let s = w.string(v, p)?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                w.error(
                    v.span(),
                    p,
                    format!("{s:?} is not an address; expected IP:PORT such as \"127.0.0.1:8080\""),
                );
                None
            }
        }
    });
    let metrics_listen = match t.get("metrics_listen") {
        Some(v) => {
            let p = join(path, "metrics_listen");
            w.string(v, &p).and_then(|s| match s.parse::<SocketAddr>() {
                Ok(a) => Some(Some(a)),
                Err(_) => {
                    w.error(
                        v.span(),
                        &p,
                        format!(
                            "{s:?} is not an address; expected IP:PORT such as \"127.0.0.1:9464\""
                        ),
                    );
                    None
                }
            })
        }
        None => Some(None),
    };
    let instances = match t.get("instances") {
        Some(v) => w.count::<crate::schema::EnvironmentSection>(v, path, "instances"),
        None => Some(1),
    };
    let strategy = match t.get("strategy") {
        Some(v) => {
            let p = join(path, "strategy");
            match w.string(v, &p).as_deref() {
                Some("blue-green") => Some(Strategy::BlueGreen),
                Some("canary") => match t.get("canary") {
                    Some(c) => decode_canary(w, c, &join(path, "canary")).map(Strategy::Canary),
                    None => Some(Strategy::Canary(Canary::standard())),
                },
                Some("rolling") => {
                    rollout::decode_rolling(w, t.get("rolling"), &join(path, "rolling"), instances)
                        .map(Strategy::Rolling)
                }
                Some(s) => {
                    w.error(
                        v.span(),
                        &p,
                        format!(
                            "unknown strategy {s:?}; expected one of: {}",
                            Strategy::NAMES.join(", ")
                        ),
                    );
                    None
                }
                None => None,
            }
        }
        None => Some(Strategy::BlueGreen),
    };
    for (key, wanted) in [("canary", "canary"), ("rolling", "rolling")] {
        let mismatch = match &strategy {
            Some(Strategy::Canary(_)) => wanted != "canary",
            Some(Strategy::Rolling(_)) => wanted != "rolling",
            Some(Strategy::BlueGreen) => true,
            None => false,
        };
        if let (Some(c), true) = (t.get(key), mismatch) {
            w.error(
                c.span(),
                &join(path, key),
                format!("{key} settings are set but the strategy is not {wanted:?}; set strategy = {wanted:?}"),
            );
        }
    }
    let smoke = match t.get("smoke") {
        Some(sv) => rollout::decode_smoke(w, sv, &join(path, "smoke")).map(Some),
        None => Some(None),
    };
    let sticky = match t.get("sticky") {
        Some(sv) => rollout::decode_sticky(w, sv, &join(path, "sticky")).map(Some),
        None => Some(None),
    };
    let resources = match t.get("resources") {
        Some(rv) => rollout::decode_resources(w, rv, &join(path, "resources")),
        None => Some(ResourcePolicy::default()),
    };
    let hooks = match t.get("hooks") {
        Some(hv) => super::hooks::decode_hooks(w, hv, &join(path, "hooks")),
        None => Some(Vec::new()),
    };
    let database = match t.get("database") {
        Some(dv) => super::migrations::decode_database(w, dv, &join(path, "database")).map(Some),
        None => Some(None),
    };
    let bake = optional_duration(w, t, &join(path, "bake"), "bake", 10_000);
    let watch = optional_duration(w, t, &join(path, "watch"), "watch", 0).and_then(|ms| {
        if ms > 86_400_000 {
            let v = t.get("watch")?;
            w.error(
                v.span(),
                &join(path, "watch"),
                "longer than a day; expected at most \"24h\" (the standards watch 30 minutes)",
            );
            return None;
        }
        if ms > 0 && ms < 1_000 {
            let v = t.get("watch")?;
            w.error(
                v.span(),
                &join(path, "watch"),
                "shorter than the analysis needs to look at the release even once; expected \"0s\" (no watch) or at least \"1s\"",
            );
            return None;
        }
        Some(ms)
    });
    let flag = |w: &mut Walker<'_>, key: &str| match t.get(key) {
        Some(b) => w.bool(b, &join(path, key)),
        None => Some(false),
    };
    let optional = flag(w, "optional");
    let auto_deploy = flag(w, "auto_deploy");
    let approval = match t.get("approval") {
        Some(a) => governance::decode_approval(w, a, &join(path, "approval")),
        None => Some(ApprovalPolicy::none()),
    };
    let freezes = match t.get("freeze") {
        Some(f) => governance::decode_freezes(w, f, &join(path, "freeze")),
        None => Some(Vec::new()),
    };
    let gates = match t.get("gates") {
        Some(g) => governance::decode_gates(w, g, &join(path, "gates")),
        None => Some(GatePolicy::none()),
    };
    let require_signature = match t.get("require_signature") {
        Some(rv) => {
            let p = join(path, "require_signature");
            let b = w.bool(rv, &p);
            if b == Some(true) && signing.is_some_and(|s| s.public_keys.is_empty()) {
                w.error(
                    rv.span(),
                    &p,
                    "requires at least one key in signing.public_keys",
                );
                None
            } else {
                b
            }
        }
        None => Some(false),
    };
    let env = t
        .get("env")
        .map(|e| w.env_vars(e, &join(path, "env")))
        .unwrap_or_default();
    let secrets = t
        .get("secrets")
        .map(|s| w.secrets(s, &join(path, "secrets")))
        .unwrap_or_default();
    let env = (|| {
        Some(Environment {
            name: "placeholder".parse().expect("valid literal"),
            listen: listen?,
            metrics_listen: metrics_listen?,
            instances: instances?,
            strategy: strategy?,
            bake_ms: bake?,
            watch_ms: watch?,
            require_signature: require_signature?,
            env,
            secrets,
            smoke: smoke?,
            sticky: sticky?,
            optional: optional?,
            auto_deploy: auto_deploy?,
            approval: approval?,
            freezes: freezes?,
            gates: gates?,
            // Resolved against `[hosts]` afterwards (walk/hosts.rs).
            hosts: Vec::new(),
            fleet: None,
            resources: resources?,
            hooks: hooks?,
            database: database?,
        })
    })();
    (listen, env)
}
