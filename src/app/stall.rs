//! The main-loop stall probe: how long the main loop went without running a 1 ms timer.
//!
//! A timer at default priority asks to run every millisecond; any time beyond that between two
//! runs is time the main loop spent elsewhere (drawing, handling events, our own callbacks).
//! The longest such gap and the 99th percentile are what a person feels as stutter.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use gtk::glib;

/// Environment variable that turns the probe on (`OFFLOAD_STALL_REPORT=1`).
pub const STALL_REPORT_ENV: &str = "OFFLOAD_STALL_REPORT";

const PERIOD: Duration = Duration::from_millis(1);

/// Measures main-loop gaps while it lives.
pub struct StallProbe {
    gaps_ms: Rc<RefCell<Vec<f32>>>,
    source: Option<glib::SourceId>,
}

/// What the probe saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StallReport {
    pub max_ms: f64,
    pub p99_ms: f64,
    pub samples: usize,
}

impl std::fmt::Display for StallReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stall max_ms={:.2} p99_ms={:.2} samples={}",
            self.max_ms, self.p99_ms, self.samples
        )
    }
}

impl StallProbe {
    /// Starts measuring on the thread-default main context.
    pub fn start() -> Self {
        let gaps_ms: Rc<RefCell<Vec<f32>>> = Rc::default();
        let sink = gaps_ms.clone();
        let mut last = Instant::now();
        let source = glib::timeout_add_local(PERIOD, move || {
            let now = Instant::now();
            let late = now.duration_since(last).saturating_sub(PERIOD);
            last = now;
            sink.borrow_mut().push(late.as_secs_f32() * 1000.0);
            glib::ControlFlow::Continue
        });
        Self {
            gaps_ms,
            source: Some(source),
        }
    }

    /// The figures so far.
    pub fn report(&self) -> StallReport {
        let mut gaps = self.gaps_ms.borrow().clone();
        gaps.sort_by(f32::total_cmp);
        let samples = gaps.len();
        let max_ms = gaps.last().copied().unwrap_or(0.0);
        let p99_ms = if samples == 0 {
            0.0
        } else {
            gaps[((samples - 1) as f64 * 0.99).round() as usize]
        };
        StallReport {
            max_ms: f64::from(max_ms),
            p99_ms: f64::from(p99_ms),
            samples,
        }
    }
}

impl Drop for StallProbe {
    fn drop(&mut self) {
        if let Some(source) = self.source.take() {
            source.remove();
        }
    }
}
