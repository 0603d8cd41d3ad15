//! `mx6 dkim keygen`: a signing key in `data_dir/dkim/<domain>.<selector>.key`
//! (0600, never overwritten) and the DNS TXT record to publish (RFC 6376 §3.6.1).

use clap::{Subcommand, ValueEnum};
use mx6_config::Config;

#[derive(Subcommand)]
pub enum DkimCmd {
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
pub enum DkimAlgorithm {
    Ed25519,
    Rsa2048,
}

/// `mx6 dkim keygen`: never overwrites a key; the file is private (0600).
pub fn keygen(cfg: &Config, domain: &str, selector: &str, algorithm: DkimAlgorithm) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let domain = domain.trim_end_matches('.').to_lowercase();
    let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    anyhow::ensure!(valid(&domain) && valid(selector), "domain and selector must be DNS labels");
    let entry = mx6_config::DkimConfig { domain: domain.clone(), selector: selector.to_string(), key: String::new() };
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
