//! A throw-away PostgreSQL cluster for tests and benchmarks: one per process (test binary),
//! started on first use with Debian's `initdb`/`pg_ctl` in a temporary directory on a loopback
//! port, stopped when the process exits; one fresh database per caller.
//!
//! PostgreSQL refuses to run as root: when the effective user is root, the cluster belongs to
//! the `postgres` user and its commands run through `runuser -u postgres --`.
//!
//! Without PostgreSQL installed, [`database`] returns `None` and tests skip, except under CI
//! (the `CI` variable set), where it panics: `.ci/run` installs it, so a missing server there is
//! a broken CI, not a reason to skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// A running cluster.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
    /// The server's options (`pg_ctl -o`).
    opts: String,
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// Where Debian (or the PATH) has the server binaries.
fn find_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("INCIDENTD_PG_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    if let Some(v) = versions.pop() {
        return Some(v);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl Cluster {
    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {tool}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Initializes and starts a cluster in a new temporary directory. `fsync` off makes tests
    /// faster; benchmarks keep it on (the durability they measure).
    pub fn start(fsync: bool) -> Result<Cluster, String> {
        Self::start_with(fsync, "")
    }

    /// As [`Cluster::start`], with more server options (`-c name=value …`).
    pub fn start_with(fsync: bool, extra: &str) -> Result<Cluster, String> {
        let bin = find_bin().ok_or("PostgreSQL (initdb, pg_ctl) is not installed")?;
        let as_postgres = is_root();
        sweep_stale(&bin, as_postgres);
        let dir = std::env::temp_dir().join(format!(
            "incidentd-pg-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        if as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .map_err(|e| e.to_string())?;
            if !ok.success() {
                return Err(format!("cannot chown {} to postgres", dir.display()));
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let opts = format!(
            "-p {port} -h 127.0.0.1 -k {} -c fsync={} -c max_connections=200 -c shared_buffers=64MB {extra}",
            dir.display(),
            if fsync { "on" } else { "off" }
        );
        let c = Cluster {
            bin,
            dir,
            port,
            as_postgres,
            opts,
        };
        let data = c.data();
        let data = data.to_str().ok_or("temp dir is not UTF-8")?;
        c.run(
            "initdb",
            &[
                "-D",
                data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        c.start_server()?;
        Ok(c)
    }

    fn start_server(&self) -> Result<(), String> {
        let data = self.data();
        let log = self.dir.join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-o",
                &self.opts,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    /// Stops the server as a crash does (`-m immediate`: no checkpoint, shared memory lost; the
    /// next start replays the WAL), then starts it again.
    pub fn crash_and_restart(&self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )?;
        self.start_server()
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of database `name` (which [`Cluster::create_database`] made).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    pub fn create_database(&self, name: &str) -> Result<String, String> {
        let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
            .map_err(|e| e.to_string())?;
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| e.to_string())?;
        Ok(self.url(name))
    }

    /// Stops the server (immediately) and removes its directory.
    pub fn stop(&self) {
        let data = self.data();
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Stops and removes the clusters of processes that are gone (a test binary that aborted cannot
/// stop its own at exit).
fn sweep_stale(bin: &Path, as_postgres: bool) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("incidentd-pg-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let c = Cluster {
            bin: bin.to_path_buf(),
            dir: e.path(),
            port: 0,
            as_postgres,
            opts: String::new(),
        };
        c.stop();
    }
}

extern "C" fn stop_at_exit() {
    if let Some(Some(c)) = CLUSTER.get() {
        c.stop();
    }
}

/// This process's cluster, started on first use (stopped when the process exits).
pub fn cluster() -> Option<&'static Cluster> {
    CLUSTER
        .get_or_init(|| match Cluster::start(false) {
            Ok(c) => {
                // SAFETY: registers a plain function without arguments, called once at exit.
                unsafe {
                    libc::atexit(stop_at_exit);
                }
                Some(c)
            }
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("PostgreSQL is needed for these tests under CI: {e}")
            }
            Err(e) => {
                eprintln!("skipping a PostgreSQL test: {e}");
                None
            }
        })
        .as_ref()
}

/// A new, empty database on this process's cluster: its URL. `None`: no PostgreSQL here (never
/// under CI, where this panics instead).
pub fn database() -> Option<String> {
    let c = cluster()?;
    let n = NEXT_DB.fetch_add(1, Ordering::SeqCst);
    Some(
        c.create_database(&format!("t{}_{n}", std::process::id()))
            .unwrap_or_else(|e| panic!("cannot create a test database: {e}")),
    )
}
