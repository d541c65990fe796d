//! Fuzzes the GPS intake (issue #3): arbitrary bytes from a "receiver" in, records and counters
//! out. Checks what must hold for any input: nothing panics; every sentence is either accepted
//! or rejected (never both, never lost); an accepted sentence is at most 130 bytes, starts with
//! `$`/`!`, ends with `\n` and carries a matching checksum; the fix builder takes it without
//! panicking; splitting the input differently changes nothing.
#![no_main]

use harmony::clock::Stamp;
use harmony::formats::nmea::{Event, FixBuilder, Intake};
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8], chunk: usize) -> (Vec<Vec<u8>>, u64) {
    let mut intake = Intake::new();
    let mut fixes = FixBuilder::default();
    let mut accepted = Vec::new();
    let mut rejected = 0;
    for part in data.chunks(chunk.max(1)) {
        intake.feed(part, |e| match e {
            Event::Accepted(s) => {
                assert!(s.len() <= 130);
                assert!(s[0] == b'$' || s[0] == b'!');
                assert_eq!(*s.last().unwrap(), b'\n');
                let body: Vec<u8> = s.iter().copied().filter(|&b| b != b'\r' && b != b'\n').collect();
                let star = body.iter().rposition(|&b| b == b'*').expect("checksum present");
                let sum = body[1..star].iter().fold(0u8, |a, &b| a ^ b);
                let want = u8::from_str_radix(std::str::from_utf8(&body[star + 1..]).unwrap(), 16).unwrap();
                assert_eq!(sum, want);
                let _ = fixes.update(Stamp::default(), s, |_| {});
                accepted.push(s.to_vec());
            }
            Event::Rejected(_) => rejected += 1,
        });
    }
    let c = intake.counters;
    assert_eq!(c.accepted, accepted.len() as u64);
    assert_eq!(c.rejected(), rejected);
    assert_eq!(c.bytes, data.len() as u64);
    (accepted, rejected)
}

fuzz_target!(|data: &[u8]| {
    let whole = run(data, data.len());
    let split = run(data, 7);
    assert_eq!(whole, split, "reassembly does not depend on read sizes");
});
