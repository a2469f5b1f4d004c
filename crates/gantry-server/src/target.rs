//! Where instances run. [`Target`] is the seam: the local target below runs
//! processes on this machine; SSH hosts and Kubernetes come later behind the
//! same few methods. Every method is idempotent, because the runtime may
//! repeat any of them after a crash.

use crate::confine::{self, Confinement};
use async_trait::async_trait;
use gantry_config::ArtifactLimits;
use gantry_core::analysis::resources::InstanceUsage;
use gantry_core::machine::{SmokeResult, SmokeSettings};
use gantry_core::{DeploymentId, EnvName, InstanceRef, Version};
use gantry_store::ReleaseRecord;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot unpack release {version}: {reason}")]
    Unpack { version: String, reason: String },
    #[error("cannot start instance {instance}: {reason}")]
    Start { instance: String, reason: String },
    #[error("cannot stop instance {instance}: {reason}")]
    Stop { instance: String, reason: String },
    #[error("{0}")]
    Io(String),
}

/// Everything needed to start the instances of one deployment; sent as it
/// is to a fleet host (`vars` go into the instance's environment only).
#[derive(Clone, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub env: EnvName,
    pub deployment: DeploymentId,
    pub version: Version,
    pub count: u32,
    /// Relative to the release directory, or absolute.
    pub command: String,
    /// With placeholders still in; the target fills them per instance.
    pub args: Vec<String>,
    pub port_env: String,
    /// Plain variables and resolved secrets. Never logged, never stored.
    pub vars: BTreeMap<String, String>,
    /// On a fleet, the hosts to run `count` instances each on (empty:
    /// every host of the environment). Not used on one machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// What [`Target::prune_output`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputPruned {
    /// Instances whose directory (output included) was deleted.
    pub removed: usize,
    /// Running instances whose output was cut in half.
    pub trimmed: usize,
}

/// One of a release's own commands (a database migration), run on the
/// controller's machine from the release directory, confined as the
/// release's instances are.
pub struct ReleaseCommand<'a> {
    pub release: &'a ReleaseRecord,
    /// The verified artifact, unpacked first if its directory is not there.
    pub artifact: &'a Path,
    pub limits: &'a ArtifactLimits,
    /// A program in the release (a path with a '/', from the release
    /// directory) or on `PATH`, and its arguments.
    pub argv: &'a [String],
    /// Plain variables and resolved secrets. Never logged, never stored.
    pub vars: BTreeMap<String, String>,
    pub timeout: Duration,
    /// Names its scratch directory (its `HOME` and `TMPDIR`).
    pub name: String,
}

/// How a command ended: the tail of its output, both streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub ok: bool,
    pub output: String,
}

/// The most of a command's output kept (its tail).
pub const COMMAND_OUTPUT_BYTES: usize = 4096;

/// The last `COMMAND_OUTPUT_BYTES` of `bytes`, as text.
pub fn output_tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(COMMAND_OUTPUT_BYTES);
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}

/// The output retention over `instances/`: see [`Target::prune_output`].
fn prune_instance_output(
    dir: &Path,
    running: &HashSet<String>,
    keep: Duration,
    max_bytes: u64,
) -> OutputPruned {
    let mut done = OutputPruned::default();
    let Ok(entries) = fs::read_dir(dir) else {
        return done;
    };
    let now = std::time::SystemTime::now();
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        let output = entry.path().join("output.log");
        let meta = fs::metadata(&output).ok();
        if !running.contains(&id) {
            // Gone: kept `keep` after its last line.
            let last = meta
                .as_ref()
                .and_then(|m| m.modified().ok())
                .or_else(|| entry.metadata().ok()?.modified().ok());
            let old = last.is_some_and(|t| now.duration_since(t).is_ok_and(|age| age > keep));
            if old && fs::remove_dir_all(entry.path()).is_ok() {
                done.removed += 1;
            }
            continue;
        }
        if meta.is_some_and(|m| m.len() > max_bytes) && trim_output(&output).is_ok() {
            done.trimmed += 1;
        }
    }
    done
}

/// Drops the older half of a running instance's output, keeping the newer
/// half in `output.log.1`, and empties the file: the instance writes with `O_APPEND`, so it goes
/// on at the new end. Lines written between the copy and the cut are lost
/// (as with logrotate's copytruncate).
fn trim_output(output: &Path) -> io::Result<()> {
    let bytes = fs::read(output)?;
    let half = bytes.len() / 2;
    // Cut at a line's end, so both files hold whole lines.
    let cut = bytes[half..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |p| half + p + 1);
    let mut kept = output.as_os_str().to_owned();
    kept.push(".1");
    fs::write(&kept, &bytes[cut..])?;
    fs::OpenOptions::new().write(true).open(output)?.set_len(0)
}

/// Waits for `child` (started in its own process group, output piped) at
/// most `timeout`, then kills its whole group.
pub async fn wait_bounded(
    child: tokio::process::Child,
    timeout: Duration,
    program: &str,
) -> CommandOutput {
    let group = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => {
            // Its children too (a script's database client): the whole group.
            if let Some(pid) = group {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            CommandOutput {
                ok: false,
                output: format!(
                    "{program} did not finish within {}; it was killed",
                    gantry_core::machine::seconds(timeout.as_millis() as u64)
                ),
            }
        }
        Ok(Err(e)) => CommandOutput {
            ok: false,
            output: format!("{program}: {e}"),
        },
        Ok(Ok(out)) => {
            let mut both = out.stdout;
            both.extend_from_slice(&out.stderr);
            let mut output = output_tail(&both);
            if !out.status.success() {
                output = format!("{program} {}: {output}", describe_exit(out.status));
            }
            CommandOutput {
                ok: out.status.success(),
                output,
            }
        }
    }
}

/// What `ensure_instances` found or started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Started {
    pub instances: Vec<InstanceRef>,
    /// Fleet hosts where starting failed, and why; the others started.
    pub failed_hosts: BTreeMap<String, String>,
}

impl std::fmt::Debug for LaunchSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Variables may hold secrets: show their names only.
        f.debug_struct("LaunchSpec")
            .field("env", &self.env)
            .field("deployment", &self.deployment)
            .field("version", &self.version)
            .field("count", &self.count)
            .field("command", &self.command)
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What a health probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum ProbeOutcome {
    Probe(gantry_core::machine::Probe),
    /// Nothing answered because the process ended (why).
    Exited(String),
}

/// An instance found running on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningInstance {
    pub id: String,
    pub pid: u32,
    pub port: u16,
    pub env: String,
    pub version: String,
    pub deployment: DeploymentId,
    /// The fleet host it runs on (None: this machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[async_trait]
pub trait Target: Send + Sync {
    /// Makes the release's files available where `env` runs, unpacked
    /// within `limits`, and checks that files already there are still what
    /// was unpacked. Returns what it had to repair (for the deployment
    /// log); nothing if all was well.
    async fn prepare(
        &self,
        env: &EnvName,
        release: &ReleaseRecord,
        artifact: &Path,
        limits: &ArtifactLimits,
    ) -> Result<Vec<String>, TargetError>;
    /// Checks the release's files on the target against what was unpacked,
    /// without repairing them: `None` when they are not there, else why
    /// they differ, if they do.
    async fn check_release(&self, release: &ReleaseRecord) -> Option<Result<(), String>>;
    /// Ensures `spec.count` instances of this deployment run, adopting the
    /// ones already running, and returns all of them.
    /// On a fleet, hosts that fail are reported in `Started::failed_hosts`
    /// as long as one host started.
    async fn ensure_instances(&self, spec: &LaunchSpec) -> Result<Started, TargetError>;
    /// Starts one instance again with its old id and port (after it died).
    async fn restart_instance(
        &self,
        spec: &LaunchSpec,
        instance: &InstanceRef,
    ) -> Result<(), TargetError>;
    /// Stops the instances; already stopped ones are fine.
    async fn stop(&self, instances: &[InstanceRef]) -> Result<(), TargetError>;
    /// `None` while the instance runs; why it is gone otherwise.
    async fn exited(&self, instance: &InstanceRef) -> Option<String>;
    /// Every instance of this controller running on the target.
    async fn running(&self) -> Vec<RunningInstance>;
    /// The last `max_bytes` of an instance's output.
    async fn logs(&self, instance_id: &str, max_bytes: u64) -> Result<String, TargetError>;
    /// `GET path` on the instance, where it listens (a fleet host's loopback
    /// is reached from that host); when nothing answers, whether it exited.
    async fn probe(&self, instance: &InstanceRef, path: &str, timeout: Duration) -> ProbeOutcome;
    /// The smoke suite against `instances`, run where they listen (a fleet
    /// host runs it against its loopback; command checks run there too).
    async fn smoke(&self, settings: &SmokeSettings, instances: &[InstanceRef]) -> Vec<SmokeResult>;
    /// Each instance's cumulative CPU time and resident memory (its whole
    /// process tree), read where it runs; one that cannot be read says why.
    async fn usage(&self, instances: &[InstanceRef]) -> Vec<InstanceUsage>;
    /// An instance's output from byte `offset` on (at most `max_bytes`;
    /// `None`: its last `max_bytes`), and the offset after it. A file cut
    /// shorter than `offset` (trimmed) is read from its start. On a fleet
    /// host: nothing yet (`Ok` empty).
    async fn output_since(
        &self,
        instance_id: &str,
        offset: Option<u64>,
        max_bytes: u64,
    ) -> Result<(Vec<u8>, u64), TargetError>;
    /// Applies the output retention: output of instances gone longer than
    /// `keep` is deleted, and a running one's past `max_bytes` loses its
    /// older half (the newer half goes to `output.log.1`). Returns what it
    /// did, for the log.
    async fn prune_output(&self, keep: Duration, max_bytes: u64) -> OutputPruned;
    /// Runs one of the release's own commands on the controller's machine
    /// (a fleet's database is reached from there, as `gantry` reaches it).
    async fn run_release_command(
        &self,
        command: ReleaseCommand<'_>,
    ) -> Result<CommandOutput, TargetError>;
}

/// Runs instances as processes on this machine.
///
/// Layout under the data directory: `releases/<version>/` (unpacked,
/// read-only), `instances/<id>/output.log` and `meta.json` (the controller's
/// only), `scratch/<id>/` (the instance's own writable directory, its `HOME`
/// and `TMPDIR`). Instances are started confined ([`Confinement`]) in their
/// own process group, so they outlive the controller, with a clean
/// environment: the config's variables and secrets, the port, `PATH`, and
/// `GANTRY_INSTANCE_ID`/`GANTRY_CONTROLLER` by which a restarted controller
/// finds them again in `/proc` (the latter a digest of the data directory,
/// not its path).
pub struct LocalTarget {
    data_dir: PathBuf,
    confinement: Confinement,
    /// `GANTRY_CONTROLLER` of this controller's instances.
    marker: String,
    /// Exit statuses of the children this controller started and reaped.
    exits: Arc<Mutex<HashMap<String, String>>>,
    /// Instances this controller process started (and so will reap).
    spawned: Mutex<HashSet<String>>,
    /// For health probes.
    http: reqwest::Client,
}

impl LocalTarget {
    pub fn new(data_dir: &Path, confinement: Confinement) -> LocalTarget {
        LocalTarget {
            data_dir: data_dir.to_owned(),
            confinement,
            marker: controller_marker(data_dir),
            exits: Arc::default(),
            spawned: Mutex::default(),
            http: crate::probe::http_client(),
        }
    }

    pub fn release_dir(&self, version: &Version) -> PathBuf {
        self.data_dir.join("releases").join(version.to_string())
    }

    /// The manifest of a release directory, kept outside the tree (a
    /// version never starts with '.', so `.manifests` is no release's name).
    pub fn manifest_path(&self, version: &Version) -> PathBuf {
        self.data_dir
            .join("releases")
            .join(".manifests")
            .join(format!("{version}.json"))
    }

    fn instance_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("instances").join(id)
    }

    fn scratch_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("scratch").join(id)
    }

    /// A release's program, confined, run from its release directory with a
    /// clean environment: nothing of the controller's (its token, its data
    /// directory, its secrets) reaches it unless the caller adds it; its
    /// scratch directory is its `HOME` and `TMPDIR`.
    fn confined(
        &self,
        program: &Path,
        args: impl IntoIterator<Item = String>,
        exec_file: Option<&Path>,
        scratch: &Path,
        release_dir: &Path,
    ) -> tokio::process::Command {
        let mut cmd = self.confinement.command(program, args, exec_file, scratch);
        cmd.current_dir(release_dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", scratch)
            .env("TMPDIR", scratch);
        cmd
    }

    /// Runs `c` confined, from its release directory (unpacked and checked
    /// against its manifest first), with a clean environment.
    pub async fn run_release_command(
        &self,
        c: ReleaseCommand<'_>,
    ) -> Result<CommandOutput, TargetError> {
        self.unpack(c.release, c.artifact, c.limits).await?;
        let release_dir = self.release_dir(&c.release.version);
        let Some((program, args)) = c.argv.split_first() else {
            return Err(TargetError::Io("an empty command".to_owned()));
        };
        let in_release = program.contains('/') && !Path::new(program).is_absolute();
        let exec_file = if in_release {
            let file = release_dir.join(program);
            if !file.is_file() {
                return Ok(CommandOutput {
                    ok: false,
                    output: format!(
                        "command {program} does not exist in release {}",
                        c.release.version
                    ),
                });
            }
            file.canonicalize()
                .ok()
                .filter(|p| !confine::is_within(p, &release_dir))
        } else {
            None
        };
        let scratch = self
            .make_scratch(&c.name)
            .map_err(|e| TargetError::Io(format!("cannot make a scratch directory: {e}")))?;
        let mut cmd = self.confined(
            Path::new(program),
            args.iter().cloned(),
            exec_file.as_deref(),
            &scratch,
            &release_dir,
        );
        cmd.envs(&c.vars)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                return Ok(CommandOutput {
                    ok: false,
                    output: format!("cannot run {program}: {e}"),
                })
            }
        };
        let result = wait_bounded(child, c.timeout, program).await;
        let _ = fs::remove_dir_all(&scratch);
        Ok(result)
    }

    /// A fresh, empty scratch directory owned by the instance's user.
    fn make_scratch(&self, id: &str) -> io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.scratch_dir(id);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        if let Some(u) = &self.confinement.run_as {
            nix::unistd::chown(
                &dir,
                Some(nix::unistd::Uid::from_raw(u.uid)),
                Some(nix::unistd::Gid::from_raw(u.gid)),
            )
            .map_err(io::Error::from)?;
        }
        Ok(dir)
    }

    fn scan(&self) -> Vec<RunningInstance> {
        let mut found = Vec::new();
        let Ok(entries) = fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(environ) = fs::read(entry.path().join("environ")) else {
                continue;
            };
            let mut id = None;
            let mut dir_matches = false;
            for var in environ.split(|b| *b == 0) {
                if let Some(v) = var.strip_prefix(b"GANTRY_INSTANCE_ID=") {
                    id = Some(String::from_utf8_lossy(v).into_owned());
                } else if let Some(v) = var.strip_prefix(b"GANTRY_CONTROLLER=") {
                    dir_matches = v == self.marker.as_bytes();
                } else if let Some(v) = var.strip_prefix(b"GANTRY_DATA_DIR=") {
                    // Instances started before confinement carried the path
                    // itself: still ours to adopt or stop after an upgrade.
                    dir_matches = v == self.data_dir.as_os_str().as_encoded_bytes();
                }
            }
            let (Some(id), true) = (id, dir_matches) else {
                continue;
            };
            if let Some(meta) = self.read_meta(&id) {
                found.push(RunningInstance { pid, ..meta });
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found
    }

    fn read_meta(&self, id: &str) -> Option<RunningInstance> {
        let bytes = fs::read(self.instance_dir(id).join("meta.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn spawn(&self, spec: &LaunchSpec, id: &str, port: u16) -> Result<(), TargetError> {
        let err = |reason: String| TargetError::Start {
            instance: id.to_owned(),
            reason,
        };
        let release_dir = self.release_dir(&spec.version);
        let dir = self.instance_dir(id);
        fs::create_dir_all(&dir)
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        let fill = |s: &str| {
            s.replace("{port}", &port.to_string())
                .replace("{release_dir}", &release_dir.display().to_string())
                .replace("{version}", &spec.version.to_string())
                .replace("{env}", spec.env.as_str())
                .replace("{instance}", id)
        };
        let program = if Path::new(&spec.command).is_absolute() {
            PathBuf::from(&spec.command)
        } else {
            release_dir.join(&spec.command)
        };
        if !program.exists() {
            return Err(err(format!(
                "command {} does not exist in release {}",
                program.display(),
                spec.version
            )));
        }
        // A relative command runs from the release directory (the working
        // directory), so the instance's user needs no way through the data
        // directory; a command that links outside the release is allowed to
        // be read and run by itself, nothing next to it.
        let run = if Path::new(&spec.command).is_absolute() {
            program.clone()
        } else {
            Path::new(".").join(&spec.command)
        };
        let exec_file = program
            .canonicalize()
            .ok()
            .filter(|p| !confine::is_within(p, &release_dir));
        let meta = RunningInstance {
            id: id.to_owned(),
            pid: 0,
            port,
            env: spec.env.to_string(),
            version: spec.version.to_string(),
            deployment: spec.deployment,
            host: None,
        };
        fs::write(
            dir.join("meta.json"),
            serde_json::to_vec(&meta).unwrap_or_default(),
        )
        .map_err(|e| err(e.to_string()))?;
        let scratch = self
            .make_scratch(id)
            .map_err(|e| err(format!("cannot make its scratch directory: {e}")))?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("output.log"))
            .map_err(|e| err(format!("cannot open log: {e}")))?;
        let log2 = log.try_clone().map_err(|e| err(e.to_string()))?;
        let mut cmd = self.confined(
            &run,
            spec.args.iter().map(|a| fill(a)),
            exec_file.as_deref(),
            &scratch,
            &release_dir,
        );
        cmd.envs(spec.vars.iter().map(|(k, v)| (k, fill(v))))
            .env(&spec.port_env, port.to_string())
            .env("GANTRY_INSTANCE_ID", id)
            .env("GANTRY_CONTROLLER", &self.marker)
            .env("GANTRY_RELEASE", spec.version.to_string())
            .env("GANTRY_ENV", spec.env.as_str())
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| err(format!("cannot run {}: {e}", program.display())))?;
        tracing::info!(instance = id, pid = child.id(), port, "instance started");
        // Reap the child so it does not linger as a zombie, and remember how it ended.
        let exits = self.exits.clone();
        let id = id.to_owned();
        exits.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        self.spawned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        tokio::spawn(async move {
            let detail = match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("could not wait for process: {e}"),
            };
            exits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, detail);
        });
        Ok(())
    }
}

/// The `GANTRY_CONTROLLER` value of the instances of the controller whose
/// (canonical) data directory is `data_dir`: it tells them apart from another
/// controller's without telling the instance where the data directory is.
pub fn controller_marker(data_dir: &Path) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..8])
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("process exited with status {code}"),
        (None, Some(sig)) => format!("process killed by signal {sig}"),
        _ => "process ended".to_owned(),
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalTarget {
    /// `Target::prepare` on this machine, whichever environment asks.
    pub async fn unpack(
        &self,
        release: &ReleaseRecord,
        artifact: &Path,
        limits: &ArtifactLimits,
    ) -> Result<Vec<String>, TargetError> {
        let dest = self.release_dir(&release.version);
        let manifest = self.manifest_path(&release.version);
        let version = release.version.to_string();
        let kind = release.artifact_kind.clone();
        let digest = release.digest.to_string();
        let artifact = artifact.to_owned();
        let limits = *limits;
        tokio::task::spawn_blocking(move || {
            crate::artifact::ensure_release(&kind, &artifact, &digest, &dest, &manifest, &limits)
        })
        .await
        .map_err(|e| TargetError::Unpack {
            version: version.clone(),
            reason: e.to_string(),
        })?
        .map_err(|reason| TargetError::Unpack { version, reason })
    }
}

#[async_trait]
impl Target for LocalTarget {
    async fn output_since(
        &self,
        instance_id: &str,
        offset: Option<u64>,
        max_bytes: u64,
    ) -> Result<(Vec<u8>, u64), TargetError> {
        use std::io::{Read, Seek, SeekFrom};
        if instance_id.contains('/') || instance_id.contains("..") {
            return Err(TargetError::Io(format!("bad instance id {instance_id:?}")));
        }
        let path = self.instance_dir(instance_id).join("output.log");
        let mut f = fs::File::open(&path)
            .map_err(|e| TargetError::Io(format!("no output for instance {instance_id}: {e}")))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let from = match offset {
            Some(o) if o > len => 0,
            Some(o) => o,
            None => len.saturating_sub(max_bytes),
        };
        f.seek(SeekFrom::Start(from))
            .map_err(|e| TargetError::Io(e.to_string()))?;
        let mut buf = Vec::new();
        f.take(max_bytes)
            .read_to_end(&mut buf)
            .map_err(|e| TargetError::Io(e.to_string()))?;
        let next = from + buf.len() as u64;
        Ok((buf, next))
    }

    async fn prune_output(&self, keep: Duration, max_bytes: u64) -> OutputPruned {
        let running: HashSet<String> = self.running().await.into_iter().map(|r| r.id).collect();
        let dir = self.data_dir.join("instances");
        tokio::task::spawn_blocking(move || prune_instance_output(&dir, &running, keep, max_bytes))
            .await
            .unwrap_or_default()
    }

    async fn run_release_command(
        &self,
        command: ReleaseCommand<'_>,
    ) -> Result<CommandOutput, TargetError> {
        LocalTarget::run_release_command(self, command).await
    }

    async fn prepare(
        &self,
        _env: &EnvName,
        release: &ReleaseRecord,
        artifact: &Path,
        limits: &ArtifactLimits,
    ) -> Result<Vec<String>, TargetError> {
        self.unpack(release, artifact, limits).await
    }

    async fn check_release(&self, release: &ReleaseRecord) -> Option<Result<(), String>> {
        let dest = self.release_dir(&release.version);
        if fs::symlink_metadata(&dest).is_err() {
            return None;
        }
        let manifest = self.manifest_path(&release.version);
        let digest = release.digest.to_string();
        let checked = tokio::task::spawn_blocking(move || {
            crate::artifact::compare_with_manifest(&dest, &manifest, &digest)
        })
        .await;
        Some(checked.unwrap_or_else(|e| Err(e.to_string())))
    }

    async fn ensure_instances(&self, spec: &LaunchSpec) -> Result<Started, TargetError> {
        let running = self.scan();
        let mut out = Vec::new();
        for n in 1..=spec.count {
            let id = format!("{}-d{}-{n}", spec.env, spec.deployment);
            if let Some(r) = running.iter().find(|r| r.id == id) {
                tracing::info!(instance = %id, pid = r.pid, "adopted running instance");
                out.push(InstanceRef::local(id, r.port));
                continue;
            }
            let port = free_port().map_err(|e| TargetError::Start {
                instance: id.clone(),
                reason: e.to_string(),
            })?;
            self.spawn(spec, &id, port)?;
            out.push(InstanceRef::local(id, port));
        }
        Ok(Started {
            instances: out,
            failed_hosts: BTreeMap::new(),
        })
    }

    async fn restart_instance(
        &self,
        spec: &LaunchSpec,
        instance: &InstanceRef,
    ) -> Result<(), TargetError> {
        if self.scan().iter().any(|r| r.id == instance.id) {
            return Ok(());
        }
        self.spawn(spec, &instance.id, instance.port)
    }

    async fn stop(&self, instances: &[InstanceRef]) -> Result<(), TargetError> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let running = self.scan();
        let targets: Vec<&RunningInstance> = running
            .iter()
            .filter(|r| instances.iter().any(|i| i.id == r.id))
            .collect();
        for r in &targets {
            // Graceful first: the instance finishes its in-flight requests.
            let _ = kill(Pid::from_raw(r.pid as i32), Signal::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let still: Vec<RunningInstance> = self
                .scan()
                .into_iter()
                .filter(|r| targets.iter().any(|t| t.id == r.id))
                .collect();
            if still.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                for r in &still {
                    tracing::warn!(instance = %r.id, "did not stop within 10s; killing");
                    let _ = kill(Pid::from_raw(r.pid as i32), Signal::SIGKILL);
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for i in instances {
            if i.id.contains('/') || i.id.contains("..") {
                continue;
            }
            let _ = fs::remove_dir_all(self.scratch_dir(&i.id));
            tracing::info!(instance = %i.id, "instance stopped");
        }
        Ok(())
    }

    async fn exited(&self, instance: &InstanceRef) -> Option<String> {
        if let Some(detail) = self
            .exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&instance.id)
        {
            return Some(detail.clone());
        }
        // Our own children are reaped by us, and every end is recorded above;
        // /proc cannot be trusted for them (before exec a child still shows
        // our environment, a zombie shows none).
        if self
            .spawned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&instance.id)
        {
            return None;
        }
        // Adopted after a restart: only /proc can tell.
        if self.scan().iter().any(|r| r.id == instance.id) {
            None
        } else {
            Some("process is not running".to_owned())
        }
    }

    async fn running(&self) -> Vec<RunningInstance> {
        self.scan()
    }

    async fn smoke(&self, settings: &SmokeSettings, instances: &[InstanceRef]) -> Vec<SmokeResult> {
        crate::smoke::run_suite(&self.http, settings, instances).await
    }

    async fn usage(&self, instances: &[InstanceRef]) -> Vec<InstanceUsage> {
        let running = self.scan();
        let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        let pids: Vec<(String, u32)> = ids
            .iter()
            .filter_map(|id| Some((id.clone(), running.iter().find(|r| &r.id == id)?.pid)))
            .collect();
        let read = tokio::task::spawn_blocking(move || crate::usage::read(&pids))
            .await
            .unwrap_or_default();
        // In the order asked; one not found (or not read) says why.
        ids.into_iter()
            .map(|id| {
                read.iter()
                    .find(|u| u.instance == id)
                    .cloned()
                    .unwrap_or_else(|| InstanceUsage {
                        instance: id,
                        unavailable: Some("process is not running".to_owned()),
                        ..InstanceUsage::default()
                    })
            })
            .collect()
    }

    async fn probe(&self, instance: &InstanceRef, path: &str, timeout: Duration) -> ProbeOutcome {
        let probe = crate::probe::http_probe(
            &self.http,
            crate::probe::instance_addr(instance),
            path,
            timeout,
        )
        .await;
        if let gantry_core::machine::Probe::Unreachable(_) = probe {
            if let Some(detail) = self.exited(instance).await {
                return ProbeOutcome::Exited(detail);
            }
        }
        ProbeOutcome::Probe(probe)
    }

    async fn logs(&self, instance_id: &str, max_bytes: u64) -> Result<String, TargetError> {
        use std::io::{Read, Seek, SeekFrom};
        if instance_id.contains('/') || instance_id.contains("..") {
            return Err(TargetError::Io(format!("bad instance id {instance_id:?}")));
        }
        let path = self.instance_dir(instance_id).join("output.log");
        let mut f = fs::File::open(&path)
            .map_err(|e| TargetError::Io(format!("no log for instance {instance_id}: {e}")))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        f.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))
            .map_err(|e| TargetError::Io(e.to_string()))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(|e| TargetError::Io(e.to_string()))?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

#[cfg(test)]
mod output_retention_tests {
    use super::*;
    use std::time::SystemTime;

    fn instance(dir: &Path, id: &str, output: &str, age: Duration) {
        let d = dir.join(id);
        fs::create_dir_all(&d).unwrap();
        let f = fs::File::create(d.join("output.log")).unwrap();
        std::io::Write::write_all(&mut &f, output.as_bytes()).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn gone_instances_output_goes_after_keep_and_a_running_ones_is_cut_to_its_newer_half() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86_400);
        let lines: String = (0..100)
            .map(|n| format!("line {n:03} of the output\n"))
            .collect();
        instance(dir.path(), "production-d1-1", "old\n", 31 * day);
        instance(dir.path(), "production-d2-1", "recent\n", day);
        instance(dir.path(), "production-d3-1", &lines, Duration::ZERO);
        let running: HashSet<String> = ["production-d3-1".to_owned()].into();
        let done = prune_instance_output(dir.path(), &running, 30 * day, 1_000);
        assert_eq!(
            done,
            OutputPruned {
                removed: 1,
                trimmed: 1
            }
        );
        assert!(!dir.path().join("production-d1-1").exists());
        assert!(dir.path().join("production-d2-1/output.log").exists());
        let run = dir.path().join("production-d3-1");
        assert_eq!(fs::read(run.join("output.log")).unwrap().len(), 0);
        let kept = fs::read_to_string(run.join("output.log.1")).unwrap();
        assert!(
            kept.starts_with("line ") && kept.ends_with("line 099 of the output\n"),
            "{kept}"
        );
        assert!(
            kept.len() < lines.len() / 2 + 30,
            "the newer half: {}",
            kept.len()
        );
        // Under its cap, a running instance's output is left alone.
        let again = prune_instance_output(dir.path(), &running, 30 * day, 1_000);
        assert_eq!(again, OutputPruned::default());
    }
}
