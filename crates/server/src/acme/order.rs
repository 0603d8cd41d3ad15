//! One ACME order (RFC 8555 §7.4): the account (created once and kept in
//! `data_dir/acme/account.json`, 0600; created again when the server no longer
//! knows it), a new order for the names, each authorization proved by HTTP-01
//! (§8.3, [`super::http_challenge`]) or TLS-ALPN-01 (RFC 8737, a challenge
//! certificate offered by [`crate::net::tls`]), the order finalized with a
//! CSR for a new ECDSA P-256 key, and the chain and key written to
//! `data_dir/acme/` (0600) before the TLS certificates are reloaded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use mx6_config::Challenge;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use crate::acme::http_challenge::Tokens;
use crate::net::tls::{self, Certificates, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("ACME server: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error("{0}")]
    Refused(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("challenge certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the new certificate: {0}")]
    Tls(#[from] TlsError),
}

impl OrderError {
    /// RFC 8555 §6.7 `rateLimited`: wait long before the next attempt.
    pub fn rate_limited(&self) -> bool {
        matches!(self, OrderError::Acme(instant_acme::Error::Api(p)) if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:rateLimited"))
    }

    fn account_gone(&self) -> bool {
        matches!(self, OrderError::Acme(instant_acme::Error::Api(p))
            if matches!(p.r#type.as_deref(), Some("urn:ietf:params:acme:error:accountDoesNotExist" | "urn:ietf:params:acme:error:unauthorized")))
    }
}

/// The account as kept on disk.
#[derive(Serialize, Deserialize)]
struct SavedAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Everything an order needs.
pub struct Client {
    pub directory: String,
    pub contact: Vec<String>,
    pub names: Vec<String>,
    pub challenge: Challenge,
    /// PEM trust anchor of a private ACME server; empty = the system's roots.
    pub ca_file: String,
    /// `data_dir/acme`.
    pub dir: PathBuf,
    pub tokens: Arc<Tokens>,
    pub certificates: Arc<Certificates>,
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> OrderError + '_ {
    move |source| OrderError::Io { path: path.display().to_string(), source }
}

impl Client {
    fn account_path(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, OrderError> {
        Ok(if self.ca_file.is_empty() { Account::builder()? } else { Account::builder_with_root(&self.ca_file)? })
    }

    /// The saved account, or a new one.
    async fn account(&self) -> Result<Account, OrderError> {
        let path = self.account_path();
        if let Some(saved) = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str::<SavedAccount>(&t).ok()) {
            if saved.directory == self.directory {
                return Ok(self.builder()?.from_credentials(saved.credentials).await?);
            }
        }
        let contact: Vec<&str> = self.contact.iter().map(String::as_str).collect();
        let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
        let (account, credentials) = self.builder()?.create(&new, self.directory.clone(), None).await?;
        mx6_queue::disk::private_dir(&self.dir).map_err(io(&self.dir))?;
        let saved = serde_json::to_vec_pretty(&SavedAccount { directory: self.directory.clone(), credentials }).unwrap_or_default();
        mx6_queue::disk::replace_private(&path, &saved).map_err(io(&path))?;
        tracing::info!(directory = %self.directory, account = account.id(), "ACME account created");
        Ok(account)
    }

    /// Order a certificate for the names, install it and reload.
    pub async fn obtain(&self) -> Result<(), OrderError> {
        let ids: Vec<Identifier> = self.names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = match self.account().await?.new_order(&NewOrder::new(&ids)).await.map_err(OrderError::from) {
            Err(e) if e.account_gone() => {
                tracing::warn!(error = %e, "the ACME server does not know our account; creating a new one");
                let _ = std::fs::remove_file(self.account_path());
                self.account().await?.new_order(&NewOrder::new(&ids)).await?
            }
            r => r?,
        };
        let proved = self.prove(&mut order).await;
        self.tokens.clear();
        self.certificates.clear_alpn_challenges();
        proved?;
        let key = order.finalize().await?;
        let chain = order.poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(60))).await?;
        let (cert_path, key_path) = tls::acme_paths(self.dir.parent().unwrap_or(&self.dir));
        mx6_queue::disk::replace_private(&key_path, key.as_bytes()).map_err(io(&key_path))?;
        mx6_queue::disk::replace_private(&cert_path, chain.as_bytes()).map_err(io(&cert_path))?;
        self.certificates.reload("new ACME certificate")?;
        Ok(())
    }

    /// Answer each pending authorization's challenge and wait until the order is ready.
    async fn prove(&self, order: &mut Order) -> Result<(), OrderError> {
        let kind = match self.challenge {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut authorizations = order.authorizations();
        while let Some(a) = authorizations.next().await {
            let mut a = a?;
            let name = a.identifier().to_string();
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                s => return Err(OrderError::Refused(format!("the authorization for {name} is {s:?}"))),
            }
            let mut ch = a
                .challenge(kind.clone())
                .ok_or_else(|| OrderError::Refused(format!("the server offers no {} challenge for {name}", self.challenge.as_str())))?;
            let ka = ch.key_authorization();
            match self.challenge {
                Challenge::Http01 => self.tokens.add(&ch.token, ka.as_str()),
                Challenge::TlsAlpn01 => self.certificates.set_alpn_challenge(&name, alpn_certificate(&name, ka.digest().as_ref())?),
            }
            ch.set_ready().await?;
            tracing::info!(name = %name, challenge = self.challenge.as_str(), "ACME challenge ready");
        }
        let status = order.poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(90))).await?;
        if status == OrderStatus::Ready {
            return Ok(());
        }
        let mut why = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(Ok(a)) = authorizations.next().await {
            for c in a.challenges.iter().filter(|c| c.r#type == kind) {
                if let Some(e) = &c.error {
                    why.push(format!("{}: {}", a.identifier(), e.detail.as_deref().unwrap_or("failed")));
                }
            }
        }
        Err(OrderError::Refused(format!("the order is {status:?}: {}", why.join("; "))))
    }
}

/// The self-signed certificate of a TLS-ALPN-01 challenge (RFC 8737 §3):
/// the name, and the SHA-256 of the key authorization in `acmeIdentifier`.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<rustls::sign::CertifiedKey>, OrderError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key)?;
    let der: CertificateDer<'static> = cert.der().clone();
    Ok(tls::unchecked_certified_key(vec![der], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))?)
}
