//! The async client: one handle, a thousand tasks on one connection, a subscription read as a
//! stream of events, and a pipeline.
//!
//! `cargo run --example async_tvhosts --features tokio`

#[tokio::main]
async fn main() -> upcache::Result<()> {
    let cache = upcache::UpCache::builder("TVHosts").open_async().await?;
    cache
        .set(b"Light Entertainment Awards", b"Dickie Attenborough")
        .await?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let cache = cache.clone(); // 1,000 tasks, one connection
        tasks.spawn(async move { cache.get(b"Light Entertainment Awards").await });
    }
    let mut hits = 0;
    while let Some(v) = tasks.join_next().await {
        hits += v.expect("task")?.is_some() as u32;
    }
    println!("{hits} of 1000 tasks read the value");

    let mut events = cache.subscribe(b"config").await?; // also a futures_core::Stream
    cache.set(b"config", b"v2").await?;
    let e = events.recv().await?;
    println!(
        "event: {:?} {:?}",
        e.kind,
        String::from_utf8_lossy(&e.value.unwrap_or_default())
    );

    let replies = cache.pipeline().set(b"a", b"1").get(b"a").execute().await?;
    println!("pipeline: {replies:?}");
    Ok(())
}
