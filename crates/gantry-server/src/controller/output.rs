//! Instance output: the standards' "alert on ERROR" during a rollout, and
//! the output's retention (30 days after an instance is gone, a size cap
//! while it runs).
//!
//! While a deployment is in flight, each of its new instances' output is
//! read from where the last look stopped; lines at ERROR level are
//! counted and reported to the deployment as `Event::ErrorsLogged` (into
//! its log, and the `errors_logged` notice): the first at once, then at
//! most one report per instance a minute with the count since.

use super::{now_ms, ControlError, Controller};
use gantry_api::{LogLine, LogPage, LogsQuery};
use gantry_core::{Deployment, DeploymentKind, Event, Millis};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// How often new output is read.
const LOOK_EVERY: Duration = Duration::from_secs(2);
/// How often the retention runs.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// At most one report per instance this often.
const REPORT_EVERY_MS: Millis = 60_000;
/// The most of an instance's output read per look.
const READ_AT_MOST: u64 = 1 << 20;
/// The longest cursor accepted back.
const MAX_CURSOR: usize = 8 * 1024;
/// The most instances one page reads.
const MAX_INSTANCES: usize = 64;

/// `path` from `offset` on (at most `max`; `None`: its last `max` bytes),
/// and the offset after what was read. A file now shorter than `offset`
/// (rotated, trimmed) is read from its start.
fn read_from(
    path: &std::path::Path,
    offset: Option<u64>,
    max: u64,
) -> std::io::Result<(Vec<u8>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let from = match offset {
        Some(o) if o > len => 0,
        Some(o) => o,
        None => len.saturating_sub(max),
    };
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    let next = from + buf.len() as u64;
    Ok((buf, next))
}

/// The whole lines of `chunk` (read up to offset `next`) and the offset
/// after the last of them; a tail read (`tailed`) that began inside the
/// file drops its first, likely partial, line.
fn whole_lines(chunk: &[u8], next: u64, tailed: bool) -> (Vec<String>, u64) {
    let Some(end) = chunk.iter().rposition(|b| *b == b'\n') else {
        return (Vec::new(), next - chunk.len() as u64);
    };
    let unfinished = (chunk.len() - end - 1) as u64;
    let mut text = &chunk[..end];
    // Read from inside the file: its first line is likely cut.
    if tailed && next > chunk.len() as u64 {
        if let Some(first) = text.iter().position(|b| *b == b'\n') {
            text = &text[first + 1..];
        }
    }
    let lines = String::from_utf8_lossy(text)
        .lines()
        .map(str::to_owned)
        .collect();
    (lines, next - unfinished)
}

/// How much of the first ERROR line a report quotes.
const QUOTE_CHARS: usize = 300;

/// Where the look at one instance's output stands.
#[derive(Debug, Default)]
struct Watched {
    offset: u64,
    /// Errors counted since the last report, and the first of them.
    pending: u64,
    first: Option<String>,
    last_report: Option<Millis>,
    /// An unfinished last line, kept for the next read.
    partial: Vec<u8>,
}

/// Whether a line of output is at ERROR level: a word `ERROR` (the usual
/// text formats), or a JSON `"level":"error"` in any case.
pub fn is_error_line(line: &str) -> bool {
    if line
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w == "ERROR")
    {
        return true;
    }
    let compact: String = line
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    compact.contains("\"level\":\"error\"") || compact.contains("\"severity\":\"error\"")
}

impl Controller {
    /// Starts the output watch and the output retention (leader's tasks).
    pub fn spawn_output_watch(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        self.spawn_led(async move {
            let mut watched: HashMap<String, Watched> = HashMap::new();
            let mut since_prune = PRUNE_EVERY;
            loop {
                tokio::time::sleep(LOOK_EVERY).await;
                let Some(c) = this.upgrade() else { return };
                if c.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                c.look_for_errors(&mut watched).await;
                since_prune += LOOK_EVERY;
                if since_prune >= PRUNE_EVERY {
                    since_prune = Duration::ZERO;
                    let r = &c.config.retention;
                    let done = c
                        .target
                        .prune_output(
                            Duration::from_millis(r.instance_output_ms),
                            r.instance_output_bytes,
                        )
                        .await;
                    if done.removed + done.trimmed > 0 {
                        tracing::info!(
                            removed = done.removed,
                            trimmed = done.trimmed,
                            "instance output past its retention pruned"
                        );
                    }
                }
            }
        });
    }

    async fn look_for_errors(&self, watched: &mut HashMap<String, Watched>) {
        let active: Vec<Deployment> = match self.store.active_deployments() {
            Ok(a) => a,
            Err(_) => return,
        };
        let mut live: Vec<String> = Vec::new();
        for d in active.iter().filter(|d| d.kind == DeploymentKind::Deploy) {
            for i in &d.new_instances {
                live.push(i.id.clone());
                let w = watched.entry(i.id.clone()).or_default();
                let Ok((bytes, next)) = self
                    .target
                    .output_since(&i.id, Some(w.offset), READ_AT_MOST)
                    .await
                else {
                    continue;
                };
                if next < w.offset {
                    w.partial.clear();
                }
                w.offset = next;
                w.partial.extend_from_slice(&bytes);
                let Some(end) = w.partial.iter().rposition(|b| *b == b'\n') else {
                    continue;
                };
                let complete: Vec<u8> = w.partial.drain(..=end).collect();
                for line in String::from_utf8_lossy(&complete).lines() {
                    if is_error_line(line) {
                        w.pending += 1;
                        if w.first.is_none() {
                            w.first = Some(line.trim().chars().take(QUOTE_CHARS).collect());
                        }
                    }
                }
                // A line without an end is kept only so long.
                if w.partial.len() > 64 * 1024 {
                    w.partial.clear();
                }
                let now = now_ms();
                let due = w.last_report.is_none_or(|at| now - at >= REPORT_EVERY_MS);
                if w.pending > 0 && due {
                    let event = Event::ErrorsLogged {
                        instance: i.id.clone(),
                        lines: w.pending,
                        first: w.first.take().unwrap_or_default(),
                    };
                    w.pending = 0;
                    w.last_report = Some(now);
                    self.send_event(d.id, event);
                }
            }
        }
        // Forget instances no longer in any rollout.
        watched.retain(|id, _| live.contains(id));
    }

    /// `GET /logs`: a page of instance output or of an access log.
    pub async fn logs(&self, q: &LogsQuery) -> Result<LogPage, ControlError> {
        let bytes = q.bytes.unwrap_or(8 * 1024).clamp(1, READ_AT_MOST);
        let mut cursor: BTreeMap<String, u64> = match &q.cursor {
            Some(c) if c.len() > MAX_CURSOR => {
                return Err(ControlError::Invalid(format!(
                    "cursor: {} characters; at most {MAX_CURSOR}",
                    c.len()
                )))
            }
            Some(c) => serde_json::from_str(c).map_err(|_| {
                ControlError::Invalid(
                    "cursor: not one this API gave (pass back the previous page's cursor as it came)"
                        .to_owned(),
                )
            })?,
            None => BTreeMap::new(),
        };
        let mut lines = Vec::new();
        if q.access {
            let env = self.env(q.env.as_deref().ok_or_else(|| {
                ControlError::Invalid("env: the access log is an environment's; name it".to_owned())
            })?)?;
            if !env.hosts.is_empty() {
                return Err(ControlError::Invalid(format!(
                    "env: {} runs on fleet hosts; its access logs are on each host (routers/{}/access.log in the host's data directory)",
                    env.name, env.name
                )));
            }
            let path = self
                .data_dir()
                .join("routers")
                .join(env.name.as_str())
                .join(gantry_router::access_log::ACCESS_LOG);
            let start = match (cursor.get("access"), q.since) {
                (Some(o), _) => Some(*o),
                // From a time: the whole current file, filtered.
                (None, Some(_)) => Some(0),
                (None, None) => None,
            };
            let (chunk, next) = tokio::task::spawn_blocking(move || {
                read_from(
                    &path,
                    start,
                    if start.is_some() { READ_AT_MOST } else { bytes },
                )
            })
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?
            .map_err(|e| ControlError::NotFound(format!("no access log for {}: {e}", env.name)))?;
            let (complete, next) = whole_lines(&chunk, next, start.is_none());
            cursor.insert("access".to_owned(), next);
            for text in complete {
                let parsed: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                let release = parsed["release"].as_str().map(str::to_owned);
                let at = parsed["time"]
                    .as_str()
                    .and_then(|t| gantry_core::time::parse_rfc3339(t).ok());
                if q.release
                    .as_ref()
                    .is_some_and(|r| release.as_ref() != Some(r))
                    || q.since.is_some_and(|s| at.is_none_or(|at| at < s))
                {
                    continue;
                }
                lines.push(LogLine {
                    instance: None,
                    release,
                    at,
                    text,
                });
            }
        } else {
            if q.env.is_none() && q.instance.is_none() {
                return Err(ControlError::Invalid(
                    "env: name the environment (or an instance)".to_owned(),
                ));
            }
            if let Some(env) = &q.env {
                self.env(env)?;
            }
            let running = self.target.running().await;
            // One named instance, running or not (a crashed canary's output
            // is what one wants to read); else the running ones chosen.
            let chosen: Vec<(String, Option<String>)> = match &q.instance {
                Some(i) => vec![(
                    i.clone(),
                    running
                        .iter()
                        .find(|r| &r.id == i)
                        .map(|r| r.version.clone()),
                )],
                None => running
                    .iter()
                    .filter(|r| q.env.as_ref().is_none_or(|e| &r.env == e))
                    .filter(|r| q.release.as_ref().is_none_or(|v| &r.version == v))
                    .take(MAX_INSTANCES)
                    .map(|r| (r.id.clone(), Some(r.version.clone())))
                    .collect(),
            };
            for (id, release) in chosen {
                let start = cursor.get(&id).copied();
                let read = self
                    .target
                    .output_since(
                        &id,
                        start,
                        if start.is_some() { READ_AT_MOST } else { bytes },
                    )
                    .await;
                let (chunk, next) = match read {
                    Ok(read) => read,
                    Err(e) if q.instance.is_some() => {
                        return Err(ControlError::NotFound(e.to_string()))
                    }
                    Err(_) => continue,
                };
                let (complete, next) = whole_lines(&chunk, next, start.is_none());
                cursor.insert(id.clone(), next);
                lines.extend(complete.into_iter().map(|text| LogLine {
                    instance: Some(id.clone()),
                    release: release.clone(),
                    at: None,
                    text,
                }));
            }
        }
        Ok(LogPage {
            lines,
            cursor: serde_json::to_string(&cursor).unwrap_or_default(),
        })
    }

    /// Hands `event` to the loop driving deployment `id`, if it is driven here.
    fn send_event(&self, id: gantry_core::DeploymentId, event: Event) {
        let inboxes = self.inboxes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = inboxes.get(&id) {
            let _ = tx.send(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_error_line;

    #[test]
    fn error_lines_are_told_by_their_level_in_text_or_json() {
        for line in [
            "2026-11-24T10:00:00Z ERROR payment failed",
            "[ERROR] db: connection refused",
            r#"{"level":"error","msg":"boom"}"#,
            r#"{"time": 1, "level": "ERROR", "msg": "boom"}"#,
            r#"{"severity":"error"}"#,
        ] {
            assert!(is_error_line(line), "{line}");
        }
        for line in [
            "INFO request served",
            "error rate is 0.1%", // a word, not a level
            "ERRORS=0",
            "TERROR",
            r#"{"level":"info","msg":"no error here"}"#,
        ] {
            assert!(!is_error_line(line), "{line}");
        }
    }
}
