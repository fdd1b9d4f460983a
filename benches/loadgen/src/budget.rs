//! `loadgen budget`: the server's resident memory under a memory budget after churning ten
//! times the budget through it, and whether freed memory is reused.
//!
//! Dimensions: one upcache server started here (its own process, the loadgen binary serving
//! through upcache's `auto-server` hook) with `--max-memory BYTES` (default 64 MiB); 16-byte
//! keys, each new (so every write past the budget evicts), values of mixed sizes (64 B to
//! 16 KiB, most small: 64..512 B for 7 writes in 8, up to 16 KiB for the rest), written in
//! pipelines of 256 by one connection; a GET of a recent key every 4 writes, so the policy
//! sees hits. The server's RSS (VmRSS) is read before the first write (the base), and after
//! each budget's worth of writes; the report gives RSS − base against the budget at 5× and
//! 10×: RSS at 10× no higher than at 5× means freed memory is reused. A measurement, not a
//! test: it prints figures and asserts nothing.

use std::time::Instant;

use clap::Args;

/// `loadgen budget` dimensions.
#[derive(Args, Debug, Clone)]
pub struct Dims {
    /// The server's memory budget, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_memory: u64,
    /// How many budgets' worth of values to write.
    #[arg(long, default_value_t = 10)]
    pub rounds: u64,
    /// Use the Unix transport instead of TCP.
    #[arg(long)]
    pub unix: bool,
}

/// Runs the churn and prints one row per budget's worth written.
pub fn run(d: &Dims) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("loadgen-budget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let transport = if d.unix {
        upcache::TransportKind::Unix
    } else {
        upcache::TransportKind::Tcp
    };
    let c = upcache::UpCache::builder("budget")
        .dir(&dir)
        .transport(transport)
        .max_memory(d.max_memory)
        .open()
        .map_err(|e| e.to_string())?;
    let pid = c.stats().map_err(|e| e.to_string())?.pid;
    let base = super::rss_kib(pid) * 1024;
    println!(
        "budget {} B, keys 16 B, values 64 B..16 KiB (mixed), pipelines of 256, server pid {pid}, base RSS {} KiB",
        d.max_memory,
        base / 1024
    );
    println!("written | keys | evicted | memory_bytes | RSS-base | (RSS-base)/budget | MB/s");
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let value = vec![b'v'; 16 << 10];
    let (mut written, mut id) = (0u64, 0u64);
    let mut at = Vec::new();
    for round in 1..=d.rounds {
        let started = Instant::now();
        let target = round * d.max_memory;
        while written < target {
            let mut p = c.pipeline();
            for _ in 0..256 {
                let r = next();
                let len = if r % 8 == 7 {
                    512 + (r >> 8) as usize % ((16 << 10) - 512)
                } else {
                    64 + (r >> 8) as usize % 449
                };
                p.set(format!("{id:016x}"), &value[..len]);
                if id % 4 == 0 {
                    p.get(format!("{:016x}", id.saturating_sub((r >> 40) % 20_000)));
                }
                written += 16 + len as u64;
                id += 1;
            }
            p.execute().map_err(|e| e.to_string())?;
        }
        let s = c.stats().map_err(|e| e.to_string())?;
        let rss = super::rss_kib(pid) * 1024;
        let over = rss.saturating_sub(base);
        at.push(over);
        println!(
            "{:>4}x | {} | {} | {} | {} | {:.3} | {:.0}",
            round,
            s.keys,
            s.evicted,
            s.memory_bytes,
            over,
            over as f64 / d.max_memory as f64,
            d.max_memory as f64 / 1e6 / started.elapsed().as_secs_f64()
        );
    }
    if at.len() >= 10 {
        println!(
            "RSS-base at 10x: {:.3} of the budget (goal <= 1.10); at 5x {:.3}: {}",
            at[9] as f64 / d.max_memory as f64,
            at[4] as f64 / d.max_memory as f64,
            if at[9] <= at[4] + at[4] / 20 {
                "freed memory reused (no growth from 5x to 10x beyond 5 %)"
            } else {
                "RSS grew from 5x to 10x"
            }
        );
    }
    let _ = c.shutdown_server();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
