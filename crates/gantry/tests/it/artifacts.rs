//! Artifacts as an attacker would send them: bombs, floods of entries,
//! huge uploads, release directories edited by hand.

use crate::harness::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The sample release (see `make_artifact`) with extra entries appended.
fn artifact_with(
    path: &Path,
    version: &str,
    extra: impl FnOnce(&mut tar::Builder<Vec<u8>>),
) -> Vec<u8> {
    let plain = path.with_extension("plain");
    make_artifact(&plain, version, "");
    let mut tar = tar::Builder::new(Vec::new());
    let mut base = tar::Archive::new(std::fs::File::open(&plain).unwrap());
    for entry in base.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        let path = entry.path().unwrap().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        tar.append_data(&mut header, path, data.as_slice()).unwrap();
    }
    extra(&mut tar);
    tar.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn add_file(tar: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_cksum();
    tar.append_data(&mut h, name, data).unwrap();
}

fn write(g: &Gantry, name: &str, bytes: &[u8]) -> PathBuf {
    let p = g.dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Restarts the controller on a changed config.
fn restart_with(g: &mut Gantry, config: String) {
    g.config = config;
    std::fs::write(g.config_path(), &g.config).unwrap();
    g.gantry(&["shutdown"]).ok();
    let mut old = g.server.take().unwrap();
    old.wait().unwrap();
    g.start_server();
}

#[test]
fn archive_bombs_and_entry_floods_are_refused_and_leave_nothing() {
    let mut g = Gantry::start_with(
        "300ms",
        "\n[artifacts]\nmax_unpacked_size = \"16MiB\"\nmax_entries = 50\n",
    );
    // 64 MiB of zeros, about 64 KiB compressed.
    let bomb = gzip(&artifact_with(&g.dir.path().join("bomb"), "1.0.0", |t| {
        add_file(t, "zeros", &vec![0; 64 << 20], 0o644)
    }));
    assert!(bomb.len() < 200 << 10, "{} bytes", bomb.len());
    let bomb = write(&g, "bomb.tar.gz", &bomb);
    g.gantry(&["release", "create", "1.0.0", "--artifact", bomb.to_str().unwrap()])
        .fails_with(
            1,
            "release 1.0.0 refused: archive unpacks to more than 16 MiB (the limit set by artifacts.max_unpacked_size)",
        );
    let flood = artifact_with(&g.dir.path().join("flood"), "1.0.1", |t| {
        for n in 0..100 {
            add_file(t, &format!("many/{n}"), b"", 0o644);
        }
    });
    let flood = write(&g, "flood.tar", &flood);
    g.gantry(&["release", "create", "1.0.1", "--artifact", flood.to_str().unwrap()])
        .fails_with(
            1,
            "release 1.0.1 refused: archive holds more than 50 entries (the limit set by artifacts.max_entries)",
        );
    assert!(g.releases().is_empty());
    assert!(
        names_in(&g.data().join("artifacts/sha256")).is_empty(),
        "no blob, no upload left"
    );

    // Registered under looser limits, then deployed under the tight ones:
    // refused at unpack, and no release directory or half-unpacked tree is left.
    let tight = g.config.clone();
    restart_with(
        &mut g,
        tight.replace(
            "max_unpacked_size = \"16MiB\"",
            "max_unpacked_size = \"1GiB\"",
        ),
    );
    g.gantry(&[
        "release",
        "create",
        "1.0.0",
        "--artifact",
        bomb.to_str().unwrap(),
    ])
    .ok();
    restart_with(&mut g, tight);
    let id = deploy_id(
        &g.gantry(&["deploy", "1.0.0", "--env", "development", "--detach"])
            .ok(),
    );
    let d = g.wait_finished(id);
    assert_eq!(d.phase, Phase::Failed);
    let reason = d.reason.as_deref().unwrap();
    assert!(
        reason.contains("cannot unpack release 1.0.0: archive unpacks to more than 16 MiB (the limit set by artifacts.max_unpacked_size)"),
        "{reason}"
    );
    assert_eq!(names_in(&g.data().join("releases")), Vec::<String>::new());
}

#[test]
fn bad_artifacts_and_overlong_fields_are_refused_at_registration() {
    let g = Gantry::start();
    let not_tar = write(&g, "notes.gz", &gzip(b"just some text, compressed"));
    g.gantry(&[
        "release",
        "create",
        "1.0.0",
        "--artifact",
        not_tar.to_str().unwrap(),
    ])
    .fails_with(
        1,
        "artifact is gzip-compressed but does not hold a tar archive",
    );
    let escaping = artifact_with(&g.dir.path().join("esc"), "1.0.0", |t| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        t.append_link(&mut h, "secrets", "/var/lib").unwrap();
    });
    let escaping = write(&g, "esc.tar", &escaping);
    g.gantry(&["release", "create", "1.0.0", "--artifact", escaping.to_str().unwrap()])
        .fails_with(
            1,
            "symbolic link \"secrets\" points to the absolute path \"/var/lib\", outside the release directory",
        );
    let ok = g.artifact("1.0.0", "");
    let long = format!("1.0.0-{}", "a".repeat(300));
    g.gantry(&[
        "release",
        "create",
        &long,
        "--artifact",
        ok.to_str().unwrap(),
    ])
    .fails_with(
        1,
        "version is 306 characters long; at most 128 are accepted",
    );
    assert!(g.releases().is_empty());
    assert!(names_in(&g.data().join("artifacts/sha256")).is_empty());
}

/// Peak resident memory of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_large_upload_is_streamed_to_disk_not_held_in_memory() {
    let g = Gantry::start();
    let pid = g.server.as_ref().unwrap().id();
    let before = vm_hwm_kib(pid);
    // A 200 MiB tar, generated as it is sent.
    const SIZE: u64 = 200 << 20;
    let mut header = tar::Header::new_gnu();
    header.set_path("big.bin").unwrap();
    header.set_size(SIZE);
    header.set_mode(0o644);
    header.set_cksum();
    let trailer = 1024;
    let length = 512 + SIZE + trailer;
    let url = g.api_url();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/api/v1");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "PUT /api/v1/releases/2.0.0 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n",
        g.token()
    )
    .unwrap();
    s.write_all(header.as_bytes()).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..(SIZE >> 20) {
        s.write_all(&chunk).unwrap();
    }
    s.write_all(&[0; 1024]).unwrap();
    let mut status = String::new();
    BufReader::new(&s).read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 201"), "{status}");
    let after = vm_hwm_kib(pid);
    let growth_mib = after.saturating_sub(before) / 1024;
    println!("controller peak RSS: {before} KiB before, {after} KiB after a 200 MiB upload (+{growth_mib} MiB)");
    assert!(
        growth_mib < 40,
        "the controller's peak memory grew by {growth_mib} MiB for a 200 MiB upload"
    );
    let r = g.release("2.0.0");
    assert_eq!(r.size, length);
    assert_eq!(r.artifact_kind, "tar");
    assert_eq!(
        names_in(&g.data().join("artifacts/sha256")),
        [r.digest.as_hex()]
    );
}

#[test]
fn an_edited_release_directory_is_found_and_unpacked_again_before_it_runs() {
    let g = Gantry::start();
    // The archive says its assets directory is world-writable.
    let bytes = artifact_with(&g.dir.path().join("rel"), "1.0.0", |t| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_cksum();
        t.append_data(&mut h, "assets/", std::io::empty()).unwrap();
        add_file(t, "assets/style.css", b"body {}", 0o666);
    });
    let artifact = write(&g, "rel.tar", &bytes);
    g.gantry(&[
        "release",
        "create",
        "1.0.0",
        "--artifact",
        artifact.to_str().unwrap(),
    ])
    .ok();
    g.gantry(&["deploy", "1.0.0", "--env", "development"]).ok();
    assert_eq!(
        g.get_env("development"),
        (200, "hello from 1.0.0\n".to_owned())
    );
    let dir = g.data().join("releases/1.0.0");
    assert_eq!(mode(&dir), 0o555);
    assert_eq!(
        mode(&dir.join("assets")),
        0o555,
        "a 0777 directory ends read-only"
    );
    assert_eq!(mode(&dir.join("assets/style.css")), 0o444);
    assert_eq!(mode(&dir.join("bin/gantry")), 0o555);
    assert_eq!(mode(&dir.join("sample.json")), 0o444);
    assert!(g.data().join("releases/.manifests/1.0.0.json").exists());

    // Someone with root edits the unpacked release by hand.
    let settings = dir.join("sample.json");
    std::fs::set_permissions(&settings, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&settings, r#"{"version": "edited by hand"}"#).unwrap();

    // `release verify` sees it…
    let run = g.gantry(&["release", "verify"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("BAD 1.0.0")
            && run
                .stdout
                .contains("first difference: sample.json: content differs"),
        "{}",
        run.stdout
    );
    // …and the next deployment runs what was unpacked, not the edit.
    let id = deploy_id(
        &g.gantry(&["deploy", "1.0.0", "--env", "integration", "--detach"])
            .ok(),
    );
    assert_eq!(g.wait_finished(id).phase, Phase::Succeeded);
    assert_eq!(
        g.get_env("integration"),
        (200, "hello from 1.0.0\n".to_owned()),
        "the edited file did not run"
    );
    let log = g.gantry(&["log", &id.to_string()]).ok().stdout;
    assert!(
        log.contains("does not match its manifest (first difference: sample.json: content differs from what was unpacked); unpacking it again from the verified artifact"),
        "{log}"
    );
    assert!(g.controller_log().contains("does not match its manifest"));
    assert_eq!(
        std::fs::read_to_string(&settings).unwrap(),
        r#"{"version": "1.0.0"}"#
    );
    assert_eq!(mode(&settings), 0o444);
    assert_eq!(
        names_in(&g.data().join("releases")),
        [".manifests", "1.0.0"],
        "nothing stale left"
    );
    let run = g.gantry(&["release", "verify"]).ok();
    assert!(
        run.stdout
            .contains("release directory matches its manifest"),
        "{}",
        run.stdout
    );
}
