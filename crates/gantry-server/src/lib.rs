//! The controller process (`gantry server`): owns the store, the engine's
//! runtime, the target and the routers, and serves the HTTP API.
//!
//! Only this crate speaks HTTP and JSON to the outside. It depends on the
//! core for the rules, on the store for durability and on the router crate
//! for the routing types it sends to router processes and for the bounded
//! accept loop (`gantry_router::listener`) that serves its API too.

pub use gantry_api::ServerInfo;
pub use gantry_store::DatabaseUrl;

mod api;
pub mod artifact;
pub mod audit;
mod clock;
pub mod confine;
pub mod controller;
mod data_dir;
mod error;
pub mod fleet;
pub mod governance;
mod hooks;
mod notify;
mod observe;
mod plan;
mod probe;
pub mod prometheus;
pub mod routing;
mod secret_file;
mod smoke;
pub mod target;
mod usage;

pub use controller::Controller;

/// The OpenAPI 3 document of the API (as served at `/openapi.json`).
pub fn openapi_document() -> String {
    api::openapi::document_text()
}

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const SERVER_FILE: &str = "server.json";
pub const TOKEN_FILE: &str = "admin.token";

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub listen: SocketAddr,
    /// The gantry executable, run as `gantry router` for each environment.
    pub exe: PathBuf,
    /// Timeouts and the connection limit of the API listener.
    pub limits: ConnectionLimits,
    /// The PostgreSQL database that holds the state; SQLite in the data
    /// directory when `None`. Shown with its password hidden.
    pub store: Option<DatabaseUrl>,
    /// The URL other controllers on the same database forward writes to
    /// while this one leads; `http://` and the listening address if `None`.
    pub advertise_url: Option<String>,
}

pub use gantry_router::listener::ConnectionLimits;

/// The API listener's bounds unless told otherwise: the API serves
/// operators, CI and dashboards, far fewer clients than the router.
pub const API_LIMITS: ConnectionLimits = ConnectionLimits {
    header_timeout: std::time::Duration::from_secs(10),
    idle_timeout: std::time::Duration::from_secs(60),
    max_connections: 256,
};

/// How long open API connections (e.g. event streams) get to finish at shutdown.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] gantry_config::ConfigError),
    #[error("data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
    #[error("another controller is already using data directory {0}")]
    Locked(String),
    #[error(transparent)]
    Store(#[from] gantry_store::StoreError),
    /// `[store] url` names a source that has no value.
    #[error("store.url: {0}")]
    StoreUrl(String),
    #[error(transparent)]
    Blobs(#[from] gantry_store::BlobError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot confine instances: {0}")]
    Confine(String),
    #[error("recovery failed: {0}")]
    Recovery(String),
    #[error("fleet: {0}")]
    Fleet(String),
    #[error("--advertise-url: {0}")]
    AdvertiseUrl(String),
}

fn data_err(path: &Path) -> impl Fn(std::io::Error) -> ServerError + '_ {
    move |e| ServerError::DataDir {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The channels to the config's fleet hosts (none without `[hosts]`):
/// nothing is connected yet, each host on its first use.
fn open_fleet(
    dir: &Path,
    exe: &Path,
    config: &gantry_config::Config,
    epoch: u64,
) -> Result<Option<Arc<fleet::FleetLinks>>, ServerError> {
    if config.hosts.is_empty() {
        return Ok(None);
    }
    let fleet_err = |reason: String| ServerError::Fleet(reason);
    let binary = fleet::ssh::BinaryImage::of(exe).map_err(|e| fleet_err(e.to_string()))?;
    // Who this controller is to its hosts: one id per data directory.
    let id =
        secret_file::load_or_create_token(&dir.join("controller.id")).map_err(data_err(dir))?;
    let identity = fleet::ControllerIdentity {
        id: format!("gantry-{}", &id[..id.len().min(16)]),
        epoch,
        confinement: fleet::protocol::HostConfinement::from_service(&config.service),
    };
    let links = fleet::FleetLinks::open(
        dir,
        &config.ssh,
        &config.hosts,
        binary,
        identity,
        fleet::LinkOptions::default(),
    )
    .map_err(|e| fleet_err(e.to_string()))?;
    Ok(Some(Arc::new(links)))
}

/// Runs the controller until SIGTERM, SIGINT or `POST /api/v1/shutdown`.
pub async fn run(options: ServerOptions) -> Result<(), ServerError> {
    // Everything the controller creates is its own alone (the database with
    // its WAL, tokens, logs, artifacts); what instances must reach is opened
    // up explicitly below.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let dir = &options.data_dir;
    std::fs::create_dir_all(dir).map_err(data_err(dir))?;
    let dir = dir.canonicalize().map_err(data_err(dir))?;
    let loaded = gantry_config::load(&options.config_path)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let config = Arc::new(loaded.config);
    // The fencing token fleet hosts see in `Hello` (read back with
    // `controller_epoch`); raised under the lock above (on PostgreSQL, once
    // per start of any controller on the database).
    // `--store` (or GANTRY_DATABASE_URL) first, then `[store] url`.
    let database = match (&options.store, &config.store.url) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(source)) => Some(DatabaseUrl::new(
            secret_file::resolve("store.url", source).map_err(ServerError::StoreUrl)?,
        )),
        (None, None) => None,
    };
    // One controller per data directory, unless they share a database: then
    // any number may (the lease decides which one acts on the workloads the
    // directory holds). The lock lives as long as the process.
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("controller.lock"))
        .map_err(data_err(&dir))?;
    let lock_kind = match database {
        Some(_) => nix::fcntl::FlockArg::LockSharedNonblock,
        None => nix::fcntl::FlockArg::LockExclusiveNonblock,
    };
    let _lock = nix::fcntl::Flock::lock(lock_file, lock_kind)
        .map_err(|_| ServerError::Locked(dir.display().to_string()))?;
    // With SQLite the epoch rises at every start (under the lock above);
    // with PostgreSQL at every taking of the lease (`join_cluster`).
    let mut shared_blobs: Option<Arc<dyn gantry_store::SharedBlobs>> = None;
    let (store, leases, epoch): (
        Arc<dyn gantry_store::Store>,
        Option<Arc<dyn gantry_store::LeaseStore>>,
        u64,
    ) = match &database {
        Some(url) => {
            let store = Arc::new(gantry_store::PgStore::connect(url)?);
            tracing::info!(store = %url, "state in PostgreSQL");
            let epoch = store.controller_epoch()?;
            shared_blobs = Some(store.clone());
            (store.clone(), Some(store), epoch)
        }
        None => {
            let store = gantry_store::SqliteStore::open(&dir.join("gantry.db"))?;
            let epoch = store.begin_controller_epoch()?;
            tracing::info!(epoch, "controller epoch");
            (Arc::new(store), None, epoch)
        }
    };
    let blobs = gantry_store::Blobs::open(dir.join("artifacts"))?;
    let token = secret_file::load_or_create_token(&dir.join(TOKEN_FILE)).map_err(data_err(&dir))?;
    let router_token =
        secret_file::load_or_create_token(&dir.join("router.token")).map_err(data_err(&dir))?;
    let (confinement, warnings) = confine::Confinement::plan(options.exe.clone(), &config.service)
        .map_err(|e| ServerError::Confine(e.to_string()))?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    match confinement.probe().await {
        Ok(status) if status == "landlock FullyEnforced" || status == "not requested" => {
            tracing::info!(run_as = ?confinement.run_as.as_ref().map(|u| &u.name), landlock = %status, "instances are confined")
        }
        Ok(status) => tracing::warn!(
            "instances are only partly confined: the kernel gave {status} (Linux 6.12 or later enforces every rule)"
        ),
        Err(e) => tracing::warn!("instances are not confined by Landlock: {e}"),
    }
    data_dir::tighten(&dir, confinement.switches_user()).map_err(data_err(&dir))?;
    let local = Arc::new(target::LocalTarget::new(&dir, confinement));
    let router = Arc::new(routing::ProcessRouter::new(
        &dir,
        options.exe.clone(),
        router_token,
    ));
    for env in &config.environments {
        router.set_metrics_listen(&env.name, env.metrics_listen);
        router.set_access_log_retention(
            std::time::Duration::from_millis(config.retention.access_logs_ms),
            config.retention.access_logs_bytes,
        );
    }
    let fleet = open_fleet(&dir, &options.exe, &config, epoch)?;
    let fleet_links = fleet.clone();
    let env_hosts = config
        .environments
        .iter()
        .map(|e| (e.name.clone(), e.hosts.clone()))
        .collect();
    let observer = fleet.clone().map(fleet::FleetObserver::new);
    let placement = Arc::new(fleet::Placement::new(local, router, fleet, env_hosts));
    let audit_key =
        audit::load_or_create_key(&dir.join(audit::KEY_FILE)).map_err(data_err(&dir))?;
    let scrapes_instances = config.metrics.prometheus.is_some();
    let controller = Controller::new(
        store,
        blobs,
        placement.clone(),
        placement.clone(),
        placement,
        config,
    );
    controller.set_audit_key(audit_key);
    controller.set_data_dir(&dir);
    if let Some(shared) = shared_blobs {
        controller.set_shared_blobs(shared);
    }
    if let Some(observer) = observer {
        controller.set_host_observer(Arc::new(observer));
    }

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: options.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: options.listen,
            source,
        })?;

    let api_url = match &options.advertise_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None if leases.is_some() && addr.ip().is_unspecified() => {
            return Err(ServerError::AdvertiseUrl(format!(
                "this controller listens on {addr}, which other controllers cannot reach; give the URL they forward writes to (e.g. http://10.0.0.5:{})",
                addr.port()
            )))
        }
        None => format!("http://{addr}"),
    };
    if !(api_url.starts_with("http://") && api_url.len() > "http://".len()) {
        return Err(ServerError::AdvertiseUrl(format!(
            "{api_url:?} is not an http:// URL (e.g. http://10.0.0.5:7878)"
        )));
    }
    let info = ServerInfo {
        pid: std::process::id(),
        url: format!("http://{addr}"),
    };
    let info_text = serde_json::to_string(&info).unwrap_or_default();
    let drift_every = controller.config().drift_interval_ms;
    let tasks = controller::LeaderTasks {
        scrape_targets: scrapes_instances.then(|| dir.join("prometheus").join("instances.json")),
        drift_every: (drift_every > 0).then(|| std::time::Duration::from_millis(drift_every)),
        server_file: Some((dir.join(SERVER_FILE), info_text.clone())),
    };
    match leases {
        None => controller
            .lead_alone(&api_url, epoch, tasks)
            .await
            .map_err(|e| ServerError::Recovery(e.to_string()))?,
        Some(leases) => {
            let store_settings = &controller.config().store;
            let options = controller::ClusterOptions {
                leases,
                lease: std::time::Duration::from_millis(store_settings.lease_ms),
                renew_every: std::time::Duration::from_millis(store_settings.renew_ms),
                fleet: fleet_links,
            };
            controller.join_cluster(&api_url, options, tasks).await;
        }
    }
    // With several controllers on the directory, the leader writes it when
    // it takes office (`LeaderTasks::server_file`): the CLI finds the leader.
    if database.is_none() {
        secret_file::write(&dir.join(SERVER_FILE), &info_text).map_err(data_err(&dir))?;
    }
    tracing::info!(url = %info.url, data_dir = %dir.display(), "controller serving");

    let shutdown = Arc::new(tokio::sync::Notify::new());
    let state = api::AppState {
        controller: controller.clone(),
        token: Arc::new(token),
        shutdown: shutdown.clone(),
        refusals: Arc::new(audit::RefusalLimiter::new(audit::RefusalLimits::default())),
    };
    let app = api::router(state);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| ServerError::Listen { addr, source })?;
    let stop = async move {
        tokio::select! {
            _ = shutdown.notified() => {}
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    // The peer's address goes on the audit trail with a refused request:
    // each request carries it, as `axum::serve` with connect info does,
    // without building the router again for every connection.
    let app = hyper_util::service::TowerToHyperService::new(app);
    let with_peer = move |peer: Option<SocketAddr>| {
        let app = app.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            if let Some(peer) = peer {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
            }
            hyper::service::Service::call(&app, req)
        })
    };
    gantry_router::listener::serve_per_peer(
        listener,
        &gantry_router::listener::Bounds::new(options.limits),
        with_peer,
        stop,
        SHUTDOWN_DRAIN,
    )
    .await;
    controller.retire().await;
    // Removed if it still names this controller (others may share the directory).
    let server_file = dir.join(SERVER_FILE);
    let named: Option<ServerInfo> = std::fs::read(&server_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if named.is_some_and(|n| n.pid == info.pid) {
        let _ = std::fs::remove_file(&server_file);
    }
    Ok(())
}
