//! A small index for the current thread, for data kept once per thread so that threads
//! write no cache line in common: the verified-token cache keeps each token's claims once per
//! slot, and a hit clones its own slot's copy; the layer keeps its realm once per slot for the
//! claims of accepted requests.
//!
//! Slots are dense: `thread_local` recycles the ids of exited threads and keeps their values,
//! so a thread that starts after another exited takes over its slot, and the slots in use stay
//! about as many as the threads that validate at once (a server's worker threads).

use std::sync::atomic::{AtomicUsize, Ordering};

use thread_local::ThreadLocal;

static SLOTS: ThreadLocal<usize> = ThreadLocal::new();
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The current thread's slot: 0 for the first thread that asks, 1 for the next, and so on;
/// a recycled thread id keeps its slot.
pub(crate) fn current() -> usize {
    *SLOTS.get_or(|| NEXT.fetch_add(1, Ordering::Relaxed))
}

/// How many slots per-thread data should have so that, in the usual case, every thread that
/// validates at once has one of its own: twice the available parallelism (headroom for a
/// thread besides the workers), at least 2 and at most 64. Threads beyond that share slots
/// (`current() % count`), which costs only contention, never correctness.
pub(crate) fn count() -> usize {
    let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
    (2 * parallelism).clamp(2, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_slot_and_threads_at_once_have_distinct_ones() {
        let mine = current();
        assert_eq!(current(), mine);
        let barrier = std::sync::Barrier::new(4);
        let slots: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let slot = current();
                        // Every thread holds its slot until all have one.
                        barrier.wait();
                        assert_eq!(current(), slot);
                        slot
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        assert_eq!(slots.len(), 4);
        let mut distinct = slots.clone();
        distinct.push(mine);
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 5, "{slots:?} and {mine}");
    }
}
