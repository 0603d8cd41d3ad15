//! The `mx6` command: `serve`, `config check`, `user`, `firewall` (the other
//! subcommands of CONTRACT.md arrive with their features). Exit status: 0
//! success, 1 a finding or a refused operation, 2 usage error.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mx6_server::config::Config;

mod logwriter;

static LOG: std::sync::OnceLock<logwriter::LogWriter> = std::sync::OnceLock::new();

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

#[derive(Clone, Copy, ValueEnum)]
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
    /// DKIM keys.
    Dkim {
        #[command(subcommand)]
        command: DkimCmd,
    },
    /// Run the Postfix policy delegation server (check_policy_service) on
    /// `policyd.listen`, with the inbound checks of `mx6 serve`.
    Policyd,
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

#[derive(Clone, Copy, ValueEnum)]
enum FwFormat {
    Nftables,
    Iptables,
}

#[derive(Clone, Copy, ValueEnum)]
enum FwFamily {
    Ipv4,
    Ipv6,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user (an address); the password is the first line of stdin.
    Add {
        name: String,
        /// Another address this user may send as (repeatable).
        #[arg(long = "sender")]
        senders: Vec<String>,
    },
    /// Change a user's password (read from stdin).
    Passwd { name: String },
    /// Delete a user.
    Del { name: String },
    /// List users and the addresses they may send as.
    List,
}

#[derive(Subcommand)]
enum QueueCmd {
    /// Queued messages: id, sender, recipients, age, attempts, next attempt, last error.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One message: its envelope, state and headers.
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

#[derive(Subcommand)]
enum StateCmd {
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

#[derive(Subcommand)]
enum DkimCmd {
    /// Generate a signing key into data_dir/dkim/<domain>.<selector>.key and
    /// print the DNS TXT record to publish.
    Keygen {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        selector: String,
        #[arg(long, value_enum, default_value_t = DkimAlgorithm::Ed25519)]
        algorithm: DkimAlgorithm,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DkimAlgorithm {
    Ed25519,
    Rsa2048,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate the configuration; print each error with its key and line.
    Check,
}

/// `mx6 state`: through the control socket of a running server, else on the
/// configured store (the embedded snapshot file, or Redis).
fn state_command(cfg: &Config, cmd: &StateCmd) -> anyhow::Result<()> {
    use mx6_server::control::{request, Request, Response};
    let (op, arg) = match cmd {
        StateCmd::Show { prefix, .. } => ("state_show", prefix),
        StateCmd::Clear { prefix } => ("state_clear", prefix),
    };
    let parts = mx6_server::state::parts(cfg, arg);
    let resp = match request(&cfg.data_dir, &Request { op: op.into(), id: None, parts: parts.clone() }) {
        Some(r) => r.map_err(|e| anyhow::anyhow!("control socket: {e}"))?,
        None => {
            let Some(rt) = runtime() else { anyhow::bail!("cannot start a runtime") };
            rt.block_on(async {
                use mx6_store::StateStore;
                let store = mx6_server::state::open_store(cfg)?;
                let mut resp = Response { ok: true, ..Default::default() };
                for p in &parts {
                    if op == "state_clear" {
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

/// `mx6 queue`: through the control socket of a running server, else on the
/// spool of the stopped one.
fn queue_command(cfg: &Config, cmd: &QueueCmd) -> anyhow::Result<()> {
    use mx6_server::control::{request, Request};
    use mx6_server::queue_registry::{listed, read_holds, write_holds, Listed};
    let (op, id) = match cmd {
        QueueCmd::List { .. } => ("list", None),
        QueueCmd::Show { id, .. } => ("show", Some(id.clone())),
        QueueCmd::Delete { id } => ("delete", Some(id.clone())),
        QueueCmd::Hold { id } => ("hold", Some(id.clone())),
        QueueCmd::Release { id } => ("release", Some(id.clone())),
        QueueCmd::Flush => ("flush", None),
    };
    let json = matches!(cmd, QueueCmd::List { json: true } | QueueCmd::Show { json: true, .. });
    let spool_dir = cfg.data_dir.join("spool");
    let (messages, headers, affected): (Vec<Listed>, String, usize) =
        match request(&cfg.data_dir, &Request { op: op.into(), id: id.clone(), parts: Vec::new() }) {
            Some(Ok(r)) if r.ok => (r.messages, r.headers, r.affected),
            Some(Ok(r)) => anyhow::bail!("{}", r.error),
            Some(Err(e)) => anyhow::bail!("control socket: {e}"),
            None => {
                // The server is not running: work on the spool files.
                let holds = read_holds(&cfg.data_dir);
                let queued = mx6_queue::spool::inspect(&spool_dir)?;
                let find = |id: &str| {
                    queued.iter().find(|r| r.message.id == id).ok_or_else(|| anyhow::anyhow!("{id}: no such message in the queue"))
                };
                let all: Vec<Listed> = queued
                    .iter()
                    .map(|r| {
                        let mut done = vec![false; r.message.rcpts.len()];
                        for &i in &r.done {
                            done[i] = true;
                        }
                        listed(&r.message, &done, 0, None, "(not recorded while the server is stopped)", holds.contains(&r.message.id))
                    })
                    .collect();
                match op {
                    "list" => (all, String::new(), 0),
                    "show" => {
                        let id = id.unwrap_or_default();
                        let r = find(&id)?;
                        let body = mx6_queue::spool::read_body(&spool_dir, &r.location)?;
                        (all.into_iter().filter(|m| m.id == id).collect(), mx6_server::control::header_section(&body), 1)
                    }
                    "hold" | "release" => {
                        let id = id.unwrap_or_default();
                        find(&id)?;
                        let mut h = holds;
                        if op == "hold" {
                            h.insert(id);
                        } else {
                            h.remove(&id);
                        }
                        write_holds(&cfg.data_dir, &h)?;
                        (Vec::new(), String::new(), 1)
                    }
                    "delete" => {
                        let id = id.unwrap_or_default();
                        let r = find(&id)?;
                        let open: Vec<usize> = (0..r.message.rcpts.len()).filter(|i| !r.done.contains(i)).collect();
                        let n = open.len();
                        let entries = open
                            .into_iter()
                            .enumerate()
                            .map(|(k, i)| mx6_queue::DoneEntry {
                                id: id.clone(),
                                rcpt: i,
                                status: mx6_queue::DoneStatus::Deleted,
                                release: (k + 1 == n).then_some(r.location.segment),
                            })
                            .collect();
                        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                        rt.block_on(async {
                            let (handle, _) = mx6_queue::spool::open(&spool_dir)?;
                            handle.done(entries).await
                        })?;
                        (Vec::new(), String::new(), 1)
                    }
                    _ => {
                        println!("mx6 is not running; queued messages are tried when it starts");
                        return Ok(());
                    }
                }
            }
        };
    match op {
        "list" | "show" if json => {
            if op == "show" {
                let m = messages.first().ok_or_else(|| anyhow::anyhow!("no such message"))?;
                let mut v = serde_json::to_value(m)?;
                v["headers"] = serde_json::Value::String(headers);
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&messages)?);
            }
        }
        "list" | "show" => {
            if messages.is_empty() && op == "list" {
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
                for r in &m.recipients {
                    println!("    {}{}", r.address, if r.done { "  (done)" } else { "" });
                }
                if !m.last_error.is_empty() {
                    println!("    last error: {}", m.last_error);
                }
            }
            if op == "show" {
                print!("\n{headers}");
            }
        }
        _ => println!("{op}: {affected} message(s)"),
    }
    Ok(())
}

/// `mx6 dkim keygen`: never overwrites a key; the file is private (0600).
fn dkim_keygen(cfg: &Config, domain: &str, selector: &str, algorithm: DkimAlgorithm) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let domain = dns_name(domain);
    let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    anyhow::ensure!(valid(&domain) && valid(selector), "domain and selector must be DNS labels");
    let entry = mx6_server::config::DkimConfig { domain: domain.clone(), selector: selector.to_string(), key: String::new() };
    let path = entry.key_path(&cfg.data_dir);
    let (pem, record) = match algorithm {
        DkimAlgorithm::Ed25519 => mx6_auth::sign::generate_ed25519()?,
        DkimAlgorithm::Rsa2048 => {
            // ring cannot generate RSA keys; OpenSSL does (as opendkim-genkey).
            let out = std::process::Command::new("openssl")
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
                .output()
                .map_err(|e| anyhow::anyhow!("rsa2048 keys are generated with the openssl command: {e}"))?;
            anyhow::ensure!(out.status.success(), "openssl genpkey failed: {}", String::from_utf8_lossy(&out.stderr));
            let pem = String::from_utf8(out.stdout)?;
            let record = mx6_auth::sign::rsa_record(&pem)?;
            (pem, record)
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e} (an existing key is never overwritten)", path.display()))?;
    f.write_all(pem.as_bytes())?;
    f.sync_all()?;
    // DNS TXT strings hold at most 255 octets each.
    let quoted: Vec<String> = record.as_bytes().chunks(250).map(|c| format!("\"{}\"", String::from_utf8_lossy(c))).collect();
    println!("wrote {}", path.display());
    println!("publish:\n{selector}._domainkey.{domain}. IN TXT {}", quoted.join(" "));
    println!("and add to the config:\n[[dkim]]\ndomain = \"{domain}\"\nselector = \"{selector}\"");
    Ok(())
}

/// The tokio runtime for the commands that do network I/O.
fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| eprintln!("mx6: can not start the runtime: {e}")).ok()
}

/// 0 on success; the error on stderr and 1 otherwise.
fn exit_status<E: std::fmt::Display>(r: Result<(), E>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mx6: {e}");
            ExitCode::from(1)
        }
    }
}

fn dns_name(d: &str) -> String {
    d.trim_end_matches('.').to_lowercase()
}

fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MX6_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LOG.get_or_init(logwriter::LogWriter::start))
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

fn config_path(cli: &Cli) -> Option<PathBuf> {
    match &cli.config {
        Some(p) => Some(p.clone()),
        None => Path::new("mx6.toml").exists().then(|| PathBuf::from("mx6.toml")),
    }
}

/// Load and validate; print every error; `None` when there were errors.
fn load(cli: &Cli) -> Option<Config> {
    let path = config_path(cli);
    let file = path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(built-in defaults)".into());
    match Config::load(path.as_deref()) {
        Err(e) => {
            eprintln!("mx6: config error: {e}");
            None
        }
        Ok(cfg) => {
            let errs = cfg.validate();
            for e in &errs {
                eprintln!("mx6: config error: {file}: {}: {}", e.key, e.message);
            }
            errs.is_empty().then_some(cfg)
        }
    }
}

fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| format!("reading the password from stdin: {e}"))?;
    let p = line.trim_end_matches(['\r', '\n']).to_string();
    if p.is_empty() {
        return Err("empty password (give it on stdin)".into());
    }
    Ok(p)
}

fn user_command(cfg: &Config, cmd: &UserCmd) -> Result<(), String> {
    use mx6_server::users::{self, User, UsersFile};
    let path = cfg.path_in_data(&cfg.local.users_file);
    let mut file = users::read(&path)?.unwrap_or_default();
    let find = |f: &UsersFile, name: &str| f.user.iter().position(|u| users::normalize(&u.address) == users::normalize(name));
    match cmd {
        UserCmd::List => {
            for u in &file.user {
                if u.senders.is_empty() {
                    println!("{}", u.address);
                } else {
                    println!("{} (may send as: {})", u.address, u.senders.join(", "));
                }
            }
            return Ok(());
        }
        UserCmd::Add { name, senders } => {
            if !name.contains('@') {
                return Err(format!("`{name}` is not an address; a user is an address like alice@example.org"));
            }
            if find(&file, name).is_some() {
                return Err(format!("user {name} already exists"));
            }
            let password = users::hash_password(&read_password()?)?;
            file.user.push(User { address: name.clone(), password, senders: senders.clone() });
        }
        UserCmd::Passwd { name } => {
            let i = find(&file, name).ok_or_else(|| format!("no user {name}"))?;
            file.user[i].password = users::hash_password(&read_password()?)?;
        }
        UserCmd::Del { name } => {
            let i = find(&file, name).ok_or_else(|| format!("no user {name}"))?;
            file.user.remove(i);
        }
    }
    users::write(&path, &file)?;
    eprintln!("mx6: {} updated", path.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Cmd::Firewall { format, family, ssh_port } => {
            use mx6_server::firewall::{render, Format, Only};
            let Some(cfg) = load(&cli) else { return ExitCode::from(1) };
            let format = match format {
                FwFormat::Nftables => Format::Nftables,
                FwFormat::Iptables => Format::Iptables,
            };
            let only = match family {
                None => Only::Both,
                Some(FwFamily::Ipv4) => Only::Ipv4,
                Some(FwFamily::Ipv6) => Only::Ipv6,
            };
            let source = config_path(&cli).map(|p| p.display().to_string()).unwrap_or_else(|| "the built-in defaults".into());
            print!("{}", render(&cfg, format, only, (*ssh_port != 0).then_some(*ssh_port), &source));
            ExitCode::SUCCESS
        }
        Cmd::Check { domain, json, ips, port, dkim_selectors } => {
            let Some(cfg) = load(&cli) else { return ExitCode::from(1) };
            let Some(rt) = runtime() else { return ExitCode::from(1) };
            let opts = mx6_server::check::Options {
                domain: domain.clone(),
                ips: ips.clone(),
                port: *port,
                dkim_selectors: dkim_selectors.clone(),
                hostname: cfg.hostname.clone(),
            };
            let report = rt.block_on(async {
                let resolver = mx6_dns::Resolver::new(&cfg.dns.settings()).map_err(|e| e.to_string())?;
                Ok::<_, String>(mx6_server::check::run(&resolver, &opts).await)
            });
            match report {
                Ok(r) => {
                    if *json {
                        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    } else {
                        print!("{}", r.text());
                    }
                    if r.errors > 0 {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("mx6: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Queue { command } => {
            let Some(cfg) = load(&cli) else { return ExitCode::from(1) };
            exit_status(queue_command(&cfg, command))
        }
        Cmd::State { command } => {
            let Some(cfg) = load(&cli) else { return ExitCode::from(1) };
            exit_status(state_command(&cfg, command))
        }
        Cmd::Dkim { command: DkimCmd::Keygen { domain, selector, algorithm } } => {
            let Some(cfg) = load(&cli) else { return ExitCode::from(1) };
            exit_status(dkim_keygen(&cfg, domain, selector, *algorithm))
        }
        Cmd::User { command } => {
            let Some(cfg) = load(&cli) else { return ExitCode::from(1) };
            exit_status(user_command(&cfg, command))
        }
        Cmd::Config { command: ConfigCmd::Check } => match load(&cli) {
            Some(_) => {
                println!("config ok");
                ExitCode::SUCCESS
            }
            None => ExitCode::from(1),
        },
        Cmd::Serve | Cmd::Policyd => {
            init_logs(cli.log_format);
            let Some(cfg) = load(&cli) else { return ExitCode::from(1) };
            let Some(rt) = runtime() else { return ExitCode::from(1) };
            let result: Result<(), String> = if matches!(cli.command, Cmd::Serve) {
                rt.block_on(mx6_server::serve(cfg, stop_signal())).map_err(|e| e.to_string())
            } else {
                rt.block_on(mx6_server::policyd::serve(cfg, stop_signal())).map_err(|e| e.to_string())
            };
            drop(rt);
            if let Some(l) = LOG.get() {
                l.finish();
            }
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("mx6: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
