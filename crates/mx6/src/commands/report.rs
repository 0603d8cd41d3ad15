//! `mx6 report list|show|flush` through the control socket of the running
//! server (the counts live in its state store, and reports leave through
//! its queue); `mx6 report summary DOMAIN` from the reports received about
//! our domains, kept in `data_dir/reports/received` (no server needed).

use clap::Subcommand;
use mx6_config::Config;
use mx6_server::control::client::request;
use mx6_server::control::protocol::{Request, Response};

#[derive(Subcommand)]
pub enum ReportCmd {
    /// The reports of the current period and any not yet sent: kind, id,
    /// domain, rows, destinations.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One report's document (DMARC XML, TLS-RPT JSON) as it would be sent.
    Show { id: String },
    /// Close the current period now and queue its reports.
    Flush,
    /// What the reports received about DOMAIN say: passes and failures per
    /// reporter and per sending network (/64, /48, /24).
    Summary {
        domain: String,
        #[arg(long, default_value_t = 7)]
        days: u64,
        #[arg(long)]
        json: bool,
    },
}

fn ask(cfg: &Config, req: &Request) -> anyhow::Result<Response> {
    let resp = match request(&cfg.data_dir, req) {
        Some(r) => r.map_err(|e| anyhow::anyhow!("control socket: {e}"))?,
        None => anyhow::bail!(
            "mx6 is not running (no {}): reports are kept and sent by the running server",
            cfg.data_dir.join("control.sock").display()
        ),
    };
    if !resp.ok {
        anyhow::bail!("{}", resp.error);
    }
    Ok(resp)
}

fn time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0).map(|d| d.format("%Y-%m-%dT%H:%MZ").to_string()).unwrap_or_default()
}

pub fn run(cfg: &Config, cmd: &ReportCmd) -> anyhow::Result<()> {
    match cmd {
        ReportCmd::List { json } => {
            let resp = ask(cfg, &Request::ReportList)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&resp.reports)?);
                return Ok(());
            }
            if resp.reports.is_empty() {
                println!("no reports pending");
            }
            for r in &resp.reports {
                let to = if r.destinations.is_empty() { "(no destination: dropped)".to_string() } else { r.destinations.join(", ") };
                println!("{:<5} {:<48} {} .. {}  {} rows, {}  -> {to}", r.kind, r.id, time(r.begin), time(r.end), r.rows, r.count);
                for s in &r.skipped {
                    println!("      left out: {s}");
                }
            }
        }
        ReportCmd::Show { id } => println!("{}", ask(cfg, &Request::ReportShow { id: id.clone() })?.document),
        ReportCmd::Flush => println!("{} reports queued", ask(cfg, &Request::ReportFlush)?.affected),
        ReportCmd::Summary { domain, days, json } => {
            let since = chrono::Utc::now().timestamp() - (*days as i64) * 86_400;
            let received = mx6_reports::received::load(&cfg.data_dir, domain, since);
            let s = mx6_reports::summary::summarise(domain, *days, &received);
            if *json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", mx6_reports::summary::text(&s));
            }
        }
    }
    Ok(())
}
