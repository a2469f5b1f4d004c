//! Modes of the data directory. Its secrets (tokens, the audit key, the
//! database with its WAL and shared memory, instance logs) are the
//! controller's alone; instances of another user may only pass through it to
//! their release directory (`--x`), never list or read it.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Directories only the controller uses.
const PRIVATE_DIRS: &[&str] = &["artifacts", "instances", "routers"];
/// Directories instances pass through: their release, their scratch space.
const PASSAGE_DIRS: &[&str] = &["releases", "scratch"];

/// Sets the modes of the data directory and what is in it. `passage` opens
/// the directory and the release and scratch directories for traversal by
/// other users (instances run as another user); otherwise everything is 0700.
/// Also mends data directories made by older versions (a 0644 database).
pub fn tighten(dir: &Path, passage: bool) -> io::Result<()> {
    let dir_mode = if passage { 0o711 } else { 0o700 };
    set_mode(dir, dir_mode)?;
    for name in PASSAGE_DIRS {
        let d = dir.join(name);
        fs::create_dir_all(&d)?;
        set_mode(&d, dir_mode)?;
    }
    for name in PRIVATE_DIRS {
        let d = dir.join(name);
        if d.is_dir() {
            set_mode(&d, 0o700)?;
        }
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            set_mode(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn an_old_data_directory_is_closed_and_only_passages_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join("gantry.db"), b"x").unwrap();
        fs::write(dir.join("gantry.db-wal"), b"x").unwrap();
        set_mode(&dir.join("gantry.db"), 0o644).unwrap();
        set_mode(&dir.join("gantry.db-wal"), 0o644).unwrap();
        fs::create_dir(dir.join("instances")).unwrap();
        set_mode(&dir.join("instances"), 0o755).unwrap();

        tighten(dir, true).unwrap();
        assert_eq!(mode(dir), 0o711);
        assert_eq!(mode(&dir.join("gantry.db")), 0o600);
        assert_eq!(mode(&dir.join("gantry.db-wal")), 0o600);
        assert_eq!(mode(&dir.join("instances")), 0o700);
        assert_eq!(mode(&dir.join("releases")), 0o711);
        assert_eq!(mode(&dir.join("scratch")), 0o711);

        tighten(dir, false).unwrap();
        assert_eq!(mode(dir), 0o700);
        assert_eq!(mode(&dir.join("releases")), 0o700);
    }
}
