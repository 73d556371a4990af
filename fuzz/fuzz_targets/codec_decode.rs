//! The ledger's record decoder on arbitrary bytes: every input is either decoded or
//! refused with an error — never a panic, and never an allocation sized by a length the
//! input claims (libFuzzer's -malloc_limit_mb catches those; see docs/reliability.md).
#![no_main]

use attest_ledger::codec::{self, read_segment};
use attest_ledger::projection::PVal;
use attest_ledger::Event;
use libfuzzer_sys::fuzz_target;

/// Whatever decodes must survive a round trip through the encoder unchanged.
fn round_trips<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = codec::encode(value).expect("a decoded value encodes");
    let again: T = codec::decode(&bytes).expect("an encoded value decodes");
    assert_eq!(&again, value);
}

fuzz_target!(|data: &[u8]| {
    // The bytes as one event body and as one projection value.
    if let Ok(event) = codec::decode::<Event>(data) {
        round_trips(&event);
    }
    if let Ok(value) = codec::decode::<PVal>(data) {
        round_trips(&value);
    }
    // The bytes as a stored log segment: frame every record, check its hash, decode it.
    for record in read_segment(data) {
        let Ok(record) = record else { break };
        let _ = record.computed_hash();
        if let Ok(event) = record.event() {
            round_trips(&event);
        }
    }
});
