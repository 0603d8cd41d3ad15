//! `mx6 check DOMAIN`: the deployment audit ([`mx6_ops::check`]) with the
//! config's `[dns]`; exit 1 when it finds an error.

use std::path::Path;
use std::process::ExitCode;

use crate::commands::support::{load, runtime};

pub struct Args {
    pub domain: String,
    pub json: bool,
    pub ips: Vec<std::net::IpAddr>,
    pub port: u16,
    pub dkim_selectors: Vec<String>,
}

pub fn run(config: Option<&Path>, a: Args) -> ExitCode {
    let Some(cfg) = load(config) else { return ExitCode::from(1) };
    let Some(rt) = runtime() else { return ExitCode::from(1) };
    let opts = mx6_ops::check::Options {
        domain: a.domain,
        ips: a.ips,
        port: a.port,
        dkim_selectors: a.dkim_selectors,
        hostname: cfg.hostname.clone(),
    };
    let report = rt.block_on(async {
        let resolver = mx6_dns::Resolver::new(&cfg.dns.settings()).map_err(|e| e.to_string())?;
        Ok::<_, String>(mx6_ops::check::run(&resolver, &opts).await)
    });
    match report {
        Ok(r) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print!("{}", r.text());
            }
            ExitCode::from(if r.errors > 0 { 1 } else { 0 })
        }
        Err(e) => {
            eprintln!("mx6: {e}");
            ExitCode::from(1)
        }
    }
}
