//! PROXY protocol v1 and v2 headers (HAProxy's proxy-protocol.txt), as the
//! listener parses them from what it peeked.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let peer = "[::1]:9".parse().unwrap();
    if let Ok(Some((_addr, len))) = mx6_server::net::proxy::parse(data, peer) {
        assert!(len <= data.len(), "a header longer than the bytes it came in");
    }
});
