#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| upcache::fuzzing::store_model_bytes(data));
