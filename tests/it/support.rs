//! Shared fixtures: a `lakegate serve` process on free ports, dev tokens, a real PostgreSQL.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use lakegate_core::identity::DevIssuer;

/// A port nothing listens on right now (bound then released: see [`spawn_until_running`] for the race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// How often a server is started on new free ports before a test gives up on it.
pub const START_ATTEMPTS: usize = 5;

/// Spawns one of Lakegate's servers and waits until it says "... is running" on stdout, which it prints once
/// every listener is bound; `None` when it exits first. Waiting for its port to answer instead cannot tell it
/// from another test's server that was handed the same free port and bound it first, while this one exited.
pub fn spawn_until_running(cmd: &mut Command, what: &str) -> Option<Child> {
    use std::io::BufRead as _;
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (running, said) = std::sync::mpsc::channel();
    // Reads to the end, so that the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut running = Some(running);
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(" is running") {
                running.take().map(|r| r.send(()));
            }
        }
    });
    match said.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => Some(child),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let _ = child.wait();
            None
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let _ = child.kill();
            panic!("{what} was not running within a minute");
        }
    }
}

/// Waits until `addr` accepts TCP connections.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(start.elapsed() < timeout, "{addr} did not start listening within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `lakegate serve` with its own data directory; killed on drop.
pub struct Lakegate {
    child: Child,
    pub data_dir: tempfile::TempDir,
    pub control: SocketAddr,
    pub s3: SocketAddr,
    pub sql: SocketAddr,
}

impl Lakegate {
    /// Starts with the embedded defaults, fast policy reloads and the given extra environment
    /// (`LAKEGATE__...` overrides).
    pub fn start(extra_env: &[(&str, &str)]) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), extra_env)
    }

    /// Starts on an existing data directory (e.g. one prepared with broken files). A port [`free_port`] handed
    /// out can be taken before the server binds it (by another test's server, or as the local port of any
    /// connection); the server then exits, and it is started again on new ports.
    pub fn start_in(data_dir: tempfile::TempDir, extra_env: &[(&str, &str)]) -> Self {
        for _attempt in 0..START_ATTEMPTS {
            let control = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let s3 = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let sql = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_lakegate"));
            cmd.arg("serve")
                .arg("--data-dir")
                .arg(data_dir.path())
                .env("LAKEGATE__CONTROL__LISTEN", control.to_string())
                .env("LAKEGATE__S3__LISTEN", s3.to_string())
                .env("LAKEGATE__SQL__LISTEN", sql.to_string())
                .env("LAKEGATE__POLICY__RELOAD_INTERVAL_SECONDS", "1")
                .env("LAKEGATE_LOG", "warn")
                .stderr(Stdio::inherit());
            for (k, v) in extra_env {
                cmd.env(k, v);
            }
            if let Some(child) = spawn_until_running(&mut cmd, "lakegate serve") {
                return Lakegate { child, data_dir, control, s3, sql };
            }
        }
        panic!("lakegate serve exited before it was running, {START_ATTEMPTS} times (its stderr is above)");
    }

    /// Stops the server and hands back its data directory (to inspect or tamper with files it wrote).
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let placeholder = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.data_dir, placeholder)
    }

    pub fn data(&self) -> &Path {
        self.data_dir.path()
    }

    /// Sends `signal` (`"TERM"`, `"INT"`, `"KILL"`) to the server process.
    pub fn signal(&self, signal: &str) {
        send_signal(&self.child, signal);
    }

    /// Waits for the server process to exit on its own and returns how it ended.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_exit(&mut self.child)
    }

    /// `lakegate audit verify` over every audit file the server wrote: its output, and whether it passed.
    pub fn verify_audit(&self) -> (bool, String) {
        verify_audit_dir(&self.data().join("audit"))
    }

    /// `http://127.0.0.1:PORT` of the control endpoint.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.control)
    }

    /// A dev token for `sub` with groups and attributes.
    pub fn token(&self, sub: &str, groups: &[&str], attrs: &[(&str, &str)]) -> String {
        dev_token(self.data(), sub, groups, attrs, Duration::from_secs(3600))
    }

    /// The policy directory the server reads (seeded from the embedded demo set).
    pub fn policy_dir(&self) -> PathBuf {
        self.data().join("policies")
    }

    /// All audit events written so far (flushes are asynchronous: poll with [`eventually`]).
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        read_audit(&self.data().join("audit"))
    }
}

impl Drop for Lakegate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signal` (`"TERM"`, `"INT"`, `"KILL"`) to `child`, with kill(1).
pub fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().expect("run kill");
    assert!(status.success(), "kill -{signal} {} failed", child.id());
}

/// Waits (at most a minute, so that a hung process fails the test instead of hanging it) for `child` to exit.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for the process") {
            return status;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `lakegate audit verify` over every `audit-*.jsonl` file in `dir`: its output, and whether it passed.
pub fn verify_audit_dir(dir: &Path) -> (bool, String) {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
    assert!(!files.is_empty(), "no audit files in {}", dir.display());
    let out = Command::new(env!("CARGO_BIN_EXE_lakegate"))
        .args(["audit", "verify"])
        .args(&files)
        .output()
        .expect("run lakegate audit verify");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A dev-issuer token minted in-process from the key in `data_dir` (as `lakegate token` does).
pub fn dev_token(data_dir: &Path, sub: &str, groups: &[&str], attrs: &[(&str, &str)], ttl: Duration) -> String {
    let issuer = DevIssuer::load_or_create(data_dir).expect("dev issuer key");
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    let attrs: BTreeMap<String, String> = attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    issuer.mint(sub, &groups, &attrs, ttl).expect("mint")
}

/// Every event of every `audit-*.jsonl` file in `dir`, in file order.
pub fn read_audit(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
    files.sort();
    files
        .iter()
        .flat_map(|f| std::fs::read_to_string(f).unwrap_or_default().lines().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .map(|line| line["event"].clone())
        .collect()
}

/// Polls `check` until it returns `Some`, for effects that land asynchronously (audit flushes, policy reloads).
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A blocking HTTP client for tests.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

/// A real PostgreSQL from Debian's binaries: initdb in a temp dir, started on a free port, stopped on drop.
/// As root (CI), the server runs as the `postgres` system user.
pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
}

impl Postgres {
    pub fn start() -> Self {
        Self::start_with_tls(None)
    }

    /// With `certs` (a `certs/gen-dev.sh` directory): `ssl = on` with its server certificate, and a `pg_hba.conf`
    /// that accepts TCP connections over TLS only (`hostssl`), so a plain connection is refused.
    pub fn start_with_tls(certs: Option<&Path>) -> Self {
        let bin = pg_bin_dir();
        let dir = tempfile::Builder::new().prefix("lakegate-pg").tempdir().expect("temp dir");
        let data = dir.path().join("data");
        if is_root() {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()));
        }
        run(as_pg_user(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "-D"])
            .arg(&data));
        let mut opts = format!("-k {} -c listen_addresses=127.0.0.1 -c fsync=off", dir.path().display());
        if let Some(certs) = certs {
            for name in ["server.crt", "server.key"] {
                std::fs::copy(certs.join(name), data.join(name)).expect("copy certificate");
            }
            std::fs::write(data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
                .expect("write pg_hba.conf");
            if is_root() {
                run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&data));
            }
            run(Command::new("chmod").arg("600").arg(data.join("server.key")));
            opts.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        // A free port is free when asked, not when PostgreSQL binds it: another test's server may be handed the
        // same one meanwhile. The postmaster then exits at once, and it starts again on another port.
        let log = dir.path().join("log");
        for attempt in 1..=START_ATTEMPTS {
            // Each attempt's log alone tells why it failed.
            let _ = std::fs::remove_file(&log);
            let port = free_port();
            let mut start = as_pg_user(&bin.join("pg_ctl"));
            start.args(["-w", "-t", "60", "-D"]).arg(&data);
            start.args(["-o", &format!("-p {port} {opts}"), "-l"]).arg(&log).arg("start");
            let out = start.output().expect("run pg_ctl");
            if out.status.success() {
                return Postgres { dir, port, bin };
            }
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                attempt < START_ATTEMPTS && said.contains("Address already in use"),
                "{start:?} failed: {}{}\n{said}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        unreachable!("the last attempt returns or fails")
    }

    /// A libpq-style connection string for database `postgres` as superuser `postgres`.
    pub fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port)
    }

    /// Runs SQL through psql as the superuser; panics with psql's output on error.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .args(["-d", "postgres", "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// This server's psql run against the SQL gateway at `gateway` as `user` with `token`, each of `statements`
    /// its own `-c`, going on past errors; what it prints (the command tags and rows, not the errors).
    pub fn psql_through(&self, gateway: SocketAddr, user: &str, token: &str, statements: &[&str]) -> String {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.args(["-X", "-A", "-t", "-h", "127.0.0.1", "-d", "lakegate", "-U", user, "-p"])
            .arg(gateway.port().to_string())
            .env("PGPASSWORD", token)
            .env("PGSSLMODE", "disable");
        for sql in statements {
            psql.args(["-c", sql]);
        }
        let out = psql.output().expect("run psql");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_pg_user(&self.bin.join("pg_ctl"))
            .args(["-D"])
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions.pop().expect("PostgreSQL server binaries under /usr/lib/postgresql (scripts/test installs them)")
}

fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `lakegate_decisions_total{front, decision}` as `lg` reports it on `/metrics` (0 before the first such decision).
pub fn decisions(lg: &Lakegate, front: &str, decision: &str) -> u64 {
    let text = http().get(format!("{}/metrics", lg.control_url())).send().expect("metrics").text().expect("text");
    let series = format!("lakegate_decisions_total{{front=\"{front}\",decision=\"{decision}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(series.as_str())).map_or(0, |v| v.trim().parse().expect("a count"))
}

/// Replaces `file` in `lg`'s policy directory and waits until `in_force` says the new set decides.
pub fn replace_policy(lg: &Lakegate, file: &str, text: &str, mut in_force: impl FnMut() -> bool) {
    std::fs::write(lg.policy_dir().join(file), text).expect("write policy");
    eventually(&format!("the new {file} in force"), || in_force().then_some(()));
}

/// A local Spark Connect server (`tests/spark/connect-server`, from the test venv's pyspark), with its own
/// authentication token and event log; killed with its process group when dropped.
pub struct SparkConnect {
    child: Child,
    pub port: u16,
    pub token_file: PathBuf,
    pub event_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SparkConnect {
    /// Starts the server and waits until it accepts connections (it takes 20-40 s on two cores).
    pub fn start() -> Self {
        use std::os::unix::process::CommandExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("spark-token-{}", uuid_like())).expect("write token");
        let event_log = dir.path().join("events");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spark/connect-server");
        let child = Command::new(script)
            .arg(port.to_string())
            .arg(&token_file)
            .arg(&event_log)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start tests/spark/connect-server (scripts/install-test-deps installs pyspark into .venv)");
        let spark = SparkConnect { child, port, token_file, event_log, _dir: dir };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if start.elapsed() > Duration::from_secs(240) {
                let log = std::fs::read_to_string(spark._dir.path().join("server.log")).unwrap_or_default();
                let tail: String =
                    log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                panic!("the Spark Connect server did not start:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        spark
    }

    /// The `[[sql.spark]]` entry for a backend named `name` on this server.
    pub fn backend_env(&self, name: &str) -> String {
        format!(
            "[{{name = \"{name}\", remote = \"sc://127.0.0.1:{}\", token_file = \"{}\"}}]",
            self.port,
            self.token_file.display()
        )
    }

    /// Everything the event log holds so far.
    pub fn events(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(&self.event_log).into_iter().flatten().flatten() {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        text
    }
}

impl Drop for SparkConnect {
    fn drop(&mut self) {
        // spark-submit starts a JVM as its child: end the whole group.
        let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.wait();
    }
}

fn uuid_like() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    format!("{:016x}", h.finish())
}
