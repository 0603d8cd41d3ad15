//! SMTP AUTH (RFC 4954) credentials, defended against floods:
//!
//! - every attempt is counted against the client's prefix (`auth_failures`
//!   rate-limit rules) *before* its password is checked, so attempts in
//!   flight count and at most the limit is ever verified per prefix and
//!   window; a success takes its count back;
//! - argon2 (19 MiB and tens of milliseconds per check, on purpose) runs on a
//!   bounded pool of threads, one per core ([`crate::session::passwords`]):
//!   attempts beyond it wait up to [`AUTH_WAIT`] for a thread, then get
//!   `454 4.7.0`, so memory stays flat however many connections try at once;
//! - a failure waits `submission.auth_failure_delay` before its 535.

use std::time::Duration;

use mx6_policy::ratelimit::Kind;
use mx6_smtp::{reply, Answer};

use crate::session::context::{slog, Ctx};
use crate::session::passwords::Busy;
use crate::session::services::Services;

/// Longest wait for a free hashing slot.
pub const AUTH_WAIT: Duration = Duration::from_secs(10);

pub async fn authenticate(
    ctx: &mut Ctx,
    s: &std::sync::Arc<Services>,
    mechanism: &'static str,
    username: String,
    password: String,
) -> Answer {
    let log_user: String = username.chars().filter(|c| !c.is_control()).take(128).collect();
    if let Err(stop) = s.rate_limits.count(&s.state, Kind::AuthFailures, &ctx.asker).await {
        let r = ctx.stopped(s, "auth", stop, |_| reply::auth_throttled()).await;
        return Answer::Reject(if r.code == 454 { r } else { reply::auth_temporary() });
    }
    let ok = s.passwords.check(&username, password, AUTH_WAIT).await;
    match ok {
        Ok(true) => {
            s.rate_limits.uncount(&s.state, Kind::AuthFailures, &ctx.asker).await;
            let user = crate::users::normalize(&username);
            slog!(info, ctx, user = %user, mechanism, "authenticated");
            ctx.auth = Some(user);
            ctx.auth_mechanism = Some(mechanism);
            ctx.asker.standing.authenticated = true;
            Answer::Accept
        }
        Ok(false) => {
            tokio::time::sleep(s.submission.auth_failure_delay).await;
            ctx.rejected(s, "auth", "auth_failed", format_args!("authentication failed, user={log_user} mechanism={mechanism}"));
            Answer::Reject(reply::auth_invalid())
        }
        Err(Busy::NoSlot) => {
            // Not judged: the attempt does not count against the client.
            s.rate_limits.uncount(&s.state, Kind::AuthFailures, &ctx.asker).await;
            ctx.rejected(s, "auth", "auth_busy", format_args!("no free slot to check credentials within {AUTH_WAIT:?}, user={log_user}"));
            Answer::Reject(reply::auth_busy())
        }
        Err(Busy::Gone) => Answer::Reject(reply::auth_temporary()),
    }
}
