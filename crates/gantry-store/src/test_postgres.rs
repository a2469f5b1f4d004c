//! A throwaway PostgreSQL server for tests: `initdb` in a temporary
//! directory, listening on a free loopback port with password logins,
//! stopped (and its directory removed) when the last user drops it.
//!
//! The binaries are looked for in `GANTRY_POSTGRES_BIN`, then
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package); without
//! them [`TestPostgres::shared`] returns why, and the caller skips.
//! As root the server runs as the `postgres` user (`initdb` refuses root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// The superuser's name and password on the test server.
pub const USER: &str = "gantry";
pub const PASSWORD: &str = "test-password-8c1f";

pub struct TestPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    run_as: Option<String>,
    next_db: AtomicU32,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestPostgres(127.0.0.1:{})", self.port)
    }
}

static SHARED: Mutex<Weak<TestPostgres>> = Mutex::new(Weak::new());

fn find_bin() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("GANTRY_POSTGRES_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "PostgreSQL is not installed (no /usr/lib/postgresql; apt-get install postgresql, or set GANTRY_POSTGRES_BIN)".to_owned())?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no initdb/pg_ctl under /usr/lib/postgresql/*/bin".to_owned())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(55432)
}

impl TestPostgres {
    /// The server the running tests share, started if none is running.
    /// `Err` says why PostgreSQL tests cannot run here.
    pub fn shared() -> Result<Arc<TestPostgres>, String> {
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pg) = shared.upgrade() {
            return Ok(pg);
        }
        let pg = Arc::new(TestPostgres::start()?);
        *shared = Arc::downgrade(&pg);
        Ok(pg)
    }

    /// A server of its own (for tests that stop or restart it).
    pub fn start() -> Result<TestPostgres, String> {
        let bin = find_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("gantry-pg")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let run_as = is_root.then(|| "postgres".to_owned());
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).map_err(|e| e.to_string())?;
        if let Some(user) = &run_as {
            let out = Command::new("chown")
                .args(["-R", &format!("{user}:")])
                .arg(dir.path())
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "cannot hand {} to the {user} user: {}",
                    dir.path().display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let pg = TestPostgres {
            data: dir.path().join("data"),
            bin,
            port: free_port(),
            run_as,
            next_db: AtomicU32::new(0),
            _dir: dir,
        };
        pg.run(
            "initdb",
            &[
                "-D".as_ref(),
                pg.data.as_os_str(),
                "-U".as_ref(),
                USER.as_ref(),
                "--pwfile".as_ref(),
                pwfile.as_os_str(),
                "--auth=scram-sha-256".as_ref(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
            ],
        )?;
        pg.pg_ctl_start()?;
        Ok(pg)
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(self._dir.path())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            self.port,
            self._dir.path().display()
        );
        let log = self._dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "30".as_ref(),
                "-D".as_ref(),
                self.data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
            ],
        )
    }

    /// Stops the server (fast: connections are cut) and starts it again
    /// on the same port, as an operator's restart would.
    pub fn restart(&self) -> Result<(), String> {
        self.stop()?;
        self.pg_ctl_start()
    }

    fn stop(&self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "20".as_ref(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-D".as_ref(),
                self.data.as_os_str(),
            ],
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The URL of `database` as the superuser, password included.
    pub fn url_of(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// A new, empty database for one test; its URL.
    pub fn fresh_database(&self) -> Result<String, String> {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            self.next_db.fetch_add(1, Ordering::SeqCst)
        );
        let url = self.url_of("postgres");
        // On a thread of its own: the client must not run inside a tokio runtime.
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut admin = postgres::Client::connect(&url, postgres::NoTls)
                    .map_err(|e| format!("cannot reach the test server: {e}"))?;
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .map_err(|e| format!("cannot create database {name}: {e}"))
            })
            .join()
            .unwrap_or_else(|_| Err("creating the database panicked".to_owned()))
        })?;
        Ok(self.url_of(&name))
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping the test PostgreSQL server: {e}");
        }
    }
}
