//! The client's typed error.

use brook_wire::batch::BatchError;
use brook_wire::error::{BrokerError, ErrorCode};

/// Why a client operation failed.
///
/// New variants may be added in any release: match the ones you handle and keep a `_` arm
/// (or ask [`code`](Self::code) and [`is_retriable`](Self::is_retriable)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No TCP connection could be made to the broker.
    #[error("cannot connect to broker at {address}: {reason}")]
    Connect {
        /// The broker address tried (`HOST:PORT`).
        address: String,
        /// Why the connection failed.
        ///
        /// Not named `source`: the message already quotes it, and a source would make error
        /// chains print it twice.
        reason: std::io::Error,
    },
    /// The broker refused or failed the request: its error code and message, shown as
    /// `{code name}: {message}` (e.g. `unknown_topic: topic "x" does not exist`).
    #[error(transparent)]
    Broker(BrokerError),
    /// The broker refused the request because it went to the wrong node (protocol v2:
    /// [`ErrorCode::NotLeader`] from a replica that does not lead the partition,
    /// [`ErrorCode::NotController`] from a node that is not the active controller), and named
    /// the node it believes should be asked instead (`None`: it does not know yet). The client
    /// follows such hints itself; this error reaches the caller only when following them did
    /// not help in time. Shown as the broker's error.
    #[error("{error}")]
    Redirect {
        /// The broker's error code and message.
        error: BrokerError,
        /// The broker id the request should go to instead, if the broker knows it.
        leader: Option<u32>,
    },
    /// The broker sent something this client cannot make sense of: an unexpected response
    /// variant, an undecodable envelope, a bad frame, an offset above the high watermark.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The named operation did not complete in its time limit.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The connection to the broker was closed, or the client was shut down.
    #[error("connection closed")]
    Closed,
    /// The caller asked for something that cannot work: a record larger than the batch limit,
    /// a partition the topic does not have, an invalid config value.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A fetched batch failed validation (CRC, framing, record layout). The consumer never
    /// skips it silently: the partition's position stays before it.
    #[error("corrupt batch in {topic}-{partition} at offset {offset}: {source}")]
    CorruptBatch {
        /// The partition's topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The consumer's position when the batch was fetched.
        offset: u64,
        /// What the validation found.
        source: BatchError,
    },
}

/// The client's result type.
pub type Result<T> = std::result::Result<T, ClientError>;

impl ClientError {
    /// The broker's error code, if the broker reported this error (or, for
    /// [`ClientError::CorruptBatch`], [`ErrorCode::CorruptBatch`]).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker(error) | ClientError::Redirect { error, .. } => Some(error.code),
            ClientError::CorruptBatch { .. } => Some(ErrorCode::CorruptBatch),
            _ => None,
        }
    }

    /// Whether the same operation may succeed if retried later: retriable broker codes
    /// ([`ErrorCode::is_retriable`]), connection failures, closed connections and timeouts.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Broker(error) | ClientError::Redirect { error, .. } => {
                error.is_retriable()
            }
            ClientError::Connect { .. } | ClientError::Timeout(_) | ClientError::Closed => true,
            ClientError::Protocol(_)
            | ClientError::InvalidArgument(_)
            | ClientError::CorruptBatch { .. } => false,
        }
    }

    /// The node the broker named as the one to ask instead ([`ClientError::Redirect`]).
    pub fn leader_hint(&self) -> Option<u32> {
        match self {
            ClientError::Redirect { leader, .. } => *leader,
            _ => None,
        }
    }

    /// Whether the connection this error came from is unusable or suspect (closed, failed to
    /// open, or silent past a time limit): the next attempt should go over another one.
    pub(crate) fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::Closed | ClientError::Timeout(_)
        )
    }

    /// A copy of this error, for failing every record of a batch with the same cause
    /// (`std::io::Error` is not `Clone`, so a connect error keeps its kind and text).
    pub(crate) fn duplicate(&self) -> ClientError {
        match self {
            ClientError::Connect { address, reason } => ClientError::Connect {
                address: address.clone(),
                reason: std::io::Error::new(reason.kind(), reason.to_string()),
            },
            ClientError::Broker(error) => ClientError::Broker(error.clone()),
            ClientError::Redirect { error, leader } => ClientError::Redirect {
                error: error.clone(),
                leader: *leader,
            },
            ClientError::Protocol(message) => ClientError::Protocol(message.clone()),
            ClientError::Timeout(what) => ClientError::Timeout(what),
            ClientError::Closed => ClientError::Closed,
            ClientError::InvalidArgument(message) => ClientError::InvalidArgument(message.clone()),
            ClientError::CorruptBatch {
                topic,
                partition,
                offset,
                source,
            } => ClientError::CorruptBatch {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                source: source.clone(),
            },
        }
    }
}

impl From<BrokerError> for ClientError {
    fn from(error: BrokerError) -> Self {
        ClientError::Broker(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_classification() {
        let error = ClientError::Broker(BrokerError::new(ErrorCode::UnknownTopic, "no topic x"));
        assert_eq!(error.to_string(), "unknown_topic: no topic x");
        assert_eq!(error.code(), Some(ErrorCode::UnknownTopic));
        assert!(!error.is_retriable());
        let error = ClientError::Broker(BrokerError::new(ErrorCode::NotLeader, "moved"));
        assert!(error.is_retriable());
        let error = ClientError::Connect {
            address: "127.0.0.1:1".into(),
            reason: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(error
            .to_string()
            .starts_with("cannot connect to broker at 127.0.0.1:1: "));
        assert!(error.is_retriable());
        assert_eq!(error.code(), None);
        assert_eq!(
            ClientError::Timeout("produce request").to_string(),
            "produce request timed out"
        );
        assert!(!ClientError::InvalidArgument("x".into()).is_retriable());
        let copy = error.duplicate();
        assert_eq!(copy.to_string(), error.to_string());
        let error = ClientError::Redirect {
            error: BrokerError::new(ErrorCode::NotController, "ask node 2"),
            leader: Some(2),
        };
        assert_eq!(error.to_string(), "not_controller: ask node 2");
        assert_eq!(error.code(), Some(ErrorCode::NotController));
        assert!(error.is_retriable());
        assert_eq!(error.leader_hint(), Some(2));
        assert_eq!(error.duplicate().leader_hint(), Some(2));
    }
}
