//! The dashboard in a real headless Chromium (Debian's), driven over
//! WebDriver (chromedriver): sign in, approve a rollout, watch it live.

use crate::harness::*;
use fantoccini::{Client, ClientBuilder, Locator};
use std::time::Duration;

const TAIL: &str = r#"strategy = "canary"
canary = { steps = [{ weight = 20, pause = "until-promoted" }, { weight = 100 }], interval = "250ms", max_wait = "60s" }

[environments.production.approval]
required = 1
lead_time = "0s"
"#;

struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromedriver() -> (Driver, u16) {
    let port = free_port();
    let child = std::process::Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromedriver is installed (scripts/test installs chromium-driver)");
    wait_until("chromedriver to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (Driver(child), port)
}

async fn browser(port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1400"]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session")
}

/// Waits until `script` (a JS expression) is true in the page.
async fn until(c: &Client, what: &str, script: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = c
            .execute(&format!("return !!({script});"), vec![])
            .await
            .unwrap_or_default();
        if v == serde_json::Value::Bool(true) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let html = c.source().await.unwrap_or_default();
            panic!("timed out waiting for {what} ({script}); page:\n{html}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn sign_in_approve_and_watch_a_rollout_live() {
    let g = Gantry::start_with_tail("300ms", TAIL);
    g.gantry(&["user", "add", "alice", "--role", "deployer"])
        .ok();
    g.gantry(&["user", "add", "bob", "--role", "approver"]).ok();
    let alice = g
        .gantry(&["token", "create", "--user", "alice"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    // Bob approves with a token he minted himself (with the admin's, which that revokes).
    let for_bob = g
        .gantry(&["token", "create", "--user", "bob"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let bob = g
        .gantry_env(
            &["token", "create", "--user", "bob"],
            &[("GANTRY_TOKEN", &for_bob)],
        )
        .ok()
        .stdout
        .trim()
        .to_owned();
    g.register("1.0.0", "");
    g.register("1.1.0", "");
    g.gantry(&[
        "deploy",
        "1.0.0",
        "--env",
        "production",
        "--change",
        "emergency",
    ])
    .ok();
    let load = Load::start(g.port("production"));
    let id = deploy_id(
        &g.gantry_env(
            &["deploy", "1.1.0", "--env", "production", "--detach"],
            &[("GANTRY_TOKEN", &alice)],
        )
        .ok(),
    );
    g.wait_phase(id, Phase::AwaitingApproval);

    let (_driver, port) = chromedriver();
    let url = g.api_url();
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-live-rollout.png");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let c = browser(port).await;
        c.goto(&format!("{url}/")).await.unwrap();
        // Nothing but the sign-in form without a token.
        until(&c, "the sign-in form", "document.querySelector('#signin-token')").await;
        c.find(Locator::Css("#signin-token")).await.unwrap().send_keys("not-a-token").await.unwrap();
        c.find(Locator::Css("#signin-button")).await.unwrap().click().await.unwrap();
        until(&c, "the refusal", "document.querySelector('#signin-error') && document.querySelector('#signin-error').textContent.includes('not valid')").await;
        let field = c.find(Locator::Css("#signin-token")).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(&bob).await.unwrap();
        c.find(Locator::Css("#signin-button")).await.unwrap().click().await.unwrap();
        until(&c, "bob signed in", "document.querySelector('#whoami').textContent.includes('bob')").await;
        until(&c, "the environments", "document.querySelector('tr[data-env=production]')").await;
        // DORA per environment: production has one deployment gone live so far.
        until(&c, "the DORA panel", "/no deployments|\\d\\.\\d\\d/.test(document.querySelector('#dora tr[data-env=production]').textContent)").await;

        // Approve from the pending list.
        c.goto(&format!("{url}/#/approvals")).await.unwrap();
        let button = format!("button.approve[data-id='{id}']");
        until(&c, "the approve button", &format!("document.querySelector(\"{button}\")")).await;
        c.find(Locator::Css(&button)).await.unwrap().click().await.unwrap();
        until(&c, "the approval", "document.querySelector('#approval-result').textContent.includes('approved')").await;

        // Watch it live: the canary step, the charts filling, the rules judging.
        c.goto(&format!("{url}/#/deployments/{id}")).await.unwrap();
        until(&c, "the canary phase", "document.querySelector('#deployment-phase').textContent === 'canary'").await;
        until(&c, "20% on the canary", "document.querySelector('#weight').textContent.startsWith('20%')").await;
        until(&c, "the current step", "document.querySelector('#steps li.current').textContent === '20%'").await;
        until(
            &c,
            "every chart with points",
            "['#chart-errors', '#chart-client-errors', '#chart-latency'].every(id => ['canary', 'stable'].every(cls => { const p = document.querySelector(id + ' polyline.' + cls); return p && p.getAttribute('points').split(' ').length >= 4; }))",
        )
        .await;
        until(&c, "judged rules", "document.querySelectorAll('#rules tr[data-rule]').length >= 3").await;
        // The promotion evidence: the bound of canary minus stable, narrowing as requests come in.
        until(&c, "the promotion evidence", "document.querySelector('#promotion').textContent.includes('could rule out an error rate above')").await;
        until(
            &c,
            "the evidence chart narrowing",
            "(() => { const p = document.querySelector('#chart-evidence polyline.canary'); if (!p) return false; const ys = p.getAttribute('points').split(' ').map(xy => +xy.split(',')[1]); return ys.length >= 4 && ys[ys.length - 1] > ys[0]; })()",
        )
        .await;
        until(&c, "the tolerance line", "document.querySelector('#chart-evidence polyline.tolerance')").await;
        until(&c, "the 4xx rule listed", "document.querySelector('#rules tr[data-rule=client_errors_vs_stable]')").await;
        // Under the Content-Security-Policy the page's own style applies and
        // its bars get their widths (set through the DOM, not style attributes).
        until(
            &c,
            "styled bars with widths",
            "[...document.querySelectorAll('#rules .bar')].every(b => getComputedStyle(b).minWidth === '128px' && b.firstElementChild.style.width.endsWith('%'))",
        )
        .await;
        until(&c, "healthy instances", "[...document.querySelectorAll('#instances .badge')].some(b => b.textContent === 'healthy')").await;
        // Infrastructure: each instance's CPU and memory as the resource rules read them.
        until(&c, "resource figures", "[...document.querySelectorAll('#resources tr[data-instance]')].some(r => /MiB/.test(r.textContent))").await;
        until(&c, "the queries panel says none are configured", "/No metric query rules/.test(document.querySelector('#queries').textContent)").await;
        until(&c, "the approval in the log", "document.querySelector('#log').textContent.includes('approved by bob')").await;
        let png = c.screenshot().await.unwrap();
        std::fs::write(&shot, &png).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 20_000, "a real picture, {} bytes", png.len());

        // Promoted from the CLI, the page follows to the end.
        g.gantry(&["promote", &id.to_string()]).ok();
        until(&c, "success", "document.querySelector('#deployment-phase').textContent === 'succeeded'").await;
        c.close().await.unwrap();
    });
    let (_, failed) = load.finish();
    assert_eq!(failed, 0);
    assert!(shot.exists());
}
