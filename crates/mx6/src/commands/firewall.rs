//! `mx6 firewall`: print an nftables ruleset or iptables-restore input
//! derived from the config ([`mx6_ops::firewall`]). It never applies anything.

use std::path::Path;
use std::process::ExitCode;

use clap::ValueEnum;
use mx6_ops::firewall::{render, Format, Only};

use crate::commands::support::{config_path, load};

#[derive(Clone, Copy, ValueEnum)]
pub enum FwFormat {
    Nftables,
    Iptables,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FwFamily {
    Ipv4,
    Ipv6,
}

pub fn run(config: Option<&Path>, format: FwFormat, family: Option<FwFamily>, ssh_port: u16) -> ExitCode {
    let Some(cfg) = load(config) else { return ExitCode::from(1) };
    let format = match format {
        FwFormat::Nftables => Format::Nftables,
        FwFormat::Iptables => Format::Iptables,
    };
    let only = match family {
        None => Only::Both,
        Some(FwFamily::Ipv4) => Only::Ipv4,
        Some(FwFamily::Ipv6) => Only::Ipv6,
    };
    let source = config_path(config).map(|p| p.display().to_string()).unwrap_or_else(|| "the built-in defaults".into());
    print!("{}", render(&cfg.listener, cfg.metrics.listen, format, only, (ssh_port != 0).then_some(ssh_port), &source));
    ExitCode::SUCCESS
}
