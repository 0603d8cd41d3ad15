//! Which macros go before each step (`SMFIC_MACRO`). By default, Postfix's
//! lists (`milter_connect_macros`, `milter_helo_macros`, …; see Postfix's
//! MILTER_README, "Sendmail macro emulation"), with the client's own macros
//! added at connect; a milter that sent `SMFIR_SETSYMLIST` in OPTNEG gets,
//! for that stage, exactly the macros it named of those the MTA knows.
//! Macros without a value are not sent (Postfix does the same), so a milter
//! can test `{auth_authen}` for presence.

use super::protocol::{Negotiated, Step};

/// The macros sent before `step` unless the milter chose its own.
pub fn defaults(step: Step) -> &'static [&'static str] {
    match step {
        Step::Connect => &[
            "j",
            "{daemon_name}",
            "{daemon_addr}",
            "v",
            "_",
            "{client_addr}",
            "{client_port}",
            "{client_name}",
            "{client_ptr}",
            "{client_resolve}",
            "{if_name}",
            "{if_addr}",
        ],
        Step::Helo => &["{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}"],
        Step::Mail => &["i", "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}", "{mail_host}", "{mail_mailer}"],
        Step::Rcpt => &["i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"],
        Step::Data | Step::Eoh | Step::Eom => &["i"],
        Step::Header | Step::Body => &[],
    }
}

/// `{name}` and `name` are the same macro.
fn same(a: &str, b: &str) -> bool {
    a.trim_matches(['{', '}']) == b.trim_matches(['{', '}'])
}

/// The macros to send before `step`, from what the MTA `known`s now: the
/// milter's list for the stage if it set one, else [`defaults`]; empty
/// values left out, in the order of the list.
pub fn select<'a>(neg: &Negotiated, step: Step, known: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    let pick = |name: &str| known.iter().find(|(k, v)| same(k, name) && !v.is_empty()).map(|(k, v)| (*k, v.as_str()));
    match neg.macro_list(step) {
        Some(list) => list.iter().filter_map(|n| pick(n)).collect(),
        None => defaults(step).iter().filter_map(|n| pick(n)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neg(macros: Vec<(u32, Vec<String>)>) -> Negotiated {
        Negotiated { version: 6, actions: 0, protocol: 0, macros }
    }

    #[test]
    fn postfix_defaults_and_a_milters_own_list() {
        let known = vec![
            ("i", "4aQ1".to_string()),
            ("{mail_addr}", "a@example.org".to_string()),
            ("{auth_authen}", String::new()),
            ("{client_addr}", "2001:db8::1".to_string()),
        ];
        assert_eq!(select(&neg(vec![]), Step::Mail, &known), [("i", "4aQ1"), ("{mail_addr}", "a@example.org")], "no empty auth macros");
        assert_eq!(select(&neg(vec![]), Step::Rcpt, &known), [("i", "4aQ1")]);
        let own = neg(vec![(2, vec!["client_addr".into(), "{mail_addr}".into(), "{unknown}".into()])]);
        assert_eq!(select(&own, Step::Mail, &known), [("{client_addr}", "2001:db8::1"), ("{mail_addr}", "a@example.org")]);
        assert_eq!(select(&own, Step::Data, &known), [("i", "4aQ1")], "other stages keep the defaults");
        assert!(select(&neg(vec![(3, vec![])]), Step::Rcpt, &known).is_empty(), "an empty list asks for none");
    }
}
