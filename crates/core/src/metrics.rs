//! Prometheus counters, rendered in the text exposition format at `GET /metrics`.
//!
//! A handful of labelled counters and histograms does not justify a metrics framework: each is a map from label
//! values to its value. Label values must come from small fixed sets (operation names, decisions, status
//! classes), never from request data.
//!
//! Every request updates a few of them, on whichever thread serves it. So each thread keeps its own copy of a
//! metric's values, behind a mutex that only a render ever waits for, and a render adds the copies up: an update
//! writes no memory another thread writes. One map behind one mutex per metric moved that mutex's cache line
//! between the cores on every update (with a SipHash of the labels, about 2% of a 4 KiB GET's CPU;
//! docs/benchmarks.md).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::hash::BuildHasher;
use std::sync::Mutex;

use thread_local::ThreadLocal;

/// Label names and values as kept.
type Labels = Vec<(&'static str, String)>;

/// A metric's values by label set, one copy per thread that updated it.
struct Series<V: Send> {
    threads: ThreadLocal<Mutex<Values<V>>>,
}

/// One thread's values of a metric. An update finds its label set without allocating: by a hash of the names and
/// values, then compared in full (label values come from fixed sets, so collisions are rare and harmless). Only a
/// label set seen for the first time on this thread is copied.
struct Values<V> {
    by_hash: BTreeMap<u64, Vec<(Labels, V)>>,
}

impl<V> Default for Values<V> {
    fn default() -> Self {
        Values { by_hash: BTreeMap::new() }
    }
}

/// Values that add up across threads.
trait Sum: Default + Send {
    fn add_from(&mut self, other: &Self);
}

impl Sum for u64 {
    fn add_from(&mut self, other: &Self) {
        *self += other;
    }
}

impl<V: Sum> Series<V> {
    const fn new() -> Self {
        Series { threads: ThreadLocal::new() }
    }

    fn hash(labels: &[(&'static str, &str)]) -> u64 {
        // Fixed, not random: the labels are the program's own names, nothing a client chose.
        foldhash::fast::FixedState::with_seed(0).hash_one(labels)
    }

    fn same(kept: &Labels, labels: &[(&'static str, &str)]) -> bool {
        kept.len() == labels.len() && kept.iter().zip(labels).all(|((k1, v1), (k2, v2))| k1 == k2 && v1 == v2)
    }

    /// Applies `update` to this thread's value of these labels, made at their first use here.
    fn update(&self, labels: &[(&'static str, &str)], update: impl FnOnce(&mut V)) {
        let Ok(mut values) = self.threads.get_or_default().lock() else { return };
        let bucket = values.by_hash.entry(Self::hash(labels)).or_default();
        let at = match bucket.iter().position(|(kept, _)| Self::same(kept, labels)) {
            Some(at) => at,
            None => {
                bucket.push((labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(), V::default()));
                bucket.len() - 1
            }
        };
        update(&mut bucket[at].1);
    }

    /// The sum over the threads of the value of these labels.
    fn total(&self, labels: &[(&'static str, &str)]) -> Option<V> {
        let hash = Self::hash(labels);
        let mut total: Option<V> = None;
        for values in &self.threads {
            let Ok(values) = values.lock() else { continue };
            let Some(bucket) = values.by_hash.get(&hash) else { continue };
            if let Some((_, value)) = bucket.iter().find(|(kept, _)| Self::same(kept, labels)) {
                total.get_or_insert_with(V::default).add_from(value);
            }
        }
        total
    }

    /// Every label set and its sum over the threads, in label order (a stable exposition).
    fn sorted(&self) -> BTreeMap<Labels, V> {
        let mut all = BTreeMap::<Labels, V>::new();
        for values in &self.threads {
            let Ok(values) = values.lock() else { continue };
            for (labels, value) in values.by_hash.values().flatten() {
                all.entry(labels.clone()).or_default().add_from(value);
            }
        }
        all
    }
}

/// A counter with labels.
pub struct Counter {
    name: &'static str,
    help: &'static str,
    values: Series<u64>,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str) -> Self {
        Self { name, help, values: Series::new() }
    }

    /// Adds one for these label values.
    pub fn inc(&self, labels: &[(&'static str, &str)]) {
        self.add(labels, 1);
    }

    /// Adds `n` for these label values.
    pub fn add(&self, labels: &[(&'static str, &str)], n: u64) {
        self.values.update(labels, |value| *value += n);
    }

    /// The current value for these label values (tests).
    pub fn get(&self, labels: &[(&'static str, &str)]) -> u64 {
        self.values.total(labels).unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} counter", self.name, self.help, self.name);
        for (labels, value) in self.values.sorted() {
            let labels = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect::<Vec<_>>().join(",");
            let _ = writeln!(out, "{}{{{labels}}} {value}", self.name);
        }
    }
}

/// A histogram with labels and fixed bucket bounds (seconds, for latencies).
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    bounds: &'static [f64],
    values: Series<Observed>,
}

/// Per label set: the count in each bucket (not cumulative; the last is `+Inf`), the sum and the count.
#[derive(Default)]
struct Observed {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Sum for Observed {
    fn add_from(&mut self, other: &Self) {
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (n, m) in self.buckets.iter_mut().zip(&other.buckets) {
            *n += m;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

impl Histogram {
    const fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Self {
        Self { name, help, bounds, values: Series::new() }
    }

    /// Records one observation for these label values.
    pub fn observe(&self, labels: &[(&'static str, &str)], value: f64) {
        let bucket = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.values.update(labels, |observed| {
            if observed.buckets.len() != self.bounds.len() + 1 {
                observed.buckets = vec![0; self.bounds.len() + 1];
            }
            if let Some(n) = observed.buckets.get_mut(bucket) {
                *n += 1;
            }
            observed.sum += value;
            observed.count += 1;
        });
    }

    /// How many observations were recorded for these label values (tests).
    pub fn count(&self, labels: &[(&'static str, &str)]) -> u64 {
        self.values.total(labels).map_or(0, |o| o.count)
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} histogram", self.name, self.help, self.name);
        for (labels, observed) in self.values.sorted() {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let with_le = |le: &str| {
                let mut all = labels.clone();
                all.push(format!("le=\"{le}\""));
                all.join(",")
            };
            let mut cumulative = 0;
            for (i, n) in observed.buckets.iter().enumerate() {
                cumulative += n;
                let le = self.bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
                let _ = writeln!(out, "{}_bucket{{{}}} {cumulative}", self.name, with_le(&le));
            }
            let labels = labels.join(",");
            let _ = writeln!(out, "{}_sum{{{labels}}} {}", self.name, observed.sum);
            let _ = writeln!(out, "{}_count{{{labels}}} {}", self.name, observed.count);
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub static REQUESTS: Counter = Counter::new("lakegate_requests_total", "Requests served, by front and status.");
pub static DECISIONS: Counter = Counter::new("lakegate_decisions_total", "Policy decisions, by front and decision.");
pub static TOKEN_FAILURES: Counter = Counter::new("lakegate_token_rejections_total", "Tokens refused, by reason.");
pub static JWKS_FETCHES: Counter = Counter::new("lakegate_jwks_fetches_total", "JWKS fetches, by issuer.");
pub static POLICY_RELOADS: Counter =
    Counter::new("lakegate_policy_reloads_total", "Policy reloads, by result (ok, rejected).");
pub static AUDIT_REFUSALS: Counter = Counter::new(
    "lakegate_audit_refusals_total",
    "Requests refused because the audit sink could not accept their event.",
);

pub static AUDIT_WRITE_SECONDS: Histogram = Histogram::new(
    "lakegate_audit_write_seconds",
    "The audit writer's steps (batch, checkpoint), from their write to the end of their sync; the queue fills meanwhile.",
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
);

pub static S3_REQUESTS: Counter = Counter::new(
    "lakegate_s3_requests_total",
    "S3 front requests, by operation, decision (allow, deny, error) and status class.",
);
pub static S3_REQUEST_SECONDS: Histogram = Histogram::new(
    "lakegate_s3_request_seconds",
    "S3 front requests from arrival to the last byte of the answer, by operation.",
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
);
pub static S3_BYTES: Counter =
    Counter::new("lakegate_s3_bytes_total", "Object and document bytes through the S3 front, by direction (in, out).");

/// All metrics in the text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    for c in [&REQUESTS, &DECISIONS, &TOKEN_FAILURES, &JWKS_FETCHES, &POLICY_RELOADS, &AUDIT_REFUSALS, &S3_REQUESTS] {
        c.render(&mut out);
    }
    AUDIT_WRITE_SECONDS.render(&mut out);
    S3_REQUEST_SECONDS.render(&mut out);
    S3_BYTES.render(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        static H: Histogram = Histogram::new("t_seconds", "test", &[0.1, 1.0]);
        H.observe(&[("operation", "GetObject")], 0.0625);
        H.observe(&[("operation", "GetObject")], 0.5);
        H.observe(&[("operation", "GetObject")], 4.0);
        let mut out = String::new();
        H.render(&mut out);
        for line in [
            "# TYPE t_seconds histogram",
            "t_seconds_bucket{operation=\"GetObject\",le=\"0.1\"} 1",
            "t_seconds_bucket{operation=\"GetObject\",le=\"1\"} 2",
            "t_seconds_bucket{operation=\"GetObject\",le=\"+Inf\"} 3",
            "t_seconds_sum{operation=\"GetObject\"} 4.5625",
            "t_seconds_count{operation=\"GetObject\"} 3",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
        }
        assert_eq!(H.count(&[("operation", "GetObject")]), 3);
    }

    #[test]
    fn updates_on_many_threads_add_up_in_the_values_and_the_exposition() {
        static C: Counter = Counter::new("t_threads_total", "test");
        static H: Histogram = Histogram::new("t_threads_seconds", "test", &[0.1, 1.0]);
        std::thread::scope(|s| {
            for thread in 0..4 {
                s.spawn(move || {
                    for _ in 0..1000 {
                        C.inc(&[("front", "s3")]);
                    }
                    H.observe(&[("operation", "GetObject")], if thread % 2 == 0 { 0.0625 } else { 0.5 });
                });
            }
        });
        C.add(&[("front", "s3")], 5);
        assert_eq!(C.get(&[("front", "s3")]), 4005);
        assert_eq!(H.count(&[("operation", "GetObject")]), 4);
        let mut out = String::new();
        C.render(&mut out);
        H.render(&mut out);
        for line in [
            "t_threads_total{front=\"s3\"} 4005",
            "t_threads_seconds_bucket{operation=\"GetObject\",le=\"0.1\"} 2",
            "t_threads_seconds_bucket{operation=\"GetObject\",le=\"1\"} 4",
            "t_threads_seconds_bucket{operation=\"GetObject\",le=\"+Inf\"} 4",
            "t_threads_seconds_sum{operation=\"GetObject\"} 1.125",
            "t_threads_seconds_count{operation=\"GetObject\"} 4",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
        }
        // One series each, however many threads hold a copy.
        assert_eq!(out.lines().filter(|l| l.starts_with("t_threads_total{")).count(), 1);
    }

    #[test]
    fn counters_keep_each_label_set_apart_and_render_them_in_label_order() {
        static C: Counter = Counter::new("t_total", "test");
        C.inc(&[("front", "sql"), ("status", "ok")]);
        C.add(&[("front", "s3"), ("status", "ok")], 2);
        C.inc(&[("front", "s3"), ("status", "ok")]);
        // The same values under other names, and a prefix of a label set, are other series.
        C.inc(&[("status", "s3"), ("front", "ok")]);
        C.inc(&[("front", "s3")]);
        assert_eq!(C.get(&[("front", "s3"), ("status", "ok")]), 3);
        assert_eq!(C.get(&[("front", "sql"), ("status", "ok")]), 1);
        assert_eq!(C.get(&[("front", "s3")]), 1);
        assert_eq!(C.get(&[("front", "trino")]), 0);
        let mut out = String::new();
        C.render(&mut out);
        let series: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            series,
            [
                "t_total{front=\"s3\"} 1",
                "t_total{front=\"s3\",status=\"ok\"} 3",
                "t_total{front=\"sql\",status=\"ok\"} 1",
                "t_total{status=\"s3\",front=\"ok\"} 1",
            ]
        );
    }
}
