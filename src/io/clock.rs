//! The time the daemon decides by. The service reads the system clock; tests run the
//! daemon on tokio's paused clock, through months of virtual time in milliseconds.

use time::OffsetDateTime;

pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Wall time that moves with the runtime's clock from `start`. With tokio's time paused
/// (a test), it moves only when the runtime advances its timers: a daemon that sleeps
/// until a renewal two months away is woken at once, at that virtual time.
pub struct RuntimeClock {
    start: OffsetDateTime,
    at: tokio::time::Instant,
}

impl RuntimeClock {
    /// A clock that reads `start` now. Must be made inside the runtime.
    pub fn starting_at(start: OffsetDateTime) -> RuntimeClock {
        RuntimeClock {
            start,
            at: tokio::time::Instant::now(),
        }
    }
}

impl Clock for RuntimeClock {
    fn now(&self) -> OffsetDateTime {
        self.start + (tokio::time::Instant::now() - self.at)
    }
}
