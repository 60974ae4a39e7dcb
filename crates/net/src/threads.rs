//! Connection threads: one per core, each running a single-threaded runtime of its own, as nginx runs one event
//! loop per worker process.
//!
//! A data listener's connection carries short requests (a 4 KiB GET is a few tens of microseconds of work). On
//! the shared multi-threaded runtime each of its wake-ups could land on either worker, and queueing a task
//! wakes an idle worker to steal it: on this project's 2-core benchmark machine that cost a 4 KiB GET from the
//! embedded store about a quarter of its CPU (52 µs a request with two workers, 39 µs with one; see
//! docs/benchmarks.md). Here a connection, and every task it spawns (a store connection, an HTTP/2 stream),
//! stays on the thread it was handed to, and only that thread's own I/O wakes it.
//!
//! Connections to upstream servers are kept per thread ([`crate::client`]) for the same reason: hyper runs each
//! connection as a task of its own, spawned on the thread that opened it, and a request sent over a connection
//! opened on another thread would wake that thread to send and again to receive.
//!
//! The price is the event-loop model's: a request that computes for long holds up the other connections on its
//! thread. Such work is sent to the runtime that accepted the connection ([`shared_runtime`]): the SQL front's
//! embedded engine runs its plans there, while its PostgreSQL round trips stay on the connection's thread.
//! Listeners whose handlers fan out work of their own (the control listener with the catalog and the Trino
//! front) stay on the shared runtime; blocking work goes to `spawn_blocking` as anywhere else.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::runtime::{Builder, Handle};

thread_local! {
    /// On a connection thread, its number.
    static CONNECTION_THREAD: Cell<Option<usize>> = const { Cell::new(None) };
}

tokio::task_local! {
    /// In a connection's task on a connection thread, the runtime that accepted it.
    static SHARED: Handle;
}

/// The number of the connection thread the caller runs on, if it runs on one.
pub fn connection_thread() -> Option<usize> {
    CONNECTION_THREAD.with(Cell::get)
}

/// How many connection threads serve `Threads::PerCore` listeners (started at the first call); 0 when they
/// could not be started.
pub fn connection_threads() -> usize {
    ConnectionThreads::get().map_or(0, |threads| threads.runtimes.len())
}

/// The runtime that accepted the connection the caller serves, when that connection is served on a connection
/// thread; `None` elsewhere (on the shared runtime, or outside a connection's task). Work that computes for
/// long is spawned there instead of holding up the other connections of this thread.
pub fn shared_runtime() -> Option<Handle> {
    SHARED.try_with(Handle::clone).ok()
}

/// Serves an accepted `stream` with `serve` on `threads`: on the calling runtime (`Shared`, or when the
/// connection threads could not be started), or on the next connection thread in turn (`PerCore`), where
/// [`shared_runtime`] names the calling runtime for as long as `serve` runs.
pub fn hand_over<F, Fut>(threads: Threads, stream: TcpStream, peer: SocketAddr, serve: F)
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let per_core = match threads {
        Threads::PerCore => ConnectionThreads::get(),
        Threads::Shared => None,
    };
    let Some(per_core) = per_core else {
        drop(tokio::spawn(serve(stream)));
        return;
    };
    let shared = Handle::current();
    // A socket belongs to the runtime whose reactor registered it: taken out of this one's, it is registered
    // with the connection thread's there.
    match stream.into_std() {
        Ok(stream) => per_core.spawn(SHARED.scope(shared, async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::debug!(%peer, error = %e, "could not take the connection over"),
            }
        })),
        Err(e) => tracing::debug!(%peer, error = %e, "could not hand the connection over"),
    }
}

/// Which threads serve a listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// The runtime that accepted them, whose workers share and steal tasks.
    Shared,
    /// The process's [connection threads](self), handed out in turn; a connection stays on its thread.
    PerCore,
}

/// The process's connection threads.
pub(crate) struct ConnectionThreads {
    runtimes: Vec<Handle>,
    next: AtomicUsize,
}

impl ConnectionThreads {
    /// The connection threads, started at the first call: one per core this process may use. `None` when they
    /// could not be started (then connections are served on the shared runtime, and that was logged).
    pub(crate) fn get() -> Option<&'static ConnectionThreads> {
        static THREADS: OnceLock<Option<ConnectionThreads>> = OnceLock::new();
        THREADS
            .get_or_init(|| {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                ConnectionThreads::start(cores)
                    .inspect_err(|e| tracing::warn!(error = %e, "no connection threads; serving on the shared runtime"))
                    .ok()
            })
            .as_ref()
    }

    fn start(count: usize) -> std::io::Result<ConnectionThreads> {
        let mut runtimes = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = Builder::new_current_thread().enable_all().thread_name("lakegate-blocking").build()?;
            runtimes.push(runtime.handle().clone());
            // The runtime runs its tasks while the thread blocks on it; it lives as long as the process.
            std::thread::Builder::new().name(format!("lakegate-conn-{i}")).spawn(move || {
                CONNECTION_THREAD.with(|n| n.set(Some(i)));
                runtime.block_on(std::future::pending::<()>())
            })?;
        }
        Ok(ConnectionThreads { runtimes, next: AtomicUsize::new(0) })
    }

    /// Runs `task` on the next thread in turn.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.runtimes.len();
        self.runtimes[i].spawn(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_handed_to_each_thread_in_turn_and_stay_on_it() {
        let threads = ConnectionThreads::start(2).expect("threads");
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..4 {
            let tx = tx.clone();
            threads.spawn(async move {
                let before = std::thread::current().name().map(str::to_owned);
                // A task that yields is polled again on the same thread.
                tokio::task::yield_now().await;
                let after = std::thread::current().name().map(str::to_owned);
                tx.send((before, after)).expect("send");
            });
        }
        drop(tx);
        let mut seen: Vec<(Option<String>, Option<String>)> = rx.iter().collect();
        seen.sort();
        let name = |i: usize| Some(format!("lakegate-conn-{i}"));
        assert_eq!(
            seen,
            vec![(name(0), name(0)), (name(0), name(0)), (name(1), name(1)), (name(1), name(1))],
            "two tasks on each thread, each polled only there"
        );
    }

    #[tokio::test]
    async fn a_connection_handed_over_is_served_on_a_connection_thread_that_knows_the_runtime_that_accepted_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"));
        let ((accepted, peer), _client) = tokio::try_join!(listener.accept(), client).expect("connect");
        assert_eq!(connection_thread(), None);
        assert!(shared_runtime().is_none(), "outside a connection's task there is none");
        let accepting = tokio::runtime::Handle::current().id();
        let (tx, rx) = tokio::sync::oneshot::channel();
        hand_over(Threads::PerCore, accepted, peer, move |stream| async move {
            let on = connection_thread();
            let shared = shared_runtime().map(|h| h.id());
            // The socket was registered with this thread's reactor: it can be used here.
            let usable = stream.peer_addr().is_ok() && stream.writable().await.is_ok();
            let _ = tx.send((on, shared, usable));
        });
        let (on, shared, usable) = rx.await.expect("served");
        assert!(on.is_some_and(|i| i < connection_threads()), "served on a connection thread: {on:?}");
        assert_eq!(shared, Some(accepting), "the accepting runtime is where long work goes");
        assert!(usable);
    }
}
