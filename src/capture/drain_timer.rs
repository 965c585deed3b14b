//! A sleep with microsecond precision for the ring reader's drain pacing.
//!
//! tokio's timer wheel ticks every millisecond and rounds a sleep up to the
//! next tick, so a "1 ms" drain interval is 1–2 ms and anything shorter is
//! not possible. A `timerfd` is an hrtimer: it fires on time, on the
//! reader's own CPU, and wakes only the reader — unlike a wakeup forced by
//! the TC program, an irq_work on the workload's CPU charged to the packet
//! that forced it. Only sleeps under a millisecond (the busy mode's drains)
//! use it: the millisecond intervals keep tokio's timer, with which they
//! were measured (a timerfd's exact 1 ms meant ~10% more drains and agent
//! CPU per request at the same traffic; README, "Session 30").
use anyhow::{Context, Result};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// `TimerFd` with the `AsRawFd` that `AsyncFd` needs.
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// One-shot CLOCK_MONOTONIC timer registered with the tokio reactor, or
/// tokio's timer alone when no sleep will be shorter than a millisecond
/// (CNFLOW_RING_BUSY_DRAIN_US off, the default: no timerfd is created).
pub struct DrainTimer(Option<AsyncFd<Fd>>);

impl DrainTimer {
    /// `sub_ms`: some sleeps will be shorter than a millisecond.
    pub fn new(sub_ms: bool) -> Result<Self> {
        if !sub_ms {
            return Ok(Self(None));
        }
        let fd = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)
            .context("creating the ring reader's timerfd")?;
        // SAFETY: `Fd` owns the timerfd; it stays open, the same
        // descriptor, until the AsyncFd (its only owner) is dropped.
        let afd = unsafe { AsyncFd::register_with_interest(Fd(fd), tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)
            .context("registering the ring reader's timerfd")?;
        Ok(Self(Some(afd)))
    }

    /// Resolves `d` from now (on tokio's timer from a millisecond up, or
    /// without the timerfd). A sleep dropped before it fires (a ring wakeup
    /// won the race) disarms the timerfd, which would otherwise fire once
    /// for nothing during a later, longer sleep.
    pub async fn sleep(&mut self, d: Duration) -> Result<()> {
        let Some(afd) = self.0.as_ref().filter(|_| d < Duration::from_millis(1)) else {
            tokio::time::sleep(d).await;
            return Ok(());
        };
        // A zero TimeSpec would disarm the timer instead.
        let d = d.max(Duration::from_micros(1));
        let timer = &afd.get_ref().0;
        timer
            .set(Expiration::OneShot(TimeSpec::from_duration(d)), TimerSetTimeFlags::empty())
            .context("arming the ring reader's timerfd")?;
        let mut armed = Armed(Some(timer));
        loop {
            let mut guard = afd.readable().await?;
            // Reading consumes the expiry; EAGAIN = readiness left over from
            // a previous arming that was replaced before it fired.
            match nix::unistd::read(timer.as_fd(), &mut [0u8; 8]) {
                Ok(_) => {
                    armed.0 = None;
                    return Ok(());
                }
                Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                Err(e) => return Err(e).context("reading the ring reader's timerfd"),
            }
        }
    }
}

/// Disarms the timerfd when a sleep ends before it fired.
struct Armed<'a>(Option<&'a TimerFd>);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            // Nothing to do on failure: the worst case is one early drain.
            let _ = t.unset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn sleeps_for_less_than_a_millisecond() {
        let mut t = DrainTimer::new(true).unwrap();
        // Arm once and replace it: the first arming must not end the second sleep early.
        let _ = tokio::time::timeout(Duration::from_micros(50), t.sleep(Duration::from_secs(5))).await;
        let start = Instant::now();
        t.sleep(Duration::from_micros(300)).await.unwrap();
        let took = start.elapsed();
        assert!(took >= Duration::from_micros(300), "{took:?}");
        // Generous: only that it is not tokio's 1 ms tick rounded up.
        assert!(took < Duration::from_millis(50), "{took:?}");
    }

    #[tokio::test]
    async fn a_sleep_that_loses_the_race_is_disarmed() {
        let mut t = DrainTimer::new(true).unwrap();
        let _ = tokio::time::timeout(Duration::from_micros(50), t.sleep(Duration::from_micros(900))).await;
        let afd = t.0.as_ref().unwrap();
        assert_eq!(afd.get_ref().0.get().unwrap(), None, "still armed after the sleep was dropped");
        // And no expiry comes later either.
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(nix::unistd::read(afd.get_ref().0.as_fd(), &mut [0u8; 8]), Err(nix::errno::Errno::EAGAIN));
    }

    #[tokio::test]
    async fn without_sub_millisecond_sleeps_no_timerfd() {
        let mut t = DrainTimer::new(false).unwrap();
        assert!(t.0.is_none());
        let start = Instant::now();
        t.sleep(Duration::from_micros(300)).await.unwrap();
        assert!(start.elapsed() >= Duration::from_micros(300));
    }
}
