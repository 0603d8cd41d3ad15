//! Serve a zone file (the mx6_testdns text form) on 127.0.0.1:PORT until
//! killed. Used by the benchmarks: `cargo run --release -p mx6-testdns
//! --example serve -- ZONEFILE PORT`.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(file), Some(port)) = (args.get(1), args.get(2).and_then(|p| p.parse::<u16>().ok())) else {
        eprintln!("usage: serve ZONEFILE PORT");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let dns = mx6_testdns::TestDns::start_on(mx6_testdns::Zone::parse(&text), port);
    println!("serving {file} on {}", dns.addr);
    loop {
        std::thread::park();
    }
}
