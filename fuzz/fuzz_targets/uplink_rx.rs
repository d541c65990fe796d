//! Fuzzes what the uplink reads from the radio (issue #5): arbitrary bytes from "the ground"
//! in. Checks what must hold for any input: nothing panics in framing, signature checking,
//! message parsing or command mapping; every frame the decoder yields is whole (its length is
//! its bytes); splitting the input differently yields the same frames.
#![no_main]

use harmony::uplink::frame::{Decoder, frame_len, parse};
use harmony::uplink::protocol::Command;
use harmony::uplink::signing::Verifier;
use libfuzzer_sys::fuzz_target;
use mavlink::MAVLinkMessageRaw;
use mavlink::dialects::common::MavMessage;

fn run(data: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let mut dec = Decoder::default();
    let mut verifier = Verifier::new([7u8; 32]);
    let mut frames = Vec::new();
    for part in data.chunks(chunk.max(1)) {
        dec.push(part);
        while let Some(raw) = dec.next_frame() {
            let _ = verifier.check(&raw, 1 << 40);
            if let Ok(MavMessage::COMMAND_LONG(c)) = parse(&raw) {
                let _ = Command::from_message(&c);
            }
            let bytes = match &raw {
                MAVLinkMessageRaw::V1(r) => r.raw_bytes().to_vec(),
                MAVLinkMessageRaw::V2(r) => r.raw_bytes().to_vec(),
            };
            assert_eq!(bytes.len(), frame_len(&raw));
            frames.push(bytes);
        }
    }
    frames
}

fuzz_target!(|data: &[u8]| {
    let whole = run(data, data.len());
    let split = run(data, 7);
    assert_eq!(whole, split, "framing depends on how the bytes arrive");
});
