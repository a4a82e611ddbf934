//! Typed errors of the actor runtime.
//!
//! Errors that fail to deliver a message hand the message back (`into_message`), so a caller
//! that must lose nothing can retry or report it. Their `Debug` does not print the message, so
//! message types need not implement `Debug`.

use std::fmt;

/// [`Addr::send`](super::Addr::send) failed: the actor has stopped and will never read its
/// mailbox again.
#[derive(thiserror::Error)]
#[error("the actor has stopped; its mailbox is closed")]
pub struct SendError<M>(pub M);

impl<M> SendError<M> {
    /// The message that was not delivered.
    pub fn into_message(self) -> M {
        self.0
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SendError(..)")
    }
}

/// [`Addr::try_send`](super::Addr::try_send) failed without waiting.
#[derive(thiserror::Error)]
pub enum TrySendError<M> {
    /// The mailbox is at capacity: back off, or use `send` to wait for room.
    #[error("the actor's mailbox is full")]
    Full(M),
    /// The actor has stopped.
    #[error("the actor has stopped; its mailbox is closed")]
    Closed(M),
}

impl<M> TrySendError<M> {
    /// The message that was not delivered.
    pub fn into_message(self) -> M {
        match self {
            TrySendError::Full(message) | TrySendError::Closed(message) => message,
        }
    }

    /// Whether the failure was a full mailbox (as opposed to a stopped actor).
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }
}

impl<M> fmt::Debug for TrySendError<M> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => formatter.write_str("Full(..)"),
            TrySendError::Closed(_) => formatter.write_str("Closed(..)"),
        }
    }
}

/// [`Addr::ask`](super::Addr::ask) got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// The actor had stopped: the request was not delivered.
    #[error("the actor has stopped; the request was not delivered")]
    Closed,
    /// The request was delivered but the reply was dropped unanswered: the handler dropped its
    /// [`Reply`](super::Reply), or the actor stopped before handling the request.
    #[error("the actor dropped the request without replying")]
    NoReply,
    /// No reply within the deadline given to [`Addr::ask_timeout`](super::Addr::ask_timeout).
    /// The request may still be handled later; its reply is then discarded.
    #[error("no reply before the deadline")]
    Timeout,
}

/// A future did not complete before its deadline ([`Runtime::timeout`](super::Runtime::timeout)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

/// A spawned task or blocking closure did not return a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The task was aborted before it finished.
    #[error("the task was cancelled")]
    Cancelled,
    /// The task panicked.
    #[error("the task panicked")]
    Panicked,
}

impl From<tokio::task::JoinError> for TaskError {
    fn from(error: tokio::task::JoinError) -> Self {
        if error.is_panic() {
            TaskError::Panicked
        } else {
            TaskError::Cancelled
        }
    }
}
