//! The controller's edges: slow and silent clients, the connection limit,
//! answers outside the API, security headers, the bearer scheme, and the
//! CLI's output to terminals and pipes.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Connects to `addr`, sends `opening`, then one header line a second until
/// the server closes the connection; answers how long that took, or `None`
/// when it was still open at `deadline`.
fn trickle(addr: &str, opening: &str, deadline: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.write_all(opening.as_bytes()).unwrap();
    let mut n = 0;
    while started.elapsed() < deadline {
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                n += 1;
                if s.write_all(format!("x-slow-{n}: 1\r\n").as_bytes())
                    .is_err()
                {
                    return Some(started.elapsed());
                }
            }
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[test]
fn the_api_cuts_off_slow_clients_and_bounds_its_connections() {
    let header_timeout = Duration::from_secs(2);
    let mut g = Gantry::start_with_server_args(&[
        "--header-timeout",
        "2s",
        "--idle-timeout",
        "3s",
        "--max-connections",
        "3",
    ]);
    let url = g.api_url();
    let addr = url.trim_start_matches("http://").to_owned();
    let bound = header_timeout + Duration::from_secs(2);
    let probes = [
        ("trickled headers", "GET /healthz HTTP/1.1\r\nhost: x\r\n"),
        ("a silent client", ""),
    ];
    let running: Vec<_> = probes
        .iter()
        .map(|(_, opening)| {
            let (addr, opening) = (addr.clone(), opening.to_string());
            std::thread::spawn(move || trickle(&addr, &opening, Duration::from_secs(20)))
        })
        .collect();
    for ((what, _), probe) in probes.iter().zip(running) {
        let took = probe
            .join()
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: still open after 20s"));
        assert!(took <= bound, "{what}: closed only after {took:?}");
    }

    // Three silent clients hold every slot; a fourth request waits for one.
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let started = Instant::now();
    let waiting = {
        let url = url.clone();
        std::thread::spawn(move || (http(&url, "GET", "/healthz", None, ""), started.elapsed()))
    };
    // A property over a window, not a wait: for a whole second the fourth
    // request must stay unanswered; checked at every poll of the window.
    holds_throughout(
        "the fourth request to wait for a free slot",
        Duration::from_millis(1000),
        || !waiting.is_finished(),
    );
    let ((code, body), took) = waiting.join().unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert!(
        took <= header_timeout + Duration::from_secs(3),
        "served only after {took:?}"
    );
    drop(held);

    // Shutting down still works, even with an event stream open: it is
    // given a few seconds to finish, then the controller exits.
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
        g.token()
    )
    .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let stopping = Instant::now();
    g.gantry(&["shutdown", "--workloads"]).ok();
    let mut server = g.server.take().unwrap();
    wait_until("the controller to exit", Duration::from_secs(15), || {
        server.try_wait().unwrap().is_some()
    });
    assert!(stopping.elapsed() < Duration::from_secs(10));
}

#[test]
fn the_public_status_page_names_no_one_and_quotes_no_comment() {
    let g = Gantry::start_with_tail(
        "60s",
        "\n[environments.production.approval]\nrequired = 1\nlead_time = \"0s\"\n",
    );
    let alice = g.enrol("alice", &["deployer"]);
    let bob = g.enrol("bobapprover", &["approver"]);
    g.register("1.0.0", "");
    // An emergency goes at once; bob rejects it while it bakes, with a comment.
    let id = deploy_id(
        &g.gantry_env(
            &[
                "deploy",
                "1.0.0",
                "--env",
                "production",
                "--change",
                "emergency",
                "--detach",
            ],
            &[("GANTRY_TOKEN", &alice)],
        )
        .ok(),
    );
    g.wait_phase(id, Phase::Baking);
    let comment = "the payments team says the vault key is wrong";
    g.gantry_env(
        &["reject", &id.to_string(), "--comment", comment],
        &[("GANTRY_TOKEN", &bob)],
    )
    .ok();
    let d = g.wait_finished(id);
    assert_eq!(d.phase, Phase::RolledBack, "{d:?}");
    // The API (behind a token) keeps the whole story.
    assert!(d.reason.as_deref().unwrap().contains(comment), "{d:?}");

    let url = g.api_url();
    let (_, json) = http(&url, "GET", "/status.json", None, "");
    let (_, html) = http(&url, "GET", "/status", None, "");
    // Fetched raw: the text itself must hold no secret.
    let page: gantry_api::StatusPage = serde_json::from_str(&json).unwrap();
    assert_eq!(page.incidents[0].deployment, id, "{json}");
    assert_eq!(
        page.incidents[0].reason.as_deref(),
        Some("stopped at review"),
        "{json}"
    );
    assert!(html.contains("stopped at review"), "{html}");
    for (what, text) in [("status.json", &json), ("status", &html)] {
        for secret in ["bobapprover", "alice", "payments", "vault key"] {
            assert!(
                !text.contains(secret),
                "{secret} on the public {what}: {text}"
            );
        }
    }
}

/// The status line and the headers of an answer, names lowercased.
fn head(base: &str, method: &str, path: &str, auth: Option<&str>) -> (u16, String, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_ascii_lowercase(), body.to_owned())
}

#[test]
fn pages_outside_the_api_answer_with_bodies_and_security_headers() {
    let g = Gantry::start();
    let url = g.api_url();
    // 404 and 405 outside /api/v1 say what happened.
    for (method, path, code, needle) in [
        ("GET", "/nothing-here", 404, "not_found"),
        ("POST", "/status", 405, "method_not_allowed"),
        ("DELETE", "/", 405, "method_not_allowed"),
    ] {
        let (got, head, body) = head(&url, method, path, None);
        assert_eq!(got, code, "{method} {path}: {head}");
        // The API's error shape, even outside the API.
        let v: gantry_api::ErrorBody = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {body:?}"));
        assert_eq!(v.error.code, needle, "{body}");
        assert!(!v.error.message.is_empty());
    }

    // The dashboard: a policy allowing exactly its own inline script and
    // style, never framed, not sniffed, no referrer.
    let (code, head_text, page) = head(&url, "GET", "/", None);
    assert_eq!(code, 200);
    let csp = head_text
        .lines()
        .find_map(|l| l.strip_prefix("content-security-policy: "))
        .expect("a content-security-policy")
        .to_owned();
    let inline = |tag: &str| {
        let body = page.split(&format!("<{tag}>")).nth(1).unwrap();
        let body = body.split(&format!("</{tag}>")).next().unwrap();
        use base64::Engine as _;
        use sha2::Digest as _;
        // Header values were lowercased above; compare the same way.
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body))
        )
        .to_ascii_lowercase()
    };
    assert!(
        csp.contains(&format!("script-src {}", inline("script"))),
        "{csp}"
    );
    assert!(
        csp.contains(&format!("style-src {}", inline("style"))),
        "{csp}"
    );
    for directive in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    for path in [
        "/",
        "/status",
        "/status.json",
        "/api/v1/whoami",
        "/nothing-here",
    ] {
        let (_, head_text, _) = head(&url, "GET", path, None);
        for header in [
            "x-frame-options: deny",
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
        ] {
            assert!(
                head_text.contains(header),
                "{header} on {path}: {head_text}"
            );
        }
    }
    let (_, status_head, _) = head(&url, "GET", "/status", None);
    assert!(status_head.contains("content-security-policy: default-src 'none'"));
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let g = Gantry::start();
    let url = g.api_url();
    let token = g.token();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let (code, _, body) = head(
            &url,
            "GET",
            "/api/v1/whoami",
            Some(&format!("{scheme} {token}")),
        );
        assert_eq!(code, 200, "{scheme}: {body}");
    }
    for wrong in [
        format!("Basic {token}"),
        format!("Bearer{token}"),
        "Bearer ".to_owned(),
    ] {
        let (code, _, _) = head(&url, "GET", "/api/v1/whoami", Some(&wrong));
        assert_eq!(code, 401, "{wrong:?}");
    }
}

/// Bytes a terminal would act on: C0 controls but newline and tab, DEL, and C1 controls.
fn terminal_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
        .collect()
}

#[test]
fn text_from_others_cannot_drive_the_terminal() {
    let g = Gantry::start_with_tail(
        "100ms",
        "\n[environments.production.approval]\nrequired = 1\nlead_time = \"0s\"\n",
    );
    let alice = g.enrol("alice", &["deployer"]);
    let bob = g.enrol("bob", &["approver"]);
    g.register("1.0.0", "");
    // Retitle the window, clear the screen, go back over the line.
    let nasty = "\u{1b}]0;owned\u{7}\u{1b}[2J\rall fine \u{9b}31m";
    let id = deploy_id(
        &g.gantry_env(
            &[
                "deploy",
                "1.0.0",
                "--env",
                "production",
                "--detach",
                "--reason",
                nasty,
            ],
            &[("GANTRY_TOKEN", &alice)],
        )
        .ok(),
    );
    g.wait_phase(id, Phase::AwaitingApproval);
    g.gantry_env(
        &["reject", &id.to_string(), "--comment", nasty],
        &[("GANTRY_TOKEN", &bob)],
    )
    .ok();
    g.wait_finished(id);
    for args in [
        vec!["log".to_owned(), id.to_string()],
        vec![
            "history".to_owned(),
            "--env".to_owned(),
            "production".to_owned(),
        ],
        vec!["audit".to_owned(), "list".to_owned()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = g.gantry(&args).ok();
        assert!(
            terminal_controls(&run.stdout).is_empty(),
            "gantry {args:?} printed controls: {:?}",
            run.stdout
        );
        if args[0] != "audit" {
            assert!(
                run.stdout
                    .contains("\\x1b]0;owned\\x07\\x1b[2J\\x0dall fine \\x9b31m"),
                "gantry {args:?} shows the text escaped: {}",
                run.stdout
            );
        }
    }
}

#[test]
fn a_closed_pipe_ends_the_cli_quietly() {
    use std::process::Command;
    let g = Gantry::start();
    g.register("1.0.0", "");
    let id = deploy_id(
        &g.gantry(&["deploy", "1.0.0", "--env", "development", "--detach"])
            .ok(),
    );
    g.wait_finished(id);
    for args in [
        vec!["log".to_owned(), id.to_string()],
        vec!["release".into(), "list".into()],
    ] {
        let mut cmd = Command::new(GANTRY);
        cmd.arg("--data-dir")
            .arg(g.data())
            .args(&args)
            .env_remove("GANTRY_TOKEN");
        let (status, stderr) = run_with_closed_stdout(cmd, Duration::from_secs(30));
        assert!(!stderr.contains("panicked"), "gantry {args:?}: {stderr}");
        assert!(stderr.is_empty(), "gantry {args:?} ends quietly: {stderr}");
        assert_eq!(status.code(), Some(141), "gantry {args:?}: {status}");
    }
}
