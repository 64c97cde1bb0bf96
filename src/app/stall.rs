//! The main-loop stall probe: how long the main loop went without running a 1 ms timer.
//!
//! A timer at default priority asks to run every millisecond; any time beyond that between two
//! runs is time the main loop spent elsewhere (drawing, handling events, our own callbacks).
//! The longest such gap and the 99th percentile are what a person feels as stutter; the report
//! also says when the worst gaps happened, to line them up with what the app was doing.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use gtk::glib;

/// Environment variable that turns the probe on (`OFFLOAD_STALL_REPORT=1`).
pub const STALL_REPORT_ENV: &str = "OFFLOAD_STALL_REPORT";

const PERIOD: Duration = Duration::from_millis(1);

/// How many of the longest gaps the report places in time.
const WORST: usize = 5;

/// Measures main-loop gaps while it lives.
pub struct StallProbe {
    /// (gap in ms, seconds since the probe started, when the gap ended).
    gaps: Rc<RefCell<Vec<(f32, f32)>>>,
    source: Option<glib::SourceId>,
}

/// What the probe saw.
#[derive(Debug, Clone, PartialEq)]
pub struct StallReport {
    pub max_ms: f64,
    pub p99_ms: f64,
    pub samples: usize,
    /// The longest gaps, longest first: (gap in ms, seconds into the run when it ended).
    pub worst: Vec<(f64, f64)>,
    /// The longest gap and the 99th percentile of those that ended a second or more into the
    /// run: the figures once the window is settled, without its first layout of the jobs.
    pub settled_max_ms: f64,
    pub settled_p99_ms: f64,
}

impl std::fmt::Display for StallReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stall max_ms={:.2} p99_ms={:.2} samples={} worst=",
            self.max_ms, self.p99_ms, self.samples
        )?;
        for (i, (gap, at)) in self.worst.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            write!(f, "{comma}{gap:.1}ms@{at:.2}s")?;
        }
        write!(
            f,
            " settled_max_ms={:.2} settled_p99_ms={:.2}",
            self.settled_max_ms, self.settled_p99_ms
        )
    }
}

impl StallProbe {
    /// Starts measuring on the thread-default main context.
    pub fn start() -> Self {
        let gaps: Rc<RefCell<Vec<(f32, f32)>>> = Rc::default();
        let sink = gaps.clone();
        let began = Instant::now();
        let mut last = began;
        let source = glib::timeout_add_local(PERIOD, move || {
            let now = Instant::now();
            let late = now.duration_since(last).saturating_sub(PERIOD);
            last = now;
            let at = now.duration_since(began).as_secs_f32();
            sink.borrow_mut().push((late.as_secs_f32() * 1000.0, at));
            glib::ControlFlow::Continue
        });
        Self {
            gaps,
            source: Some(source),
        }
    }

    /// The figures so far.
    pub fn report(&self) -> StallReport {
        let mut gaps = self.gaps.borrow().clone();
        gaps.sort_by(|a, b| a.0.total_cmp(&b.0));
        let samples = gaps.len();
        let (max_ms, p99_ms) = max_and_p99(&gaps);
        let settled: Vec<(f32, f32)> = gaps.iter().copied().filter(|g| g.1 >= 1.0).collect();
        let (settled_max_ms, settled_p99_ms) = max_and_p99(&settled);
        let worst = gaps
            .iter()
            .rev()
            .take(WORST)
            .map(|&(gap, at)| (f64::from(gap), f64::from(at)))
            .collect();
        StallReport {
            max_ms: f64::from(max_ms),
            p99_ms: f64::from(p99_ms),
            samples,
            worst,
            settled_max_ms: f64::from(settled_max_ms),
            settled_p99_ms: f64::from(settled_p99_ms),
        }
    }
}

/// The largest gap and the 99th percentile of `sorted` (ascending) gaps; 0 for none.
fn max_and_p99(sorted: &[(f32, f32)]) -> (f32, f32) {
    match sorted.len() {
        0 => (0.0, 0.0),
        n => (
            sorted[n - 1].0,
            sorted[((n - 1) as f64 * 0.99).round() as usize].0,
        ),
    }
}

impl Drop for StallProbe {
    fn drop(&mut self) {
        if let Some(source) = self.source.take() {
            source.remove();
        }
    }
}
