//! An unpacked release tree: sealing it read-only and describing it, so that
//! what is on disk can be checked against what was unpacked.
//!
//! The manifest lists every path with its type, mode, size and SHA-256 (and
//! a link's target). It is written when the tree is unpacked and kept
//! outside the tree; before instances start, the tree is described again
//! and compared, so a file edited, added, removed or made writable by hand
//! is found and named.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// What a release tree held when it was unpacked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The SHA-256 of the artifact it was unpacked from.
    pub artifact: String,
    /// Every path, parents before children, "." for the root.
    pub entries: Vec<TreeEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    pub path: String,
    #[serde(flatten)]
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntryKind {
    Dir {
        mode: String,
    },
    File {
        mode: String,
        size: u64,
        sha256: String,
    },
    Symlink {
        target: String,
    },
    /// Anything else (a device, a FIFO, a socket): never unpacked, so
    /// always a difference.
    Other,
}

/// Makes the tree read-only: directories 0555, files 0444 or 0555, no
/// set-id or sticky bits, nothing writable by anyone; and checks that every
/// symbolic link resolves inside it (chains of links included).
pub fn seal(root: &Path) -> Result<(), String> {
    let canonical_root = root
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", root.display()))?;
    seal_dir(root, &canonical_root, "")
}

fn seal_dir(dir: &Path, canonical_root: &Path, rel: &str) -> Result<(), String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot read {rel:?}: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {rel:?}: {e}"))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta =
            fs::symlink_metadata(&path).map_err(|e| format!("cannot read {child:?}: {e}"))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            seal_dir(&path, canonical_root, &child)?;
        } else if ft.is_symlink() {
            match path.canonicalize() {
                Ok(to) if to.starts_with(canonical_root) => {}
                Ok(_) => {
                    return Err(format!(
                        "symbolic link {child:?} resolves outside the release directory"
                    ))
                }
                Err(_) => {
                    return Err(format!(
                    "symbolic link {child:?} points to nothing in the release (dangling or a loop)"
                ))
                }
            }
        } else if ft.is_file() {
            let mode = if meta.mode() & 0o111 != 0 {
                0o555
            } else {
                0o444
            };
            if meta.mode() & 0o7777 != mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("cannot make {child:?} read-only: {e}"))?;
            }
        } else {
            return Err(format!("{child:?} is not a file, directory or link"));
        }
    }
    // Children first: a read-only directory takes no new entries.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o555))
        .map_err(|e| format!("cannot make directory {rel:?} read-only: {e}"))
}

/// Describes the tree as it is on disk, hashing every file. Links are not
/// followed.
pub fn describe(root: &Path) -> io::Result<Vec<TreeEntry>> {
    let mut out = Vec::new();
    let meta = fs::symlink_metadata(root)?;
    out.push(TreeEntry {
        path: ".".to_owned(),
        kind: kind_of(root, &meta)?,
    });
    if meta.is_dir() {
        describe_dir(root, "", &mut out)?;
    }
    Ok(out)
}

fn describe_dir(dir: &Path, rel: &str, out: &mut Vec<TreeEntry>) -> io::Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let name = name.to_string_lossy();
        let child = if rel.is_empty() {
            name.into_owned()
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path)?;
        out.push(TreeEntry {
            path: child.clone(),
            kind: kind_of(&path, &meta)?,
        });
        if meta.is_dir() {
            describe_dir(&path, &child, out)?;
        }
    }
    Ok(())
}

fn kind_of(path: &Path, meta: &fs::Metadata) -> io::Result<EntryKind> {
    let mode = format!("{:04o}", meta.mode() & 0o7777);
    let ft = meta.file_type();
    Ok(if ft.is_dir() {
        EntryKind::Dir { mode }
    } else if ft.is_symlink() {
        EntryKind::Symlink {
            target: fs::read_link(path)?.to_string_lossy().into_owned(),
        }
    } else if ft.is_file() {
        let mut hasher = Sha256::new();
        let size = io::copy(&mut fs::File::open(path)?, &mut hasher)?;
        EntryKind::File {
            mode,
            size,
            sha256: hex::encode(hasher.finalize()),
        }
    } else {
        EntryKind::Other
    })
}

/// The first way `actual` differs from `expected`, in words naming the
/// path; `None` when they are the same.
pub fn first_difference(expected: &[TreeEntry], actual: &[TreeEntry]) -> Option<String> {
    let n = expected
        .iter()
        .zip(actual)
        .position(|(e, a)| e != a)
        .unwrap_or(expected.len().min(actual.len()));
    match (expected.get(n), actual.get(n)) {
        (None, None) => None,
        (Some(e), None) => Some(format!("{} is missing", e.path)),
        (None, Some(a)) => Some(format!("{} was added", a.path)),
        (Some(e), Some(a)) if e.path == a.path => {
            Some(format!("{}: {}", e.path, describe_change(&e.kind, &a.kind)))
        }
        (Some(e), Some(a)) => {
            let known: HashSet<&str> = expected.iter().map(|e| e.path.as_str()).collect();
            if known.contains(a.path.as_str()) {
                Some(format!("{} is missing", e.path))
            } else {
                Some(format!("{} was added", a.path))
            }
        }
    }
}

fn describe_change(expected: &EntryKind, actual: &EntryKind) -> String {
    use EntryKind::*;
    match (expected, actual) {
        (Dir { mode: m }, Dir { mode: a }) => format!("mode is {a}, expected {m}"),
        (
            File {
                mode: m,
                size: s,
                sha256: h,
            },
            File {
                mode: am,
                size: a_s,
                sha256: ah,
            },
        ) => {
            if h != ah || s != a_s {
                "content differs from what was unpacked".to_owned()
            } else {
                format!("mode is {am}, expected {m}")
            }
        }
        (Symlink { target: t }, Symlink { target: at }) => {
            format!("link points to {at:?}, expected {t:?}")
        }
        (e, a) => format!("is a {}, expected a {}", kind_name(a), kind_name(e)),
    }
}

fn kind_name(k: &EntryKind) -> &'static str {
    match k {
        EntryKind::Dir { .. } => "directory",
        EntryKind::File { .. } => "file",
        EntryKind::Symlink { .. } => "symbolic link",
        EntryKind::Other => "special file",
    }
}

/// Removes a tree that was sealed read-only: its directories are made
/// writable again first (links are not followed).
pub fn remove(root: &Path) -> io::Result<()> {
    fn unseal(dir: &Path) -> io::Result<()> {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                unseal(&entry.path())?;
            }
        }
        Ok(())
    }
    match fs::symlink_metadata(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if m.is_dir() => {
            let _ = unseal(root);
        }
        Ok(_) => return fs::remove_file(root),
    }
    fs::remove_dir_all(root)
}
