//! The agent's scheduler time slice (`CNFLOW_SCHED_SLICE_US`).
//!
//! The agent works in bursts: it drains the capture rings every few
//! milliseconds and decodes what they hold. Under EEVDF (Linux ≥ 6.6) a task
//! keeps the CPU for its slice (~0.75 ms × (1 + log2 CPUs), 1.5 ms on 2
//! cores) before a waking task with an earlier deadline may take it, so a
//! request of the observed workload arriving during a burst could wait that
//! long. A custom slice (`sched_attr.sched_runtime` for SCHED_OTHER, Linux ≥
//! 6.12) of 100 µs bounds that wait without changing the agent's weight, i.e.
//! its share of CPU. Threads inherit it from the thread that creates them.
//! Older kernels ignore the field for SCHED_OTHER.

/// `struct sched_attr` (include/uapi/linux/sched/types.h, SCHED_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// Sets the calling thread's slice (0 = back to the kernel's default),
/// keeping SCHED_OTHER and its nice value.
pub fn set_slice(us: u64) -> std::io::Result<()> {
    // The nice value is a field of sched_attr too: keep the current one.
    // SAFETY: no memory arguments.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        nice,
        runtime: us * 1000,
        ..Default::default()
    };
    // SAFETY: pid 0 = this thread; `attr` is a valid sched_attr of the size it declares.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    /// The slice the kernel reports for this thread (`se.slice`), when it does.
    fn slice_ns() -> Option<u64> {
        let tid = unsafe { libc::gettid() };
        let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/sched")).ok()?;
        s.lines().find(|l| l.starts_with("se.slice"))?.split(':').nth(1)?.trim().parse().ok()
    }

    #[test]
    fn the_slice_is_set_on_this_thread_and_inherited() {
        // A thread of its own: the test harness's threads keep their slice.
        std::thread::spawn(|| {
            super::set_slice(100).expect("sched_setattr");
            if let Some(ns) = slice_ns() {
                assert_eq!(ns, 100_000);
                assert_eq!(std::thread::spawn(slice_ns).join().unwrap(), Some(100_000), "inherited");
            }
            super::set_slice(0).expect("back to the default");
        })
        .join()
        .unwrap();
    }
}
