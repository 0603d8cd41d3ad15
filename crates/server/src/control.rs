//! The control socket `data_dir/control.sock` (mode 0600: root and the mx6
//! user only) through which `mx6 queue` acts on a running server. One JSON
//! request per line, one JSON answer per line:
//! `{"op":"list"}`, `{"op":"show","id":"…"}`, `{"op":"hold"|"release"|"delete","id":"…"}`,
//! `{"op":"flush"}`; for `mx6 state`: `{"op":"state_show"|"state_clear","parts":["2001:db8:1:2::/64",…]}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::queue_manager::QueueManager;
use crate::queue_registry::Listed;

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub op: String,
    #[serde(default)]
    pub id: Option<String>,
    /// `state_*`: prefixes or identities.
    #[serde(default)]
    pub parts: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub messages: Vec<Listed>,
    /// `show`: the message's header section.
    #[serde(default)]
    pub headers: String,
    #[serde(default)]
    pub affected: usize,
    /// `state_show`: entries per part, in the order asked.
    #[serde(default)]
    pub state: Vec<(String, Vec<mx6_store::Shown>)>,
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

pub async fn serve(path: PathBuf, queue: QueueManager, shared: Arc<crate::Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let _ = std::fs::remove_file(&path);
    let l = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "control socket unavailable; `mx6 queue` works on the stopped server only");
            return;
        }
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    let spool = Arc::new(shared.spool.clone());
    loop {
        tokio::select! {
            a = l.accept() => if let Ok((s, _)) = a {
                let (q, sp, sh) = (queue.clone(), spool.clone(), shared.clone());
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut line = String::new();
                    if BufReader::new(r.take(64 * 1024)).read_line(&mut line).await.is_err() {
                        return;
                    }
                    let resp = match serde_json::from_str::<Request>(&line) {
                        Ok(req) if req.op.starts_with("state_") => state(&sh, req).await,
                        Ok(req) => handle(&q, &sp, req).await,
                        Err(e) => Response { error: format!("bad request: {e}"), ..Default::default() },
                    };
                    let mut out = serde_json::to_vec(&resp).unwrap_or_default();
                    out.push(b'\n');
                    let _ = w.write_all(&out).await;
                });
            },
            _ = shutdown.changed() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn handle(q: &QueueManager, spool: &mx6_queue::SpoolHandle, req: Request) -> Response {
    let reg = &q.registry;
    match req.op.as_str() {
        "list" => Response { ok: true, messages: reg.list(), ..Default::default() },
        "show" => {
            let id = req.id.unwrap_or_default();
            let Some(m) = reg.list().into_iter().find(|m| m.id == id) else {
                return Response { error: format!("{id}: no such message in the queue"), ..Default::default() };
            };
            let headers = match reg.location(&id) {
                Some(loc) => {
                    let sp = spool.clone();
                    tokio::task::spawn_blocking(move || sp.read_body(&loc))
                        .await
                        .ok()
                        .and_then(|r| r.ok())
                        .map(|b| header_section(&b))
                        .unwrap_or_default()
                }
                None => String::new(),
            };
            Response { ok: true, messages: vec![m], headers, ..Default::default() }
        }
        op @ ("hold" | "release" | "delete" | "flush") => {
            let id = if op == "flush" { req.id } else { Some(req.id.unwrap_or_default()) };
            match reg.act(op, id.as_deref()) {
                Ok(n) => Response { ok: true, affected: n, ..Default::default() },
                Err(e) => Response { error: e, ..Default::default() },
            }
        }
        other => Response { error: format!("unknown operation {other}"), ..Default::default() },
    }
}

/// `mx6 state show|clear` on the running server's store.
async fn state(shared: &crate::Shared, req: Request) -> Response {
    let now = mx6_store::now_ms();
    let hl = shared.reputation.half_life();
    let mut resp = Response { ok: true, ..Default::default() };
    for part in req.parts {
        let r = if req.op == "state_clear" {
            shared.state.clear(&part).await.map(|n| resp.affected += n as usize)
        } else {
            shared.state.show(&part, now, hl).await.map(|v| resp.state.push((part.clone(), v)))
        };
        if let Err(e) = r {
            return Response { error: e.to_string(), ..Default::default() };
        }
    }
    resp
}

/// The header section of a message, as text.
pub fn header_section(b: &[u8]) -> String {
    let end = b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 2).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Ask the running server; `None` when none answers on the socket.
pub fn request(data_dir: &Path, req: &Request) -> Option<Result<Response, String>> {
    use std::io::{BufRead, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket_path(data_dir)).ok()?;
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
