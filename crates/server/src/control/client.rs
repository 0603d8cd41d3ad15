//! The client side of the control socket, for `mx6 queue` and `mx6 state`.

use std::io::{BufRead, Write};
use std::path::Path;

use crate::control::protocol::{socket_path, Request, Response};

/// Ask the running server; `None` when none answers on the socket (an error
/// when the socket is there but may not be used, e.g. by another user).
pub fn request(data_dir: &Path, req: &Request) -> Option<Result<Response, String>> {
    let path = socket_path(data_dir);
    let mut s = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Some(Err(format!("{}: {e} (run mx6 as root or as the user mx6 runs as)", path.display())));
        }
        Err(_) => return None,
    };
    let mut line = serde_json::to_string(req).unwrap_or_default();
    line.push('\n');
    if let Err(e) = s.write_all(line.as_bytes()) {
        return Some(Err(e.to_string()));
    }
    let mut resp = String::new();
    if let Err(e) = std::io::BufReader::new(s).read_line(&mut resp) {
        return Some(Err(e.to_string()));
    }
    Some(serde_json::from_str(&resp).map_err(|e| e.to_string()))
}
