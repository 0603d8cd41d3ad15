//! TLS server configuration (rustls): the certificate and key from `[tls]`, or a
//! self-signed certificate for the hostname generated into `data_dir/tls/` on
//! first start (RFC 3207 does not require a publicly trusted certificate; MTAs
//! encrypt opportunistically). TLS 1.2 and 1.3 only.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use mx6_config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {message}")]
    Read { path: String, message: String },
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// Load or create the server certificate and build the rustls config.
pub fn server_config(tls: &TlsConfig, data_dir: &Path, hostname: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_path, key_path) = if tls.cert.is_empty() {
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
    let read_err = |p: &Path| {
        let path = p.display().to_string();
        move |e: rustls_pki_types::pem::Error| TlsError::Read { path, message: e.to_string() }
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&cert_path).map_err(read_err(&cert_path))?.collect::<Result<_, _>>().map_err(read_err(&cert_path))?;
    if certs.is_empty() {
        return Err(TlsError::Read { path: cert_path.display().to_string(), message: "no certificate found".into() });
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(read_err(&key_path))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
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
