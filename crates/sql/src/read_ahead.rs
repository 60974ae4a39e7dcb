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
//! The stream returned is what the session's audit wrapper counts, so a query records the rows its client took,
//! not those read ahead: an abandoned query's record says how far its client got.

use std::sync::Arc;
use std::task::Poll;

use futures::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::error::SqlError;
use crate::rows::{Cell, RowStream};

type Row = Result<Vec<Cell>, SqlError>;

/// Rows read ahead are handed over in batches of what the backend had ready, at most this many rows and bytes
/// each: handed over one at a time, each a message and a wake-up of its own, they cost a large result an eighth of
/// its rate.
const BATCH_ROWS: usize = 256;
const BATCH_BYTES: u32 = 64 * 1024;

/// `rows`, read ahead by up to `budget` bytes (as [`weight`] counts them, and the batch being read) by a task of
/// the current runtime. A row larger than the budget is read ahead alone. `rows` itself when the budget is 0 or
/// there is no runtime.
pub(crate) fn read_ahead(rows: RowStream, budget: usize) -> RowStream {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return rows };
    let budget = u32::try_from(budget).unwrap_or(u32::MAX);
    if budget == 0 {
        return rows;
    }
    let room = Arc::new(Semaphore::new(budget as usize));
    // Unbounded in count, bounded in bytes: each batch in it holds its weight of `room`'s permits.
    let (ahead, mut taken) = mpsc::unbounded_channel::<(Vec<Row>, OwnedSemaphorePermit)>();
    runtime.spawn(async move {
        let mut rows = rows;
        loop {
            // Read nothing more while the client is a budget behind. Whatever the task waits for, it stops when the
            // client goes (its query cancelled, abandoned or dropped), which drops `rows` and stops the query on
            // its backend.
            let permit = tokio::select! {
                permit = room.clone().acquire_owned() => permit,
                () = ahead.closed() => return,
            };
            let Ok(mut permit) = permit else { return };
            let first = tokio::select! {
                row = rows.next() => row,
                () = ahead.closed() => return,
            };
            // The end: `rows` is dropped here, which gives the backend connection back.
            let Some(first) = first else { return };
            let mut batch = Batch::new(first, budget);
            // What the backend has ready joins the batch, without waiting for more.
            let mut ended = false;
            while !batch.full() {
                match rows.next().now_or_never() {
                    Some(Some(row)) => batch.push(row),
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            let more = batch.weight.clamp(1, budget) - 1;
            if more > 0 {
                let more = tokio::select! {
                    more = room.clone().acquire_many_owned(more) => more,
                    () = ahead.closed() => return,
                };
                let Ok(more) = more else { return };
                permit.merge(more);
            }
            let last = ended || batch.failed;
            if ahead.send((batch.rows, permit)).is_err() || last {
                return;
            }
        }
    });
    let mut batch = Vec::new().into_iter();
    let mut _held: Option<OwnedSemaphorePermit> = None;
    Box::pin(futures::stream::poll_fn(move |cx| {
        loop {
            if let Some(row) = batch.next() {
                return Poll::Ready(Some(row));
            }
            // The batch is all taken: its bytes go back to the budget.
            _held = None;
            match std::task::ready!(taken.poll_recv(cx)) {
                Some((rows, permit)) => (batch, _held) = (rows.into_iter(), Some(permit)),
                None => return Poll::Ready(None),
            }
        }
    }))
}

/// Rows read ahead together, their weight, and whether the last is an error (after which nothing is read).
struct Batch {
    rows: Vec<Row>,
    weight: u32,
    failed: bool,
    /// The weight at which the batch is full: [`BATCH_BYTES`], or the budget if that is less.
    limit: u32,
}

impl Batch {
    fn new(first: Row, budget: u32) -> Self {
        let mut batch = Batch { rows: Vec::new(), weight: 0, failed: false, limit: BATCH_BYTES.min(budget) };
        batch.push(first);
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
        let mut rows = read_ahead(backend(3, 10, given.clone(), dropped), 64 * 1024);
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
        let mut rows = read_ahead(backend(100, 1000, given.clone(), dropped), 4 * 1024);
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
        let mut rows = read_ahead(backend(100, 1000, given.clone(), dropped), 2 * 1024);
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
        let got: Vec<_> = read_ahead(rows, 100).collect().await;
        assert_eq!(got.len(), 2);
        assert!(matches!(got.first(), Some(Ok(row)) if row == &vec![Cell::Text("x".repeat(10_000))]));
        assert!(matches!(got.last(), Some(Err(SqlError::Limit(_)))));
    }

    #[test]
    fn without_a_budget_or_a_runtime_the_rows_are_the_backends() {
        let rows: RowStream = Box::pin(futures::stream::iter(vec![Ok(vec![Cell::Int(1)])]));
        let got: Vec<_> = futures::executor::block_on(read_ahead(rows, 1024).collect());
        assert_eq!(got.len(), 1);
    }
}
