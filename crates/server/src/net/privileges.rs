//! Dropping root: `mx6 serve` started as root binds its sockets (ports below
//! 1024 included), hands `data_dir` to the configured `user`, and continues as
//! that user with its primary group and no supplementary groups. With `user`
//! unset nothing changes (run it as an unprivileged user with
//! `CAP_NET_BIND_SERVICE` instead, as the shipped systemd unit does).

use std::path::Path;

use nix::unistd::{chown, setgid, setgroups, setuid, Uid, User};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("user `{0}` does not exist")]
    NoSuchUser(String),
    #[error("`user = \"{0}\"` needs mx6 to be started as root")]
    NotRoot(String),
    #[error("dropping to user `{user}`: {error}")]
    Drop { user: String, error: String },
    #[error("giving {path} to `{user}`: {error}")]
    Chown { path: String, user: String, error: String },
}

/// Give `data_dir` (recursively) to `name` and become that user.
pub fn drop_to(name: &str, data_dir: &Path) -> Result<(), PrivilegeError> {
    let user = User::from_name(name).ok().flatten().ok_or_else(|| PrivilegeError::NoSuchUser(name.into()))?;
    if !Uid::effective().is_root() {
        if Uid::effective() == user.uid {
            return Ok(());
        }
        return Err(PrivilegeError::NotRoot(name.into()));
    }
    chown_tree(data_dir, &user)?;
    let err = |e: nix::Error| PrivilegeError::Drop { user: name.into(), error: e.to_string() };
    setgroups(&[]).map_err(err)?;
    setgid(user.gid).map_err(err)?;
    setuid(user.uid).map_err(err)?;
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::Drop { user: name.into(), error: "root could be regained".into() });
    }
    tracing::info!(user = name, uid = user.uid.as_raw(), "dropped root privileges");
    Ok(())
}

fn chown_tree(path: &Path, user: &User) -> Result<(), PrivilegeError> {
    let err = |e: String| PrivilegeError::Chown { path: path.display().to_string(), user: user.name.clone(), error: e };
    chown(path, Some(user.uid), Some(user.gid)).map_err(|e| err(e.to_string()))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).map_err(|e| err(e.to_string()))? {
            let entry = entry.map_err(|e| err(e.to_string()))?;
            chown_tree(&entry.path(), user)?;
        }
    }
    Ok(())
}
