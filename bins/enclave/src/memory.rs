//! Giving freed memory back to the kernel once connections close.
//!
//! glibc's malloc returns freed memory to the kernel only from the top of each arena's heap.
//! After a burst of connections — hostile clients filling their budgets, say — everything they
//! held is freed, but a few live allocations above it (a later connection's buffers, the KMS
//! pool) pin the freed pages below them resident. `tests/tests/it/memory.rs` measured 30 MiB kept
//! this way after 100 flooding clients left, in an enclave that has no swap and no other use
//! for its memory. `malloc_trim(0)` hands every free page of every arena back (glibc ≥ 2.8
//! releases holes, not only the top). It runs at most once per [`TRIM_INTERVAL`], and only
//! after connections closed: a walk of the arenas costs about a millisecond per 100 MiB.
//!
//! The other allocators (musl's in a static build) give pages back themselves; there this is
//! a no-op. A different global allocator was tried: mimalloc kept more (it purges on the
//! freeing thread's next allocation, and an idle worker makes none).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kmstool_runtime_tokio::Shared;

/// How often the trimmer looks for closed connections.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// Asks the allocator to give its free pages back to the kernel; returns whether it did.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_freed_memory() -> bool {
    // SAFETY: malloc_trim takes no pointer and touches only glibc's own free lists, under the
    // same arena locks every malloc and free take.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Asks the allocator to give its free pages back to the kernel; returns whether it did.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_freed_memory() -> bool {
    false
}

/// Connections closed so far: accepted and no longer open.
fn closed(shared: &Shared) -> u64 {
    let accepted = shared.stats.accepted.load(Ordering::Relaxed);
    let open = shared.stats.open_connections.load(Ordering::Relaxed) as u64;
    accepted.saturating_sub(open)
}

/// Every [`TRIM_INTERVAL`], releases freed memory if connections closed since the last look;
/// runs until dropped.
pub async fn trim_after_connections_close(shared: Arc<Shared>) {
    let mut seen = closed(&shared);
    let mut interval = tokio::time::interval(TRIM_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = closed(&shared);
        if now != seen {
            seen = now;
            let released = tokio::task::spawn_blocking(release_freed_memory)
                .await
                .unwrap_or(false);
            tracing::debug!(released, "connections closed: freed memory trimmed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heap hole below a live allocation is resident until the trim hands it back.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_freed_hole_below_a_live_allocation_is_given_back() {
        fn rss() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").expect("status");
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|r| r.split_whitespace().next()?.parse().ok())
                .expect("VmRSS")
        }
        // Many small blocks (below glibc's mmap threshold), touched, then one live block
        // allocated above them pins the heap's top.
        let blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 16 * 1024]).collect();
        let pin = Box::new([1u8; 64]);
        let before_free = rss();
        drop(blocks);
        release_freed_memory();
        let after_trim = rss();
        assert!(
            after_trim + 32 * 1024 < before_free,
            "RSS {before_free} KiB before, {after_trim} KiB after freeing 64 MiB and trimming"
        );
        assert_eq!(pin[0], 1);
    }
}
