//! `offload run --halt WHEN,WHY=N`: stop a batch early, with GNU parallel's meaning.
//!
//! `soon` stops starting jobs and lets the running ones end; `now` also cancels the running
//! ones. The condition counts jobs that failed (`fail`), succeeded (`success`) or ended either
//! way (`done`), as a number or as a percentage. GNU parallel reads all its input before it
//! starts, so its percentages are of the whole batch; `offload run` streams, so a percentage
//! is of the inputs read so far (the whole batch when it fits the read-ahead window).

use std::fmt;

use offload::Counts;

/// When to stop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum When {
    /// Start no more jobs; let the running ones end.
    Soon,
    /// Start no more jobs and cancel the running ones.
    Now,
}

/// Which ended jobs count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Why {
    Fail,
    Success,
    Done,
}

/// How many must have ended that way.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    Count(usize),
    /// Per cent of the inputs read so far.
    Percent(f64),
}

/// A `--halt` condition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Halt {
    pub when: When,
    pub why: Why,
    pub threshold: Threshold,
}

/// `--halt`'s value: `never` is None.
#[derive(Clone, Copy, Debug)]
pub struct HaltArg(pub Option<Halt>);

/// clap's parser for `--halt`.
pub fn parse_arg(text: &str) -> Result<HaltArg, String> {
    Halt::parse(text).map(HaltArg)
}

impl Halt {
    /// Parses `never` (None), `soon|now,fail|success|done=N[%]`, and GNU parallel's short
    /// forms: `0` (never), `1` (soon,fail=1), `2` (now,fail=1), `-1` (soon,success=1), `-2`
    /// (now,success=1) and `N%` (soon,fail=N%).
    pub fn parse(text: &str) -> Result<Option<Self>, String> {
        let expanded = match text {
            "never" | "0" => return Ok(None),
            "1" => "soon,fail=1".to_owned(),
            "2" => "now,fail=1".to_owned(),
            "-1" => "soon,success=1".to_owned(),
            "-2" => "now,success=1".to_owned(),
            percent if percent.ends_with('%') && !percent.contains(',') => {
                format!("soon,fail={percent}")
            }
            other => other.to_owned(),
        };
        let usage = || {
            format!(
                "--halt {text}: expected never, or soon|now,fail|success|done=N or =N% \
                 (e.g. soon,fail=1 or now,fail=10%)"
            )
        };
        let (when, rest) = expanded.split_once(',').ok_or_else(usage)?;
        let (why, amount) = rest.split_once('=').ok_or_else(usage)?;
        let when = match when {
            "soon" => When::Soon,
            "now" => When::Now,
            _ => return Err(usage()),
        };
        let why = match why {
            "fail" => Why::Fail,
            "success" => Why::Success,
            "done" => Why::Done,
            _ => return Err(usage()),
        };
        let threshold = match amount.strip_suffix('%') {
            Some(percent) => match percent.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Threshold::Percent(p),
                _ => {
                    return Err(format!(
                        "--halt {text}: a percentage is above 0 and at most 100"
                    ))
                }
            },
            None => match amount.parse::<usize>() {
                Ok(n) if n > 0 => Threshold::Count(n),
                _ => return Err(format!("--halt {text}: a count is a whole number above 0")),
            },
        };
        Ok(Some(Self {
            when,
            why,
            threshold,
        }))
    }

    /// Whether the batch stops, now that the `ended` jobs have ended out of `read` inputs read.
    /// A cancelled job (an interrupt) did not succeed: `fail` counts it, as GNU parallel does.
    pub fn reached(&self, ended: Counts, read: usize) -> bool {
        let count = match self.why {
            Why::Fail => ended.failed + ended.cancelled,
            Why::Success => ended.succeeded,
            Why::Done => ended.ended(),
        };
        count > 0
            && match self.threshold {
                Threshold::Count(n) => count >= n,
                Threshold::Percent(p) => count as f64 >= p / 100.0 * read as f64,
            }
    }
}

impl fmt::Display for Halt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = match self.when {
            When::Soon => "soon",
            When::Now => "now",
        };
        let why = match self.why {
            Why::Fail => "fail",
            Why::Success => "success",
            Why::Done => "done",
        };
        match self.threshold {
            Threshold::Count(n) => write!(f, "{when},{why}={n}"),
            Threshold::Percent(p) => write!(f, "{when},{why}={p}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_long_and_the_short_forms_parse() {
        let halt = |text| Halt::parse(text).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(halt("never"), None);
        assert_eq!(halt("0"), None);
        assert_eq!(halt("1").map(|h| h.to_string()), Some("soon,fail=1".into()));
        assert_eq!(halt("2").map(|h| h.to_string()), Some("now,fail=1".into()));
        assert_eq!(
            halt("-2").map(|h| h.to_string()),
            Some("now,success=1".into())
        );
        assert_eq!(
            halt("20%").map(|h| h.to_string()),
            Some("soon,fail=20%".into())
        );
        assert_eq!(
            halt("now,done=3"),
            Some(Halt {
                when: When::Now,
                why: Why::Done,
                threshold: Threshold::Count(3)
            })
        );
        for bad in [
            "later,fail=1",
            "soon,fail",
            "soon,fail=0",
            "now,broke=1",
            "soon,fail=120%",
        ] {
            assert!(Halt::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn counts_and_percentages_are_judged_as_gnu_parallel_does() {
        let halt = |text| Halt::parse(text).ok().flatten().expect("a halt");
        let ended = |failed, succeeded| Counts {
            failed,
            succeeded,
            ..Counts::default()
        };
        assert!(!halt("soon,fail=2").reached(ended(1, 9), 10));
        assert!(halt("soon,fail=2").reached(ended(2, 0), 10));
        assert!(halt("now,success=1").reached(ended(0, 1), 10));
        assert!(halt("soon,done=3").reached(ended(1, 2), 10));
        // 3% of 10 inputs is 0.3 of a job: the first failure is enough, none is not.
        assert!(!halt("soon,fail=3%").reached(ended(0, 5), 10));
        assert!(halt("soon,fail=3%").reached(ended(1, 5), 10));
        assert!(!halt("soon,fail=50%").reached(ended(4, 0), 10));
        assert!(halt("soon,fail=50%").reached(ended(5, 0), 10));
    }
}
