//! Routing the recipients a milter left: those it kept keep their route, those
//! it added (`SMFIR_ADDRCPT`) are routed like an authenticated client's
//! recipients (the milter is trusted, the client is not), and any that are not
//! deliverable are left out with a log line rather than refusing the message.

use std::net::IpAddr;

use mx6_policy::{decide_recipient, LocalUsers, RecipientVerdict, Route, Routing};

/// `(recipients, routes)` after the filters, in the filters' order.
pub fn reroute(
    routing: &Routing,
    users: &LocalUsers,
    client: IpAddr,
    queue_id: &str,
    before: &[String],
    routes: &[Route],
    after: Vec<String>,
) -> (Vec<String>, Vec<Route>) {
    let mut kept = Vec::with_capacity(after.len());
    let mut kept_routes = Vec::with_capacity(after.len());
    for r in after {
        let route = match before.iter().position(|b| b.eq_ignore_ascii_case(&r)) {
            Some(i) => routes.get(i).cloned(),
            None => match mx6_smtp::address::parse_mailbox(&r, true) {
                Ok((mb, _)) => match decide_recipient(routing, users, client, true, &mb) {
                    RecipientVerdict::Accept(route) => Some(route),
                    RecipientVerdict::Reject { reason, .. } => {
                        tracing::warn!(queue_id, rcpt = %r, reason, "recipient added by a milter is not deliverable; left out");
                        None
                    }
                },
                Err(_) => {
                    tracing::warn!(queue_id, rcpt = %r, "recipient added by a milter is not an address; left out");
                    None
                }
            },
        };
        if let Some(route) = route {
            kept_routes.push(route);
            kept.push(r);
        }
    }
    (kept, kept_routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_added_and_refused() {
        let routing = Routing::new(&["mx.test".into()], &[], vec![]);
        let before = vec!["a@mx.test".to_string(), "b@mx.test".to_string()];
        let routes =
            vec![Route::Local { user: "a".into(), domain: "mx.test".into() }, Route::Local { user: "b".into(), domain: "mx.test".into() }];
        let after = vec!["B@mx.test".to_string(), "new@mx.test".to_string(), "x@elsewhere.test".to_string(), "not an address".to_string()];
        let ip = "2001:db8::1".parse().unwrap();
        let (r, routes) = reroute(&routing, &LocalUsers::CatchAll, ip, "q", &before, &routes, after);
        assert_eq!(r, ["B@mx.test", "new@mx.test", "x@elsewhere.test"]);
        assert_eq!(routes[0], Route::Local { user: "b".into(), domain: "mx.test".into() });
        assert_eq!(routes[1], Route::Local { user: "new".into(), domain: "mx.test".into() });
        assert_eq!(routes[2], Route::Relay);
    }
}
