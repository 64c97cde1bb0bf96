//! `offload serve` driven as a client in another language would drive it: the client here is
//! written from PROTOCOL.md section 19 alone (requests and events as CBOR maps through
//! ciborium, nothing of offload's own types), against real processes. Waits are for events,
//! with generous bounds; whether processes are left is asked of /proc, by a marker in their
//! environment (`OFFLOAD_*` variables reach every processor).

mod common;

use std::io::{self, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ciborium::Value;
use common::{bin, SETTLE};

/// The most a test waits for one event: a margin for a loaded machine, not a promise.
const EVENT_BOUND: Duration = Duration::from_secs(60);

/// A job that runs until it is stopped.
const FOREVER_MS: u64 = 3_600_000;

/// What the client read from serve's stdout.
enum Out {
    /// One event, and the bytes it came as.
    Event(Value, Vec<u8>),
    /// The end of stdout, between events.
    End,
    /// Stdout that is not a CBOR sequence of whole items.
    Broken(String),
}

/// A client of `offload serve`.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    out: mpsc::Receiver<Out>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Every event so far, in order.
    seen: Vec<Value>,
    marker: String,
}

impl Client {
    /// `offload serve` with `args`, marked with `marker` (in its environment and so in its
    /// processors').
    fn start(args: &[&str], marker: &str) -> Self {
        let mut command = Command::new(bin("offload"));
        command.arg("serve").args(args);
        Self::spawn(command, marker)
    }

    /// Runs `command` (serve itself, or a process that runs serve on the same stdio).
    fn spawn(mut command: Command, marker: &str) -> Self {
        let mut child = command
            .env(MARKER_ENV, marker)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("offload serve starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, out) = mpsc::channel();
        std::thread::spawn(move || read_events(stdout, &tx));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let kept = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                kept.lock()
                    .expect("not poisoned")
                    .extend_from_slice(&buf[..n]);
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            out,
            stderr,
            seen: Vec::new(),
            marker: marker.to_owned(),
        }
    }

    /// What serve said on stderr so far, and the events seen: for failure messages.
    fn story(&self) -> String {
        let stderr =
            String::from_utf8_lossy(&self.stderr.lock().expect("not poisoned")).into_owned();
        let events: Vec<String> = self.seen.iter().map(short).collect();
        format!("stderr: {stderr}\nevents:\n  {}", events.join("\n  "))
    }

    /// Sends one request; gives how many bytes it took on the wire.
    fn send(&mut self, request: &Value) -> usize {
        let mut bytes = Vec::new();
        ciborium::into_writer(request, &mut bytes).expect("a request encodes");
        self.send_bytes(&bytes);
        bytes.len()
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(bytes).expect("serve reads its stdin");
        stdin.flush().expect("flushed");
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next event, with its bytes; `None` at the end of stdout.
    fn next_raw(&mut self) -> Option<(Value, Vec<u8>)> {
        match self.out.recv_timeout(EVENT_BOUND) {
            Ok(Out::Event(value, bytes)) => {
                self.seen.push(value.clone());
                Some((value, bytes))
            }
            Ok(Out::End) => None,
            Ok(Out::Broken(why)) => panic!("serve's stdout broke: {why}\n{}", self.story()),
            Err(_) => panic!(
                "no event within {EVENT_BOUND:?} (or stdout ended badly)\n{}",
                self.story()
            ),
        }
    }

    fn next(&mut self) -> Value {
        match self.next_raw() {
            Some((value, _)) => value,
            None => panic!("serve's stdout ended\n{}", self.story()),
        }
    }

    /// Reads events until one matches `wanted`, and gives it.
    fn wait_for(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + EVENT_BOUND;
        loop {
            self.assert_before(until);
            let event = self.next();
            if wanted(&event) {
                return event;
            }
        }
    }

    /// Reads events until `type` `kind` comes for job `id`.
    /// (An event read already, while waiting for another, counts.)
    fn wait_event(&mut self, kind: &str, id: u64) -> Value {
        if let Some(seen) = self.seen.iter().find(|e| is(e, kind, id)) {
            return seen.clone();
        }
        self.wait_for(|e| is(e, kind, id))
    }

    /// Reads events until every job in `ids` has its `finished` event.
    fn wait_finished(&mut self, ids: &[u64]) {
        let mut left: Vec<u64> = ids.to_vec();
        let until = Instant::now() + EVENT_BOUND;
        while !left.is_empty() {
            self.assert_before(until);
            let event = self.next();
            if kind(&event) == "finished" {
                left.retain(|id| Some(*id) != id_of(&event));
            }
        }
    }

    /// Fails the test once `until` has passed: events that keep coming (progress) must not
    /// make a wait endless.
    fn assert_before(&self, until: Instant) {
        assert!(
            Instant::now() < until,
            "waited {EVENT_BOUND:?} in all\n{}",
            self.story()
        );
    }

    /// Reads the remaining events to the end of stdout.
    fn read_to_end(&mut self) {
        while self.next_raw().is_some() {}
    }

    /// Waits for serve to exit.
    fn wait_exit(&mut self) -> ExitStatus {
        let until = Instant::now() + EVENT_BOUND;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < until,
                "serve did not exit\n{}",
                self.story()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The events seen for job `id`, in order.
    fn events_of(&self, id: u64) -> Vec<&Value> {
        self.seen.iter().filter(|e| id_of(e) == Some(id)).collect()
    }

    /// Asserts that no process carries this client's marker, waiting up to `bound` for the
    /// last to go.
    fn assert_no_process_left(&self, bound: Duration) {
        let until = Instant::now() + bound;
        loop {
            let left = marked(&self.marker);
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < until,
                "processes left {bound:?} later: {left:?}\n{}",
                self.story()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // A failed test leaves nothing running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment variable that marks a test's processes.
const MARKER_ENV: &str = "OFFLOAD_TEST_SERVE_MARKER";

/// A marker for this test's processes.
fn marker(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// Live processes (zombies left out) whose environment holds `marker`.
fn marked(marker: &str) -> Vec<(u32, String)> {
    let wanted = format!("{MARKER_ENV}={marker}");
    common::processes()
        .into_iter()
        .filter(|p| p.state != 'Z')
        .filter(|p| {
            std::fs::read(format!("/proc/{}/environ", p.pid)).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|entry| entry == wanted.as_bytes())
            })
        })
        .filter_map(|p| common::stat(p.pid).map(|(_, comm)| (p.pid, comm)))
        .collect()
}

/// Reads serve's stdout as a CBOR sequence, each event with the bytes it came as.
fn read_events(stdout: impl Read, tx: &mpsc::Sender<Out>) {
    let mut recorder = Recorder {
        inner: BufReader::with_capacity(1 << 20, stdout),
        bytes: Vec::new(),
    };
    loop {
        match ciborium::from_reader::<Value, _>(&mut recorder) {
            Ok(value) => {
                let bytes = std::mem::take(&mut recorder.bytes);
                if tx.send(Out::Event(value, bytes)).is_err() {
                    return;
                }
            }
            Err(ciborium::de::Error::Io(err))
                if err.kind() == io::ErrorKind::UnexpectedEof && recorder.bytes.is_empty() =>
            {
                let _ = tx.send(Out::End);
                return;
            }
            Err(err) => {
                let _ = tx.send(Out::Broken(format!("{err:?}")));
                return;
            }
        }
    }
}

/// Keeps the bytes read through it (ciborium reads no further than the item it decodes).
struct Recorder<R> {
    inner: R,
    bytes: Vec<u8>,
}

impl<R: Read> Read for Recorder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// A CBOR map with text keys.
fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect(),
    )
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// `{"type": "submit", "id": id, "processor": "diag", "input": input, ...extra}`.
fn submit(id: u64, input: Value, extra: Vec<(&str, Value)>) -> Value {
    let mut pairs = vec![
        ("type", text("submit")),
        ("id", id.into()),
        ("processor", text("diag")),
        ("input", input),
    ];
    pairs.extend(extra);
    map(pairs)
}

fn request(kind: &str, extra: Vec<(&str, Value)>) -> Value {
    let mut pairs = vec![("type", text(kind))];
    pairs.extend(extra);
    map(pairs)
}

fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    common::field(value, key)
}

fn kind(event: &Value) -> &str {
    get(event, "type").and_then(Value::as_text).unwrap_or("")
}

fn id_of(event: &Value) -> Option<u64> {
    get(event, "id")
        .and_then(Value::as_integer)
        .and_then(|i| u64::try_from(i).ok())
}

fn is(event: &Value, wanted: &str, id: u64) -> bool {
    kind(event) == wanted && id_of(event) == Some(id)
}

fn uint(value: Option<&Value>) -> Option<u64> {
    value
        .and_then(Value::as_integer)
        .and_then(|i| u64::try_from(i).ok())
}

/// An event in a line, for failure messages (long byte strings shortened).
fn short(event: &Value) -> String {
    let text = format!("{event:?}");
    if text.len() > 300 {
        format!("{}...", &text[..300])
    } else {
        text
    }
}

/// The `error.kind` of a `finished` event, or `None` for a result.
fn failure(finished: &Value) -> Option<&str> {
    get(finished, "error")
        .and_then(|e| get(e, "kind"))
        .and_then(Value::as_text)
}

/// Whether process `pid` has ended (gone, or a zombie), waiting up to [`SETTLE`].
fn ended(pid: u32) -> bool {
    let until = Instant::now() + SETTLE;
    loop {
        match common::stat(pid) {
            None => return true,
            Some((info, _)) if info.state == 'Z' => return true,
            Some(_) if Instant::now() > until => return false,
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn a_client_runs_jobs_in_both_modes_and_hears_their_progress_and_results() {
    let mut client = Client::start(&["-j", "2"], &marker("modes"));
    let hello = client.next();
    assert_eq!(kind(&hello), "hello", "{hello:?}");
    assert_eq!(uint(get(&hello, "protocol")), Some(1));
    assert_eq!(uint(get(&hello, "max_running")), Some(2));
    assert!(get(&hello, "version").and_then(Value::as_text).is_some());

    let modes = [
        (1, "always"),
        (2, "always"),
        (3, "always"),
        (4, "never"),
        (5, "never"),
        (6, "never"),
    ];
    for (id, mode) in modes {
        let input = map(vec![
            ("echo", id.into()),
            ("sleep_ms", 200.into()),
            ("progress_steps", 4.into()),
        ]);
        client.send(&submit(id, input, vec![("persistent", text(mode))]));
    }
    client.wait_finished(&[1, 2, 3, 4, 5, 6]);

    for (id, mode) in modes {
        let events = client.events_of(id);
        let kinds: Vec<&str> = events.iter().map(|e| kind(e)).collect();
        let story = || format!("job {id}: {kinds:?}\n{}", client.story());
        assert_eq!(kinds.first(), Some(&"queued"), "{}", story());
        assert_eq!(kinds.get(1), Some(&"started"), "{}", story());
        assert_eq!(kinds.last(), Some(&"finished"), "{}", story());
        assert!(
            kinds[2..kinds.len() - 1].iter().all(|k| *k == "progress"),
            "{}",
            story()
        );
        assert!(kinds.contains(&"progress"), "{}", story());
        let started = events[1];
        assert!(uint(get(started, "pid")).is_some(), "{}", story());
        let finished = events[events.len() - 1];
        let result = get(finished, "result").unwrap_or_else(|| panic!("{}", story()));
        assert_eq!(uint(get(result, "echo")), Some(id), "{}", story());
        let stats = get(finished, "stats").expect("stats");
        assert!(
            get(stats, "wall_ms").and_then(Value::as_float).is_some(),
            "{}",
            story()
        );
        match mode {
            "always" => {
                assert!(uint(get(started, "worker")).is_some(), "{}", story());
                assert!(
                    get(stats, "worker").is_some_and(Value::is_map),
                    "{}",
                    story()
                );
            }
            _ => {
                assert_eq!(get(started, "worker"), Some(&Value::Null), "{}", story());
                assert_eq!(get(stats, "worker"), Some(&Value::Null), "{}", story());
            }
        }
        for progress in &events[2..events.len() - 1] {
            let fraction = get(progress, "fraction").and_then(Value::as_float);
            assert!(
                fraction.is_some_and(|f| (0.0..=1.0).contains(&f)),
                "{}",
                story()
            );
        }
    }
    client.close_stdin();
    client.read_to_end();
    assert!(client.wait_exit().success(), "{}", client.story());
}

#[test]
fn a_crash_fails_its_job_only_and_a_result_that_is_not_cbor_is_bad_output() {
    let mut client = Client::start(&["-j", "2"], &marker("crash"));
    let jobs = [
        (1, map(vec![("echo", 1.into())]), "always"),
        (2, map(vec![("fail", text("segv"))]), "always"),
        (3, map(vec![("echo", 3.into())]), "always"),
        (4, map(vec![("fail", text("not_cbor"))]), "never"),
        (5, map(vec![("echo", 5.into())]), "never"),
    ];
    for (id, input, mode) in jobs {
        client.send(&submit(id, input, vec![("persistent", text(mode))]));
    }
    client.wait_finished(&[1, 2, 3, 4, 5]);
    let finished = |id: u64| -> Value {
        client
            .seen
            .iter()
            .find(|e| is(e, "finished", id))
            .cloned()
            .expect("finished")
    };
    let crashed = finished(2);
    assert_eq!(failure(&crashed), Some("killed"), "{}", client.story());
    let error = get(&crashed, "error").expect("error");
    assert_eq!(uint(get(error, "signal")), Some(11), "{}", client.story());
    assert_eq!(
        failure(&finished(4)),
        Some("bad_output"),
        "{}",
        client.story()
    );
    for id in [1, 3, 5] {
        let result = get(&finished(id), "result").cloned();
        assert_eq!(
            result.as_ref().and_then(|r| uint(get(r, "echo"))),
            Some(id),
            "{}",
            client.story()
        );
    }
}

#[test]
fn cancelling_a_running_job_ends_it_and_its_process() {
    let mut client = Client::start(&["-j", "2"], &marker("cancel"));
    let forever = || {
        map(vec![
            ("sleep_ms", FOREVER_MS.into()),
            ("progress_steps", 1000.into()),
        ])
    };
    client.send(&submit(1, forever(), vec![("persistent", text("never"))]));
    client.send(&submit(2, forever(), vec![("persistent", text("always"))]));
    let mut pids = Vec::new();
    for id in [1, 2] {
        let started = client.wait_event("started", id);
        pids.push(uint(get(&started, "pid")).expect("a pid") as u32);
    }
    for id in [1, 2] {
        client.send(&request("cancel", vec![("id", id.into())]));
    }
    client.wait_finished(&[1, 2]);
    for id in [1, 2] {
        let finished = client
            .seen
            .iter()
            .find(|e| is(e, "finished", id))
            .expect("finished");
        assert_eq!(failure(finished), Some("cancelled"), "{}", client.story());
    }
    for pid in pids {
        assert!(
            ended(pid),
            "process {pid} lives on after its job was cancelled"
        );
    }
    // A cancel for a job that has finished is passed over.
    client.send(&request("cancel", vec![("id", 1.into())]));
    client.close_stdin();
    client.read_to_end();
    assert!(client.wait_exit().success(), "{}", client.story());
    assert!(
        !client.seen.iter().any(|e| kind(e) == "error"),
        "{}",
        client.story()
    );
}

#[test]
fn cancel_batch_cancels_that_batch_only_running_and_queued() {
    let mut client = Client::start(&["-j", "2"], &marker("batch"));
    let forever = || {
        map(vec![
            ("sleep_ms", FOREVER_MS.into()),
            ("progress_steps", 1000.into()),
        ])
    };
    let never = || ("persistent", text("never"));
    client.send(&submit(1, forever(), vec![("batch", text("a")), never()]));
    client.send(&submit(2, forever(), vec![("batch", 7.into()), never()]));
    // Queued behind them: the second of batch "a", and one of no batch.
    client.send(&submit(3, forever(), vec![("batch", text("a")), never()]));
    client.send(&submit(4, map(vec![("echo", 4.into())]), vec![never()]));
    client.wait_event("started", 1);
    client.wait_event("started", 2);
    client.send(&request("cancel_batch", vec![("batch", text("a"))]));
    client.wait_finished(&[1, 3, 4]);
    client.send(&request("cancel_batch", vec![("batch", 7.into())]));
    client.wait_finished(&[2]);
    let finished = |client: &Client, id: u64| {
        client
            .seen
            .iter()
            .find(|e| is(e, "finished", id))
            .cloned()
            .expect("finished")
    };
    for id in [1, 2, 3] {
        assert_eq!(
            failure(&finished(&client, id)),
            Some("cancelled"),
            "{}",
            client.story()
        );
    }
    let four = finished(&client, 4);
    assert_eq!(
        uint(get(&four, "result").and_then(|r| get(r, "echo"))),
        Some(4),
        "{}",
        client.story()
    );
    // Cancelled while queued: it never started.
    assert!(
        !client.seen.iter().any(|e| is(e, "started", 3)),
        "{}",
        client.story()
    );
}

#[test]
fn queued_jobs_start_by_priority_one_at_a_time_after_a_pause() {
    let mut client = Client::start(&["-j", "2"], &marker("priority"));
    client.send(&request("set_max_running", vec![("max_running", 1.into())]));
    client.send(&request("pause", vec![("paused", true.into())]));
    // Submitted paused, in this order, with these priorities; then job 1 raised above all.
    let priorities: [(u64, i64); 5] = [(1, 0), (2, 5), (3, -1), (4, 5), (5, 2)];
    for (id, priority) in priorities {
        let input = map(vec![("echo", id.into())]);
        let extra = vec![("priority", priority.into()), ("persistent", text("never"))];
        client.send(&submit(id, input, extra));
    }
    client.send(&request(
        "set_priority",
        vec![("id", 3.into()), ("priority", 10.into())],
    ));
    client.send(&request("pause", vec![("paused", false.into())]));
    client.wait_finished(&[1, 2, 3, 4, 5]);
    let order: Vec<(String, u64)> = client
        .seen
        .iter()
        .filter(|e| matches!(kind(e), "started" | "finished"))
        .map(|e| (kind(e).to_owned(), id_of(e).unwrap_or(0)))
        .collect();
    let expected: Vec<(String, u64)> = [3, 2, 4, 5, 1]
        .into_iter()
        .flat_map(|id| [("started".to_owned(), id), ("finished".to_owned(), id)])
        .collect();
    assert_eq!(order, expected, "{}", client.story());
}

#[test]
fn requests_that_are_not_understood_get_an_error_event_and_serve_goes_on() {
    let mut client = Client::start(&["-j", "2"], &marker("garbage"));
    let not_understood = [
        Value::Integer(5.into()),
        text("hello"),
        map(vec![("id", 1.into())]),
        request("submit", vec![("processor", text("diag"))]),
        request("cancel", vec![("id", text("one"))]),
        request("set_max_running", vec![("max_running", 0.into())]),
    ];
    for garbage in &not_understood {
        client.send(garbage);
    }
    // A type of a later version: ignored, no event.
    client.send(&request("from_a_later_version", vec![]));
    // A submit with its id but no input, or no such processor: refused.
    client.send(&request(
        "submit",
        vec![("id", 9.into()), ("processor", text("diag"))],
    ));
    let mut nowhere = submit(10, 1.into(), vec![]);
    if let Value::Map(pairs) = &mut nowhere {
        pairs[2].1 = text("surely-not-installed");
    }
    client.send(&nowhere);
    // An id in use by a job that has not finished: an error, and the job runs on.
    let forever = map(vec![
        ("sleep_ms", FOREVER_MS.into()),
        ("progress_steps", 1000.into()),
    ]);
    client.send(&submit(11, forever.clone(), vec![]));
    client.send(&submit(11, forever, vec![]));
    client.send(&submit(12, map(vec![("echo", 12.into())]), vec![]));
    client.wait_event("finished", 12);
    client.send(&request("cancel", vec![("id", 11.into())]));
    client.wait_event("finished", 11);

    let errors: Vec<&Value> = client.seen.iter().filter(|e| kind(e) == "error").collect();
    assert_eq!(errors.len(), not_understood.len() + 1, "{}", client.story());
    for error in &errors {
        assert!(get(error, "message")
            .and_then(Value::as_text)
            .is_some_and(|m| !m.is_empty()));
    }
    assert!(errors
        .last()
        .and_then(|e| get(e, "message"))
        .and_then(Value::as_text)
        .is_some_and(|m| m.contains("11")));
    for id in [9, 10] {
        let refused: Vec<&Value> = client.events_of(id);
        assert_eq!(refused.len(), 1, "{}", client.story());
        assert_eq!(kind(refused[0]), "refused", "{}", client.story());
        assert!(get(refused[0], "error").and_then(Value::as_text).is_some());
    }
    let twelve = client
        .seen
        .iter()
        .find(|e| is(e, "finished", 12))
        .expect("finished");
    assert_eq!(
        uint(get(twelve, "result").and_then(|r| get(r, "echo"))),
        Some(12)
    );
    assert_eq!(
        client
            .events_of(11)
            .iter()
            .filter(|e| kind(e) == "queued")
            .count(),
        1,
        "{}",
        client.story()
    );
}

/// Two jobs running (one in a process of its own, one on a worker) and one queued behind them.
fn start_three_jobs(client: &mut Client) {
    let forever = || {
        map(vec![
            ("sleep_ms", FOREVER_MS.into()),
            ("progress_steps", 1000.into()),
        ])
    };
    client.send(&submit(1, forever(), vec![("persistent", text("never"))]));
    client.send(&submit(2, forever(), vec![("persistent", text("always"))]));
    client.send(&submit(3, forever(), vec![("persistent", text("never"))]));
    client.wait_event("started", 1);
    client.wait_event("started", 2);
}

/// Every job of [`start_three_jobs`] finished as cancelled, each once.
fn assert_all_cancelled(client: &Client) {
    for id in [1, 2, 3] {
        let finished: Vec<&Value> = client
            .events_of(id)
            .into_iter()
            .filter(|e| kind(e) == "finished")
            .collect();
        assert_eq!(finished.len(), 1, "job {id}\n{}", client.story());
        assert_eq!(
            failure(finished[0]),
            Some("cancelled"),
            "{}",
            client.story()
        );
    }
}

#[test]
fn closing_stdin_mid_run_kills_every_job_reports_them_and_exits_0() {
    let mut client = Client::start(&["-j", "2"], &marker("eof"));
    start_three_jobs(&mut client);
    client.close_stdin();
    client.read_to_end();
    assert_all_cancelled(&client);
    assert_eq!(client.wait_exit().code(), Some(0), "{}", client.story());
    client.assert_no_process_left(SETTLE);
}

#[test]
fn a_broken_request_stream_ends_serve_with_65_and_leaves_no_process() {
    let mut client = Client::start(&["-j", "2"], &marker("broken"));
    start_three_jobs(&mut client);
    // A break code outside any item: not CBOR.
    client.send_bytes(&[0xff]);
    client.read_to_end();
    assert_all_cancelled(&client);
    let error = client
        .seen
        .iter()
        .find(|e| kind(e) == "error")
        .expect("an error event");
    assert!(
        get(error, "message")
            .and_then(Value::as_text)
            .is_some_and(|m| m.contains("not CBOR")),
        "{}",
        client.story()
    );
    assert_eq!(client.wait_exit().code(), Some(65), "{}", client.story());
    client.assert_no_process_left(SETTLE);
}

#[test]
fn sigterm_ends_serve_as_the_end_of_stdin_does() {
    let mut client = Client::start(&["-j", "2"], &marker("sigterm"));
    start_three_jobs(&mut client);
    // SAFETY: kill sends a signal to our own child.
    unsafe { libc::kill(client.child.id() as i32, libc::SIGTERM) };
    client.read_to_end();
    assert_all_cancelled(&client);
    assert_eq!(client.wait_exit().code(), Some(0), "{}", client.story());
    client.assert_no_process_left(SETTLE);
}

#[test]
fn a_client_killed_with_sigkill_takes_serve_and_every_processor_with_it() {
    let marker = marker("sigkill");
    // The client is a shell that runs serve as its child on the same stdin and stdout (not
    // with exec: the command after it keeps the shell there), and this test writes and reads
    // those pipes; so killing the shell leaves serve's stdin open, and only its parent's death
    // can end it.
    let mut shell = Command::new("sh");
    shell
        .args(["-c", "\"$0\" serve -j 2; echo unreachable"])
        .arg(bin("offload"));
    let mut client = Client::spawn(shell, &marker);
    assert_eq!(kind(&client.next()), "hello");
    start_three_jobs(&mut client);
    let shell_pid = client.child.id();
    let serve: Vec<u32> = marked(&marker)
        .into_iter()
        .filter(|(pid, comm)| {
            comm == "offload"
                && common::stat(*pid).is_some_and(|(info, _)| info.parent == shell_pid)
        })
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(
        serve.len(),
        1,
        "serve runs below the shell: {:?}",
        marked(&marker)
    );
    // Processors run (a guard, a one-shot processor, a worker).
    assert!(marked(&marker).len() >= 3, "{:?}", marked(&marker));

    client.child.kill().expect("SIGKILL to the client");
    client.child.wait().expect("the client is reaped");
    // Generous: three processes to be killed by the kernel on a loaded machine.
    client.assert_no_process_left(3 * SETTLE);
    // Serve's stdin is still open here: it ended because its parent did.
    assert!(client.stdin.is_some());
}

#[test]
fn a_20_mib_byte_string_goes_in_and_out_byte_identical_and_not_as_base64() {
    const SIZE: usize = 20 << 20;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let payload: Vec<u8> = (0..SIZE)
        .map(|_| {
            // xorshift: bytes that no compression or text form shrinks.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut client = Client::start(&["-j", "2"], &marker("binary"));
    for (id, mode) in [(1, "always"), (2, "never")] {
        let input = map(vec![("echo", Value::Bytes(payload.clone()))]);
        let sent = client.send(&submit(id, input, vec![("persistent", text(mode))]));
        // The request itself: the bytes and a few dozen bytes of frame.
        assert!((SIZE..SIZE + 256).contains(&sent), "{sent}");
    }
    let mut finished = Vec::new();
    while finished.len() < 2 {
        let Some((event, bytes)) = client.next_raw() else {
            panic!("stdout ended\n{}", client.story());
        };
        if kind(&event) == "finished" {
            finished.push((event, bytes));
        }
    }
    for (event, bytes) in finished {
        let echo = get(&event, "result").and_then(|r| get(r, "echo"));
        let Some(Value::Bytes(echo)) = echo else {
            panic!("no bytes back: {}\n{}", short(&event), client.story());
        };
        assert!(echo == &payload, "the bytes came back changed");
        // Base64 would make it a third larger: the event is the bytes and a few hundred
        // more (the rest of the result, the stats).
        assert!(
            (SIZE..SIZE + 1024).contains(&bytes.len()),
            "{}",
            bytes.len()
        );
    }
}

/// The hex lines after each `client` or `serve` line of PROTOCOL.md's example in 19.4.
fn example_of_section_19() -> Vec<(String, Vec<u8>)> {
    let protocol =
        std::fs::read_to_string(common::root().join("PROTOCOL.md")).expect("PROTOCOL.md");
    let section = protocol
        .split("### 19.4")
        .nth(1)
        .expect("PROTOCOL.md has a section 19.4");
    let block = section.split("```").nth(1).expect("19.4 has a code block");
    let mut frames: Vec<(String, Vec<u8>)> = Vec::new();
    for line in block.lines() {
        let (who, rest) = match line.split_once(' ') {
            Some((who @ ("client" | "serve"), rest)) => (Some(who), rest),
            _ => (None, line),
        };
        if let Some(who) = who {
            frames.push((who.to_owned(), Vec::new()));
            continue;
        }
        let digits: String = rest.split_whitespace().collect();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let bytes = (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>();
        if let Some((_, frame)) = frames.last_mut() {
            frame.extend(bytes);
        }
    }
    frames
}

#[test]
fn the_example_of_protocol_section_19_is_what_serve_says() {
    let example = example_of_section_19();
    let (who, request) = &example[0];
    assert_eq!(who, "client");
    let mut client = Client::start(&["-j", "2"], &marker("example"));
    client.send_bytes(request);
    let with_hex: Vec<&Vec<u8>> = example[1..]
        .iter()
        .filter(|(who, bytes)| who == "serve" && !bytes.is_empty())
        .map(|(_, bytes)| bytes)
        .collect();
    assert!(
        with_hex.len() >= 2,
        "the example shows serve's hello and queued in hex"
    );
    for expected in with_hex {
        let (event, bytes) = client.next_raw().expect("an event");
        assert_eq!(
            &bytes,
            expected,
            "PROTOCOL.md 19.4 shows other bytes than serve wrote for {}",
            short(&event)
        );
    }
    let finished = client.wait_event("finished", 1);
    assert_eq!(
        uint(get(&finished, "result").and_then(|r| get(r, "echo"))),
        Some(7)
    );
}
