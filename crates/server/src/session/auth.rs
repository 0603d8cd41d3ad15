//! SMTP AUTH (RFC 4954) credentials: checked off the runtime (argon2 is slow
//! on purpose); a failure waits `submission.auth_failure_delay` and counts
//! against the client's prefix (`auth_failures` rate-limit rules).

use mx6_policy::ratelimit::Kind;
use mx6_smtp::{reply, Answer};

use crate::session::context::{slog, Ctx};
use crate::session::services::Services;

pub async fn authenticate(ctx: &mut Ctx, s: &std::sync::Arc<Services>, mechanism: &str, username: String, password: String) -> Answer {
    let log_user: String = username.chars().filter(|c| !c.is_control()).take(128).collect();
    if let Err(stop) = s.rate_limits.at_limit(&s.state, Kind::AuthFailures, &ctx.asker).await {
        let r = ctx.stopped(s, "auth", stop, |_| reply::auth_throttled()).await;
        return Answer::Reject(if r.code == 454 { r } else { reply::auth_temporary() });
    }
    let s2 = s.clone();
    let user2 = username.clone();
    let ok = tokio::task::spawn_blocking(move || s2.users.authenticate(&user2, &password)).await;
    match ok {
        Ok(true) => {
            let user = crate::users::normalize(&username);
            slog!(info, ctx, user = %user, mechanism, "authenticated");
            ctx.auth = Some(user);
            ctx.asker.standing.authenticated = true;
            Answer::Accept
        }
        Ok(false) => {
            let _ = s.rate_limits.count(&s.state, Kind::AuthFailures, &ctx.asker).await;
            tokio::time::sleep(s.submission.auth_failure_delay).await;
            ctx.rejected(s, "auth", "auth_failed", format_args!("authentication failed, user={log_user} mechanism={mechanism}"));
            Answer::Reject(reply::auth_invalid())
        }
        Err(_) => Answer::Reject(reply::auth_temporary()),
    }
}
