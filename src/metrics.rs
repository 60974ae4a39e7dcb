//! Prometheus counters, rendered in the text exposition format at `GET /metrics`.
//!
//! A handful of labelled counters does not justify a metrics framework: each counter is a map from label
//! values to a count, behind a mutex that is held for an increment.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// A counter with labels.
pub struct Counter {
    name: &'static str,
    help: &'static str,
    values: Mutex<BTreeMap<Vec<(&'static str, String)>, u64>>,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str) -> Self {
        Self { name, help, values: Mutex::new(BTreeMap::new()) }
    }

    /// Adds one for these label values.
    pub fn inc(&self, labels: &[(&'static str, &str)]) {
        self.add(labels, 1);
    }

    /// Adds `n` for these label values.
    pub fn add(&self, labels: &[(&'static str, &str)], n: u64) {
        let key = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        if let Ok(mut values) = self.values.lock() {
            *values.entry(key).or_insert(0) += n;
        }
    }

    /// The current value for these label values (tests).
    pub fn get(&self, labels: &[(&'static str, &str)]) -> u64 {
        let key: Vec<_> = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        self.values.lock().ok().and_then(|v| v.get(&key).copied()).unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} counter", self.name, self.help, self.name);
        let Ok(values) = self.values.lock() else { return };
        for (labels, value) in values.iter() {
            let labels = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect::<Vec<_>>().join(",");
            let _ = writeln!(out, "{}{{{labels}}} {value}", self.name);
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

/// All counters in the text exposition format.
pub fn render() -> String {
    let mut out = String::new();
    for c in [&REQUESTS, &DECISIONS, &TOKEN_FAILURES, &JWKS_FETCHES, &POLICY_RELOADS, &AUDIT_REFUSALS] {
        c.render(&mut out);
    }
    out
}
