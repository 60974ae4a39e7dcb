//! Rows read ahead of a client that fetches them at its own pace, so that a small result gives its backend
//! connection back at once.
//!
//! A Trino client fetches a query's rows a page at a time, when it pleases, and on PostgreSQL the rows stream from
//! a backend connection held until the last is read. The Trino front has few connections (its share of the pool:
//! two of the default eight on two cores), so a BI tool that showed the first page of two results and left the
//! rest unfetched held both while its user looked at them, and every other user's query waited and was refused.
//! Here a task reads the rows as they come into a buffer of at most `budget` bytes: a result that fits is read to
//! its end, which gives the connection back at once, and a larger one holds its connection, as before, only while
//! its client is more than the budget behind.
//!
//! When others wait for a connection of its pool (`sql.trino_spill_bytes`), a query whose client is a budget behind
//! does not hold its connection: the reading task writes the rest of its rows to disk ([`crate::spill`]) and
//! gives the connection back at their end, and the client reads them from there in order. Trino's coordinator
//! buffers results for the same reason. The disk all queries' rows take together is bounded; a query that would
//! pass the bound holds its connection again from there, as before.
//!
//! The stream returned is what the session's audit wrapper counts, so a query records the rows its client took,
//! not those read ahead: an abandoned query's record says how far its client got.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::error::SqlError;
use crate::rows::{Cell, RowStream};
use crate::spill::{SpillReader, SpillWriter, encode};

type Row = Result<Vec<Cell>, SqlError>;

/// Rows read ahead are handed over in batches of what the backend had ready, at most this many rows and bytes
/// each: handed over one at a time, each a message and a wake-up of its own, they cost a large result an eighth of
/// its rate.
const BATCH_ROWS: usize = 256;
const BATCH_BYTES: u32 = 64 * 1024;

/// How often a reading task that waits for its client asks whether others wait for its connection.
const WAITERS_CHECKED_EVERY: Duration = Duration::from_millis(100);

/// Where a read-ahead puts the rows its client is behind on when others wait for its connection.
#[derive(Clone)]
pub(crate) struct Spill {
    /// The bytes of disk every query's spilled rows may take together, as permits.
    pub(crate) disk: Arc<Semaphore>,
    /// Whether a statement waits for a connection of the pool the rows' connection came from.
    pub(crate) awaited: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// What the reading task hands the client's side, in order.
enum Ahead {
    /// Rows in memory, holding their weight of the read-ahead's budget until the client has taken them all.
    Rows(Vec<Row>, Option<OwnedSemaphorePermit>),
    /// Rows on disk, holding their bytes of the spill's bound until the client has read them all.
    Spilled(SpillReader, OwnedSemaphorePermit),
}

/// `rows`, read ahead by up to `budget` bytes (as [`weight`] counts them, and the batch being read) by a task of
/// the current runtime, and past that to disk when `spill` says others wait. A row larger than the budget is read
/// ahead alone. `rows` itself when the budget is 0 or there is no runtime.
pub(crate) fn read_ahead(rows: RowStream, budget: usize, spill: Option<Spill>) -> RowStream {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return rows };
    let budget = u32::try_from(budget).unwrap_or(u32::MAX);
    if budget == 0 {
        return rows;
    }
    let room = Arc::new(Semaphore::new(budget as usize));
    // Unbounded in count, bounded in bytes: each batch in it holds its weight of `room`'s permits or of the disk's.
    let (ahead, taken) = mpsc::unbounded_channel::<Ahead>();
    runtime.spawn(async move {
        let mut rows = rows;
        let mut spill = spill;
        loop {
            // Read nothing more while the client is a budget behind, unless others wait for the connection. Whatever
            // the task waits for, it stops when the client goes (its query cancelled, abandoned or dropped), which
            // drops `rows` and stops the query on its backend.
            let permit = tokio::select! {
                permit = room.clone().acquire_owned() => permit,
                () = ahead.closed() => return,
                () = awaited(spill.as_ref()) => {
                    if to_disk(&mut rows, &mut spill, &ahead).await { continue } else { return }
                }
            };
            let Ok(mut permit) = permit else { return };
            let first = tokio::select! {
                row = rows.next() => row,
                () = ahead.closed() => return,
            };
            // The end: `rows` is dropped here, which gives the backend connection back.
            let Some(first) = first else { return };
            let batch = Batch::read(first, &mut rows, budget);
            let last = batch.ended || batch.failed;
            let more = batch.weight.clamp(1, budget) - 1;
            if more > 0 {
                let more = tokio::select! {
                    more = room.clone().acquire_many_owned(more) => Some(more),
                    () = ahead.closed() => return,
                    () = awaited(spill.as_ref()) => None,
                };
                match more {
                    Some(Ok(more)) => permit.merge(more),
                    Some(Err(_)) => return,
                    // Others wait for the connection: the batch in hand goes as it is (past the budget by what
                    // it lacks, at most a batch), the rest to disk.
                    None => {
                        if ahead.send(Ahead::Rows(batch.rows, Some(permit))).is_err() || last {
                            return;
                        }
                        if to_disk(&mut rows, &mut spill, &ahead).await { continue } else { return }
                    }
                }
            }
            if ahead.send(Ahead::Rows(batch.rows, Some(permit))).is_err() || last {
                return;
            }
        }
    });
    Box::pin(taken_rows(taken))
}

/// Resolves once others wait for the connection (checked every [`WAITERS_CHECKED_EVERY`]); never without `spill`.
async fn awaited(spill: Option<&Spill>) {
    let Some(spill) = spill else { return std::future::pending().await };
    loop {
        tokio::time::sleep(WAITERS_CHECKED_EVERY).await;
        if (spill.awaited)() {
            return;
        }
    }
}

/// Others wait for the connection: the rows left go to disk, once. Whether the task goes on reading ahead (holding
/// the connection, as without a spill: past the disk's bound, or the disk failed).
async fn to_disk(rows: &mut RowStream, spill: &mut Option<Spill>, ahead: &mpsc::UnboundedSender<Ahead>) -> bool {
    let Some(to_disk) = spill.take() else { return false };
    matches!(spill_rest(rows, &to_disk, ahead).await, Spilled::Stopped)
}

/// How writing the rest of the rows to disk ended.
enum Spilled {
    /// At the rows' end (or their error, or the client gone): the task is done.
    Ended,
    /// Before the end: past the disk's bound, or the disk failed. What was written has been handed over.
    Stopped,
}

/// Writes the rows left to disk until their end, handing them over as one segment once written; the batch that
/// would pass the disk's bound, and everything after, stays for the task to read ahead as without a spill. The
/// batches written are full ones whatever the read-ahead's budget, so that a small budget costs no write a row.
async fn spill_rest(rows: &mut RowStream, spill: &Spill, ahead: &mpsc::UnboundedSender<Ahead>) -> Spilled {
    let mut writer: Option<SpillWriter> = None;
    let mut held: Option<OwnedSemaphorePermit> = None;
    let hand_over = |writer: Option<SpillWriter>, held: Option<OwnedSemaphorePermit>| {
        let (Some(writer), Some(held)) = (writer, held) else { return true };
        match writer.finish() {
            Ok(reader) => ahead.send(Ahead::Spilled(reader, held)).is_ok(),
            Err(e) => {
                // The rows written cannot be read back: the client's result ends in an error, not short.
                tracing::warn!(error = %e, "rows written to disk could not be read back");
                let e = SqlError::Internal(format!("rows written to disk could not be read back: {e}"));
                let _ = ahead.send(Ahead::Rows(vec![Err(e)], None));
                false
            }
        }
    };
    loop {
        let first = tokio::select! {
            row = rows.next() => row,
            () = ahead.closed() => return Spilled::Ended,
        };
        let Some(first) = first else {
            hand_over(writer, held);
            return Spilled::Ended;
        };
        let batch = Batch::read(first, rows, BATCH_BYTES);
        let last = batch.ended || batch.failed;
        let encoded = if batch.failed {
            None
        } else {
            batch.rows.iter().map(|r| r.as_ref().ok()).collect::<Option<Vec<_>>>().map(encode)
        };
        let room = encoded.as_ref().and_then(|bytes| {
            let bytes = u32::try_from(bytes.len()).ok()?;
            spill.disk.clone().try_acquire_many_owned(bytes).ok()
        });
        let (Some(bytes), Some(room)) = (encoded, room) else {
            // An error to give, or no room left on disk: what was written goes first, then this batch from memory.
            let handed = hand_over(writer, held);
            let sent = handed && ahead.send(Ahead::Rows(batch.rows, None)).is_ok();
            return if last || !sent { Spilled::Ended } else { Spilled::Stopped };
        };
        let mut open = match writer.take() {
            Some(open) => open,
            None => match tokio::task::spawn_blocking(SpillWriter::new).await {
                Ok(Ok(open)) => open,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "no temporary file for rows a client is behind on; holding the connection");
                    return if ahead.send(Ahead::Rows(batch.rows, None)).is_err() || last {
                        Spilled::Ended
                    } else {
                        Spilled::Stopped
                    };
                }
                Err(_) => return Spilled::Ended,
            },
        };
        let written = tokio::task::spawn_blocking(move || {
            let result = open.append(&bytes);
            (open, result)
        })
        .await;
        let Ok((open, result)) = written else { return Spilled::Ended };
        if let Err(e) = result {
            tracing::warn!(error = %e, "writing rows a client is behind on to disk failed; holding the connection");
            let handed = hand_over(Some(open), held);
            let sent = handed && ahead.send(Ahead::Rows(batch.rows, None)).is_ok();
            return if last || !sent { Spilled::Ended } else { Spilled::Stopped };
        }
        writer = Some(open);
        match held.as_mut() {
            Some(held) => held.merge(room),
            None => held = Some(room),
        }
        if last {
            hand_over(writer, held);
            return Spilled::Ended;
        }
    }
}

/// The client's side: the rows handed over, in order, read back from disk where they were spilled.
fn taken_rows(taken: mpsc::UnboundedReceiver<Ahead>) -> impl futures::Stream<Item = Row> + Send {
    struct Taking {
        taken: mpsc::UnboundedReceiver<Ahead>,
        /// The budget (or disk) the batch being taken holds, given back when the client asks past it.
        _held: Option<OwnedSemaphorePermit>,
        reading: Option<(SpillReader, OwnedSemaphorePermit)>,
    }
    let start = Taking { taken, _held: None, reading: None };
    futures::stream::unfold(start, |mut state| async move {
        loop {
            state._held = None;
            if let Some((reader, disk)) = state.reading.take() {
                let read = tokio::task::spawn_blocking(move || {
                    let mut reader = reader;
                    let batch = reader.next_batch();
                    (reader, batch)
                })
                .await;
                let Ok((reader, batch)) = read else { return None };
                match batch {
                    Ok(Some(rows)) => {
                        state.reading = Some((reader, disk));
                        return Some((rows.into_iter().map(Ok).collect::<Vec<Row>>(), state));
                    }
                    // The segment read, its file closed and its disk given back.
                    Ok(None) => continue,
                    // Nothing after an error is read.
                    Err(e) => {
                        state.taken.close();
                        while state.taken.try_recv().is_ok() {}
                        return Some((vec![Err(e)], state));
                    }
                }
            }
            match state.taken.recv().await? {
                Ahead::Rows(rows, permit) => {
                    state._held = permit;
                    return Some((rows, state));
                }
                Ahead::Spilled(reader, disk) => state.reading = Some((reader, disk)),
            }
        }
    })
    .flat_map(futures::stream::iter)
}

/// Rows read ahead together, their weight, and whether the last is an error (after which nothing is read) or the
/// rows' end came after it.
struct Batch {
    rows: Vec<Row>,
    weight: u32,
    failed: bool,
    ended: bool,
    /// The weight at which the batch is full: [`BATCH_BYTES`], or the budget if that is less.
    limit: u32,
}

impl Batch {
    /// `first` and what the backend has ready after it, without waiting for more.
    fn read(first: Row, rows: &mut RowStream, budget: u32) -> Self {
        let limit = BATCH_BYTES.min(budget);
        let mut batch = Batch { rows: Vec::new(), weight: 0, failed: false, ended: false, limit };
        batch.push(first);
        while !batch.full() {
            match rows.next().now_or_never() {
                Some(Some(row)) => batch.push(row),
                Some(None) => {
                    batch.ended = true;
                    break;
                }
                None => break,
            }
        }
        batch
    }

    fn push(&mut self, row: Row) {
        self.weight = self.weight.saturating_add(row.as_ref().map_or(1, |row| weight(row)));
        self.failed = row.is_err();
        self.rows.push(row);
    }

    fn full(&self) -> bool {
        self.failed || self.rows.len() >= BATCH_ROWS || self.weight >= self.limit
    }
}

/// What a row takes in memory, about: its cells and the text they hold.
fn weight(row: &[Cell]) -> u32 {
    let text: usize =
        row.iter().map(|cell| if let Cell::Text(s) | Cell::Numeric(s) = cell { s.len() } else { 0 }).sum();
    let bytes = size_of::<Vec<Cell>>() + size_of_val(row) + text;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// `n` one-cell rows, counting how many the backend gave and telling when the stream is dropped, as a backend's
    /// stream gives its connection back.
    fn backend(n: usize, text: usize, given: Arc<AtomicUsize>, dropped: tokio::sync::oneshot::Sender<()>) -> RowStream {
        struct OnDrop(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                if let Some(tell) = self.0.take() {
                    let _ = tell.send(());
                }
            }
        }
        let on_drop = OnDrop(Some(dropped));
        Box::pin(futures::stream::iter(0..n).map(move |i| {
            let _held = &on_drop;
            given.fetch_add(1, Ordering::SeqCst);
            Ok(vec![Cell::Text(format!("{i:0>text$}"))])
        }))
    }

    async fn settle() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_result_within_the_budget_is_read_to_its_end_before_its_client_asks() {
        let (given, (dropped, gone)) = (Arc::new(AtomicUsize::new(0)), tokio::sync::oneshot::channel());
        let mut rows = read_ahead(backend(3, 10, given.clone(), dropped), 64 * 1024, None);
        let first = rows.next().await.and_then(Result::ok);
        assert_eq!(first, Some(vec![Cell::Text("0000000000".into())]));
        // The backend's stream ends and is dropped while the client has taken one row.
        tokio::time::timeout(Duration::from_secs(10), gone).await.expect("dropped").expect("told");
        assert_eq!(given.load(Ordering::SeqCst), 3);
        let rest: Vec<_> = rows.map(|row| row.ok()).collect().await;
        assert_eq!(rest.len(), 2);
        assert_eq!(rest.last(), Some(&Some(vec![Cell::Text("0000000002".into())])));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_larger_result_is_read_only_a_budget_ahead_and_in_full_as_its_client_takes_it() {
        let (given, (dropped, mut gone)) = (Arc::new(AtomicUsize::new(0)), tokio::sync::oneshot::channel());
        // Rows of about 1 KiB, a budget of about four.
        let mut rows = read_ahead(backend(100, 1000, given.clone(), dropped), 4 * 1024, None);
        assert!(rows.next().await.is_some());
        settle().await;
        let read = given.load(Ordering::SeqCst);
        assert!((2..=6).contains(&read), "{read} rows read for a client that took one");
        assert!(gone.try_recv().is_err(), "the backend's stream is still held");
        assert_eq!(rows.count().await, 99);
        assert_eq!(given.load(Ordering::SeqCst), 100);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_goes_away_stops_the_reading() {
        let (given, (dropped, gone)) = (Arc::new(AtomicUsize::new(0)), tokio::sync::oneshot::channel());
        let mut rows = read_ahead(backend(100, 1000, given.clone(), dropped), 2 * 1024, None);
        assert!(rows.next().await.is_some());
        drop(rows);
        tokio::time::timeout(Duration::from_secs(10), gone).await.expect("dropped").expect("told");
        assert!(given.load(Ordering::SeqCst) < 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_ends_the_rows_and_a_row_larger_than_the_budget_still_passes() {
        let rows: RowStream = Box::pin(futures::stream::iter(vec![
            Ok(vec![Cell::Text("x".repeat(10_000))]),
            Err(SqlError::Limit("the backend failed".into())),
            Ok(vec![Cell::Int(1)]),
        ]));
        let got: Vec<_> = read_ahead(rows, 100, None).collect().await;
        assert_eq!(got.len(), 2);
        assert!(matches!(got.first(), Some(Ok(row)) if row == &vec![Cell::Text("x".repeat(10_000))]));
        assert!(matches!(got.last(), Some(Err(SqlError::Limit(_)))));
    }

    /// Disk for `bytes` and a switch that says whether others wait for the connection.
    fn spill(bytes: usize) -> (Spill, Arc<Semaphore>, Arc<std::sync::atomic::AtomicBool>) {
        let (disk, waiting) = (Arc::new(Semaphore::new(bytes)), Arc::new(std::sync::atomic::AtomicBool::new(false)));
        let asked = waiting.clone();
        let spill = Spill { disk: disk.clone(), awaited: Arc::new(move || asked.load(Ordering::SeqCst)) };
        (spill, disk, waiting)
    }

    fn texts(rows: Vec<Row>) -> Vec<String> {
        rows.into_iter()
            .map(|row| match row.as_deref() {
                Ok([Cell::Text(text)]) => text.clone(),
                other => panic!("not a row of one text: {other:?}"),
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_a_budget_behind_gives_its_connection_back_through_disk_once_others_wait_for_it() {
        // With a budget of a few rows the reading waits for room before it reads a batch; with one larger than a
        // batch, for the rest of a batch's room after reading it.
        for budget in [4 * 1024, 100 * 1024] {
            a_client_a_budget_behind_gives_its_connection_back_through_disk(budget).await;
        }
    }

    async fn a_client_a_budget_behind_gives_its_connection_back_through_disk(budget: usize) {
        let (given, (dropped, mut gone)) = (Arc::new(AtomicUsize::new(0)), tokio::sync::oneshot::channel());
        let (spill, disk, waiting) = spill(1 << 20);
        let mut rows = read_ahead(backend(1000, 1000, given.clone(), dropped), budget, Some(spill));
        assert!(rows.next().await.is_some());
        tokio::time::sleep(WAITERS_CHECKED_EVERY * 3).await;
        assert!(gone.try_recv().is_err(), "held while nobody waits for it");
        waiting.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(10), gone).await.expect("dropped").expect("told");
        assert_eq!(given.load(Ordering::SeqCst), 1000);
        assert!(disk.available_permits() < 1 << 20, "the rows on disk hold their bytes of it");
        let rest = texts(rows.collect().await);
        let expected: Vec<String> = (1..1000).map(|i| format!("{i:0>1000}")).collect();
        assert_eq!(rest, expected, "every row, in order");
        assert_eq!(disk.available_permits(), 1 << 20, "read back, they give it back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_disk_bound_the_connection_is_held_again_and_every_row_still_comes_in_order() {
        let (given, (dropped, mut gone)) = (Arc::new(AtomicUsize::new(0)), tokio::sync::oneshot::channel());
        // Room on disk for three batches of about 63 rows of 1 KiB.
        let (spill, disk, waiting) = spill(200 * 1024);
        waiting.store(true, Ordering::SeqCst);
        let mut rows = read_ahead(backend(1000, 1000, given.clone(), dropped), 4 * 1024, Some(spill));
        assert!(rows.next().await.is_some());
        tokio::time::sleep(WAITERS_CHECKED_EVERY * 5).await;
        assert!(gone.try_recv().is_err(), "the rest would not fit: held");
        let read = given.load(Ordering::SeqCst);
        assert!((150..400).contains(&read), "{read} rows read: the budget's, the disk's and the batch past it");
        let rest = texts(rows.collect().await);
        let expected: Vec<String> = (1..1000).map(|i| format!("{i:0>1000}")).collect();
        assert_eq!(rest, expected);
        assert_eq!(disk.available_permits(), 200 * 1024);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_among_rows_spilled_comes_after_them_and_ends_the_rows() {
        let mut backend: Vec<Row> = (0..50).map(|i| Ok(vec![Cell::Text(format!("{i:0>1000}"))])).collect();
        backend.push(Err(SqlError::Limit("the backend failed".into())));
        backend.push(Ok(vec![Cell::Text("after the error".into())]));
        let (spill, disk, waiting) = spill(1 << 20);
        waiting.store(true, Ordering::SeqCst);
        let mut rows = read_ahead(Box::pin(futures::stream::iter(backend)), 2 * 1024, Some(spill));
        assert!(rows.next().await.is_some());
        tokio::time::sleep(WAITERS_CHECKED_EVERY * 3).await;
        let mut rest: Vec<Row> = rows.collect().await;
        assert!(matches!(rest.pop(), Some(Err(SqlError::Limit(_)))), "the error last");
        assert_eq!(texts(rest), (1..50).map(|i| format!("{i:0>1000}")).collect::<Vec<_>>());
        assert_eq!(disk.available_permits(), 1 << 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_goes_away_gives_the_disk_back() {
        let (given, (dropped, gone)) = (Arc::new(AtomicUsize::new(0)), tokio::sync::oneshot::channel());
        let (spill, disk, waiting) = spill(1 << 20);
        waiting.store(true, Ordering::SeqCst);
        let mut rows = read_ahead(backend(500, 1000, given.clone(), dropped), 4 * 1024, Some(spill));
        assert!(rows.next().await.is_some());
        tokio::time::timeout(Duration::from_secs(10), gone).await.expect("dropped").expect("told");
        assert!(disk.available_permits() < 1 << 20);
        drop(rows);
        assert_eq!(disk.available_permits(), 1 << 20);
    }

    #[test]
    fn without_a_budget_or_a_runtime_the_rows_are_the_backends() {
        let rows: RowStream = Box::pin(futures::stream::iter(vec![Ok(vec![Cell::Int(1)])]));
        let got: Vec<_> = futures::executor::block_on(read_ahead(rows, 1024, None).collect());
        assert_eq!(got.len(), 1);
    }
}
