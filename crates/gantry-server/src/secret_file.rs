//! Files that hold credentials: created with mode 0600 before anything is written.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub fn write(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A new random token: 32 bytes, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex::encode(bytes)
}

/// Reads the token at `path`, creating it first if it does not exist.
pub fn load_or_create_token(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Ok(_) => {
            let t = new_token();
            write(path, &t)?;
            Ok(t)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let t = new_token();
            write(path, &t)?;
            Ok(t)
        }
        Err(e) => Err(e),
    }
}

/// The value of secret `name`, read from where it is referenced; the error
/// names the secret and the source, never a value.
pub fn resolve(name: &str, source: &gantry_config::SecretRef) -> Result<String, String> {
    match source {
        gantry_config::SecretRef::Env(var) => std::env::var(var).map_err(|_| {
            format!("secret {name}: environment variable {var} is not set on the controller")
        }),
        gantry_config::SecretRef::File(path) => std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches('\n').to_owned())
            .map_err(|e| format!("secret {name}: cannot read {}: {e}", path.display())),
    }
}
