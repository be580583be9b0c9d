//! The `incidentd` binary as a user runs it: its help, and `report` when another process (the
//! running bot) holds the store.

use std::process::{Command, Output};

fn incidentd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_incidentd"))
        .args(args)
        .env_remove("INCIDENTD_CONFIG")
        .env_remove("INCIDENTD_LISTEN")
        .env_remove("INCIDENTD_STORE_PATH")
        .output()
        .expect("the binary runs")
}

/// The line of `help` that lists `command`.
fn help_line<'a>(help: &'a str, command: &str) -> &'a str {
    help.lines()
        .find(|l| l.split_whitespace().next() == Some(command))
        .unwrap_or_else(|| panic!("no {command} in {help}"))
}

#[test]
fn help_describes_each_command() {
    let out = incidentd(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let report = help_line(&help, "report");
    assert!(report.contains("post-incident report"), "{report}");
    let simulate = help_line(&help, "simulate");
    assert!(simulate.contains("Dry run"), "{simulate}");
    assert!(!report.contains("Dry run"), "{report}");

    let out = incidentd(&["report", "--help"]);
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("--url <URL>"), "{help}");
}

#[test]
fn report_on_a_locked_store_says_so_and_suggests_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Nothing listens here: the report has to come from the store, which the "bot" holds.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("incidentd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[store]\npath = {:?}\n",
            store.display().to_string()
        ),
    )
    .unwrap();
    let _bot = incidentd::store::SledStore::open(&store).unwrap();
    let out = incidentd(&["report", "INC-4", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("is locked"), "{err}");
    assert!(err.contains(&store.display().to_string()), "{err}");
    assert!(err.contains("--url http://127.0.0.1:8080"), "{err}");
}
