//! What a remote SMTP or LMTP server answers, fed to the delivery client
//! state machine split arbitrarily: it never panics, never sends after it is
//! done, and ends with an outcome for every recipient.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mx6_smtp::client::{Action, Client, ClientConfig, TlsPolicy, Transaction};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    let cfg = ClientConfig {
        hostname: "me.test".into(),
        tls: if mode & 1 == 0 { TlsPolicy::Opportunistic } else { TlsPolicy::Required },
        auth: (mode & 2 != 0).then(|| ("u".to_string(), "p".to_string())),
        lmtp: mode & 4 != 0,
    };
    let txn = Transaction { from: "a@x.test".into(), rcpts: vec!["b@y.test".into(), "c@y.test".into()], size: 10, eight_bit: mode & 8 != 0, smtputf8: false };
    let mut c = Client::new(cfg, txn, b"Subject: x\r\n\r\nbody\r\n".to_vec());
    let step = 1 + (mode as usize >> 4);
    for chunk in input.chunks(step) {
        c.receive(chunk);
        while let Some(a) = c.poll() {
            match a {
                Action::StartTls => c.tls_established(),
                Action::Send(_) => {}
                Action::Done(o) => {
                    assert_eq!(o.rcpts.len(), 2);
                    return;
                }
            }
        }
    }
});
