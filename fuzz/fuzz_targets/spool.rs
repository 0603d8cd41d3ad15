//! Spool segments and done-logs as recovery reads them: arbitrary bytes in a
//! segment file are scanned (every record found is whole and checks out,
//! bad regions never overlap records), and arbitrary done-log text is parsed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mx6_queue::{donelog, recovery};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("mx6-fuzz-seg-{}", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let scan = recovery::scan_segment(&path, 1, None).unwrap();
    let mut covered = 0u64;
    let mut spans: Vec<(u64, u64)> = scan.records.iter().map(|r| (r.location.offset, r.location.len())).collect();
    spans.extend(scan.bad.iter().map(|b| (b.offset, b.len)));
    spans.sort();
    for (off, len) in spans {
        assert_eq!(off, covered, "records and bad regions tile the segment");
        covered = off + len;
    }
    assert_eq!(covered, data.len() as u64);
    let mut facts = donelog::Facts::default();
    donelog::parse(data, &mut facts);
});
