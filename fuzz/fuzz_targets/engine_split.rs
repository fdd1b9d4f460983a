#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| upcache::fuzzing::engine_split_bytes(data));
