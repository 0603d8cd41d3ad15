//! The control socket `data_dir/control.sock` (mode 0600: root and the mx6
//! user only) served by `mx6 serve`: queue requests go to the queue
//! registry, state requests to the state store, report requests to the
//! report sender.
//!
//! Defends against: oversized requests (64 KiB), unknown operations (an error
//! response, never a panic).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mx6_queue::ops::Action;
use mx6_queue::SpoolHandle;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::checks::state::State;
use crate::control::protocol::{Request, Response};
use crate::queue::manager::QueueManager;

/// What the control socket acts on.
pub struct Control {
    pub queue: QueueManager,
    pub spool: SpoolHandle,
    pub state: Arc<State>,
    /// Reputation half-life (ms), for showing decayed scores.
    pub half_life: u64,
    pub reports: Arc<crate::reports::outgoing::Reports>,
}

/// Unix socket paths are limited to 108 octets (`sun_path`).
const MAX_SOCKET_PATH: usize = 107;

/// Bind the control socket; a path that cannot be bound is an error, never a
/// server that runs without it (the offline tools would then refuse to act).
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(format!(
            "control socket {}: the path is {len} octets; a unix socket path may have at most {MAX_SOCKET_PATH}: choose a shorter data_dir",
            path.display()
        ));
    }
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(l)
}

pub async fn serve(l: UnixListener, path: PathBuf, control: Arc<Control>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            a = l.accept() => if let Ok((s, _)) = a {
                let c = control.clone();
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut line = String::new();
                    if BufReader::new(r.take(64 * 1024)).read_line(&mut line).await.is_err() {
                        return;
                    }
                    let resp = match serde_json::from_str::<Request>(&line) {
                        Ok(req) => c.handle(req).await,
                        Err(e) => Response::error(format!("bad request: {e}")),
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

impl Control {
    pub async fn handle(&self, req: Request) -> Response {
        let (action, id) = match req {
            Request::Hold { id } => (Action::Hold, Some(id)),
            Request::Release { id } => (Action::Release, Some(id)),
            Request::Delete { id } => (Action::Delete, Some(id)),
            Request::Flush => (Action::Flush, None),
            Request::ReportFlush => {
                return match self.reports.send(true).await {
                    Ok(n) => Response { ok: true, affected: n, ..Default::default() },
                    Err(e) => Response::error(e.to_string()),
                }
            }
            other => return self.read(other).await,
        };
        match self.queue.act(action, id.as_deref()).await {
            Ok(n) => Response { ok: true, affected: n, ..Default::default() },
            Err(e) => Response::error(e),
        }
    }

    /// The list of messages (read from the spool off the runtime).
    async fn list(&self) -> Vec<mx6_queue::listing::Listed> {
        let (reg, spool) = (self.queue.registry.clone(), self.spool.clone());
        tokio::task::spawn_blocking(move || reg.list(&spool)).await.unwrap_or_default()
    }

    /// The requests that only read.
    async fn read(&self, req: Request) -> Response {
        let reg = &self.queue.registry;
        match req {
            Request::List => Response { ok: true, messages: self.list().await, ..Default::default() },
            Request::Show { id } => {
                let Some(m) = self.list().await.into_iter().find(|m| m.id == id) else {
                    return Response::error(format!("{id}: no such message in the queue"));
                };
                let headers = match reg.location(&id) {
                    Some(loc) => {
                        let sp = self.spool.clone();
                        tokio::task::spawn_blocking(move || sp.read_body(&loc))
                            .await
                            .ok()
                            .and_then(|r| r.ok())
                            .map(|b| String::from_utf8_lossy(mx6_message::header_section(&b)).into_owned())
                            .unwrap_or_default()
                    }
                    None => String::new(),
                };
                Response { ok: true, messages: vec![m], headers, ..Default::default() }
            }
            Request::StateShow { parts } => self.state(parts, false).await,
            Request::StateClear { parts } => self.state(parts, true).await,
            Request::ReportList => match self.reports.list().await {
                Ok(reports) => Response { ok: true, reports, ..Default::default() },
                Err(e) => Response::error(e.to_string()),
            },
            Request::ReportShow { id } => match self.reports.show(&id).await {
                Ok(document) => Response { ok: true, document, ..Default::default() },
                Err(e) => Response::error(e.to_string()),
            },
            Request::Hold { .. } | Request::Release { .. } | Request::Delete { .. } | Request::Flush | Request::ReportFlush => {
                Response::error("not a read request")
            }
        }
    }

    /// `mx6 state show|clear` on the running server's store.
    async fn state(&self, parts: Vec<String>, clear: bool) -> Response {
        let now = mx6_store::now_ms();
        let mut resp = Response { ok: true, ..Default::default() };
        for part in parts {
            let r = if clear {
                self.state.clear(&part).await.map(|n| resp.affected += n as usize)
            } else {
                self.state.show(&part, now, self.half_life).await.map(|v| resp.state.push((part.clone(), v)))
            };
            if let Err(e) = r {
                return Response::error(e.to_string());
            }
        }
        resp
    }
}
