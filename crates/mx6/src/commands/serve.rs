//! `mx6 serve`, `mx6 policyd` and `mx6 milter`: run in the foreground until SIGTERM/SIGINT.

use std::path::Path;
use std::process::ExitCode;

use crate::commands::support::{finish_logs, init_logs, load, runtime, stop_signal};

/// Which server to run.
pub enum Which {
    Serve,
    Policyd,
    Milter,
}

pub fn run(config: Option<&Path>, json_logs: bool, which: Which) -> ExitCode {
    init_logs(json_logs);
    let Some(cfg) = load(config) else { return ExitCode::from(1) };
    let Some(rt) = runtime() else { return ExitCode::from(1) };
    let result: Result<(), String> = match which {
        Which::Serve => rt.block_on(mx6_server::serve(cfg, stop_signal())).map_err(|e| e.to_string()),
        Which::Policyd => rt.block_on(mx6_server::policyd::server::serve(cfg, stop_signal())).map_err(|e| e.to_string()),
        Which::Milter => rt.block_on(mx6_server::milter_server::server::serve(cfg, stop_signal())).map_err(|e| e.to_string()),
    };
    drop(rt);
    finish_logs();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("mx6: {e}");
            ExitCode::from(1)
        }
    }
}
