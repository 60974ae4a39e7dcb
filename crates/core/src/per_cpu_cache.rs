//! A bounded cache split by CPU, for the lookups every request makes (a verified token, a decision, an attribute
//! file of the embedded store, a presigned URL checked before).
//!
//! One `quick_cache::sync::Cache` shared by every thread is correct, but a key that every thread reads (the one
//! bearer token a job's executors all send, the decision every analyst's read gets) makes each lookup write the
//! same two cache lines, the shard's lock word and the value's reference count, and those lines move between the
//! cores on every request: two threads looking up one key took 332–358 ns a lookup on this project's 2-core
//! machine, against 24 ns on one thread, and 27–39 ns each with this cache (`cargo bench -p lakegate-core --bench core
//! -- cache_lookup`, docs/benchmarks.md). A 4 KiB GET makes four such lookups.
//!
//! Here each CPU has its own cache (the kernel keeps per-CPU data the same way), found from the CPU the thread
//! runs on, behind a mutex that a lookup on another CPU takes only if the thread moved between finding its part
//! and locking it. A lookup writes memory that stays in its own core's cache. What one CPU inserts the others do
//! not see: a key hot everywhere is computed once per CPU, and kept once per CPU.
//!
//! The bound is the whole cache's: the `n` parts share the configured entries or weight between them (each an
//! `n`th, give or take one), so nothing a client sends grows the sum past it.

use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

use quick_cache::{Equivalent, UnitWeighter, Weighter, unsync};

/// A bounded cache with one part per CPU. `V` is cloned out of it (an `Arc`, or a small value).
pub struct PerCpuCache<K, V, W = UnitWeighter> {
    parts: Box<[Part<K, V, W>]>,
}

/// One CPU's part, on cache lines of its own: parts next to each other in memory must not share a line, or
/// writing one would move its neighbour's between the cores as well.
#[repr(align(128))]
struct Part<K, V, W>(Mutex<unsync::Cache<K, V, W>>);

impl<K: Eq + Hash, V: Clone> PerCpuCache<K, V> {
    /// At most `entries` entries in all.
    pub fn new(entries: usize) -> Self {
        Self::of(|n, i| unsync::Cache::new(share(entries as u64, n, i) as usize))
    }
}

impl<K: Eq + Hash, V: Clone, W: Weighter<K, V> + Clone> PerCpuCache<K, V, W> {
    /// At most `weight` in all as `weighter` counts it; `entries` sizes the tables up front.
    pub fn with_weighter(entries: usize, weight: u64, weighter: W) -> Self {
        Self::of(|n, i| {
            let entries = share(entries as u64, n, i) as usize;
            unsync::Cache::with_weighter(entries, share(weight, n, i), weighter.clone())
        })
    }

    /// One part per CPU, the `i`th of `n` made by `part(n, i)`.
    fn of(part: impl Fn(usize, usize) -> unsync::Cache<K, V, W>) -> Self {
        let n = std::thread::available_parallelism().map_or(1, usize::from);
        PerCpuCache { parts: (0..n).map(|i| Part(Mutex::new(part(n, i)))).collect() }
    }

    /// This CPU's part, locked; `None` if a panic left it poisoned (the cache then misses on this CPU).
    fn here(&self) -> Option<MutexGuard<'_, unsync::Cache<K, V, W>>> {
        let at = rustix::thread::sched_getcpu() % self.parts.len();
        self.parts.get(at)?.0.lock().ok()
    }

    /// The value kept for `key` on this CPU.
    pub fn get<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<V> {
        self.here()?.get(key).cloned()
    }

    /// Keeps `value` for `key` on this CPU, evicting as the bound requires.
    pub fn insert(&self, key: K, value: V) {
        if let Some(mut part) = self.here() {
            part.insert(key, value);
        }
    }

    /// Forgets `key` on every CPU.
    pub fn remove<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) {
        for part in &self.parts {
            if let Ok(mut part) = part.0.lock() {
                part.remove(key);
            }
        }
    }

    /// Entries kept, over all CPUs (a key kept on two CPUs counts twice).
    pub fn len(&self) -> usize {
        self.parts.iter().filter_map(|part| part.0.lock().ok().map(|part| part.len())).sum()
    }

    /// What the entries weigh, over all CPUs.
    pub fn weight(&self) -> u64 {
        self.parts.iter().filter_map(|part| part.0.lock().ok().map(|part| part.weight())).sum()
    }

    /// Whether no CPU keeps anything.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The `i`th of `n` parts of `total`: the parts add up to it exactly.
fn share(total: u64, n: usize, i: usize) -> u64 {
    let (n, i) = (n as u64, i as u64);
    total / n + u64::from(i < total % n)
}

/// Keeps the calling thread on the CPU it runs on, so that every lookup it makes finds the part its inserts
/// went to: for tests that count what a cache keeps. Does nothing where the affinity cannot be set.
pub fn stay_on_this_cpu() {
    let mut one = rustix::thread::CpuSet::new();
    one.set(rustix::thread::sched_getcpu());
    let _ = rustix::thread::sched_setaffinity(None, &one);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone)]
    struct Bytes;

    impl Weighter<String, String> for Bytes {
        fn weight(&self, key: &String, value: &String) -> u64 {
            (key.len() + value.len()) as u64
        }
    }

    #[test]
    fn a_lookup_finds_what_this_cpu_kept_for_that_key_and_a_removal_reaches_every_cpu() {
        stay_on_this_cpu();
        let cache = PerCpuCache::<String, u32>::new(1024);
        for i in 0..100 {
            cache.insert(format!("k{i}"), i);
        }
        for i in 0..100 {
            assert_eq!(cache.get(&format!("k{i}")), Some(i));
        }
        assert_eq!(cache.get("never inserted"), None);
        // What other CPUs keep is theirs: put a key into every part, as threads on every CPU would.
        for part in &cache.parts {
            part.0.lock().expect("part").insert("everywhere".to_owned(), 7);
        }
        assert_eq!(cache.len(), 100 + cache.parts.len());
        cache.remove("everywhere");
        for i in 0..100 {
            cache.remove(&format!("k{i}"));
        }
        assert!(cache.is_empty(), "{} left", cache.len());
    }

    #[test]
    fn the_parts_add_up_to_the_whole() {
        for (total, n) in [(0, 1), (10, 1), (10, 3), (2, 4), (16 << 20, 6), (u64::MAX, 7)] {
            let parts: Vec<u64> = (0..n).map(|i| share(total, n, i)).collect();
            assert_eq!(parts.iter().map(|&p| u128::from(p)).sum::<u128>(), u128::from(total), "{total} in {n}");
            assert!(parts.iter().max().unwrap_or(&0) - parts.iter().min().unwrap_or(&0) <= 1);
        }
    }

    #[test]
    fn the_bound_holds_for_the_whole_cache_however_many_threads_insert() {
        let cache = PerCpuCache::with_weighter(16, 1_000, Bytes);
        std::thread::scope(|s| {
            for t in 0..8 {
                let cache = &cache;
                s.spawn(move || {
                    for i in 0..2_000 {
                        cache.insert(format!("thread {t} key {i}"), "x".repeat(20));
                    }
                });
            }
        });
        let weight: u64 = cache.parts.iter().map(|p| p.0.lock().map_or(0, |p| p.weight())).sum();
        assert!(weight <= 1_000, "{weight} kept in all");
        assert!(!cache.is_empty());
        let entries = PerCpuCache::<u32, u32>::new(10);
        for i in 0..1_000 {
            entries.insert(i, i);
        }
        assert!(entries.len() <= 10, "{} entries kept", entries.len());
    }
}
