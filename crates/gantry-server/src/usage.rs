//! How much CPU and memory an instance uses, read from `/proc` on the host
//! where it runs (no metrics server): the resource rules of the standards
//! judge these readings during a rollout.
//!
//! Instances run in no cgroup of their own (they are plain processes in
//! their own process group), so one instance is its process tree: the
//! process the target started, every process descended from it, and every
//! process still in its process group. CPU is the tree's cumulative user +
//! system time (`/proc/<pid>/stat`, children it reaped included), with the
//! host's monotonic clock (`/proc/uptime`) so that the judge can take the
//! rate between two looks; memory is the sum of `VmRSS` (`/proc/<pid>/status`),
//! which counts a page shared by two processes of the tree twice.
//!
//! Everything read is bounded: a few KiB per file, a cap on the processes
//! scanned and on the size of one tree.

use gantry_core::analysis::resources::InstanceUsage;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::Path;

/// The most `/proc` entries looked at in one reading.
const MAX_PROCESSES: usize = 100_000;
/// The most processes counted in one instance's tree.
const MAX_TREE: usize = 4096;
/// `/proc/<pid>/stat` is one line well under this; `status` and `meminfo` too.
const MAX_FILE: u64 = 16 << 10;

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    ppid: u32,
    pgrp: u32,
    /// utime + stime + cutime + cstime, in clock ticks.
    ticks: u64,
}

/// Reads the usage of each `(instance id, pid)`; an instance whose process
/// is gone says so in `unavailable`.
pub fn read(instances: &[(String, u32)]) -> Vec<InstanceUsage> {
    let host_cpu_cores = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    let host_memory_bytes = mem_total(Path::new("/proc/meminfo")).unwrap_or(0);
    let table = process_table(Path::new("/proc"));
    let taken_at = uptime(Path::new("/proc/uptime"));
    let tick = clock_ticks_per_second();
    instances
        .iter()
        .map(|(id, pid)| {
            let mut u = InstanceUsage {
                instance: id.clone(),
                pid: *pid,
                host_cpu_cores,
                host_memory_bytes,
                ..InstanceUsage::default()
            };
            let Some(taken_at) = taken_at else {
                u.unavailable = Some("cannot read /proc/uptime".to_owned());
                return u;
            };
            if !table.contains_key(pid) {
                u.unavailable = Some(format!("process {pid} is not running"));
                return u;
            }
            let tree = tree(&table, *pid);
            u.processes = tree.len() as u32;
            u.cpu_seconds = tree.iter().map(|p| table[p].ticks).sum::<u64>() as f64 / tick;
            u.memory_bytes = tree
                .iter()
                .filter_map(|p| vm_rss(&Path::new("/proc").join(p.to_string()).join("status")))
                .sum();
            u.taken_at = taken_at;
            u
        })
        .collect()
}

/// The pid, its descendants and its process group, at most [`MAX_TREE`].
fn tree(table: &BTreeMap<u32, Stat>, root: u32) -> BTreeSet<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (pid, s) in table {
        children.entry(s.ppid).or_default().push(*pid);
    }
    let mut found = BTreeSet::from([root]);
    let mut todo = vec![root];
    for (pid, s) in table {
        if s.pgrp == root && found.len() < MAX_TREE && found.insert(*pid) {
            todo.push(*pid);
        }
    }
    while let Some(p) = todo.pop() {
        for c in children.get(&p).into_iter().flatten() {
            if found.len() >= MAX_TREE {
                return found;
            }
            if found.insert(*c) {
                todo.push(*c);
            }
        }
    }
    found
}

/// Every process's stat, by pid.
fn process_table(proc: &Path) -> BTreeMap<u32, Stat> {
    let mut table = BTreeMap::new();
    let Ok(entries) = fs::read_dir(proc) else {
        return table;
    };
    for entry in entries.flatten().take(MAX_PROCESSES) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = read_small(&entry.path().join("stat")).and_then(|s| parse_stat(&s)) {
            table.insert(pid, stat);
        }
    }
    table
}

/// Fields 4, 5 and 14 to 17 of `/proc/<pid>/stat`. The command name (field
/// 2) is in parentheses and may hold spaces and ')': the fields are counted
/// from its last ')'.
fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().take(15).collect();
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some(Stat {
        ppid: u32::try_from(num(1)?).ok()?,
        pgrp: u32::try_from(num(2)?).ok()?,
        ticks: num(11)?
            .saturating_add(num(12)?)
            .saturating_add(num(13)?)
            .saturating_add(num(14)?),
    })
}

/// `VmRSS` of a status file, in bytes (absent for a kernel thread or a zombie).
fn vm_rss(path: &Path) -> Option<u64> {
    kib_field(&read_small(path)?, "VmRSS:")
}

fn mem_total(path: &Path) -> Option<u64> {
    kib_field(&read_small(path)?, "MemTotal:")
}

/// A "Name:   1234 kB" line's value in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Seconds since boot: a clock every process of the host shares.
fn uptime(path: &Path) -> Option<f64> {
    read_small(path)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite())
}

fn clock_ticks_per_second() -> f64 {
    use nix::unistd::{sysconf, SysconfVar};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as f64,
        // USER_HZ, fixed at 100 by the kernel's ABI on every common platform.
        _ => 100.0,
    }
}

/// At most [`MAX_FILE`] bytes of a file, as text.
fn read_small(path: &Path) -> Option<String> {
    let mut buf = Vec::new();
    fs::File::open(path)
        .ok()?
        .take(MAX_FILE)
        .read_to_end(&mut buf)
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 1000 1000000 300 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 1,
                pgrp: 4242,
                ticks: 310
            })
        );
        assert_eq!(parse_stat("12 (short) S 1"), None);
        assert_eq!(
            kib_field("VmPeak:\t 10 kB\nVmRSS:\t  2048 kB\n", "VmRSS:"),
            Some(2 << 20)
        );
    }

    #[test]
    fn a_tree_is_the_descendants_and_the_process_group_bounded() {
        let s = |ppid, pgrp| Stat {
            ppid,
            pgrp,
            ticks: 1,
        };
        // 10 is the instance; 11 its child, 12 a grandchild; 13 left the
        // parentage (reparented to 1) but stayed in the group; 20 is another.
        let table = BTreeMap::from([
            (1, s(0, 1)),
            (10, s(1, 10)),
            (11, s(10, 10)),
            (12, s(11, 12)),
            (13, s(1, 10)),
            (20, s(1, 20)),
        ]);
        assert_eq!(tree(&table, 10), BTreeSet::from([10, 11, 12, 13]));
    }

    #[test]
    fn this_process_reads_its_own_cpu_and_memory() {
        let me = std::process::id();
        // Burn a little CPU so the count moves.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(1);
        }
        assert!(x != 1);
        let got = read(&[("me".into(), me), ("gone".into(), u32::MAX)]);
        assert_eq!(got[0].instance, "me");
        assert!(got[0].unavailable.is_none(), "{got:?}");
        assert!(got[0].cpu_seconds > 0.0, "{got:?}");
        assert!(got[0].memory_bytes > 1 << 20, "{got:?}");
        assert!(got[0].processes >= 1 && got[0].taken_at > 0.0);
        assert!(got[0].host_cpu_cores >= 1.0 && got[0].host_memory_bytes > 1 << 20);
        assert_eq!(
            got[1].unavailable.as_deref(),
            Some(format!("process {} is not running", u32::MAX).as_str())
        );
    }
}
