//! The actor runtime's contract. These run on real tokio in a normal build and, unchanged, on
//! the simulator under `--cfg madsim` (madsim-tokio's `#[tokio::test]` builds a simulation and
//! ignores the flavor; on real tokio, `multi_thread` tests exercise cross-thread wake-ups).

use std::time::Duration;

use brook_runtime::{
    Actor, Addr, AskError, Context, Reply, Runtime, TaskError, TimerHandle, TrySendError,
};
use rand::RngCore;
use tokio::sync::{mpsc, oneshot};

/// Generous bound for "this should have happened by now" on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// A test actor that records what it handles and reports events to the test.
struct Recorder {
    log: Vec<u64>,
    events: mpsc::Sender<Event>,
    interval: Option<TimerHandle>,
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Started { draw: u64 },
    Tick(u64),
    Stopped { log: Vec<u64> },
}

enum Message {
    Record(u64),
    Log {
        reply: Reply<Vec<u64>>,
    },
    /// Blocks the actor: signals `entered`, then waits for `gate` to open.
    Block {
        entered: oneshot::Sender<()>,
        gate: oneshot::Receiver<()>,
    },
    /// Replies, then stops the actor.
    Stop {
        reply: Reply<()>,
    },
    StopNow,
    /// Drops the reply unanswered.
    Ignore {
        _reply: Reply<u64>,
    },
    After {
        delay: Duration,
        tick: u64,
    },
    StartInterval {
        period: Duration,
        reply: Reply<()>,
    },
    CancelInterval {
        reply: Reply<bool>,
    },
    Tick(u64),
}

impl Recorder {
    fn new(events: mpsc::Sender<Event>) -> Self {
        Recorder {
            log: Vec::new(),
            events,
            interval: None,
        }
    }

    async fn report(&self, event: Event) {
        // The test may have finished listening; nothing to do then.
        let _ = self.events.send(event).await;
    }
}

impl Actor for Recorder {
    type Message = Message;

    async fn started(&mut self, context: &mut Context<Self>) {
        let draw = context.rng().next_u64();
        self.report(Event::Started { draw }).await;
    }

    async fn handle(&mut self, message: Message, context: &mut Context<Self>) {
        match message {
            Message::Record(value) => self.log.push(value),
            Message::Log { reply } => reply.send(self.log.clone()),
            Message::Block { entered, gate } => {
                let _ = entered.send(());
                let _ = gate.await;
            }
            Message::Stop { reply } => {
                reply.send(());
                context.stop();
            }
            Message::StopNow => context.stop(),
            Message::Ignore { .. } => {}
            Message::After { delay, tick } => {
                context.run_after(delay, Message::Tick(tick));
            }
            Message::StartInterval { period, reply } => {
                let mut count = 0;
                self.interval = Some(context.run_interval(period, move || {
                    count += 1;
                    Message::Tick(count)
                }));
                reply.send(());
            }
            Message::CancelInterval { reply } => {
                let cancelled = self.interval.take().map(|timer| timer.cancel()).is_some();
                reply.send(cancelled);
            }
            Message::Tick(tick) => self.report(Event::Tick(tick)).await,
        }
    }

    async fn stopped(&mut self, _context: &mut Context<Self>) {
        self.report(Event::Stopped {
            log: self.log.clone(),
        })
        .await;
    }
}

fn spawn_recorder(runtime: &Runtime, capacity: usize) -> (Addr<Recorder>, mpsc::Receiver<Event>) {
    let (events, receiver) = mpsc::channel(64);
    (
        runtime.spawn_actor(Recorder::new(events), capacity),
        receiver,
    )
}

async fn next_event(runtime: &Runtime, events: &mut mpsc::Receiver<Event>) -> Event {
    runtime
        .timeout(PATIENCE, events.recv())
        .await
        .expect("an event within the patience bound")
        .expect("the event channel is open")
}

/// Blocks the actor on a gate and returns the key that opens it, once the actor is inside.
async fn block(address: &Addr<Recorder>) -> oneshot::Sender<()> {
    let (entered_sender, entered) = oneshot::channel();
    let (key, gate) = oneshot::channel();
    address
        .send(Message::Block {
            entered: entered_sender,
            gate,
        })
        .await
        .expect("actor running");
    entered.await.expect("actor entered the block");
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_ask_round_trip() {
    let runtime = Runtime::new(1);
    let (address, mut events) = spawn_recorder(&runtime, 8);
    assert!(matches!(
        next_event(&runtime, &mut events).await,
        Event::Started { .. }
    ));

    address.send(Message::Record(2)).await.expect("send");
    address.try_send(Message::Record(3)).expect("try_send");
    let log = address.ask(|reply| Message::Log { reply }).await;
    assert_eq!(log, Ok(vec![2, 3]));

    let clone = address.clone();
    assert!(clone.same_actor(&address));
    assert_eq!(
        clone
            .ask_timeout(PATIENCE, |reply| Message::Log { reply })
            .await,
        Ok(vec![2, 3])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_one_sender_arrive_in_order() {
    let runtime = Runtime::new(2);
    // A small mailbox, so the sender repeatedly waits for room while the order must hold.
    let (address, _events) = spawn_recorder(&runtime, 3);
    for value in 0..200 {
        address.send(Message::Record(value)).await.expect("send");
    }
    let log = address
        .ask(|reply| Message::Log { reply })
        .await
        .expect("ask");
    assert_eq!(log, (0..200).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mailbox_rejects_try_send_and_makes_send_wait() {
    let runtime = Runtime::new(3);
    let (address, _events) = spawn_recorder(&runtime, 2);
    let key = block(&address).await;

    // The actor is busy and its mailbox (capacity 2) is empty: two fit, the third does not.
    address
        .try_send(Message::Record(1))
        .expect("room for the first");
    address
        .try_send(Message::Record(2))
        .expect("room for the second");
    assert_eq!(address.mailbox_room(), 0);
    match address.try_send(Message::Record(3)) {
        Err(error @ TrySendError::Full(_)) => {
            assert!(error.is_full());
            assert!(matches!(error.into_message(), Message::Record(3)));
        }
        other => panic!("expected Full, got {other:?}"),
    }

    // `send` waits while the mailbox stays full...
    let waited = runtime
        .timeout(Duration::from_millis(50), address.send(Message::Record(3)))
        .await;
    assert!(waited.is_err(), "send must wait for room");

    // ...and completes once the actor makes room.
    let sender = address.clone();
    let pending = runtime.spawn(async move { sender.send(Message::Record(3)).await.is_ok() });
    key.send(()).expect("actor waits on the gate");
    assert_eq!(runtime.timeout(PATIENCE, pending).await, Ok(Ok(true)));
    let log = address
        .ask(|reply| Message::Log { reply })
        .await
        .expect("ask");
    assert_eq!(log, vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_actor_fails_send_and_ask_cleanly() {
    let runtime = Runtime::new(4);
    let (address, mut events) = spawn_recorder(&runtime, 4);
    assert!(matches!(
        next_event(&runtime, &mut events).await,
        Event::Started { .. }
    ));
    address.send(Message::Record(7)).await.expect("send");

    assert_eq!(address.ask(|reply| Message::Stop { reply }).await, Ok(()));
    runtime
        .timeout(PATIENCE, address.closed())
        .await
        .expect("actor closes its mailbox");
    assert_eq!(
        next_event(&runtime, &mut events).await,
        Event::Stopped { log: vec![7] }
    );

    assert!(address.is_closed());
    let error = address
        .send(Message::Record(8))
        .await
        .expect_err("send to a stopped actor");
    assert!(matches!(error.into_message(), Message::Record(8)));
    assert!(matches!(
        address.try_send(Message::Record(9)),
        Err(TrySendError::Closed(_))
    ));
    assert_eq!(
        address.ask(|reply| Message::Log { reply }).await,
        Err(AskError::Closed)
    );
}

#[tokio::test]
async fn requests_queued_at_stop_and_dropped_replies_give_no_reply() {
    let runtime = Runtime::new(5);
    let (address, _events) = spawn_recorder(&runtime, 4);

    assert_eq!(
        address.ask(|_reply| Message::Ignore { _reply }).await,
        Err(AskError::NoReply)
    );

    let key = block(&address).await;
    address.try_send(Message::StopNow).expect("room");
    let asker = address.clone();
    let queued = runtime.spawn(async move { asker.ask(|reply| Message::Log { reply }).await });
    while address.mailbox_room() > 2 {
        runtime.sleep(Duration::from_millis(1)).await;
    }
    key.send(()).expect("actor waits on the gate");
    assert_eq!(
        runtime.timeout(PATIENCE, queued).await,
        Ok(Ok(Err(AskError::NoReply)))
    );
}

#[tokio::test]
async fn ask_timeout_gives_up() {
    let runtime = Runtime::new(6);
    let (address, _events) = spawn_recorder(&runtime, 4);
    let _key = block(&address).await;
    // In a spawned task: the future must be `Send` on both real tokio and madsim.
    let asker = address.clone();
    let answer = runtime.spawn(async move {
        asker
            .ask_timeout(Duration::from_millis(20), |reply| Message::Log { reply })
            .await
    });
    assert_eq!(answer.await, Ok(Err(AskError::Timeout)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_address_drains_then_stops() {
    let runtime = Runtime::new(7);
    let (address, mut events) = spawn_recorder(&runtime, 8);
    for value in 1..=3 {
        address.send(Message::Record(value)).await.expect("send");
    }
    let clone = address.clone();
    drop(address);
    clone
        .send(Message::Record(4))
        .await
        .expect("a clone still reaches the actor");
    drop(clone);
    assert!(matches!(
        next_event(&runtime, &mut events).await,
        Event::Started { .. }
    ));
    assert_eq!(
        next_event(&runtime, &mut events).await,
        Event::Stopped {
            log: vec![1, 2, 3, 4]
        }
    );
}

#[tokio::test]
async fn run_after_delivers_after_the_delay() {
    let runtime = Runtime::new(8);
    let (address, mut events) = spawn_recorder(&runtime, 8);
    assert!(matches!(
        next_event(&runtime, &mut events).await,
        Event::Started { .. }
    ));

    let start = runtime.now();
    let delay = Duration::from_millis(30);
    address
        .send(Message::After { delay, tick: 42 })
        .await
        .expect("send");
    assert_eq!(next_event(&runtime, &mut events).await, Event::Tick(42));
    assert!(runtime.now() - start >= delay);
}

#[tokio::test]
async fn run_interval_ticks_until_cancelled() {
    let runtime = Runtime::new(9);
    let (address, mut events) = spawn_recorder(&runtime, 8);
    assert!(matches!(
        next_event(&runtime, &mut events).await,
        Event::Started { .. }
    ));

    let period = Duration::from_millis(5);
    address
        .ask(|reply| Message::StartInterval { period, reply })
        .await
        .expect("interval started");
    for expected in 1..=3 {
        assert_eq!(
            next_event(&runtime, &mut events).await,
            Event::Tick(expected)
        );
    }
    assert_eq!(
        address.ask(|reply| Message::CancelInterval { reply }).await,
        Ok(true)
    );
    // Ticks queued before the cancel are handled before this barrier returns.
    address
        .ask(|reply| Message::Log { reply })
        .await
        .expect("barrier");
    while events.try_recv().is_ok() {}

    runtime.sleep(period * 10).await;
    assert!(events.try_recv().is_err(), "no tick after cancel");
}

#[tokio::test]
async fn actor_rng_is_seeded_by_runtime_seed_and_spawn_order() {
    async fn first_draws(seed: u64) -> Vec<u64> {
        let runtime = Runtime::new(seed);
        let mut draws = Vec::new();
        for _ in 0..3 {
            let (_address, mut events) = spawn_recorder(&runtime, 1);
            match next_event(&runtime, &mut events).await {
                Event::Started { draw } => draws.push(draw),
                other => panic!("expected Started, got {other:?}"),
            }
        }
        draws
    }
    let draws = first_draws(10).await;
    assert_eq!(draws, first_draws(10).await);
    assert_ne!(draws, first_draws(11).await);
    assert!(
        draws[0] != draws[1] && draws[1] != draws[2],
        "each actor has its own stream"
    );
}

#[tokio::test]
async fn run_blocking_returns_the_closure_value() {
    let runtime = Runtime::new(12);
    let data = [1_u64, 2, 3];
    assert_eq!(
        runtime.run_blocking(move || data.iter().sum::<u64>()).await,
        Ok(6)
    );
}

#[cfg(not(madsim))]
#[tokio::test]
async fn run_blocking_reports_a_panic() {
    let runtime = Runtime::new(13);
    let result = runtime
        .run_blocking(|| -> u64 { panic!("disk on fire") })
        .await;
    assert_eq!(result, Err(TaskError::Panicked));
}

#[tokio::test]
async fn tasks_return_values_and_can_be_aborted() {
    let runtime = Runtime::new(14);
    assert_eq!(runtime.spawn(async { 5 }).await, Ok(5));

    let sleeper = runtime.clone();
    let task = runtime.spawn(async move { sleeper.sleep(PATIENCE * 100).await });
    task.abort();
    assert_eq!(task.await, Err(TaskError::Cancelled));

    let slow = runtime.sleep(Duration::from_secs(3600));
    assert!(runtime
        .timeout(Duration::from_millis(5), slow)
        .await
        .is_err());
}

#[tokio::test]
async fn clocks_read_through_the_runtime() {
    let runtime = Runtime::new(15);
    let before = runtime.now();
    runtime.sleep(Duration::from_millis(10)).await;
    assert!(runtime.now() - before >= Duration::from_millis(10));
    // After 2020-01-01 on both the real and the simulated clock (madsim starts around 2022).
    assert!(runtime.wall_clock_ms() > 1_577_836_800_000);
}
