//! The access log: one JSON line per answered (or failed) request, in the
//! router's state directory, rotated by size and by day, pruned by age and
//! by total size (the standards keep access logs 90 days).
//!
//! The workers never touch the file: each hands a small record to a
//! bounded channel and goes on; one writer thread formats, buffers and
//! rotates. When the writer falls behind, records are dropped and counted
//! (the count is logged), so a slow disk never slows user traffic.

use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The file being written; rotated ones are `access-<UTC time>.log`.
pub const ACCESS_LOG: &str = "access.log";
/// Records waiting for the writer before new ones are dropped.
const QUEUE: usize = 65_536;
/// The longest path kept in a line.
const MAX_PATH: usize = 2048;
/// How often the writer flushes when traffic is light.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How much of the access log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessLogSettings {
    /// Rotated files older than this are deleted.
    pub keep: Duration,
    /// The most all of them may take together; the oldest go first.
    pub max_bytes: u64,
    /// The current file is rotated at this size (and at each UTC day).
    pub rotate_bytes: u64,
}

impl AccessLogSettings {
    /// The standards' 90 days, at most 1 GiB.
    pub const STANDARD: AccessLogSettings = AccessLogSettings {
        keep: Duration::from_secs(90 * 86_400),
        max_bytes: 1 << 30,
        rotate_bytes: 64 << 20,
    };
}

/// One request, as a worker hands it over.
pub struct AccessRecord {
    pub at: SystemTime,
    /// The pool's name: the release's version.
    pub release: Arc<str>,
    /// `stable` or `canary` when two pools serve, else `all`.
    pub pool: &'static str,
    pub method: hyper::Method,
    pub path: String,
    /// 0 when no upstream answered (the client got a 502).
    pub status: u16,
    pub duration_us: u64,
    pub upstream: SocketAddr,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    time: String,
    release: &'a str,
    pool: &'a str,
    method: &'a str,
    path: &'a str,
    status: u16,
    duration_ms: f64,
    upstream: String,
}

/// The workers' end.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<AccessRecord>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer thread for `dir/access.log`.
    pub fn start(dir: &Path, settings: AccessLogSettings) -> io::Result<AccessLog> {
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer::open(dir, settings)?;
        writer.prune();
        let counted = dropped.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run(rx, counted))?;
        Ok(AccessLog { tx, dropped })
    }

    /// Hands `record` to the writer, or drops it when the writer is behind.
    pub fn record(&self, mut record: AccessRecord) {
        if record.path.len() > MAX_PATH {
            let mut end = MAX_PATH;
            while !record.path.is_char_boundary(end) {
                end -= 1;
            }
            record.path.truncate(end);
        }
        if let Err(TrySendError::Full(_)) = self.tx.try_send(record) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Writer {
    dir: PathBuf,
    settings: AccessLogSettings,
    out: io::BufWriter<fs::File>,
    /// Bytes in the current file.
    size: u64,
    /// The UTC day the current file began on.
    day: u64,
}

fn day_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 86_400
}

impl Writer {
    fn open(dir: &Path, settings: AccessLogSettings) -> io::Result<Writer> {
        fs::create_dir_all(dir)?;
        let path = dir.join(ACCESS_LOG);
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let meta = file.metadata()?;
        let began = meta.modified().unwrap_or_else(|_| SystemTime::now());
        Ok(Writer {
            dir: dir.to_owned(),
            settings,
            out: io::BufWriter::with_capacity(64 * 1024, file),
            size: meta.len(),
            day: if meta.len() == 0 {
                day_of(SystemTime::now())
            } else {
                day_of(began)
            },
        })
    }

    fn run(mut self, rx: Receiver<AccessRecord>, dropped: Arc<AtomicU64>) {
        loop {
            match rx.recv_timeout(FLUSH_EVERY) {
                Ok(record) => {
                    if let Err(e) = self.write(&record) {
                        tracing::warn!(error = %e, "cannot write the access log");
                    }
                    // Drain what is queued before flushing.
                    while let Ok(record) = rx.try_recv() {
                        if let Err(e) = self.write(&record) {
                            tracing::warn!(error = %e, "cannot write the access log");
                        }
                    }
                    let _ = self.out.flush();
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.out.flush();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.out.flush();
                    return;
                }
            }
            let lost = dropped.swap(0, Ordering::Relaxed);
            if lost > 0 {
                tracing::warn!(lost, "access log behind: lines dropped");
            }
        }
    }

    fn write(&mut self, r: &AccessRecord) -> io::Result<()> {
        if day_of(r.at) != self.day || self.size >= self.settings.rotate_bytes {
            self.rotate(r.at)?;
        }
        let line = Line {
            time: humantime::format_rfc3339_millis(r.at).to_string(),
            release: &r.release,
            pool: r.pool,
            method: r.method.as_str(),
            path: &r.path,
            status: r.status,
            duration_ms: (r.duration_us as f64 / 1000.0 * 1000.0).round() / 1000.0,
            upstream: r.upstream.to_string(),
        };
        let mut bytes = serde_json::to_vec(&line).map_err(io::Error::other)?;
        bytes.push(b'\n');
        self.out.write_all(&bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Moves the current file aside (named by `now`) and starts a new one.
    fn rotate(&mut self, now: SystemTime) -> io::Result<()> {
        self.out.flush()?;
        if self.size > 0 {
            let stamp = humantime::format_rfc3339_millis(now)
                .to_string()
                .replace([':', '-'], "")
                .replace('.', "-");
            fs::rename(
                self.dir.join(ACCESS_LOG),
                self.dir.join(format!("access-{stamp}.log")),
            )?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(ACCESS_LOG))?;
        self.out = io::BufWriter::with_capacity(64 * 1024, file);
        self.size = 0;
        self.day = day_of(now);
        self.prune();
        Ok(())
    }

    /// Deletes rotated files past `keep`, then the oldest while all of them
    /// (the current one included) exceed `max_bytes`.
    fn prune(&self) {
        let deleted = prune(&self.dir, self.settings, SystemTime::now());
        if deleted > 0 {
            tracing::info!(deleted, "old access logs deleted");
        }
    }
}

/// The rotated access logs of `dir`, oldest first, with their size and age.
fn rotated(dir: &Path) -> Vec<(PathBuf, u64, SystemTime)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, u64, SystemTime)> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("access-") && name.ends_with(".log")
        })
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.len(), meta.modified().ok()?))
        })
        .collect();
    // The names sort by time; the modification time breaks no ties.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Applies `settings` to the rotated logs of `dir` at `now`; returns how
/// many were deleted.
pub fn prune(dir: &Path, settings: AccessLogSettings, now: SystemTime) -> usize {
    let current = fs::metadata(dir.join(ACCESS_LOG)).map_or(0, |m| m.len());
    let files = rotated(dir);
    let mut total: u64 = current + files.iter().map(|f| f.1).sum::<u64>();
    let mut deleted = 0;
    for (path, size, modified) in files {
        let too_old = now
            .duration_since(modified)
            .is_ok_and(|age| age > settings.keep);
        if (too_old || total > settings.max_bytes) && fs::remove_file(&path).is_ok() {
            deleted += 1;
            total -= size;
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at: SystemTime, path: &str) -> AccessRecord {
        AccessRecord {
            at,
            release: Arc::from("1.2.0"),
            pool: "canary",
            method: hyper::Method::POST,
            path: path.to_owned(),
            status: 503,
            duration_us: 1_234,
            upstream: "127.0.0.1:9001".parse().unwrap(),
        }
    }

    fn lines(dir: &Path) -> Vec<serde_json::Value> {
        fs::read_to_string(dir.join(ACCESS_LOG))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn each_request_is_one_json_line_with_the_standards_fields() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path(), AccessLogSettings::STANDARD).unwrap();
        let at = UNIX_EPOCH + Duration::from_millis(1_790_000_000_123);
        w.write(&record(at, "/pay?x=\"1\"\n")).unwrap();
        w.out.flush().unwrap();
        let l = &lines(dir.path())[0];
        assert_eq!(l["time"], "2026-09-21T14:13:20.123Z");
        assert_eq!(
            (
                l["release"].as_str(),
                l["pool"].as_str(),
                l["method"].as_str()
            ),
            (Some("1.2.0"), Some("canary"), Some("POST"))
        );
        assert_eq!(l["path"], "/pay?x=\"1\"\n", "escaped, one line");
        assert_eq!(
            (l["status"].as_u64(), l["duration_ms"].as_f64()),
            (Some(503), Some(1.234))
        );
        assert_eq!(l["upstream"], "127.0.0.1:9001");
    }

    #[test]
    fn the_log_rotates_at_its_size_and_at_midnight_and_old_or_excess_files_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let settings = AccessLogSettings {
            keep: Duration::from_secs(90 * 86_400),
            max_bytes: 10_000,
            rotate_bytes: 1_000,
        };
        let mut w = Writer::open(dir.path(), settings).unwrap();
        let day = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400);
        for n in 0..40 {
            w.write(&record(day + Duration::from_secs(n), "/x"))
                .unwrap();
        }
        // A new UTC day starts a new file however small the current one.
        w.write(&record(day + Duration::from_secs(86_400), "/next-day"))
            .unwrap();
        w.out.flush().unwrap();
        let files = rotated(dir.path());
        assert!(files.len() >= 5, "rotated at 1000 bytes: {files:?}");
        assert!(files.iter().all(|f| f.1 < 1_200), "{files:?}");
        assert_eq!(lines(dir.path()).len(), 1, "the new day's file");
        // Over the size cap the oldest go first; past `keep`, all rotated go.
        let tight = AccessLogSettings {
            max_bytes: 2_500,
            ..settings
        };
        let before = rotated(dir.path());
        assert!(prune(dir.path(), tight, SystemTime::now()) > 0);
        let after = rotated(dir.path());
        assert_eq!(after.last(), before.last(), "the newest kept");
        assert!(after.iter().map(|f| f.1).sum::<u64>() <= 2_500);
        let later = SystemTime::now() + Duration::from_secs(91 * 86_400);
        prune(dir.path(), settings, later);
        assert!(rotated(dir.path()).is_empty());
        assert!(
            dir.path().join(ACCESS_LOG).exists(),
            "the current file stays"
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _rx) = sync_channel(1);
        let log = AccessLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        let long = "/".repeat(5_000);
        log.record(record(SystemTime::now(), &long));
        log.record(record(SystemTime::now(), "/b"));
        log.record(record(SystemTime::now(), "/c"));
        assert_eq!(log.dropped.load(Ordering::Relaxed), 2);
    }
}
