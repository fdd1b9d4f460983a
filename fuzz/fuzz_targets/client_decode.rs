#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| upcache::fuzzing::client_decode_bytes(data));
