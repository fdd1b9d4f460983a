#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| upcache::fuzzing::round_trip_bytes(data));
