//! The audit event: one per decision, allowed or denied.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::identity::{Actor, Principal};

/// Which front (or internal service) handled the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Front {
    /// The admin/control API (`/readyz`, policy reload, ...).
    Control,
    /// The S3 API.
    S3,
    /// The STS-compatible credential endpoints.
    Sts,
    /// The SQL fronts (PostgreSQL wire and HTTP).
    Sql,
    /// The token service (RFC 8693 exchange).
    Token,
    /// Policy administration (reloads, decisions asked for directly).
    Policy,
    /// The Iceberg REST catalog.
    Catalog,
}

/// What policy (or the front) decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Policy permitted the request.
    Allow,
    /// Policy (or a missing/bad identity) refused the request.
    Deny,
    /// The request failed before or while a decision was made or carried out.
    Error,
}

/// Which of a request's two records this is, with durability `sync`: the decision, synced before the access
/// starts, then the outcome. Absent when the record is the request's only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Written and synced before the access began; `outcome` is `null`.
    Decision,
    /// How the access ended; everything else repeats the decision record.
    Outcome,
}

/// The authenticated user as the audit log records it: only the fields an auditor needs, not the whole token
/// (attributes and token expiry stay out of the log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPrincipal {
    /// The issuer that established the user.
    pub issuer: String,
    /// The user name.
    pub subject: String,
    /// The user's groups at the time of the request.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl From<&Principal> for AuditPrincipal {
    fn from(p: &Principal) -> Self {
        AuditPrincipal { issuer: p.issuer.clone(), subject: p.subject.clone(), groups: p.groups.clone() }
    }
}

/// What the SQL front did with a query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqlAudit {
    /// The statement as the client sent it.
    pub original: String,
    /// The statement as executed after governance was applied; `None` when it was refused before rewriting.
    #[serde(default)]
    pub rewritten: Option<String>,
    /// Governed tables the statement read. This and the two fields after it are the same at every execution of
    /// a statement a session keeps, so they are shared (made once, not at each execution).
    #[serde(default)]
    pub tables: Arc<[String]>,
    /// Row filter applied per table (table name -> SQL boolean expression).
    #[serde(default)]
    pub filters: Arc<BTreeMap<String, String>>,
    /// Masks applied per column (`table.column` -> mask expression).
    #[serde(default)]
    pub masks: Arc<BTreeMap<String, String>>,
    /// Rows returned to the client, when known.
    #[serde(default)]
    pub rows: Option<u64>,
    /// The transaction block the statement ran in, when it ran on the block's own backend connection (from the
    /// block's first write on). Its writes stand only if the record of the block's end with the same id
    /// (`sql:Commit`, `sql:Rollback`) says `committed`, and no `sql:RollbackToSavepoint` of the block after it
    /// names a savepoint taken before it (a savepoint without a record of its own was taken before the block's
    /// first write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
    /// For the end of a transaction block: whether its writes stand. A COMMIT of a block an error aborted rolls
    /// it back, as on PostgreSQL, and says `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<bool>,
}

/// How the request ended, as the front saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The HTTP status sent to the client (S3, STS, SQL over HTTP, token service).
    #[serde(default)]
    pub status: Option<u16>,
    /// The protocol's own error code, if any: an S3/STS error code or a SQLSTATE.
    #[serde(default)]
    pub error_code: Option<String>,
    /// Request body bytes received from the client.
    #[serde(default)]
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    #[serde(default)]
    pub bytes_out: u64,
    /// True when the front never reported how the request ended (the client went away, or an error path
    /// dropped the event): the access began, the counts above are what was known at that point.
    #[serde(default)]
    pub incomplete: bool,
}

/// One audit record: who did what to which resource, what was decided and how it ended.
///
/// Build one at the edge with [`AuditEvent::new`] and the builder methods; the fields are public so a front
/// can fill in the outcome while it serves the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When the event was created, UTC, RFC 3339 with milliseconds.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub time: OffsetDateTime,
    /// The request id (also in the response header and the log span).
    pub request_id: String,
    /// The front that handled the request.
    pub front: Front,
    /// The authenticated user; `None` when the request carried no valid identity.
    #[serde(default)]
    pub principal: Option<AuditPrincipal>,
    /// Applications acting on the user's behalf, current (outermost) actor first.
    #[serde(default)]
    pub actors: Vec<Actor>,
    /// The client's address.
    #[serde(default)]
    pub source: Option<String>,
    /// The action, e.g. `s3:GetObject`, `sql:Select`.
    pub action: String,
    /// The resource, e.g. `bucket/sales/2024.parquet` or `db.sales.orders`.
    pub resource: String,
    /// The decision.
    pub decision: Decision,
    /// Why the request was denied, or the error text.
    #[serde(default)]
    pub reason: Option<String>,
    /// Ids of the policies that decided.
    #[serde(default)]
    pub policies: Vec<String>,
    /// SQL details, for the SQL front.
    #[serde(default)]
    pub sql: Option<SqlAudit>,
    /// How the request ended; `None` for a decision that needed no access (e.g. a denial).
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Time from the event's start (see [`AuditEvent::started_at`]) to its submission, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Front-specific details, e.g. `role_session_name` for STS.
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
    /// With durability `sync`, which of the request's two records this is; absent otherwise, so that batch
    /// records keep their form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// When the request started, for `latency_ms`; not part of the record.
    #[serde(skip)]
    started: Option<Instant>,
}

/// Reason recorded until the front states a decision, so a forgotten decision reads as an error, never as
/// an allow.
const NO_DECISION: &str = "no decision recorded";

impl AuditEvent {
    /// Starts an event for `action` on `resource`, timed from now, with no principal and decision `error`
    /// until [`allow`](Self::allow) or [`deny`](Self::deny) says otherwise.
    pub fn new(
        front: Front,
        request_id: impl Into<String>,
        action: impl Into<String>,
        resource: impl Into<String>,
    ) -> Self {
        AuditEvent {
            time: OffsetDateTime::now_utc(),
            request_id: request_id.into(),
            front,
            principal: None,
            actors: Vec::new(),
            source: None,
            action: action.into(),
            resource: resource.into(),
            decision: Decision::Error,
            reason: Some(NO_DECISION.to_owned()),
            policies: Vec::new(),
            sql: None,
            outcome: None,
            latency_ms: 0,
            extra: BTreeMap::new(),
            stage: None,
            started: Some(Instant::now()),
        }
    }

    /// Records the principal and its actor chain.
    pub fn principal(mut self, principal: &Principal) -> Self {
        self.principal = Some(AuditPrincipal::from(principal));
        self.actors = principal.actors.clone();
        self
    }

    /// Records the client's address.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Records an allow by the given policies.
    pub fn allow<I, S>(mut self, policies: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.decision = Decision::Allow;
        self.reason = None;
        self.policies = policies.into_iter().map(Into::into).collect();
        self
    }

    /// Records a denial, why, and the policies that decided (empty for a default deny).
    pub fn deny<I, S>(mut self, reason: impl Into<String>, policies: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.decision = Decision::Deny;
        self.reason = Some(reason.into());
        self.policies = policies.into_iter().map(Into::into).collect();
        self
    }

    /// Records an error.
    pub fn error(mut self, reason: impl Into<String>) -> Self {
        self.decision = Decision::Error;
        self.reason = Some(reason.into());
        self
    }

    /// Attaches the SQL details.
    pub fn sql(mut self, sql: SqlAudit) -> Self {
        self.sql = Some(sql);
        self
    }

    /// Adds a front-specific detail.
    pub fn extra(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// Times the event from `start` (when the request arrived) instead of from the event's creation.
    pub fn started_at(mut self, start: Instant) -> Self {
        self.started = Some(start);
        self
    }

    /// The outcome, created empty if the front has not set one yet.
    pub fn outcome_mut(&mut self) -> &mut Outcome {
        self.outcome.get_or_insert_with(Outcome::default)
    }

    /// The record of the decision alone, written before the access with durability `sync`: the event as it is
    /// now, without an outcome, its latency the time to the decision.
    pub(crate) fn decision_record(&self) -> AuditEvent {
        let mut record = self.clone();
        record.stage = Some(Stage::Decision);
        record.outcome = None;
        record.seal(true);
        record
    }

    /// Called once when the event is handed to the writer: stamps the latency and, for an event whose
    /// front never finished it, marks the outcome incomplete.
    pub(crate) fn seal(&mut self, finished: bool) {
        if let Some(start) = self.started.take() {
            self.latency_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        }
        if !finished {
            self.outcome_mut().incomplete = true;
        }
    }
}

/// RFC 3339, UTC, always three fractional digits, so that lines sort and compare as text.
const TIME_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

fn ser_time<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    let t = t.to_offset(UtcOffset::UTC);
    let mut text = [0u8; TIME_LEN];
    match write_time(&t, &mut text) {
        Some(text) => s.serialize_str(text),
        None => s.serialize_str(&t.format(TIME_FORMAT).map_err(serde::ser::Error::custom)?),
    }
}

/// The length of a record's time in [`TIME_FORMAT`] for a year 0–9999.
const TIME_LEN: usize = 24;

/// `t`, in UTC, as [`TIME_FORMAT`] writes it, for a year 0–9999 (`None` otherwise: the format gives other years
/// a sign). By hand, on the stack: every record's time is written on the audit writer's thread, and the time
/// crate's formatter, which interprets its format description at each call, took 0.6% of Lakegate's CPU under
/// `pgbench -S` (docs/benchmarks.md).
fn write_time<'a>(t: &OffsetDateTime, text: &'a mut [u8; TIME_LEN]) -> Option<&'a str> {
    let year = u16::try_from(t.year()).ok().filter(|year| *year <= 9999)?;
    *text = *b"0000-00-00T00:00:00.000Z";
    let fields = [
        (0, year, 4),
        (5, u16::from(u8::from(t.month())), 2),
        (8, u16::from(t.day()), 2),
        (11, u16::from(t.hour()), 2),
        (14, u16::from(t.minute()), 2),
        (17, u16::from(t.second()), 2),
        (20, t.millisecond(), 3),
    ];
    for (at, mut n, width) in fields {
        for digit in text.get_mut(at..at + width)?.iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    std::str::from_utf8(text).ok()
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
    let text = String::deserialize(d)?;
    OffsetDateTime::parse(&text, &Rfc3339).map(|t| t.to_offset(UtcOffset::UTC)).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    /// A record's time as the format description writes it, the reference for the hand-written one.
    fn reference(t: OffsetDateTime) -> String {
        t.to_offset(UtcOffset::UTC).format(TIME_FORMAT).unwrap()
    }

    fn serialised(t: OffsetDateTime) -> String {
        let mut event = AuditEvent::new(Front::S3, "r", "s3:GetObject", "lake/k");
        event.time = t;
        serde_json::to_value(&event).unwrap()["time"].as_str().unwrap().to_owned()
    }

    #[test]
    fn a_records_time_is_written_as_its_format_description_writes_it() {
        // Instants spread over years 0 to 9999 by a fixed linear congruential sequence, each with a fraction of
        // a second that needs truncating to milliseconds, and in an offset other than UTC.
        let first = time::macros::datetime!(0000-01-01 0:00 UTC);
        let last = time::macros::datetime!(9999-12-31 23:59:59.999_999_999 UTC);
        let span = (last - first).whole_seconds();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let seconds = i64::try_from(x >> 20).unwrap() % span;
            let nanos = i64::try_from(x % 1_000_000_000).unwrap();
            let t = first + time::Duration::seconds(seconds) + time::Duration::nanoseconds(nanos);
            let t = t.to_offset(time::macros::offset!(+05:30));
            assert_eq!(serialised(t), reference(t), "{t}");
        }
        for t in [first, last, time::macros::datetime!(2024-02-29 23:59:59.9995 UTC)] {
            assert_eq!(serialised(t), reference(t), "{t}");
        }
    }

    #[test]
    fn a_year_before_0_is_written_by_the_format_description() {
        let t = time::macros::datetime!(0000-01-01 0:00 UTC) - time::Duration::milliseconds(1);
        assert_eq!(write_time(&t, &mut [0u8; TIME_LEN]), None);
        assert_eq!(serialised(t), "-0001-12-31T23:59:59.999Z");
    }
}
