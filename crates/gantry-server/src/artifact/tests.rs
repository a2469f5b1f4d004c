//! Archives built byte by byte (so they can hold what `tar::Builder`
//! refuses to write), unpacked for real into temporary directories.

use super::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use tar::EntryType;

/// A tar stream assembled from raw headers.
#[derive(Default)]
struct RawTar(Vec<u8>);

impl RawTar {
    fn entry(
        &mut self,
        name: &str,
        kind: EntryType,
        link: &str,
        data: &[u8],
        mode: u32,
    ) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }
    fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.entry(name, EntryType::Regular, "", data, mode)
    }
    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.entry(name, EntryType::Directory, "", b"", mode)
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, EntryType::Symlink, target, b"", 0o777)
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = self.0.clone();
        b.extend_from_slice(&[0; 1024]);
        b
    }
    fn gz(&self) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&self.bytes()).unwrap();
        gz.finish().unwrap()
    }
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn artifact(&self, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join("artifact");
        fs::write(&p, bytes).unwrap();
        p
    }
    fn releases(&self) -> PathBuf {
        self.dir.path().join("releases")
    }
    fn dest(&self) -> PathBuf {
        self.releases().join("1.0.0")
    }
    fn manifest(&self) -> PathBuf {
        self.releases().join(".manifests/1.0.0.json")
    }
    fn ensure(
        &self,
        kind: &str,
        bytes: &[u8],
        limits: &ArtifactLimits,
    ) -> Result<Vec<String>, String> {
        let artifact = self.artifact(bytes);
        ensure_release(
            kind,
            &artifact,
            DIGEST,
            &self.dest(),
            &self.manifest(),
            limits,
        )
    }
    /// What is in `releases/` besides manifests.
    fn leftovers(&self) -> Vec<String> {
        match fs::read_dir(self.releases()) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".manifests")
                .collect(),
            Err(_) => vec![],
        }
    }
}

const DIGEST: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn limits(bytes: u64, entries: u64) -> ArtifactLimits {
    ArtifactLimits {
        max_unpacked_bytes: bytes,
        max_entries: entries,
    }
}

#[test]
fn a_gzip_bomb_is_refused_at_check_and_unpack_and_leaves_nothing() {
    let f = Fixture::new();
    // 64 MiB of zeros: about 64 KiB compressed.
    let mut tar = RawTar::default();
    tar.file("bin/app", b"#!/bin/sh\n", 0o755)
        .file("zeros", &vec![0u8; 64 << 20], 0o644);
    let gz = tar.gz();
    assert!(gz.len() < 200 << 10, "{} bytes compressed", gz.len());
    let small = limits(16 << 20, 1000);
    let artifact = f.artifact(&gz);
    assert_eq!(detect_kind(&artifact).unwrap(), "tar.gz");
    let want = "archive unpacks to more than 16 MiB (the limit set by artifacts.max_unpacked_size)";
    assert_eq!(check("tar.gz", &artifact, &small).unwrap_err(), want);
    assert_eq!(f.ensure("tar.gz", &gz, &small).unwrap_err(), want);
    assert!(!f.dest().exists());
    assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());
    assert!(!f.manifest().exists());
    // Within the default limits it unpacks.
    f.ensure("tar.gz", &gz, &ArtifactLimits::standard())
        .unwrap();
    assert_eq!(
        fs::metadata(f.dest().join("zeros")).unwrap().len(),
        64 << 20
    );
}

#[test]
fn too_many_entries_are_refused_and_leave_nothing() {
    let f = Fixture::new();
    let mut tar = RawTar::default();
    for n in 0..50 {
        tar.file(&format!("f{n}"), b"x", 0o644);
    }
    let few = limits(1 << 30, 20);
    let err = f.ensure("tar", &tar.bytes(), &few).unwrap_err();
    assert_eq!(
        err,
        "archive holds more than 20 entries (the limit set by artifacts.max_entries)"
    );
    assert!(f.leftovers().is_empty(), "{:?}", f.leftovers());
    f.ensure("tar", &tar.bytes(), &limits(1 << 30, 50)).unwrap();
}

#[test]
fn entries_that_reach_outside_the_tree_or_are_devices_are_refused() {
    let cases: Vec<(RawTar, &str)> = vec![
        (
            {
                let mut t = RawTar::default();
                t.file("../evil", b"x", 0o644);
                t
            },
            "entry \"../evil\" climbs out of the release directory with '..'",
        ),
        (
            {
                let mut t = RawTar::default();
                t.file("/etc/evil", b"x", 0o644);
                t
            },
            "entry \"/etc/evil\" has an absolute path",
        ),
        (
            {
                let mut t = RawTar::default();
                t.symlink("etc", "/etc");
                t
            },
            "symbolic link \"etc\" points to the absolute path \"/etc\", outside the release directory",
        ),
        (
            {
                let mut t = RawTar::default();
                t.symlink("a/up", "../../..");
                t
            },
            "symbolic link \"a/up\" points to \"../../..\", outside the release directory",
        ),
        (
            {
                // Each link stays inside on its own; through the first, the second leaves.
                let mut t = RawTar::default();
                t.dir("d", 0o755).symlink("d/l1", "..").symlink("l2", "d/l1/..");
                t
            },
            "symbolic link \"l2\" resolves outside the release directory",
        ),
        (
            {
                let mut t = RawTar::default();
                t.dir("d", 0o755)
                    .symlink("l", "d")
                    .file("l/x", b"x", 0o644);
                t
            },
            "entry \"l/x\" lies under the symbolic link \"l\"",
        ),
        (
            {
                let mut t = RawTar::default();
                t.entry("shadow", EntryType::Link, "/etc/shadow", b"", 0o644);
                t
            },
            "hard link \"shadow\": entry \"/etc/shadow\" has an absolute path",
        ),
        (
            {
                let mut t = RawTar::default();
                t.entry("null", EntryType::Char, "", b"", 0o666);
                t
            },
            "entry \"null\" is a character device",
        ),
        (
            {
                let mut t = RawTar::default();
                t.entry("pipe", EntryType::Fifo, "", b"", 0o666);
                t
            },
            "entry \"pipe\" is a FIFO",
        ),
        (
            {
                let mut t = RawTar::default();
                t.file("a", b"1", 0o644).file("a", b"2", 0o644);
                t
            },
            "entry \"a\" appears twice in the archive",
        ),
        (
            {
                let mut t = RawTar::default();
                t.file("bad\x1b]0;title\x07", b"1", 0o644);
                t
            },
            "has a control character in its name",
        ),
        (
            {
                // A long name is read into memory: it is bounded first.
                let mut t = RawTar::default();
                t.entry("././@LongLink", EntryType::GNULongName, "", &[b'a'; 100 << 10], 0o644)
                    .file("x", b"1", 0o644);
                t
            },
            "archive has an extension header (long name or PAX record) of 102400 bytes",
        ),
    ];
    for (tar, want) in cases {
        let f = Fixture::new();
        let err = f
            .ensure("tar", &tar.bytes(), &ArtifactLimits::standard())
            .unwrap_err();
        assert!(err.contains(want), "{err:?} lacks {want:?}");
        assert!(!f.dest().exists(), "{want}");
        assert!(f.leftovers().is_empty(), "{want}: {:?}", f.leftovers());
    }
    assert!(fs::metadata("/etc/evil").is_err());
}

#[test]
fn links_inside_the_tree_are_kept() {
    let f = Fixture::new();
    let mut tar = RawTar::default();
    tar.file("lib/real.so", b"elf", 0o755)
        .symlink("lib/link.so", "real.so")
        .symlink("current", "./lib/../lib")
        .entry("hard.so", EntryType::Link, "lib/real.so", b"", 0o755);
    f.ensure("tar", &tar.bytes(), &ArtifactLimits::standard())
        .unwrap();
    assert_eq!(fs::read(f.dest().join("current/link.so")).unwrap(), b"elf");
    assert_eq!(fs::read(f.dest().join("hard.so")).unwrap(), b"elf");
}

#[test]
fn the_tree_is_sealed_read_only_whatever_the_archive_says() {
    let f = Fixture::new();
    let mut tar = RawTar::default();
    tar.dir("open", 0o777)
        .dir("sticky", 0o1777)
        .file("open/setuid", b"#!/bin/sh\n", 0o4777)
        .file("open/data", b"x", 0o666)
        .file("sticky/plain", b"x", 0o600);
    f.ensure("tar", &tar.bytes(), &ArtifactLimits::standard())
        .unwrap();
    let d = f.dest();
    assert_eq!(mode(&d), 0o555);
    assert_eq!(mode(&d.join("open")), 0o555, "a 0777 directory ends 0555");
    assert_eq!(mode(&d.join("sticky")), 0o555);
    assert_eq!(mode(&d.join("open/setuid")), 0o555, "no setuid, no write");
    assert_eq!(mode(&d.join("open/data")), 0o444);
    assert_eq!(mode(&d.join("sticky/plain")), 0o444);
}

#[test]
fn a_tree_that_differs_from_its_manifest_is_named_and_unpacked_again() {
    let f = Fixture::new();
    let mut tar = RawTar::default();
    tar.file("bin/app", b"#!/bin/sh\necho good\n", 0o755)
        .file("etc/conf", b"a=1\n", 0o644);
    let bytes = tar.bytes();
    let std = ArtifactLimits::standard();
    assert_eq!(f.ensure("tar", &bytes, &std).unwrap(), Vec::<String>::new());
    assert_eq!(
        f.ensure("tar", &bytes, &std).unwrap(),
        Vec::<String>::new(),
        "unchanged: nothing to repair"
    );

    let app = f.dest().join("bin/app");
    fs::set_permissions(&app, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(&app, "#!/bin/sh\necho evil\n").unwrap();
    let notes = f.ensure("tar", &bytes, &std).unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("does not match its manifest (first difference: bin/app: content differs from what was unpacked)"),
        "{notes:?}"
    );
    assert_eq!(fs::read_to_string(&app).unwrap(), "#!/bin/sh\necho good\n");
    assert_eq!(mode(&app), 0o555);
    assert!(f.leftovers() == ["1.0.0"], "{:?}", f.leftovers());

    // A mode changed, a file added, a file removed: each is found.
    fs::set_permissions(f.dest().join("etc"), fs::Permissions::from_mode(0o777)).unwrap();
    let notes = f.ensure("tar", &bytes, &std).unwrap();
    assert!(
        notes[0].contains("etc: mode is 0777, expected 0555"),
        "{notes:?}"
    );
    let etc = f.dest().join("etc");
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(etc.join("extra"), "x").unwrap();
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o555)).unwrap();
    let notes = f.ensure("tar", &bytes, &std).unwrap();
    assert!(notes[0].contains("etc/extra was added"), "{notes:?}");
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(etc.join("conf")).unwrap();
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o555)).unwrap();
    let notes = f.ensure("tar", &bytes, &std).unwrap();
    assert!(notes[0].contains("etc/conf is missing"), "{notes:?}");
    // A tree with no manifest (unpacked by an older Gantry) is unpacked again.
    fs::remove_file(f.manifest()).unwrap();
    let notes = f.ensure("tar", &bytes, &std).unwrap();
    assert!(notes[0].contains("it has no manifest"), "{notes:?}");
    assert_eq!(f.ensure("tar", &bytes, &std).unwrap(), Vec::<String>::new());
}

#[test]
fn gzip_is_a_tarball_only_when_it_holds_a_tar_header() {
    let f = Fixture::new();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&[b'x'; 4096]).unwrap();
    let not_tar = f.artifact(&gz.finish().unwrap());
    assert!(detect_kind(&not_tar)
        .unwrap_err()
        .contains("gzip-compressed but does not hold a tar archive"));
    let broken = f.artifact(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff]);
    assert!(detect_kind(&broken)
        .unwrap_err()
        .contains("not a valid gzip stream"));
    let mut tar = RawTar::default();
    tar.file("a", b"1", 0o644);
    assert_eq!(detect_kind(&f.artifact(&tar.gz())).unwrap(), "tar.gz");
    assert_eq!(detect_kind(&f.artifact(&tar.bytes())).unwrap(), "tar");
    // "ustar" at the right place but a wrong checksum is not a tar header.
    let mut bad = tar.bytes();
    bad[0] ^= 1;
    assert!(detect_kind(&f.artifact(&bad)).is_err());
    assert_eq!(
        detect_kind(&f.artifact(b"#!/bin/sh\n")).unwrap(),
        "executable"
    );
}

#[test]
fn long_names_and_pax_records_are_read_and_crash_leftovers_removed() {
    let f = Fixture::new();
    let long = format!("deep/{}/file.txt", "d".repeat(150));
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    builder.append_data(&mut h, &long, &b"hi"[..]).unwrap();
    builder
        .append_pax_extensions([("path", "pax/named.txt".as_bytes())])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("ignored-name").unwrap();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    builder.append(&h, &b"pax"[..]).unwrap();
    let bytes = builder.into_inner().unwrap();
    // A crash left a half-unpacked tree behind.
    let leftover = f.releases().join(".unpack-crashed/sub");
    fs::create_dir_all(&leftover).unwrap();
    fs::set_permissions(&leftover, fs::Permissions::from_mode(0o555)).unwrap();
    f.ensure("tar", &bytes, &ArtifactLimits::standard())
        .unwrap();
    assert_eq!(fs::read(f.dest().join(&long)).unwrap(), b"hi");
    assert_eq!(fs::read(f.dest().join("pax/named.txt")).unwrap(), b"pax");
    assert!(!f.dest().join("ignored-name").exists());
    assert_eq!(f.leftovers(), ["1.0.0"]);
}
