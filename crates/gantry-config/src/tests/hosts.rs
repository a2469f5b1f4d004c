//! `[hosts]`, `[ssh]` and environments' `hosts`: decoded, resolved, and every
//! bad value refused at its field.

use super::*;

/// The starter, plus `extra` (hosts and ssh) and `production` listing `list`.
fn with_hosts(extra: &str, list: &str) -> String {
    let src = STARTER.replacen(
        "[environments.production]\n",
        &format!("[environments.production]\nhosts = {list}\n"),
        1,
    );
    format!("{src}\n{extra}")
}

/// A file that exists, standing in for a key file (only its presence is checked).
fn key_file() -> ((), String) {
    (
        (),
        concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml").to_owned(),
    )
}

fn fleet(key: &str) -> String {
    format!(
        r#"
[hosts.web-eu-1]
address = "10.0.0.10"
user = "deploy"
site = "eu-west"
labels = {{ tier = "web", zone = "a" }}
key = {{ file = "{key}" }}

[hosts.web-eu-2]
address = "web-eu-2.example.com"
port = 2222
site = "eu-west"
labels = {{ tier = "web", zone = "b" }}
key = "agent"
data_dir = "/srv/gantry"

[hosts.db-1]
address = "10.0.0.20"
labels = {{ tier = "db" }}
key = "agent"

[ssh]
connect_timeout = "3s"
max_connecting = 4
"#
    )
}

#[test]
fn hosts_ssh_and_environment_hosts_are_decoded_and_resolved() {
    let (_dir, key) = key_file();
    let src = with_hosts(
        &fleet(&key),
        r#"["db-1", { labels = { tier = "web" } }, "web-eu-2"]"#,
    );
    let loaded = parse("gantry.toml", &src).expect("valid");
    let c = &loaded.config;
    assert_eq!(
        c.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
        ["db-1", "web-eu-1", "web-eu-2"],
        "sorted by name"
    );
    let eu1 = c.host("web-eu-1").unwrap();
    assert_eq!(eu1.address, "10.0.0.10");
    assert_eq!(eu1.user.as_deref(), Some("deploy"));
    assert_eq!(eu1.port, 22);
    assert_eq!(eu1.site.as_deref(), Some("eu-west"));
    assert_eq!(eu1.key, SshKey::File(key.clone().into()));
    assert_eq!(eu1.data_dir, DEFAULT_HOST_DATA_DIR);
    let eu2 = c.host("web-eu-2").unwrap();
    assert_eq!(
        (eu2.port, &eu2.key, eu2.data_dir.as_str()),
        (2222, &SshKey::Agent, "/srv/gantry")
    );
    assert_eq!(eu2.user, None);
    // Listed order, a selector's hosts by name, no repeats.
    assert_eq!(
        c.environment("production").unwrap().hosts,
        ["db-1", "web-eu-1", "web-eu-2"]
    );
    // Without `hosts` an environment stays local, as before.
    assert!(c.environment("staging").unwrap().hosts.is_empty());
    assert_eq!(
        c.ssh,
        SshSettings {
            connect_timeout_ms: 3000,
            max_connecting: 4,
            ..SshSettings::default()
        }
    );
    // No fleet at all: nothing changes.
    let plain = parse("gantry.toml", STARTER).unwrap().config;
    assert!(plain.hosts.is_empty());
    assert!(plain.environments.iter().all(|e| e.hosts.is_empty()));
    assert_eq!(plain.ssh, SshSettings::default());
}

/// Every way a fleet can be wrong, each reported at its field, together.
#[test]
fn bad_hosts_are_refused_at_their_field() {
    let (_dir, key) = key_file();
    let extra = format!(
        r#"
[hosts.web-1]
address = "10.0.0.10"
key = {{ file = "{key}" }}

[hosts.web-2]
address = "10.0.0.10"
key = "agent"

[hosts."web;3"]
address = "-oProxyCommand=touch /tmp/x"
user = "$(id)"
site = "eu west"
labels = {{ tier = "web'" }}
key = {{ file = "/nonexistent/gantry-test-key" }}
data_dir = "../elsewhere"

[hosts.web-4]
address = "10.0.0.11"
port = 0
key = {{ file = "relative/key" }}

[hosts.web-5]
address = "10.0.0.12"
key = "pageant"

[ssh]
known_hosts = "pins\nmore"
connect_timeout = "500ms"
max_connecting = 0
max_sessions_per_host = 65
"#
    );
    let src = with_hosts(&extra, r#"["web-1", { labels = {} }, 7]"#);
    let errors = errors_of(&src);
    insta::assert_snapshot!(errors.join("\n"));
}

/// Names and selectors that find no host, against hosts that loaded.
#[test]
fn environment_hosts_that_find_nothing_are_refused() {
    let (_dir, key) = key_file();
    let src = with_hosts(
        &fleet(&key),
        r#"["web-eu-1", "web-eu-l", { labels = { tier = "cache" } }, { labels = { tier = "web", zone = "c" } }, { lables = { tier = "web" } }]"#,
    );
    let errors = errors_of(&src);
    insta::assert_snapshot!(errors.join("\n"));
}

/// Resolution is checked against the hosts that loaded: a bad host gives one
/// error, not one more from every environment that lists it.
#[test]
fn an_environment_listing_a_good_host_or_selector_adds_no_error() {
    let (_dir, key) = key_file();
    let bad = fleet(&key).replace("address = \"10.0.0.20\"", "address = \"10.0.0.20 \"");
    let src = with_hosts(&bad, r#"["db-1", { labels = { tier = "web" } }]"#);
    let errors = errors_of(&src);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("hosts.db-1.address"), "{errors:#?}");

    // Unknown names are named with a suggestion and the known hosts.
    let src = with_hosts(&fleet(&key), r#"["web-eu-3"]"#);
    let errors = errors_of(&src);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("environments.production.hosts[0]")
            && errors[0].contains("no host named \"web-eu-3\"")
            && errors[0].contains("did you mean")
            && errors[0].contains("known: db-1, web-eu-1, web-eu-2"),
        "{errors:#?}"
    );

    // The same address in two spellings is one host.
    let dup = fleet(&key).replace("address = \"10.0.0.20\"", "address = \"::ffff:10.0.0.10\"");
    let errors = errors_of(&with_hosts(&dup, r#"["db-1"]"#));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("is already host"), "{errors:#?}");

    // An empty list is refused (leave `hosts` out to stay local).
    let errors = errors_of(&with_hosts(&fleet(&key), "[]"));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("lists no host"), "{errors:#?}");
}

#[test]
fn a_fleet_plan_is_decoded_with_waves_resolved_to_hosts() {
    let (_dir, key) = key_file();
    let src = with_hosts(
        &fleet(&key),
        "[\"web-eu-1\", \"web-eu-2\"]\nfleet = { batches = [1, \"50%\", \"100%\"], max_failed = \"50%\", waves = [\"eu-west\"] }",
    );
    let c = parse("gantry.toml", &src).expect("valid").config;
    let prod = c.environment("production").unwrap();
    assert_eq!(
        prod.fleet,
        Some(FleetPlan {
            batches: vec![
                HostShare::Count(1),
                HostShare::Percent(50),
                HostShare::Percent(100)
            ],
            max_unavailable: None,
            max_failed: HostShare::Percent(50),
            waves: vec![Wave {
                site: "eu-west".into(),
                hosts: vec!["web-eu-1".into(), "web-eu-2".into()],
            }],
        })
    );
    assert_eq!(HostShare::Percent(10).of(25), 3, "rounded up");
    assert_eq!(HostShare::Count(5).of(3), 3);
    // Without `fleet`, nothing is assumed here.
    let plain = with_hosts(&fleet(&key), "[\"db-1\"]");
    assert_eq!(
        parse("gantry.toml", &plain)
            .unwrap()
            .config
            .environment("production")
            .unwrap()
            .fleet,
        None
    );
}

#[test]
fn bad_fleet_plans_are_refused_at_their_field() {
    let (_dir, key) = key_file();
    let mut all = Vec::new();
    for plan in [
        // a site with no host of this environment; a host in no wave
        r#"{ waves = ["us-east"] }"#,
        r#"{ waves = ["eu-west", "eu-west"] }"#,
        r#"{ waves = ["eu-west"] }"#,
        // max_failed at the fleet size
        r#"{ max_failed = 3 }"#,
        r#"{ max_failed = "100%" }"#,
        // batches not ending at 100%, not rising, a count of the whole fleet, bad shares
        r#"{ batches = [1, "50%"] }"#,
        r#"{ batches = ["50%", "10%", "100%"] }"#,
        r#"{ batches = [3, "100%"] }"#,
        r#"{ batches = ["0%", "150%", "ten", "100%"] }"#,
        // max_unavailable beside batches, or of no host
        r#"{ batches = ["100%"], max_unavailable = 1 }"#,
        r#"{ max_unavailable = 0 }"#,
    ] {
        let src = with_hosts(
            &fleet(&key),
            &format!("[\"db-1\", \"web-eu-1\", \"web-eu-2\"]\nfleet = {plan}"),
        );
        all.push(format!("{plan}\n{}", errors_of(&src).join("\n")));
    }
    // fleet without hosts
    let src = STARTER.replacen(
        "[environments.production]\n",
        "[environments.production]\nfleet = { max_failed = 1 }\n",
        1,
    );
    all.push(format!("no hosts\n{}", errors_of(&src).join("\n")));
    insta::assert_snapshot!(all.join("\n\n"));
}
