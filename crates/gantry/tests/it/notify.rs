//! Notifications to real receivers on loopback, the public status page,
//! the metrics and the live event stream. A little over 600 lines: the
//! receivers (webhook, Slack, PagerDuty, SMTP) share one fixture, kept here.

use crate::harness::*;
use gantry_api::{Delivery, DeliveryQuery, LiveEvent};
use gantry_core::notify::ServiceStatus;
use hmac::{Hmac, Mac};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

/// A real SMTP server (Debian's python3-aiosmtpd) writing to a maildir.
struct SmtpSink {
    child: std::process::Child,
    port: u16,
    maildir: std::path::PathBuf,
}

impl SmtpSink {
    fn start(dir: &std::path::Path) -> SmtpSink {
        let port = free_port();
        let maildir = dir.join("maildir");
        let child = std::process::Command::new("/usr/bin/python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3-aiosmtpd is installed (scripts/test installs it)");
        wait_until("the SMTP sink to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        SmtpSink {
            child,
            port,
            maildir,
        }
    }

    fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn verify_signature(secret: &str, r: &Received) -> bool {
    let timestamp = &r.headers["x-gantry-timestamp"];
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    r.headers["x-gantry-signature"] == expected
}

fn deliveries(g: &Gantry) -> Vec<Delivery> {
    g.call(g.client().notifications(&DeliveryQuery::default()))
}

#[test]
fn every_channel_hears_the_standards_events_and_a_dead_one_holds_nothing_up() {
    // The webhook refuses its first delivery: it must be retried.
    let webhook = Receiver::start(&[500]);
    let slack = Receiver::start(&[]);
    let pagerduty = Receiver::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpSink::start(dir.path());
    let dead = free_port();
    let extra = format!(
        r#"
[[notify]]
name = "hooks"
kind = "webhook"
url = "{}"
secret = {{ env = "TEST_HOOK_SECRET" }}

[[notify]]
name = "chat"
kind = "slack"
url = "{}"

[[notify]]
name = "oncall"
kind = "pagerduty"
routing_key = {{ env = "TEST_PD_KEY" }}
url = "{}"
environments = ["production"]

[[notify]]
name = "stakeholders"
kind = "email"
smtp = {{ host = "127.0.0.1", port = {}, tls = "none" }}
from = "gantry@example.com"
to = ["ops@example.com"]

[[notify]]
name = "nowhere"
kind = "webhook"
url = "http://127.0.0.1:{dead}/hook"
secret = {{ env = "TEST_HOOK_SECRET" }}
"#,
        webhook.url("/hook"),
        slack.url("/services/T000/B000/XXXX"),
        pagerduty.url("/v2/enqueue"),
        smtp.port,
    );
    let g = Gantry::start_full(
        "100ms",
        &extra,
        &[
            ("TEST_HOOK_SECRET", "hook-secret"),
            ("TEST_PD_KEY", "pd-routing-key"),
        ],
    );
    g.register("1.0.0", "");
    g.register("1.1.0", "\"unhealthy\": true");
    let started = std::time::Instant::now();
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    g.gantry(&["deploy", "1.1.0", "--env", "production"])
        .fails_with(3, "rolled_back");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a dead channel must not hold deployments up"
    );

    // Webhook: every event, signed, the refused one retried.
    // Scheduled, starting, complete; scheduled, starting, rollback, failed; and the retry.
    wait_until(
        "the webhook to hear 8 requests",
        Duration::from_secs(20),
        || webhook.received().len() >= 8,
    );
    let hooks = webhook.received();
    for r in &hooks {
        assert!(
            verify_signature("hook-secret", r),
            "bad signature on {:?}",
            r.headers
        );
        assert!(!verify_signature("other-secret", r));
    }
    // What the receivers got is read as JSON: each is a format of its own
    // (the webhook's, Slack's, PagerDuty's), not the controller's API.
    let events: Vec<String> = hooks
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_owned())
        .collect();
    for e in [
        "scheduled",
        "starting",
        "complete",
        "rollback_initiated",
        "failed",
    ] {
        assert!(events.contains(&e.to_owned()), "{e} in {events:?}");
    }
    let first = &hooks[0];
    assert!(
        hooks[1..]
            .iter()
            .any(|r| r.headers["x-gantry-delivery"] == first.headers["x-gantry-delivery"]),
        "the refused delivery came again"
    );

    // Slack: readable text and blocks, as its incoming webhooks take them.
    wait_until(
        "slack to hear the rollback",
        Duration::from_secs(20),
        || {
            slack.received().iter().any(|r| {
                r.json()["text"]
                    .as_str()
                    .unwrap_or("")
                    .contains("rolled back")
            })
        },
    );
    for r in slack.received() {
        assert_eq!(r.path, "/services/T000/B000/XXXX");
        let p = r.json();
        assert!(p["text"].is_string() && p["blocks"].is_array(), "{p}");
    }

    // PagerDuty: triggered by the rollback, resolved when it completed, one key.
    wait_until(
        "pagerduty to trigger and resolve",
        Duration::from_secs(20),
        || pagerduty.received().len() >= 2,
    );
    let pd: Vec<Value> = pagerduty.received().iter().map(|r| r.json()).collect();
    assert_eq!(pd[0]["event_action"], "trigger");
    assert_eq!(pd[0]["routing_key"], "pd-routing-key");
    assert_eq!(pd[0]["payload"]["severity"], "error");
    for key in ["summary", "source", "severity"] {
        assert!(
            pd[0]["payload"][key].is_string(),
            "payload.{key} in {}",
            pd[0]
        );
    }
    assert_eq!(pd[1]["event_action"], "resolve");
    assert_eq!(pd[1]["dedup_key"], pd[0]["dedup_key"]);

    // Email, read back from the SMTP server's mailbox.
    wait_until("the rollback email", Duration::from_secs(20), || {
        smtp.messages()
            .iter()
            .any(|m| m.contains("rollback initiated"))
    });
    let mails = smtp.messages();
    let complete = mails
        .iter()
        .find(|m| m.contains("is live in production"))
        .expect("a completion email");
    assert!(
        complete.contains("Subject: [gantry] sample 1.0.0 is live in production"),
        "{complete}"
    );
    assert!(complete.contains("To: ops@example.com"), "{complete}");

    // Every delivery is recorded; the dead channel keeps retrying, recorded with its error.
    // The outcome is recorded just after the receiver answers.
    wait_until(
        "the retried delivery and the dead channel's error to be recorded",
        Duration::from_secs(20),
        || {
            let recorded = deliveries(&g);
            recorded
                .iter()
                .any(|d| d.channel == "hooks" && d.attempts == 2 && d.status == "delivered")
                && recorded
                    .iter()
                    .any(|d| d.channel == "nowhere" && d.last_error.is_some())
        },
    );
    let recorded = deliveries(&g);
    let delivered_hook = recorded
        .iter()
        .find(|d| d.channel == "hooks" && d.attempts == 2)
        .expect("the refused webhook delivery is recorded with 2 attempts");
    assert_eq!(delivered_hook.status, "delivered");
    let dead_one = recorded.iter().find(|d| d.channel == "nowhere").unwrap();
    assert_eq!(dead_one.status, "pending");
    assert!(
        dead_one
            .last_error
            .as_deref()
            .unwrap()
            .contains("POST failed"),
        "{dead_one:?}"
    );
    let listed = g.gantry(&["notifications"]).ok().stdout;
    assert!(
        listed.contains("nowhere") && listed.contains("delivered"),
        "{listed}"
    );
    // Secrets are resolved at send time, never stored.
    let db = std::fs::read(g.data().join("gantry.db")).unwrap();
    assert!(!db.windows(11).any(|w| w == b"hook-secret"));
}

#[test]
fn the_status_page_is_public_and_follows_the_standards_states() {
    let g = Gantry::start_with("3s", "");
    let url = g.api_url();
    // The client asks for the page without a token.
    let page = g.call(g.client().status_page());
    assert_eq!(page.status, ServiceStatus::Operational);
    assert_eq!(page.label, "Operational");
    assert_eq!(page.environments.len(), 4);

    g.register("1.0.0", "");
    g.register("1.1.0", "\"unhealthy\": true");
    let id = deploy_id(
        &g.gantry(&["deploy", "1.0.0", "--env", "staging", "--detach"])
            .ok(),
    );
    g.wait_phase(id, Phase::Baking);
    let page = g.call(g.client().status_page());
    let staging = page
        .environments
        .into_iter()
        .find(|e| e.name == "staging")
        .unwrap();
    assert_eq!(staging.label, "Scheduled maintenance", "{staging:?}");
    assert_eq!(staging.deployment.as_ref().map(|d| d.id), Some(id));
    g.wait_finished(id);
    g.gantry(&["deploy", "1.1.0", "--env", "staging"])
        .fails_with(3, "rolled_back");

    let (code, html) = http(&url, "GET", "/status", None, "");
    assert_eq!(code, 200);
    assert!(
        html.contains("<span class=\"badge operational\">Operational</span>"),
        "{html}"
    );
    assert!(
        html.contains("1.1.0 rolled back: the new release did not become healthy in time"),
        "{html}"
    );
    let page = g.call(g.client().status_page());
    assert_eq!(page.incidents[0].version, "1.1.0");
    assert_eq!(page.environments[2].version.as_deref(), Some("1.0.0"));
    // Nothing else is public.
    assert_eq!(http(&url, "GET", "/api/v1/deployments", None, "").0, 401);
    assert_eq!(http(&url, "GET", "/metrics", None, "").0, 401);
}

#[test]
fn metrics_and_the_live_event_stream() {
    let g = Gantry::start();
    let url = g.api_url();
    g.register("1.0.0", "");
    g.register("1.1.0", "\"unhealthy\": true");

    // Subscribe before anything happens, over a real socket.
    let addr = url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
        g.token()
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    g.gantry(&["deploy", "1.0.0", "--env", "development"]).ok();
    g.gantry(&["deploy", "1.1.0", "--env", "development"])
        .fails_with(3, "rolled_back");

    let mut phases = Vec::new();
    let mut line = String::new();
    while !phases.contains(&Phase::RolledBack) {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended");
        if let Some(data) = line.trim_end().strip_prefix("data:") {
            if let LiveEvent::Step { phase, .. } = serde_json::from_str(data.trim()).unwrap() {
                phases.push(phase);
            }
        }
    }
    assert!(phases.contains(&Phase::Succeeded), "{phases:?}");
    assert!(phases.contains(&Phase::RollingBack), "{phases:?}");

    let (code, text) = http(&url, "GET", "/metrics", Some(&g.token()), "");
    assert_eq!(code, 200);
    for needle in [
        "gantry_deployments_total{env=\"development\",kind=\"deploy\",outcome=\"succeeded\"} 1",
        "gantry_deployments_total{env=\"development\",kind=\"deploy\",outcome=\"rolled_back\"} 1",
        "gantry_rollbacks_total{env=\"development\",reason=\"start\"} 1",
        "gantry_deployments_in_progress{env=\"production\"} 0",
        "gantry_deployment_duration_seconds_count{env=\"development\",kind=\"deploy\",outcome=\"succeeded\"} 1",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
}

/// An HTTP server that answers every request 500 with the whole request
/// quoted back in its body, as some proxies and misconfigured receivers do.
fn echo_500() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                request.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
            request.push_str(&String::from_utf8_lossy(&body));
            // The request line, then the body: a sender keeps only the start of an answer.
            let line = request.lines().next().unwrap_or("").to_owned();
            let echo = format!("{line}\n{}", String::from_utf8_lossy(&body));
            let _ = write!(
                stream,
                "HTTP/1.1 500 Echo\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{echo}",
                echo.len()
            );
        }
    });
    port
}

/// An SMTP server that offers AUTH and refuses it, quoting the credentials
/// it was sent in its refusal.
fn smtp_refusing() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let _ = write!(stream, "220 refuser ESMTP\r\n");
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let said = line.trim_end();
                    let verb = said.split(' ').next().unwrap_or("").to_ascii_uppercase();
                    let answer = match verb.as_str() {
                        "EHLO" => "250-refuser\r\n250 AUTH PLAIN LOGIN\r\n".to_owned(),
                        "QUIT" => {
                            let _ = write!(stream, "221 bye\r\n");
                            return;
                        }
                        _ => format!("535 5.7.8 refused: {said}\r\n"),
                    };
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn secrets_stay_out_of_delivery_errors_the_log_and_the_database() {
    use base64::Engine as _;
    let echo = echo_500();
    let closed = free_port();
    let smtp = smtp_refusing();
    let slack_closed = format!("http://127.0.0.1:{closed}/services/T0/B0/slackClosedSecret");
    let slack_echo = format!("http://127.0.0.1:{echo}/services/T0/B0/slackEchoSecret");
    let extra = format!(
        r#"
[[notify]]
name = "chat-closed"
kind = "slack"
url = {{ env = "TEST_SLACK_CLOSED" }}

[[notify]]
name = "chat-echo"
kind = "slack"
url = {{ env = "TEST_SLACK_ECHO" }}

[[notify]]
name = "oncall"
kind = "pagerduty"
routing_key = {{ env = "TEST_PD_KEY" }}
url = "http://127.0.0.1:{echo}/v2/enqueue"

[[notify]]
name = "hooks"
kind = "webhook"
url = "http://127.0.0.1:{echo}/hook?token=hookQuerySecret"
secret = {{ env = "TEST_HOOK_SECRET" }}

[[notify]]
name = "hooks-closed"
kind = "webhook"
url = "http://127.0.0.1:{closed}/hook?token=hookQuerySecret"
secret = {{ env = "TEST_HOOK_SECRET" }}

[[notify]]
name = "mail"
kind = "email"
smtp = {{ host = "127.0.0.1", port = {smtp}, tls = "none", username = "gantry", password = {{ env = "TEST_SMTP_PASSWORD" }} }}
from = "gantry@example.com"
to = ["ops@example.com"]
"#
    );
    let g = Gantry::start_full(
        "100ms",
        &extra,
        &[
            ("TEST_SLACK_CLOSED", &slack_closed),
            ("TEST_SLACK_ECHO", &slack_echo),
            ("TEST_PD_KEY", "pdRoutingKeySecret"),
            ("TEST_HOOK_SECRET", "hookSigningSecret"),
            ("TEST_SMTP_PASSWORD", "smtpPasswordSecret"),
        ],
    );
    g.register("1.0.0", "");
    g.register("1.1.0", "\"unhealthy\": true");
    g.gantry(&["deploy", "1.0.0", "--env", "production"]).ok();
    // A rollback, so that PagerDuty has something to hear.
    g.gantry(&["deploy", "1.1.0", "--env", "production"])
        .fails_with(3, "rolled_back");

    let channels = [
        "chat-closed",
        "chat-echo",
        "oncall",
        "hooks",
        "hooks-closed",
        "mail",
    ];
    wait_until(
        "every channel to record a failed attempt",
        Duration::from_secs(30),
        || {
            let recorded = deliveries(&g);
            channels.iter().all(|c| {
                recorded
                    .iter()
                    .any(|d| d.channel == *c && d.last_error.is_some())
            })
        },
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let secrets = [
        "slackClosedSecret".to_owned(),
        "slackEchoSecret".to_owned(),
        "pdRoutingKeySecret".to_owned(),
        "hookQuerySecret".to_owned(),
        "hookSigningSecret".to_owned(),
        "smtpPasswordSecret".to_owned(),
        b64.encode("smtpPasswordSecret"),
        b64.encode("\0gantry\0smtpPasswordSecret"),
    ];
    let recorded = deliveries(&g);
    // The failures are real and say what went wrong, without the secrets.
    let some_error = |c: &str, needle: &str| {
        recorded
            .iter()
            .any(|d| d.channel == c && d.last_error.as_deref().is_some_and(|e| e.contains(needle)))
    };
    for (channel, needle) in [
        ("chat-closed", "POST failed"),
        ("hooks-closed", "POST failed"),
        // The echoed path of the Slack URL, the routing key, the webhook's
        // query token and the SMTP credentials were cut out.
        ("chat-echo", "POST [redacted]"),
        ("oncall", "\"routing_key\":\"[redacted]\""),
        ("hooks", "/hook?[redacted]"),
        ("mail", "535"),
        ("mail", "[redacted]"),
    ] {
        assert!(
            some_error(channel, needle),
            "{channel}: {needle:?} in {recorded:#?}"
        );
    }

    // The answer as sent, every field of it.
    let api = g.api_json("/notifications").to_string();
    let cli = g.gantry(&["notifications"]).ok().stdout;
    // What SQLite holds: the database and its write-ahead log.
    let mut db = Vec::new();
    for f in ["gantry.db", "gantry.db-wal"] {
        db.extend(std::fs::read(g.data().join(f)).unwrap_or_default());
    }
    let db = String::from_utf8_lossy(&db).into_owned();
    let log = g.controller_log();
    assert!(
        log.contains("notification attempt failed"),
        "failed attempts are logged:\n{log}"
    );
    for secret in &secrets {
        for (what, text) in [
            ("the API", &api),
            ("the CLI", &cli),
            ("the database", &db),
            ("the controller log", &log),
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "{secret} in {what}:\n{text}"
            );
        }
    }
}
