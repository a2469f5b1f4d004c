//! Long on purpose: it is the one shared fixture of every integration test
//! (process control, polling with deadlines, CLI calls); split, each test
//! file would have to know where each helper lives.
//!
//! A controller in a temporary directory, and helpers to drive it through
//! the CLI and to read its answers through the typed client (`gantry-api`).

use gantry_api::client::{Client, ClientError};
use gantry_api::{
    AuditPage, AuditQuery, DeploymentView, ListQuery, PoolStats, ReleaseRecord, StatusView,
    TrafficQuery,
};
use gantry_core::audit::AuditRecord;
/// Every test compares phases.
pub use gantry_core::Phase;
use gantry_core::{Deployment, DeploymentId};
use serde_json::Value;
use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const GANTRY: &str = env!("CARGO_BIN_EXE_gantry");

/// Longest any one CLI command may take in a test before it counts as hung.
const CLI_DEADLINE: Duration = Duration::from_secs(120);

/// Waits for `child` with a deadline, reading its output meanwhile; kills it
/// and fails the test when the deadline passes.
pub fn output_within(mut child: Child, deadline: Duration, what: &[&str]) -> Output {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gantry {what:?} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A port nothing listens on now, and that this test process has not
/// handed out before (two environments of one config, or two tests, must
/// not get the same one). Below the kernel's ephemeral range (32768 and up):
/// a port the kernel hands out for `:0` or for an outgoing connection can be
/// taken by some client's connection before the router binds it, and the
/// fleet and load tests open thousands of them.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let seed = std::process::id() as usize
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as usize);
    for i in 0..20_000usize {
        let port = 12_000 + (seed.wrapping_add(i.wrapping_mul(7919)) % 20_000) as u16;
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
        {
            given.push(port);
            return port;
        }
    }
    panic!("no free port between 12000 and 31999")
}

/// Waits for `cond` to hold, polling, and fails the test with `what` at the deadline.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts `cond` at every poll for the whole of `window`: a property over a
/// span of time ("it must not move for 3 s"), not a wait. The window is the
/// point of the check, so it is never cut short; each poll that sees the
/// property broken fails at once, naming when.
pub fn holds_throughout(what: &str, window: Duration, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    let mut polls = 0u32;
    loop {
        polls += 1;
        assert!(
            cond(),
            "{what} stopped holding after {:?} (poll {polls})",
            started.elapsed()
        );
        if started.elapsed() >= window {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn holds_throughout_checks_the_whole_window_and_fails_on_a_break() {
    let started = Instant::now();
    let mut polls = 0;
    holds_throughout("always", Duration::from_millis(300), || {
        polls += 1;
        true
    });
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(polls > 2, "polled {polls} times");
    // Counted, not timed: the panic hook may spend seconds printing a
    // backtrace on a loaded machine, so the proof that it failed at the first
    // broken poll is that the property was asked exactly once after breaking.
    let started = Instant::now();
    let broken_polls = std::cell::Cell::new(0u32);
    let broke = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        holds_throughout("a property", Duration::from_secs(5), || {
            let holds = started.elapsed() < Duration::from_millis(200);
            if !holds {
                broken_polls.set(broken_polls.get() + 1);
            }
            holds
        })
    }))
    .unwrap_err();
    let message = broke.downcast_ref::<String>().unwrap();
    assert!(
        message.starts_with("a property stopped holding after"),
        "{message}"
    );
    assert_eq!(broken_polls.get(), 1, "failed at the first broken poll");
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    #[track_caller]
    pub fn fails_with(self, code: i32, needle: &str) -> Run {
        assert_eq!(
            self.code, code,
            "unexpected exit code:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let all = format!("{}{}", self.stdout, self.stderr);
        assert!(
            all.contains(needle),
            "expected {needle:?} in output:\n{all}"
        );
        self
    }
}

pub struct Gantry {
    pub dir: tempfile::TempDir,
    pub config: String,
    pub server: Option<Child>,
    pub ports: Vec<(String, u16)>,
    /// Extra environment of the controller process.
    pub server_env: Vec<(String, String)>,
    /// Extra arguments of `gantry server`.
    pub server_args: Vec<String>,
    /// Runs the typed client's futures for these blocking tests.
    runtime: tokio::runtime::Runtime,
    /// The admin's client, kept while the controller's address stays the
    /// same (a restarted controller listens on a new port).
    admin: std::sync::Mutex<Option<Client>>,
}

/// How strictly a test config enforces the promotion path.
#[derive(Clone, Copy, PartialEq)]
pub enum Lifecycle {
    /// Every environment but production is optional, so a test can deploy
    /// straight to the environment it is about.
    Loose,
    Strict,
    /// Strict, and development and integration deploy new releases by themselves.
    Automatic,
}

/// The config used by the tests: fast probes, short bakes.
pub fn lifecycle_config(
    ports: &[(String, u16)],
    bake: &str,
    extra: &str,
    lifecycle: Lifecycle,
) -> String {
    let mut s = String::from(
        r#"[service]
name = "sample"
command = "bin/gantry"
args = ["sample-service", "--port", "{port}", "--settings", "sample.json"]
sandbox = { read = ["INSTANCE_BINARY"] }

[health]
path = "/healthz"
interval = "100ms"
timeout = "500ms"
failure_threshold = 3
start_timeout = "5s"
"#,
    )
    .replace("INSTANCE_BINARY", instance_binary());
    s.push_str(extra);
    for (env, port) in ports {
        let instances = if env == "production" { 2 } else { 1 };
        s.push_str(&format!(
            "\n[environments.{env}]\nlisten = \"127.0.0.1:{port}\"\ninstances = {instances}\nbake = \"{bake}\"\n"
        ));
        if lifecycle == Lifecycle::Loose && env != "production" {
            s.push_str("optional = true\n");
        }
        if lifecycle == Lifecycle::Automatic && (env == "development" || env == "integration") {
            s.push_str("auto_deploy = true\n");
        }
    }
    s
}

impl Gantry {
    /// A controller with the four standard environments.
    pub fn start() -> Gantry {
        Self::start_with("300ms", "")
    }

    pub fn start_with(bake: &str, extra: &str) -> Gantry {
        Self::start_full(bake, extra, &[])
    }

    /// A controller whose config ends with `tail` (which extends the production table, the last one).
    pub fn start_with_tail(bake: &str, tail: &str) -> Gantry {
        Self::start_config(bake, "", &[], tail)
    }

    pub fn start_full(bake: &str, extra: &str, server_env: &[(&str, &str)]) -> Gantry {
        Self::start_config(bake, extra, server_env, "")
    }

    fn start_config(bake: &str, extra: &str, server_env: &[(&str, &str)], tail: &str) -> Gantry {
        Self::start_lifecycle(bake, extra, server_env, tail, Lifecycle::Loose)
    }

    /// A controller whose promotion path is `lifecycle`, its config ending with `tail`.
    pub fn start_governed(lifecycle: Lifecycle, tail: &str) -> Gantry {
        Self::start_lifecycle("100ms", "", &[], tail, lifecycle)
    }

    /// A controller with `server_env` in its environment, its config ending with `tail`.
    pub fn start_with_env_and_tail(bake: &str, server_env: &[(&str, &str)], tail: &str) -> Gantry {
        Self::start_lifecycle(bake, "", server_env, tail, Lifecycle::Loose)
    }

    /// A controller started with extra `gantry server` arguments.
    pub fn start_with_server_args(server_args: &[&str]) -> Gantry {
        Self::start_args("300ms", "", &[], "", Lifecycle::Loose, server_args)
    }

    fn start_lifecycle(
        bake: &str,
        extra: &str,
        server_env: &[(&str, &str)],
        tail: &str,
        lifecycle: Lifecycle,
    ) -> Gantry {
        Self::start_args(bake, extra, server_env, tail, lifecycle, &[])
    }

    /// A controller whose whole config `make` writes, given the
    /// environments' ports.
    pub fn start_custom(make: impl FnOnce(&[(String, u16)]) -> String) -> Gantry {
        let ports: Vec<(String, u16)> = ["development", "integration", "staging", "production"]
            .iter()
            .map(|e| (e.to_string(), free_port()))
            .collect();
        let config = make(&ports);
        Self::start_made(ports, config, Vec::new(), Vec::new())
    }

    fn start_args(
        bake: &str,
        extra: &str,
        server_env: &[(&str, &str)],
        tail: &str,
        lifecycle: Lifecycle,
        server_args: &[&str],
    ) -> Gantry {
        let ports: Vec<(String, u16)> = ["development", "integration", "staging", "production"]
            .iter()
            .map(|e| (e.to_string(), free_port()))
            .collect();
        let config = lifecycle_config(&ports, bake, extra, lifecycle) + tail;
        let server_env = server_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let server_args = server_args.iter().map(|a| a.to_string()).collect();
        Self::start_made(ports, config, server_env, server_args)
    }

    fn start_made(
        ports: Vec<(String, u16)>,
        config: String,
        server_env: Vec<(String, String)>,
        server_args: Vec<String>,
    ) -> Gantry {
        let mut g = Gantry {
            dir: tempfile::tempdir().unwrap(),
            config,
            server: None,
            ports,
            server_env,
            server_args,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            admin: std::sync::Mutex::new(None),
        };
        std::fs::write(g.config_path(), &g.config).unwrap();
        g.start_server();
        g
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gantry.toml")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn port(&self, env: &str) -> u16 {
        self.ports.iter().find(|(e, _)| e == env).unwrap().1
    }

    pub fn start_server(&mut self) {
        let _ = std::fs::remove_file(self.data().join("server.json"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("controller.log"))
            .unwrap();
        let child = Command::new(GANTRY)
            .arg("--data-dir")
            .arg(self.data())
            .args(["server", "--listen", "127.0.0.1:0", "--config"])
            .arg(self.config_path())
            .args(&self.server_args)
            .envs(self.server_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(child);
        let server_file = self.data().join("server.json");
        // Generous: SQLite's fsyncs can stall on a busy machine. A controller
        // that exits is reported at once, with its log.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server_file.exists() {
            if let Some(status) = self
                .server
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the controller exited ({status}):\n{}",
                    self.controller_log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the controller did not start within 60s:\n{}",
                self.controller_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill_server(&mut self) {
        if let Some(mut c) = self.server.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default()
    }

    pub fn gantry(&self, args: &[&str]) -> Run {
        self.gantry_env(args, &[])
    }

    pub fn gantry_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = Command::new(GANTRY)
            .arg("--data-dir")
            .arg(self.data())
            .args(args)
            .env_remove("GANTRY_TOKEN")
            .envs(env.iter().copied())
            .env("GANTRY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Run::from(output_within(out, CLI_DEADLINE, args))
    }

    /// A sample-service release whose binary is a link to the test build, so tests stay fast.
    pub fn artifact(&self, version: &str, settings: &str) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("sample-{version}-{}.tar", settings.len()));
        make_artifact(&path, version, settings);
        path
    }

    pub fn register(&self, version: &str, settings: &str) {
        let artifact = self.artifact(version, settings);
        self.gantry(&[
            "release",
            "create",
            version,
            "--artifact",
            artifact.to_str().unwrap(),
        ])
        .ok();
    }

    /// Adds a user with `roles` and returns a token they minted themselves
    /// (one the admin mints for them may not give verdicts): the admin's
    /// enrolment token is exchanged, which revokes it.
    pub fn enrol(&self, name: &str, roles: &[&str]) -> String {
        let mut args = vec!["user", "add", name];
        for r in roles {
            args.extend(["--role", r]);
        }
        self.gantry(&args).ok();
        let enrolment = self
            .gantry(&["token", "create", "--user", name])
            .ok()
            .stdout
            .trim()
            .to_owned();
        let run = self
            .gantry_env(
                &["token", "create", "--user", name],
                &[("GANTRY_TOKEN", &enrolment)],
            )
            .ok();
        let token = run.stdout.trim().to_owned();
        assert!(token.starts_with("gantry_"), "{}", run.stdout);
        token
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data().join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub fn api_url(&self) -> String {
        let info: gantry_api::ServerInfo =
            serde_json::from_slice(&std::fs::read(self.data().join("server.json")).unwrap())
                .unwrap();
        info.url
    }

    /// GET on the API with the admin token, as untyped JSON: only for tests
    /// that probe the wire format itself; the others use [`Gantry::client`].
    pub fn api_json(&self, path: &str) -> Value {
        let (status, body) = http(
            &self.api_url(),
            "GET",
            &format!("/api/v1{path}"),
            Some(&self.token()),
            "",
        );
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The typed client, as the admin.
    pub fn client(&self) -> Client {
        let url = self.api_url();
        let mut admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        match admin.as_ref() {
            Some(c) if c.base() == url.trim_end_matches('/') => c.clone(),
            _ => {
                let c = Client::new(&url, self.token()).unwrap();
                *admin = Some(c.clone());
                c
            }
        }
    }

    /// Blocks on a client call and fails the test, with the controller's
    /// answer, if it fails.
    #[track_caller]
    pub fn call<T>(&self, call: impl Future<Output = Result<T, ClientError>>) -> T {
        match self.try_call(call) {
            Ok(answer) => answer,
            Err(e) => panic!("API call failed: {e} ({e:?})"),
        }
    }

    /// Blocks on a client call, for tests that expect it to be refused.
    pub fn try_call<T>(
        &self,
        call: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        self.runtime.block_on(call)
    }

    pub fn deployment(&self, id: DeploymentId) -> DeploymentView {
        self.call(self.client().deployment(id))
    }

    /// Deployments, newest first, of `env` (of every environment if `None`).
    pub fn deployments(&self, env: Option<&str>) -> Vec<Deployment> {
        let query = ListQuery {
            env: env.map(str::to_owned),
            limit: None,
        };
        self.call(self.client().deployments(&query))
    }

    /// `gantry log ID`: a deployment's log as an operator reads it.
    pub fn log_of(&self, id: i64) -> String {
        self.gantry(&["log", &id.to_string()]).ok().stdout
    }

    /// The newest deployment to `env`.
    pub fn latest(&self, env: &str) -> Deployment {
        let query = ListQuery {
            env: Some(env.to_owned()),
            limit: Some(1),
        };
        self.call(self.client().deployments(&query))
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no deployment to {env}"))
    }

    pub fn status(&self) -> StatusView {
        self.call(self.client().status())
    }

    pub fn releases(&self) -> Vec<ReleaseRecord> {
        self.call(self.client().releases())
    }

    pub fn release(&self, version: &str) -> ReleaseRecord {
        self.call(self.client().release(version))
    }

    /// What `env`'s router counted, per pool.
    pub fn traffic(&self, env: &str, above_ms: Option<&str>) -> Vec<PoolStats> {
        let query = TrafficQuery {
            env: env.to_owned(),
            above_ms: above_ms.map(str::to_owned),
        };
        self.call(self.client().traffic(&query))
    }

    /// One page of the audit trail, from the start, of at most `limit` records.
    pub fn audit_page(&self, limit: Option<usize>) -> AuditPage {
        self.call(self.client().audit(&AuditQuery { after: 0, limit }))
    }

    /// The audit trail's records (the first page, as the API sends it by default).
    pub fn audit_records(&self) -> Vec<AuditRecord> {
        self.audit_page(None).records
    }

    pub fn wait_finished(&self, id: DeploymentId) -> Deployment {
        let mut last = None;
        wait_until(
            &format!("deployment {id} to finish"),
            Duration::from_secs(30),
            || {
                let d = self.deployment(id).deployment;
                let done = d.phase.is_terminal();
                last = Some(d);
                done
            },
        );
        last.unwrap()
    }

    /// Waits for deployment `id` to reach `phase`; fails at once if it finishes first.
    pub fn wait_phase(&self, id: DeploymentId, phase: Phase) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d = self.deployment(id).deployment;
            if d.phase == phase {
                return;
            }
            assert!(
                !d.phase.is_terminal() && Instant::now() < deadline,
                "deployment {id} never reached {}: {d:?}",
                phase.as_str()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the environment's router answers on `/`.
    pub fn get_env(&self, env: &str) -> (u16, String) {
        http(
            &format!("http://127.0.0.1:{}", self.port(env)),
            "GET",
            "/",
            None,
            "",
        )
    }

    /// Instances of this controller running on the machine, from /proc.
    pub fn running_instances(&self) -> Vec<String> {
        self.instance_processes()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    /// (instance id, pid) of this controller's instances, sorted by id.
    pub fn instance_processes(&self) -> Vec<(String, u32)> {
        let data = format!(
            "GANTRY_CONTROLLER={}",
            gantry_server::target::controller_marker(&self.data().canonicalize().unwrap())
        );
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            let vars: Vec<String> = environ
                .split(|b| *b == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            if vars.contains(&data) {
                if let Some(id) = vars
                    .iter()
                    .find_map(|v| v.strip_prefix("GANTRY_INSTANCE_ID="))
                {
                    out.push((id.to_owned(), pid));
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for Gantry {
    fn drop(&mut self) {
        if self.server.is_some() {
            let _ = self.gantry(&["shutdown", "--workloads"]);
            if let Some(mut c) = self.server.take() {
                let deadline = Instant::now() + Duration::from_secs(10);
                while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// The gantry binary as instances run it. Instances run as `nobody` when the
/// tests run as root, so the binary must be reachable by any user: the test
/// build is used where it is (every directory above it searchable by
/// others), else a copy in a world-readable directory beside the system's
/// temporary files, shared by test runs of the same build.
pub fn instance_binary() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let reachable = Path::new(GANTRY)
            .ancestors()
            .skip(1)
            .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0));
        if reachable {
            return GANTRY.to_owned();
        }
        let meta = std::fs::metadata(GANTRY).unwrap();
        let mtime = meta
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "gantry-test-bin-{}-{}",
            meta.len(),
            mtime.as_nanos()
        ));
        let path = dir.join("gantry");
        if !path.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            // Copy aside and rename, so parallel tests never run a half-copied binary.
            let tmp = dir.join(format!("gantry.{}", std::process::id()));
            std::fs::copy(GANTRY, &tmp).unwrap();
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
        path.display().to_string()
    })
}

pub fn make_artifact(path: &Path, version: &str, settings: &str) {
    // A script that becomes the test build: links out of a release are
    // refused, and copying the binary into every artifact would be slow. The
    // test configs let instances read and run that binary (`service.sandbox`).
    let script = format!("#!/bin/sh\nexec '{}' \"$@\"\n", instance_binary());
    let json = if settings.is_empty() {
        format!("{{\"version\": \"{version}\"}}")
    } else {
        format!("{{\"version\": \"{version}\", {settings}}}")
    };
    make_tar(
        path,
        &[
            ("bin/gantry", 0o755, script.as_bytes()),
            ("sample.json", 0o644, json.as_bytes()),
        ],
    );
}

/// Runs `cmd` with its stdout closed before anything is written (as `head`
/// does after its lines) and returns how it ended and what it said on stderr.
pub fn run_with_closed_stdout(
    mut cmd: Command,
    deadline: Duration,
) -> (std::process::ExitStatus, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut status = None;
    wait_until("the CLI to exit", deadline, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    (status.unwrap(), stderr)
}

/// A plain tar of regular files: (path in the archive, mode, content).
pub fn make_tar(path: &Path, files: &[(&str, u32, &[u8])]) {
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, mode, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(*mode);
        header.set_cksum();
        tar.append_data(&mut header, name, *content).unwrap();
    }
    tar.finish().unwrap();
}

/// A minimal HTTP/1.1 client over a raw socket, to send exactly what a test needs.
pub fn http(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    try_http(base, method, path, token, body)
        .unwrap_or_else(|e| panic!("{method} {base}{path}: {e}"))
}

/// [`http`], with connection failures as errors instead of panics.
pub fn try_http(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    // Undo chunked encoding well enough for the small bodies tests read.
    let body = if resp
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    Ok((status, body))
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn deploy_id(run: &Run) -> i64 {
    run.stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("expected a deployment id, got {:?}", run.stdout))
}

/// Sequential requests to an environment until stopped (at most 60 s of them).
pub struct Load {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let thread = {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                    let answer =
                        try_http(&format!("http://127.0.0.1:{port}"), "GET", "/", None, "");
                    let good = matches!(answer, Ok((200, _)));
                    if good { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(3));
                }
            })
        };
        Load {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Production configured by `tail` (which extends its table), 1.0.0 serving it
/// under load long enough for a canary's baseline, and `releases` registered.
pub fn serving(tail: &str, releases: &[(&str, &str)]) -> (Gantry, Load) {
    let g = Gantry::start_with_tail("300ms", tail);
    g.register("1.0.0", "");
    for (version, settings) in releases {
        g.register(version, settings);
    }
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    let load = Load::start(g.port("production"));
    wait_until("stable traffic", Duration::from_secs(10), || {
        load.ok.load(Ordering::Relaxed) > 200
    });
    (g, load)
}

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// An HTTP receiver on loopback (a real socket) that records every request
/// and answers them with `statuses` in turn, then 200.
pub struct Receiver {
    pub port: u16,
    pub got: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Receiver {
    pub fn start(statuses: &[u16]) -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = got.clone();
        let mut statuses: std::collections::VecDeque<u16> = statuses.iter().copied().collect();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let path = first.split_whitespace().nth(1).unwrap_or("").to_owned();
                let mut headers = std::collections::HashMap::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                record.lock().unwrap().push(Received {
                    path,
                    headers,
                    body,
                });
                let status = statuses.pop_front().unwrap_or(200);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
            }
        });
        Receiver { port, got }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}
