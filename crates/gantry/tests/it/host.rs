//! `gantry host serve --stdio` driven through `HostLink`, the controller's
//! end of the fleet channel: real child processes speaking over their pipes,
//! real instances, a real router on the "host" (this machine, with its own
//! data directory).

use crate::harness::{free_port, http, instance_binary, make_artifact, GANTRY};
use gantry_api::ReleaseRecord;
use gantry_config::ArtifactLimits;
use gantry_core::machine::Probe;
use gantry_core::{Digest, EnvName, InstanceRef, Version};
use gantry_router::Pool;
use gantry_server::fleet::link::Prepared;
use gantry_server::fleet::protocol::{
    self, Answer, Call, ErrorKind, Hello, HostConfinement, ProbeOutcome, ReleaseSpec, Reply,
    Request, MAX_FRAME, PROTOCOL,
};
use gantry_server::fleet::{HostLink, LinkError, LinkOptions};
use gantry_server::target::LaunchSpec;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const SECRET: &str = "s3cr3t-value-that-must-stay-in-memory";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// A `gantry host serve --stdio` child on `data`, logging to `log`.
fn spawn_host(data: &Path, log: &Path) -> (Child, ChildStdout, ChildStdin) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = Command::new(GANTRY)
        .arg("--data-dir")
        .arg(data)
        .args(["host", "serve", "--stdio"])
        .env("GANTRY_LOG", "debug")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdout, stdin)
}

fn hello(data: &Path, controller: &str, epoch: u64) -> Hello {
    Hello {
        protocol: PROTOCOL,
        controller: controller.to_owned(),
        epoch,
        data_dir: data.display().to_string(),
        // As the test configs: instances may run the test build.
        confinement: HostConfinement {
            run_as: None,
            sandbox: true,
            read: vec![PathBuf::from(instance_binary())],
            write: vec![],
        },
    }
}

async fn connect(
    data: &Path,
    log: &Path,
    controller: &str,
    epoch: u64,
    options: LinkOptions,
) -> (Child, Result<HostLink, LinkError>) {
    let (child, stdout, stdin) = spawn_host(data, log);
    let link = HostLink::connect(stdout, stdin, hello(data, controller, epoch), options).await;
    (child, link)
}

/// Stops whatever a test's hosts left running (instances found by their
/// data directory's marker, routers by their admin file), even after a panic.
struct Workloads(Vec<PathBuf>);

impl Drop for Workloads {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        for data in &self.0 {
            let Ok(data) = data.canonicalize() else {
                continue;
            };
            let marker = gantry_server::target::controller_marker(&data);
            let needle = format!("GANTRY_CONTROLLER={marker}");
            for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                    continue;
                };
                if environ.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            if let Ok(routers) = std::fs::read_dir(data.join("routers")) {
                for r in routers.flatten() {
                    let admin = std::fs::read(r.path().join(gantry_router::ADMIN_FILE))
                        .ok()
                        .and_then(|b| serde_json::from_slice::<gantry_router::AdminInfo>(&b).ok());
                    if let Some(info) = admin {
                        let _ = kill(Pid::from_raw(info.pid as i32), Signal::SIGKILL);
                    }
                }
            }
        }
    }
}

fn release_of(artifact: &Path, version: &str) -> ReleaseRecord {
    use sha2::Digest as _;
    let bytes = std::fs::read(artifact).unwrap();
    ReleaseRecord {
        version: Version::parse(version).unwrap(),
        digest: Digest::try_from(hex::encode(sha2::Sha256::digest(&bytes))).unwrap(),
        size: bytes.len() as u64,
        artifact_kind: "tar".to_owned(),
        git_sha: None,
        signature: None,
        signed_by: None,
        created_at: 0,
        created_by: "test".to_owned(),
        migrations: Vec::new(),
        committed_at: None,
    }
}

fn env() -> EnvName {
    EnvName::try_from("production".to_owned()).unwrap()
}

fn spec(version: &str, count: u32) -> LaunchSpec {
    LaunchSpec {
        env: env(),
        deployment: 1,
        version: Version::parse(version).unwrap(),
        count,
        command: "bin/gantry".to_owned(),
        args: [
            "sample-service",
            "--port",
            "{port}",
            "--settings",
            "sample.json",
        ]
        .map(String::from)
        .to_vec(),
        port_env: "PORT".to_owned(),
        vars: BTreeMap::from([("SECRET_TOKEN".to_owned(), SECRET.to_owned())]),
        hosts: Vec::new(),
    }
}

/// Probes through the host until every instance is healthy (10 s at most).
async fn wait_healthy(link: &HostLink, instances: &[InstanceRef]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in instances {
        loop {
            match link
                .probe(i, "/healthz", Duration::from_millis(500))
                .await
                .unwrap()
            {
                ProbeOutcome::Probe(Probe::Healthy) => break,
                ProbeOutcome::Exited(why) => panic!("{} exited: {why}", i.id),
                other => {
                    assert!(Instant::now() < deadline, "{} not healthy: {other:?}", i.id);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Waits (5 s at most) for a child to end by itself.
async fn exits(child: &mut Child) -> std::process::ExitStatus {
    tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("host serve ends within 5s once its stdin closes")
        .unwrap()
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let contains = |p: &Path| {
                std::fs::read(p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            };
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() && contains(&p) => found.push(p),
                _ => {}
            }
        }
    }
    found
}

#[test]
fn a_host_prepares_starts_probes_routes_counts_and_stops_over_the_channel() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("host.log");
    let _cleanup = Workloads(vec![data.clone()]);
    let artifact = tmp.path().join("v1.tar");
    make_artifact(&artifact, "1.0.0", "");
    let release = release_of(&artifact, "1.0.0");
    runtime().block_on(async {
        let (mut child, link) =
            connect(&data, &log, "controller-a", 1, LinkOptions::default()).await;
        let link = link.unwrap();
        assert_eq!(link.welcome().running, vec![]);
        assert!(link.welcome().free_bytes > 0);
        let limits = ArtifactLimits::standard();

        let first = link.prepare(&release, &artifact, &limits).await.unwrap();
        assert_eq!(
            first,
            Prepared {
                repairs: vec![],
                uploaded_bytes: release.size
            }
        );
        assert!(data.join("releases/1.0.0/bin/gantry").is_file());
        assert!(data
            .join("artifacts/sha256")
            .join(release.digest.as_hex())
            .is_file());
        // A second prepare of the same digest sends nothing.
        let again = link.prepare(&release, &artifact, &limits).await.unwrap();
        assert_eq!(again.uploaded_bytes, 0);
        assert_eq!(link.check_release(&release).await.unwrap(), Some(Ok(())));
        // Within one channel a release is verified once: a rollback's prepare
        // does not hash it all again (here, it does not even miss the blob).
        let blob = data.join("artifacts/sha256").join(release.digest.as_hex());
        let kept = std::fs::read(&blob).unwrap();
        std::fs::remove_file(&blob).unwrap();
        let cached = link
            .prepare_release(ReleaseSpec::of(&release), &limits)
            .await
            .unwrap();
        assert_eq!(cached, Vec::<String>::new());
        std::fs::write(&blob, kept).unwrap();

        let instances = link.ensure_instances(&spec("1.0.0", 2)).await.unwrap();
        assert_eq!(instances.len(), 2);
        wait_healthy(&link, &instances).await;
        let running = link.running().await.unwrap();
        assert_eq!(
            running.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            vec!["production-d1-1", "production-d1-2"]
        );

        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let pool = Pool {
            name: "1.0.0".to_owned(),
            weight: 100,
            upstreams: instances
                .iter()
                .map(|i| SocketAddr::from(([127, 0, 0, 1], i.port)))
                .collect(),
        };
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        link.route(&env(), listen, vec![pool], None, Some(metrics))
            .await
            .unwrap();
        assert!(link.router_running(&env()).await.unwrap());
        let base = format!("http://{listen}");
        for _ in 0..10 {
            let (status, _) = tokio::task::spawn_blocking({
                let base = base.clone();
                move || http(&base, "GET", "/", None, "")
            })
            .await
            .unwrap();
            assert_eq!(status, 200);
        }
        let stats = link.pool_stats(&env(), &[1000.0]).await.unwrap();
        let pool = stats.iter().find(|p| p.name == "1.0.0").unwrap();
        assert_eq!(pool.requests, 10, "{stats:?}");
        assert_eq!(pool.errors, 0);
        assert_eq!(pool.slower_than.len(), 1);
        // The controller asks for the histogram, to merge across hosts.
        let histogram = pool.latency_histogram.as_ref().expect("a histogram");
        assert_eq!(histogram.total(), 10);
        // The host's router serves Prometheus where the controller said.
        let (status, text) = tokio::task::spawn_blocking(move || {
            http(&format!("http://{metrics}"), "GET", "/metrics", None, "")
        })
        .await
        .unwrap();
        assert_eq!(status, 200);
        assert!(
            text.contains(r#"release="1.0.0",pool="stable",code="2xx"} 10"#),
            "{text}"
        );

        // The instance's output and the router's counters exist, the secret
        // lives only in the instance's environment.
        let logs = link.logs(&instances[0].id, 4096).await.unwrap();
        assert!(!logs.contains(SECRET));

        link.stop(&instances).await.unwrap();
        assert_eq!(link.running().await.unwrap(), vec![]);
        assert!(link.exited(&instances[0]).await.unwrap().is_some());
        link.stop_router(&env()).await.unwrap();
        assert!(!link.router_running(&env()).await.unwrap());
        // Revived, the router serves its last routing again.
        assert!(link.revive(&env(), listen, None).await.unwrap());
        assert!(link.router_running(&env()).await.unwrap());
        assert!(
            !link.revive(&env(), listen, None).await.unwrap(),
            "already running"
        );
        link.stop_router(&env()).await.unwrap();
        drop(link);
        assert!(exits(&mut child).await.success());
    });
    assert_eq!(
        files_containing(&data, SECRET.as_bytes()),
        Vec::<PathBuf>::new()
    );
    let host_log = std::fs::read_to_string(&log).unwrap();
    assert!(!host_log.contains(SECRET));
    assert!(host_log.contains("controller admitted"), "{host_log}");
}

#[test]
fn a_wrong_digest_or_a_truncated_upload_is_refused_and_nothing_is_unpacked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("host.log");
    let _cleanup = Workloads(vec![data.clone()]);
    let artifact = tmp.path().join("v1.tar");
    make_artifact(&artifact, "1.0.0", "");
    let release = release_of(&artifact, "1.0.0");
    runtime().block_on(async {
        let (_child, link) = connect(&data, &log, "controller-a", 1, LinkOptions::default()).await;
        let link = link.unwrap();
        let limits = ArtifactLimits::standard();

        // The whole file, announced under another digest.
        let wrong = Digest::try_from("0".repeat(64)).unwrap();
        let e = link.upload(&artifact, &wrong).await.unwrap_err();
        assert_eq!(e.remote_kind(), Some(ErrorKind::Upload), "{e}");
        assert!(e.to_string().contains("nothing was stored"), "{e}");
        assert!(!link.have_artifact(&wrong).await.unwrap());
        let mut spec = ReleaseSpec::of(&release);
        spec.digest = wrong;
        let e = link.prepare_release(spec, &limits).await.unwrap_err();
        assert_eq!(e.remote_kind(), Some(ErrorKind::Unpack), "{e}");

        // Half the file, then a prepare: refused, nothing unpacked.
        let bytes = std::fs::read(&artifact).unwrap();
        let half = bytes[..bytes.len() / 2].to_vec();
        let (received, complete) = link
            .upload_chunk(&release.digest, release.size, 0, half.clone())
            .await
            .unwrap();
        assert_eq!((received, complete), (half.len() as u64, false));
        assert!(!link.have_artifact(&release.digest).await.unwrap());
        let e = link
            .prepare_release(ReleaseSpec::of(&release), &limits)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        // A chunk out of order ends that upload.
        let e = link
            .upload_chunk(&release.digest, release.size, 1, vec![0])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("expected offset"), "{e}");

        assert!(!data.join("releases/1.0.0").exists());
        let stored: Vec<_> = std::fs::read_dir(data.join("artifacts/sha256"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            stored,
            Vec::<std::ffi::OsString>::new(),
            "nothing stored, no leftovers"
        );

        // The real upload still works on the same channel.
        let done = link.prepare(&release, &artifact, &limits).await.unwrap();
        assert_eq!(done.uploaded_bytes, release.size);
        assert!(data.join("releases/1.0.0/bin/gantry").is_file());
    });
}

/// Every prepare asks whether the host has the artifact; a fleet rollback
/// asks every host at once. A channel hashes an artifact once (its upload,
/// or the first question) and then only looks for the file; a new channel
/// hashes it again.
#[test]
fn an_artifact_is_hashed_once_per_channel_and_again_by_a_new_channel() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("host.log");
    let _cleanup = Workloads(vec![data.clone()]);
    let artifact = tmp.path().join("v1.tar");
    make_artifact(&artifact, "1.0.0", "");
    let release = release_of(&artifact, "1.0.0");
    let blob = data.join("artifacts/sha256").join(release.digest.as_hex());
    let bytes = std::fs::read(&artifact).unwrap();
    let mut corrupt = bytes.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    runtime().block_on(async {
        let (child, link) = connect(&data, &log, "controller-a", 1, LinkOptions::default()).await;
        let link = link.unwrap();
        assert_eq!(
            link.upload(&artifact, &release.digest).await.unwrap(),
            release.size
        );
        // Verified by its upload: a changed copy is not hashed again...
        std::fs::write(&blob, &corrupt).unwrap();
        assert!(link.have_artifact(&release.digest).await.unwrap());
        // ...but a missing one is missed, and one put back is hashed again.
        std::fs::remove_file(&blob).unwrap();
        assert!(!link.have_artifact(&release.digest).await.unwrap());
        std::fs::write(&blob, &corrupt).unwrap();
        assert!(!link.have_artifact(&release.digest).await.unwrap());
        assert!(!blob.exists(), "a corrupt copy is removed");
        std::fs::write(&blob, &bytes).unwrap();
        assert!(link.have_artifact(&release.digest).await.unwrap());
        std::fs::write(&blob, &corrupt).unwrap();
        assert!(link.have_artifact(&release.digest).await.unwrap());
        drop(link);
        drop(child);

        // A new channel trusts nothing of the last one's.
        let (_child, link) = connect(&data, &log, "controller-a", 2, LinkOptions::default()).await;
        let link = link.unwrap();
        assert!(!link.have_artifact(&release.digest).await.unwrap());
        assert!(!blob.exists(), "a corrupt copy is removed");
        let limits = ArtifactLimits::standard();
        let done = link.prepare(&release, &artifact, &limits).await.unwrap();
        assert_eq!(done.uploaded_bytes, release.size);
        assert_eq!(std::fs::read(&blob).unwrap(), bytes);
        assert!(data.join("releases/1.0.0/bin/gantry").is_file());
    });
}

#[test]
fn a_stale_epoch_or_another_controller_is_fenced() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("host.log");
    runtime().block_on(async {
        let o = LinkOptions::default();
        let (_a, link_a) = connect(&data, &log, "controller-a", 2, o).await;
        let link_a = link_a.unwrap();
        let fence: serde_json::Value =
            serde_json::from_slice(&std::fs::read(data.join("epoch")).unwrap()).unwrap();
        assert_eq!(
            fence,
            serde_json::json!({"controller": "controller-a", "epoch": 2})
        );

        let (_b, stale) = connect(&data, &log, "controller-a", 1, o).await;
        match stale {
            Err(LinkError::Fenced(why)) => {
                assert!(why.contains("epoch 1") && why.contains("stale"), "{why}")
            }
            Err(e) => panic!("expected fenced, got {e}"),
            Ok(_) => panic!("expected fenced, got admitted"),
        }
        let (_c, other) = connect(&data, &log, "controller-b", 9, o).await;
        match other {
            Err(LinkError::Fenced(why)) => {
                assert!(why.contains("\"controller-b\" is refused"), "{why}")
            }
            Err(e) => panic!("expected fenced, got {e}"),
            Ok(_) => panic!("expected fenced, got admitted"),
        }
        // Still the first controller's: it keeps working.
        assert_eq!(link_a.running().await.unwrap(), vec![]);

        // A newer process of the same controller takes over; the older
        // session is refused from its next request on.
        let (_d, newer) = connect(&data, &log, "controller-a", 3, o).await;
        let newer = newer.unwrap();
        match link_a.running().await {
            Err(LinkError::Fenced(why)) => assert!(why.contains("epoch 2"), "{why}"),
            other => panic!("expected fenced, got {other:?}"),
        }
        assert_eq!(newer.running().await.unwrap(), vec![]);
    });
}

/// Sends raw bytes as a frame and reads the host's next reply.
async fn raw_exchange(stdin: &mut ChildStdin, stdout: &mut ChildStdout, bytes: &[u8]) -> Reply {
    stdin.write_all(bytes).await.unwrap();
    stdin.flush().await.unwrap();
    let body = tokio::time::timeout(Duration::from_secs(10), protocol::read_frame(stdout))
        .await
        .expect("an answer within 10s")
        .unwrap();
    protocol::decode(&body).unwrap()
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[test]
fn an_oversized_frame_and_malformed_json_are_answered_and_the_host_carries_on() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("host.log");
    runtime().block_on(async {
        let (mut child, mut stdout, mut stdin) = spawn_host(&data, &tmp.path().join("host.log"));

        let mut big = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_FRAME + 1));
        let reply = raw_exchange(&mut stdin, &mut stdout, &big).await;
        assert_eq!(reply.id, 0);
        match reply.answer {
            Answer::Error(e) => {
                assert_eq!(e.kind, ErrorKind::Protocol);
                assert!(e.message.contains("above the limit"), "{}", e.message);
            }
            other => panic!("expected an error, got {other:?}"),
        }

        let reply = raw_exchange(&mut stdin, &mut stdout, &framed(b"{not json")).await;
        match (reply.id, reply.answer) {
            (0, Answer::Error(e)) => assert!(e.message.contains("syntax error"), "{}", e.message),
            other => panic!("expected an error, got {other:?}"),
        }
        // An unknown request with a readable id is answered under that id.
        let reply = raw_exchange(
            &mut stdin,
            &mut stdout,
            &framed(br#"{"id": 5, "call": {"call": "format_disk"}}"#),
        )
        .await;
        match (reply.id, reply.answer) {
            (5, Answer::Error(e)) => assert_eq!(e.kind, ErrorKind::Protocol),
            other => panic!("expected an error for id 5, got {other:?}"),
        }
        // Work before the greeting is refused.
        let running = protocol::encode(&Request {
            id: 6,
            call: Call::Running,
        })
        .unwrap();
        match raw_exchange(&mut stdin, &mut stdout, &running).await.answer {
            Answer::Error(e) => assert!(e.message.contains("before hello"), "{}", e.message),
            other => panic!("expected an error, got {other:?}"),
        }
        // And the host still serves.
        let greet = protocol::encode(&Request {
            id: 9,
            call: Call::Hello(hello(&data, "controller-a", 1)),
        })
        .unwrap();
        let reply = raw_exchange(&mut stdin, &mut stdout, &greet).await;
        assert_eq!(reply.id, 9);
        assert!(
            matches!(reply.answer, Answer::Welcome(_)),
            "{:?}",
            reply.answer
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "host serve is still running"
        );

        drop(stdin);
        assert!(exits(&mut child).await.success());
    });
    let host_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        host_log.contains("refused a frame above the limit"),
        "{host_log}"
    );
}

#[test]
fn a_request_in_flight_is_answered_with_an_error_when_the_channel_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("host.log");
    runtime().block_on(async {
        // Accepts connections and never answers: a probe against it hangs.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let instance = InstanceRef {
            id: "production-d1-1".to_owned(),
            port,
            host: None,
        };
        let options = LinkOptions {
            long_timeout: Duration::from_millis(700),
            ..LinkOptions::default()
        };
        let (mut child, link) = connect(&data, &log, "controller-a", 1, options).await;
        let link = std::sync::Arc::new(link.unwrap());

        // The per-request timeout: an answer that does not come in time.
        let started = Instant::now();
        let e = link
            .probe(&instance, "/healthz", Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(matches!(e, LinkError::Timeout { call: "probe", .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));

        // A probe left waiting on the host, then the host dies.
        let waiting = tokio::spawn({
            let link = link.clone();
            let instance = instance.clone();
            async move {
                let started = Instant::now();
                let r = link
                    .probe(&instance, "/healthz", Duration::from_secs(30))
                    .await;
                (r, started.elapsed())
            }
        });
        let silent = tokio::task::spawn_blocking(move || {
            // The first connection was the timed-out probe's; wait for a second.
            let first = silent.accept().unwrap();
            let second = silent.accept().unwrap();
            (silent, first, second)
        });
        let _held = tokio::time::timeout(Duration::from_secs(10), silent)
            .await
            .expect("the host's probe connects")
            .unwrap();
        // Requests share the channel: one asked later is answered first.
        let quick = Instant::now();
        assert_eq!(link.running().await.unwrap(), vec![]);
        assert!(quick.elapsed() < Duration::from_secs(5));
        assert!(!waiting.is_finished(), "the probe is still waiting");
        child.start_kill().unwrap();
        let (result, after) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting request is answered, not left hanging")
            .unwrap();
        match result {
            Err(LinkError::Closed(why)) => assert!(why.contains("closed"), "{why}"),
            other => panic!("expected the channel closed, got {other:?}"),
        }
        assert!(after < Duration::from_secs(5));
        // Later requests fail at once too.
        assert!(matches!(link.running().await, Err(LinkError::Closed(_))));
        assert!(link.closed().is_some());
    });
}

#[test]
fn instances_outlive_a_killed_host_serve_and_only_their_own_host_adopts_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let other = tmp.path().join("other-host");
    let log = tmp.path().join("host.log");
    let _cleanup = Workloads(vec![data.clone(), other.clone()]);
    let artifact = tmp.path().join("v1.tar");
    make_artifact(&artifact, "1.0.0", "");
    let release = release_of(&artifact, "1.0.0");
    runtime().block_on(async {
        let o = LinkOptions::default();
        let (mut child, link) = connect(&data, &log, "controller-a", 1, o).await;
        let link = link.unwrap();
        link.prepare(&release, &artifact, &ArtifactLimits::standard())
            .await
            .unwrap();
        let started = link.ensure_instances(&spec("1.0.0", 2)).await.unwrap();
        wait_healthy(&link, &started).await;
        // host serve dies; nothing it started holds its end of the channel,
        // so the controller's side sees the end at once.
        child.start_kill().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while link.closed().is_none() {
            assert!(Instant::now() < deadline, "the channel did not close");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(link);
        child.wait().await.unwrap();

        // host serve is gone; its instances still answer.
        for i in &started {
            let base = format!("http://127.0.0.1:{}", i.port);
            let (status, _) =
                tokio::task::spawn_blocking(move || http(&base, "GET", "/healthz", None, ""))
                    .await
                    .unwrap();
            assert_eq!(status, 200);
        }

        // Another host sharing this process table sees none of them.
        let (_o, other_link) = connect(&other, &log, "controller-a", 1, o).await;
        let other_link = other_link.unwrap();
        assert_eq!(other_link.welcome().running, vec![]);
        assert_eq!(other_link.running().await.unwrap(), vec![]);

        // The next host serve on this data directory finds and adopts them.
        let (_c, link) = connect(&data, &log, "controller-a", 2, o).await;
        let link = link.unwrap();
        let ids: Vec<_> = link
            .welcome()
            .running
            .iter()
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(ids, vec!["production-d1-1", "production-d1-2"]);
        let adopted = link.ensure_instances(&spec("1.0.0", 2)).await.unwrap();
        assert_eq!(
            adopted, started,
            "same ids and ports: adopted, not started again"
        );
        // One stopped, then started again with its old id and port.
        link.stop(&adopted[..1]).await.unwrap();
        assert_eq!(link.running().await.unwrap().len(), 1);
        link.restart_instance(&spec("1.0.0", 2), &adopted[0])
            .await
            .unwrap();
        wait_healthy(&link, &adopted[..1]).await;
        let ports: Vec<u16> = link
            .running()
            .await
            .unwrap()
            .iter()
            .map(|r| r.port)
            .collect();
        assert_eq!(ports, adopted.iter().map(|i| i.port).collect::<Vec<_>>());
        link.stop(&adopted).await.unwrap();
        assert_eq!(link.running().await.unwrap(), vec![]);
    });
}

/// A figure, not a check: a 48 MiB release sent and unpacked over the
/// channel (pipes here; SSH adds its encryption). `cargo test -p gantry
/// --test it upload_figure -- --ignored --nocapture`.
#[test]
#[ignore]
fn upload_figure() {
    use rand_like::bytes;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("host.log");
    let artifact = tmp.path().join("big.tar");
    let payload = bytes(48 << 20);
    crate::harness::make_tar(&artifact, &[("blob", 0o644, payload.as_slice())]);
    let release = release_of(&artifact, "1.0.0");
    runtime().block_on(async {
        let (_child, link) = connect(&data, &log, "controller-a", 1, LinkOptions::default()).await;
        let link = link.unwrap();
        let started = Instant::now();
        let sent = link.upload(&artifact, &release.digest).await.unwrap();
        let upload = started.elapsed();
        let started = Instant::now();
        link.prepare(&release, &artifact, &ArtifactLimits::standard())
            .await
            .unwrap();
        let unpack = started.elapsed();
        let started = Instant::now();
        let again = link.prepare(&release, &artifact, &ArtifactLimits::standard())
            .await
            .unwrap();
        println!(
            "upload {} MiB: {:?} ({:.0} MiB/s); verify+unpack: {:?}; second prepare (nothing sent: {}): {:?}",
            sent >> 20,
            upload,
            (sent as f64 / (1 << 20) as f64) / upload.as_secs_f64(),
            unpack,
            again.uploaded_bytes == 0,
            started.elapsed()
        );
    });
}

/// Incompressible bytes without a random-number crate: SHA-256 in counter mode.
mod rand_like {
    pub fn bytes(n: usize) -> Vec<u8> {
        use sha2::Digest as _;
        let mut out = Vec::with_capacity(n + 32);
        let mut i = 0u64;
        while out.len() < n {
            out.extend_from_slice(&sha2::Sha256::digest(i.to_le_bytes()));
            i += 1;
        }
        out.truncate(n);
        out
    }
}
