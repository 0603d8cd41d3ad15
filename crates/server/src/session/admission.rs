//! Before the greeting: the client's reputation standing, escalation,
//! connection limits (and, on an implicit-TLS listener, the TLS session
//! rate), asked of the state store in one request, then the early-talker
//! test ([`crate::session::pregreet`]).

use mx6_config::{ListenerKind, PregreetAction};
use mx6_policy::reputation::Event as RepEvent;
use mx6_smtp::reply;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::checks::rate_limits::ConnGuard;
use crate::net::conn::Conn;
use crate::session::context::{slog, Ctx};
use crate::session::pregreet::{self, Pregreet};
use crate::session::services::Services;

/// `None` when the client was refused (the reply is written); otherwise the
/// connection counts to hold for the session and any bytes an early talker
/// sent that the session should read (`pregreet.action = "log"`).
pub async fn admit<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &mut Ctx,
    s: &Services,
    conn: &mut Conn<S>,
    kind: ListenerKind,
) -> Option<(ConnGuard, Vec<u8>)> {
    let a = crate::checks::connect::admit(&s.state, &s.rate_limits, &s.reputation, &mut ctx.asker, ctx.tracked, conn.is_tls()).await;
    ctx.reputation = a.standing;
    ctx.rep_scores = a.scores;
    let hostname = s.hostname.as_str();
    let guard = match a.limits {
        Ok(g) => g,
        Err(stop) => {
            let r = ctx.stopped(s, "connect", stop, |p| reply::rate_limited_connect(hostname, p)).await;
            let _ = conn.write_all(&r.to_bytes()).await;
            return None;
        }
    };
    let p = &s.pregreet;
    if p.wait.is_zero() || kind != ListenerKind::Smtp || ctx.mynetworks {
        return Some((guard, Vec::new()));
    }
    match pregreet::listen(conn, hostname, p.wait).await {
        Pregreet::Quiet => Some((guard, Vec::new())),
        Pregreet::Gone => None,
        Pregreet::Talked(bytes) => {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).escape_debug().to_string();
            ctx.record(s, RepEvent::EarlyTalker);
            if p.action == PregreetAction::Refuse {
                ctx.rejected(s, "connect", "early_talker", format_args!("spoke before the greeting ended: \"{shown}\""));
                let _ = conn.write_all(&reply::early_talker().to_bytes()).await;
                return None;
            }
            slog!(info, ctx, "early talker (logged only): \"{shown}\"");
            Some((guard, bytes))
        }
    }
}
