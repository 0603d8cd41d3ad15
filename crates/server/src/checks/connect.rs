//! The connect-time questions asked of the state store in one request (one
//! round trip to Redis): the client's reputation scores, an escalated
//! aggregate, concurrent connections, the connection rate and, on an
//! implicit-TLS listener, the TLS session rate. The decisions stay with
//! [`crate::checks::reputation`] and [`crate::checks::rate_limits`].

use std::sync::Arc;

use mx6_policy::reputation::Standing;

use crate::checks::rate_limits::{Asker, ConnGuard, RateLimits, Stop};
use crate::checks::reputation::Reputation;
use crate::checks::state::State;

/// What the connect stage learned.
pub struct Admission {
    /// The reputation standing and scores (finest level first); neutral
    /// when untracked or the store failed.
    pub standing: Standing,
    pub scores: Vec<f64>,
    /// The connection counts to hold for the session, or why not.
    pub limits: Result<ConnGuard, Stop>,
}

/// Ask and decide. `tracked`: the client's reputation is read (port-25
/// strangers). `a.bad` is set from the standing before the limits are judged.
pub async fn admit(state: &Arc<State>, limits: &RateLimits, reputation: &Reputation, a: &mut Asker, tracked: bool, tls: bool) -> Admission {
    let mut plan = limits.connect_plan(a, tls);
    let read = if tracked { reputation.read(a.ip).map(|op| plan.with(op)) } else { None };
    let answers = if plan.ops().is_empty() { Ok(Vec::new()) } else { state.batch(plan.ops(), mx6_store::now_ms()).await };
    let (standing, scores) = match read {
        Some(at) => reputation.standing(answers.as_ref().ok().and_then(|r| r.get(at))),
        None => (Standing::Neutral, Vec::new()),
    };
    a.bad = standing == Standing::Bad;
    let limits = match answers {
        Ok(answers) => limits.judge(state, a, plan, &answers).await,
        // Only the reputation read failed: neutral, as if unknown.
        Err(_) if plan.is_empty() => Ok(ConnGuard::none()),
        Err(e) => Err(e.into()),
    };
    Admission { standing, scores, limits }
}
