// Tests may panic on bad data: that is how they fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::chain::{self, CHECKPOINT_FILE};
use super::*;
use crate::identity::{Actor, Principal};

// ---- fixture -------------------------------------------------------------------------------------------

fn alice() -> Principal {
    Principal {
        issuer: "https://idp.example".into(),
        subject: "alice".into(),
        groups: vec!["analysts".into()],
        attributes: Default::default(),
        token_id: None,
        expires_at: 0,
        actors: vec![Actor { issuer: "https://idp.example".into(), subject: "notebook".into() }],
    }
}

fn event(n: usize) -> AuditEvent {
    AuditEvent::new(Front::S3, format!("req-{n}"), "s3:GetObject", format!("bucket/key-{n}"))
        .principal(&alice())
        .source("10.0.0.1:50000")
        .allow(["analysts-read"])
}

/// Small files, so that a few dozen events span several of them.
fn config(dir: &Path) -> AuditConfig {
    AuditConfig {
        dir: dir.to_path_buf(),
        max_file_bytes: 2048,
        queue_capacity: 64,
        enqueue_timeout: Duration::from_millis(50),
        ..AuditConfig::default()
    }
}

async fn write_events(cfg: AuditConfig, range: std::ops::Range<usize>) {
    let auditor = Auditor::start(cfg).unwrap();
    for n in range {
        auditor.record(event(n)).await.unwrap();
    }
    auditor.flush().await.unwrap();
}

/// A directory holding `n` events in several files.
async fn log_with(n: usize) -> TempDir {
    let tmp = TempDir::new().unwrap();
    write_events(config(tmp.path()), 0..n).await;
    tmp
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    chain::list_log_files(dir).unwrap().into_iter().map(|(_, p)| p).collect()
}

fn verify_dir(dir: &Path) -> Result<VerifyReport, ChainBreak> {
    verify_files(&log_files(dir))
}

fn read_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    if !lines.is_empty() {
        text.push('\n');
    }
    fs::write(path, text).unwrap();
}

/// Applies `edit` to the lines of the second log file (a file in the middle of the chain).
fn tamper_middle_file(dir: &Path, edit: impl FnOnce(&mut Vec<String>)) -> PathBuf {
    let files = log_files(dir);
    assert!(files.len() >= 3, "fixture should span at least three files");
    let path = files[1].clone();
    let mut lines = read_lines(&path);
    edit(&mut lines);
    write_lines(&path, &lines);
    path
}

fn events_in(dir: &Path) -> Vec<AuditEvent> {
    log_files(dir)
        .iter()
        .flat_map(|p| read_lines(p))
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            serde_json::from_value(v["event"].clone()).unwrap()
        })
        .collect()
}

/// Removes the last `n` records, wherever they are.
fn cut_tail(dir: &Path, mut n: usize) {
    for path in log_files(dir).iter().rev() {
        let mut lines = read_lines(path);
        while n > 0 && lines.pop().is_some() {
            n -= 1;
        }
        write_lines(path, &lines);
    }
}

/// Polls a condition the writer thread will reach; the bound only keeps a broken build from hanging.
async fn eventually(mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A directory standing where the checkpoint's temporary file goes makes every checkpoint write fail: a real
/// I/O failure that root cannot bypass, and one the test can take away again.
fn break_checkpoint(dir: &Path) -> PathBuf {
    let blocker = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    fs::create_dir_all(&blocker).unwrap();
    blocker
}

// ---- the event -----------------------------------------------------------------------------------------

#[test]
fn event_serialises_front_snake_case_and_time_as_utc_milliseconds() {
    let json = serde_json::to_value(event(1)).unwrap();
    assert_eq!(json["front"], "s3");
    assert_eq!(json["decision"], "allow");
    assert_eq!(json["principal"]["subject"], "alice");
    assert_eq!(json["actors"][0]["subject"], "notebook");
    let time = json["time"].as_str().unwrap();
    // e.g. 2024-05-01T12:00:00.123Z
    assert_eq!(time.len(), 24, "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
}

#[test]
fn event_without_a_decision_reads_as_an_error() {
    let e = AuditEvent::new(Front::Sql, "r", "sql:Select", "db.t");
    assert_eq!(e.decision, Decision::Error);
    assert!(e.reason.is_some());
}

#[test]
fn config_reads_durations_and_refuses_unknown_fields() {
    let cfg: AuditConfig = serde_json::from_str(r#"{"dir":"/x","enqueue_timeout":"250ms","fail_open":true}"#).unwrap();
    assert_eq!(cfg.enqueue_timeout, Duration::from_millis(250));
    assert!(cfg.fail_open);
    assert_eq!(cfg.queue_capacity, AuditConfig::default().queue_capacity);
    assert!(serde_json::from_str::<AuditConfig>(r#"{"fail_closed":true}"#).is_err());
}

// ---- the chain -----------------------------------------------------------------------------------------

#[tokio::test]
async fn chain_verifies_across_rotated_files() {
    let tmp = log_with(40).await;
    let report = verify_dir(tmp.path()).unwrap();
    assert_eq!(report.records, 40);
    assert_eq!((report.first_seq, report.last_seq), (Some(0), Some(39)));
    assert_eq!(report.checkpoint_seq, Some(39));
    assert!(report.files.len() >= 3, "{report}");
}

#[tokio::test]
async fn how_long_each_batch_and_checkpoint_took_to_write_and_sync_is_in_the_metrics() {
    let observed = |step| crate::metrics::AUDIT_WRITE_SECONDS.count(&[("step", step)]);
    let (batches, checkpoints) = (observed("batch"), observed("checkpoint"));
    // The flush is answered once the batch is synced and the checkpoint moved.
    let _log = log_with(5).await;
    assert!(observed("batch") > batches);
    assert!(observed("checkpoint") > checkpoints);
    assert!(crate::metrics::render().contains("lakegate_audit_write_seconds_bucket{step=\"batch\",le=\"0.1\"}"));
}

#[tokio::test]
async fn verification_orders_files_by_their_records_not_by_arguments() {
    let tmp = log_with(40).await;
    let mut files = log_files(tmp.path());
    files.reverse();
    assert_eq!(verify_files(&files).unwrap().records, 40);
}

#[tokio::test]
async fn restarted_auditor_continues_the_chain() {
    let tmp = log_with(15).await;
    write_events(config(tmp.path()), 15..30).await;
    let report = verify_dir(tmp.path()).unwrap();
    assert_eq!(report.records, 30);
    assert_eq!(report.last_seq, Some(29));
    assert_eq!(events_in(tmp.path())[29].request_id, "req-29");
}

#[tokio::test]
async fn edited_event_is_caught() {
    let tmp = log_with(40).await;
    let file = tamper_middle_file(tmp.path(), |lines| {
        let line = &mut lines[1];
        let at = line.find("bucket/key-").unwrap();
        line.replace_range(at..at + 1, "c");
    });
    let brk = verify_dir(tmp.path()).unwrap_err();
    assert_eq!(brk.kind, BreakKind::Edited);
    assert_eq!((brk.file, brk.line), (file, Some(2)));
}

#[tokio::test]
async fn inserted_event_is_caught() {
    let tmp = log_with(40).await;
    let first_file = read_lines(&log_files(tmp.path())[0]);
    tamper_middle_file(tmp.path(), |lines| lines.insert(1, first_file[0].clone()));
    let brk = verify_dir(tmp.path()).unwrap_err();
    assert!(matches!(brk.kind, BreakKind::Inserted { found: 0, .. }), "{brk}");
    assert_eq!(brk.line, Some(2));
}

#[tokio::test]
async fn deleted_event_is_caught() {
    let tmp = log_with(40).await;
    tamper_middle_file(tmp.path(), |lines| {
        lines.remove(1);
    });
    let brk = verify_dir(tmp.path()).unwrap_err();
    assert!(matches!(brk.kind, BreakKind::Gap { .. }), "{brk}");
    assert_eq!(brk.line, Some(2));
}

#[tokio::test]
async fn swapped_events_are_caught() {
    let tmp = log_with(40).await;
    tamper_middle_file(tmp.path(), |lines| lines.swap(1, 2));
    let brk = verify_dir(tmp.path()).unwrap_err();
    assert!(matches!(brk.kind, BreakKind::Reordered { .. }), "{brk}");
}

#[tokio::test]
async fn removed_last_events_are_caught_by_the_checkpoint() {
    let tmp = log_with(40).await;
    cut_tail(tmp.path(), 2);
    let brk = verify_dir(tmp.path()).unwrap_err();
    assert_eq!(brk.kind, BreakKind::TruncatedTail { checkpoint_seq: 39, last_seq: Some(37) });
}

#[tokio::test]
async fn deleted_middle_file_is_caught() {
    let tmp = log_with(40).await;
    let mut files = log_files(tmp.path());
    let removed = files.remove(1);
    fs::remove_file(&removed).unwrap();
    let brk = verify_files(&files).unwrap_err();
    assert!(matches!(brk.kind, BreakKind::Gap { .. }), "{brk}");
    assert_eq!((brk.file, brk.line), (files[1].clone(), Some(1)));
}

#[tokio::test]
async fn malformed_lines_are_chain_breaks_not_panics() {
    let garbage: [&[u8]; 7] = [
        b"\xff\xfe\x00garbage",
        b"{\"seq\":1",
        b"{\"seq\":18446744073709551616,\"prev\":\"\",\"hash\":\"\",\"event\":{}}",
        b"{\"seq\":1,\"prev\":\"abc\",\"hash\":\"abc\",\"event\":{}}",
        b"{\"seq\":1,\"prev\":\"00\",\"hash\":\"00\",\"event\":{},\"note\":\"x\"}",
        b"[]",
        b"",
    ];
    for bad in garbage {
        let tmp = log_with(40).await;
        let path = log_files(tmp.path())[1].clone();
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(bad);
        bytes.push(b'\n');
        fs::write(&path, bytes).unwrap();
        let brk = verify_dir(tmp.path()).unwrap_err();
        assert!(matches!(brk.kind, BreakKind::Unparsable(_)), "{brk}");
    }
}

#[tokio::test]
async fn chain_break_reads_well() {
    let tmp = log_with(40).await;
    tamper_middle_file(tmp.path(), |lines| lines.swap(1, 2));
    let text = verify_dir(tmp.path()).unwrap_err().to_string();
    assert!(text.contains("audit-00000002.jsonl:2 (seq "), "{text}");
    assert!(text.contains("reordered"), "{text}");
}

// ---- restart and recovery ------------------------------------------------------------------------------

#[tokio::test]
async fn restart_after_truncation_keeps_the_break_visible() {
    let tmp = log_with(40).await;
    cut_tail(tmp.path(), 2);
    write_events(config(tmp.path()), 40..45).await;
    let brk = verify_dir(tmp.path()).unwrap_err();
    assert_eq!(brk.kind, BreakKind::Gap { first_missing: 38, last_missing: 39 });
}

#[tokio::test]
async fn restart_removes_a_torn_last_line() {
    let tmp = log_with(10).await;
    let last = log_files(tmp.path()).pop().unwrap();
    let mut bytes = fs::read(&last).unwrap();
    bytes.extend_from_slice(b"{\"seq\":10,\"prev\":\"0");
    fs::write(&last, bytes).unwrap();
    write_events(config(tmp.path()), 10..12).await;
    assert_eq!(verify_dir(tmp.path()).unwrap().records, 12);
}

#[test]
fn start_fails_when_the_directory_cannot_be_created() {
    let tmp = TempDir::new().unwrap();
    let file = tmp.path().join("plain-file");
    fs::write(&file, b"x").unwrap();
    let err = Auditor::start(config(&file.join("audit"))).unwrap_err();
    assert!(matches!(err, AuditError::Io { .. }), "{err}");
}

// ---- fail closed ---------------------------------------------------------------------------------------

#[tokio::test]
async fn begin_is_refused_while_the_log_cannot_be_written() {
    let tmp = TempDir::new().unwrap();
    let auditor = Auditor::start(config(tmp.path())).unwrap();
    break_checkpoint(tmp.path());
    auditor.record(event(0)).await.unwrap();
    eventually(|| !auditor.healthy()).await;
    let err = auditor.begin(event(1)).await.unwrap_err();
    assert!(matches!(err, AuditError::Unavailable(Unavailable::WriterFailed)), "{err}");
}

#[tokio::test]
async fn fail_open_serves_while_the_log_cannot_be_written() {
    let tmp = TempDir::new().unwrap();
    let auditor = Auditor::start(AuditConfig { fail_open: true, ..config(tmp.path()) }).unwrap();
    break_checkpoint(tmp.path());
    auditor.record(event(0)).await.unwrap();
    eventually(|| !auditor.healthy()).await;
    assert!(!auditor.healthy());
    auditor.begin(event(1)).await.unwrap().finish();
}

#[tokio::test]
async fn writer_recovers_and_writes_the_events_it_held() {
    let tmp = TempDir::new().unwrap();
    let auditor = Auditor::start(config(tmp.path())).unwrap();
    let blocker = break_checkpoint(tmp.path());
    auditor.record(event(0)).await.unwrap();
    eventually(|| !auditor.healthy()).await;
    fs::remove_dir(blocker).unwrap();
    auditor.flush().await.unwrap();
    assert!(auditor.healthy());
    assert_eq!(verify_dir(tmp.path()).unwrap().checkpoint_seq, Some(0));
}

#[tokio::test]
async fn failed_batch_is_rewritten_once_without_duplicates() {
    let tmp = TempDir::new().unwrap();
    // One record per file, and a directory where the third file must go: rotation into it fails after the
    // batch's first lines are already in the earlier files.
    let auditor = Auditor::start(AuditConfig { max_file_bytes: 1, ..config(tmp.path()) }).unwrap();
    let blocker = tmp.path().join(chain::log_file_name(3));
    fs::create_dir_all(&blocker).unwrap();
    for n in 0..3 {
        auditor.record(event(n)).await.unwrap();
    }
    eventually(|| !auditor.healthy()).await;
    fs::remove_dir(blocker).unwrap();
    auditor.flush().await.unwrap();
    let report = verify_dir(tmp.path()).unwrap();
    assert_eq!((report.records, report.files.len()), (3, 3));
}

#[tokio::test]
async fn full_queue_refuses_after_the_bounded_wait() {
    let tmp = TempDir::new().unwrap();
    let auditor = Auditor::start(AuditConfig { queue_capacity: 1, ..config(tmp.path()) }).unwrap();
    // A slot in progress holds the only place in the queue.
    let _held = auditor.begin(event(0)).await.unwrap();
    let err = auditor.begin(event(1)).await.unwrap_err();
    assert!(matches!(err, AuditError::Unavailable(Unavailable::QueueFull)), "{err}");
}

// ---- slots ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn dropped_slot_still_writes_its_event_marked_incomplete() {
    let tmp = TempDir::new().unwrap();
    let auditor = Auditor::start(config(tmp.path())).unwrap();
    let mut slot = auditor.begin(event(7)).await.unwrap();
    slot.event_mut().outcome_mut().bytes_out = 512;
    drop(slot);
    auditor.flush().await.unwrap();
    let events = events_in(tmp.path());
    let outcome = events[0].outcome.clone().unwrap();
    assert!(outcome.incomplete);
    assert_eq!(outcome.bytes_out, 512);
}

#[tokio::test]
async fn finished_slot_records_its_outcome_as_complete() {
    let tmp = TempDir::new().unwrap();
    let auditor = Auditor::start(config(tmp.path())).unwrap();
    let mut slot = auditor.begin(event(7)).await.unwrap();
    let outcome = slot.event_mut().outcome_mut();
    outcome.status = Some(200);
    outcome.bytes_out = 512;
    slot.finish();
    auditor.flush().await.unwrap();
    let outcome = events_in(tmp.path())[0].outcome.clone().unwrap();
    assert_eq!((outcome.status, outcome.incomplete), (Some(200), false));
}

// ---- durability ----------------------------------------------------------------------------------------

fn sync_config(dir: &Path) -> AuditConfig {
    AuditConfig { durability: Durability::Sync, ..config(dir) }
}

#[tokio::test]
async fn with_sync_durability_begin_returns_once_the_decision_is_on_disk() {
    let tmp = TempDir::new().unwrap();
    let auditor = Auditor::start(sync_config(tmp.path())).unwrap();
    let mut slot = auditor.begin(event(1)).await.unwrap();
    // No flush: what `begin` waited for is already in the file.
    let on_disk = events_in(tmp.path());
    assert_eq!(on_disk.len(), 1);
    assert_eq!((on_disk[0].request_id.as_str(), on_disk[0].stage), ("req-1", Some(Stage::Decision)));
    assert_eq!((on_disk[0].decision, &on_disk[0].outcome), (Decision::Allow, &None));
    slot.event_mut().outcome_mut().bytes_out = 4096;
    slot.finish();
    auditor.flush().await.unwrap();
    let events = events_in(tmp.path());
    assert_eq!(events.len(), 2);
    let outcome = &events[1];
    assert_eq!((outcome.request_id.as_str(), outcome.stage), ("req-1", Some(Stage::Outcome)));
    assert_eq!(outcome.outcome.as_ref().map(|o| (o.bytes_out, o.incomplete)), Some((4096, false)));
    assert_eq!(verify_dir(tmp.path()).unwrap().records, 2);
}

#[tokio::test]
async fn with_sync_durability_a_one_shot_record_is_a_single_record() {
    let tmp = TempDir::new().unwrap();
    let auditor = Auditor::start(sync_config(tmp.path())).unwrap();
    auditor.record(event(2).deny("no policy permits", Vec::<String>::new())).await.unwrap();
    auditor.flush().await.unwrap();
    let events = events_in(tmp.path());
    assert_eq!((events.len(), events[0].stage), (1, None));
}

#[tokio::test]
async fn batch_records_carry_no_stage() {
    let tmp = log_with(1).await;
    let line = read_lines(&log_files(tmp.path())[0]).remove(0);
    assert!(!line.contains("\"stage\""), "{line}");
}

#[tokio::test]
async fn with_sync_durability_begin_is_refused_when_the_decision_cannot_be_synced() {
    let tmp = TempDir::new().unwrap();
    // One record per file, and a directory where the second file must go: the second decision record cannot
    // be written.
    let auditor = Auditor::start(AuditConfig { max_file_bytes: 1, ..sync_config(tmp.path()) }).unwrap();
    let first = auditor.begin(event(0)).await.unwrap();
    let blocker = tmp.path().join(chain::log_file_name(2));
    fs::create_dir_all(&blocker).unwrap();
    let err = auditor.begin(event(1)).await.unwrap_err();
    assert!(matches!(err, AuditError::Unavailable(Unavailable::WriterFailed)), "{err}");
    // When the disk is back, the refused request's records say that its access never happened.
    fs::remove_dir(blocker).unwrap();
    first.finish();
    auditor.flush().await.unwrap();
    let refused: Vec<AuditEvent> = events_in(tmp.path()).into_iter().filter(|e| e.request_id == "req-1").collect();
    assert_eq!(refused.iter().map(|e| e.stage).collect::<Vec<_>>(), [Some(Stage::Decision), Some(Stage::Outcome)]);
    assert_eq!(refused[1].decision, Decision::Error);
    assert!(refused[1].reason.as_deref().unwrap_or_default().contains("not carried out"), "{:?}", refused[1]);
    assert_eq!(verify_dir(tmp.path()).unwrap().records, 4);
}

#[tokio::test]
async fn with_sync_durability_concurrent_accesses_each_leave_a_decision_and_an_outcome() {
    let tmp = TempDir::new().unwrap();
    let auditor = Auditor::start(sync_config(tmp.path())).unwrap();
    let begins = (0..20).map(|n| {
        let auditor = auditor.clone();
        tokio::spawn(async move { auditor.begin(event(n)).await.map(AuditSlot::finish) })
    });
    for begin in begins {
        begin.await.unwrap().unwrap();
    }
    auditor.flush().await.unwrap();
    let events = events_in(tmp.path());
    assert_eq!(events.len(), 40);
    for n in 0..20 {
        let id = format!("req-{n}");
        let stages: Vec<_> = events.iter().filter(|e| e.request_id == id).map(|e| e.stage).collect();
        assert_eq!(stages, [Some(Stage::Decision), Some(Stage::Outcome)], "{id}");
    }
}

#[test]
fn sync_durability_needs_room_for_two_records() {
    let tmp = TempDir::new().unwrap();
    let err = Auditor::start(AuditConfig { queue_capacity: 1, ..sync_config(tmp.path()) }).unwrap_err();
    assert!(matches!(err, AuditError::Config(_)), "{err}");
}

#[tokio::test]
async fn a_trickle_of_events_moves_the_checkpoint_at_most_every_100_ms_not_after_every_batch() {
    let tmp = TempDir::new().unwrap();
    let auditor = Auditor::start(config(tmp.path())).unwrap();
    let started = std::time::Instant::now();
    // One event every 20 ms: each is its own batch, written at once and followed by a quiet spell.
    for n in 0..20 {
        auditor.record(event(n)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let moved = auditor.checkpoints_moved();
    let allowed = usize::try_from(elapsed.as_millis() / 100).unwrap() + 1;
    assert!((1..=allowed).contains(&moved), "{moved} moves in {elapsed:?}");
    // And the checkpoint still catches up with the log without a flush.
    let checkpoint_seq =
        || chain::read_checkpoint(tmp.path()).ok().flatten().and_then(|c| c.tip().ok()).map(|tip| tip.seq);
    eventually(|| checkpoint_seq() == Some(19)).await;
    assert_eq!(checkpoint_seq(), Some(19));
}

#[tokio::test]
async fn without_a_flush_the_checkpoint_follows_the_log_once_it_is_quiet() {
    let tmp = TempDir::new().unwrap();
    let auditor = Auditor::start(config(tmp.path())).unwrap();
    for n in 0..20 {
        auditor.record(event(n)).await.unwrap();
    }
    let checkpoint_seq =
        || chain::read_checkpoint(tmp.path()).ok().flatten().and_then(|c| c.tip().ok()).map(|tip| tip.seq);
    eventually(|| checkpoint_seq() == Some(19)).await;
    assert_eq!(checkpoint_seq(), Some(19));
    assert_eq!(verify_dir(tmp.path()).unwrap().checkpoint_seq, Some(19));
}

#[tokio::test]
async fn records_after_a_batch_wait_for_the_batch_window_then_are_written_together() {
    let tmp = TempDir::new().unwrap();
    // One large file, so that the lines can be counted in it.
    let window = Duration::from_millis(700);
    let cfg = AuditConfig { max_file_bytes: 1 << 20, batch_window: window, ..config(tmp.path()) };
    let auditor = Auditor::start(cfg).unwrap();
    let lines_written = || log_files(tmp.path()).iter().map(|p| read_lines(p).len()).sum::<usize>();
    // The first record after a quiet spell is written at once and starts the window.
    auditor.record(event(0)).await.unwrap();
    eventually(|| lines_written() == 1).await;
    let first_synced = std::time::Instant::now();
    for n in 1..6 {
        auditor.record(event(n)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The window counts from the end of the first batch's sync, a little before `first_synced`; a machine that
    // stalled the test past most of it proves nothing either way.
    if first_synced.elapsed() < window - Duration::from_millis(100) {
        assert_eq!(lines_written(), 1, "written before the window ended");
    }
    eventually(|| lines_written() == 6).await;
    assert_eq!(lines_written(), 6);
    assert_eq!(verify_dir(tmp.path()).unwrap().records, 6);
}

#[test]
fn a_batch_window_beyond_a_second_is_refused() {
    let tmp = TempDir::new().unwrap();
    let cfg = AuditConfig { batch_window: MAX_BATCH_WINDOW + Duration::from_millis(1), ..config(tmp.path()) };
    let err = Auditor::start(cfg).unwrap_err();
    assert!(err.to_string().contains("batch_window"), "{err}");
    let section: AuditSection = toml::from_str("batch_window_ms = 20").unwrap();
    assert_eq!(section.resolve(tmp.path()).batch_window, Duration::from_millis(20));
}

#[test]
fn an_empty_audit_section_gives_the_writers_defaults() {
    let section: AuditSection = toml::from_str("").unwrap();
    let resolved = section.resolve(Path::new("/data"));
    assert_eq!(resolved, AuditConfig { dir: PathBuf::from("/data/audit"), ..AuditConfig::default() });
}
