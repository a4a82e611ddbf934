//! The `Actor` trait, its `Context`, and the loop that drives one actor.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::address::{Addr, Liveness};
use super::{Runtime, TaskHandle};

/// An actor: state owned by one task, changed only by handling its messages one at a time.
///
/// Handlers are `async` (implement them with `async fn`): the actor handles nothing else until
/// the handler's future completes, so an `await` inside a handler (on storage, on another actor's
/// reply) delays the whole mailbox. Work that must not block the mailbox belongs in a task
/// spawned with [`Runtime::spawn`] that reports back with a message.
pub trait Actor: Send + Sized + 'static {
    /// The one message type this actor handles (usually an enum; requests carry a
    /// [`Reply`](super::Reply)).
    type Message: Send + 'static;

    /// Handles one message.
    fn handle(
        &mut self,
        message: Self::Message,
        context: &mut Context<Self>,
    ) -> impl Future<Output = ()> + Send;

    /// Runs once before the first message (start timers here).
    fn started(&mut self, _context: &mut Context<Self>) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Runs once after the actor has stopped taking messages; its mailbox is already closed.
    fn stopped(&mut self, _context: &mut Context<Self>) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The name in this actor's tracing span.
    fn name(&self) -> String {
        // `brook_actors::replica::Replica<Disk>` -> `Replica`.
        let path = std::any::type_name::<Self>();
        let without_generics = path.split('<').next().unwrap_or(path);
        without_generics
            .rsplit("::")
            .next()
            .unwrap_or(without_generics)
            .to_owned()
    }
}

/// What a handler knows about its actor: its address, the clock, its RNG, its timers.
pub struct Context<A: Actor> {
    /// Uncounted sender: the context must not keep its own actor alive (see [`Addr`]).
    sender: mpsc::Sender<A::Message>,
    liveness: Arc<Liveness>,
    runtime: Runtime,
    rng: ChaCha8Rng,
    actor_id: u64,
    stopping: bool,
}

impl<A: Actor> Context<A> {
    /// A new address of this actor, to hand to others. (An actor that stores its own address
    /// keeps itself alive until it calls [`stop`](Self::stop).)
    pub fn address(&self) -> Addr<A> {
        Addr::new(
            self.sender.clone(),
            Arc::clone(&self.liveness),
            self.actor_id,
        )
    }

    /// This actor's id, unique within its runtime and in spawn order.
    pub fn actor_id(&self) -> u64 {
        self.actor_id
    }

    /// Stops the actor once the current handler returns: its mailbox closes, messages still in
    /// it are dropped (their askers get [`AskError::NoReply`](super::AskError::NoReply)), timers
    /// end, then [`Actor::stopped`] runs.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Whether [`stop`](Self::stop) has been called.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// The runtime, to spawn tasks or other actors.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The monotonic clock (simulated under madsim).
    pub fn now(&self) -> Instant {
        self.runtime.now()
    }

    /// Milliseconds since the Unix epoch, for record timestamps (simulated under madsim).
    pub fn wall_clock_ms(&self) -> i64 {
        self.runtime.wall_clock_ms()
    }

    /// This actor's deterministic RNG: derived from the runtime's seed and the actor's id.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Delivers `message` to this actor after `delay`. The timer ends with the actor; cancel it
    /// earlier with the returned handle (dropping the handle does not cancel).
    pub fn run_after(&self, delay: Duration, message: A::Message) -> TimerHandle {
        let sender = self.sender.clone();
        let runtime = self.runtime.clone();
        let task = self.runtime.spawn(async move {
            // biased: deterministic in simulation (unbiased select! draws from a process-wide
            // counter).
            tokio::select! {
                biased;
                () = sender.closed() => {}
                () = runtime.sleep(delay) => {
                    // A closed mailbox means the actor stopped: the message has no one to go to.
                    let _ = sender.send(message).await;
                }
            }
        });
        TimerHandle { task }
    }

    /// Delivers `make_message()` to this actor every `period`, the first after one period.
    ///
    /// Fixed delay: the next period starts once the previous message is in the mailbox, so a
    /// full mailbox slows the timer down instead of queueing a burst of ticks. The timer ends
    /// with the actor or when cancelled.
    pub fn run_interval<F>(&self, period: Duration, mut make_message: F) -> TimerHandle
    where
        F: FnMut() -> A::Message + Send + 'static,
    {
        let sender = self.sender.clone();
        let runtime = self.runtime.clone();
        let task = self.runtime.spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    () = sender.closed() => return,
                    () = runtime.sleep(period) => {}
                }
                if sender.send(make_message()).await.is_err() {
                    return;
                }
            }
        });
        TimerHandle { task }
    }
}

/// Cancels a timer started with [`Context::run_after`] or [`Context::run_interval`].
#[derive(Debug)]
pub struct TimerHandle {
    task: TaskHandle<()>,
}

impl TimerHandle {
    /// Stops the timer. A message it already delivered stays in the mailbox: actors that must
    /// ignore a late tick should tag timer messages (for example with a generation number).
    pub fn cancel(&self) {
        self.task.abort();
    }

    /// Whether the timer has fired for the last time or was cancelled.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Drives one actor until it stops. Spawned by [`Runtime::spawn_actor`].
pub(crate) async fn run_actor<A: Actor>(
    mut actor: A,
    mut context: Context<A>,
    mut mailbox: mpsc::Receiver<A::Message>,
) {
    tracing::debug!("actor started");
    actor.started(&mut context).await;
    while !context.stopping {
        let message = if context.liveness.address_count() == 0 {
            // Nobody can send any more (only our own timers): finish what is queued, then stop.
            match mailbox.try_recv() {
                Ok(message) => message,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                biased;
                message = mailbox.recv() => match message {
                    Some(message) => message,
                    // Unreachable while the context holds a sender; stop rather than spin.
                    None => break,
                },
                () = context.liveness.released() => continue,
            }
        };
        actor.handle(message, &mut context).await;
    }
    // Close first so senders fail fast, then drop what is queued so askers hear NoReply now
    // rather than after the stopped hook.
    mailbox.close();
    while mailbox.try_recv().is_ok() {}
    actor.stopped(&mut context).await;
    tracing::debug!("actor stopped");
}

/// Builds the context of a newly spawned actor.
pub(crate) fn new_context<A: Actor>(
    sender: mpsc::Sender<A::Message>,
    liveness: Arc<Liveness>,
    runtime: Runtime,
    rng: ChaCha8Rng,
    actor_id: u64,
) -> Context<A> {
    Context {
        sender,
        liveness,
        runtime,
        rng,
        actor_id,
        stopping: false,
    }
}
