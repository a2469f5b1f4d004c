//! Reading a release archive entry by entry, within bounds.
//!
//! An archive is untrusted: a 1 MB tar.gz can hold a terabyte of zeros or a
//! million empty files, and its entries can name `../../etc/passwd`, devices,
//! or links out of the tree. One walk checks every entry (and counts them
//! and their bytes against [`ArtifactLimits`]) before writing it; registration
//! runs it without writing ([`Sink::Check`]) so a release that could never
//! unpack is refused at once, and `prepare` runs it again while unpacking
//! ([`Sink::Unpack`]), since the limits may have changed since.
//!
//! The tar crate is used in raw mode, only to parse headers: the GNU long
//! names and PAX records are read here, bounded, and the files written here,
//! so nothing in an archive is buffered whole or written outside the tree.

use gantry_config::ArtifactLimits;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The longest path accepted (Linux's PATH_MAX) and path component (NAME_MAX).
const MAX_PATH_BYTES: usize = 4096;
const MAX_NAME_BYTES: usize = 255;
/// The largest GNU long-name or PAX record accepted; real ones are a few hundred bytes.
const MAX_EXTENSION_BYTES: u64 = 64 * 1024;

/// What to do with the entries once checked.
pub enum Sink<'a> {
    /// Only check them (registration).
    Check,
    /// Write them under this directory, which must exist and be empty.
    Unpack(&'a Path),
}

/// What an archive holds, counted as the limits count it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub entries: u64,
    pub bytes: u64,
}

impl Totals {
    /// Counts one more entry of `bytes`, refusing past the limits.
    pub fn add(&mut self, bytes: u64, limits: &ArtifactLimits) -> Result<(), String> {
        self.entries += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        if self.entries > limits.max_entries {
            return Err(format!(
                "archive holds more than {} entries (the limit set by artifacts.max_entries)",
                limits.max_entries
            ));
        }
        if self.bytes > limits.max_unpacked_bytes {
            return Err(format!(
                "archive unpacks to more than {} (the limit set by artifacts.max_unpacked_size)",
                human_size(limits.max_unpacked_bytes)
            ));
        }
        Ok(())
    }
}

/// `2147483648` → "2 GiB"; sizes that are not a whole unit stay in bytes.
pub fn human_size(bytes: u64) -> String {
    for (unit, factor) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{} {unit}", bytes / factor);
        }
    }
    format!("{bytes} bytes")
}

/// Extension records that describe the next entry.
#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
}

/// Walks a tar stream, checking each entry and, with [`Sink::Unpack`],
/// writing it. Files are written read-only (0444, or 0555 when the archive
/// marks them executable); directories are left writable for the caller to
/// seal once every entry is in.
pub fn walk(reader: impl Read, limits: &ArtifactLimits, sink: Sink<'_>) -> Result<Totals, String> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| format!("bad tar archive: {e}"))?
        .raw(true);
    let mut totals = Totals::default();
    let mut pending = Pending::default();
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("bad tar archive: {e}"))?;
        let size = entry.size();
        totals.add(size, limits)?;
        let kind = entry.header().entry_type();
        if kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions()
        {
            if size > MAX_EXTENSION_BYTES {
                return Err(format!(
                    "archive has an extension header (long name or PAX record) of {size} bytes; at most {MAX_EXTENSION_BYTES} are accepted"
                ));
            }
            let mut data = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut data)
                .map_err(|e| format!("bad tar archive: {e}"))?;
            if kind.is_gnu_longname() {
                pending.path = Some(trim_nul(data));
            } else if kind.is_gnu_longlink() {
                pending.link = Some(trim_nul(data));
            } else if kind.is_pax_local_extensions() {
                read_pax(&data, &mut pending)?;
            }
            continue;
        }
        let raw_path = pending
            .path
            .take()
            .unwrap_or_else(|| entry.header().path_bytes().into_owned());
        let raw_link = pending
            .link
            .take()
            .or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()));
        if let Some(pax_size) = pending.size.take() {
            // Readers that honour the PAX size and readers that do not must
            // not see two different archives.
            if pax_size != size {
                return Err(format!(
                    "entry {:?} has a PAX size ({pax_size}) that differs from its header's ({size})",
                    String::from_utf8_lossy(&raw_path)
                ));
            }
        }
        let path = relative_path(&raw_path)?;
        let is_dir = kind.is_dir()
            || (kind == tar::EntryType::Regular && raw_path.ends_with(b"/") && size == 0);
        let root = match sink {
            Sink::Check => None,
            Sink::Unpack(root) => Some(root),
        };
        if is_dir {
            if let (Some(root), false) = (root, path.is_empty()) {
                not_under_symlink(root, &path)?;
                fs::create_dir_all(root.join(&path))
                    .map_err(|e| format!("cannot create directory {path:?}: {e}"))?;
            }
            continue;
        }
        if path.is_empty() {
            return Err(format!(
                "entry {:?} has no file name",
                String::from_utf8_lossy(&raw_path)
            ));
        }
        if kind.is_file() || kind.is_contiguous() {
            let mode = entry.header().mode().unwrap_or(0o644);
            if let Some(root) = root {
                write_file(root, &path, &mut entry, size, mode)?;
            }
        } else if kind.is_symlink() {
            let target = symlink_target(&path, raw_link.as_deref())?;
            if let Some(root) = root {
                make_parent(root, &path)?;
                std::os::unix::fs::symlink(&target, root.join(&path))
                    .map_err(|e| exists_or(e, &path, "cannot create symbolic link"))?;
            }
        } else if kind.is_hard_link() {
            let target = relative_path(raw_link.as_deref().unwrap_or_default())
                .map_err(|e| format!("hard link {path:?}: {e}"))?;
            if target.is_empty() {
                return Err(format!("hard link {path:?} names no target"));
            }
            if let Some(root) = root {
                not_under_symlink(root, &target)?;
                let is_file = fs::symlink_metadata(root.join(&target))
                    .map(|m| m.file_type().is_file())
                    .unwrap_or(false);
                if !is_file {
                    return Err(format!(
                        "hard link {path:?} points to {target:?}, which is not a regular file earlier in the archive"
                    ));
                }
                make_parent(root, &path)?;
                fs::hard_link(root.join(&target), root.join(&path))
                    .map_err(|e| exists_or(e, &path, "cannot create hard link"))?;
            }
        } else {
            return Err(format!(
                "entry {path:?} is {}; a release archive may hold only regular files, directories and links",
                describe_kind(kind)
            ));
        }
    }
    if pending.path.is_some() || pending.link.is_some() {
        return Err("archive ends with a long-name record that describes no entry".to_owned());
    }
    Ok(totals)
}

fn describe_kind(kind: tar::EntryType) -> String {
    if kind.is_character_special() {
        "a character device".to_owned()
    } else if kind.is_block_special() {
        "a block device".to_owned()
    } else if kind.is_fifo() {
        "a FIFO".to_owned()
    } else if kind.is_gnu_sparse() {
        "a sparse file".to_owned()
    } else {
        format!("of unknown type {:?}", kind.as_byte() as char)
    }
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn read_pax(data: &[u8], pending: &mut Pending) -> Result<(), String> {
    for record in tar::PaxExtensions::new(data) {
        let record = record.map_err(|e| format!("bad PAX record: {e}"))?;
        match record.key() {
            Ok("path") => pending.path = Some(record.value_bytes().to_owned()),
            Ok("linkpath") => pending.link = Some(record.value_bytes().to_owned()),
            Ok("size") => {
                let size = record
                    .value()
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or("bad PAX record: size is not a number")?;
                pending.size = Some(size);
            }
            Ok(key) if key.starts_with("GNU.sparse.") => {
                return Err(
                    "archive holds a sparse file; a release archive may hold only regular files, directories and links"
                        .to_owned(),
                )
            }
            _ => {}
        }
    }
    Ok(())
}

/// An entry's path as a relative path inside the tree ("" for the root),
/// refusing absolute paths, `..`, control characters and overlong names.
fn relative_path(raw: &[u8]) -> Result<String, String> {
    let text = checked_text(raw, "entry")?;
    if text.starts_with('/') {
        return Err(format!(
            "entry {text:?} has an absolute path; a release archive holds relative paths only"
        ));
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "entry {text:?} climbs out of the release directory with '..'"
                ))
            }
            name if name.len() > MAX_NAME_BYTES => {
                return Err(format!(
                    "entry {text:?} has a name longer than {MAX_NAME_BYTES} bytes"
                ))
            }
            name => parts.push(name),
        }
    }
    Ok(parts.join("/"))
}

fn checked_text<'a>(raw: &'a [u8], what: &str) -> Result<&'a str, String> {
    let lossy = || String::from_utf8_lossy(raw).into_owned();
    let text =
        std::str::from_utf8(raw).map_err(|_| format!("{what} {:?} is not UTF-8", lossy()))?;
    if text.len() > MAX_PATH_BYTES {
        return Err(format!(
            "{what} path is {} bytes long; at most {MAX_PATH_BYTES} are accepted",
            text.len()
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(format!(
            "{what} {text:?} has a control character in its name"
        ));
    }
    Ok(text)
}

/// A symbolic link's target, if it stays inside the tree when read from the
/// link's own directory. (Chains of links are checked once all are in.)
fn symlink_target(path: &str, raw: Option<&[u8]>) -> Result<String, String> {
    let target = checked_text(raw.unwrap_or_default(), "link target")?;
    if target.is_empty() {
        return Err(format!("symbolic link {path:?} has an empty target"));
    }
    if target.starts_with('/') {
        return Err(format!(
            "symbolic link {path:?} points to the absolute path {target:?}, outside the release directory"
        ));
    }
    let mut depth = path.split('/').count() - 1;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." if depth == 0 => {
                return Err(format!(
                    "symbolic link {path:?} points to {target:?}, outside the release directory"
                ))
            }
            ".." => depth -= 1,
            _ => depth += 1,
        }
    }
    Ok(target.to_owned())
}

/// Refuses a path that passes through a symbolic link already unpacked:
/// entries are written only through real directories.
fn not_under_symlink(root: &Path, path: &str) -> Result<(), String> {
    let mut at = root.to_path_buf();
    let parts: Vec<&str> = path.split('/').collect();
    for (n, part) in parts.iter().enumerate().take(parts.len().saturating_sub(1)) {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "entry {path:?} lies under the symbolic link {:?}; entries must be written through directories",
                    parts[..=n].join("/")
                ))
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

fn make_parent(root: &Path, path: &str) -> Result<(), String> {
    not_under_symlink(root, path)?;
    if let Some(parent) = Path::new(path).parent() {
        fs::create_dir_all(root.join(parent))
            .map_err(|e| format!("cannot create the directory of {path:?}: {e}"))?;
    }
    Ok(())
}

fn exists_or(e: io::Error, path: &str, what: &str) -> String {
    if e.kind() == io::ErrorKind::AlreadyExists {
        format!("entry {path:?} appears twice in the archive")
    } else {
        format!("{what} {path:?}: {e}")
    }
}

fn write_file(
    root: &Path,
    path: &str,
    data: &mut impl Read,
    size: u64,
    mode: u32,
) -> Result<(), String> {
    make_parent(root, path)?;
    let mut file = fs::File::create_new(root.join(path))
        .map_err(|e| exists_or(e, path, "cannot create file"))?;
    let written = io::copy(data, &mut file).map_err(|e| format!("cannot unpack {path:?}: {e}"))?;
    if written != size {
        return Err(format!(
            "archive is truncated: {path:?} has {written} of its {size} bytes"
        ));
    }
    let mode = if mode & 0o111 != 0 { 0o555 } else { 0o444 };
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot make {path:?} read-only: {e}"))
}
