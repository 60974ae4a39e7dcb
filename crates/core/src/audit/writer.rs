//! [`Auditor`], the handle fronts use, and the writer thread that owns the log files.
//!
//! The request path only ever touches a bounded queue. One thread owns the files: it takes what is queued,
//! chains it, writes it as one batch, syncs, then (at most every 100 ms) moves the checkpoint. It is an OS
//! thread rather than a tokio task because every step is blocking file I/O, and a blocking task that retries
//! forever would also hold up runtime shutdown.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer};
use tokio::sync::{mpsc, oneshot};

use super::chain::{self, Line, Record, Tip};
use super::event::AuditEvent;
use super::{AuditError, RecoveryError, Unavailable};

/// How long the writer waits before retrying after a failed write.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Most events written in one batch (one sync).
const MAX_BATCH: usize = 1024;

/// The largest buffer the writer keeps for serialising the next event.
const MAX_KEPT_SERIALIZED: usize = 64 << 10;

/// The default of [`AuditConfig::batch_window`]: with durability `batch`, how long after a batch is synced the
/// next one is written at the earliest. Events that come meanwhile gather and are written and synced together. A
/// request never waits for it (its record is queued, not synced, before the access), and it keeps the promise of
/// a record on disk within milliseconds of the access's end; in exchange a busy gateway syncs about a hundred
/// times a second instead of once or twice per request, and the writer is not woken for every event (a sleeping
/// writer registers no waker, so senders do not signal it). An event after a quiet spell is written at once:
/// sleeping then would gather nothing and cost the writer one more wake-up per event.
///
/// Each batch costs a `write` and an `fdatasync` (on a VM's virtual disk, much of it CPU: a journal commit and a
/// flush of the device). With a 2 ms window the audit writer took a sixth of Lakegate's CPU under `pgbench -S`,
/// more than half of it in those two calls; with 10 ms its CPU a query fell by a third, and longer windows bought
/// little more (docs/benchmarks.md).
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(10);

/// The longest batch window a configuration may ask for: beyond it a crash could lose more than "the last
/// moments" of records, which is all `batch` durability allows.
pub const MAX_BATCH_WINDOW: Duration = Duration::from_secs(1);

/// Moving the checkpoint costs a new file, a sync and a rename: more than writing a batch (on the VM's virtual
/// disk, ~0.5 ms of CPU against ~0.12 ms for a batch's write and sync). It moves at most this often, and within
/// this long of the batch it follows, whatever the load; always at once before a flush is answered. Moving it in
/// every 2 ms lull instead made a client sending a query every 25 ms pay a checkpoint per query: 0.78 ms of the
/// writer's CPU each, taken from the database on a small machine (docs/benchmarks.md).
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// Audit settings (`[audit]` in the configuration file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Directory of the log files and the checkpoint.
    pub dir: PathBuf,
    /// A file is rotated before it would grow past this size.
    pub max_file_bytes: u64,
    /// Events that may wait for the writer; when they are all taken, requests wait `enqueue_timeout`.
    pub queue_capacity: usize,
    /// Also print every line to standard output (for a log collector), after it is in the file.
    pub stdout: bool,
    /// Serve requests even when their event cannot be queued, logging a warning instead (not recommended).
    pub fail_open: bool,
    /// How long a request may wait for room in a full queue before it is refused. Milliseconds as a number,
    /// or a string such as `"100ms"` or `"2s"`.
    #[serde(deserialize_with = "de_duration")]
    pub enqueue_timeout: Duration,
    /// When an allowed access's record must be on disk (see [`Durability`]).
    pub durability: Durability,
    /// With durability `batch`, how long after a batch is synced the next one is written at the earliest
    /// ([`DEFAULT_BATCH_WINDOW`]; at most [`MAX_BATCH_WINDOW`]). Longer: fewer writes and syncs under load, more
    /// records lost if the machine fails.
    #[serde(deserialize_with = "de_duration")]
    pub batch_window: Duration,
}

/// When the record of an allowed access reaches the disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The record is queued before the access and written (and synced) within milliseconds of the access's
    /// end, together with whatever else is queued. A crash can lose the records of the last moments.
    #[default]
    Batch,
    /// [`Auditor::begin`] returns only once a record of the decision is written and synced (group commit: the
    /// writer takes everything queued, writes it, syncs once and wakes every waiter). The outcome follows as a
    /// second record for the same request id. A crash cannot lose the record of an access that sent data.
    Sync,
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Batch => "batch",
            Durability::Sync => "sync",
        })
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            dir: PathBuf::from("lakegate-data/audit"),
            max_file_bytes: 64 * 1024 * 1024,
            queue_capacity: 16384,
            stdout: false,
            fail_open: false,
            enqueue_timeout: Duration::from_millis(100),
            durability: Durability::Batch,
            batch_window: DEFAULT_BATCH_WINDOW,
        }
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
        Raw::Text(text) => {
            let text = text.trim();
            let (number, unit) = if let Some(n) = text.strip_suffix("ms") {
                (n, 1)
            } else if let Some(n) = text.strip_suffix('s') {
                (n, 1000)
            } else {
                (text, 1)
            };
            number
                .trim()
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(unit))
                .map(Duration::from_millis)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid duration {text:?} (e.g. \"100ms\")")))
        }
    }
}

/// What travels through the queue.
enum Msg {
    Event(Box<AuditEvent>),
    /// An event whose sender waits until it is written and synced (durability `sync`).
    Synced(Box<AuditEvent>, oneshot::Sender<()>),
    Flush(oneshot::Sender<()>),
}

/// State shared by the handles and the writer thread.
struct Shared {
    /// Set while the last write (or checkpoint) failed; cleared by the next success.
    failed: AtomicBool,
    current_file: Mutex<PathBuf>,
    fail_open: bool,
    enqueue_timeout: Duration,
    durability: Durability,
    /// How many times the writer moved the checkpoint, for the tests of how often it does.
    #[cfg(test)]
    checkpoints_moved: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn set_current_file(&self, path: &Path) {
        // A poisoned lock only means a panic elsewhere while holding it; the path inside is still usable.
        let mut guard = self.current_file.lock().unwrap_or_else(|e| e.into_inner());
        *guard = path.to_path_buf();
    }
}

/// The handle fronts use to record events. Cheap to clone; all clones feed the same writer.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor").field("healthy", &self.healthy()).field("current_file", &self.current_file()).finish()
    }
}

impl Auditor {
    /// Opens the log directory, continues the chain found there and starts the writer thread.
    ///
    /// Fails when the directory cannot be created or written, or when the last record on disk is damaged
    /// (the chain could not be continued honestly).
    pub fn start(cfg: AuditConfig) -> Result<Auditor, AuditError> {
        if cfg.queue_capacity == 0 {
            return Err(AuditError::Config("queue_capacity must be at least 1".to_owned()));
        }
        if cfg.max_file_bytes == 0 {
            return Err(AuditError::Config("max_file_bytes must be at least 1".to_owned()));
        }
        if cfg.batch_window > MAX_BATCH_WINDOW {
            return Err(AuditError::Config(format!(
                "the batch window (batch_window_ms) must be at most {} ms",
                MAX_BATCH_WINDOW.as_millis()
            )));
        }
        if cfg.durability == Durability::Sync && cfg.queue_capacity < 2 {
            // An access reserves room for its decision and its outcome record.
            return Err(AuditError::Config("queue_capacity must be at least 2 with durability = \"sync\"".to_owned()));
        }
        let log = LogFiles::open(&cfg)?;
        let shared = Arc::new(Shared {
            failed: AtomicBool::new(false),
            current_file: Mutex::new(log.current_path()),
            fail_open: cfg.fail_open,
            enqueue_timeout: cfg.enqueue_timeout,
            durability: cfg.durability,
            #[cfg(test)]
            checkpoints_moved: Default::default(),
        });
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let writer = Writer {
            rx,
            log,
            shared: shared.clone(),
            pending: Vec::new(),
            serialized: Vec::new(),
            reported: 0,
            waiters: Vec::new(),
            synced_waiters: Vec::new(),
            timer: None,
            last_checkpoint: Instant::now(),
            last_batch: None,
            batch_window: cfg.batch_window,
        };
        std::thread::Builder::new()
            .name("lakegate-audit".to_owned())
            .spawn(move || writer.run())
            .map_err(|source| AuditError::Io { path: cfg.dir.clone(), source })?;
        Ok(Auditor { tx, shared })
    }

    /// Reserves room for `event` in the queue. Call it after the decision and before the access: if it fails,
    /// refuse the request (no event, no access).
    ///
    /// Waits at most `enqueue_timeout` for room. Returns [`AuditError::Unavailable`] when the queue stays full,
    /// the writer is failing or has stopped, unless `fail_open` is set, in which case it logs a warning and
    /// returns a slot anyway.
    ///
    /// With durability `sync` it also writes a record of the decision (the event as it is now, with `stage`
    /// `decision`) and returns only once that record is synced to disk; the slot's own record becomes the
    /// `outcome` record.
    pub async fn begin(&self, event: AuditEvent) -> Result<AuditSlot, AuditError> {
        match self.shared.durability {
            Durability::Batch => self.begin_queued(Box::new(event)).await,
            Durability::Sync => self.begin_synced(Box::new(event)).await,
        }
    }

    async fn begin_queued(&self, event: Box<AuditEvent>) -> Result<AuditSlot, AuditError> {
        let cause = if self.shared.failed.load(Ordering::Acquire) {
            Unavailable::WriterFailed
        } else {
            match tokio::time::timeout(self.shared.enqueue_timeout, self.tx.clone().reserve_owned()).await {
                Ok(Ok(permit)) => {
                    return Ok(AuditSlot { event: Some(event), permit: Some(permit), fallback: None });
                }
                Ok(Err(_closed)) => Unavailable::WriterStopped,
                Err(_elapsed) => Unavailable::QueueFull,
            }
        };
        self.unavailable(event, cause)
    }

    async fn begin_synced(&self, mut event: Box<AuditEvent>) -> Result<AuditSlot, AuditError> {
        if self.shared.failed.load(Ordering::Acquire) {
            return self.unavailable(event, Unavailable::WriterFailed);
        }
        // Room for both records up front, so that an access whose decision is on disk can always record its
        // outcome.
        let reserve = async {
            let decision = self.tx.clone().reserve_owned().await?;
            let outcome = self.tx.clone().reserve_owned().await?;
            Ok::<_, mpsc::error::SendError<()>>((decision, outcome))
        };
        let (decision_room, outcome_room) = match tokio::time::timeout(self.shared.enqueue_timeout, reserve).await {
            Ok(Ok(room)) => room,
            Ok(Err(_closed)) => return self.unavailable(event, Unavailable::WriterStopped),
            Err(_elapsed) => return self.unavailable(event, Unavailable::QueueFull),
        };
        let decision = Box::new(event.decision_record());
        event.stage = Some(super::event::Stage::Outcome);
        let (synced, on_disk) = oneshot::channel();
        decision_room.send(Msg::Synced(decision, synced));
        let mut slot = AuditSlot { event: Some(event), permit: Some(outcome_room), fallback: None };
        if on_disk.await.is_ok() {
            return Ok(slot);
        }
        // The writer failed (or stopped) before the decision record was synced.
        let cause = if self.tx.is_closed() { Unavailable::WriterStopped } else { Unavailable::WriterFailed };
        if self.shared.fail_open {
            tracing::warn!(
                request_id = %slot.event_mut().request_id,
                %cause,
                "audit record not synced; serving the request anyway because audit.fail_open is set"
            );
            return Ok(slot);
        }
        // The decision record is still queued and reaches the disk when the writer recovers; the outcome
        // record says that the access never happened.
        let outcome = slot.event_mut();
        outcome.decision = super::Decision::Error;
        outcome.reason = Some(format!("not carried out: audit log unavailable ({cause})"));
        slot.finish();
        Err(AuditError::Unavailable(cause))
    }

    /// The refusal of a request whose event found no room, or, with `fail_open`, a slot anyway.
    fn unavailable(&self, event: Box<AuditEvent>, cause: Unavailable) -> Result<AuditSlot, AuditError> {
        if !self.shared.fail_open {
            return Err(AuditError::Unavailable(cause));
        }
        tracing::warn!(
            request_id = %event.request_id,
            %cause,
            "audit log unavailable; serving the request anyway because audit.fail_open is set"
        );
        Ok(AuditSlot {
            event: Some(event),
            // Room may have freed up since; if not, the event is logged to stderr when the slot is finished.
            permit: self.tx.clone().try_reserve_owned().ok(),
            fallback: Some(self.tx.clone()),
        })
    }

    /// Records a one-shot event (e.g. a denial) as one record: queued, never waited for, whatever the
    /// durability, because no data goes out with it.
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditError> {
        self.begin_queued(Box::new(event)).await?.finish();
        Ok(())
    }

    /// Waits until every event submitted before this call is written, synced and checkpointed. While the
    /// writer is failing this waits for it to recover.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Msg::Flush(done)).await.map_err(|_| AuditError::Unavailable(Unavailable::WriterStopped))?;
        wait.await.map_err(|_| AuditError::Unavailable(Unavailable::WriterStopped))
    }

    /// Whether events are being written (for `/readyz`).
    pub fn healthy(&self) -> bool {
        !self.shared.failed.load(Ordering::Acquire) && !self.tx.is_closed()
    }

    /// The file being written now (for the startup banner).
    pub fn current_file(&self) -> PathBuf {
        self.shared.current_file.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    #[cfg(test)]
    pub(super) fn checkpoints_moved(&self) -> usize {
        self.shared.checkpoints_moved.load(Ordering::Relaxed)
    }
}

/// Room reserved in the queue for one event, held while the request is served.
///
/// Fill in the outcome through [`event_mut`](Self::event_mut) and call [`finish`](Self::finish). A slot
/// dropped without `finish` (the client went away, an error path returned early) still submits its event,
/// with the outcome marked `incomplete`.
pub struct AuditSlot {
    /// Always `Some` until the slot is finished or dropped.
    event: Option<Box<AuditEvent>>,
    permit: Option<mpsc::OwnedPermit<Msg>>,
    /// Only for fail-open slots that could not reserve room.
    fallback: Option<mpsc::Sender<Msg>>,
}

impl std::fmt::Debug for AuditSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSlot").field("event", &self.event).field("reserved", &self.permit.is_some()).finish()
    }
}

impl AuditSlot {
    /// The event, to fill in the outcome, byte counts or SQL details while serving.
    pub fn event_mut(&mut self) -> &mut AuditEvent {
        // `event` is only taken by `finish` and `drop`, which consume the slot, so the fallback is never used;
        // it exists so that this accessor cannot panic.
        self.event.get_or_insert_with(|| {
            Box::new(AuditEvent::new(super::Front::Control, "", "", "").error("audit slot reused"))
        })
    }

    /// Submits the event as complete.
    pub fn finish(mut self) {
        self.submit(true);
    }

    fn submit(&mut self, finished: bool) {
        let Some(mut event) = self.event.take() else {
            return;
        };
        event.seal(finished);
        if let Some(permit) = self.permit.take() {
            permit.send(Msg::Event(event));
            return;
        }
        let unsent = match self.fallback.take() {
            Some(tx) => match tx.try_send(Msg::Event(event)) {
                Ok(()) => return,
                Err(e) => e.into_inner(),
            },
            None => Msg::Event(event),
        };
        if let Msg::Event(event) = unsent {
            let json = serde_json::to_string(&event).unwrap_or_else(|e| format!("<unserialisable: {e}>"));
            tracing::error!(request_id = %event.request_id, "audit event not written (fail_open)");
            eprintln!("lakegate audit: event not written (fail_open): {json}");
        }
    }
}

impl Drop for AuditSlot {
    fn drop(&mut self) {
        self.submit(false);
    }
}

/// The writer thread's state.
struct Writer {
    rx: mpsc::Receiver<Msg>,
    log: LogFiles,
    shared: Arc<Shared>,
    /// Chained lines not yet on disk. Their sequence numbers are fixed, so a retry writes the same bytes.
    pending: Vec<Vec<u8>>,
    /// An event's JSON before it is chained: one buffer for every event, so that a record does not grow a new
    /// one from nothing.
    serialized: Vec<u8>,
    /// How many of `pending` were already printed to stderr after a failure.
    reported: usize,
    /// Flush calls to answer after the next successful write.
    waiters: Vec<oneshot::Sender<()>>,
    /// `begin` calls (durability `sync`) waiting for their decision record; answered as soon as the batch
    /// holding it is synced, dropped (an error for the waiter) when the write fails.
    synced_waiters: Vec<oneshot::Sender<()>>,
    /// The thread's own clock, to wait for the next event with a timeout (see [`CHECKPOINT_INTERVAL`]). Made on the
    /// thread, because a runtime may not be dropped inside the async code that starts the auditor.
    timer: Option<tokio::runtime::Runtime>,
    last_checkpoint: Instant,
    /// When the last batch was synced.
    last_batch: Option<Instant>,
    /// See [`AuditConfig::batch_window`].
    batch_window: Duration,
}

/// What arrived while the writer waited with only the checkpoint left to do.
enum Next {
    Msg(Msg),
    /// Nothing: time for the checkpoint.
    Due,
    /// Every sender is gone.
    Closed,
}

impl Writer {
    fn run(mut self) {
        match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(timer) => self.timer = Some(timer),
            Err(e) => {
                tracing::warn!(error = %e, "no timer for the audit writer; moving the checkpoint after every batch")
            }
        }
        loop {
            let busy = !self.pending.is_empty() || !self.waiters.is_empty();
            let mut due = false;
            if !busy && !self.log.checkpoint_due {
                match self.rx.blocking_recv() {
                    Some(msg) => self.take(msg),
                    None => return,
                }
                self.gather();
            } else if self.shared.failed.load(Ordering::Acquire) {
                std::thread::sleep(RETRY_INTERVAL);
            } else if !busy {
                // Only the checkpoint is left: let the next events come first, until it is due.
                match self.next_within(CHECKPOINT_INTERVAL.saturating_sub(self.last_checkpoint.elapsed())) {
                    Next::Msg(msg) => {
                        self.take(msg);
                        self.gather();
                    }
                    Next::Due => due = true,
                    Next::Closed => return self.write(true),
                }
            }
            // Bounded, so that a failing writer does not move the whole queue into memory: the queue stays full
            // and `begin` refuses further requests.
            while self.pending.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(msg) => self.take(msg),
                    Err(_) => break,
                }
            }
            self.write(due);
        }
    }

    /// With durability `batch`, after the first event of a batch: let others join it until the batch window
    /// has passed since the last batch was synced (unless someone waits for a flush, which is answered at once).
    fn gather(&self) {
        if self.shared.durability != Durability::Batch || !self.waiters.is_empty() {
            return;
        }
        if let Some(last) = self.last_batch {
            std::thread::sleep(self.batch_window.saturating_sub(last.elapsed()));
        }
    }

    fn next_within(&mut self, wait: Duration) -> Next {
        let Some(timer) = &self.timer else { return Next::Due };
        let rx = &mut self.rx;
        match timer.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
            Ok(Some(msg)) => Next::Msg(msg),
            Ok(None) => Next::Closed,
            Err(_elapsed) => Next::Due,
        }
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Event(event) => self.chain(&event),
            Msg::Synced(event, synced) => {
                self.chain(&event);
                self.synced_waiters.push(synced);
            }
            Msg::Flush(done) => self.waiters.push(done),
        }
    }

    fn chain(&mut self, event: &AuditEvent) {
        self.serialized.clear();
        if let Err(e) = serde_json::to_writer(&mut self.serialized, event) {
            // Cannot happen with these types (string map keys only); still, record that an event existed
            // rather than nothing.
            self.serialized = serde_json::json!({
                "request_id": event.request_id,
                "decision": "error",
                "reason": format!("audit event could not be serialised: {e}"),
            })
            .to_string()
            .into_bytes();
        }
        let (line, tip) = chain::encode_line(self.log.tip, &self.serialized);
        self.log.tip = Some(tip);
        self.pending.push(line);
        if self.serialized.capacity() > MAX_KEPT_SERIALIZED {
            // A rare large event (a long SQL text) does not keep its buffer.
            self.serialized = Vec::new();
        }
    }

    /// Writes and syncs what is pending; moves the checkpoint when it is `due`, when a flush waits for it, when
    /// it was last moved [`CHECKPOINT_INTERVAL`] ago, or while the writer is failing (so that a failing
    /// checkpoint keeps the failed state).
    fn write(&mut self, due: bool) {
        if !self.pending.is_empty() {
            let started = Instant::now();
            match self.log.append(&self.pending, &self.shared) {
                Ok(()) => {
                    self.timed("batch", started);
                    self.last_batch = Some(Instant::now());
                    // On disk: the requests waiting for their decision record go ahead before anything else.
                    for synced in self.synced_waiters.drain(..) {
                        let _ = synced.send(());
                    }
                    if self.log.stdout {
                        print_lines(&self.pending);
                    }
                    self.pending.clear();
                    self.reported = 0;
                }
                Err(e) => return self.failed("write", &e),
            }
        }
        let checkpoint_now = due
            || !self.waiters.is_empty()
            || self.shared.failed.load(Ordering::Acquire)
            || self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL;
        if self.log.checkpoint_due && checkpoint_now {
            let started = Instant::now();
            if let Err(e) = self.log.checkpoint() {
                return self.failed("checkpoint", &e);
            }
            self.timed("checkpoint", started);
            self.last_checkpoint = Instant::now();
            #[cfg(test)]
            self.shared.checkpoints_moved.fetch_add(1, Ordering::Relaxed);
        }
        if self.shared.failed.swap(false, Ordering::AcqRel) {
            tracing::info!("audit log writable again");
        }
        for done in self.waiters.drain(..) {
            // The caller may have stopped waiting; nothing to do then.
            let _ = done.send(());
        }
    }

    /// Records how long a `step` (a batch's write and sync, or the checkpoint's) that began at `started` took.
    /// The queue fills while it lasts: one that lasts longer than a request waits for room is logged, as it may
    /// be why requests were refused.
    fn timed(&self, step: &'static str, started: Instant) {
        let took = started.elapsed();
        crate::metrics::AUDIT_WRITE_SECONDS.observe(&[("step", step)], took.as_secs_f64());
        if took >= self.shared.enqueue_timeout {
            tracing::warn!(
                "the audit log's {step} took {took:?} to write and sync, longer than a request waits for room in \
                 the queue ({:?})",
                self.shared.enqueue_timeout
            );
        }
    }

    fn failed(&mut self, what: &str, e: &io::Error) {
        self.shared.failed.store(true, Ordering::Release);
        // Their requests are refused now rather than held until the disk comes back.
        self.synced_waiters.clear();
        tracing::error!(
            error = %e,
            pending = self.pending.len(),
            "audit {what} failed; refusing new requests and retrying every {}s",
            RETRY_INTERVAL.as_secs()
        );
        // Until they reach the file, stderr is the only place these events exist outside memory.
        for line in self.pending.iter().skip(self.reported) {
            eprint!("lakegate audit: not yet written, retrying: {}", String::from_utf8_lossy(line));
        }
        self.reported = self.pending.len();
    }
}

fn print_lines(lines: &[Vec<u8>]) {
    let mut out = io::stdout().lock();
    for line in lines {
        if let Err(e) = out.write_all(line) {
            // The file is the record of truth; stdout is a copy for collectors.
            tracing::warn!(error = %e, "audit stdout sink failed");
            return;
        }
    }
    let _ = out.flush();
}

/// A position in the log: file number and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    number: u64,
    len: u64,
}

/// The log directory as the writer sees it.
struct LogFiles {
    dir: PathBuf,
    max_file_bytes: u64,
    stdout: bool,
    /// The tip including pending lines.
    tip: Option<Tip>,
    /// The tip of what is on disk and synced.
    synced_tip: Option<Tip>,
    /// What is on disk and synced; a failed batch is cut back to here before it is retried.
    synced: Position,
    /// The open file and where its end is; `None` after a failure, so the next attempt reopens at `synced`.
    file: Option<(File, Position)>,
    checkpoint_due: bool,
}

impl LogFiles {
    /// Finds where the chain ends and opens the file to continue it.
    fn open(cfg: &AuditConfig) -> Result<LogFiles, AuditError> {
        let dir = cfg.dir.clone();
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source: io::Error| AuditError::Io { path, source }
        };
        let recovery = |reason| AuditError::Recovery { dir: dir.clone(), reason };
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let files = chain::list_log_files(&dir).map_err(io_err(&dir))?;
        let checkpoint = chain::read_checkpoint_tip(&dir).map_err(|e| recovery(RecoveryError::Checkpoint(e)))?;

        let mut disk: Option<Tip> = None;
        let newest = files.last().map(|(n, _)| *n);
        for (n, path) in files.iter().rev() {
            if let Some(rec) = last_record(path, Some(*n) == newest).map_err(&recovery)? {
                disk = Some(Tip { seq: rec.seq, hash: rec.hash });
                break;
            }
        }

        let tip = match (checkpoint, disk) {
            (None, None) => None,
            (None, Some(d)) => {
                tracing::warn!(seq = d.seq, "no audit checkpoint found; continuing from the last record on disk");
                Some(d)
            }
            (Some(c), Some(d)) if c == d => Some(d),
            (Some(c), Some(d)) if c.seq < d.seq && find_hash(&files, c.seq) == Some(c.hash) => {
                // The last batch reached the disk but the process stopped before moving the checkpoint.
                tracing::info!(checkpoint = c.seq, last = d.seq, "audit checkpoint behind the log; catching up");
                Some(d)
            }
            (Some(c), d) => {
                // Records the checkpoint vouches for are gone or different. Continuing from the checkpoint keeps
                // that break in the chain, where `verify` reports it, instead of papering over it.
                tracing::error!(
                    checkpoint = c.seq,
                    last_on_disk = ?d.map(|d| d.seq),
                    "audit log does not match its checkpoint (records removed or rewritten); \
                     continuing from the checkpoint so that verification shows the break"
                );
                Some(c)
            }
        };

        let position = match files.last() {
            Some((n, path)) => {
                let len = fs::metadata(path).map_err(io_err(path))?.len();
                if len < cfg.max_file_bytes {
                    Position { number: *n, len }
                } else {
                    Position { number: n.saturating_add(1), len: 0 }
                }
            }
            None => Position { number: 1, len: 0 },
        };
        let mut log = LogFiles {
            dir: dir.clone(),
            max_file_bytes: cfg.max_file_bytes,
            stdout: cfg.stdout,
            tip,
            synced_tip: tip,
            synced: position,
            file: None,
            checkpoint_due: tip.is_some() && tip != checkpoint,
        };
        // Open now, so that an unwritable directory fails at startup, not on the first request.
        let path = log.current_path();
        log.reopen().map_err(io_err(&path))?;
        if log.checkpoint_due {
            log.checkpoint().map_err(io_err(&dir.join(chain::CHECKPOINT_FILE)))?;
        }
        Ok(log)
    }

    fn path_of(&self, number: u64) -> PathBuf {
        self.dir.join(chain::log_file_name(number))
    }

    fn current_path(&self) -> PathBuf {
        let number = self.file.as_ref().map_or(self.synced.number, |(_, p)| p.number);
        self.path_of(number)
    }

    /// Opens the synced file and cuts off whatever a failed batch left after the synced length.
    fn reopen(&mut self) -> io::Result<()> {
        let path = self.path_of(self.synced.number);
        // A file with synced content must still exist; creating it anew would hide that it was removed.
        let file = OpenOptions::new().append(true).create(self.synced.len == 0).open(&path)?;
        // Never extend: a file shorter than what we synced was cut by someone else, and padding it would
        // hide that. Stay failed instead.
        if file.metadata()?.len() < self.synced.len {
            return Err(io::Error::other(format!("{} is shorter than what was written to it", path.display())));
        }
        file.set_len(self.synced.len)?;
        if self.synced.len == 0 {
            sync_dir(&self.dir);
        }
        self.file = Some((file, self.synced));
        Ok(())
    }

    /// Appends one batch, rotating as needed, and syncs it.
    fn append(&mut self, lines: &[Vec<u8>], shared: &Shared) -> io::Result<()> {
        let result = self.append_inner(lines, shared);
        if result.is_err() {
            self.file = None;
        }
        result
    }

    fn append_inner(&mut self, lines: &[Vec<u8>], shared: &Shared) -> io::Result<()> {
        if self.file.is_none() {
            self.reopen()?;
            shared.set_current_file(&self.current_path());
        }
        let Some((mut file, mut pos)) = self.file.take() else {
            return Err(io::Error::other("audit file not open"));
        };
        let mut buf = Vec::with_capacity(lines.iter().map(Vec::len).sum());
        for line in lines {
            let len = u64::try_from(line.len()).unwrap_or(u64::MAX);
            if pos.len > 0 && pos.len.saturating_add(len) > self.max_file_bytes {
                file.write_all(&buf)?;
                buf.clear();
                file.sync_data()?;
                pos = Position { number: pos.number.saturating_add(1), len: 0 };
                // Truncate: a file with this number can only hold the remains of our own failed batch.
                file = OpenOptions::new().write(true).create(true).truncate(true).open(self.path_of(pos.number))?;
                sync_dir(&self.dir);
                shared.set_current_file(&self.path_of(pos.number));
            }
            buf.extend_from_slice(line);
            pos.len = pos.len.saturating_add(len);
        }
        file.write_all(&buf)?;
        file.sync_data()?;
        self.synced = pos;
        self.synced_tip = self.tip;
        self.checkpoint_due = true;
        self.file = Some((file, pos));
        Ok(())
    }

    fn checkpoint(&mut self) -> io::Result<()> {
        if let Some(tip) = self.synced_tip {
            chain::write_checkpoint(&self.dir, tip, Some(&self.path_of(self.synced.number)))?;
        }
        self.checkpoint_due = false;
        Ok(())
    }
}

/// Makes a file creation or rename durable. Best effort: some filesystems refuse to sync a directory, and
/// the file's own data is synced regardless.
fn sync_dir(dir: &Path) {
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(error = %e, dir = %dir.display(), "could not sync the audit directory");
    }
}

/// The last record of a file, `None` if it is empty. In the newest file, bytes after the last newline are the
/// remains of a write cut short (they were never checkpointed) and are removed; anywhere else they are damage.
fn last_record(path: &Path, newest: bool) -> Result<Option<Record>, RecoveryError> {
    let read = |source| RecoveryError::Read { path: path.to_owned(), source };
    let mut reader = chain::open_read(path).map_err(read)?;
    let mut buf = Vec::new();
    let mut last = Vec::new();
    let mut complete_len: u64 = 0;
    loop {
        match chain::read_line(&mut reader, &mut buf).map_err(read)? {
            Line::Complete => {
                let line_len = u64::try_from(buf.len()).unwrap_or(u64::MAX).saturating_add(1);
                complete_len = complete_len.saturating_add(line_len);
                std::mem::swap(&mut last, &mut buf);
            }
            Line::End => break,
            Line::Torn if newest => {
                tracing::warn!(file = %path.display(), "removing an incomplete last line left by an interrupted write");
                let f = OpenOptions::new().write(true).open(path).map_err(read)?;
                f.set_len(complete_len).map_err(read)?;
                f.sync_data().map_err(read)?;
                break;
            }
            Line::Torn => return Err(RecoveryError::Torn { path: path.to_owned() }),
            Line::TooLong => return Err(RecoveryError::TooLong { path: path.to_owned() }),
        }
    }
    if complete_len == 0 {
        return Ok(None);
    }
    let rec = chain::parse_line(&last).map_err(|source| RecoveryError::Unparsable { path: path.to_owned(), source })?;
    if !rec.hash_ok {
        return Err(RecoveryError::HashMismatch { path: path.to_owned(), seq: rec.seq });
    }
    Ok(Some(rec))
}

/// The hash of record `seq` in `files`, searching from the newest file back.
fn find_hash(files: &[(u64, PathBuf)], seq: u64) -> Option<chain::Hash> {
    for (_, path) in files.iter().rev() {
        let mut reader = chain::open_read(path).ok()?;
        let mut buf = Vec::new();
        let mut first = true;
        while let Ok(Line::Complete) = chain::read_line(&mut reader, &mut buf) {
            let rec = chain::parse_line(&buf).ok()?;
            if rec.seq == seq {
                return Some(rec.hash);
            }
            if first && rec.seq > seq {
                break;
            }
            first = false;
        }
    }
    None
}
