//! Coalescing the peer messages of many Raft groups into frames, per destination node.
//!
//! Every partition replica's core emits its own heartbeats on its ticks; with thousands of
//! partitions that would be thousands of frames per heartbeat interval between two nodes. A
//! heartbeat (and its answer) is only a term and a commit index, so the peer link gathers the
//! heartbeats of one round, for every group two nodes share, into one
//! [`PeerMessage::Heartbeats`] frame per destination (and the answers into one
//! [`PeerMessage::HeartbeatResponses`]), and splits received ones back into per-group inputs.
//! Every other message goes out as its own [`PeerMessage::Raft`] frame. Pure functions: the
//! peer link (next slice) calls them; tests call them directly.

use std::collections::BTreeMap;

use brook_raft::NodeId;
use brook_wire::peer::{GroupHeartbeat, GroupHeartbeatResponse, GroupId, PeerMessage, RaftMessage};
use bytes::Bytes;

use crate::replica::PeerSend;

/// Groups in one coalesced frame at most (a frame stays far below the frame size limit:
/// a group entry is a topic name plus a few varints).
pub const GROUPS_PER_FRAME_MAX: usize = 4_096;

/// One frame for one peer node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingFrame {
    pub to: NodeId,
    pub message: PeerMessage,
    /// The batches of an append (the frame's payload).
    pub batches: Vec<Bytes>,
}

/// Turn one round of sends of many groups into frames: heartbeats and heartbeat answers
/// coalesced per destination (at most [`GROUPS_PER_FRAME_MAX`] groups a frame), every other
/// message in its own frame, in the order given.
pub fn coalesce(sends: Vec<(GroupId, PeerSend)>) -> Vec<OutgoingFrame> {
    let mut frames = Vec::new();
    let mut heartbeats: BTreeMap<NodeId, Vec<GroupHeartbeat>> = BTreeMap::new();
    let mut responses: BTreeMap<NodeId, Vec<GroupHeartbeatResponse>> = BTreeMap::new();
    for (group, send) in sends {
        match send.message {
            RaftMessage::Heartbeat { term, commit_index } => {
                heartbeats.entry(send.to).or_default().push(GroupHeartbeat {
                    group,
                    term,
                    commit_index,
                });
            }
            RaftMessage::HeartbeatResponse { term } => {
                responses
                    .entry(send.to)
                    .or_default()
                    .push(GroupHeartbeatResponse { group, term });
            }
            message => frames.push(OutgoingFrame {
                to: send.to,
                message: PeerMessage::Raft { group, message },
                batches: send.batches,
            }),
        }
    }
    for (to, heartbeats) in heartbeats {
        for chunk in heartbeats.chunks(GROUPS_PER_FRAME_MAX) {
            frames.push(OutgoingFrame {
                to,
                message: PeerMessage::Heartbeats(chunk.to_vec()),
                batches: Vec::new(),
            });
        }
    }
    for (to, responses) in responses {
        for chunk in responses.chunks(GROUPS_PER_FRAME_MAX) {
            frames.push(OutgoingFrame {
                to,
                message: PeerMessage::HeartbeatResponses(chunk.to_vec()),
                batches: Vec::new(),
            });
        }
    }
    frames
}

/// Split a received frame back into per-group Raft messages (with the append's batches).
/// A `Hello` carries no group message: empty.
pub fn split(message: PeerMessage, batches: Vec<Bytes>) -> Vec<(GroupId, RaftMessage, Vec<Bytes>)> {
    match message {
        PeerMessage::Hello { .. } => Vec::new(),
        PeerMessage::Raft { group, message } => vec![(group, message, batches)],
        PeerMessage::Heartbeats(heartbeats) => heartbeats
            .into_iter()
            .map(|heartbeat| {
                (
                    heartbeat.group,
                    RaftMessage::Heartbeat {
                        term: heartbeat.term,
                        commit_index: heartbeat.commit_index,
                    },
                    Vec::new(),
                )
            })
            .collect(),
        PeerMessage::HeartbeatResponses(responses) => responses
            .into_iter()
            .map(|response| {
                (
                    response.group,
                    RaftMessage::HeartbeatResponse {
                        term: response.term,
                    },
                    Vec::new(),
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(partition: u32) -> GroupId {
        GroupId {
            topic: "t".into(),
            partition,
        }
    }

    fn send(to: NodeId, message: RaftMessage) -> PeerSend {
        PeerSend {
            to,
            message,
            batches: Vec::new(),
        }
    }

    #[test]
    fn heartbeats_of_many_groups_become_one_frame_per_node_and_split_back() {
        let mut sends = Vec::new();
        for partition in 0..1_000 {
            for to in [2, 3] {
                sends.push((
                    group(partition),
                    send(
                        to,
                        RaftMessage::Heartbeat {
                            term: 4,
                            commit_index: u64::from(partition),
                        },
                    ),
                ));
            }
        }
        sends.push((
            group(7),
            send(2, RaftMessage::HeartbeatResponse { term: 4 }),
        ));
        sends.push((group(8), send(3, RaftMessage::TimeoutNow { term: 4 })));
        let frames = coalesce(sends);
        // TimeoutNow alone, one heartbeat frame per node, one response frame.
        assert_eq!(
            frames.len(),
            4,
            "{:?}",
            frames.iter().map(|f| f.to).collect::<Vec<_>>()
        );
        assert_eq!(
            frames[0].message,
            PeerMessage::Raft {
                group: group(8),
                message: RaftMessage::TimeoutNow { term: 4 }
            }
        );
        let to_two: Vec<_> = frames
            .iter()
            .filter(|frame| frame.to == 2)
            .flat_map(|frame| split(frame.message.clone(), frame.batches.clone()))
            .collect();
        assert_eq!(to_two.len(), 1_001);
        assert_eq!(
            to_two[999],
            (
                group(999),
                RaftMessage::Heartbeat {
                    term: 4,
                    commit_index: 999
                },
                Vec::new()
            )
        );
        assert_eq!(
            to_two[1_000],
            (
                group(7),
                RaftMessage::HeartbeatResponse { term: 4 },
                Vec::new()
            )
        );
    }

    #[test]
    fn a_coalesced_frame_holds_at_most_its_limit_of_groups() {
        let sends = (0..GROUPS_PER_FRAME_MAX as u32 + 1)
            .map(|partition| {
                (
                    group(partition),
                    send(
                        2,
                        RaftMessage::Heartbeat {
                            term: 1,
                            commit_index: 0,
                        },
                    ),
                )
            })
            .collect();
        let frames = coalesce(sends);
        assert_eq!(frames.len(), 2);
        assert!(matches!(&frames[1].message, PeerMessage::Heartbeats(rest) if rest.len() == 1));
    }
}
