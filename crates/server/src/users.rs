//! The users file (`local.users_file`, relative to `data_dir`): the mailboxes
//! that exist, their SMTP AUTH passwords (argon2id, PHC strings) and the extra
//! sender addresses each may use. When the file does not exist, every local part
//! of a local domain is accepted (catch-all) and nobody can authenticate.
//!
//! ```toml
//! [[user]]
//! address = "alice@example.org"
//! password = "$argon2id$v=19$m=19456,t=2,p=1$..."
//! senders = ["sales@example.org"]
//! ```
//!
//! The running server notices changes (by modification time), so `mx6 user`
//! takes effect without a restart. Passwords are never logged.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use mx6_policy::LocalUsers;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    #[serde(default)]
    pub user: Vec<User>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub address: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub senders: Vec<String>,
}

/// `Local@Domain.` → `local@domain` with the domain in A-label form.
pub fn normalize(address: &str) -> String {
    let a = address.trim();
    match a.rsplit_once('@') {
        Some((local, domain)) => format!("{}@{}", local.to_lowercase(), mx6_policy::normalize_domain(domain)),
        None => a.to_lowercase(),
    }
}

/// Read the file; `Ok(None)` when it does not exist.
pub fn read(path: &Path) -> Result<Option<UsersFile>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => toml::from_str(&t).map(Some).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Replace the file atomically (write, fsync, rename), mode 0600.
pub fn write(path: &Path, f: &UsersFile) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = toml::to_string(f).map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("toml.new");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    out.write_all(text.as_bytes()).and_then(|_| out.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    // Run as root against a server that dropped to its own user: keep the file
    // readable by that user (the owner of the old file, else of data_dir).
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(path).or_else(|_| std::fs::metadata(path.parent().unwrap_or(Path::new("."))));
    if let Ok(m) = owner {
        let _ = std::os::unix::fs::chown(&tmp, Some(m.uid()), Some(m.gid()));
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// An argon2id hash in PHC string form.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Most argon2 memory a stored hash may ask for (1 GiB); a users file that
/// asks for more is refused rather than obeyed.
const MAX_BLOCKS: usize = 1 << 20;

/// [`verify_password`] in memory the caller keeps: a thread that checks
/// many passwords reuses one block of argon2 memory instead of allocating
/// 19 MiB per check (which fragments the allocator under an AUTH flood).
pub fn verify_in(hash: &str, password: &str, memory: &mut Vec<argon2::Block>) -> bool {
    let Ok(h) = PasswordHash::new(hash) else { return false };
    let Ok(algorithm) = argon2::Algorithm::try_from(h.algorithm) else { return false };
    let version = match h.version {
        Some(v) => match argon2::Version::try_from(v) {
            Ok(v) => v,
            Err(_) => return false,
        },
        None => argon2::Version::V0x13,
    };
    let Ok(params) = argon2::Params::try_from(&h) else { return false };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else { return false };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
    let blocks = params.block_count();
    if blocks > MAX_BLOCKS {
        return false;
    }
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let ok =
        Argon2::new(algorithm, version, params).hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks]);
    // Output's comparison is constant-time.
    ok.is_ok() && password_hash::Output::new(&out).is_ok_and(|o| o == expected)
}

/// What the server knows from the file.
#[derive(Debug)]
pub struct Users {
    pub list: Vec<User>,
    /// The mailboxes, for recipient checks.
    pub local: LocalUsers,
}

impl Default for Users {
    fn default() -> Self {
        Users { list: Vec::new(), local: LocalUsers::CatchAll }
    }
}

impl Users {
    fn from_file(f: Option<UsersFile>) -> Users {
        match f {
            None => Users::default(),
            Some(f) => {
                let local = LocalUsers::Listed(f.user.iter().map(|u| normalize(&u.address)).collect::<HashSet<_>>());
                Users { list: f.user, local }
            }
        }
    }

    pub fn find(&self, address: &str) -> Option<&User> {
        let a = normalize(address);
        self.list.iter().find(|u| normalize(&u.address) == a)
    }

    /// May `user` use `sender` as MAIL FROM? Its own address and its `senders`.
    pub fn may_send_as(&self, user: &str, sender: &str) -> bool {
        let s = normalize(sender);
        self.find(user).is_some_and(|u| normalize(&u.address) == s || u.senders.iter().any(|x| normalize(x) == s))
    }
}

/// The users file, reloaded when it changes.
pub struct UserDb {
    path: PathBuf,
    state: Mutex<(Option<SystemTime>, Arc<Users>)>,
}

impl UserDb {
    pub fn open(path: PathBuf) -> Result<UserDb, String> {
        let db = UserDb { path, state: Mutex::new((None, Arc::new(Users::default()))) };
        db.reload()?;
        Ok(db)
    }

    fn mtime(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path).and_then(|m| m.modified()).ok()
    }

    fn reload(&self) -> Result<Arc<Users>, String> {
        let mtime = self.mtime();
        let users = Users::from_file(read(&self.path)?);
        let users = Arc::new(users);
        if let Ok(mut s) = self.state.lock() {
            *s = (mtime, users.clone());
        }
        Ok(users)
    }

    /// The current users, re-read when the file's modification time changed.
    /// A file that became unreadable keeps the last good state (and is logged).
    pub fn get(&self) -> Arc<Users> {
        let mtime = self.mtime();
        let (known, current) = match self.state.lock() {
            Ok(s) => (s.0, s.1.clone()),
            Err(_) => return Arc::new(Users::default()),
        };
        if known == mtime {
            return current;
        }
        match self.reload() {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "users file unreadable; keeping the previous one");
                current
            }
        }
    }

    /// Check credentials (slow on purpose: argon2). Unknown users cost the same
    /// as known ones, so timing does not reveal which addresses exist.
    pub fn authenticate(&self, username: &str, password: &str) -> bool {
        self.authenticate_in(username, password, &mut Vec::new())
    }

    /// [`UserDb::authenticate`] with argon2 memory the caller keeps ([`verify_in`]).
    pub fn authenticate_in(&self, username: &str, password: &str, memory: &mut Vec<argon2::Block>) -> bool {
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let users = self.get();
        match users.find(username).filter(|u| !u.password.is_empty()) {
            Some(u) => verify_in(&u.password, password, memory),
            None => {
                let d = DUMMY.get_or_init(|| hash_password("mx6 timing equaliser").unwrap_or_default());
                let _ = verify_in(d, password, memory);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verify_and_senders() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "s3cret"));
        assert!(!verify_password(&h, "wrong"));
        let mut mem = Vec::new();
        assert!(verify_in(&h, "s3cret", &mut mem) && !verify_in(&h, "wrong", &mut mem));
        assert_eq!(mem.len(), 19456, "one block of memory, reused");
        assert!(
            !verify_in("$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "x", &mut mem),
            "absurd memory is refused"
        );
        let u = Users::from_file(Some(UsersFile {
            user: vec![User { address: "Alice@Example.org".into(), password: h, senders: vec!["sales@example.org".into()] }],
        }));
        assert!(matches!(&u.local, LocalUsers::Listed(s) if s.contains("alice@example.org")));
        assert!(u.may_send_as("alice@example.org", "ALICE@example.org"));
        assert!(u.may_send_as("alice@example.org", "sales@example.org"));
        assert!(!u.may_send_as("alice@example.org", "bob@example.org"));
    }
}
