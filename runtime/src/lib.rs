//! brook-runtime: the one place in brook that spawns tasks, sleeps, reads clocks and draws
//! randomness, so that swapping real tokio for the madsim simulator happens here and nowhere else.
//!
//! Both the broker's actors (`brook-actors`, which re-exports this crate as
//! `brook_actors::runtime`) and the client (`brook-client`) build on it; it depends on nothing
//! of brook's, so the client's dependency tree stays small. Besides the [`Runtime`] handle
//! (spawn, sleep, timeout, clock, seeded RNGs, blocking work) it holds the small actor layer
//! the broker is made of ([`Actor`], [`Addr`], [`Context`]): that layer spawns and keeps
//! timers, so it lives on this side of the seam.
//!
//! # Why not actix
//!
//! actix and actix-rt link the real tokio: under `--cfg madsim`, `Actor::start()` panics
//! (`spawn_local` outside a `LocalSet`), an actix `System` inside a simulated task hides a second
//! executor that madsim can neither interleave nor fault, and its timers hang. Patching actix-rt
//! onto madsim-tokio does not compile (no `LocalSet`, no `Runtime::block_on`, OS threads for
//! arbiters). So this module keeps actix's ideas — typed messages, [`Addr`], request/reply,
//! a [`Context`] with timers — and builds them on `tokio` imported as `madsim-tokio`: real tokio
//! in a normal build, the simulator under `--cfg madsim`.
//!
//! # Model
//!
//! - An [`Actor`] owns its state and handles one message type, one message at a time, in an
//!   async handler. [`Runtime::spawn_actor`] gives it a bounded mailbox (capacity required: no
//!   unbounded queue anywhere) and returns its [`Addr`].
//! - [`Addr::send`] waits for mailbox room (backpressure), [`Addr::try_send`] never waits
//!   (`Full` / `Closed`), [`Addr::ask`] is request/reply over a oneshot carried in the message as
//!   a [`Reply`]. Failed deliveries hand the message back.
//! - Lifecycle: an actor runs until a handler calls [`Context::stop`], or until its last `Addr`
//!   is dropped and its mailbox drained. The context and timers hold uncounted senders, so they
//!   never keep an actor alive; timers end with their actor.
//! - [`Runtime`] is a cheap `Clone` handle passed explicitly (no globals or thread-locals: under
//!   madsim those are shared by every simulated node). It must be used inside a tokio runtime or
//!   a madsim simulation; what it spawns belongs to the current (simulated) node.
//!
//! ```
//! use brook_runtime::{Actor, Context, Reply, Runtime};
//!
//! struct Counter {
//!     total: u64,
//! }
//!
//! enum CounterMessage {
//!     Add(u64),
//!     Total { reply: Reply<u64> },
//! }
//!
//! impl Actor for Counter {
//!     type Message = CounterMessage;
//!
//!     async fn handle(&mut self, message: CounterMessage, _context: &mut Context<Self>) {
//!         match message {
//!             CounterMessage::Add(amount) => self.total += amount,
//!             CounterMessage::Total { reply } => reply.send(self.total),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let runtime = Runtime::new(7);
//! let counter = runtime.spawn_actor(Counter { total: 0 }, 16);
//! counter.send(CounterMessage::Add(2)).await.expect("counter running");
//! assert_eq!(counter.ask(|reply| CounterMessage::Total { reply }).await, Ok(2));
//! # }
//! ```
//!
//! # Determinism
//!
//! Time ([`Runtime::now`], [`Runtime::wall_clock_ms`], sleeps, timers) goes through
//! madsim-tokio, so the simulator controls it. Randomness comes only from [`ChaCha8Rng`]s derived
//! from the seed given to [`Runtime::new`]: actor number `n` gets stream `n`,
//! [`Runtime::rng_for`]`(name)` gets a stream derived from the name. Given the same seed (and
//! madsim seed), a simulation replays the same draws and the same timer order.
//! [`Runtime::run_blocking`] runs its closure on tokio's blocking pool in a real build and inline
//! under madsim (see there).

// This crate is the swap point between real tokio and madsim: it alone may call the spawning,
// sleeping, clock and randomness functions that clippy.toml forbids everywhere else.
#![allow(clippy::disallowed_methods)]

mod actor;
mod address;
mod error;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;

use rand::SeedableRng;
use tokio::sync::mpsc;
use tracing::Instrument;

pub use self::actor::{Actor, Context, TimerHandle};
pub use self::address::{reply_pair, Addr, PendingReply, Reply};
pub use self::error::{AskError, Elapsed, SendError, TaskError, TrySendError};
pub use rand_chacha::ChaCha8Rng;
pub use std::time::Duration;
pub use tokio::time::Instant;

use self::address::Liveness;

/// Streams at or above this value are reserved for [`Runtime::rng_for`]; actor ids stay below.
const NAMED_STREAM_BIT: u64 = 1 << 63;

/// Handle to brook's runtime: spawning, time, blocking work and seeded randomness.
///
/// Cheap to clone; every clone shares the seed and the actor-id counter.
#[derive(Clone, Debug)]
pub struct Runtime {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    seed: u64,
    next_actor_id: AtomicU64,
    /// How long blocking work takes in simulated time (see [`Runtime::run_blocking`]).
    #[cfg_attr(not(madsim), allow(dead_code))]
    blocking_latency: std::ops::Range<Duration>,
}

/// The simulated duration of blocking work unless the harness draws another (0.1 to 5 ms).
const BLOCKING_LATENCY_DEFAULT: std::ops::Range<Duration> =
    Duration::from_micros(100)..Duration::from_millis(5);

impl Runtime {
    /// A runtime whose randomness all derives from `seed`. Under madsim the harness passes a
    /// seed derived from the simulation's; in a real build any seed will do (log it).
    pub fn new(seed: u64) -> Self {
        Runtime::with_blocking_latency(seed, BLOCKING_LATENCY_DEFAULT)
    }

    /// Like [`Runtime::new`], with the simulated duration of each blocking job (an fsync) drawn
    /// from `latency` under madsim. A simulation draws it per run, so that records appended but
    /// not yet synced sit above the high watermark for a while, as on a real disk. A real build
    /// ignores it: there the work takes what it takes. An empty range means no delay.
    pub fn with_blocking_latency(seed: u64, latency: std::ops::Range<Duration>) -> Self {
        Runtime {
            shared: Arc::new(Shared {
                seed,
                next_actor_id: AtomicU64::new(0),
                blocking_latency: latency,
            }),
        }
    }

    /// The root seed.
    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// Spawns `actor` with a mailbox of `mailbox_capacity` messages and returns its address.
    ///
    /// The actor runs [`Actor::started`] first, inside a tracing span `actor{name, id}`.
    ///
    /// # Panics
    ///
    /// If `mailbox_capacity` is zero (a programming or unvalidated-config error), or if called
    /// outside a tokio runtime / madsim simulation.
    pub fn spawn_actor<A: Actor>(&self, actor: A, mailbox_capacity: usize) -> Addr<A> {
        assert!(
            mailbox_capacity > 0,
            "an actor mailbox needs room for at least one message"
        );
        let actor_id = self.shared.next_actor_id.fetch_add(1, Ordering::Relaxed);
        assert!(actor_id < NAMED_STREAM_BIT, "actor ids exhausted");
        let mut rng = ChaCha8Rng::seed_from_u64(self.shared.seed);
        rng.set_stream(actor_id);

        let (sender, mailbox) = mpsc::channel(mailbox_capacity);
        let liveness = Arc::new(Liveness::default());
        // Created before the task starts so the count is never zero while the caller holds it.
        let address = Addr::new(sender.clone(), Arc::clone(&liveness), actor_id);
        let span = tracing::debug_span!("actor", name = %actor.name(), id = actor_id);
        let context = actor::new_context(sender, liveness, self.clone(), rng, actor_id);
        drop(tokio::spawn(
            actor::run_actor(actor, context, mailbox).instrument(span),
        ));
        address
    }

    /// Spawns a plain task (a connection's reader half, a timer). It inherits the caller's
    /// tracing span. Dropping the handle detaches the task; [`TaskHandle::abort`] ends it.
    pub fn spawn<F>(&self, future: F) -> TaskHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        TaskHandle {
            join: tokio::spawn(future.in_current_span()),
        }
    }

    /// Waits for `duration` (simulated under madsim, where sleeps last at least 1 ms).
    pub fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep(duration)
    }

    /// Waits until `deadline`.
    pub fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep_until(deadline)
    }

    /// Runs `future` for at most `duration` (counted from this call); on [`Elapsed`] the future
    /// is dropped. The returned future is `Send` when `future` is.
    pub fn timeout<F: Future>(
        &self,
        duration: Duration,
        future: F,
    ) -> impl Future<Output = Result<F::Output, Elapsed>> {
        with_timeout(duration, future)
    }

    /// The monotonic clock (simulated under madsim).
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// Milliseconds since the Unix epoch (simulated under madsim), the unit and type of record
    /// timestamps on the wire. Negative if the clock is set before 1970.
    pub fn wall_clock_ms(&self) -> i64 {
        let now = system_time_now();
        match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
        }
    }

    /// A deterministic RNG for `name`: the same seed and name always give the same sequence,
    /// distinct from every actor's. Give each use its own name.
    pub fn rng_for(&self, name: &str) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.shared.seed);
        rng.set_stream(NAMED_STREAM_BIT | (fnv1a_64(name.as_bytes()) >> 1));
        rng
    }

    /// Runs blocking work (fsync, a large read) without stalling the async workers.
    ///
    /// Real build: on tokio's blocking pool (`spawn_blocking`); a panic in `work` comes back as
    /// [`TaskError::Panicked`]. Under madsim: inline, on the simulation's single thread. madsim
    /// has no blocking pool (its deprecated `spawn_blocking` merely wraps the closure in a
    /// task), and the simulated disk's "blocking" calls are in-memory and instant, so running
    /// inline keeps replay exact; a simulated delay first models the time such work takes
    /// (0.1 to 5 ms, or the range given to [`Runtime::with_blocking_latency`]). A panic fails
    /// the simulation with its seed, which is what we want.
    pub async fn run_blocking<F, R>(&self, work: F) -> Result<R, TaskError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        #[cfg(not(madsim))]
        {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(TaskError::from)
        }
        #[cfg(madsim)]
        {
            // Blocking work takes time on a real machine (an fsync: milliseconds); model it in
            // simulated time so the windows it opens (appended but not yet durable) exist in
            // simulation too. Drawn from madsim's seeded RNG.
            let latency = &self.shared.blocking_latency;
            if !latency.is_empty() {
                let delay = rand::Rng::gen_range(&mut madsim::rand::thread_rng(), latency.clone());
                tokio::time::sleep(delay).await;
            }
            Ok(work())
        }
    }
}

/// Runs short blocking work (an fsync of a few bytes) right here, in an actor's handler that
/// must not go on before it is done (Raft: a vote is durable before it is sent), without
/// stalling the other tasks of this worker thread.
///
/// Real build, on a multi-threaded runtime: `tokio::task::block_in_place` (the worker hands
/// its other tasks to another thread while this one blocks; with thousands of partitions
/// electing at once, inline fsyncs on the two workers otherwise starve the peer links and
/// the ticker for seconds). Elsewhere (a current-thread runtime in tests, a blocking-pool
/// thread, no runtime) and under madsim (the simulated disk is in memory): just `work()`.
pub fn blocking_section<R>(work: impl FnOnce() -> R) -> R {
    #[cfg(not(madsim))]
    {
        let multi_thread = tokio::runtime::Handle::try_current().is_ok_and(|handle| {
            handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        });
        if multi_thread {
            return tokio::task::block_in_place(work);
        }
        work()
    }
    #[cfg(madsim)]
    {
        work()
    }
}

/// A fresh seed for a [`Runtime`] whose user gave none (a client in a real application).
///
/// Real build: drawn from the operating system's entropy (through `rand`). Under madsim: from
/// the simulation's seeded RNG, so a simulated run that takes a default seed still replays
/// exactly. Log or record it where a run must be reproducible.
pub fn entropy_seed() -> u64 {
    #[cfg(not(madsim))]
    {
        rand::random()
    }
    #[cfg(madsim)]
    {
        rand::Rng::gen(&mut madsim::rand::thread_rng())
    }
}

/// `tokio::time::timeout` with our error type; `Send` whenever `future` is, on madsim too
/// (madsim's own timeout future makes no such promise).
pub(crate) fn with_timeout<F: Future>(
    duration: Duration,
    future: F,
) -> impl Future<Output = Result<F::Output, Elapsed>> {
    let sleep = tokio::time::sleep(duration);
    async move {
        tokio::select! {
            biased;
            output = future => Ok(output),
            () = sleep => Err(Elapsed),
        }
    }
}

/// The wall clock: madsim's simulated one inside a simulation.
#[cfg(madsim)]
fn system_time_now() -> std::time::SystemTime {
    match madsim::time::TimeHandle::try_current() {
        Some(time) => time.now_time(),
        None => std::time::SystemTime::now(),
    }
}

/// The wall clock.
#[cfg(not(madsim))]
fn system_time_now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// FNV-1a: a fixed, platform-independent hash (std's hashers promise no stability).
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// A spawned task: await it for its output, or abort it. Dropping it detaches the task.
#[derive(Debug)]
pub struct TaskHandle<T> {
    join: tokio::task::JoinHandle<T>,
}

impl<T> TaskHandle<T> {
    /// Cancels the task at its next await point; awaiting the handle then gives
    /// [`TaskError::Cancelled`] (unless it had already finished).
    pub fn abort(&self) {
        self.join.abort();
    }

    /// Whether the task has finished (returned, panicked or been aborted).
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

impl<T> Future for TaskHandle<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.join)
            .poll(context)
            .map(|result| result.map_err(TaskError::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn rng_streams_are_deterministic_and_distinct() {
        let runtime = Runtime::new(7);
        let draw = |mut rng: ChaCha8Rng| rng.next_u64();
        assert_eq!(
            draw(runtime.rng_for("election")),
            draw(Runtime::new(7).rng_for("election"))
        );
        assert_ne!(
            draw(runtime.rng_for("election")),
            draw(runtime.rng_for("jitter"))
        );
        assert_ne!(
            draw(runtime.rng_for("election")),
            draw(Runtime::new(8).rng_for("election"))
        );
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    /// Outside a simulation a default seed is fresh each time (two equal draws: 2^-64).
    #[cfg(not(madsim))]
    #[test]
    fn entropy_seeds_differ() {
        assert_ne!(entropy_seed(), entropy_seed());
    }

    #[test]
    fn wall_clock_is_after_2020() {
        let runtime = Runtime::new(0);
        assert!(runtime.wall_clock_ms() > 1_577_836_800_000);
    }
}
