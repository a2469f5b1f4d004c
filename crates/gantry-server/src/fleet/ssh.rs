//! Reaching fleet hosts through the system's OpenSSH client: one multiplexed
//! ControlMaster connection per host (`openssh`, native mux), Gantry's own
//! ssh config (pinned host keys only, no prompts, nothing read from
//! `~/.ssh/config`), and three caps: connections being opened, sessions per
//! host, uploads.
//!
//! No shell string is ever built from a name or a config value: a host's login
//! shell only ever receives one of the constant command lines of
//! [`RemoteCommand`]; what varies (the data directory, a digest, the bytes of
//! the binary) travels on the command's stdin.

use gantry_config::{Host, SshKey, SshSettings};
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod error;
mod remote;
pub use error::HostError;
use error::{classify_connect_error, endpoint, remote};
use remote::EXIT_DIGEST_MISMATCH;
pub use remote::{BinaryImage, Bootstrapped, RemoteCommand};

pub use openssh::{ChildStderr, ChildStdin, ChildStdout};

/// `sun_path` holds 108 bytes with its NUL. Below the control directory the
/// crate makes `.ssh-connectionXXXXXX/master` and ssh binds a temporary
/// `master.XXXXXXXXXXXXXXXX` before renaming it: 46 bytes with the slash.
const SUN_PATH_MAX: usize = 107;
const SOCKET_SUFFIX: usize = "/.ssh-connectionXXXXXX/master.XXXXXXXXXXXXXXXX".len();

/// How often ssh asks a quiet host whether it is alive, and how many
/// unanswered asks end the connection (a dead host shows in ~15 s).
const SERVER_ALIVE: Duration = Duration::from_secs(5);
/// How long an idle master outlives its last use: a killed controller's
/// masters go away by themselves.
const CONTROL_PERSIST_S: usize = 300;

/// Peaks of the caps' use since [`SshHosts::open`], for tests and figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapUse {
    pub peak_connecting: usize,
    pub peak_transfers: usize,
}

#[derive(Debug, Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    fn enter(self: &Arc<Self>) -> GaugeGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        GaugeGuard(self.clone())
    }
}

struct GaugeGuard(Arc<Gauge>);

/// A transfer slot, given back when dropped.
pub struct TransferSlot {
    _permit: OwnedSemaphorePermit,
    _gauge: GaugeGuard,
}
impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The controller's side of the fleet's SSH: where sockets and pins live,
/// and the fleet-wide caps. One per controller.
#[derive(Debug, Clone)]
pub struct SshHosts {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `<data>/ssh`: the ssh config files and the control sockets.
    dir: PathBuf,
    known_hosts: PathBuf,
    settings: SshSettings,
    connecting: Arc<Semaphore>,
    transfers: Arc<Semaphore>,
    connecting_gauge: Arc<Gauge>,
    transfers_gauge: Arc<Gauge>,
}

/// The ssh config Gantry runs with. `-F` makes ssh read only this file, so
/// nothing in `~/.ssh/config` or `/etc/ssh/ssh_config` changes behaviour.
fn ssh_config(known_hosts: &Path, connect_timeout_s: u64, identities_only: bool) -> String {
    format!(
        "# Written by gantry at start; ssh reads only this file (-F).\n\
         Host *\n\
         \x20   UserKnownHostsFile \"{}\"\n\
         \x20   GlobalKnownHostsFile /dev/null\n\
         \x20   StrictHostKeyChecking yes\n\
         \x20   UpdateHostKeys no\n\
         \x20   CheckHostIP no\n\
         \x20   HashKnownHosts no\n\
         \x20   BatchMode yes\n\
         \x20   IdentitiesOnly {}\n\
         \x20   PasswordAuthentication no\n\
         \x20   KbdInteractiveAuthentication no\n\
         \x20   ForwardAgent no\n\
         \x20   ForwardX11 no\n\
         \x20   ConnectTimeout {connect_timeout_s}\n\
         \x20   ServerAliveInterval {}\n\
         \x20   ServerAliveCountMax 3\n\
         \x20   ControlPersist {CONTROL_PERSIST_S}\n\
         \x20   Compression no\n\
         \x20   LogLevel ERROR\n",
        known_hosts.display(),
        if identities_only { "yes" } else { "no" },
        SERVER_ALIVE.as_secs(),
    )
}

impl SshHosts {
    /// Prepares `<data_dir>/ssh` (mode 0700) and Gantry's ssh config files.
    /// Fails if the control sockets' paths would not fit a Unix socket.
    pub fn open(data_dir: &Path, settings: &SshSettings) -> Result<SshHosts, HostError> {
        let data_dir = std::path::absolute(data_dir).map_err(|e| {
            HostError::Local(format!("bad data directory {}: {e}", data_dir.display()))
        })?;
        let dir = data_dir.join("ssh");
        let socket_len = dir.as_os_str().len() + SOCKET_SUFFIX;
        if socket_len > SUN_PATH_MAX {
            return Err(HostError::Local(format!(
                "the ssh control sockets under {} would need {socket_len} bytes, over the {SUN_PATH_MAX} a Unix socket path can hold; use a data directory at most {} bytes long",
                dir.display(),
                SUN_PATH_MAX - SOCKET_SUFFIX - "/ssh".len()
            )));
        }
        let known_hosts = data_dir.join(&settings.known_hosts);
        if known_hosts.to_string_lossy().contains(['"', '\n', '\r']) {
            return Err(HostError::Local(format!(
                "the known_hosts path {} cannot be written in an ssh config file; choose one without quotes or line breaks",
                known_hosts.display()
            )));
        }
        let local = |what: &str, e: std::io::Error| {
            HostError::Local(format!("cannot {what} {}: {e}", dir.display()))
        };
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| local("create", e))?;
        }
        let timeout_s = settings.connect_timeout_ms.div_ceil(1000).max(1);
        for (file, identities_only) in [("config", true), ("config-agent", false)] {
            std::fs::write(
                dir.join(file),
                ssh_config(&known_hosts, timeout_s, identities_only),
            )
            .map_err(|e| local("write ssh config in", e))?;
        }
        Ok(SshHosts {
            inner: Arc::new(Inner {
                dir,
                known_hosts,
                settings: settings.clone(),
                connecting: Arc::new(Semaphore::new(settings.max_connecting as usize)),
                transfers: Arc::new(Semaphore::new(settings.max_transfers as usize)),
                connecting_gauge: Arc::default(),
                transfers_gauge: Arc::default(),
            }),
        })
    }

    /// The pinned host keys ssh checks against.
    pub fn known_hosts(&self) -> &Path {
        &self.inner.known_hosts
    }

    /// The ssh config file used for hosts reached with `key`.
    pub fn config_file(&self, key: &SshKey) -> PathBuf {
        self.inner.dir.join(match key {
            SshKey::File(_) => "config",
            SshKey::Agent => "config-agent",
        })
    }

    /// One of the `max_transfers` slots, held while bytes go to a host
    /// (the binary here, artifacts over the host channel).
    pub async fn transfer_slot(&self) -> Result<TransferSlot, HostError> {
        let permit = self
            .inner
            .transfers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HostError::Local("the transfer cap was closed".into()))?;
        Ok(TransferSlot {
            _permit: permit,
            _gauge: self.inner.transfers_gauge.enter(),
        })
    }

    pub fn cap_use(&self) -> CapUse {
        CapUse {
            peak_connecting: self.inner.connecting_gauge.peak.load(Ordering::SeqCst),
            peak_transfers: self.inner.transfers_gauge.peak.load(Ordering::SeqCst),
        }
    }

    /// Opens the host's master connection (waiting for a `max_connecting`
    /// slot), with strict host key checking against the pins.
    pub async fn connect(&self, host: &Host) -> Result<HostSession, HostError> {
        let inner = &self.inner;
        let mut b = SessionBuilder::default();
        b.config_file(self.config_file(&host.key))
            .known_hosts_check(KnownHosts::Strict)
            .user_known_hosts_file(&inner.known_hosts)
            .connect_timeout(Duration::from_millis(inner.settings.connect_timeout_ms))
            .server_alive_interval(SERVER_ALIVE)
            .control_directory(&inner.dir)
            .control_persist(ControlPersist::IdleFor(
                NonZeroUsize::new(CONTROL_PERSIST_S).expect("not zero"),
            ))
            .compression(false)
            .port(host.port);
        if let Some(user) = &host.user {
            b.user(user.clone());
        }
        if let SshKey::File(path) = &host.key {
            b.keyfile(path);
        }
        let session = {
            let _permit = inner
                .connecting
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| HostError::Local("the connection cap was closed".into()))?;
            let _gauge = inner.connecting_gauge.enter();
            // ssh's ConnectTimeout bounds the TCP connect and the banner; this
            // bounds the rest (key exchange, authentication) too.
            let limit = Duration::from_millis(inner.settings.connect_timeout_ms * 2 + 2000);
            match tokio::time::timeout(limit, b.connect_mux(&host.address)).await {
                Ok(Ok(session)) => session,
                Ok(Err(e)) => return Err(classify_connect_error(host, &inner.known_hosts, e)),
                Err(_) => {
                    return Err(HostError::Unreachable {
                        host: host.name.clone(),
                        address: endpoint(host),
                        detail: format!("no SSH session within {} s", limit.as_secs()),
                    })
                }
            }
        };
        Ok(HostSession {
            host: host.clone(),
            session: Arc::new(session),
            sessions: Arc::new(Semaphore::new(
                inner.settings.max_sessions_per_host as usize,
            )),
            hosts: self.clone(),
        })
    }
}

/// One host's open master connection.
#[derive(Debug)]
pub struct HostSession {
    host: Host,
    session: Arc<Session>,
    /// Sessions at once on this connection (`max_sessions_per_host`).
    sessions: Arc<Semaphore>,
    hosts: SshHosts,
}

/// `gantry host serve --stdio` running on a host: its stdin and stdout are
/// the typed channel. It holds one of the host's session slots until dropped.
pub struct HostServe {
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    child: openssh::Child<Arc<Session>>,
    _slot: OwnedSemaphorePermit,
    host: Host,
}

impl std::fmt::Debug for HostServe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostServe({})", self.host.name)
    }
}

/// What keeps a `host serve` running once its pipes are taken: its ssh
/// child and its session slot. Dropped, the slot is given back.
pub struct HostServeGuard {
    _child: openssh::Child<Arc<Session>>,
    _slot: OwnedSemaphorePermit,
}

impl HostServe {
    /// The pipes, and the guard that must live as long as they are used.
    pub fn into_parts(self) -> (ChildStdin, ChildStdout, ChildStderr, HostServeGuard) {
        let HostServe {
            stdin,
            stdout,
            stderr,
            child,
            _slot,
            ..
        } = self;
        let guard = HostServeGuard {
            _child: child,
            _slot,
        };
        (stdin, stdout, stderr, guard)
    }

    /// Closes its stdin (asking it to end), drains its output, and returns
    /// its exit code (None: ended by a signal) and the end of its stderr.
    pub async fn finish(self) -> Result<(Option<i32>, String), HostError> {
        let HostServe {
            stdin,
            mut stdout,
            mut stderr,
            child,
            host,
            ..
        } = self;
        drop(stdin);
        let mut text = String::new();
        let mut sink = Vec::new();
        let mut stderr = (&mut stderr).take(64 * 1024);
        let (_, _) = tokio::join!(
            stderr.read_to_string(&mut text),
            stdout.read_to_end(&mut sink)
        );
        let status = child
            .wait()
            .await
            .map_err(|e| remote(&host, format!("host serve: {e}")))?;
        Ok((status.code(), text))
    }
}

impl HostSession {
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Whether the master connection still works (no remote command).
    pub async fn check(&self) -> Result<(), HostError> {
        self.session
            .check()
            .await
            .map_err(|e| HostError::Unreachable {
                host: self.host.name.clone(),
                address: endpoint(&self.host),
                detail: format!("the connection is gone ({e})"),
            })
    }

    /// Ends the master connection.
    pub async fn close(self) -> Result<(), HostError> {
        let host = self.host.clone();
        match Arc::try_unwrap(self.session) {
            Ok(session) => session
                .close()
                .await
                .map_err(|e| remote(&host, format!("closing the connection: {e}"))),
            // A channel still uses it: the master ends with the last user.
            Err(_) => Ok(()),
        }
    }

    /// Starts one of the constant commands, holding a session slot. The only
    /// place a command is sent to a host.
    async fn spawn(
        &self,
        cmd: RemoteCommand,
    ) -> Result<(openssh::Child<Arc<Session>>, OwnedSemaphorePermit), HostError> {
        let slot = self
            .sessions
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HostError::Local("the session cap was closed".into()))?;
        let child = Session::arc_raw_command(self.session.clone(), cmd.line())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|e| match e {
                openssh::Error::Disconnected => HostError::Unreachable {
                    host: self.host.name.clone(),
                    address: endpoint(&self.host),
                    detail: "the connection is gone".into(),
                },
                e => remote(&self.host, format!("starting a session: {e}")),
            })?;
        Ok((child, slot))
    }

    /// The two lines every command reads first: the data directory and the digest.
    fn preamble(&self, sha256: &str) -> Result<Vec<u8>, HostError> {
        // Both are validated (config walker; hex), so neither holds a line break.
        if self.host.data_dir.contains(['\n', '\r']) || sha256.contains(['\n', '\r']) {
            return Err(HostError::Local(format!(
                "host {}: data_dir or digest holds a line break",
                self.host.name
            )));
        }
        Ok(format!("{}\n{sha256}\n", self.host.data_dir).into_bytes())
    }

    /// Puts `binary` on the host under `<data_dir>/bin/<sha256>` unless it is
    /// there: the host checks the digest before storing (temp file + rename),
    /// so a corrupted or interrupted upload leaves nothing behind.
    pub async fn bootstrap(&self, binary: &BinaryImage) -> Result<Bootstrapped, HostError> {
        let upload_err = |detail: String| HostError::Upload {
            host: self.host.name.clone(),
            address: endpoint(&self.host),
            detail,
        };
        let (mut child, _slot) = self.spawn(RemoteCommand::Bootstrap).await?;
        let mut stdin = child.stdin().take().expect("piped");
        let stdout = child.stdout().take().expect("piped");
        let mut stderr = child.stderr().take().expect("piped");
        let stderr_text = tokio::spawn(async move {
            let mut s = String::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_string(&mut s).await;
            s
        });
        let mut stdout = BufReader::new(stdout);
        stdin
            .write_all(&self.preamble(&binary.sha256)?)
            .await
            .map_err(|e| upload_err(format!("sending the digest: {e}")))?;
        stdin
            .flush()
            .await
            .map_err(|e| upload_err(format!("sending the digest: {e}")))?;
        let mut answer = String::new();
        stdout
            .read_line(&mut answer)
            .await
            .map_err(|e| upload_err(format!("reading the answer: {e}")))?;
        let mut send_failed = None;
        // What the script said: None when it said something else.
        let outcome = match answer.trim() {
            "present" => {
                drop(stdin);
                Some(Bootstrapped::Present)
            }
            "send" => {
                let _transfer = self.hosts.transfer_slot().await?;
                let started = Instant::now();
                let mut file = tokio::fs::File::open(&binary.path).await.map_err(|e| {
                    HostError::Local(format!("cannot read {}: {e}", binary.path.display()))
                })?;
                // A failed send (the host's disk is full, its script ended)
                // is reported with what the host said, once it has ended.
                let sent = match tokio::io::copy(&mut file, &mut stdin).await {
                    Ok(sent) => stdin.shutdown().await.map(|()| sent),
                    Err(e) => Err(e),
                };
                drop(stdin);
                match sent {
                    Ok(sent) => {
                        let mut rest = String::new();
                        let _ = stdout.read_to_string(&mut rest).await;
                        (rest.trim() == "stored").then(|| Bootstrapped::Uploaded {
                            bytes: sent,
                            took: started.elapsed(),
                        })
                    }
                    Err(e) => {
                        send_failed = Some(e.to_string());
                        None
                    }
                }
            }
            _ => None,
        };
        let status = child
            .wait()
            .await
            .map_err(|e| upload_err(format!("waiting for the host: {e}")))?;
        let stderr = stderr_text.await.unwrap_or_default();
        let stderr = stderr.trim();
        let stderr = if stderr.is_empty() {
            "no message"
        } else {
            stderr
        };
        if let Some(e) = send_failed {
            return Err(upload_err(format!(
                "sending the binary: {e}; the host said: {stderr}"
            )));
        }
        match (status.code(), outcome) {
            (Some(0), Some(outcome)) => Ok(outcome),
            (Some(c), _) if c as u32 == EXIT_DIGEST_MISMATCH => Err(upload_err(format!(
                "the host received bytes whose SHA-256 is not {} ({stderr})",
                binary.sha256
            ))),
            (code, _) => Err(upload_err(format!(
                "the bootstrap script answered {:?} and ended with {} ({stderr}); the host needs a POSIX sh, mkdir, mktemp, cat, sha256sum and mv, and a writable {}",
                answer.trim(),
                code.map_or("a signal".to_owned(), |c| format!("exit code {c}")),
                self.host.data_dir
            ))),
        }
    }

    /// Runs `<data_dir>/bin/<sha256> --data-dir <data_dir> host serve --stdio` on the host through
    /// the constant launcher, and hands back its stdin/stdout/stderr.
    pub async fn launch_host_serve(&self, sha256: &str) -> Result<HostServe, HostError> {
        let (mut child, slot) = self.spawn(RemoteCommand::Launch).await?;
        let mut stdin = child.stdin().take().expect("piped");
        let stdout = child.stdout().take().expect("piped");
        let stderr = child.stderr().take().expect("piped");
        stdin
            .write_all(&self.preamble(sha256)?)
            .await
            .map_err(|e| remote(&self.host, format!("starting host serve: {e}")))?;
        stdin
            .flush()
            .await
            .map_err(|e| remote(&self.host, format!("starting host serve: {e}")))?;
        Ok(HostServe {
            stdin,
            stdout,
            stderr,
            child,
            _slot: slot,
            host: self.host.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command line sent to a host is one of the constants: the
    /// module's code sends commands in exactly one place, with `cmd.line()`,
    /// and never through the crate's other ways to build a command.
    #[test]
    fn every_command_line_sent_is_a_constant() {
        let code: String = [
            include_str!("ssh.rs"),
            include_str!("ssh/error.rs"),
            include_str!("ssh/remote.rs"),
        ]
        .iter()
        .map(|source| source.split("#[cfg(test)]").next().unwrap())
        .collect();
        let sends: Vec<_> = code.match_indices("_command(").collect();
        assert_eq!(sends.len(), 1, "one place sends a command");
        assert!(
            code.contains("Session::arc_raw_command(self.session.clone(), cmd.line())"),
            "and it sends a constant line"
        );
        for forbidden in [
            ".command(",
            ".shell(",
            ".subsystem(",
            ".arg(",
            ".raw_arg(",
            ".args(",
        ] {
            assert!(!code.contains(forbidden), "{forbidden} builds a command");
        }
        // Nothing else in the server reaches a host's shell.
        assert!(!include_str!("mod.rs").contains("_command("));
    }

    #[test]
    fn ssh_config_pins_keys_and_refuses_prompts() {
        let c = ssh_config(Path::new("/d/known_hosts"), 3, true);
        for line in [
            "UserKnownHostsFile \"/d/known_hosts\"",
            "GlobalKnownHostsFile /dev/null",
            "StrictHostKeyChecking yes",
            "UpdateHostKeys no",
            "BatchMode yes",
            "IdentitiesOnly yes",
            "ConnectTimeout 3",
            "ServerAliveInterval 5",
            "ControlPersist 300",
        ] {
            assert!(c.contains(line), "{line} in\n{c}");
        }
        assert!(ssh_config(Path::new("/k"), 3, false).contains("IdentitiesOnly no"));
    }

    #[test]
    fn a_data_directory_too_long_for_a_socket_path_is_refused_at_open() {
        let long = std::env::temp_dir().join("x".repeat(80));
        let e = SshHosts::open(&long, &SshSettings::default()).unwrap_err();
        assert!(e.to_string().contains("Unix socket path"), "{e}");
        assert!(!long.exists(), "nothing made");
    }
}
