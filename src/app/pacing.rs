//! How many jobs to add to the list per main-loop turn.
//!
//! Appending rows costs little per row once the list's row widgets exist, but the first rows
//! of an empty list make GTK build a row of widgets for each (about 0.6 ms a row with seven
//! columns, measured: 175 rows in one 112 ms turn). A fixed slice is either slow for large
//! batches or a visible stall for the first one. The pacer starts small, measures what each
//! slice cost per row, and sizes the next one to fit the budget, growing at most twofold a
//! turn. New row widgets also cost as much again in the next frame's layout, so after a slice
//! of expensive rows the pacer asks for a pause of one frame: the frame lays out that slice
//! before the next one adds more.

use std::time::Duration;

/// The size of the first slice, before anything is measured.
const FIRST: usize = 8;
/// An item costing more than this is building widgets, not just filing a row.
const EXPENSIVE: Duration = Duration::from_micros(100);
/// One frame at 60 Hz.
const FRAME: Duration = Duration::from_micros(16_667);

/// Sizes slices of work to a time budget per main-loop turn.
#[derive(Debug, Clone)]
pub struct Pacer {
    budget: Duration,
    most: usize,
    next: usize,
    pause: Duration,
}

impl Pacer {
    /// Slices of at most `most` items, each meant to take about `budget`.
    pub fn new(budget: Duration, most: usize) -> Self {
        let most = most.max(1);
        Self {
            budget,
            most,
            next: FIRST.min(most),
            pause: Duration::ZERO,
        }
    }

    /// How many items the next slice should hold.
    pub fn next(&self) -> usize {
        self.next
    }

    /// How long to wait before the next slice: nothing, or a frame after expensive items.
    pub fn pause(&self) -> Duration {
        self.pause
    }

    /// Tells the pacer that a slice of `items` took `took`.
    pub fn record(&mut self, items: usize, took: Duration) {
        if items == 0 {
            return;
        }
        self.pause = if took > EXPENSIVE * items as u32 {
            FRAME
        } else {
            Duration::ZERO
        };
        let per_item = took.as_secs_f64() / items as f64;
        let fits = if per_item > 0.0 {
            (self.budget.as_secs_f64() / per_item).floor() as usize
        } else {
            self.most
        };
        self.next = fits.min(items.saturating_mul(2)).clamp(1, self.most);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn starts_small_and_grows_at_most_twofold_while_cheap() {
        let mut pacer = Pacer::new(4 * MS, 250);
        assert_eq!(pacer.next(), 8);
        let mut sizes = Vec::new();
        for _ in 0..7 {
            let n = pacer.next();
            sizes.push(n);
            pacer.record(n, Duration::from_micros(n as u64)); // 1 µs an item
        }
        assert_eq!(sizes, [8, 16, 32, 64, 128, 250, 250]);
        assert_eq!(pacer.pause(), Duration::ZERO);
    }

    #[test]
    fn shrinks_to_the_budget_when_items_turn_expensive() {
        let mut pacer = Pacer::new(4 * MS, 250);
        pacer.record(8, 8 * MS); // 1 ms an item: 4 fit, after a frame
        assert_eq!(pacer.next(), 4);
        assert_eq!(pacer.pause(), FRAME);
        pacer.record(4, 40 * MS); // 10 ms an item: still one at a time
        assert_eq!(pacer.next(), 1);
        pacer.record(1, Duration::from_micros(2)); // cheap again: grows from where it is
        assert_eq!(pacer.next(), 2);
        assert_eq!(pacer.pause(), Duration::ZERO);
    }

    #[test]
    fn an_empty_slice_changes_nothing() {
        let mut pacer = Pacer::new(4 * MS, 250);
        pacer.record(0, 100 * MS);
        assert_eq!(pacer.next(), 8);
    }
}
