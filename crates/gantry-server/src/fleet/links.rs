//! The controller's open channels to its fleet: one [`HostLink`] per host,
//! made on first use (master connection, binary bootstrapped by digest,
//! `host serve` launched, greeted with the controller's fencing token) and
//! made again when it has closed. Hosts are connected concurrently, each
//! at most once at a time; the caps of `[ssh]` hold below (`ssh.rs`).

use super::link::{HostLink, LinkError, LinkOptions};
use super::protocol::{Hello, HostConfinement, PROTOCOL};
use super::ssh::{BinaryImage, HostError, HostServeGuard, HostSession, SshHosts};
use gantry_config::{Host, SshSettings};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// Who the controller is to its hosts.
#[derive(Debug, Clone)]
pub struct ControllerIdentity {
    /// Stable across restarts of one controller (its data directory's id).
    pub id: String,
    /// Raised at every start: a host refuses a lower one.
    pub epoch: u64,
    pub confinement: HostConfinement,
}

/// A live channel and what keeps it open.
struct Open {
    link: Arc<HostLink>,
    _guard: HostServeGuard,
    _session: HostSession,
}

/// One slot per host: connecting holds its lock, so a host is never
/// connected twice at once, while other hosts connect in parallel.
type Slot = Arc<tokio::sync::Mutex<Option<Open>>>;

pub struct FleetLinks {
    ssh: SshHosts,
    hosts: HashMap<String, Host>,
    binary: BinaryImage,
    identity: ControllerIdentity,
    /// The epoch greeted with: `identity.epoch` until a new term of
    /// leadership raises it (`begin_epoch`).
    epoch: std::sync::atomic::AtomicU64,
    options: LinkOptions,
    slots: HashMap<String, Slot>,
    /// Hosts whose connection failed slowly (a timeout), until when they
    /// are not tried again, and why: an unreachable host costs one
    /// `connect_timeout` per backoff period, not one per request.
    down: std::sync::Mutex<HashMap<String, Down>>,
    /// What `gantry hosts` shows of each host's channel (observation only).
    presence: std::sync::Mutex<HashMap<String, Presence>>,
}

/// When a host was last connected, last answered and last failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// Since when the current channel is open (`None`: no channel open).
    pub connected_since: Option<gantry_core::Millis>,
    /// When the host last answered (a connection's greeting or any reply).
    pub last_seen: Option<gantry_core::Millis>,
    /// Why the last connection attempt failed, if it did.
    pub last_error: Option<String>,
}

struct Down {
    until: Instant,
    backoff: Duration,
    reason: String,
}

/// Why a connection failed, and whether the host refused it (a key or a
/// login), which is answered at once and not backed off.
struct Failure {
    reason: String,
    refused: bool,
}

impl From<String> for Failure {
    fn from(reason: String) -> Failure {
        Failure {
            reason,
            refused: false,
        }
    }
}

/// The first wait after a failed connection; it doubles up to the cap.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A failed connection faster than this is not backed off.
const QUICK_FAILURE: Duration = Duration::from_secs(1);

impl FleetLinks {
    /// Channels to `hosts`, reached as `[ssh]` says, carrying `binary` (the
    /// controller's own executable) to each.
    pub fn open(
        data_dir: &Path,
        settings: &SshSettings,
        hosts: &[Host],
        binary: BinaryImage,
        identity: ControllerIdentity,
        options: LinkOptions,
    ) -> Result<FleetLinks, super::ssh::HostError> {
        let ssh = SshHosts::open(data_dir, settings)?;
        Ok(FleetLinks {
            ssh,
            hosts: hosts.iter().map(|h| (h.name.clone(), h.clone())).collect(),
            binary,
            epoch: std::sync::atomic::AtomicU64::new(identity.epoch),
            identity,
            options,
            slots: hosts
                .iter()
                .map(|h| (h.name.clone(), Slot::default()))
                .collect(),
            down: Default::default(),
            presence: Default::default(),
        })
    }

    pub fn ssh(&self) -> &SshHosts {
        &self.ssh
    }

    /// A new term of leadership under `epoch`: open channels (greeted with
    /// the old epoch) are closed, and every host is greeted again with the
    /// new one on its next use, so hosts refuse the previous leader.
    pub async fn begin_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, std::sync::atomic::Ordering::SeqCst);
        for slot in self.slots.values() {
            slot.lock().await.take();
        }
    }

    /// The open channel to `host`, connecting (or reconnecting) first.
    /// The error names the host and what to do.
    pub async fn link(&self, host: &str) -> Result<Arc<HostLink>, String> {
        let (Some(slot), Some(config)) = (self.slots.get(host), self.hosts.get(host)) else {
            return Err(format!("host {host:?} is not in the config's [hosts]"));
        };
        let mut open = slot.lock().await;
        if let Some(o) = open.as_ref() {
            if o.link.closed().is_none() {
                return Ok(o.link.clone());
            }
            tracing::warn!(host, reason = ?o.link.closed(), "channel to host closed; reconnecting");
            self.note_closed(host, &o.link);
            *open = None;
        }
        if let Some(d) = self.down_lock().get(host) {
            let now = Instant::now();
            if d.until > now {
                return Err(format!(
                    "{} (not tried again for {} s)",
                    d.reason,
                    (d.until - now).as_secs().max(1)
                ));
            }
        }
        let attempt = Instant::now();
        match self.connect_noted(config).await {
            // A refusal (a key not pinned yet, a login refused) or any quick
            // failure is cheap to ask again, and may be fixed any moment.
            Err(f) if f.refused || attempt.elapsed() < QUICK_FAILURE => Err(f.reason),
            Ok(fresh) => {
                self.down_lock().remove(host);
                let link = fresh.link.clone();
                *open = Some(fresh);
                Ok(link)
            }
            Err(Failure { reason, .. }) => {
                let mut down = self.down_lock();
                let backoff = down
                    .get(host)
                    .map_or(FIRST_BACKOFF, |d| (d.backoff * 2).min(MAX_BACKOFF));
                down.insert(
                    host.to_owned(),
                    Down {
                        until: Instant::now() + backoff,
                        backoff,
                        reason: reason.clone(),
                    },
                );
                Err(reason)
            }
        }
    }

    fn down_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Down>> {
        self.down.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets that `host` was unreachable, so the next request tries it at once.
    pub fn retry_now(&self, host: &str) {
        self.down_lock().remove(host);
    }

    /// Every host the controller knows, by name.
    pub fn host_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.hosts.keys().cloned().collect();
        names.sort();
        names
    }

    /// The channel to `host` if one is open now, without connecting.
    pub async fn open_link(&self, host: &str) -> Option<Arc<HostLink>> {
        let slot = self.slots.get(host)?;
        let open = slot.lock().await;
        open.as_ref()
            .filter(|o| o.link.closed().is_none())
            .map(|o| o.link.clone())
    }

    async fn connect(&self, host: &Host) -> Result<Open, Failure> {
        let session = self.ssh.connect(host).await.map_err(|e| Failure {
            refused: matches!(
                e,
                HostError::UnknownHostKey { .. }
                    | HostError::HostKey { .. }
                    | HostError::Auth { .. }
            ),
            reason: e.to_string(),
        })?;
        session
            .bootstrap(&self.binary)
            .await
            .map_err(|e| e.to_string())?;
        let serve = session
            .launch_host_serve(&self.binary.sha256)
            .await
            .map_err(|e| e.to_string())?;
        let (stdin, stdout, stderr, guard) = serve.into_parts();
        // The host's log lines, bounded per line, into the controller's log.
        let name = host.name.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line: String = line.chars().take(2000).collect();
                tracing::info!(host = %name, "{line}");
            }
        });
        let hello = Hello {
            protocol: PROTOCOL,
            controller: self.identity.id.clone(),
            epoch: self.epoch.load(std::sync::atomic::Ordering::SeqCst),
            data_dir: host.data_dir.clone(),
            confinement: self.identity.confinement.clone(),
        };
        let link = HostLink::connect(stdout, stdin, hello, self.options)
            .await
            .map_err(|e| describe(&host.name, e))?;
        tracing::info!(host = %host.name, data_dir = %link.welcome().data_dir, "host connected");
        Ok(Open {
            link: Arc::new(link),
            _guard: guard,
            _session: session,
        })
    }
}

/// Observation: what `gantry hosts` reads of the channels. Kept apart
/// from the connecting code above, which only calls the `note_*` functions.
impl FleetLinks {
    fn presence_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Presence>> {
        self.presence.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn connect_noted(&self, host: &Host) -> Result<Open, Failure> {
        let result = self.connect(host).await;
        let now = crate::clock::now_ms();
        let mut presence = self.presence_lock();
        let p = presence.entry(host.name.clone()).or_default();
        match &result {
            Ok(_) => {
                p.connected_since = Some(now);
                p.last_seen = Some(now);
                p.last_error = None;
            }
            Err(e) => {
                p.connected_since = None;
                p.last_error = Some(e.reason.clone());
            }
        }
        result
    }

    /// Keeps a closing channel's last answer, so "last seen" survives it.
    fn note_closed(&self, host: &str, link: &HostLink) {
        let mut presence = self.presence_lock();
        let p = presence.entry(host.to_owned()).or_default();
        p.connected_since = None;
        p.last_seen = p.last_seen.max(link.last_answer());
        if let Some(reason) = link.closed() {
            p.last_error = Some(reason);
        }
    }

    /// What is known of `host`'s channel now, without asking it anything:
    /// the open channel's last answer counts as seen.
    pub async fn presence(&self, host: &str) -> Presence {
        let open = match self.slots.get(host) {
            // A host being connected holds its slot: nothing open to read.
            Some(slot) => slot
                .try_lock()
                .ok()
                .and_then(|o| o.as_ref().map(|o| o.link.clone())),
            None => None,
        };
        let mut p = self.presence_lock().get(host).cloned().unwrap_or_default();
        if let Some(link) = open {
            p.last_seen = p.last_seen.max(link.last_answer());
            if let Some(reason) = link.closed() {
                p.connected_since = None;
                p.last_error = Some(reason);
            }
        }
        p
    }

    /// Why `host` is not being connected now, if it is backed off.
    pub fn backed_off(&self, host: &str) -> Option<String> {
        let down = self.down_lock();
        let d = down.get(host)?;
        (d.until > Instant::now()).then(|| d.reason.clone())
    }

    /// The host's config entry.
    pub fn host(&self, host: &str) -> Option<&Host> {
        self.hosts.get(host)
    }
}

/// A link error with the host's name in front.
pub fn describe(host: &str, e: LinkError) -> String {
    format!("host {host}: {e}")
}
