//! The status area: counts, rate, overall progress and time left, refreshed by a tick.

use super::*;

/// The window over which jobs per second are measured.
const RATE_WINDOW: Duration = Duration::from_secs(5);

impl Window {
    pub(super) fn on_tick(&self) {
        // Only running jobs change on their own; the model looks at those alone.
        self.jobs().refresh_elapsed();
        self.refresh_status();
    }

    /// Updates the status area: counts, rate, overall progress and time left.
    pub fn refresh_status(&self) {
        let imp = self.imp();
        let counts = self.state_counts();
        let total =
            counts.queued + counts.running + counts.succeeded + counts.failed + counts.cancelled;
        let done = total - counts.queued - counts.running;
        let paused = if imp.queue.borrow().as_ref().is_some_and(Queue::is_paused) {
            " · paused"
        } else {
            ""
        };
        imp.counts_label.set_label(&format!(
            "{} queued · {} running · {} succeeded · {} failed · {} cancelled{paused}",
            counts.queued, counts.running, counts.succeeded, counts.failed, counts.cancelled
        ));
        let mut times = imp.finish_times.borrow_mut();
        while times.front().is_some_and(|t| t.elapsed() > RATE_WINDOW) {
            times.pop_front();
        }
        let rate = match (times.front(), times.len()) {
            (Some(first), n) if n >= 2 => (n - 1) as f64 / first.elapsed().as_secs_f64().max(0.25),
            _ => 0.0,
        };
        imp.rate_label.set_label(&format!("{rate:.1} jobs/s"));
        let fraction = if total == 0 {
            0.0
        } else {
            done as f64 / total as f64
        };
        imp.overall_progress.set_fraction(fraction);
        let left = total - done;
        let text = if left == 0 {
            format!("{done} of {total} done")
        } else if rate > 0.0 {
            format!(
                "{done} of {total} done · about {} left",
                format_eta(left as f64 / rate)
            )
        } else {
            format!("{done} of {total} done")
        };
        imp.overall_progress.set_text(Some(&text));
        imp.spinner.set_spinning(counts.running > 0);
    }
}

fn format_eta(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
