//! The original's README scenario, across real processes: one process sets a key, another
//! (started separately, with no setup) reads it from the same named cache.
//!
//! `cargo run --release --example tvhosts` runs both roles: it re-runs itself as a `writer`
//! process and a `reader` process, which open the cache `TVHosts` independently.

use std::process::Command;
use std::time::{Duration, Instant};

use upcache::UpCache;

const KEY: &[u8] = b"Light Entertainment Awards";

fn writer() -> upcache::Result<()> {
    let cache = UpCache::open("TVHosts")?;
    cache.set(KEY, b"Dickie Attenborough")?;
    println!(
        "writer (pid {}): set {:?}",
        std::process::id(),
        String::from_utf8_lossy(KEY)
    );
    // Stay connected until the reader has the value, so the cache is not dropped meanwhile.
    cache.wait_for(b"reader done", Some(b"yes"), Some(Duration::from_secs(10)))?;
    Ok(())
}

fn reader() -> upcache::Result<()> {
    let cache = UpCache::open("TVHosts")?;
    // Wait for the writer's value instead of sleeping.
    cache.wait_for(
        KEY,
        Some(b"Dickie Attenborough"),
        Some(Duration::from_secs(10)),
    )?;
    let value = cache.get(KEY)?;
    println!(
        "reader (pid {}): get -> {:?}",
        std::process::id(),
        value.as_deref().map(String::from_utf8_lossy)
    );
    // The whole cache, fetched chunk by chunk, and the server's counters.
    for key in cache.keys_iter() {
        println!("reader: key {:?}", String::from_utf8_lossy(&key?));
    }
    let stats = cache.stats()?;
    println!(
        "reader: server pid {}, keys {}, connections {}",
        stats.pid, stats.keys, stats.connections
    );
    cache.set(b"reader done", b"yes")?;
    assert_eq!(value.as_deref(), Some(&b"Dickie Attenborough"[..]));
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::args().nth(1).as_deref() {
        Some("writer") => return Ok(writer()?),
        Some("reader") => return Ok(reader()?),
        _ => {}
    }
    let me = std::env::current_exe()?;
    let started = Instant::now();
    let mut w = Command::new(&me).arg("writer").spawn()?;
    let mut r = Command::new(&me).arg("reader").spawn()?;
    let (rw, rr) = (w.wait()?, r.wait()?);
    println!(
        "both processes done in {:.1?}: writer {rw}, reader {rr}",
        started.elapsed()
    );
    if !(rw.success() && rr.success()) {
        return Err("a process failed".into());
    }
    Ok(())
}
