//! The broker<->broker (peer) protocol: the Raft messages of every group two nodes share, in
//! postcard envelopes, one [frame](crate::frame) each, like the client protocol.
//!
//! One connection carries the traffic of all groups between two nodes, so every Raft message
//! names its group ([`GroupId`]: topic and partition). An append's entries are record batches
//! exactly as stored (base offset and term stamped by the leader, one batch per Raft entry), in
//! the frame's raw payload like a produce's batches: `batch_count` in the envelope, the batches
//! concatenated after it, never re-encoded. Entry `prev_index + 1 + i` is the i-th batch and its
//! term is the term in that batch's header.
//!
//! Heartbeats are coalesced: a leader's heartbeat is only a term and a commit index, so the peer
//! link sends the heartbeats of every group two nodes share as one [`PeerMessage::Heartbeats`]
//! frame per interval, and the answers as one [`PeerMessage::HeartbeatResponses`], instead of
//! one frame per group.
//!
//! # Compatibility rule: append-only
//!
//! As in [`crate::protocol`]: postcard is not self-describing, so enum variants and struct
//! fields are append-only and every message has a golden-bytes test below. A failing golden test
//! means "you broke every deployed peer", not "update the bytes".

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::batch::{BatchError, BatchHeader};
use crate::frame::{Frame, FrameEncoder, FrameError};

/// A Raft group: the replicas of one partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupId {
    pub topic: String,
    pub partition: u32,
}

/// A vote or pre-vote request (brook-raft's `VoteRequest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    pub term: u64,
    pub last_index: u64,
    pub last_term: u64,
    pub leadership_transfer: bool,
}

/// The answer to a vote or pre-vote request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteResponse {
    pub term: u64,
    pub granted: bool,
}

/// An append's header; its `batch_count` batches are the frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntries {
    pub term: u64,
    pub prev_index: u64,
    pub prev_term: u64,
    pub commit_index: u64,
    pub batch_count: u32,
}

/// A follower's answer to an append or a log start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// Variant 0.
    Accepted { match_index: u64 },
    /// Variant 1.
    Rejected {
        rejected_prev_index: u64,
        conflict_index: u64,
        conflict_term: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResponse {
    pub term: u64,
    pub outcome: AppendOutcome,
}

/// A follower needs entries below the leader's log start: it restarts its log at
/// `log_start_index`, whose first record has offset `log_start_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStart {
    pub term: u64,
    pub log_start_index: u64,
    pub prev_term: u64,
    pub commit_index: u64,
    pub log_start_offset: u64,
}

/// One Raft message of one group (brook-raft's `Message`). Append-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftMessage {
    /// Variant 0.
    PreVote(VoteRequest),
    /// Variant 1.
    PreVoteResponse(VoteResponse),
    /// Variant 2.
    Vote(VoteRequest),
    /// Variant 3.
    VoteResponse(VoteResponse),
    /// Variant 4: the entries are the frame's payload.
    Append(AppendEntries),
    /// Variant 5.
    AppendResponse(AppendResponse),
    /// Variant 6: a single group's heartbeat (the peer link normally coalesces them into
    /// [`PeerMessage::Heartbeats`]).
    Heartbeat { term: u64, commit_index: u64 },
    /// Variant 7.
    HeartbeatResponse { term: u64 },
    /// Variant 8: leadership transfer, campaign now.
    TimeoutNow { term: u64 },
    /// Variant 9.
    LogStart(LogStart),
}

impl RaftMessage {
    /// Record batches the frame's payload must hold for this message.
    pub fn batch_count(&self) -> u32 {
        match self {
            RaftMessage::Append(append) => append.batch_count,
            _ => 0,
        }
    }
}

/// One group's heartbeat inside a coalesced frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHeartbeat {
    pub group: GroupId,
    pub term: u64,
    pub commit_index: u64,
}

/// One group's heartbeat answer inside a coalesced frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHeartbeatResponse {
    pub group: GroupId,
    pub term: u64,
}

/// What one peer frame carries. Append-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// Variant 0: the first frame on a peer connection: who is calling.
    Hello { protocol_version: u16, node_id: u64 },
    /// Variant 1: one message of one group.
    Raft {
        group: GroupId,
        message: RaftMessage,
    },
    /// Variant 2: the heartbeats of every group the two nodes share, sent once per interval.
    Heartbeats(Vec<GroupHeartbeat>),
    /// Variant 3: the answers to a [`PeerMessage::Heartbeats`].
    HeartbeatResponses(Vec<GroupHeartbeatResponse>),
}

/// Version of the peer protocol this build speaks.
pub const PEER_PROTOCOL_VERSION: u16 = 1;

/// Why a peer frame could not be decoded. The connection is dropped: a peer that sends garbage
/// is not one this node can trust to speak Raft.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerDecodeError {
    #[error("undecodable peer envelope: {0}")]
    Postcard(postcard::Error),
    #[error("{0} trailing bytes after the peer envelope")]
    TrailingBytes(usize),
    #[error("bad record batch in a peer frame: {0}")]
    Batch(#[from] BatchError),
    #[error("peer frame promises {promised} batches, its payload holds {found}")]
    BatchCount { promised: u32, found: usize },
}

/// Why a peer frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerEncodeError {
    #[error("postcard could not encode the peer envelope: {0}")]
    Postcard(postcard::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Append one whole peer frame to `out`: the envelope, then the batches (an append's entries).
pub fn encode_peer(
    encoder: &FrameEncoder,
    message: &PeerMessage,
    batches: &[Bytes],
    out: &mut BytesMut,
) -> Result<(), PeerEncodeError> {
    let head = encode_peer_head(encoder, message, batches)?;
    out.extend_from_slice(&head);
    for batch in batches {
        out.extend_from_slice(batch);
    }
    Ok(())
}

/// The head of a peer frame (frame header and envelope) whose payload is `batches` in order:
/// write the head, then each batch as it is (a vectored write), to send the frame without
/// copying the batches. The same bytes as [`encode_peer`].
pub fn encode_peer_head(
    encoder: &FrameEncoder,
    message: &PeerMessage,
    batches: &[Bytes],
) -> Result<Bytes, PeerEncodeError> {
    let envelope = postcard::to_allocvec(message).map_err(PeerEncodeError::Postcard)?;
    Ok(encoder.encode_head(&envelope, batches)?)
}

/// Decode a peer frame: the message and, for an append, its batches, split by their headers
/// (magic, length, offsets that cannot overflow; each whole inside the payload) and exactly as
/// many as the envelope promises.
///
/// The batches' CRCs are NOT checked here: the replica checks each batch once, with its log's
/// own check, before anything of the message is applied (`ReplicaCore::step` in brook-actors,
/// `Log::check_replicated` in brook-storage), and appends it without hashing it again. A batch
/// damaged on the way is refused there, the whole message with it.
pub fn decode_peer(frame: Frame) -> Result<(PeerMessage, Vec<Bytes>), PeerDecodeError> {
    let message = match postcard::take_from_bytes::<PeerMessage>(&frame.envelope) {
        Ok((message, [])) => message,
        Ok((_, rest)) => return Err(PeerDecodeError::TrailingBytes(rest.len())),
        Err(error) => return Err(PeerDecodeError::Postcard(error)),
    };
    let promised = match &message {
        PeerMessage::Raft { message, .. } => message.batch_count(),
        _ => 0,
    };
    let mut payload = frame.payload;
    let mut batches = Vec::new();
    // Bounded by the payload: every batch takes at least a header's bytes.
    while !payload.is_empty() {
        if batches.len() >= promised as usize {
            return Err(PeerDecodeError::BatchCount {
                promised,
                found: batches.len() + 1,
            });
        }
        let total = BatchHeader::parse(&payload)?.total_len();
        if total > payload.len() {
            return Err(PeerDecodeError::Batch(BatchError::Truncated {
                needed: total,
                available: payload.len(),
            }));
        }
        batches.push(payload.split_to(total));
    }
    if batches.len() != promised as usize {
        return Err(PeerDecodeError::BatchCount {
            promised,
            found: batches.len(),
        });
    }
    Ok((message, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;
    use crate::frame::FrameDecoder;

    fn group() -> GroupId {
        GroupId {
            topic: "t".into(),
            partition: 2,
        }
    }

    fn raft(message: RaftMessage) -> PeerMessage {
        PeerMessage::Raft {
            group: group(),
            message,
        }
    }

    /// The variant index of a Raft message. No wildcard: a new variant does not compile until
    /// it is listed here, and then `every_variant_has_a_golden` fails until it has golden bytes.
    fn raft_variant(message: &RaftMessage) -> u8 {
        match message {
            RaftMessage::PreVote(_) => 0,
            RaftMessage::PreVoteResponse(_) => 1,
            RaftMessage::Vote(_) => 2,
            RaftMessage::VoteResponse(_) => 3,
            RaftMessage::Append(_) => 4,
            RaftMessage::AppendResponse(_) => 5,
            RaftMessage::Heartbeat { .. } => 6,
            RaftMessage::HeartbeatResponse { .. } => 7,
            RaftMessage::TimeoutNow { .. } => 8,
            RaftMessage::LogStart(_) => 9,
        }
    }
    const RAFT_VARIANTS: u8 = 10;

    fn peer_variant(message: &PeerMessage) -> u8 {
        match message {
            PeerMessage::Hello { .. } => 0,
            PeerMessage::Raft { .. } => 1,
            PeerMessage::Heartbeats(_) => 2,
            PeerMessage::HeartbeatResponses(_) => 3,
        }
    }
    const PEER_VARIANTS: u8 = 4;

    const VOTE: VoteRequest = VoteRequest {
        term: 5,
        last_index: 300,
        last_term: 4,
        leadership_transfer: true,
    };

    /// (message, its exact postcard bytes). The group prefix of a Raft message is
    /// `01` (variant Raft), `01 74` (topic "t"), `02` (partition 2).
    fn goldens() -> Vec<(PeerMessage, Vec<u8>)> {
        let prefix = [1u8, 1, b't', 2];
        let with_prefix = |rest: &[u8]| [&prefix[..], rest].concat();
        vec![
            (
                PeerMessage::Hello {
                    protocol_version: 1,
                    node_id: 300,
                },
                vec![0, 1, 0xac, 0x02],
            ),
            (
                raft(RaftMessage::PreVote(VOTE)),
                with_prefix(&[0, 5, 0xac, 0x02, 4, 1]),
            ),
            (
                raft(RaftMessage::PreVoteResponse(VoteResponse {
                    term: 5,
                    granted: true,
                })),
                with_prefix(&[1, 5, 1]),
            ),
            (
                raft(RaftMessage::Vote(VOTE)),
                with_prefix(&[2, 5, 0xac, 0x02, 4, 1]),
            ),
            (
                raft(RaftMessage::VoteResponse(VoteResponse {
                    term: 6,
                    granted: false,
                })),
                with_prefix(&[3, 6, 0]),
            ),
            (
                raft(RaftMessage::Append(AppendEntries {
                    term: 7,
                    prev_index: 10,
                    prev_term: 6,
                    commit_index: 9,
                    batch_count: 2,
                })),
                with_prefix(&[4, 7, 10, 6, 9, 2]),
            ),
            (
                raft(RaftMessage::AppendResponse(AppendResponse {
                    term: 7,
                    outcome: AppendOutcome::Accepted { match_index: 12 },
                })),
                with_prefix(&[5, 7, 0, 12]),
            ),
            (
                raft(RaftMessage::AppendResponse(AppendResponse {
                    term: 7,
                    outcome: AppendOutcome::Rejected {
                        rejected_prev_index: 10,
                        conflict_index: 8,
                        conflict_term: Some(3),
                    },
                })),
                with_prefix(&[5, 7, 1, 10, 8, 1, 3]),
            ),
            (
                raft(RaftMessage::Heartbeat {
                    term: 7,
                    commit_index: 200,
                }),
                with_prefix(&[6, 7, 0xc8, 0x01]),
            ),
            (
                raft(RaftMessage::HeartbeatResponse { term: 7 }),
                with_prefix(&[7, 7]),
            ),
            (
                raft(RaftMessage::TimeoutNow { term: 8 }),
                with_prefix(&[8, 8]),
            ),
            (
                raft(RaftMessage::LogStart(LogStart {
                    term: 8,
                    log_start_index: 50,
                    prev_term: 3,
                    commit_index: 60,
                    log_start_offset: 1000,
                })),
                with_prefix(&[9, 8, 50, 3, 60, 0xe8, 0x07]),
            ),
            (
                PeerMessage::Heartbeats(vec![
                    GroupHeartbeat {
                        group: group(),
                        term: 7,
                        commit_index: 9,
                    },
                    GroupHeartbeat {
                        group: GroupId {
                            topic: "u".into(),
                            partition: 0,
                        },
                        term: 3,
                        commit_index: 0,
                    },
                ]),
                vec![2, 2, 1, b't', 2, 7, 9, 1, b'u', 0, 3, 0],
            ),
            (
                PeerMessage::HeartbeatResponses(vec![GroupHeartbeatResponse {
                    group: group(),
                    term: 7,
                }]),
                vec![3, 1, 1, b't', 2, 7],
            ),
        ]
    }

    #[test]
    fn golden_peer_bytes() {
        for (message, expected) in goldens() {
            let bytes = postcard::to_allocvec(&message).expect("encodes");
            assert_eq!(bytes, expected, "{message:?}");
            let decoded: PeerMessage = postcard::from_bytes(&expected).expect("decodes");
            assert_eq!(decoded, message);
        }
    }

    #[test]
    fn every_variant_has_a_golden() {
        let mut peer_seen = std::collections::BTreeSet::new();
        let mut raft_seen = std::collections::BTreeSet::new();
        for (message, _) in goldens() {
            peer_seen.insert(peer_variant(&message));
            if let PeerMessage::Raft { message, .. } = &message {
                raft_seen.insert(raft_variant(message));
            }
        }
        assert_eq!(peer_seen.len(), usize::from(PEER_VARIANTS));
        assert_eq!(raft_seen.len(), usize::from(RAFT_VARIANTS));
    }

    fn batch(value: &[u8]) -> Bytes {
        let mut builder = BatchBuilder::new();
        builder.push(1, None, Some(value), &[]);
        builder.finish().freeze()
    }

    fn decode_one(bytes: &mut BytesMut) -> Result<(PeerMessage, Vec<Bytes>), PeerDecodeError> {
        let frame = FrameDecoder::default()
            .decode(bytes)
            .expect("frame decodes")
            .expect("a whole frame");
        decode_peer(frame)
    }

    #[test]
    fn append_frame_round_trips_with_its_batches() {
        let message = raft(RaftMessage::Append(AppendEntries {
            term: 1,
            prev_index: 0,
            prev_term: 0,
            commit_index: 0,
            batch_count: 2,
        }));
        let batches = vec![batch(b"a"), batch(b"bc")];
        let mut out = BytesMut::new();
        encode_peer(&FrameEncoder::default(), &message, &batches, &mut out).expect("encodes");
        let (decoded, decoded_batches) = decode_one(&mut out).expect("decodes");
        assert_eq!(decoded, message);
        assert_eq!(decoded_batches, batches);
    }

    #[test]
    fn a_head_then_the_batches_is_the_whole_frame() {
        let message = raft(RaftMessage::Append(AppendEntries {
            term: 3,
            prev_index: 9,
            prev_term: 2,
            commit_index: 8,
            batch_count: 2,
        }));
        let batches = vec![batch(b"first"), batch(b"second")];
        let encoder = FrameEncoder::default();
        let mut whole = BytesMut::new();
        encode_peer(&encoder, &message, &batches, &mut whole).expect("encodes");
        let head = encode_peer_head(&encoder, &message, &batches).expect("encodes");
        let mut gathered = BytesMut::from(&head[..]);
        for batch in &batches {
            gathered.extend_from_slice(batch);
        }
        assert_eq!(gathered, whole);
        let (decoded, decoded_batches) = decode_one(&mut gathered).expect("decodes");
        assert_eq!(decoded, message);
        assert_eq!(decoded_batches, batches);
    }

    #[test]
    fn a_batch_count_that_disagrees_with_the_payload_is_refused() {
        let message = raft(RaftMessage::Append(AppendEntries {
            term: 1,
            prev_index: 0,
            prev_term: 0,
            commit_index: 0,
            batch_count: 1,
        }));
        for batches in [vec![], vec![batch(b"a"), batch(b"b")]] {
            let mut out = BytesMut::new();
            encode_peer(&FrameEncoder::default(), &message, &batches, &mut out).expect("encodes");
            assert!(matches!(
                decode_one(&mut out),
                Err(PeerDecodeError::BatchCount { promised: 1, .. })
            ));
        }
    }

    #[test]
    fn a_batch_with_bad_framing_or_a_bad_envelope_is_refused() {
        let message = raft(RaftMessage::Append(AppendEntries {
            term: 1,
            prev_index: 0,
            prev_term: 0,
            commit_index: 0,
            batch_count: 1,
        }));
        let good = batch(b"abc");
        let mut bad_magic = BytesMut::from(&good[..]);
        bad_magic[20] ^= 0x40; // the magic byte
                               // The header claims one byte more than the payload holds.
        let mut too_long = BytesMut::from(&good[..]);
        let at = crate::batch::OFFSET_LENGTH;
        let length = u32::from_le_bytes(too_long[at..at + 4].try_into().expect("4 bytes")) + 1;
        too_long[at..at + 4].copy_from_slice(&length.to_le_bytes());
        let truncated_header = good.slice(..20);
        for (case, corrupt) in [
            ("bad magic", bad_magic.freeze()),
            ("longer than the payload", too_long.freeze()),
            ("a truncated header", truncated_header),
        ] {
            let mut out = BytesMut::new();
            encode_peer(&FrameEncoder::default(), &message, &[corrupt], &mut out).expect("encodes");
            assert!(
                matches!(decode_one(&mut out), Err(PeerDecodeError::Batch(_))),
                "{case}"
            );
        }
        // An unknown variant (a newer peer) and trailing bytes.
        for envelope in [vec![9u8], vec![3, 0, 0]] {
            let mut out = BytesMut::new();
            FrameEncoder::default()
                .encode(&envelope, &[], &mut out)
                .expect("encodes");
            assert!(decode_one(&mut out).is_err(), "{envelope:?}");
        }
    }

    /// The CRC of an append's batches is the replica's to check (once, before anything is
    /// applied: brook-actors `malformed_peer_messages_change_nothing`), not the decoder's: a
    /// batch damaged in its records comes out as it went in, byte for byte.
    #[test]
    fn the_decoder_leaves_the_crc_to_the_replica() {
        let message = raft(RaftMessage::Append(AppendEntries {
            term: 1,
            prev_index: 0,
            prev_term: 0,
            commit_index: 0,
            batch_count: 2,
        }));
        let mut damaged = BytesMut::from(&batch(b"abc")[..]);
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        let batches = vec![batch(b"first"), damaged.freeze()];
        assert!(crate::batch::validate(&batches[1]).is_err());
        let mut out = BytesMut::new();
        encode_peer(&FrameEncoder::default(), &message, &batches, &mut out).expect("encodes");
        let (decoded, decoded_batches) = decode_one(&mut out).expect("decodes");
        assert_eq!(decoded, message);
        assert_eq!(decoded_batches, batches);
    }
}
