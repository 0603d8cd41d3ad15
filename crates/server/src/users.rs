//! The users file (`local.users_file`, relative to `data_dir`): the mailboxes
//! that exist. When the file does not exist, every local part of a local domain
//! is accepted (catch-all), which the built-in defaults rely on.
//!
//! ```toml
//! [[user]]
//! address = "alice@example.org"
//! password = "$argon2id$..."    # used by SMTP AUTH
//! senders = ["sales@example.org"]
//! ```

use std::collections::HashSet;
use std::path::Path;

use mx6_policy::LocalUsers;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<User>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct User {
    address: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    senders: Vec<String>,
}

/// Load the users file; `CatchAll` when it does not exist.
pub fn load(path: &Path) -> Result<LocalUsers, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LocalUsers::CatchAll),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let f: UsersFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let set: HashSet<String> = f.user.into_iter().map(|u| u.address.trim_end_matches('.').to_lowercase()).collect();
    Ok(LocalUsers::Listed(set))
}
