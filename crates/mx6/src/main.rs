//! The `mx6` command line (CONTRACT.md): the subcommands and their arguments;
//! each runs from [`commands`]. Exit status: 0 success, 1 a finding or a
//! refused operation, 2 usage error.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod commands;
mod logwriter;

use commands::dkim::DkimCmd;
use commands::firewall::{FwFamily, FwFormat};
use commands::queue::QueueCmd;
use commands::report::ReportCmd;
use commands::state::StateCmd;
use commands::support::{exit_status, load};
use commands::user::UserCmd;

#[derive(Parser)]
#[command(name = "mx6", version, about = "An IPv6-first mail server")]
struct Cli {
    /// Configuration file (default: ./mx6.toml if it exists, else built-in defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the mail server in the foreground until SIGTERM/SIGINT.
    Serve,
    /// Audit a domain's mail deployment: MX, AAAA/A, PTR, SPF, DMARC, DKIM,
    /// MTA-STS, TLS-RPT, and SMTP with STARTTLS on every MX address.
    Check {
        domain: String,
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
        /// An address that sends the domain's mail; SPF must authorise it (repeatable).
        #[arg(long = "ip")]
        ips: Vec<std::net::IpAddr>,
        /// SMTP port of the MX hosts.
        #[arg(long, default_value_t = 25)]
        port: u16,
        /// A DKIM selector that must have a key (repeatable); common ones are tried too.
        #[arg(long = "dkim-selector")]
        dkim_selectors: Vec<String>,
    },
    /// Inspect and act on the queue of a running or stopped server.
    Queue {
        #[command(subcommand)]
        command: QueueCmd,
    },
    /// Greylist, rate-limit and reputation state of a prefix, on the running
    /// server or in the configured store.
    State {
        #[command(subcommand)]
        command: StateCmd,
    },
    /// DMARC aggregate and TLS-RPT reports: pending ones, one as it would be
    /// sent, send them now, and a summary of those received about our domains.
    Report {
        #[command(subcommand)]
        command: ReportCmd,
    },
    /// DKIM keys.
    Dkim {
        #[command(subcommand)]
        command: DkimCmd,
    },
    /// Run the Postfix policy delegation server (check_policy_service) on
    /// `policyd.listen`, with the inbound checks of `mx6 serve`.
    Policyd,
    /// Run a milter server (Postfix `smtpd_milters`) on `milter_server.listen`
    /// with the content-stage checks of `mx6 serve`: SPF, DKIM, DMARC,
    /// Authentication-Results, X-Mx6-Client, DKIM signing.
    Milter,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
    /// Print a firewall ruleset (nftables, or iptables-restore input) derived
    /// from the config. It never applies anything.
    Firewall {
        #[arg(long, value_enum, default_value_t = FwFormat::Nftables)]
        format: FwFormat,
        /// For --format iptables: only this family's ruleset (to pipe into one restore tool).
        #[arg(long, value_enum)]
        family: Option<FwFamily>,
        /// SSH port kept open (0 = none).
        #[arg(long, default_value_t = 22)]
        ssh_port: u16,
    },
    /// Manage the users file (SMTP AUTH users and mailboxes); passwords are read from stdin.
    User {
        #[command(subcommand)]
        command: UserCmd,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate the configuration; print each error with its key and line.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Private by default: the spool, state, keys and users file are no one else's.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let config = cli.config.as_deref();
    let json_logs = cli.log_format == LogFormat::Json;
    match cli.command {
        Cmd::Serve => commands::serve::run(config, json_logs, commands::serve::Which::Serve),
        Cmd::Policyd => commands::serve::run(config, json_logs, commands::serve::Which::Policyd),
        Cmd::Milter => commands::serve::run(config, json_logs, commands::serve::Which::Milter),
        Cmd::Config { command: ConfigCmd::Check } => commands::config::check(config),
        Cmd::Firewall { format, family, ssh_port } => commands::firewall::run(config, format, family, ssh_port),
        Cmd::Check { domain, json, ips, port, dkim_selectors } => {
            commands::check::run(config, commands::check::Args { domain, json, ips, port, dkim_selectors })
        }
        Cmd::Queue { command } => with_config(config, |cfg| exit_status(commands::queue::run(cfg, &command))),
        Cmd::State { command } => with_config(config, |cfg| exit_status(commands::state::run(cfg, &command))),
        Cmd::Report { command } => with_config(config, |cfg| exit_status(commands::report::run(cfg, &command))),
        Cmd::Dkim { command: DkimCmd::Keygen { domain, selector, algorithm } } => {
            with_config(config, |cfg| exit_status(commands::dkim::keygen(cfg, &domain, &selector, algorithm)))
        }
        Cmd::User { command } => with_config(config, |cfg| exit_status(commands::user::run(cfg, &command))),
    }
}

/// Run `f` with the loaded config; exit 1 when it does not load.
fn with_config(config: Option<&std::path::Path>, f: impl FnOnce(&mx6_config::Config) -> ExitCode) -> ExitCode {
    match load(config) {
        Some(cfg) => f(&cfg),
        None => ExitCode::from(1),
    }
}
