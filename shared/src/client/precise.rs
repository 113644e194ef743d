//! Waits precise to tens of microseconds, for lingers shorter than tokio's millisecond timer tick.
//!
//! tokio's timer rounds every deadline up to its next millisecond tick, so a 0.5 ms linger would last up to
//! 1.5 ms. On Linux the wait is a `timerfd` registered with the runtime's own poller: the runtime thread
//! wakes from `epoll_wait` at the deadline (a high-resolution timer, without the slack the kernel adds to a
//! thread's sleep), and no other thread is involved. Elsewhere, or if no timerfd can be made, it is a sleep
//! on tokio's blocking pool, which costs two hand-offs between threads per wait.

use std::time::Duration;

#[cfg(target_os = "linux")]
type TimerFd = tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>;

pub(crate) struct PreciseTimer {
    #[cfg(target_os = "linux")]
    fd: Option<TimerFd>,
}

impl PreciseTimer {
    /// Must be called within a tokio runtime with I/O enabled (the timer registers with its poller).
    pub(crate) fn new() -> PreciseTimer {
        #[cfg(target_os = "linux")]
        {
            let fd = timerfd()
                .inspect_err(|error| tracing::debug!(%error, "no timerfd: precise waits sleep on the blocking pool"))
                .ok();
            PreciseTimer { fd }
        }
        #[cfg(not(target_os = "linux"))]
        PreciseTimer {}
    }

    /// Waits `wait`. Cancel-safe: each call sets the timer afresh, so an expiry of a cancelled wait does not
    /// end a later one early.
    pub(crate) async fn sleep(&self, wait: Duration) {
        if wait.is_zero() {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            match timerfd_sleep(fd, wait).await {
                Ok(()) => return,
                Err(error) => tracing::debug!(%error, "timerfd wait failed: sleeping on the blocking pool"),
            }
        }
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(wait)).await;
    }
}

#[cfg(target_os = "linux")]
fn timerfd() -> std::io::Result<TimerFd> {
    use rustix::time::{timerfd_create, TimerfdClockId, TimerfdFlags};
    let fd = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)?;
    // SAFETY: the `OwnedFd` is moved into the `AsyncFd`, which owns it from then on: the descriptor stays open
    // and names the same timer until the `AsyncFd` is dropped.
    let registered = unsafe { TimerFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
    registered.map_err(|error| error.into_parts().1)
}

#[cfg(target_os = "linux")]
async fn timerfd_sleep(fd: &TimerFd, wait: Duration) -> std::io::Result<()> {
    use rustix::time::{timerfd_settime, Itimerspec, TimerfdTimerFlags, Timespec};
    let value = Timespec { tv_sec: wait.as_secs().try_into().unwrap_or(i64::MAX), tv_nsec: wait.subsec_nanos().into() };
    let once = Itimerspec { it_interval: Timespec { tv_sec: 0, tv_nsec: 0 }, it_value: value };
    // Setting the timer also clears the expiries not yet read (those of a cancelled wait).
    timerfd_settime(fd.get_ref(), TimerfdTimerFlags::empty(), &once)?;
    loop {
        let mut ready = fd.readable().await?;
        let mut expiries = [0u8; 8];
        match rustix::io::read(fd.get_ref(), &mut expiries) {
            Ok(_) => return Ok(()),
            // Readiness left over from an earlier wait: the timer has not expired yet.
            Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
            Err(error) => return Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use futures_util::FutureExt;

    use super::PreciseTimer;

    #[tokio::test]
    async fn a_wait_lasts_at_least_as_long_as_asked() {
        let timer = PreciseTimer::new();
        #[cfg(target_os = "linux")]
        assert!(timer.fd.is_some(), "a timerfd can be made here");
        for micros in [1, 300, 800, 1_500] {
            let asked = Duration::from_micros(micros);
            let started = Instant::now();
            timer.sleep(asked).await;
            assert!(started.elapsed() >= asked, "a wait of {asked:?} ended after {:?}", started.elapsed());
        }
    }

    #[tokio::test]
    async fn an_expiry_of_a_cancelled_wait_does_not_end_the_next_wait() {
        let timer = PreciseTimer::new();
        // A wait cancelled after it set the timer...
        assert!(timer.sleep(Duration::from_micros(100)).now_or_never().is_none());
        // ...whose timer then expires unread, and the runtime sees the descriptor readable.
        std::thread::sleep(Duration::from_millis(2));
        tokio::task::yield_now().await;
        let asked = Duration::from_millis(20);
        let started = Instant::now();
        timer.sleep(asked).await;
        assert!(started.elapsed() >= asked, "a wait of {asked:?} ended after {:?}", started.elapsed());
    }
}
