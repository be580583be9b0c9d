//! The `incidentd` command line: a thin layer over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use incidentd::config::Config;
use incidentd::simulate::{self, Format};
use incidentd::telemetry::LogFormat;

/// The bot's allocator (see Cargo.toml): glibc malloc's arena locks cost the writer thread
/// and sled's I/O threads about a quarter of their time under load. The `system-alloc` feature
/// leaves it out, for heap profilers that hook the system allocator (heaptrack; BENCHMARKS.md).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "incidentd",
    version,
    about = "Incident-response chat-ops bot: alerts in, one incident thread per event, triage, approvals, remediation, reports.",
    long_about = None
)]
struct Cli {
    /// Config file (TOML). Without one, the built-in default (config/incidentd.toml) is used.
    #[arg(long, short, global = true, env = "INCIDENTD_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines as text or as JSON (one object a line, for log collectors).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "INCIDENTD_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the bot: webhooks, chat, API (INCIDENTD_LISTEN and INCIDENTD_STORE_PATH override the config).
    Run {
        /// Where the webhooks, the API and the console listen (overrides `[server] listen`
        /// and INCIDENTD_LISTEN).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Check the config and print every problem with its key path; exits 1 if there is any.
    CheckConfig,
    /// Exit 0 if the bot answers `/healthz` (or `/readyz` with --ready) within 5 s: a container
    /// HEALTHCHECK without curl in the image.
    Health {
        /// The bot's base URL (default: http://127.0.0.1:<port of INCIDENTD_LISTEN or 8080>).
        #[arg(long)]
        url: Option<String>,
        /// Ask `/readyz` (takes input) instead of `/healthz` (answers).
        #[arg(long)]
        ready: bool,
    },
    /// Print the post-incident report of an incident as Markdown: from the running bot's API,
    /// or straight from the store when the bot is not running.
    Report {
        /// The incident, e.g. INC-42.
        incident: String,
        /// The bot's base URL (default: http://<server.listen>).
        #[arg(long)]
        url: Option<String>,
    },
    /// Dry run: show the incident, severity, kind, actions and approvers an alert would get.
    /// Touches neither the store nor any chat.
    Simulate {
        /// The alert: an Alertmanager/Grafana/generic JSON payload, or the text of a chat message.
        #[arg(long)]
        alert: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        format: Format,
    },
    /// The store: check its integrity, export everything as JSON lines (a backup), import an
    /// export into a new store. The bot must not be running on the same store.
    Store {
        /// The store directory (default: [store] path of the config, or INCIDENTD_STORE_PATH).
        #[arg(long, global = true)]
        store: Option<PathBuf>,
        #[command(subcommand)]
        command: StoreCmd,
    },
    /// Try it: the bot with a temporary store and the web console, fed with sample alerts
    /// (remediation is simulated). Prints the console's login link; runs until Ctrl-C.
    Demo {
        /// Where the console and the webhooks listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Seconds between sample alerts.
        #[arg(long, default_value_t = 2.0)]
        pace: f64,
    },
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Read every record and report what is missing or unreadable; exits 1 if the store is
    /// damaged, 0 if it is sound.
    Check,
    /// Write everything the store holds as versioned JSON lines (docs/backups.md).
    Export {
        /// Where to write (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Export what is still readable from a damaged store, listing what was left out.
        #[arg(long)]
        salvage: bool,
    },
    /// Read an export into a new, empty store directory; ids continue after the highest the
    /// export's store ever gave out.
    Import {
        /// The export file (`-`: standard input).
        #[arg(long)]
        from: PathBuf,
    },
}

fn load(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("config error{}:", if e.0.len() > 1 { "s" } else { "" });
        for err in &e.0 {
            eprintln!("  {err}");
        }
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    incidentd::process::disable_transparent_huge_pages();
    incidentd::process::return_freed_memory_promptly();
    let cli = Cli::parse();
    match cli.command {
        Cmd::CheckConfig => match load(cli.config.as_deref()) {
            Ok(c) => {
                println!(
                    "config ok: {} kinds, {} rules, {} playbooks, listen {}, store {}",
                    c.classifier.kinds.len(),
                    c.classifier.rules.len(),
                    c.playbooks.len(),
                    c.server.listen,
                    c.store.path.display()
                );
                ExitCode::SUCCESS
            }
            Err(_) => ExitCode::from(1),
        },
        Cmd::Health { url, ready } => health(url, ready),
        Cmd::Report { incident, url } => {
            let cfg = match load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let id: incidentd::domain::incident::IncidentId = match incident.parse() {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            match report(&cfg, id, url) {
                Ok(md) => {
                    print!("{md}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("incidentd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Simulate { alert, format } => {
            let cfg = match load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let bytes = match std::fs::read(&alert) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("cannot read {}: {e}", alert.display());
                    return ExitCode::from(2);
                }
            };
            match simulate::decode(&bytes, format) {
                Ok(alerts) => {
                    print!("{}", simulate::render(&alerts, &cfg));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cannot read the alert: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Store { store, command } => {
            let cfg = match load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let path = store.unwrap_or_else(|| cfg.store.path.clone());
            let result = match &cfg.store.backend {
                incidentd::config::StoreBackend::Sled => {
                    store_command(&path, cfg.store.cache_mb, command)
                }
                incidentd::config::StoreBackend::Postgres { url } => {
                    pg_store_command(url.expose(), command)
                }
            };
            match result {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("incidentd store: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Demo { listen, pace } => {
            let cfg = match load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            incidentd::telemetry::init(cli.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let pace = Duration::from_secs_f64(pace.clamp(0.0, 60.0));
            match rt.block_on(incidentd::demo::run(
                cfg,
                listen,
                pace,
                incidentd::app::shutdown_signal(),
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("incidentd demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Run { listen } => {
            let mut cfg = match load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Some(listen) = listen {
                cfg.server.listen = listen;
            }
            incidentd::telemetry::init(cli.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let result = rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(cfg.server.listen)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.server.listen))?;
                let deps = incidentd::app::Deps::from_config(&cfg)?;
                incidentd::app::run(cfg, listener, deps, incidentd::app::shutdown_signal()).await
            });
            // Blocking calls stuck on a failed disk must not keep the process alive after a
            // SIGTERM: dropping the runtime would wait for them forever.
            rt.shutdown_timeout(Duration::from_secs(1));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("incidentd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn health(url: Option<String>, ready: bool) -> ExitCode {
    let base = url.unwrap_or_else(|| {
        let port = std::env::var("INCIDENTD_LISTEN")
            .ok()
            .and_then(|l| l.parse::<SocketAddr>().ok())
            .map_or(8080, |a| a.port());
        format!("http://127.0.0.1:{port}")
    });
    let path = if ready { "/readyz" } else { "/healthz" };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("incidentd health: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{base}{path}"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
    });
    match r {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("{base}{path} answered {}", r.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{base}{path}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// From the API if the bot answers, else from the store (sled allows one process at a time).
fn report(
    cfg: &Config,
    id: incidentd::domain::incident::IncidentId,
    url: Option<String>,
) -> anyhow::Result<String> {
    let base = url.unwrap_or_else(|| format!("http://{}", cfg.server.listen));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let from_api = rt.block_on(async {
        let r = reqwest::Client::new()
            .get(format!("{base}/api/v1/incidents/{id}/report.md"))
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await?;
        let status = r.status();
        let body = r.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    });
    match from_api {
        Ok((status, body)) if status.is_success() => Ok(body),
        Ok((status, body)) => anyhow::bail!("{base} answered {status}: {body}"),
        Err(e) if e.is_connect() => {
            use incidentd::ports::Store;
            let store =
                match incidentd::store::SledStore::open_with_cache(&cfg.store.path, cfg.store.cache_mb) {
                    Ok(s) => s,
                    // sled's words for a store another process holds.
                    Err(e) if e.to_string().contains("could not acquire lock") => anyhow::bail!(
                        "no bot answered at {base}, and the store at {} is locked: another \
                         incidentd (the running bot?) has it open.\n\
                         Ask the running bot instead: incidentd report {id} --url http://127.0.0.1:8080 \
                         (its server.listen address)",
                        cfg.store.path.display()
                    ),
                    Err(e) => return Err(e.into()),
                };
            let inc = store.get_incident(id)?.ok_or_else(|| {
                anyhow::anyhow!("{id} does not exist in {}", cfg.store.path.display())
            })?;
            let timeline = store.timeline(id)?;
            Ok(incidentd::domain::report::render_markdown(
                &inc,
                &timeline,
                &cfg.classifier,
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// `incidentd store …` with `[store] backend = "postgres"`: the database the URL names.
/// `store export`: to a file (written aside, synced, then renamed into place, so a partial
/// export never has the final name) or to standard output; says what it exported.
fn export_to(
    store: &dyn incidentd::store::export::Portable,
    out: Option<&std::path::Path>,
    salvage: bool,
) -> anyhow::Result<incidentd::store::export::Summary> {
    use std::io::Write;
    let sum = match out {
        Some(file) => {
            let tmp = file.with_extension("partial");
            let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            let sum = incidentd::store::export::export(store, &mut w, salvage)?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, file)?;
            sum
        }
        None => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            let sum = incidentd::store::export::export(store, &mut w, salvage)?;
            w.flush()?;
            sum
        }
    };
    eprintln!(
        "exported {} incidents ({} records); next id INC-{}",
        sum.incidents, sum.records, sum.next_id
    );
    Ok(sum)
}

fn pg_store_command(url: &str, cmd: StoreCmd) -> anyhow::Result<ExitCode> {
    use incidentd::store::{export, pg::PgStore};
    let store = PgStore::open(url, None)?;
    match cmd {
        StoreCmd::Check => {
            let r = export::check_portable(&store)?;
            if r.problems.is_empty() {
                println!(
                    "store ok: {} incidents, {} timeline events, next id INC-{} (PostgreSQL)",
                    r.incidents, r.events, r.next_id
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!("store DAMAGED (PostgreSQL):");
                for p in &r.problems {
                    println!("  {p}");
                }
                Ok(ExitCode::from(1))
            }
        }
        StoreCmd::Export { out, salvage } => {
            export_to(&store, out.as_deref(), salvage)?;
            Ok(ExitCode::SUCCESS)
        }
        StoreCmd::Import { from } => {
            let sum = if from.as_os_str() == "-" {
                export::import(&store, &mut std::io::stdin().lock())?
            } else {
                let f = std::fs::File::open(&from)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", from.display()))?;
                export::import(&store, &mut std::io::BufReader::new(f))?
            };
            eprintln!(
                "imported {} incidents ({} records) into PostgreSQL; next id INC-{}",
                sum.incidents, sum.records, sum.next_id
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `incidentd store …`.
fn store_command(path: &std::path::Path, cache_mb: u64, cmd: StoreCmd) -> anyhow::Result<ExitCode> {
    use incidentd::store::{export, SledStore};
    match cmd {
        StoreCmd::Check => {
            if !path.exists() {
                anyhow::bail!("{} does not exist", path.display());
            }
            let r = export::check(path, cache_mb)?;
            if r.problems.is_empty() {
                println!(
                    "store ok: {} incidents, {} timeline events, next id INC-{} ({})",
                    r.incidents,
                    r.events,
                    r.next_id,
                    path.display()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!("store DAMAGED ({}):", path.display());
                for p in &r.problems {
                    println!("  {p}");
                }
                println!("{}", incidentd::store::RECOVERY_HINT);
                Ok(ExitCode::from(1))
            }
        }
        StoreCmd::Export { out, salvage } => {
            let store = if salvage {
                SledStore::open_unchecked(path, cache_mb)?
            } else {
                SledStore::open_with_cache(path, cache_mb)?
            };
            let sum = export_to(&store, out.as_deref(), salvage)?;
            for s in &sum.skipped {
                eprintln!("  left out (unreadable): {s}");
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCmd::Import { from } => {
            if path.exists() && std::fs::read_dir(path)?.next().is_some() {
                anyhow::bail!(
                    "{} is not empty: import into a new directory (set [store] path or --store)",
                    path.display()
                );
            }
            let store = SledStore::open_with_cache(path, cache_mb)?;
            let sum = if from.as_os_str() == "-" {
                export::import(&store, &mut std::io::stdin().lock())?
            } else {
                let f = std::fs::File::open(&from)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", from.display()))?;
                export::import(&store, &mut std::io::BufReader::new(f))?
            };
            eprintln!(
                "imported {} incidents ({} records) into {}; next id INC-{}",
                sum.incidents,
                sum.records,
                path.display(),
                sum.next_id
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
