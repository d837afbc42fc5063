//! The routing core under random event sequences, its invariants checked after each step.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| signalling::fuzzing::router(data));
