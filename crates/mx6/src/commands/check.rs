//! `mx6 check DOMAIN`: the deployment audit ([`mx6_ops::check`]) with the
//! config's `[dns]`, `[delivery] mta_sts_port` and `ca_file`, the policy
//! `[mta_sts]` serves and the `[acme]` status; exit 1 when it finds an error.

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
    let mut opts = mx6_ops::check::Options {
        domain: a.domain,
        ips: a.ips,
        port: a.port,
        dkim_selectors: a.dkim_selectors,
        hostname: cfg.hostname.clone(),
        mta_sts_port: cfg.delivery.mta_sts_port,
        ca_file: cfg.delivery.ca_file.clone(),
        served_policy: None,
        acme: cfg.acme.enabled().then(|| mx6_config::acme::RenewalStatus::read(&cfg.data_dir).unwrap_or_default()),
    };
    let d = opts.domain.trim_end_matches('.').to_ascii_lowercase();
    if !cfg.mta_sts.listen.is_empty() && cfg.mta_sts_domains().iter().any(|x| x.trim_end_matches('.').eq_ignore_ascii_case(&d)) {
        opts.served_policy = Some(cfg.mta_sts_policy());
    }
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
