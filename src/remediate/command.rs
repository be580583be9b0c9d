//! The command executor: runs one argv as a child process — directly, never through a shell, so
//! templated values are plain arguments and shell syntax in them means nothing.
//!
//! The child gets a minimal environment (only `PATH`, `HOME`, `LANG`, `KUBECONFIG` are passed on),
//! so the bot's own tokens in its environment never reach a playbook command; stdin is closed.
//! stdout and stderr are read concurrently (a child that fills one pipe while we wait on the
//! other would otherwise hang), each kept to its last 16 KiB and redacted.
//!
//! The child runs in a process group of its own. On timeout the whole group is killed (SIGKILL:
//! the command and anything it started, `sh -c 'sleep 3600 & wait'` included) and the child is
//! reaped; cancelling the execution (dropping the future, e.g. on shutdown) kills the group too.
//! A command that timed out is a failure, never retried: it may have done its work. Only a
//! command that could not be started is tried again.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{redact, Attempt, RunOutput, Tail};

/// The only variables of our environment a command sees.
pub const PASSED_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "KUBECONFIG"];

/// Runs `argv` once with `timeout`. Only a spawn failure is transient (worth a retry: nothing
/// ran); a timeout or a non-zero exit is an answer and is not.
pub(crate) async fn run(argv: &[String], timeout: Duration, secrets: &[&str]) -> Attempt {
    let Some((program, args)) = argv.split_first() else {
        return Attempt::failed("the command is empty".into(), false);
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own group (pgid = its pid), so the group can be killed without touching ours.
        .process_group(0);
    for name in PASSED_ENV {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let error = redact(&format!("could not start {program}: {e}"), secrets);
            return Attempt::failed(error, true);
        }
    };

    let mut group = Group(child.id());

    let mut out = Tail::new(secrets);
    let mut err = Tail::new(secrets);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // The buffers are borrowed, not moved, into the timed future: when the deadline drops it,
    // whatever was read so far is still ours to report.
    let finished = tokio::time::timeout(timeout, async {
        let (status, (), ()) =
            tokio::join!(child.wait(), pump(stdout, &mut out), pump(stderr, &mut err));
        status
    })
    .await;

    let (status, error) = match finished {
        Ok(Ok(status)) => {
            // It ended and its output closed: what it left running (a daemon it meant to start)
            // is its business, and once reaped its pid may be reused, so the group is not
            // signalled after this.
            group.0 = None;
            (Some(status), failure(status))
        }
        Ok(Err(e)) => {
            group.kill();
            kill(&mut child).await;
            (None, Some(format!("waiting for {program} failed: {e}")))
        }
        Err(_elapsed) => match child.try_wait() {
            // It exited, but something it started still holds its stdout/stderr open. The
            // command ran to its end, so running it again is not what a retry is for.
            Ok(Some(status)) => {
                // Reaped already, but the group lives on in what holds the pipes (a pgid is not
                // reused while its group has members): kill what it left behind.
                group.kill();
                let why = failure(status).unwrap_or_else(|| "exited with code 0".into());
                let error = format!(
                    "{why}, but its output stayed open past the {} s timeout \
                     (a background process it started?)",
                    timeout.as_secs()
                );
                (Some(status), Some(error))
            }
            _ => {
                group.kill();
                kill(&mut child).await;
                let error = format!("timed out after {} s; killed", timeout.as_secs());
                (None, Some(error))
            }
        },
    };
    let success = error.is_none();
    Attempt {
        output: RunOutput {
            success,
            exit_code: status.and_then(|s| s.code()),
            http_status: None,
            stdout: out.finish(secrets),
            stderr: err.finish(secrets),
            duration_ms: 0,
            attempts: 1,
            error: error.map(|e| redact(&e, secrets)),
        },
        transient: false,
    }
}

/// The child's process group, killed when this is dropped (a cancelled execution) or on
/// [`Group::kill`]; `None` once there is nothing to kill.
struct Group(Option<u32>);

impl Group {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: kill(2) with a negative pid signals the group; it touches no memory.
            // The group is the child's own (process_group(0)), never ours.
            let r = unsafe { libc::kill(-(pgid as libc::pid_t), libc::SIGKILL) };
            if r != 0 {
                tracing::debug!(
                    pgid,
                    "Killing a remediation command's group failed (already gone?)."
                );
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Why an exit status is a failure, or `None` for success.
fn failure(status: ExitStatus) -> Option<String> {
    if status.success() {
        return None;
    }
    if let Some(code) = status.code() {
        return Some(format!("exited with code {code}"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return Some(format!("killed by signal {signal}"));
        }
    }
    Some(format!("failed ({status})"))
}

/// Kills and reaps the child. A failure here means it is already gone.
async fn kill(child: &mut tokio::process::Child) {
    if let Err(e) = child.kill().await {
        tracing::debug!(error = %e, "Killing a remediation command failed (already exited?).");
    }
}

/// Reads a pipe to its end into `tail`. A read error ends the stream like EOF: the output is
/// diagnostic, and the exit status is what decides success.
async fn pump<R: AsyncRead + Unpin>(pipe: Option<R>, tail: &mut Tail) {
    let Some(mut pipe) = pipe else { return };
    let mut buf = vec![0u8; 8 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => tail.push(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{execute, RetryPolicy, OUTPUT_LIMIT};
    use super::*;
    use crate::remediate::Plan;

    fn cmd(argv: &[&str], timeout_seconds: u64) -> Plan {
        Plan::Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            timeout_seconds,
        }
    }

    fn quick_retry(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            base_backoff: Duration::from_millis(10),
        }
    }

    async fn exec(plan: &Plan, retry: &RetryPolicy, secrets: &[&str]) -> RunOutput {
        execute(plan, retry, secrets, &reqwest::Client::new()).await
    }

    #[tokio::test]
    async fn success_captures_stdout_and_stderr() {
        let plan = cmd(&["/bin/sh", "-c", "echo out; echo err >&2"], 10);
        let out = exec(&plan, &quick_retry(3), &[]).await;
        assert!(out.success, "{out:?}");
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.attempts, 1);
        assert_eq!(out.error, None);
        assert_eq!(out.http_status, None);
    }

    #[tokio::test]
    async fn non_zero_exit_fails_without_retry() {
        let plan = cmd(&["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], 10);
        let out = exec(&plan, &quick_retry(3), &[]).await;
        assert!(!out.success);
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.attempts, 1, "a definite failure is not retried");
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.error.as_deref(), Some("exited with code 3"));
    }

    #[tokio::test]
    async fn large_output_on_both_pipes_is_read_concurrently_and_cut_to_the_tail() {
        // ~190 KB on each pipe: far more than a pipe buffer, so reading one pipe after the other
        // would deadlock until the timeout.
        let plan = cmd(&["/bin/sh", "-c", "seq 1 30000 >&2; seq 1 30000"], 60);
        let out = exec(&plan, &quick_retry(1), &[]).await;
        assert!(out.success, "{:?}", out.error);
        for stream in [&out.stdout, &out.stderr] {
            let (marker, body) = stream.split_once('\n').unwrap();
            assert!(
                marker.starts_with("[… output cut: 168894 bytes"),
                "{marker}"
            );
            assert!(body.len() <= OUTPUT_LIMIT, "{}", body.len());
            assert!(body.len() > OUTPUT_LIMIT - 10, "{}", body.len());
            assert!(body.ends_with("\n29999\n30000\n"));
            assert!(!body.contains("\n100\n"));
        }
    }

    #[tokio::test]
    async fn secrets_are_redacted_everywhere() {
        let secret = "s3cr3t-T0KEN";
        let plan = cmd(
            &[
                "/bin/sh",
                "-c",
                "echo \"token=$1\"; echo \"auth $1 failed\" >&2; exit 1",
                "sh",
                secret,
            ],
            10,
        );
        let out = exec(&plan, &quick_retry(1), &[secret, ""]).await;
        assert_eq!(out.stdout, "token=***\n");
        assert_eq!(out.stderr, "auth *** failed\n");
        assert!(!format!("{out:?}").contains(secret));

        // Spawn errors quote the program, which is redacted too.
        let missing = format!("/nonexistent/{secret}");
        let out = exec(&cmd(&[&missing], 10), &quick_retry(1), &[secret]).await;
        let error = out.error.unwrap();
        assert!(error.contains("/nonexistent/***"), "{error}");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_child_and_is_not_retried() {
        // `exec` keeps the shell's pid for sleep, so the pid printed is the child we must kill.
        let plan = cmd(&["/bin/sh", "-c", "echo $$; exec sleep 30"], 1);
        let out = exec(&plan, &quick_retry(3), &[]).await;
        assert!(!out.success);
        assert_eq!(
            out.attempts, 1,
            "a command that timed out may have done its work: never run again"
        );
        assert!(out.duration_ms < 10_000, "{}", out.duration_ms);
        let error = out.error.as_deref().unwrap();
        assert!(error.contains("timed out after 1 s"), "{error}");
        assert_eq!(out.exit_code, None);
        // Output written before the deadline is kept.
        let pid: u32 = out
            .stdout
            .trim()
            .parse()
            .expect("the child printed its pid");
        // Killed and reaped, so its /proc entry is gone.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "child {pid} still exists"
        );
    }

    /// Waits (bounded, without sleeping) until `pid` is dead (gone or a zombie).
    async fn wait_dead(pid: u32, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while is_alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "{what} {pid} survived"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        // The shell starts a background sleep (a grandchild) and waits for it.
        let plan = cmd(&["/bin/sh", "-c", "sleep 3600 & echo $!; wait"], 1);
        let out = exec(&plan, &quick_retry(1), &[]).await;
        assert!(!out.success);
        assert!(out.error.unwrap().contains("timed out"));
        let grandchild: u32 = out.stdout.trim().parse().expect("the grandchild's pid");
        wait_dead(grandchild, "grandchild").await;
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_whole_process_group() {
        // `sleep 3599`: an argv no other test uses, so the grandchild can be told apart.
        let plan = cmd(&["/bin/sh", "-c", "sleep 3599 & wait"], 60);
        let retry = quick_retry(1);
        let client = reqwest::Client::new();
        let mut fut = Box::pin(execute(&plan, &retry, &[], &client));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let grandchild = loop {
            tokio::select! {
                biased;
                out = &mut fut => panic!("finished early: {out:?}"),
                () = tokio::task::yield_now() => {}
            }
            if let Some(pid) = process_running(b"sleep\x003599\x00") {
                break pid;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the grandchild never started"
            );
        };
        drop(fut);
        wait_dead(grandchild, "grandchild").await;
    }

    /// The pid of any process whose raw `/proc/PID/cmdline` is `cmdline`.
    fn process_running(cmdline: &[u8]) -> Option<u32> {
        std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .ok()
                    .as_deref()
                    == Some(cmdline)
                    && is_alive(*pid)
            })
    }

    #[tokio::test]
    async fn a_background_process_holding_the_output_does_not_hang_past_the_timeout() {
        // The shell exits at once; its background `sleep` inherits stdout and keeps it open
        // for longer than the bound asserted below.
        let plan = cmd(&["/bin/sh", "-c", "echo started; sleep 15 & exit 0"], 1);
        let out = exec(&plan, &quick_retry(3), &[]).await;
        assert!(out.duration_ms < 10_000, "{}", out.duration_ms);
        assert!(!out.success);
        assert_eq!(out.attempts, 1, "the command itself finished: not retried");
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(out.stdout, "started\n");
        assert!(out.error.unwrap().contains("output stayed open"));
    }

    #[tokio::test]
    async fn spawn_failure_is_retried_up_to_the_limit() {
        let plan = cmd(&["/nonexistent/incidentd-test-program", "x"], 10);
        let out = exec(&plan, &quick_retry(3), &[]).await;
        assert!(!out.success);
        assert_eq!(out.attempts, 3);
        // Two backoffs were waited: 10 ms, then 20 ms.
        assert!(out.duration_ms >= 30, "{}", out.duration_ms);
        let error = out.error.unwrap();
        assert!(
            error.starts_with("could not start /nonexistent/incidentd-test-program"),
            "{error}"
        );

        let once = exec(&plan, &quick_retry(0), &[]).await;
        assert_eq!(once.attempts, 1, "0 attempts still means one try");
    }

    #[tokio::test]
    async fn empty_argv_is_an_error_not_a_panic() {
        let out = exec(&cmd(&[], 10), &quick_retry(3), &[]).await;
        assert!(!out.success);
        assert_eq!(out.attempts, 1);
        assert_eq!(out.error.as_deref(), Some("the command is empty"));
    }

    #[tokio::test]
    async fn environment_is_cleared_except_the_passed_variables() {
        let ours: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
        assert!(
            ours.iter().any(|k| !PASSED_ENV.contains(&k.as_str())),
            "the test needs a variable to hide; cargo sets several (CARGO_*)"
        );
        let out = exec(&cmd(&["/usr/bin/env"], 10), &quick_retry(1), &[]).await;
        assert!(out.success, "{out:?}");
        let theirs: Vec<&str> = out
            .stdout
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        for name in &theirs {
            assert!(PASSED_ENV.contains(name), "{name} leaked into the child");
        }
        for name in PASSED_ENV {
            assert_eq!(
                theirs.contains(&name),
                std::env::var_os(name).is_some(),
                "{name} is passed on when set"
            );
        }
    }

    #[tokio::test]
    async fn stdin_is_closed() {
        // `cat` reading an inherited terminal or pipe would block until the timeout.
        let out = exec(&cmd(&["cat"], 10), &quick_retry(1), &[]).await;
        assert!(out.success, "{out:?}");
        assert_eq!(out.stdout, "");
        assert!(out.duration_ms < 10_000);
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_child() {
        // `sleep 31`: an argv no other test uses, so the process can be told apart.
        let plan = cmd(&["sleep", "31"], 60);
        let retry = quick_retry(1);
        let client = reqwest::Client::new();
        let mut fut = Box::pin(execute(&plan, &retry, &[], &client));
        // One poll spawns the child (spawn returns once it has exec'd) and parks on its exit.
        tokio::select! {
            biased;
            out = &mut fut => panic!("finished early: {out:?}"),
            () = std::future::ready(()) => {}
        }
        let pid = our_child_running(b"sleep\x0031\x00").expect("the child is running");
        drop(fut);
        // kill_on_drop sent SIGKILL during the drop; the kernel finishes it off asynchronously,
        // so wait (bounded, without sleeping) until it is a zombie or gone.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while is_alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "child {pid} survived the drop"
            );
            tokio::task::yield_now().await;
        }
    }

    /// The pid of a child of this process whose raw `/proc/PID/cmdline` is `cmdline`.
    fn our_child_running(cmdline: &[u8]) -> Option<u32> {
        let me = std::process::id().to_string();
        std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // stat is "pid (comm) state ppid …"; comm may contain spaces, so split after ')'.
                let ppid = stat
                    .rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split(' ').nth(1));
                ppid == Some(me.as_str())
                    && std::fs::read(format!("/proc/{pid}/cmdline"))
                        .ok()
                        .as_deref()
                        == Some(cmdline)
            })
    }

    /// Running or sleeping, i.e. not a zombie and not gone.
    fn is_alive(pid: u32) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        match stat.rsplit_once(") ") {
            Some((_, rest)) => !rest.starts_with('Z') && !rest.starts_with('X'),
            None => false,
        }
    }
}
