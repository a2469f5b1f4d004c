//! `gantry hosts` and `gantry hosts trust`. With a controller running
//! (`--server`, or `server.json` in the data directory), `gantry hosts`
//! shows the controller's view (`GET /api/v1/hosts`: reachable and since
//! when, last seen, releases, instances and their health, routers, free
//! disk). Without one, it shows the fleet as the config names it, seen from
//! the controller's machine (its config and data directory: the
//! reachability check opens the same SSH connections the controller would).
//! `trust` never needs the controller: pinning a key is a local act of trust.

use crate::client::Client;
use crate::exit_code::{Exit, ExitCode};
use crate::output::Output;
use crate::term::{errln, outln};
use crate::time::time;
use anyhow::{bail, Context};
use gantry_api::{HostView, HostsView, InstanceHealthView};
use gantry_config::{Config, Host};
use gantry_server::fleet::ssh::SshHosts;
use gantry_server::fleet::trust::{self, ScannedKey};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HostsArgs {
    #[command(subcommand)]
    pub command: Option<HostsCommand>,
    #[arg(long, default_value = "gantry.toml")]
    pub config: PathBuf,
    #[command(flatten)]
    pub output: Output,
}

#[derive(clap::Subcommand)]
pub enum HostsCommand {
    /// Scan hosts' SSH keys, show their fingerprints, and pin them after
    /// confirmation (or when they match --expect).
    Trust {
        /// Hosts to trust (default: every host in the config).
        hosts: Vec<String>,
        #[arg(long, default_value = "gantry.toml")]
        config: PathBuf,
        /// A fingerprint known out of band (SHA256:…); only matching keys are
        /// pinned, without a prompt. Repeat for several hosts.
        #[arg(long, value_name = "SHA256:…")]
        expect: Vec<String>,
        /// Allow changing a key already pinned.
        #[arg(long)]
        replace: bool,
        /// Pin what the scan shows without asking.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(data_dir: &Path, server: Option<&str>, args: HostsArgs) -> Exit {
    match args.command {
        None => match controller(data_dir, server) {
            Some(client) => match client.hosts().await {
                Ok(view) => show_observed(&view, args.output),
                Err(e) if server.is_some() => Err(e.into()),
                Err(e) => {
                    errln!("no answer from the controller ({e}); showing the config's hosts as this machine reaches them");
                    list(data_dir, &args.config, args.output).await
                }
            },
            None => list(data_dir, &args.config, args.output).await,
        },
        Some(HostsCommand::Trust {
            hosts,
            config,
            expect,
            replace,
            yes,
        }) => trust_hosts(data_dir, &config, &hosts, &expect, replace, yes).await,
    }
}

fn load(path: &Path) -> anyhow::Result<Result<Config, ExitCode>> {
    match gantry_config::load(path) {
        Ok(loaded) => Ok(Ok(loaded.config)),
        Err(e) => {
            errln!("{}", e.render());
            Ok(Err(ExitCode::InvalidConfig))
        }
    }
}

fn known_hosts_path(data_dir: &Path, config: &Config) -> PathBuf {
    data_dir.join(&config.ssh.known_hosts)
}

fn selected<'c>(config: &'c Config, names: &[String]) -> anyhow::Result<Vec<&'c Host>> {
    if config.hosts.is_empty() {
        bail!("the config defines no [hosts.*]: everything runs on this machine");
    }
    if names.is_empty() {
        return Ok(config.hosts.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            config.host(n).with_context(|| {
                format!(
                    "no host named {n:?} in the config; known: {}",
                    config
                        .hosts
                        .iter()
                        .map(|h| h.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect()
}

async fn trust_hosts(
    data_dir: &Path,
    config_path: &Path,
    names: &[String],
    expect: &[String],
    replace: bool,
    yes: bool,
) -> Exit {
    let config = match load(config_path)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    for e in expect {
        if !e.starts_with("SHA256:") {
            bail!("--expect {e:?} is not a SHA-256 fingerprint; expected SHA256:… as `ssh-keygen -l -E sha256` prints it");
        }
    }
    let hosts = selected(&config, names)?;
    let known_hosts = known_hosts_path(data_dir, &config);
    let timeout = Duration::from_millis(config.ssh.connect_timeout_ms);
    let scans = futures_join(hosts.iter().map(|h| trust::scan(h, timeout))).await;
    let mut failed = 0;
    let mut to_pin: Vec<(&Host, Vec<ScannedKey>)> = Vec::new();
    for (host, scan) in hosts.iter().zip(scans) {
        let keys = match scan {
            Ok(keys) => keys,
            Err(e) => {
                errln!("{}: {e}", host.name);
                failed += 1;
                continue;
            }
        };
        let pinned = trust::pinned(&known_hosts, host)?;
        for k in &keys {
            let state = if pinned.iter().any(|p| p.blob == k.blob) {
                "pinned"
            } else if pinned.is_empty() {
                "new"
            } else {
                "CHANGED"
            };
            outln!(
                "{} {}:{} {} {} ({state})",
                host.name,
                host.address,
                host.port,
                k.kind,
                k.fingerprint
            );
        }
        let keys: Vec<ScannedKey> = if expect.is_empty() {
            keys
        } else {
            keys.into_iter()
                .filter(|k| expect.contains(&k.fingerprint))
                .collect()
        };
        if keys.is_empty() {
            errln!(
                "{}: no key matches --expect {}; nothing pinned for it",
                host.name,
                expect.join(", ")
            );
            failed += 1;
            continue;
        }
        let same = pinned.len() == keys.len() && keys.iter().all(|k| pinned.contains(k));
        if same {
            continue;
        }
        if !pinned.is_empty() && !replace {
            errln!(
                "{}: its key differs from the one pinned in {} ({}); if the host was reinstalled, check the new fingerprint out of band and run `gantry hosts trust {} --replace`",
                host.name,
                known_hosts.display(),
                pinned
                    .iter()
                    .map(|p| p.fingerprint.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                host.name
            );
            failed += 1;
            continue;
        }
        to_pin.push((host, keys));
    }
    if !to_pin.is_empty() && expect.is_empty() && !yes {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            bail!("not pinning without confirmation: compare the fingerprints above with the hosts' own (`ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub` on each), then run again with --yes, or pass them with --expect");
        }
        eprint!(
            "Pin the keys of {} in {}? Compare the fingerprints with the hosts' own first. [y/N] ",
            to_pin
                .iter()
                .map(|(h, _)| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            known_hosts.display()
        );
        let mut answer = String::new();
        stdin.read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            errln!("nothing pinned");
            return Ok(ExitCode::Error);
        }
    }
    for (host, keys) in &to_pin {
        trust::write_pins(&known_hosts, host, keys)?;
        outln!(
            "{}: pinned {} in {}",
            host.name,
            keys.iter()
                .map(|k| k.fingerprint.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            known_hosts.display()
        );
    }
    Ok(if failed == 0 {
        ExitCode::Success
    } else {
        ExitCode::Error
    })
}

/// One configured host as `gantry hosts` shows it.
#[derive(Serialize)]
struct HostRow {
    name: String,
    address: String,
    port: u16,
    user: Option<String>,
    site: Option<String>,
    labels: std::collections::BTreeMap<String, String>,
    /// Fingerprints pinned for it.
    pinned: Vec<String>,
    reachable: bool,
    /// How long opening the SSH connection took, when it opened.
    connect_ms: Option<u64>,
    error: Option<String>,
}

async fn list(data_dir: &Path, config_path: &Path, output: Output) -> Exit {
    let config = match load(config_path)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let hosts = selected(&config, &[])?;
    let known_hosts = known_hosts_path(data_dir, &config);
    let ssh = SshHosts::open(data_dir, &config.ssh)?;
    let checks = futures_join(hosts.iter().map(|h| {
        let ssh = ssh.clone();
        async move {
            let started = Instant::now();
            let session = ssh.connect(h).await?;
            let took = started.elapsed();
            session.check().await?;
            let _ = session.close().await;
            Ok::<_, gantry_server::fleet::ssh::HostError>(took)
        }
    }))
    .await;
    let mut rows = Vec::new();
    for (h, check) in hosts.iter().zip(checks) {
        let pinned = trust::pinned(&known_hosts, h)?
            .into_iter()
            .map(|k| k.fingerprint)
            .collect();
        let (reachable, connect_ms, error) = match check {
            Ok(took) => (true, Some(took.as_millis() as u64), None),
            Err(e) => (false, None, Some(e.to_string())),
        };
        rows.push(HostRow {
            name: h.name.clone(),
            address: h.address.clone(),
            port: h.port,
            user: h.user.clone(),
            site: h.site.clone(),
            labels: h.labels.clone(),
            pinned,
            reachable,
            connect_ms,
            error,
        });
    }
    output.show(&rows, |rows| {
        outln!(
            "{:<16} {:<24} {:<10} {:<20} {:<8} REACHABLE",
            "HOST",
            "ADDRESS",
            "SITE",
            "LABELS",
            "PINNED"
        );
        for r in rows {
            let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            outln!(
                "{:<16} {:<24} {:<10} {:<20} {:<8} {}",
                r.name,
                format!("{}:{}", r.address, r.port),
                r.site.as_deref().unwrap_or("-"),
                if labels.is_empty() {
                    "-".to_owned()
                } else {
                    labels.join(",")
                },
                if r.pinned.is_empty() { "no" } else { "yes" },
                match (&r.connect_ms, &r.error) {
                    (Some(ms), _) => format!("yes ({ms} ms)"),
                    (None, Some(e)) => format!("no: {e}"),
                    (None, None) => "no".to_owned(),
                }
            );
        }
    })?;
    Ok(if rows.iter().all(|r| r.reachable) {
        ExitCode::Success
    } else {
        ExitCode::Error
    })
}

/// Runs the futures at once and returns their outputs in order (the
/// fleet-wide caps live in `SshHosts`; this only waits for all of them).
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    futures_util::future::join_all(futures).await
}

/// The running controller, when there is one to ask: `--server`, or the
/// data directory's `server.json`. Without one, `gantry hosts` shows the
/// config's hosts as this machine reaches them.
fn controller(data_dir: &Path, server: Option<&str>) -> Option<Client> {
    if server.is_none() && !data_dir.join(gantry_server::SERVER_FILE).exists() {
        return None;
    }
    match crate::client::connect(data_dir, server) {
        Ok(c) => Some(c),
        Err(e) => {
            errln!("{e:#}");
            None
        }
    }
}

/// `1.2 GB`-style sizes for the FREE column.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// How long ago `ms` was, relative to `now`, to the second.
fn ago(now: gantry_core::Millis, ms: gantry_core::Millis) -> String {
    format!("{}s ago", ((now - ms).max(0) + 500) / 1000)
}

/// The REACHABLE column: since when, or when last seen.
fn reachability(now: gantry_core::Millis, h: &HostView) -> String {
    match (h.reachable, h.connected_since, h.last_seen) {
        (true, Some(since), _) => format!("yes, since {}", time(since)),
        (true, None, _) => "yes".to_owned(),
        (false, _, Some(seen)) => format!("NO, last seen {} ({})", time(seen), ago(now, seen)),
        (false, _, None) => "NO, never seen".to_owned(),
    }
}

/// The controller's view: one row per host and environment, then what is
/// wrong (unreachable hosts, instances not healthy) line by line.
fn show_observed(view: &HostsView, output: Output) -> Exit {
    output.show(view, |view| {
        let now = view.observed_at;
        outln!(
            "{:<14} {:<10} {:<40} {:<12} {:<14} {:<10} {:<8} {:<7} FREE",
            "HOST",
            "SITE",
            "REACHABLE",
            "ENVIRONMENT",
            "RELEASE",
            "INSTANCES",
            "HEALTHY",
            "ROUTER"
        );
        for h in &view.hosts {
            let reach = reachability(now, h);
            let free = h.free_bytes.map_or("-".to_owned(), bytes);
            let site = h.site.as_deref().unwrap_or("-");
            if h.environments.is_empty() {
                outln!(
                    "{:<14} {:<10} {:<40} {:<12} {:<14} {:<10} {:<8} {:<7} {free}",
                    h.name,
                    site,
                    reach,
                    "-",
                    "-",
                    "-",
                    "-",
                    "-"
                );
            }
            for e in &h.environments {
                let release = if e.releases.is_empty() {
                    "-".to_owned()
                } else {
                    e.releases.join("+")
                };
                let healthy = e
                    .instances
                    .iter()
                    .filter(|i| i.health == InstanceHealthView::Healthy)
                    .count();
                outln!(
                    "{:<14} {:<10} {:<40} {:<12} {:<14} {:<10} {:<8} {:<7} {free}",
                    h.name,
                    site,
                    reach,
                    e.env,
                    release,
                    format!("{}/{}", e.instances.len(), e.expected_instances),
                    if h.reachable {
                        format!("{healthy}/{}", e.instances.len())
                    } else {
                        "-".to_owned()
                    },
                    match e.router_running {
                        Some(true) => "yes",
                        Some(false) => "NO",
                        None => "-",
                    }
                );
            }
        }
        for h in &view.hosts {
            if let Some(error) = &h.error {
                outln!("{}: {error}", h.name);
            }
            for e in &h.environments {
                for i in e
                    .instances
                    .iter()
                    .filter(|i| i.health != InstanceHealthView::Healthy)
                {
                    outln!(
                        "{}: {} ({}) {:?}: {}",
                        h.name,
                        i.id,
                        i.version,
                        i.health,
                        i.detail.as_deref().unwrap_or("-")
                    );
                }
            }
        }
    })?;
    Ok(if view.hosts.iter().all(|h| h.reachable) {
        ExitCode::Success
    } else {
        ExitCode::Error
    })
}
