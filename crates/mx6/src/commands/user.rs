//! `mx6 user add|passwd|del|list`: the users file (SMTP AUTH users and
//! mailboxes, argon2id hashes); passwords are read from stdin.

use clap::Subcommand;
use mx6_config::Config;

#[derive(Subcommand)]
pub enum UserCmd {
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

fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| format!("reading the password from stdin: {e}"))?;
    let p = line.trim_end_matches(['\r', '\n']).to_string();
    if p.is_empty() {
        return Err("empty password (give it on stdin)".into());
    }
    Ok(p)
}

pub fn run(cfg: &Config, cmd: &UserCmd) -> Result<(), String> {
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
