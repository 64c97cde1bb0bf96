//! Processors yield the CPU to the host whatever the kernel's grouping of tasks (issue 24):
//! with autogroup scheduling (each session a group of its own, so a processor's nice would
//! count for nothing), the processor's autogroup gets its nice value, and the job's stats say
//! so. The cgroup v2 weight is tested on a stand-in tree (src/runner/memory.rs), since this
//! machine's cgroup v2 has no controllers.

mod common;

use std::time::{Duration, Instant};

use common::{diag_job, on_main_context};
use offload::{CpuShare, Persistence, Queue, QueueEvent};
use serde_json::json;

fn autogroups_on() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled")
        .is_ok_and(|v| v.trim() == "1")
}

#[test]
fn a_processor_runs_below_the_host_in_its_autogroup_or_at_its_nice() {
    for persistence in [Persistence::Never, Persistence::Always] {
        let (seen, stats) = on_main_context(|| async {
            let queue = Queue::with_max_running(1);
            let pid = std::rc::Rc::new(std::cell::Cell::new(0u32));
            let seen = pid.clone();
            queue.connect_events(move |event| {
                if let QueueEvent::Started { pid, .. } = event {
                    seen.set(*pid);
                }
            });
            // The library's default nice (10), as the app's.
            let job = diag_job().persistence(persistence);
            let handle = queue
                .submit::<_, ciborium::Value>(&job, &json!({"sleep_ms": 1500}))
                .expect("submit");
            let until = Instant::now() + Duration::from_secs(60);
            while pid.get() == 0 {
                assert!(Instant::now() < until, "never started");
                common::sleep(Duration::from_millis(5)).await;
            }
            let group = std::fs::read_to_string(format!("/proc/{}/autogroup", pid.get()));
            let nice = std::fs::read_to_string(format!("/proc/{}/stat", pid.get()))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.to_owned();
                    // After the name: state is field 3; nice is field 19.
                    rest.split_whitespace().nth(16).map(str::to_owned)
                });
            let finished = handle.finished().await;
            ((group.ok(), nice), finished.stats)
        });
        let (group, nice) = seen;
        assert_eq!(
            nice.as_deref(),
            Some("10"),
            "{persistence:?}: the processor's nice"
        );
        if autogroups_on() {
            let group = group.expect("its autogroup");
            assert!(
                group.trim_end().ends_with("nice 10"),
                "{persistence:?}: {group}"
            );
            let ours = std::fs::read_to_string("/proc/self/autogroup").expect("ours");
            assert_ne!(
                group.split_whitespace().next(),
                ours.split_whitespace().next(),
                "a group of its own, not the host's"
            );
            assert_eq!(
                stats.cpu_share,
                Some(CpuShare::Autogroup),
                "{persistence:?}"
            );
        } else {
            assert_eq!(stats.cpu_share, Some(CpuShare::Nice), "{persistence:?}");
        }
    }
}

#[test]
fn at_nice_0_nothing_is_lowered() {
    let results = common::run_jobs(&diag_job().nice(0), &[json!({"echo": 1})], 1, None);
    assert_eq!(results[0].stats.cpu_share, None);
}
