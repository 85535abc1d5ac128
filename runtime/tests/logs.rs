//! Container logs on real files: the json-file format, rotation, filters, torn lines and
//! following a live writer across rotations.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone as _, Utc};
use futures_util::StreamExt as _;
use shoal_runtime::logs::{
    LogConfig, LogError, LogRecord, LogWriter, ReadOptions, Stream, follow, log_path, read,
};

fn all() -> ReadOptions {
    ReadOptions::default()
}

fn lines(records: &[LogRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.line.clone()).unwrap())
        .collect()
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000 + secs, 123_456_789)
        .unwrap()
}

/// Files present in `dir`, sorted by name.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A small-file config so tests rotate quickly.
fn small(max_size: u64, max_files: u32) -> LogConfig {
    LogConfig {
        max_size,
        max_files,
    }
}

#[test]
fn default_config() {
    assert_eq!(
        LogConfig::default(),
        LogConfig {
            max_size: 10 * 1024 * 1024,
            max_files: 3
        }
    );
    let opts = ReadOptions::default();
    assert!(opts.stdout && opts.stderr && opts.tail.is_none());
}

#[test]
fn writes_docker_json_file_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c1");
    let mut w = LogWriter::open(&dir, LogConfig::default()).unwrap();
    let time = Utc.with_ymd_and_hms(2026, 11, 25, 21, 30, 0).unwrap()
        + chrono::Duration::nanoseconds(123_456_789);
    w.write_at(Stream::Stdout, b"hello\n", time).unwrap();
    w.write_at(Stream::Stderr, b"<err>\tx", time).unwrap();
    assert_eq!(log_path(&dir), dir.join("container.log"));
    assert_eq!(w.path(), log_path(&dir));
    let text = fs::read_to_string(log_path(&dir)).unwrap();
    assert_eq!(
        text,
        concat!(
            r#"{"log":"hello\n","stream":"stdout","time":"2026-11-25T21:30:00.123456789Z"}"#,
            "\n",
            r#"{"log":"\u003cerr\u003e\u0009x","stream":"stderr","time":"2026-11-25T21:30:00.123456789Z"}"#,
            "\n"
        )
    );
    // Real write times: RFC 3339, nanoseconds, UTC.
    let before = Utc::now();
    w.write(Stream::Stdout, b"now\n").unwrap();
    let after = Utc::now();
    let records = read(&dir, &all()).unwrap();
    let last = records.last().unwrap();
    assert!(before <= last.time && last.time <= after);
    let raw = fs::read_to_string(log_path(&dir)).unwrap();
    let last_line = raw.lines().last().unwrap();
    let time_field = &last_line[last_line.find("\"time\":\"").unwrap() + 8..last_line.len() - 2];
    assert_eq!(
        time_field.len(),
        "2026-11-25T21:30:00.123456789Z".len(),
        "{time_field}"
    );
    assert!(time_field.ends_with('Z'));
}

#[test]
fn records_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut w = LogWriter::open(dir, LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"one\ntwo\n").unwrap();
    w.write(Stream::Stderr, b"err line\npartial").unwrap();
    w.write(Stream::Stdout, b"").unwrap();
    w.write(Stream::Stderr, b" rest\n").unwrap();
    w.write(Stream::Stdout, b"bad \xff\xfe bytes \xe2\x82\n")
        .unwrap();
    w.write(Stream::Stdout, b"\n").unwrap();
    w.write(Stream::Stdout, "unicode é 😀 \" \\ \u{2028}\r\n".as_bytes())
        .unwrap();
    w.flush().unwrap();

    let records = read(dir, &all()).unwrap();
    let got: Vec<(Stream, Vec<u8>)> = records.iter().map(|r| (r.stream, r.line.clone())).collect();
    let want: Vec<(Stream, Vec<u8>)> = vec![
        (Stream::Stdout, b"one\n".to_vec()),
        (Stream::Stdout, b"two\n".to_vec()),
        (Stream::Stderr, b"err line\n".to_vec()),
        (Stream::Stderr, b"partial".to_vec()),
        (Stream::Stderr, b" rest\n".to_vec()),
        (
            Stream::Stdout,
            "bad \u{fffd}\u{fffd} bytes \u{fffd}\u{fffd}\n"
                .as_bytes()
                .to_vec(),
        ),
        (Stream::Stdout, b"\n".to_vec()),
        (
            Stream::Stdout,
            "unicode é 😀 \" \\ \u{2028}\r\n".as_bytes().to_vec(),
        ),
    ];
    assert_eq!(got, want);
    // Empty data wrote nothing: exactly one file line per record.
    let raw = fs::read_to_string(log_path(dir)).unwrap();
    assert_eq!(raw.lines().count(), want.len());
    assert!(raw.ends_with('\n'));
    // Times never go backwards within one writer.
    assert!(records.windows(2).all(|w| w[0].time <= w[1].time));
}

#[test]
fn missing_directory_reads_empty() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(read(&tmp.path().join("nope"), &all()).unwrap(), vec![]);
}

#[test]
fn invalid_config_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for cfg in [small(0, 3), small(1024, 0)] {
        match LogWriter::open(tmp.path(), cfg) {
            Err(LogError::InvalidConfig { .. }) => {}
            other => panic!("expected InvalidConfig for {cfg:?}, got {other:?}"),
        }
    }
}

/// A numbered record of a fixed shape, ~`pad` bytes of payload.
fn numbered(i: usize, pad: usize) -> Vec<u8> {
    format!("{i:06} {}\n", "x".repeat(pad)).into_bytes()
}

fn number_of(record: &LogRecord) -> usize {
    std::str::from_utf8(&record.line[..6])
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn rotation_keeps_max_files_each_within_max_size() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = small(1024, 3);
    let mut w = LogWriter::open(dir, cfg).unwrap();
    // ~100 bytes per record on disk: 10 KiB in all.
    let mut total = 0;
    let mut n = 0;
    while total < 10 * 1024 {
        let data = numbered(n, 10);
        w.write(Stream::Stdout, &data).unwrap();
        total += 100;
        n += 1;
    }
    assert_eq!(
        files(dir),
        vec!["container.log", "container.log.1", "container.log.2"]
    );
    for name in files(dir) {
        let len = fs::metadata(dir.join(&name)).unwrap().len();
        assert!(len > 0 && len <= cfg.max_size, "{name} is {len} bytes");
    }
    let records = read(dir, &all()).unwrap();
    let numbers: Vec<usize> = records.iter().map(number_of).collect();
    // The newest records, in order, ending with the last one written; the oldest dropped.
    assert_eq!(*numbers.last().unwrap(), n - 1);
    let first = numbers[0];
    assert!(first > 0, "the oldest records must have been dropped");
    assert_eq!(numbers, (first..n).collect::<Vec<_>>());
    // Two full rotated files plus the live one: more than 2 KiB worth of records.
    assert!(
        records.len() * 85 > 2 * 1024,
        "only {} records kept",
        records.len()
    );
}

#[test]
fn rotation_splits_a_batch_and_keeps_huge_records_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = small(1024, 3);
    let mut w = LogWriter::open(dir, cfg).unwrap();
    // One write call holding 30 records (~100 bytes each): rotates inside the batch.
    let batch: Vec<u8> = (0..30).flat_map(|i| numbered(i, 10)).collect();
    w.write(Stream::Stdout, &batch).unwrap();
    for name in files(dir) {
        assert!(fs::metadata(dir.join(&name)).unwrap().len() <= cfg.max_size);
    }
    // A single record bigger than max_size is written whole, in a file of its own.
    let huge = format!("{:06} {}\n", 30, "h".repeat(3000)).into_bytes();
    w.write(Stream::Stderr, &huge).unwrap();
    w.write(Stream::Stdout, &numbered(31, 10)).unwrap();
    let live_len = fs::metadata(log_path(dir)).unwrap().len();
    assert!(
        live_len < cfg.max_size,
        "the record after the huge one starts a new file"
    );
    let rotated = fs::read_to_string(dir.join("container.log.1")).unwrap();
    assert_eq!(rotated.lines().count(), 1);
    assert!(rotated.len() as u64 > cfg.max_size);
    let records = read(dir, &all()).unwrap();
    let numbers: Vec<usize> = records.iter().map(number_of).collect();
    let first = numbers[0];
    assert_eq!(numbers, (first..32).collect::<Vec<_>>());
    assert_eq!(records[records.len() - 2].line, huge);
}

#[test]
fn single_file_starts_afresh() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = small(512, 1);
    let mut w = LogWriter::open(dir, cfg).unwrap();
    for i in 0..40 {
        w.write(Stream::Stdout, &numbered(i, 10)).unwrap();
    }
    assert_eq!(files(dir), vec!["container.log"]);
    assert!(fs::metadata(log_path(dir)).unwrap().len() <= 512);
    let numbers: Vec<usize> = read(dir, &all()).unwrap().iter().map(number_of).collect();
    let first = numbers[0];
    assert!(first > 0);
    assert_eq!(numbers, (first..40).collect::<Vec<_>>());
}

#[test]
fn restarted_writer_appends_and_rotates_by_file_size() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = small(1024, 3);
    let mut next = 0;
    // Five writers one after the other (a helper restarted), 4 records each.
    for _ in 0..5 {
        let mut w = LogWriter::open(dir, cfg).unwrap();
        for _ in 0..4 {
            w.write(Stream::Stdout, &numbered(next, 10)).unwrap();
            next += 1;
        }
    }
    for name in files(dir) {
        assert!(
            fs::metadata(dir.join(&name)).unwrap().len() <= cfg.max_size,
            "{name}"
        );
    }
    assert_eq!(
        files(dir).len(),
        2,
        "20 records of ~100 bytes: one rotation"
    );
    let numbers: Vec<usize> = read(dir, &all()).unwrap().iter().map(number_of).collect();
    assert_eq!(numbers, (0..20).collect::<Vec<_>>());

    // A smaller max_files later: stale older files are removed at open.
    let w = LogWriter::open(dir, small(1024, 1)).unwrap();
    drop(w);
    assert_eq!(files(dir), vec!["container.log"]);
}

#[test]
fn restarted_writer_closes_a_torn_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut w = LogWriter::open(dir, LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"before\n").unwrap();
    drop(w);
    // A writer killed in the middle of a line.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(log_path(dir))
        .unwrap();
    f.write_all(br#"{"log":"cut sh"#).unwrap();
    drop(f);
    let mut w = LogWriter::open(dir, LogConfig::default()).unwrap();
    w.write(Stream::Stdout, b"after\n").unwrap();
    assert_eq!(
        lines(&read(dir, &all()).unwrap()),
        vec!["before\n", "after\n"]
    );
}

#[test]
fn filters_tail_since_until_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Small files: filters must work across rotated files too.
    let mut w = LogWriter::open(dir, small(400, 10)).unwrap();
    for i in 0..10 {
        let stream = if i % 2 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        w.write_at(stream, format!("r{i}\n").as_bytes(), at(i))
            .unwrap();
    }
    assert!(files(dir).len() > 1, "expected rotated files");
    let get = |opts: ReadOptions| lines(&read(dir, &opts).unwrap());
    let s = |v: &[&str]| v.iter().map(|x| format!("{x}\n")).collect::<Vec<_>>();

    assert_eq!(get(all()).len(), 10);
    assert_eq!(
        get(ReadOptions {
            tail: Some(3),
            ..all()
        }),
        s(&["r7", "r8", "r9"])
    );
    assert_eq!(
        get(ReadOptions {
            tail: Some(0),
            ..all()
        }),
        s(&[])
    );
    assert_eq!(
        get(ReadOptions {
            tail: Some(100),
            ..all()
        })
        .len(),
        10
    );
    assert_eq!(
        get(ReadOptions {
            since: Some(at(7)),
            ..all()
        }),
        s(&["r7", "r8", "r9"]),
        "since is inclusive"
    );
    assert_eq!(
        get(ReadOptions {
            until: Some(at(2)),
            ..all()
        }),
        s(&["r0", "r1", "r2"]),
        "until is inclusive"
    );
    assert_eq!(
        get(ReadOptions {
            since: Some(at(3)),
            until: Some(at(5)),
            ..all()
        }),
        s(&["r3", "r4", "r5"])
    );
    assert_eq!(
        get(ReadOptions {
            stderr: false,
            ..all()
        }),
        s(&["r0", "r2", "r4", "r6", "r8"])
    );
    assert_eq!(
        get(ReadOptions {
            stdout: false,
            tail: Some(2),
            ..all()
        }),
        s(&["r7", "r9"]),
        "tail counts the filtered records"
    );
    assert_eq!(
        get(ReadOptions {
            stdout: false,
            stderr: false,
            ..all()
        }),
        s(&[])
    );
    assert_eq!(
        get(ReadOptions {
            since: Some(at(2)),
            stdout: false,
            tail: Some(2),
            ..all()
        }),
        s(&["r7", "r9"])
    );
}

/// One json-file line as the writer would produce it.
fn json_line(text: &str) -> String {
    format!(
        "{{\"log\":\"{}\",\"stream\":\"stdout\",\"time\":\"2026-01-02T03:04:05.000000006Z\"}}\n",
        text.replace('\n', "\\n")
    )
}

#[test]
fn read_skips_torn_last_line_and_malformed_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let full = json_line("complete\n");
    let torn = json_line("torn\n");
    let content = format!("{full}not json at all\n{}", &torn[..torn.len() / 2]);
    fs::write(log_path(dir), content).unwrap();
    assert_eq!(lines(&read(dir, &all()).unwrap()), vec!["complete\n"]);
    // Completing the line makes it appear.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(log_path(dir))
        .unwrap();
    f.write_all(&torn.as_bytes()[torn.len() / 2..]).unwrap();
    assert_eq!(
        lines(&read(dir, &all()).unwrap()),
        vec!["complete\n", "torn\n"]
    );
}

// ---------------------------------------------------------------------------------------
// follow

/// A `done` future fired by sending on the returned channel (or dropping it).
fn done_signal() -> (
    tokio::sync::oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

/// Collects a follow stream to its end, failing the test if it takes longer than `limit`.
async fn collect_all(
    stream: impl futures_util::Stream<Item = Result<LogRecord, LogError>> + Unpin,
    limit: Duration,
) -> Vec<LogRecord> {
    tokio::time::timeout(limit, stream.map(|r| r.unwrap()).collect::<Vec<_>>())
        .await
        .expect("follow did not end in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_survives_rotations_without_loss_or_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    // The directory does not exist yet when following starts.
    let dir = tmp.path().join("containers").join("c1");
    let (done_tx, done) = done_signal();
    let mut stream = follow(dir.clone(), all(), done);

    const N: usize = 600;
    let writer_dir = dir.clone();
    let (finished_tx, finished_rx) = mpsc::channel();
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        let mut w = LogWriter::open(&writer_dir, small(4096, 3)).unwrap();
        let mut i = 0;
        while i < N {
            let stream = if i % 3 == 0 {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            // Sometimes two records in one write call (one syscall for both).
            if i % 7 == 0 && i + 1 < N {
                let mut data = numbered(i, 30);
                data.extend_from_slice(&numbered(i + 1, 30));
                w.write(stream, &data).unwrap();
                i += 2;
            } else {
                w.write(stream, &numbered(i, 30)).unwrap();
                i += 1;
            }
            if i % 5 == 0 {
                thread::sleep(Duration::from_millis(2));
            }
        }
        finished_tx.send(()).unwrap();
    });

    // Read as it is written, and only then signal done.
    let mut got = Vec::new();
    let mut rotations_seen = 0;
    let mut last_live_inode = None;
    loop {
        tokio::select! {
            item = stream.next() => {
                let record = item.expect("stream ended before done").unwrap();
                got.push(number_of(&record));
                if let Ok(meta) = fs::metadata(log_path(&dir)) {
                    use std::os::unix::fs::MetadataExt as _;
                    if last_live_inode.is_some_and(|ino| ino != meta.ino()) {
                        rotations_seen += 1;
                    }
                    last_live_inode = Some(meta.ino());
                }
            }
            () = tokio::time::sleep(Duration::from_millis(10)) => {
                if finished_rx.try_recv().is_ok() {
                    break;
                }
            }
        }
    }
    writer.join().unwrap();
    let signalled = Instant::now();
    done_tx.send(()).unwrap();
    let rest = collect_all(stream, Duration::from_secs(5)).await;
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "follow must end promptly after done"
    );
    got.extend(rest.iter().map(number_of));

    assert_eq!(got, (0..N).collect::<Vec<_>>());
    let rotated: Vec<String> = files(&dir);
    assert_eq!(rotated.len(), 3, "{rotated:?}");
    // ~90 bytes × 600 records at 4 KiB per file: a dozen rotations.
    assert!(
        rotations_seen >= 2,
        "only {rotations_seen} rotations seen while following"
    );
}

#[tokio::test]
async fn follow_gives_backlog_then_new_records_with_tail_and_filters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut w = LogWriter::open(&dir, small(300, 5)).unwrap();
    for i in 0..10 {
        let stream = if i % 2 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        w.write(stream, format!("old{i}\n").as_bytes()).unwrap();
    }
    let (done_tx, done) = done_signal();
    let opts = ReadOptions {
        tail: Some(2),
        stderr: false,
        ..all()
    };
    let mut stream = follow(dir.clone(), opts, done);
    let first = stream.next().await.unwrap().unwrap();
    let second = stream.next().await.unwrap().unwrap();
    assert_eq!(lines(&[first, second]), vec!["old6\n", "old8\n"]);

    // New records: stderr ones filtered out; tail does not limit them.
    let writer = thread::spawn(move || {
        for i in 0..6 {
            let stream = if i % 2 == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            w.write(stream, format!("new{i}\n").as_bytes()).unwrap();
        }
    });
    let mut new = Vec::new();
    for _ in 0..3 {
        let record = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("new record not followed")
            .unwrap()
            .unwrap();
        new.push(record);
    }
    writer.join().unwrap();
    assert_eq!(lines(&new), vec!["new0\n", "new2\n", "new4\n"]);
    done_tx.send(()).unwrap();
    assert_eq!(collect_all(stream, Duration::from_secs(2)).await, vec![]);
}

#[tokio::test]
async fn follow_wakes_on_inotify_not_only_the_periodic_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut w = LogWriter::open(&dir, LogConfig::default()).unwrap();
    let (_done_tx, done) = done_signal();
    let mut stream = follow(dir.clone(), all(), done);
    // Another thread writes while the follower is idle, waiting; it reports when.
    let (go_tx, go_rx) = mpsc::channel::<usize>();
    let (wrote_tx, wrote_rx) = mpsc::channel::<Instant>();
    let writer = thread::spawn(move || {
        while let Ok(i) = go_rx.recv() {
            thread::sleep(Duration::from_millis(40));
            w.write(Stream::Stdout, format!("ping{i}\n").as_bytes())
                .unwrap();
            wrote_tx.send(Instant::now()).unwrap();
        }
    });
    let mut latencies = Vec::new();
    for i in 0..7 {
        go_tx.send(i).unwrap();
        let record = tokio::time::timeout(Duration::from_secs(2), stream.next())
            .await
            .expect("record not followed")
            .unwrap()
            .unwrap();
        let received = Instant::now();
        let wrote = wrote_rx.recv().unwrap();
        latencies.push(received.saturating_duration_since(wrote));
        assert_eq!(record.line, format!("ping{i}\n").into_bytes());
    }
    drop(go_tx);
    writer.join().unwrap();
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    // The fallback check runs every 250 ms; inotify answers in well under that.
    assert!(
        median < Duration::from_millis(60),
        "median wake-up latency {median:?} ({latencies:?}): inotify not working?"
    );
}

#[tokio::test]
async fn follow_catches_up_after_lagging_behind_rotations() {
    // Repeated: `done` and the inotify event are ready together, and the follower must
    // read everything whichever it notices first.
    for round in 0..10 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut w = LogWriter::open(&dir, small(1024, 5)).unwrap();
        w.write(Stream::Stdout, &numbered(0, 10)).unwrap();
        let (done_tx, done) = done_signal();
        let mut stream = follow(dir.clone(), all(), done);
        assert_eq!(number_of(&stream.next().await.unwrap().unwrap()), 0);
        // Park the follower in its wait on the live file.
        assert!(
            tokio::time::timeout(Duration::from_millis(30), stream.next())
                .await
                .is_err()
        );
        // While it is not polled: three rotations (~100 bytes per record, 1 KiB files),
        // all within the 5 files kept, then done.
        for i in 1..35 {
            w.write(Stream::Stdout, &numbered(i, 10)).unwrap();
        }
        assert!(files(&dir).len() >= 4, "round {round}: {:?}", files(&dir));
        done_tx.send(()).unwrap();
        let got: Vec<usize> = collect_all(stream, Duration::from_secs(2))
            .await
            .iter()
            .map(number_of)
            .collect();
        assert_eq!(got, (1..35).collect::<Vec<_>>(), "round {round}");
    }
}

#[tokio::test]
async fn follow_lagging_beyond_retention_resumes_at_the_oldest_file_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // 2 files of 1 KiB (88-byte records: 11 per file).
    let mut w = LogWriter::open(&dir, small(1024, 2)).unwrap();
    w.write(Stream::Stdout, &numbered(0, 10)).unwrap();
    let (done_tx, done) = done_signal();
    let mut stream = follow(dir.clone(), all(), done);
    assert_eq!(number_of(&stream.next().await.unwrap().unwrap()), 0);
    assert!(
        tokio::time::timeout(Duration::from_millis(30), stream.next())
            .await
            .is_err()
    );
    // Four rotations while the follower sleeps: the file it holds is deleted, and so are
    // the next two. It still reads its own file to the end (it holds it open), then goes
    // on with the oldest file kept.
    for i in 1..45 {
        w.write(Stream::Stdout, &numbered(i, 10)).unwrap();
    }
    let kept: Vec<usize> = read(&dir, &all()).unwrap().iter().map(number_of).collect();
    done_tx.send(()).unwrap();
    let got: Vec<usize> = collect_all(stream, Duration::from_secs(2))
        .await
        .iter()
        .map(number_of)
        .collect();
    let split = got.len() - kept.len().min(got.len());
    let (own, rest) = got.split_at(split);
    assert_eq!(rest, kept, "got {got:?}");
    assert!(
        own.len() >= 5,
        "the followed file was not read to its end: {got:?}"
    );
    assert_eq!(own, (1..=own.len()).collect::<Vec<_>>());
    assert!(
        own.len() + 1 < kept[0],
        "a whole file was dropped in between: {got:?} kept {kept:?}"
    );
}

#[tokio::test]
async fn follow_steps_over_a_rotated_file_removed_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // ~100 bytes per record, 1 KiB files: 9 records per file.
    let mut w = LogWriter::open(&dir, small(1024, 5)).unwrap();
    w.write(Stream::Stdout, &numbered(0, 10)).unwrap();
    let (done_tx, done) = done_signal();
    let mut stream = follow(dir.clone(), all(), done);
    assert_eq!(number_of(&stream.next().await.unwrap().unwrap()), 0);
    assert!(
        tokio::time::timeout(Duration::from_millis(30), stream.next())
            .await
            .is_err()
    );
    // Two rotations: the file being followed becomes `.2`; then `.1` is deleted.
    for i in 1..25 {
        w.write(Stream::Stdout, &numbered(i, 10)).unwrap();
    }
    assert_eq!(files(&dir).len(), 3);
    let on_disk: Vec<usize> = read(&dir, &all()).unwrap().iter().map(number_of).collect();
    let in_dot1: Vec<usize> = {
        let only = tempfile::tempdir().unwrap();
        fs::copy(dir.join("container.log.1"), log_path(only.path())).unwrap();
        read(only.path(), &all())
            .unwrap()
            .iter()
            .map(number_of)
            .collect()
    };
    fs::remove_file(dir.join("container.log.1")).unwrap();
    done_tx.send(()).unwrap();
    let got: Vec<usize> = collect_all(stream, Duration::from_secs(2))
        .await
        .iter()
        .map(number_of)
        .collect();
    let want: Vec<usize> = on_disk[1..]
        .iter()
        .copied()
        .filter(|n| !in_dot1.contains(n))
        .collect();
    assert!(!in_dot1.is_empty());
    assert_eq!(got, want);
    assert_eq!(*got.last().unwrap(), 24);
}

#[tokio::test]
async fn follow_yields_a_torn_line_only_once_completed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let full = json_line("first\n");
    let torn = json_line("second\n");
    let (head, tail) = torn.split_at(torn.len() / 2);
    fs::write(log_path(&dir), format!("{full}{head}")).unwrap();

    let (done_tx, done) = done_signal();
    let mut stream = follow(dir.clone(), all(), done);
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.line, b"first\n");
    // The half line is not a record yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(400), stream.next())
            .await
            .is_err(),
        "a torn line was yielded"
    );
    // Complete it in two more pieces.
    let (mid, end) = tail.split_at(tail.len() / 2);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(log_path(&dir))
        .unwrap();
    f.write_all(mid.as_bytes()).unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), stream.next())
            .await
            .is_err()
    );
    f.write_all(end.as_bytes()).unwrap();
    let second = tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.line, b"second\n");
    // A torn line left when done fires is dropped, not yielded.
    f.write_all(head.as_bytes()).unwrap();
    done_tx.send(()).unwrap();
    assert_eq!(collect_all(stream, Duration::from_secs(2)).await, vec![]);
}

#[tokio::test]
async fn follow_drains_everything_written_before_done() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let (done_tx, done) = done_signal();
    // Started before the file exists (the directory does).
    let stream = follow(dir.clone(), all(), done);
    // A burst across several rotations, all finished before done; the follower has not
    // been polled at all in between.
    let mut w = LogWriter::open(&dir, small(2048, 4)).unwrap();
    for i in 0..60 {
        w.write(Stream::Stdout, &numbered(i, 20)).unwrap();
    }
    done_tx.send(()).unwrap();
    let got: Vec<usize> = collect_all(stream, Duration::from_secs(2))
        .await
        .iter()
        .map(number_of)
        .collect();
    assert_eq!(got, (0..60).collect::<Vec<_>>());
}

#[tokio::test]
async fn follow_ends_after_done_when_nothing_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("never");
    let (done_tx, done) = done_signal();
    let stream = follow(dir, all(), done);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = done_tx.send(());
    });
    let started = Instant::now();
    assert_eq!(collect_all(stream, Duration::from_secs(2)).await, vec![]);
    assert!(started.elapsed() < Duration::from_millis(600));
}

#[tokio::test]
async fn follow_ends_once_until_has_passed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let mut w = LogWriter::open(&dir, LogConfig::default()).unwrap();
    w.write_at(Stream::Stdout, b"in range\n", at(0)).unwrap();
    w.write_at(Stream::Stdout, b"too late\n", at(10)).unwrap();
    let (_done_tx, done) = done_signal();
    let opts = ReadOptions {
        until: Some(at(5)),
        ..all()
    };
    // `until` lies in the past: no new record can match, so the stream ends by itself.
    let got = collect_all(follow(dir, opts, done), Duration::from_secs(2)).await;
    assert_eq!(lines(&got), vec!["in range\n"]);
}
