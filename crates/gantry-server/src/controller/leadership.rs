//! Who acts. With SQLite the one controller of the data file always leads.
//! With PostgreSQL any number of controllers share the database and one
//! leads, by the store's lease (`gantry_store::LeaseStore`): only the leader
//! drives deployments and runs the watchdogs, retention, the notification
//! dispatcher and the checkpoints; a follower serves reads and hands writes
//! to the leader (`api/forward.rs`).
//!
//! A term is one stretch of leading under one epoch. Everything the leader
//! runs is spawned in its term (`spawn_led`) and ends when the term ends:
//! when a renewal finds the lease lost, when it cannot be renewed before it
//! expires (the deadline is kept on this process's monotonic clock, a tenth
//! short of the database's expiry), or when the store fences a write
//! (`StoreError::Fenced`). The store's fence makes the rest safe: a write
//! of an ended term that was already on its way is refused by the database.
//!
//! Taking office runs the same recovery a restarted controller runs
//! (adopt instances and routers, resume deployments) under the new epoch,
//! and only then serves writes.

use super::{now_ms, ControlError, Controller};
use gantry_api::ClusterView;
use gantry_store::{
    Acquired, Candidate, ControllerRecord, Fence, LeaseRecord, LeaseStore, StoreError,
};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What this controller is now.
enum Role {
    Leading {
        epoch: u64,
        /// Past this instant the lease may have expired in the database:
        /// this controller acts no more. `None`: it never expires (SQLite).
        until: Option<Instant>,
        /// Cancelled when the term ends: every task of the term stops.
        term: CancellationToken,
        /// Start-up recovery is done: writes are served.
        ready: bool,
    },
    Following {
        /// The lease as last seen (its holder's URL takes forwarded writes).
        leader: Option<LeaseRecord>,
    },
}

/// The lease's settings and the parts a change of leader touches.
pub struct ClusterOptions {
    pub leases: Arc<dyn LeaseStore>,
    pub lease: Duration,
    pub renew_every: Duration,
    /// Fleet hosts fence by epoch: a new term greets them with its own.
    pub fleet: Option<Arc<crate::fleet::FleetLinks>>,
}

/// What the leader runs besides the drive loops, set once at start.
#[derive(Debug, Clone, Default)]
pub struct LeaderTasks {
    /// Where to keep the Prometheus `file_sd` list of instances, if asked.
    pub scrape_targets: Option<PathBuf>,
    /// How often to look for drift (none if zero).
    pub drift_every: Option<Duration>,
    /// `server.json` and what it says: rewritten at each taking of office,
    /// so a CLI that finds its controller there finds the leader.
    pub server_file: Option<(PathBuf, String)>,
}

pub(super) struct Leadership {
    me: OnceLock<Candidate>,
    role: Mutex<Role>,
    /// Woken at every change of role (and when recovery is done).
    changed: tokio::sync::Notify,
    cluster: OnceLock<ClusterOptions>,
    tasks: OnceLock<LeaderTasks>,
}

impl Default for Leadership {
    /// Leading, under epoch 0, until told otherwise: a controller built
    /// without a cluster (tests, tools) acts as a lone controller does.
    fn default() -> Leadership {
        Leadership {
            me: OnceLock::new(),
            role: Mutex::new(Role::Leading {
                epoch: 0,
                until: None,
                term: CancellationToken::new(),
                ready: true,
            }),
            changed: tokio::sync::Notify::new(),
            cluster: OnceLock::new(),
            tasks: OnceLock::new(),
        }
    }
}

/// Unique per process: the host's name, the process id and a random tag
/// (a restarted process may get the same pid).
fn controller_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "controller".to_owned());
    let mut tag = [0u8; 3];
    let _ = getrandom::fill(&mut tag);
    format!("{host}-{}-{}", std::process::id(), hex::encode(tag))
}

/// How long a lease renewed now may be acted on: a tenth short of the
/// database's expiry, for the clocks' rates and the answer's travel.
fn acting_span(lease: Duration) -> Duration {
    lease - lease / 10
}

impl Controller {
    fn role(&self) -> std::sync::MutexGuard<'_, Role> {
        self.leadership
            .role
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// This controller as the lease and the heartbeats name it.
    pub fn identity(&self) -> Candidate {
        self.leadership
            .me
            .get_or_init(|| Candidate {
                id: controller_id(),
                api_url: String::new(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .clone()
    }

    fn set_identity(&self, api_url: &str) {
        let _ = self.leadership.me.set(Candidate {
            id: controller_id(),
            api_url: api_url.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        });
    }

    /// The epoch this controller leads under, while its lease holds.
    pub(crate) fn acting_epoch(&self) -> Option<u64> {
        match &*self.role() {
            Role::Leading { epoch, until, .. } if until.is_none_or(|u| Instant::now() < u) => {
                Some(*epoch)
            }
            _ => None,
        }
    }

    /// Whether this controller leads and has recovered: it serves writes.
    pub fn leads(&self) -> bool {
        match &*self.role() {
            Role::Leading { until, ready, .. } => {
                *ready && until.is_none_or(|u| Instant::now() < u)
            }
            Role::Following { .. } => false,
        }
    }

    /// Where the leader serves its API, as this follower last saw the lease
    /// (`None` when this controller leads, or no live lease is known).
    pub fn leader_url(&self) -> Option<String> {
        let me = self.identity().id;
        match &*self.role() {
            Role::Following {
                leader: Some(lease),
            } if lease.live && lease.holder != me && !lease.api_url.is_empty() => {
                Some(lease.api_url.clone())
            }
            _ => None,
        }
    }

    /// Resolves at the next change of role (or within `at_most`).
    pub async fn role_change(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.leadership.changed.notified()).await;
    }

    /// How long a write may wait for a leader: a dead leader's lease to
    /// expire, a follower to take it and recover, with room to spare.
    pub fn leader_wait(&self) -> Duration {
        match self.leadership.cluster.get() {
            Some(c) => 2 * c.lease + c.renew_every + Duration::from_secs(5),
            None => Duration::from_secs(5),
        }
    }

    /// Spawns `task` in the current term: it stops when the term ends. Not
    /// spawned at all when this controller does not lead.
    pub(super) fn spawn_led(&self, task: impl Future<Output = ()> + Send + 'static) -> bool {
        let term = match &*self.role() {
            Role::Leading { term, .. } => term.clone(),
            Role::Following { .. } => return false,
        };
        tokio::spawn(async move {
            tokio::select! {
                _ = term.cancelled() => {}
                _ = task => {}
            }
        });
        true
    }

    /// Whether `e` says this controller's leadership has ended; if so, it
    /// steps down now (the caller stops what it was doing).
    pub(super) fn lost_office(&self, e: &StoreError) -> bool {
        if !matches!(e, StoreError::Fenced(_)) {
            return false;
        }
        let epoch = match &*self.role() {
            Role::Leading { epoch, .. } => *epoch,
            Role::Following { .. } => return true,
        };
        self.step_down(epoch, &e.to_string());
        true
    }

    /// Ends the term of `epoch` (if it is the current one): its tasks stop,
    /// the store refuses leader-only writes, and this controller follows.
    fn step_down(&self, epoch: u64, why: &str) {
        {
            let mut role = self.role();
            match &*role {
                Role::Leading { epoch: e, term, .. } if *e == epoch => term.cancel(),
                _ => return,
            }
            if let Some(c) = self.leadership.cluster.get() {
                c.leases.set_fence(Fence::Follower);
            }
            *role = Role::Following { leader: None };
        }
        self.inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        tracing::warn!(epoch, "stepping down: {why}; this controller follows now");
        self.leadership.changed.notify_waiters();
    }

    /// The lone controller of a SQLite file: it leads under `epoch` for as
    /// long as it runs. Recovers, then starts the leader's tasks.
    pub async fn lead_alone(
        self: &Arc<Self>,
        api_url: &str,
        epoch: u64,
        tasks: LeaderTasks,
    ) -> Result<(), ControlError> {
        self.set_identity(api_url);
        let _ = self.leadership.tasks.set(tasks);
        *self.role() = Role::Leading {
            epoch,
            until: None,
            term: CancellationToken::new(),
            ready: false,
        };
        self.recover().await?;
        self.begin_serving(epoch);
        Ok(())
    }

    /// One of several controllers on a database: takes part in the lease.
    /// Returns once this controller knows its role; if it took the lease,
    /// once it has recovered (as a lone controller does before serving).
    pub async fn join_cluster(
        self: &Arc<Self>,
        api_url: &str,
        options: ClusterOptions,
        tasks: LeaderTasks,
    ) {
        self.set_identity(api_url);
        let _ = self.leadership.tasks.set(tasks);
        options.leases.set_fence(Fence::Follower);
        *self.role() = Role::Following { leader: None };
        let _ = self.leadership.cluster.set(options);
        let next = self.lease_round().await;
        // Took office: wait for recovery (or for the term to end).
        let deadline = Instant::now() + Duration::from_secs(120);
        while matches!(&*self.role(), Role::Leading { ready: false, .. })
            && Instant::now() < deadline
        {
            self.role_change(Duration::from_millis(100)).await;
        }
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut next = next;
            loop {
                tokio::time::sleep_until(next.into()).await;
                let Some(c) = this.upgrade() else { return };
                next = c.lease_round().await;
            }
        });
    }

    /// One turn of the lease loop: heartbeat, then renew (leading) or try
    /// to take the lease (following). Returns when to turn again.
    async fn lease_round(self: &Arc<Self>) -> Instant {
        let Some(cluster) = self.leadership.cluster.get() else {
            return Instant::now() + Duration::from_secs(3600);
        };
        let (leases, lease, renew) = (cluster.leases.clone(), cluster.lease, cluster.renew_every);
        let me = self.identity();
        let beat = me.clone();
        match blocking(&leases, renew, move |l| l.heartbeat(&beat)).await {
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "cannot record this controller's heartbeat"),
        }
        let leading = match &*self.role() {
            Role::Leading { epoch, until, .. } => Some((*epoch, *until)),
            Role::Following { .. } => None,
        };
        match leading {
            Some((epoch, until)) => {
                let until = until.unwrap_or_else(|| Instant::now() + lease);
                let sent = Instant::now();
                let holder = me.id.clone();
                let wait = until.saturating_duration_since(sent);
                match blocking(&leases, wait, move |l| l.renew(&holder, epoch, lease)).await {
                    Ok(Some(_)) => {
                        if let Role::Leading {
                            epoch: e, until, ..
                        } = &mut *self.role()
                        {
                            if *e == epoch {
                                *until = Some(sent + acting_span(lease));
                            }
                        }
                        sent + renew
                    }
                    Ok(None) => {
                        self.step_down(epoch, "the lease was lost (expired or taken over)");
                        Instant::now() + renew
                    }
                    Err(e) if Instant::now() + renew / 4 < until => {
                        tracing::warn!(epoch, error = %e, "cannot renew the lease; trying again");
                        Instant::now() + renew / 4
                    }
                    Err(e) => {
                        self.step_down(
                            epoch,
                            &format!("the lease could not be renewed before it expired ({e})"),
                        );
                        Instant::now() + renew
                    }
                }
            }
            None => {
                let sent = Instant::now();
                let candidate = me.clone();
                match blocking(&leases, lease, move |l| l.acquire(&candidate, lease)).await {
                    Ok(Acquired::Leading { epoch, .. }) => {
                        self.take_office(epoch, sent + acting_span(lease)).await;
                        sent + renew
                    }
                    Ok(Acquired::Held { lease: held, now }) => {
                        // Ask again right after it expires, at most a renewal from now.
                        let left = held.expires_at.map_or(0, |e| (e - now).max(0) as u64 + 20);
                        if let Role::Following { leader } = &mut *self.role() {
                            *leader = Some(held);
                        }
                        self.leadership.changed.notify_waiters();
                        Instant::now() + renew.min(Duration::from_millis(left))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot ask for the lease");
                        Instant::now() + renew
                    }
                }
            }
        }
    }

    /// The lease is ours under `epoch`: fence the store and the hosts with
    /// it, then recover and start the leader's tasks in the new term.
    async fn take_office(self: &Arc<Self>, epoch: u64, until: Instant) {
        let Some(cluster) = self.leadership.cluster.get() else {
            return;
        };
        cluster.leases.set_fence(Fence::Leader(epoch));
        if let Some(fleet) = &cluster.fleet {
            fleet.begin_epoch(epoch).await;
        }
        *self.role() = Role::Leading {
            epoch,
            until: Some(until),
            term: CancellationToken::new(),
            ready: false,
        };
        tracing::warn!(epoch, "this controller leads now; recovering");
        // Each deployment's log says who took it over, before it resumes.
        if let Ok(active) = self.store.active_deployments() {
            let id = self.identity().id;
            for d in active {
                self.add_notes(
                    d.id,
                    vec![format!(
                        "controller {id} took the lease under epoch {epoch}"
                    )],
                );
            }
        }
        self.leadership.changed.notify_waiters();
        let this = self.clone();
        self.spawn_led(async move {
            match this.recover().await {
                Ok(()) => this.begin_serving(epoch),
                Err(e) => this.step_down(epoch, &format!("recovery failed: {e}")),
            }
        });
    }

    /// Recovery is done: writes are served and the leader's tasks start.
    fn begin_serving(self: &Arc<Self>, epoch: u64) {
        match &mut *self.role() {
            Role::Leading {
                epoch: e, ready, ..
            } if *e == epoch => *ready = true,
            _ => return,
        }
        let tasks = self.leadership.tasks.get().cloned().unwrap_or_default();
        self.spawn_router_watchdog(Duration::from_millis(500));
        self.spawn_retention();
        if let Some(path) = tasks.scrape_targets {
            self.spawn_scrape_targets(path, Duration::from_millis(500));
        }
        self.spawn_notifier();
        self.spawn_output_watch();
        self.spawn_audit_checkpoints(crate::audit::CHECKPOINT_EVERY);
        if let Some(every) = tasks.drift_every {
            self.spawn_drift_watch(every);
        }
        if let Some((path, info)) = &tasks.server_file {
            if let Err(e) = crate::secret_file::write(path, info) {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the server file");
            }
        }
        self.leadership.changed.notify_waiters();
    }

    /// At a clean stop: the term ends and, on a database, the lease is
    /// handed back at once (no follower waits for it to expire).
    pub async fn retire(&self) {
        let epoch = match &*self.role() {
            Role::Leading { epoch, term, .. } => {
                term.cancel();
                Some(*epoch)
            }
            Role::Following { .. } => None,
        };
        let Some(cluster) = self.leadership.cluster.get() else {
            return;
        };
        cluster.leases.set_fence(Fence::Follower);
        *self.role() = Role::Following { leader: None };
        let id = self.identity().id;
        if let Err(e) = blocking(&cluster.leases, Duration::from_secs(5), move |l| {
            l.retire(&id, epoch)
        })
        .await
        {
            tracing::warn!(error = %e, "cannot hand the lease back");
        }
    }

    /// `GET /cluster`: the controllers, the leader, its epoch and lease.
    pub fn cluster_view(&self) -> Result<ClusterView, ControlError> {
        let me = self.identity();
        let this_leads = self.leads();
        let Some(cluster) = self.leadership.cluster.get() else {
            // SQLite: this controller alone, leading for as long as it runs.
            let epoch = match &*self.role() {
                Role::Leading { epoch, .. } => *epoch,
                Role::Following { .. } => 0,
            };
            let now = now_ms();
            return Ok(ClusterView {
                store: "sqlite".to_owned(),
                this: me.id.clone(),
                this_leads,
                lease: Some(LeaseRecord {
                    holder: me.id.clone(),
                    api_url: me.api_url.clone(),
                    epoch,
                    acquired_at: self.started_at,
                    expires_at: None,
                    live: true,
                }),
                controllers: vec![ControllerRecord {
                    id: me.id,
                    api_url: me.api_url,
                    version: me.version,
                    started_at: self.started_at,
                    last_seen: now,
                    leader: true,
                }],
                observed_at: now,
            });
        };
        let seen = cluster.leases.cluster()?;
        Ok(ClusterView {
            store: "postgresql".to_owned(),
            this: me.id,
            this_leads,
            lease: seen.lease,
            controllers: seen.controllers,
            observed_at: seen.now,
        })
    }
}

/// Runs a lease call off the async workers, giving up waiting after `at_most`
/// (the call itself ends with its connection's own timeouts).
async fn blocking<T: Send + 'static>(
    leases: &Arc<dyn LeaseStore>,
    at_most: Duration,
    call: impl FnOnce(&dyn LeaseStore) -> gantry_store::Result<T> + Send + 'static,
) -> gantry_store::Result<T> {
    let leases = leases.clone();
    let job = tokio::task::spawn_blocking(move || call(&*leases));
    match tokio::time::timeout(at_most, job).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(StoreError::Database(format!("the lease call failed: {e}"))),
        Err(_) => Err(StoreError::Database(format!(
            "the database did not answer within {}ms",
            at_most.as_millis()
        ))),
    }
}
