//! Request-head parsing and the WebSocket handshake checks on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| signalling::fuzzing::handshake(data));
