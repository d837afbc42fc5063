//! Inbound message parsing and the playerId/sfuId edits made to forwarded messages.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| signalling::fuzzing::message(data));
