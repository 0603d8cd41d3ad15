//! What every subcommand shares: loading the config (errors and warnings with
//! key and line), the logs, a runtime, the exit status and the stop signal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mx6_config::{Config, Severity};

use crate::logwriter;

static LOG: std::sync::OnceLock<logwriter::LogWriter> = std::sync::OnceLock::new();

/// `--config`, else `./mx6.toml` when it exists, else the built-in defaults.
pub fn config_path(given: Option<&Path>) -> Option<PathBuf> {
    match given {
        Some(p) => Some(p.to_path_buf()),
        None => Path::new("mx6.toml").exists().then(|| PathBuf::from("mx6.toml")),
    }
}

/// Load and check; print every finding; `None` when there were errors.
pub fn load(given: Option<&Path>) -> Option<Config> {
    let path = config_path(given);
    match Config::load(path.as_deref()) {
        Err(e) => {
            eprintln!("mx6: config error: {e}");
            None
        }
        Ok(cfg) => {
            let findings = cfg.findings();
            for e in &findings {
                let what = if e.severity == Severity::Error { "error" } else { "warning" };
                eprintln!("mx6: config {what}: {e}");
            }
            (!findings.iter().any(|e| e.severity == Severity::Error)).then_some(cfg)
        }
    }
}

/// The tokio runtime for the commands that do network I/O.
pub fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| eprintln!("mx6: can not start the runtime: {e}")).ok()
}

/// 0 on success; the error on stderr and 1 otherwise.
pub fn exit_status<E: std::fmt::Display>(r: Result<(), E>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mx6: {e}");
            ExitCode::from(1)
        }
    }
}

/// Log lines to stderr, text or JSON (`MX6_LOG` filters, default `info`).
pub fn init_logs(json: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MX6_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LOG.get_or_init(logwriter::LogWriter::start))
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        b.json().flatten_event(true).init()
    } else {
        b.init()
    }
}

/// Write out what the log writer still holds.
pub fn finish_logs() {
    if let Some(l) = LOG.get() {
        l.finish();
    }
}

/// SIGTERM or SIGINT.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// For the offline tools: the data_dir lock, when no server answers on the
/// control socket. A server that holds the lock but does not answer is never
/// worked around: its files are not touched. `None` when there is no data_dir
/// yet (nothing to act on).
pub fn offline_lock(data_dir: &Path) -> anyhow::Result<Option<mx6_queue::lock::DataDirLock>> {
    use mx6_queue::lock::{acquire, LockError};
    if !data_dir.exists() {
        return Ok(None);
    }
    match acquire(data_dir) {
        Ok(l) => Ok(Some(l)),
        Err(LockError::Held { path, pid }) => anyhow::bail!(
            "mx6{} holds {} but its control socket {} does not answer; refusing to touch the files of a running server",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
            path.display(),
            mx6_server::control::protocol::socket_path(data_dir).display()
        ),
        Err(LockError::Io { path, source }) if source.kind() == std::io::ErrorKind::PermissionDenied => {
            anyhow::bail!("{}: {source} (run mx6 as root or as the user mx6 runs as)", path.display())
        }
        Err(e) => Err(e.into()),
    }
}
