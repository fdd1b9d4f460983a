//! Replays every committed fuzz input (seed corpus and minimized crashes under `fuzz/`)
//! through the same checks the cargo-fuzz targets run, on stable, with no fuzzer.
//!
//! Only files the repository tracks are read: `git ls-files` lists them, or, where there is no
//! git checkout (a source package), the directory listing less what `.gitignore` ignores there
//! (dotfiles in a corpus, `tmp*` in artifacts). So a local fuzzing run's leftovers never decide
//! the result, and a fresh clone replays exactly what the last commit holds.

use std::path::{Path, PathBuf};
use std::process::Command;

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 5] = [
    ("decode_request", upcache::fuzzing::decode_request_bytes),
    ("round_trip", upcache::fuzzing::round_trip_bytes),
    ("client_decode", upcache::fuzzing::client_decode_bytes),
    ("store_model", upcache::fuzzing::store_model_bytes),
    ("engine_split", upcache::fuzzing::engine_split_bytes),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The tracked files under `dir` (relative to the crate root), or `None` without a git
/// checkout. Placeholders (dotfiles such as `.keep`) are left out.
fn git_tracked(dir: &str) -> Option<Vec<PathBuf>> {
    // Paths come relative to the directory git runs in: the crate root.
    let out = Command::new("git")
        .arg("-C")
        .arg(root())
        .args(["ls-files", "-z", "--"])
        .arg(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None; // not a git checkout
    }
    Some(
        out.stdout
            .split(|&b| b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| root().join(String::from_utf8_lossy(p).as_ref()))
            .filter(|p| !is_dotfile(p))
            .collect(),
    )
}

fn is_dotfile(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Whether `.gitignore` ignores `name` in `dir`: `/fuzz/corpus/*/.*` and
/// `/fuzz/artifacts/*/tmp*` (a fuzzer's scratch files); dotfiles are placeholders anyway.
fn ignored(dir: &str, name: &str) -> bool {
    name.starts_with('.') || (dir.starts_with("fuzz/artifacts/") && name.starts_with("tmp"))
}

/// The files under `dir` that `.gitignore` does not ignore (for a tree without git).
fn not_ignored(dir: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root().join(dir)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| !ignored(dir, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect()
}

fn committed(dir: &str) -> Vec<PathBuf> {
    let mut files = git_tracked(dir).unwrap_or_else(|| not_ignored(dir));
    files.sort();
    files
}

/// Runs `check` on every file; returns the files it panicked on.
fn replay(check: Check, files: &[PathBuf]) -> Vec<String> {
    let mut failed = Vec::new();
    for f in files {
        let data = std::fs::read(f)
            .unwrap_or_else(|e| panic!("{}: tracked but unreadable: {e}", f.display()));
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(f.display().to_string());
        }
    }
    failed
}

#[test]
fn every_committed_input_passes_its_check() {
    let mut failed = Vec::new();
    let mut replayed = Vec::new();
    for (target, check) in TARGETS {
        let corpus = committed(&format!("fuzz/corpus/{target}"));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{target} holds no committed input: the replay would prove nothing"
        );
        let artifacts = committed(&format!("fuzz/artifacts/{target}"));
        let files: Vec<PathBuf> = corpus.into_iter().chain(artifacts).collect();
        failed.extend(replay(check, &files));
        replayed.push((target, files.len()));
    }
    eprintln!("replayed: {replayed:?}");
    assert!(
        failed.is_empty(),
        "inputs that fail their check: {failed:#?}"
    );
    assert_eq!(replayed.len(), TARGETS.len());
}

/// The replay reports a failing check: a check that always panics fails on every input.
#[test]
fn a_failing_check_is_reported() {
    let files: Vec<PathBuf> = committed("fuzz/corpus/decode_request")
        .into_iter()
        .take(3)
        .collect();
    assert_eq!(files.len(), 3, "the decode_request corpus has 3 inputs");
    let failed = replay(|_| panic!("a check that always fails"), &files);
    assert_eq!(failed.len(), files.len());
    assert!(replay(|_| {}, &files).is_empty());
}

/// Files a local fuzzing run leaves behind are not read.
#[test]
fn only_tracked_files_are_listed() {
    assert!(ignored("fuzz/artifacts/engine_split", "tmp8Xa2"));
    assert!(ignored("fuzz/corpus/engine_split", ".cur_input"));
    assert!(ignored("fuzz/artifacts/engine_split", ".keep"));
    assert!(!ignored("fuzz/corpus/engine_split", "tmp-named-seed"));
    assert!(!ignored("fuzz/artifacts/engine_split", "crash-1234"));
    // With git, the listing is what git tracks, all of it on disk.
    if let Some(tracked) = git_tracked("fuzz/corpus/round_trip") {
        let on_disk = not_ignored("fuzz/corpus/round_trip");
        assert!(!tracked.is_empty());
        let missing: Vec<_> = tracked.iter().filter(|p| !on_disk.contains(p)).collect();
        assert!(missing.is_empty(), "tracked but not on disk: {missing:?}");
    }
}
