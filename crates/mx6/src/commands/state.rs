//! `mx6 state show|clear`: through the control socket of a running server,
//! else on the configured store (the embedded snapshot file, or Redis).

use clap::Subcommand;
use mx6_config::Config;
use mx6_server::checks::state;
use mx6_server::control::client::request;
use mx6_server::control::protocol::{Request, Response};

use crate::commands::support::runtime;

#[derive(Subcommand)]
pub enum StateCmd {
    /// What is recorded: an address (every prefix level it belongs to), a
    /// prefix (2001:db8:1::/48), or a greylist identity (spf:example.org).
    Show {
        prefix: String,
        #[arg(long)]
        json: bool,
    },
    /// Forget it: reputation, counters, escalation, greylist triplets.
    Clear { prefix: String },
}

pub fn run(cfg: &Config, cmd: &StateCmd) -> anyhow::Result<()> {
    let (clear, arg) = match cmd {
        StateCmd::Show { prefix, .. } => (false, prefix),
        StateCmd::Clear { prefix } => (true, prefix),
    };
    let levels = state::levels(&cfg.ratelimit_rules(), &cfg.greylist, &cfg.ratelimit_escalation.escalation());
    let parts = state::parts(&levels, arg);
    let req = if clear { Request::StateClear { parts: parts.clone() } } else { Request::StateShow { parts: parts.clone() } };
    let resp = match request(&cfg.data_dir, &req) {
        Some(r) => r.map_err(|e| anyhow::anyhow!("control socket: {e}"))?,
        None => {
            let _lock = match cfg.store.backend {
                mx6_config::StoreBackend::Embedded => crate::commands::support::offline_lock(&cfg.data_dir)?,
                mx6_config::StoreBackend::Redis => None,
            };
            let Some(rt) = runtime() else { anyhow::bail!("cannot start a runtime") };
            rt.block_on(async {
                use mx6_store::StateStore;
                let store = state::open_store(&cfg.store, &cfg.data_dir)?;
                let mut resp = Response { ok: true, ..Default::default() };
                for p in &parts {
                    if clear {
                        resp.affected += store.clear(p).await? as usize;
                    } else {
                        let hl = cfg.reputation.half_life.as_millis() as u64;
                        resp.state.push((p.clone(), store.show(p, mx6_store::now_ms(), hl).await?));
                    }
                }
                if let mx6_store::Store::Embedded(e) = &store {
                    e.save()?;
                }
                Ok::<_, mx6_store::StoreError>(resp)
            })?
        }
    };
    if !resp.ok {
        anyhow::bail!("{}", resp.error);
    }
    match cmd {
        StateCmd::Show { json: true, .. } => println!("{}", serde_json::to_string_pretty(&resp.state)?),
        StateCmd::Show { .. } => {
            for (part, entries) in &resp.state {
                println!("{part}");
                if entries.is_empty() {
                    println!("  nothing recorded");
                }
                for e in entries {
                    let exp = e.expires_in_ms.map(|ms| format!("  (expires in {}s)", ms.div_ceil(1000))).unwrap_or_default();
                    println!("  {}  {}{exp}", e.key, e.value);
                }
            }
        }
        StateCmd::Clear { .. } => println!("cleared {} entries for {}", resp.affected, parts.join(", ")),
    }
    Ok(())
}
