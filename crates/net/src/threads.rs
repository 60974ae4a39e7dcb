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
//!
//! Each connection thread accepts the connections it serves, on a listening socket of its own ([`Listeners`]):
//! the sockets of one address are bound with `SO_REUSEPORT`, and the kernel spreads new connections over them
//! by a hash of their addresses, as nginx's `reuseport` does. A connection accepted by the shared runtime and
//! handed over cost a wake-up of that runtime, a registration with its reactor and another with the thread's,
//! and a wake-up of the thread: about a tenth of Lakegate's CPU for a client that connects for each statement.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
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

/// The listening sockets of one address: one for each connection thread (`PerCore`), or one for the shared
/// runtime (`Shared`, or when the connection threads could not be started).
pub struct Listeners {
    addr: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
    per_core: Option<&'static ConnectionThreads>,
}

/// Connections a listening socket keeps waiting to be accepted (tokio's `TcpListener::bind` asks for as many).
const BACKLOG: i32 = 1024;

impl Listeners {
    /// Binds `addr` for `threads`. Fails as a single socket would when something is bound there already,
    /// another Lakegate's sockets included: sharing a port is for this process's own threads only.
    pub fn bind(addr: SocketAddr, threads: Threads) -> std::io::Result<Listeners> {
        let per_core = match threads {
            Threads::PerCore => ConnectionThreads::get(),
            Threads::Shared => None,
        };
        let count = per_core.map_or(1, |threads| threads.runtimes.len());
        if count <= 1 {
            let socket = listening(addr, false)?;
            let addr = socket.local_addr()?;
            return Ok(Listeners { addr, sockets: vec![socket], per_core });
        }
        // A socket without `SO_REUSEPORT` cannot be bound where any other socket is, with it or without: this one
        // fails where a single listener would have, and names the port when `addr` asks for any.
        let probe = socket_for(addr)?;
        probe.bind(&addr.into())?;
        let addr = probe.local_addr()?.as_socket().ok_or_else(|| std::io::Error::other("not an IP address"))?;
        drop(probe);
        let sockets = (0..count).map(|_| listening(addr, true)).collect::<std::io::Result<Vec<_>>>()?;
        Ok(Listeners { addr, sockets, per_core })
    }

    /// The bound address (the port chosen when the one asked for was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts on every socket until `stop()` resolves, and serves each connection with `serve` where it was
    /// accepted: on the connection thread of its socket, where [`shared_runtime`] names the calling runtime for
    /// as long as `serve` runs, or on the calling runtime. `what` names the listener in the log when it closes.
    pub fn serve<Stop, StopFut, Serve, Fut>(self, what: &'static str, stop: Stop, serve: Serve)
    where
        Stop: Fn() -> StopFut + Send + Sync + 'static,
        StopFut: Future<Output = ()> + Send + 'static,
        Serve: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Listeners { addr, sockets, per_core } = self;
        let accepting = Arc::new(Accepting { addr, what, open: AtomicUsize::new(sockets.len()), stop, serve });
        let shared = per_core.is_some().then(Handle::current);
        for (i, socket) in sockets.into_iter().enumerate() {
            let task = accepting.clone().run(socket, shared.clone());
            match per_core {
                Some(threads) => threads.spawn_on(i, task),
                None => drop(tokio::spawn(task)),
            }
        }
    }
}

/// A socket for `addr`, with `SO_REUSEADDR` (as tokio's listeners have, so that a restart is not refused for
/// its predecessor's connections in `TIME_WAIT`).
fn socket_for(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

/// A non-blocking socket listening on `addr`, one of a `SO_REUSEPORT` group when `shared`.
fn listening(addr: SocketAddr, shared: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = socket_for(addr)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// What each socket's accept loop shares.
struct Accepting<Stop, Serve> {
    addr: SocketAddr,
    what: &'static str,
    /// Sockets still accepting: the last to close says so in the log.
    open: AtomicUsize,
    stop: Stop,
    serve: Serve,
}

impl<Stop, StopFut, Serve, Fut> Accepting<Stop, Serve>
where
    Stop: Fn() -> StopFut + Send + Sync + 'static,
    StopFut: Future<Output = ()> + Send + 'static,
    Serve: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    /// Accepts on `socket` on the runtime it runs on (whose reactor registers it and each connection), serving
    /// each connection there, with `shared` as its [`shared_runtime`].
    async fn run(self: Arc<Self>, socket: std::net::TcpListener, shared: Option<Handle>) {
        match TcpListener::from_std(socket) {
            Ok(listener) => self.accept(listener, shared).await,
            // The socket is closed, and the kernel sends its share of new connections to the others.
            Err(e) => tracing::error!(addr = %self.addr, error = %e, "a connection thread cannot accept"),
        }
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            tracing::info!(addr = %self.addr, "{} listener closed", self.what);
        }
    }

    async fn accept(&self, listener: TcpListener, shared: Option<Handle>) {
        let stop = (self.stop)();
        tokio::pin!(stop);
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(addr = %self.addr, error = %e, "{} accept failed", self.what);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let serve = (self.serve)(stream, peer);
            drop(match &shared {
                Some(shared) => tokio::spawn(SHARED.scope(shared.clone(), serve)),
                None => tokio::spawn(serve),
            });
        }
    }
}

/// Which threads serve a listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// The runtime that accepted them, whose workers share and steal tasks.
    Shared,
    /// The process's [connection threads](self), each accepting on a socket of its own; a connection stays on
    /// the thread that accepted it.
    PerCore,
}

/// The process's connection threads.
pub(crate) struct ConnectionThreads {
    runtimes: Vec<Handle>,
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
        Ok(ConnectionThreads { runtimes })
    }

    /// Runs `task` on thread `i` (modulo their number).
    fn spawn_on<F>(&self, i: usize, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if let Some(runtime) = self.runtimes.get(i % self.runtimes.len().max(1)) {
            drop(runtime.spawn(task));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_spawned_on_a_thread_is_polled_only_there() {
        let threads = ConnectionThreads::start(2).expect("threads");
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..4 {
            let tx = tx.clone();
            threads.spawn_on(i, async move {
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

    /// What a connection's task saw of where it runs.
    #[derive(Debug)]
    struct Served {
        thread: Option<usize>,
        shared: Option<tokio::runtime::Id>,
        usable: bool,
    }

    /// Serves `listeners` until `stop` is notified, reporting each connection on the returned channel.
    fn serve_reporting(
        listeners: Listeners,
        stop: Arc<tokio::sync::Notify>,
    ) -> tokio::sync::mpsc::UnboundedReceiver<Served> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stopped = move || {
            let stop = stop.clone();
            async move { stop.notified().await }
        };
        listeners.serve("test", stopped, move |stream, _peer| {
            let tx = tx.clone();
            async move {
                let thread = connection_thread();
                let shared = shared_runtime().map(|h| h.id());
                // The socket was registered with this thread's reactor: it can be used here.
                let usable = stream.peer_addr().is_ok() && stream.writable().await.is_ok();
                let _ = tx.send(Served { thread, shared, usable });
            }
        });
        rx
    }

    #[tokio::test]
    async fn each_connection_thread_accepts_on_a_socket_of_its_own_and_serves_what_it_accepted() {
        let listeners = Listeners::bind("127.0.0.1:0".parse().expect("addr"), Threads::PerCore).expect("bind");
        let addr = listeners.local_addr();
        assert_ne!(addr.port(), 0, "the port chosen is the one reported");
        assert_eq!(listeners.sockets.len(), connection_threads(), "a socket for each connection thread");
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut served = serve_reporting(listeners, stop.clone());
        let accepting = Handle::current().id();
        let mut clients = Vec::new();
        for _ in 0..16 {
            clients.push(TcpStream::connect(addr).await.expect("connect"));
            let served = served.recv().await.expect("served");
            assert!(
                served.thread.is_some_and(|i| i < connection_threads()),
                "served on a connection thread: {served:?}"
            );
            assert_eq!(served.shared, Some(accepting), "the runtime that started the listener is where long work goes");
            assert!(served.usable);
        }
        assert_eq!(connection_thread(), None);
        assert!(shared_runtime().is_none(), "outside a connection's task there is none");
        stop.notify_waiters();
    }

    #[tokio::test]
    async fn a_shared_listener_serves_on_the_runtime_that_started_it() {
        let listeners = Listeners::bind("127.0.0.1:0".parse().expect("addr"), Threads::Shared).expect("bind");
        let addr = listeners.local_addr();
        assert_eq!(listeners.sockets.len(), 1);
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut served = serve_reporting(listeners, stop.clone());
        let _client = TcpStream::connect(addr).await.expect("connect");
        let served = served.recv().await.expect("served");
        assert_eq!((served.thread, served.shared), (None, None), "{served:?}");
        assert!(served.usable);
        stop.notify_waiters();
    }

    #[tokio::test]
    async fn an_address_in_use_is_refused_whoever_holds_it() {
        // A socket of another program, bound as most are.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = plain.local_addr().expect("addr");
        for threads in [Threads::PerCore, Threads::Shared] {
            let refused = Listeners::bind(taken, threads).err().map(|e| e.kind());
            assert_eq!(refused, Some(std::io::ErrorKind::AddrInUse), "{threads:?}");
        }
        // Another Lakegate's sockets, which share their port among themselves: not with a second instance.
        let first = Listeners::bind("127.0.0.1:0".parse().expect("addr"), Threads::PerCore).expect("bind");
        let second = Listeners::bind(first.local_addr(), Threads::PerCore).err().map(|e| e.kind());
        assert_eq!(second, Some(std::io::ErrorKind::AddrInUse));
    }

    #[tokio::test]
    async fn once_stopped_no_socket_accepts_and_the_port_refuses_connections() {
        let listeners = Listeners::bind("127.0.0.1:0".parse().expect("addr"), Threads::PerCore).expect("bind");
        let addr = listeners.local_addr();
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut served = serve_reporting(listeners, stop.clone());
        let _before = TcpStream::connect(addr).await.expect("connect");
        served.recv().await.expect("served");
        // Each loop waits on the notification from its first poll on; the connection served shows they polled.
        // A loop not yet waiting would miss `notify_waiters`, so notify until every socket has closed.
        let refused = async {
            loop {
                stop.notify_waiters();
                match TcpStream::connect(addr).await {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                    _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), refused).await.expect("every socket closed");
    }
}
