//! Replays every committed fuzz input (seed corpus and minimized crashes under `fuzz/`)
//! through the same checks the cargo-fuzz targets run, on stable, with no fuzzer.

use std::path::Path;

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 5] = [
    ("decode_request", upcache::fuzzing::decode_request_bytes),
    ("round_trip", upcache::fuzzing::round_trip_bytes),
    ("client_decode", upcache::fuzzing::client_decode_bytes),
    ("store_model", upcache::fuzzing::store_model_bytes),
    ("engine_split", upcache::fuzzing::engine_split_bytes),
];

fn inputs(target: &str) -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if e.path().is_file() && !name.to_string_lossy().starts_with('.') {
                files.push(e.path());
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_committed_input_passes_its_check() {
    let mut total = 0;
    for (target, check) in TARGETS {
        let files = inputs(target);
        assert!(!files.is_empty(), "no seeds for {target}");
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let r = std::panic::catch_unwind(|| check(&data));
            assert!(r.is_ok(), "{target}: {} fails", f.display());
            total += 1;
        }
    }
    assert!(total >= 5);
}
