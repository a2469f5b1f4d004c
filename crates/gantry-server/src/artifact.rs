//! Artifacts: recognising their kind, checking them against the limits,
//! unpacking them into sealed release trees, checking signatures.
//!
//! A release directory is complete or absent: an archive is unpacked aside
//! (a `.unpack-*` sibling), sealed read-only, described in a manifest kept
//! outside the tree, and only then renamed into place. Before instances
//! start, [`ensure_release`] compares the tree with its manifest and unpacks
//! it again from the (re-hashed) artifact if anything differs.

pub mod archive;
pub mod tree;

use base64::Engine as _;
use gantry_config::ArtifactLimits;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The gzip magic number.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// What an artifact is, from its first bytes: a tar archive (plain or
/// gzip-compressed, recognised by a valid tar header, not by a magic number
/// alone), or an executable (ELF or `#!`).
pub fn detect_kind(path: &Path) -> Result<&'static str, String> {
    let mut head = Vec::with_capacity(512);
    let file = fs::File::open(path).map_err(|e| format!("cannot read the artifact: {e}"))?;
    file.take(512)
        .read_to_end(&mut head)
        .map_err(|e| format!("cannot read the artifact: {e}"))?;
    if head.starts_with(&GZIP_MAGIC) {
        let file = fs::File::open(path).map_err(|e| format!("cannot read the artifact: {e}"))?;
        let mut first = Vec::with_capacity(512);
        flate2::read::MultiGzDecoder::new(file)
            .take(512)
            .read_to_end(&mut first)
            .map_err(|e| {
                format!("artifact starts like gzip but is not a valid gzip stream: {e}")
            })?;
        if is_tar_header(&first) {
            Ok("tar.gz")
        } else {
            Err("artifact is gzip-compressed but does not hold a tar archive (no valid tar header at its start); only .tar.gz archives may be compressed".to_owned())
        }
    } else if is_tar_header(&head) {
        Ok("tar")
    } else if head.starts_with(b"\x7fELF") || head.starts_with(b"#!") {
        Ok("executable")
    } else if head.is_empty() {
        Err("artifact is empty".to_owned())
    } else {
        Err("artifact is neither a tarball (.tar, .tar.gz) nor an executable (ELF binary or #! script)".to_owned())
    }
}

/// A 512-byte block that is a ustar (or GNU) header with a right checksum.
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 || &block[257..262] != b"ustar" {
        return false;
    }
    let sum: u32 = block[..512]
        .iter()
        .enumerate()
        .map(|(n, b)| {
            if (148..156).contains(&n) {
                32
            } else {
                *b as u32
            }
        })
        .sum();
    let field = String::from_utf8_lossy(&block[148..156]);
    let field = field.trim_matches(|c: char| c == '\0' || c == ' ');
    u32::from_str_radix(field, 8).is_ok_and(|stored| stored == sum)
}

fn open_archive(kind: &str, artifact: &Path) -> Result<Box<dyn Read>, String> {
    let file = io::BufReader::with_capacity(
        256 * 1024,
        fs::File::open(artifact).map_err(|e| format!("cannot open artifact: {e}"))?,
    );
    match kind {
        "tar.gz" => Ok(Box::new(flate2::read::MultiGzDecoder::new(file))),
        "tar" => Ok(Box::new(file)),
        other => Err(format!("unknown archive kind {other:?}")),
    }
}

/// The most of a release's migrations file read.
pub const MAX_MIGRATIONS_FILE_BYTES: u64 = 256 * 1024;

/// The migrations an artifact declares in its top directory's
/// `gantry-migrations.toml` (none for an executable, or without the file).
/// The artifact has passed [`check`]; a bad file is refused naming the
/// file and each field.
pub fn migrations(
    kind: &str,
    artifact: &Path,
) -> Result<Vec<gantry_core::machine::migrations::Migration>, String> {
    use std::io::Read as _;
    if kind == "executable" {
        return Ok(Vec::new());
    }
    let name = gantry_config::MIGRATIONS_FILE;
    let mut archive = tar::Archive::new(open_archive(kind, artifact)?);
    let entries = archive
        .entries()
        .map_err(|e| format!("cannot read the archive: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read the archive: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("cannot read the archive: {e}"))?
            .into_owned();
        let top = path.strip_prefix(".").unwrap_or(&path);
        if top != Path::new(name) {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            return Err(format!("{name} is not a regular file in the artifact"));
        }
        let size = entry.size();
        if size > MAX_MIGRATIONS_FILE_BYTES {
            return Err(format!(
                "{name} is {size} bytes; at most {MAX_MIGRATIONS_FILE_BYTES} are read"
            ));
        }
        let mut text = String::new();
        entry
            .take(MAX_MIGRATIONS_FILE_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| format!("{name} is not readable UTF-8 text: {e}"))?;
        return gantry_config::parse_migrations(name, &text).map_err(|e| e.to_string());
    }
    Ok(Vec::new())
}

/// Checks an artifact against the limits without unpacking it.
pub fn check(
    kind: &str,
    artifact: &Path,
    limits: &ArtifactLimits,
) -> Result<archive::Totals, String> {
    match kind {
        "executable" => {
            let size = fs::metadata(artifact)
                .map_err(|e| format!("cannot open artifact: {e}"))?
                .len();
            let mut totals = archive::Totals::default();
            totals.add(size, limits)?;
            Ok(totals)
        }
        kind => archive::walk(open_archive(kind, artifact)?, limits, archive::Sink::Check),
    }
}

/// Serialises preparation within the controller: two deployments of one
/// release must not both repair its directory at once.
static PREPARING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Makes `dest` a sealed tree of the artifact that matches its manifest:
/// unpacks it when absent, checks it when present, and unpacks it again
/// when it differs. Returns what it had to repair, for the deployment log.
/// Blocking: call it on a blocking thread.
pub fn ensure_release(
    kind: &str,
    artifact: &Path,
    digest: &str,
    dest: &Path,
    manifest: &Path,
    limits: &ArtifactLimits,
) -> Result<Vec<String>, String> {
    let _one_at_a_time = PREPARING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(parent) = dest.parent() {
        remove_leftovers(parent);
    }
    let mut notes = Vec::new();
    if fs::symlink_metadata(dest).is_ok() {
        let started = std::time::Instant::now();
        match compare_with_manifest(dest, manifest, digest) {
            Ok(()) => {
                tracing::debug!(dir = %dest.display(), elapsed_ms = started.elapsed().as_millis() as u64, "release directory matches its manifest");
                return Ok(notes);
            }
            Err(why) => {
                let note = format!(
                    "release directory {} does not match its manifest ({why}); unpacking it again from the verified artifact",
                    dest.display()
                );
                tracing::warn!("{note}");
                notes.push(note);
            }
        }
    }
    unpack(kind, artifact, digest, dest, manifest, limits)?;
    Ok(notes)
}

/// Removes trees a crash left half-unpacked or half-replaced. Only under
/// [`PREPARING`], and one controller owns a data directory, so none of
/// them is in use.
fn remove_leftovers(releases: &Path) {
    let Ok(entries) = fs::read_dir(releases) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".unpack-") || name.starts_with(".stale-") {
            if let Err(e) = tree::remove(&entry.path()) {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove a leftover release tree");
            }
        }
    }
}

/// Why the tree at `dest` is not what its manifest says, if it is not.
pub fn compare_with_manifest(dest: &Path, manifest: &Path, digest: &str) -> Result<(), String> {
    let bytes = match fs::read(manifest) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err("it has no manifest".to_owned())
        }
        Err(e) => return Err(format!("cannot read its manifest: {e}")),
    };
    let expected: tree::Manifest =
        serde_json::from_slice(&bytes).map_err(|e| format!("its manifest is unreadable: {e}"))?;
    if expected.artifact != digest {
        return Err(format!(
            "its manifest is of artifact {}, not {digest}",
            expected.artifact
        ));
    }
    let actual = tree::describe(dest).map_err(|e| format!("cannot read it: {e}"))?;
    match tree::first_difference(&expected.entries, &actual) {
        None => Ok(()),
        Some(diff) => Err(format!("first difference: {diff}")),
    }
}

/// A tree being unpacked beside its destination; removed unless installed.
struct Aside(Option<PathBuf>);

impl Drop for Aside {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if let Err(e) = tree::remove(&path) {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove a partly unpacked release");
            }
        }
    }
}

/// Unpacks into `dest` through a temporary sibling directory and a rename,
/// so a release directory is either complete or absent; seals it read-only
/// and writes its manifest first. An existing `dest` is replaced.
pub fn unpack(
    kind: &str,
    artifact: &Path,
    digest: &str,
    dest: &Path,
    manifest: &Path,
    limits: &ArtifactLimits,
) -> Result<(), String> {
    let parent = dest.parent().ok_or("release directory has no parent")?;
    fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .map_err(|e| e.to_string())?
        .keep();
    let mut aside = Aside(Some(tmp.clone()));
    match kind {
        "executable" => {
            check(kind, artifact, limits)?;
            let bin = tmp.join("bin");
            fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
            let exe = bin.join("app");
            fs::copy(artifact, &exe).map_err(|e| e.to_string())?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&exe, fs::Permissions::from_mode(0o555))
                .map_err(|e| e.to_string())?;
        }
        kind => {
            archive::walk(
                open_archive(kind, artifact)?,
                limits,
                archive::Sink::Unpack(&tmp),
            )?;
        }
    }
    tree::seal(&tmp)?;
    let entries =
        tree::describe(&tmp).map_err(|e| format!("cannot describe the unpacked tree: {e}"))?;
    write_manifest(
        manifest,
        &tree::Manifest {
            artifact: digest.to_owned(),
            entries,
        },
    )?;
    if fs::symlink_metadata(dest).is_ok() {
        // Move the stale tree out of the way; it is removed once the new one is in.
        let stale = tempfile::Builder::new()
            .prefix(".stale-")
            .tempdir_in(parent)
            .map_err(|e| e.to_string())?
            .keep();
        let stale_tree = stale.join("tree");
        let moved = fs::rename(dest, &stale_tree);
        let _stale = Aside(Some(stale));
        moved.map_err(|e| format!("cannot move the stale release directory aside: {e}"))?;
    }
    fs::rename(&tmp, dest).map_err(|e| format!("cannot move release into place: {e}"))?;
    aside.0 = None;
    Ok(())
}

fn write_manifest(path: &Path, manifest: &tree::Manifest) -> Result<(), String> {
    let dir = path.parent().ok_or("manifest path has no parent")?;
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("cannot write the release manifest: {e}"))?;
    serde_json::to_writer(io::BufWriter::new(tmp.as_file_mut()), manifest)
        .map_err(|e| format!("cannot write the release manifest: {e}"))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| format!("cannot write the release manifest: {e}"))?;
    tmp.persist(path)
        .map_err(|e| format!("cannot write the release manifest: {}", e.error))?;
    Ok(())
}

/// Verifies a minisign signature over the file at `path` against any of
/// `keys`, returning the key that verified it. The file is streamed, never
/// held whole (only prehashed signatures, minisign's default, are accepted).
pub fn verify_signature(path: &Path, signature: &str, keys: &[String]) -> Result<String, String> {
    let sig = minisign_verify::Signature::decode(signature)
        .map_err(|e| format!("signature is not in minisign format: {e}"))?;
    if keys.is_empty() {
        return Err("no public keys are configured in signing.public_keys".to_owned());
    }
    let mut last = String::new();
    for key in keys {
        let pk = minisign_verify::PublicKey::from_base64(key)
            .map_err(|e| format!("configured public key {key} is invalid: {e}"))?;
        let mut verifier = match pk.verify_stream(&sig) {
            Ok(v) => v,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let mut file =
            fs::File::open(path).map_err(|e| format!("cannot read the artifact: {e}"))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| format!("cannot read the artifact: {e}"))?;
            if n == 0 {
                break;
            }
            verifier.update(&buf[..n]);
        }
        match verifier.finalize() {
            Ok(()) => return Ok(key.clone()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!(
        "signature does not verify against any configured public key ({last})"
    ))
}

pub fn decode_b64(s: &str) -> Result<String, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())
}

#[cfg(test)]
mod tests;
