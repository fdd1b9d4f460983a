#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| upcache::fuzzing::decode_request_bytes(data));
