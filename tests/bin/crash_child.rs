//! `attest-crash-child PIPELINE LEDGER_DIR POINT:N`: runs a pipeline like `attest run`,
//! and kills itself with SIGKILL at a precise point of the run, to put a crash in each
//! window that `attest resume` must repair (e2e/crash_windows.rs):
//!
//! * `read:N` — when the source is asked for row N;
//! * `written:N` — right after the Nth row is handed to a sink (buffered, not durable);
//! * `durable:N` — right after the Nth time a sink was fsynced, before the sequencer
//!   records the outcomes of the rows it made durable;
//! * `interrupt:N` — no crash: right after the Nth row is handed to a sink the run is
//!   interrupted as by Ctrl-C (it ends `interrupted`, exit 3, with at least N rows
//!   written and the rows it had read finished);
//! * `call:N` — when the Nth external call is about to be sent: its request is recorded
//!   (durably: the client records it before sending), it was never sent;
//! * `answer:N` — when the Nth external call has its answer, before the answer is
//!   recorded: the server answered a request the ledger shows without an answer.
//!
//! Before dying it makes the ledger durable up to that moment (a `flush` of what the
//! writer has applied), so the crash leaves exactly the state of that window rather than
//! whatever sled's periodic flush had reached. Exit 0 means the run completed without
//! reaching the point.

use attest_engine::calls::{Answer, BackendError, CallBackend, CallKey, LiveBackend, Prepared};
use attest_engine::run::io::{
    ArtifactInfo, RowSink, RowSource, SinkIoError, SinkPosition, SourceError, SourceRecord,
    WriteError,
};
use attest_engine::run::{execute, RunOptions, RunStatus};
use attest_engine::value::Row;
use attest_ledger::{Hash32, Ledger, RunStart, TokenId};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Point {
    Read,
    Written,
    Durable,
    Interrupt,
    Call,
    Answer,
}

struct Trap {
    ledger: Ledger,
    point: Point,
    at: u64,
    seen: AtomicU64,
    interrupt: Arc<AtomicBool>,
}

impl Trap {
    /// Counts one `point`; dies (or interrupts) when it is the chosen one.
    fn pass(&self, point: Point) {
        let counted = match (point, self.point) {
            (Point::Written, Point::Interrupt) => Point::Interrupt,
            (p, _) => p,
        };
        if counted != self.point {
            return;
        }
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            if self.point == Point::Interrupt {
                self.interrupt.store(true, Ordering::SeqCst);
                return;
            }
            let _ = self.ledger.flush();
            // SAFETY: sending a signal to this very process.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

/// The live backend, with the call points.
struct Calls {
    live: LiveBackend,
    trap: Arc<Trap>,
}

impl CallBackend for Calls {
    fn perform(&self, key: CallKey<'_>, request: &Prepared) -> Result<Answer, BackendError> {
        self.trap.pass(Point::Call);
        let answer = self.live.perform(key, request);
        self.trap.pass(Point::Answer);
        answer
    }

    fn recorded_retry(
        &self,
        key: CallKey<'_>,
        request: &Hash32,
        served: Option<&TokenId>,
    ) -> Result<Option<bool>, BackendError> {
        self.live.recorded_retry(key, request, served)
    }
}

struct Source {
    inner: Box<dyn RowSource>,
    trap: Arc<Trap>,
}

impl RowSource for Source {
    fn next_record(&mut self) -> Option<Result<SourceRecord, SourceError>> {
        self.trap.pass(Point::Read);
        self.inner.next_record()
    }
}

struct Sink {
    inner: Box<dyn RowSink>,
    trap: Arc<Trap>,
}

impl RowSink for Sink {
    fn write_row(&mut self, row: &Row) -> Result<(), WriteError> {
        let r = self.inner.write_row(row);
        self.trap.pass(Point::Written);
        r
    }
    fn flush_durable(&mut self) -> Result<SinkPosition, SinkIoError> {
        let r = self.inner.flush_durable();
        self.trap.pass(Point::Durable);
        r
    }
    fn position_before_run(&mut self) -> Result<Option<SinkPosition>, SinkIoError> {
        self.inner.position_before_run()
    }
    fn finish(self: Box<Self>) -> Result<Option<ArtifactInfo>, SinkIoError> {
        self.inner.finish()
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("attest-crash-child: {e}");
            ExitCode::from(2)
        }
    }
}

/// The run's exit code, as `attest run` gives it.
fn run() -> Result<u8, String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, pipeline, ledger_dir, spec] = args.as_slice() else {
        return Err(
            "usage: attest-crash-child PIPELINE LEDGER_DIR read|written|durable|interrupt|call|answer:N"
                .into(),
        );
    };
    let (point, at) = spec
        .split_once(':')
        .and_then(|(p, n)| {
            let point = match p {
                "read" => Point::Read,
                "written" => Point::Written,
                "durable" => Point::Durable,
                "interrupt" => Point::Interrupt,
                "call" => Point::Call,
                "answer" => Point::Answer,
                _ => return None,
            };
            Some((point, n.parse::<u64>().ok()?))
        })
        .ok_or_else(|| format!("bad crash point {spec:?}"))?;
    let loaded = attest_engine::build::load(pipeline.as_ref(), &|k| std::env::var(k).ok())
        .map_err(|e| e.join("\n"))?;
    let plan = attest_engine::build::plan(&loaded.config)?;
    let (source, sinks) = attest_engine::open::open(&loaded.config)?;
    let ledger = Ledger::open(ledger_dir).map_err(|e| e.to_string())?;
    let mut opts = RunOptions::default();
    if let Some(n) = loaded.config.concurrency.max_workers {
        opts.workers = n as usize;
    }
    let trap = Arc::new(Trap {
        ledger: ledger.clone(),
        point,
        at,
        seen: AtomicU64::new(0),
        interrupt: opts.interrupt.clone(),
    });
    opts.calls = Arc::new(Calls {
        live: LiveBackend::new(),
        trap: trap.clone(),
    });
    let source = Box::new(Source {
        inner: source,
        trap: trap.clone(),
    });
    let sinks = sinks
        .into_iter()
        .map(|inner| {
            Box::new(Sink {
                inner,
                trap: trap.clone(),
            }) as Box<dyn RowSink>
        })
        .collect();
    let summary = execute(
        &plan,
        source,
        sinks,
        &ledger,
        RunStart {
            config: loaded.text.clone(),
            engine_version: env!("CARGO_PKG_VERSION").to_string(),
            started_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        },
        opts,
    )
    .map_err(|e| e.to_string())?;
    Ok(match summary.status {
        RunStatus::Completed => 0,
        RunStatus::Failed => 1,
        RunStatus::Interrupted => 3,
    })
}
