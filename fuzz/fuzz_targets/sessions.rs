//! The sessions core under random request sequences, its promises checked after each step.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| signalling::fuzzing::sessions(data));
