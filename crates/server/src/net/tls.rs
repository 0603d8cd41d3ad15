//! TLS server configuration (rustls) whose certificates can change under it:
//! the `[tls]` certificate (or a self-signed one for the hostname, generated
//! into `data_dir/tls/` on first start: RFC 3207 does not require a publicly
//! trusted certificate) is the default, used when the client sends no SNI (most
//! SMTP clients); `[[tls.certificate]]` entries are chosen by SNI, by exact name
//! or `*.` wildcard (RFC 6125 §6.4.3). TLS 1.2 and 1.3 only.
//!
//! Reload: on SIGHUP, or when a certificate or key file changes (checked every
//! two seconds), every pair is read again and new handshakes use them at once;
//! sessions in progress keep theirs and no listener is closed. A set that does
//! not load (a broken file, a key that does not match its certificate) is
//! refused with a log line and the certificates in use stay.
//! `mx6_tls_certificate_expiry_seconds{name}` says when each one in use expires.
//!
//! With `[acme]`, the certificate in `data_dir/acme/` is chosen by SNI for its
//! names and, when `[tls] cert` is empty, is the default once it exists; a
//! handshake that offers only ALPN `acme-tls/1` gets the TLS-ALPN-01 challenge
//! certificate for its name (RFC 8737 §3) while an order waits for it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use mx6_config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    #[error("{path}: {source}")]
    Key { path: String, source: rustls::Error },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// Where one certificate comes from; `names` empty for the default.
#[derive(Debug, Clone)]
struct Source {
    names: Vec<String>,
    cert: PathBuf,
    key: PathBuf,
    /// The ACME certificate: absent until the first order, and the default
    /// once present when `[tls] cert` is empty.
    acme: Option<bool>,
}

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The certificates in use.
#[derive(Debug)]
struct Loaded {
    default: Arc<CertifiedKey>,
    /// Lower-case names (`*.example.net` for wildcards) and their certificate.
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

/// The server's certificates, chosen per handshake and reloadable.
#[derive(Debug)]
pub struct Certificates {
    /// The default certificate's name in the expiry metric.
    hostname: String,
    expiry: OnceLock<prometheus::IntGaugeVec>,
    sources: Vec<Source>,
    current: RwLock<Arc<Loaded>>,
    /// Modification times of every file at the last load (or attempt).
    stamps: Mutex<Vec<Option<SystemTime>>>,
    /// TLS-ALPN-01 challenge certificates by lower-case name.
    alpn_challenges: RwLock<Vec<(String, Arc<CertifiedKey>)>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_pair(src: &Source, provider: &rustls::crypto::CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let read_err = |p: &Path| {
        let path = p.display().to_string();
        move |e: rustls_pki_types::pem::Error| TlsError::Read { path, message: e.to_string() }
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&src.cert).map_err(read_err(&src.cert))?.collect::<Result<_, _>>().map_err(read_err(&src.cert))?;
    if certs.is_empty() {
        return Err(TlsError::Read { path: src.cert.display().to_string(), message: "no certificate found".into() });
    }
    let key = PrivateKeyDer::from_pem_file(&src.key).map_err(read_err(&src.key))?;
    let ck =
        CertifiedKey::from_der(certs, key, provider).map_err(|source| TlsError::Key { path: src.key.display().to_string(), source })?;
    Ok(Arc::new(ck))
}

/// A certificate chain and its key, not checked against each other: the
/// TLS-ALPN-01 certificate carries a critical extension (`acmeIdentifier`)
/// that the checking parser refuses.
pub fn unchecked_certified_key(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Arc<CertifiedKey>, TlsError> {
    let signer = provider().key_provider.load_private_key(key)?;
    Ok(Arc::new(CertifiedKey::new(certs, signer)))
}

/// The end of the certificate's validity, Unix seconds.
fn not_after(ck: &CertifiedKey) -> Option<i64> {
    let der = ck.cert.first()?;
    x509_parser::parse_x509_certificate(der).ok().map(|(_, c)| c.validity().not_after.timestamp())
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl Certificates {
    fn load(sources: &[Source]) -> Result<Loaded, TlsError> {
        let p = provider();
        let mut default = load_pair(&sources[0], &p)?;
        let mut by_name = Vec::new();
        for s in &sources[1..] {
            if s.acme.is_some() && !s.cert.exists() {
                continue; // not ordered yet
            }
            let ck = load_pair(s, &p)?;
            if s.acme == Some(true) {
                default = ck.clone();
            }
            for n in &s.names {
                by_name.push((n.trim_end_matches('.').to_ascii_lowercase(), ck.clone()));
            }
        }
        Ok(Loaded { default, by_name })
    }

    fn stamps_now(&self) -> Vec<Option<SystemTime>> {
        self.sources.iter().flat_map(|s| [mtime(&s.cert), mtime(&s.key)]).collect()
    }

    /// Publish the expiry of the certificates in use to `gauge` (now and after
    /// each reload).
    pub fn report_to(&self, gauge: prometheus::IntGaugeVec) {
        let _ = self.expiry.set(gauge);
        self.publish();
    }

    fn publish(&self) {
        let Some(g) = self.expiry.get() else { return };
        let set = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        g.reset();
        let all = std::iter::once((self.hostname.as_str(), &set.default)).chain(set.by_name.iter().map(|(n, c)| (n.as_str(), c)));
        for (name, ck) in all {
            if let Some(t) = not_after(ck) {
                g.with_label_values(&[name]).set(t);
            }
        }
    }

    /// The certificate for a handshake that asked for `sni` (or none).
    fn choose(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let set = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(name) = sni.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) {
            if let Some((_, ck)) = set.by_name.iter().find(|(n, _)| *n == name) {
                return ck.clone();
            }
            let parent = name.split_once('.').map(|(_, p)| format!("*.{p}"));
            if let Some((_, ck)) = set.by_name.iter().find(|(n, _)| Some(n) == parent.as_ref()) {
                return ck.clone();
            }
        }
        set.default.clone()
    }

    /// Read every pair again; on success new handshakes use them. On failure
    /// the certificates in use stay.
    pub fn reload(&self, why: &str) -> Result<(), TlsError> {
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = self.stamps_now();
        match Certificates::load(&self.sources) {
            Ok(l) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(l);
                self.publish();
                tracing::info!(reason = why, certificates = self.sources.len(), "TLS certificates reloaded; new handshakes use them");
                Ok(())
            }
            Err(e) => {
                tracing::error!(reason = why, error = %e, "TLS certificates not reloaded; the ones in use stay");
                Err(e)
            }
        }
    }

    /// Whether a file changed since the last load.
    fn changed(&self) -> bool {
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) != self.stamps_now()
    }

    /// Reload on SIGHUP and when a file changes, until `shutdown`.
    pub async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "no SIGHUP handler; certificates reload only when their files change");
                return;
            }
        };
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    let _ = self.reload("SIGHUP");
                }
                _ = tick.tick() => {
                    if self.changed() {
                        let _ = self.reload("file changed");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Answer TLS-ALPN-01 handshakes for `name` with `cert` (until cleared).
    pub fn set_alpn_challenge(&self, name: &str, cert: Arc<CertifiedKey>) {
        let name = name.to_ascii_lowercase();
        let mut c = self.alpn_challenges.write().unwrap_or_else(|e| e.into_inner());
        c.retain(|(n, _)| *n != name);
        c.push((name, cert));
    }

    pub fn clear_alpn_challenges(&self) {
        self.alpn_challenges.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello.alpn().is_some_and(|mut p| p.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // RFC 8737 §3: only the challenge certificate, and only for a name being validated.
            let name = hello.server_name()?.trim_end_matches('.').to_ascii_lowercase();
            let c = self.alpn_challenges.read().unwrap_or_else(|e| e.into_inner());
            return c.iter().find(|(n, _)| *n == name).map(|(_, ck)| ck.clone());
        }
        Some(self.choose(hello.server_name()))
    }
}

/// Where the ACME certificate and its key are kept.
pub fn acme_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("acme");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Load or create the certificates and build the rustls config around them;
/// `acme_names` are the names of the ACME certificate (empty: no ACME).
pub fn server_config(
    tls: &TlsConfig,
    data_dir: &Path,
    hostname: &str,
    acme_names: &[String],
) -> Result<(Arc<ServerConfig>, Arc<Certificates>), TlsError> {
    let (cert, key) = if tls.cert.is_empty() {
        let dir = data_dir.join("tls");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        if !cert.exists() || !key.exists() {
            generate(hostname, &dir)?;
        }
        (cert, key)
    } else {
        (tls.cert.clone().into(), tls.key.clone().into())
    };
    let mut sources = vec![Source { names: Vec::new(), cert, key, acme: None }];
    if !acme_names.is_empty() {
        let (cert, key) = acme_paths(data_dir);
        sources.push(Source { names: acme_names.to_vec(), cert, key, acme: Some(tls.cert.is_empty()) });
    }
    for c in &tls.certificate {
        sources.push(Source { names: c.names.clone(), cert: c.cert.clone().into(), key: c.key.clone().into(), acme: None });
    }
    let loaded = Certificates::load(&sources)?;
    let certs = Arc::new(Certificates {
        hostname: hostname.to_ascii_lowercase(),
        expiry: OnceLock::new(),
        stamps: Mutex::new(Vec::new()),
        current: RwLock::new(Arc::new(loaded)),
        sources,
        alpn_challenges: RwLock::new(Vec::new()),
    });
    *certs.stamps.lock().unwrap_or_else(|e| e.into_inner()) = certs.stamps_now();
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certs.clone());
    Ok((Arc::new(config), certs))
}

/// The HTTPS variant of `smtp`: ALPN `http/1.1`, and `acme-tls/1` for
/// TLS-ALPN-01 challenges.
pub fn https_config(smtp: &ServerConfig) -> Arc<ServerConfig> {
    let mut c = smtp.clone();
    c.alpn_protocols = vec![b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Arc::new(c)
}

fn generate(hostname: &str, dir: &Path) -> Result<(), TlsError> {
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Generate(e.to_string()))?;
    let params = rcgen::CertificateParams::new(vec![hostname.to_string()]).map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| TlsError::Generate(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write { path: dir.display().to_string(), source })?;
    let write = |name: &str, data: String, mode: u32| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let p = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&p)
            .and_then(|mut f| f.write_all(data.as_bytes()).and_then(|_| f.sync_all()))
            .map_err(|source| TlsError::Write { path: p.display().to_string(), source })
    };
    write("key.pem", key.serialize_pem(), 0o600)?;
    write("cert.pem", cert.pem(), 0o644)?;
    tracing::info!(hostname, dir = %dir.display(), "generated a self-signed TLS certificate");
    Ok(())
}

/// "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384", for the Received header and logs.
pub fn describe(conn: &rustls::ServerConnection) -> String {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    };
    let suite = conn.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).unwrap_or("unknown");
    format!("{version} with cipher {suite}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap().self_signed(&key).unwrap();
        let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c.display().to_string(), k.display().to_string())
    }

    #[test]
    fn sni_chooses_by_name_and_wildcard_and_a_broken_reload_keeps_the_old() {
        let dir = std::env::temp_dir().join(format!("mx6-tls-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = pair(&dir, "mx.test");
        let (c2, k2) = pair(&dir, "mail.example.net");
        let (c3, k3) = pair(&dir, "wild.example.org");
        let cfg = TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
            certificate: vec![
                mx6_config::tls::CertificateConfig { names: vec!["Mail.Example.NET".into()], cert: c2, key: k2.clone() },
                mx6_config::tls::CertificateConfig { names: vec!["*.example.org".into()], cert: c3, key: k3 },
            ],
        };
        let (_, certs) = server_config(&cfg, &dir, "mx.test", &[]).unwrap();
        let default = certs.choose(None);
        assert!(Arc::ptr_eq(&default, &certs.choose(Some("unknown.test"))));
        let named = certs.choose(Some("mail.example.net."));
        assert!(!Arc::ptr_eq(&default, &named));
        let wild = certs.choose(Some("mx.example.org"));
        assert!(!Arc::ptr_eq(&default, &wild) && !Arc::ptr_eq(&named, &wild));
        assert!(Arc::ptr_eq(&default, &certs.choose(Some("a.b.example.org"))), "a wildcard covers one label");
        // A key that does not match its certificate is refused; the old set stays.
        std::fs::copy(&k2, &key).unwrap();
        assert!(certs.reload("test").is_err());
        assert!(Arc::ptr_eq(&default, &certs.choose(None)));
        // A good new pair is taken.
        let (c4, k4) = pair(&dir, "mx.test");
        std::fs::rename(&c4, &cert).unwrap();
        std::fs::rename(&k4, &key).unwrap();
        certs.reload("test").unwrap();
        assert!(!Arc::ptr_eq(&default, &certs.choose(None)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
