//! Artifacts: recognising their kind, unpacking them, checking signatures.

use base64::Engine as _;
use std::fs;
use std::path::Path;

/// What an artifact is, from its first bytes.
pub fn detect_kind(bytes: &[u8]) -> Result<&'static str, String> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        Ok("tar.gz")
    } else if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
        Ok("tar")
    } else if bytes.starts_with(b"\x7fELF") || bytes.starts_with(b"#!") {
        Ok("executable")
    } else if bytes.is_empty() {
        Err("artifact is empty".to_owned())
    } else {
        Err("artifact is neither a tarball (.tar, .tar.gz) nor an executable (ELF binary or #! script)".to_owned())
    }
}

/// Unpacks into `dest` through a temporary sibling directory and a rename,
/// so a release directory is either complete or absent. Files end read-only.
pub fn unpack(kind: &str, artifact: &Path, dest: &Path) -> Result<(), String> {
    let parent = dest.parent().ok_or("release directory has no parent")?;
    fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(parent)
        .map_err(|e| e.to_string())?;
    let file = fs::File::open(artifact).map_err(|e| format!("cannot open artifact: {e}"))?;
    match kind {
        "tar.gz" => tar::Archive::new(flate2::read::GzDecoder::new(file))
            .unpack(tmp.path())
            .map_err(|e| format!("bad tar.gz archive: {e}"))?,
        "tar" => tar::Archive::new(file)
            .unpack(tmp.path())
            .map_err(|e| format!("bad tar archive: {e}"))?,
        "executable" => {
            let bin = tmp.path().join("bin");
            fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
            let exe = bin.join("app");
            fs::copy(artifact, &exe).map_err(|e| e.to_string())?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&exe, fs::Permissions::from_mode(0o555))
                .map_err(|e| e.to_string())?;
        }
        other => return Err(format!("unknown artifact kind {other:?}")),
    }
    make_read_only(tmp.path()).map_err(|e| e.to_string())?;
    let tmp = tmp.keep();
    if let Err(e) = fs::rename(&tmp, dest) {
        let _ = fs::remove_dir_all(&tmp);
        if !dest.exists() {
            return Err(format!("cannot move release into place: {e}"));
        }
    }
    Ok(())
}

/// Release trees are read-only for everyone and readable by the instances'
/// user: directories 0555, files 0444 (0555 if the archive made them
/// executable), whatever modes the archive carried (no world-writable or
/// set-id bits survive).
fn make_read_only(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = fs::symlink_metadata(entry.path())?;
        if meta.is_dir() {
            make_read_only(&entry.path())?;
        } else if meta.is_file() {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o555
            } else {
                0o444
            };
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(mode))?;
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o555))
}

/// Verifies a minisign signature over `bytes` against any of `keys`,
/// returning the key that verified it.
pub fn verify_signature(bytes: &[u8], signature: &str, keys: &[String]) -> Result<String, String> {
    let sig = minisign_verify::Signature::decode(signature)
        .map_err(|e| format!("signature is not in minisign format: {e}"))?;
    if keys.is_empty() {
        return Err("no public keys are configured in signing.public_keys".to_owned());
    }
    let mut last = String::new();
    for key in keys {
        let pk = minisign_verify::PublicKey::from_base64(key)
            .map_err(|e| format!("configured public key {key} is invalid: {e}"))?;
        match pk.verify(bytes, &sig, false) {
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
