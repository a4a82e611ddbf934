//! Addresses: the only way to reach an actor.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};

use super::error::{AskError, SendError, TrySendError};
use super::Actor;

/// Counts the live [`Addr`]s of one actor, so the actor can stop once nobody can reach it.
///
/// The mailbox's own sender count cannot serve: the actor's [`Context`](super::Context) and its
/// timers hold senders too, and those must not keep the actor alive.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    addresses: AtomicUsize,
    /// Signalled when `addresses` drops to zero. `Notify` keeps one permit, so a signal sent while
    /// the actor is busy in a handler is not lost.
    released: Notify,
}

impl Liveness {
    pub(crate) fn address_count(&self) -> usize {
        self.addresses.load(Ordering::Acquire)
    }

    pub(crate) async fn released(&self) {
        self.released.notified().await;
    }
}

/// The address of a running actor: a cheap, cloneable handle to its bounded mailbox.
///
/// An actor runs while at least one `Addr` to it exists (or until it stops itself): when the last
/// one is dropped, the actor handles what is already in its mailbox, then stops.
pub struct Addr<A: Actor> {
    sender: mpsc::Sender<A::Message>,
    liveness: Arc<Liveness>,
    actor_id: u64,
}

impl<A: Actor> Addr<A> {
    /// Makes a new counted address (the constructor and `Clone` are the only ways).
    pub(crate) fn new(
        sender: mpsc::Sender<A::Message>,
        liveness: Arc<Liveness>,
        actor_id: u64,
    ) -> Self {
        liveness.addresses.fetch_add(1, Ordering::AcqRel);
        Addr {
            sender,
            liveness,
            actor_id,
        }
    }

    /// Delivers `message`, waiting while the mailbox is full (backpressure).
    ///
    /// Fails, handing the message back, if the actor has stopped.
    pub async fn send(&self, message: A::Message) -> Result<(), SendError<A::Message>> {
        self.sender
            .send(message)
            .await
            .map_err(|mpsc::error::SendError(message)| SendError(message))
    }

    /// Delivers `message` if the mailbox has room right now; never waits.
    pub fn try_send(&self, message: A::Message) -> Result<(), TrySendError<A::Message>> {
        self.sender.try_send(message).map_err(|error| match error {
            mpsc::error::TrySendError::Full(message) => TrySendError::Full(message),
            mpsc::error::TrySendError::Closed(message) => TrySendError::Closed(message),
        })
    }

    /// Request/reply: builds a message around a fresh [`Reply`], sends it (waiting for mailbox
    /// room like [`send`](Self::send)) and waits for the answer:
    /// `log.ask(|reply| LogMessage::Length { reply }).await`.
    pub async fn ask<T, F>(&self, make_message: F) -> Result<T, AskError>
    where
        F: FnOnce(Reply<T>) -> A::Message,
    {
        let (sender, receiver) = oneshot::channel();
        self.sender
            .send(make_message(Reply { sender }))
            .await
            .map_err(|_| AskError::Closed)?;
        receiver.await.map_err(|_| AskError::NoReply)
    }

    /// [`ask`](Self::ask) bounded by `timeout`, which covers both the wait for mailbox room and
    /// the wait for the reply.
    pub async fn ask_timeout<T, F>(&self, timeout: Duration, make_message: F) -> Result<T, AskError>
    where
        F: FnOnce(Reply<T>) -> A::Message,
    {
        match super::with_timeout(timeout, self.ask(make_message)).await {
            Ok(result) => result,
            Err(_) => Err(AskError::Timeout),
        }
    }

    /// Whether the actor has stopped accepting messages.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Resolves once the actor has stopped accepting messages.
    pub async fn closed(&self) {
        self.sender.closed().await;
    }

    /// How many more messages the mailbox accepts right now.
    pub fn mailbox_room(&self) -> usize {
        self.sender.capacity()
    }

    /// The mailbox capacity given at spawn.
    pub fn mailbox_capacity(&self) -> usize {
        self.sender.max_capacity()
    }

    /// The actor's id, unique within its [`Runtime`](super::Runtime) and in spawn order.
    pub fn actor_id(&self) -> u64 {
        self.actor_id
    }

    /// Whether both addresses lead to the same actor.
    pub fn same_actor(&self, other: &Addr<A>) -> bool {
        self.sender.same_channel(&other.sender)
    }
}

impl<A: Actor> Clone for Addr<A> {
    fn clone(&self) -> Self {
        Addr::new(
            self.sender.clone(),
            Arc::clone(&self.liveness),
            self.actor_id,
        )
    }
}

impl<A: Actor> Drop for Addr<A> {
    fn drop(&mut self) {
        if self.liveness.addresses.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.liveness.released.notify_one();
        }
    }
}

impl<A: Actor> fmt::Debug for Addr<A> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Addr")
            .field("actor", &std::any::type_name::<A>())
            .field("actor_id", &self.actor_id)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The answering half of a request made with [`Addr::ask`]; put it in the message.
///
/// A handler answers with [`send`](Self::send), possibly later or from another task (it may
/// forward the `Reply` with the work). Dropping it unanswered gives the asker
/// [`AskError::NoReply`].
pub struct Reply<T> {
    sender: oneshot::Sender<T>,
}

impl<T> Reply<T> {
    /// Answers the request. If the asker has given up (timeout, or dropped its future) the value
    /// is discarded: nobody is left to receive it.
    pub fn send(self, value: T) {
        if self.sender.send(value).is_err() {
            tracing::debug!("reply discarded: the asker has gone");
        }
    }

    /// Whether the asker has given up, so the work behind the answer can be skipped.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

impl<T> fmt::Debug for Reply<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Reply")
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

/// A [`Reply`] and the future of its answer, for callers that must enqueue a request in order
/// (`Addr::send`) but wait for the answer elsewhere (a connection pipelining produces).
pub fn reply_pair<T>() -> (Reply<T>, PendingReply<T>) {
    let (sender, receiver) = oneshot::channel();
    (Reply { sender }, PendingReply { receiver })
}

/// The answer to a request made with [`reply_pair`]; resolves to
/// [`AskError::NoReply`] if the handler dropped the [`Reply`].
pub struct PendingReply<T> {
    receiver: oneshot::Receiver<T>,
}

impl<T> std::future::Future for PendingReply<T> {
    type Output = Result<T, AskError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.receiver)
            .poll(context)
            .map(|result| result.map_err(|_| AskError::NoReply))
    }
}

impl<T> fmt::Debug for PendingReply<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("PendingReply").finish()
    }
}
