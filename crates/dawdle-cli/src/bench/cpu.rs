//! Where the CPU went during a drain: how busy the whole machine was, and
//! how much of it the worker processes used. Together they say whether a
//! drain was bound by the machine's cores (a second worker process then
//! has nothing left to use) or by waiting.

use std::time::Duration;

/// The counters read at the start of a drain.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuMark {
    machine: Option<MachineTicks>,
    children: Option<Duration>,
}

/// What the CPU did between a mark and now.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CpuUse {
    /// The share of every core's time the machine spent busy (0 to 1):
    /// anything not idle and not waiting for the disk. `None` where
    /// `/proc/stat` cannot be read (not Linux).
    pub(super) machine_busy: Option<f64>,
    /// CPU time (user and system) of the child processes that ended
    /// meanwhile: the worker processes.
    pub(super) children_seconds: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
struct MachineTicks {
    total: u64,
    idle: u64,
}

impl CpuMark {
    pub(super) fn now() -> Self {
        Self {
            machine: machine_ticks(),
            children: children_cpu(),
        }
    }

    /// The CPU used since this mark; call it once the children have been
    /// waited for (their time is counted only then).
    pub(super) fn since(&self) -> CpuUse {
        let machine = match (self.machine, machine_ticks()) {
            (Some(start), Some(end)) if end.total > start.total => {
                let total = (end.total - start.total) as f64;
                let idle = end.idle.saturating_sub(start.idle) as f64;
                Some((1.0 - idle / total).clamp(0.0, 1.0))
            }
            _ => None,
        };
        let children = match (self.children, children_cpu()) {
            (Some(start), Some(end)) => Some(end.saturating_sub(start).as_secs_f64()),
            _ => None,
        };
        CpuUse {
            machine_busy: machine,
            children_seconds: children,
        }
    }
}

/// The machine's CPU time so far, every core together, from `/proc/stat`.
fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(stat.lines().next()?)
}

/// Reads the `cpu` line of `/proc/stat`: user, nice, system, idle, iowait,
/// irq, softirq, steal (guest time is already inside user and nice).
fn parse_machine_ticks(line: &str) -> Option<MachineTicks> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if ticks.len() < 5 {
        return None;
    }
    Some(MachineTicks {
        total: ticks.iter().sum(),
        idle: ticks[3] + ticks[4],
    })
}

/// User and system CPU time of every child process waited for so far.
#[expect(
    unsafe_code,
    reason = "getrusage has no safe wrapper in std; it only writes the struct it is given"
)]
fn children_cpu() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is pointed at and nothing else;
    // it is zero-initialised, so reading it is sound even if it did not.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Some(time(usage.ru_utime) + time(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_counts_idle_and_iowait_as_not_busy() {
        let ticks = parse_machine_ticks("cpu  100 5 50 800 40 3 2 0 7 0").unwrap();
        assert_eq!(ticks.total, 1000);
        assert_eq!(ticks.idle, 840);
    }

    #[test]
    fn other_lines_and_garbage_are_not_read() {
        assert!(parse_machine_ticks("cpu0 1 2 3 4 5").is_none());
        assert!(parse_machine_ticks("cpu 1 2 x 4 5").is_none());
        assert!(parse_machine_ticks("cpu 1 2").is_none());
    }

    #[test]
    fn a_child_that_burns_cpu_is_counted_once_waited_for() {
        let mark = CpuMark::now();
        // A shell busy for a moment, then reaped.
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        let used = mark.since();
        assert!(used.children_seconds.unwrap() > 0.0, "{used:?}");
        if let Some(busy) = used.machine_busy {
            assert!((0.0..=1.0).contains(&busy), "{used:?}");
        }
    }
}
