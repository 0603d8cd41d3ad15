//! `mx6 queue`: through the control socket of a running server, else on the
//! spool of the stopped one ([`mx6_queue::ops::Stopped`]).

use clap::Subcommand;
use mx6_config::Config;
use mx6_queue::listing::Listed;
use mx6_queue::ops::Stopped;
use mx6_server::control::client::request;
use mx6_server::control::protocol::Request;

#[derive(Subcommand)]
pub enum QueueCmd {
    /// Queued messages: id, sender, recipients, DSN parameters, age, attempts, next attempt, last error.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One message: its envelope (with the DSN parameters), state and headers.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a message from the queue (no bounce).
    Delete { id: String },
    /// Keep a message from being delivered until released.
    Hold { id: String },
    /// Release a held message.
    Release { id: String },
    /// Try every deferred message now.
    Flush,
}

impl QueueCmd {
    fn request(&self) -> Request {
        match self {
            QueueCmd::List { .. } => Request::List,
            QueueCmd::Show { id, .. } => Request::Show { id: id.clone() },
            QueueCmd::Delete { id } => Request::Delete { id: id.clone() },
            QueueCmd::Hold { id } => Request::Hold { id: id.clone() },
            QueueCmd::Release { id } => Request::Release { id: id.clone() },
            QueueCmd::Flush => Request::Flush,
        }
    }
}

/// What an answer carries: the messages, one message's headers, how many were affected.
type Answer = (Vec<Listed>, String, usize);

/// The same request on the spool of a stopped server; `None` for flush
/// (nothing to do until the server starts).
fn stopped(cfg: &Config, req: &Request) -> anyhow::Result<Option<Answer>> {
    let s = Stopped::new(&cfg.data_dir.join("spool"));
    Ok(Some(match req {
        Request::List => (s.list()?, String::new(), 0),
        Request::Show { id } => {
            let (m, headers) = s.show(id)?;
            (vec![m], headers, 1)
        }
        Request::Hold { id } => (Vec::new(), String::new(), s.hold(id, true).map(|_| 1)?),
        Request::Release { id } => (Vec::new(), String::new(), s.hold(id, false).map(|_| 1)?),
        Request::Delete { id } => (Vec::new(), String::new(), s.delete(id).map(|_| 1)?),
        _ => return Ok(None),
    }))
}

/// [`stopped`] under the data_dir lock.
fn offline(cfg: &Config, req: &Request) -> anyhow::Result<Option<Answer>> {
    let _lock = crate::commands::support::offline_lock(&cfg.data_dir)?;
    stopped(cfg, req)
}

pub fn run(cfg: &Config, cmd: &QueueCmd) -> anyhow::Result<()> {
    let req = cmd.request();
    let (messages, headers, affected) = match request(&cfg.data_dir, &req) {
        Some(Ok(r)) if r.ok => (r.messages, r.headers, r.affected),
        Some(Ok(r)) => anyhow::bail!("{}", r.error),
        Some(Err(e)) => anyhow::bail!("control socket: {e}"),
        None => match offline(cfg, &req)? {
            Some(a) => a,
            None => {
                println!("mx6 is not running; queued messages are tried when it starts");
                return Ok(());
            }
        },
    };
    match cmd {
        QueueCmd::Show { json: true, .. } => {
            let m = messages.first().ok_or_else(|| anyhow::anyhow!("no such message"))?;
            let mut v = serde_json::to_value(m)?;
            v["headers"] = serde_json::Value::String(headers);
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        QueueCmd::List { json: true } => println!("{}", serde_json::to_string_pretty(&messages)?),
        QueueCmd::List { .. } | QueueCmd::Show { .. } => {
            if messages.is_empty() && matches!(cmd, QueueCmd::List { .. }) {
                println!("the queue is empty");
            }
            for m in &messages {
                let next = m.next_attempt.clone().unwrap_or_else(|| "-".into());
                println!(
                    "{}  {:>8}  {:<8}  attempts {}  next {}  <{}>",
                    m.id,
                    format!("{}s", m.age_secs),
                    m.state,
                    m.attempts,
                    next,
                    m.from
                );
                let dsn = m.dsn_params();
                if !dsn.is_empty() {
                    println!("    dsn: {dsn}");
                }
                if m.warned {
                    println!("    delay warning sent");
                }
                for r in &m.recipients {
                    let dsn = r.dsn_params();
                    let dsn = if dsn.is_empty() { String::new() } else { format!("  {dsn}") };
                    println!("    {}{dsn}{}", r.address, if r.done { "  (done)" } else { "" });
                }
                if !m.last_error.is_empty() {
                    println!("    last error: {}", m.last_error);
                }
            }
            if matches!(cmd, QueueCmd::Show { .. }) {
                print!("\n{headers}");
            }
        }
        QueueCmd::Delete { .. } => println!("delete: {affected} message(s)"),
        QueueCmd::Hold { .. } => println!("hold: {affected} message(s)"),
        QueueCmd::Release { .. } => println!("release: {affected} message(s)"),
        QueueCmd::Flush => println!("flush: {affected} message(s)"),
    }
    Ok(())
}
