//! The controller's metadata log: its records, the state they build, and replica assignment.
//!
//! In cluster mode the cluster's metadata (its brokers and controller voters, the topics, each
//! partition's replicas and its last reported leader) is a Raft-replicated log, the metadata
//! group. Each committed record is the postcard encoding of one [`MetadataRecord`], held as the
//! value of one record of a record batch in that log; its offset in the log is the record's
//! identity (a topic's id is the offset of its [`MetadataRecord::CreateTopic`]).
//!
//! Every node applies the committed records in offset order with [`MetadataState::apply`], a
//! pure function: the same records give the same state on every node. A record that does not
//! apply (a topic created twice by two racing proposals, a stale leader report) is refused by
//! every node alike and changes nothing; the node that proposed it answers its client with the
//! error.
//!
//! # Compatibility rule: append-only
//!
//! The log outlives every binary that writes it: [`MetadataRecord`]'s variants and fields are
//! append-only (see [`crate::protocol`]'s module comment), pinned by the golden-bytes tests.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A node in [`MetadataRecord::Cluster`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    pub node_id: u32,
    /// `host:port` of the node (clients and peers use the same port).
    pub address: String,
}

/// One record of the metadata log. Append-only; variant indices pinned by the golden tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// Variant 0: the cluster's nodes (sorted by id) and its controller voters (sorted). The
    /// first record the first controller writes; a later one must agree with it.
    Cluster {
        peers: Vec<PeerEntry>,
        controller_voters: Vec<u32>,
    },
    /// Variant 1: a topic; its id is this record's offset. `replicas[p]` are partition `p`'s
    /// replicas, the first one its preferred leader.
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u16,
        /// Config overrides, sorted by key.
        config: Vec<(String, String)>,
        replicas: Vec<Vec<u32>>,
    },
    /// Variant 2: delete the incarnation `topic_id` of topic `name` (and its data everywhere).
    DeleteTopic { name: String, topic_id: u64 },
    /// Variant 3: replace the config overrides of a topic (sorted by key; all of them, not a
    /// difference, so applying it twice is harmless).
    AlterTopicConfig {
        name: String,
        topic_id: u64,
        config: Vec<(String, String)>,
    },
    /// Variant 4: a replica reported that it leads a partition in `term`. Only a higher term
    /// than the one recorded replaces it.
    PartitionLeader {
        topic: String,
        topic_id: u64,
        partition: u32,
        leader: u32,
        term: u64,
    },
}

/// Why a record did not apply (or did not decode). Every node refuses the same records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata record does not decode: {0}")]
    Decode(String),
    #[error("topic {name:?} already exists")]
    TopicExists { name: String },
    #[error("unknown topic {name:?} (id {topic_id:?})")]
    UnknownTopic { name: String, topic_id: Option<u64> },
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error(
        "leader report for {topic:?}/{partition}: term {term} is not above the recorded {recorded}"
    )]
    StaleLeader {
        topic: String,
        partition: u32,
        term: u64,
        recorded: u64,
    },
    #[error("invalid metadata record: {0}")]
    Invalid(String),
    #[error("the cluster's peers or voters differ from the recorded ones: {0}")]
    ClusterMismatch(String),
}

/// Encode a record (the value of its record in the metadata log).
pub fn encode_record(record: &MetadataRecord) -> Vec<u8> {
    // Encoding into a Vec fails only on types postcard cannot represent; these are all plain.
    postcard::to_allocvec(record).unwrap_or_default()
}

/// Decode a record; trailing bytes are an error.
pub fn decode_record(bytes: &[u8]) -> Result<MetadataRecord, MetadataError> {
    match postcard::take_from_bytes::<MetadataRecord>(bytes) {
        Ok((record, [])) => Ok(record),
        Ok((_, rest)) => Err(MetadataError::Decode(format!(
            "{} trailing bytes",
            rest.len()
        ))),
        Err(error) => Err(MetadataError::Decode(error.to_string())),
    }
}

/// One partition in the applied state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// Its replicas; the first is the preferred leader.
    pub replicas: Vec<u32>,
    /// The last reported leader and its term (`None`, 0: none reported yet).
    pub leader: Option<u32>,
    pub leader_term: u64,
}

/// One topic in the applied state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    /// The offset of its creation record.
    pub topic_id: u64,
    pub replication_factor: u16,
    /// Config overrides.
    pub config: BTreeMap<String, String>,
    pub partitions: Vec<PartitionState>,
}

/// What one applied record changed (for the node to reconcile its replicas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The cluster record was applied (or repeated, identical).
    Cluster,
    TopicCreated {
        name: String,
        topic_id: u64,
    },
    /// `replicas`: what the topic had, so each node knows whether it held a replica.
    TopicDeleted {
        name: String,
        topic_id: u64,
        replicas: Vec<Vec<u32>>,
    },
    TopicConfigAltered {
        name: String,
        topic_id: u64,
    },
    LeaderChanged {
        topic: String,
        topic_id: u64,
        partition: u32,
        leader: u32,
        term: u64,
    },
}

/// The cluster's metadata as the applied records built it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataState {
    /// Node id -> address (empty until the cluster record is applied).
    pub peers: BTreeMap<u32, String>,
    pub controller_voters: BTreeSet<u32>,
    pub topics: BTreeMap<String, TopicState>,
    /// The offset after the last applied record (`0`: nothing applied).
    pub next_offset: u64,
}

impl MetadataState {
    /// Apply the record at `offset` (offsets must grow). On `Err` the state is unchanged
    /// (except that `offset` counts as seen).
    pub fn apply(&mut self, offset: u64, record: MetadataRecord) -> Result<Change, MetadataError> {
        if offset < self.next_offset {
            return Err(MetadataError::Invalid(format!(
                "offset {offset} applied after {}",
                self.next_offset
            )));
        }
        self.next_offset = offset + 1;
        match record {
            MetadataRecord::Cluster {
                peers,
                controller_voters,
            } => {
                let peers: BTreeMap<u32, String> = peers
                    .into_iter()
                    .map(|peer| (peer.node_id, peer.address))
                    .collect();
                let voters: BTreeSet<u32> = controller_voters.into_iter().collect();
                if peers.is_empty() || voters.is_empty() {
                    return Err(MetadataError::Invalid(
                        "a cluster has at least one node and one voter".into(),
                    ));
                }
                if let Some(voter) = voters.iter().find(|voter| !peers.contains_key(voter)) {
                    return Err(MetadataError::Invalid(format!(
                        "controller voter {voter} is not a peer"
                    )));
                }
                if !self.peers.is_empty() {
                    if self.peers != peers || self.controller_voters != voters {
                        return Err(MetadataError::ClusterMismatch(format!(
                            "recorded peers {:?} voters {:?}, proposed {peers:?} {voters:?}",
                            self.peers, self.controller_voters
                        )));
                    }
                    return Ok(Change::Cluster);
                }
                self.peers = peers;
                self.controller_voters = voters;
                Ok(Change::Cluster)
            }
            MetadataRecord::CreateTopic {
                name,
                partitions,
                replication_factor,
                config,
                replicas,
            } => {
                if self.topics.contains_key(&name) {
                    return Err(MetadataError::TopicExists { name });
                }
                if partitions == 0 || replicas.len() != partitions as usize {
                    return Err(MetadataError::Invalid(format!(
                        "topic {name:?}: {partitions} partitions, {} replica lists",
                        replicas.len()
                    )));
                }
                for (partition, list) in replicas.iter().enumerate() {
                    let distinct: BTreeSet<u32> = list.iter().copied().collect();
                    if list.len() != usize::from(replication_factor) || distinct.len() != list.len()
                    {
                        return Err(MetadataError::Invalid(format!(
                            "topic {name:?} partition {partition}: replicas {list:?} for replication factor {replication_factor}"
                        )));
                    }
                    if let Some(node) = list.iter().find(|node| !self.peers.contains_key(node)) {
                        return Err(MetadataError::Invalid(format!(
                            "topic {name:?} partition {partition}: replica {node} is not a broker"
                        )));
                    }
                }
                let topic = TopicState {
                    topic_id: offset,
                    replication_factor,
                    config: config.into_iter().collect(),
                    partitions: replicas
                        .into_iter()
                        .map(|replicas| PartitionState {
                            replicas,
                            leader: None,
                            leader_term: 0,
                        })
                        .collect(),
                };
                self.topics.insert(name.clone(), topic);
                Ok(Change::TopicCreated {
                    name,
                    topic_id: offset,
                })
            }
            MetadataRecord::DeleteTopic { name, topic_id } => {
                self.topic(&name, topic_id)?;
                let topic =
                    self.topics
                        .remove(&name)
                        .ok_or_else(|| MetadataError::UnknownTopic {
                            name: name.clone(),
                            topic_id: Some(topic_id),
                        })?;
                Ok(Change::TopicDeleted {
                    name,
                    topic_id,
                    replicas: topic
                        .partitions
                        .into_iter()
                        .map(|partition| partition.replicas)
                        .collect(),
                })
            }
            MetadataRecord::AlterTopicConfig {
                name,
                topic_id,
                config,
            } => {
                self.topic(&name, topic_id)?;
                if let Some(topic) = self.topics.get_mut(&name) {
                    topic.config = config.into_iter().collect();
                }
                Ok(Change::TopicConfigAltered { name, topic_id })
            }
            MetadataRecord::PartitionLeader {
                topic,
                topic_id,
                partition,
                leader,
                term,
            } => {
                self.topic(&topic, topic_id)?;
                let Some(state) = self
                    .topics
                    .get_mut(&topic)
                    .and_then(|state| state.partitions.get_mut(partition as usize))
                else {
                    return Err(MetadataError::UnknownPartition { topic, partition });
                };
                if !state.replicas.contains(&leader) {
                    return Err(MetadataError::Invalid(format!(
                        "{topic:?}/{partition}: leader {leader} is not a replica {:?}",
                        state.replicas
                    )));
                }
                if term <= state.leader_term {
                    return Err(MetadataError::StaleLeader {
                        topic,
                        partition,
                        term,
                        recorded: state.leader_term,
                    });
                }
                state.leader = Some(leader);
                state.leader_term = term;
                Ok(Change::LeaderChanged {
                    topic,
                    topic_id,
                    partition,
                    leader,
                    term,
                })
            }
        }
    }

    /// The topic `name` if it is the incarnation `topic_id`.
    fn topic(&self, name: &str, topic_id: u64) -> Result<&TopicState, MetadataError> {
        self.topics
            .get(name)
            .filter(|topic| topic.topic_id == topic_id)
            .ok_or_else(|| MetadataError::UnknownTopic {
                name: name.to_owned(),
                topic_id: Some(topic_id),
            })
    }

    /// Replicas and preferred leaders per broker over every topic, for [`assign_replicas`].
    pub fn load(&self) -> BrokerLoad {
        let mut load = BrokerLoad::default();
        for topic in self.topics.values() {
            for partition in &topic.partitions {
                for replica in &partition.replicas {
                    *load.replicas.entry(*replica).or_default() += 1;
                }
                if let Some(first) = partition.replicas.first() {
                    *load.leaders.entry(*first).or_default() += 1;
                }
            }
        }
        load
    }
}

/// How many replicas, and how many preferred leaderships, each broker holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerLoad {
    pub replicas: BTreeMap<u32, u64>,
    pub leaders: BTreeMap<u32, u64>,
}

/// Replicas for `partitions` new partitions of `replication_factor` each over `brokers`
/// (sorted, distinct, `1 <= replication_factor <= brokers.len()`, checked by the caller),
/// given the brokers' current `load`; each list starts with the preferred leader.
///
/// Replicas: a round robin over "slots" continuing from the cluster's replica count, so that
/// replica counts stay within one of each other across topics. Leaders: within a partition's
/// replicas, the one leading the fewest partitions, ties to the earliest slot; with the round
/// robin this keeps preferred-leader counts within one too (the property test checks both
/// over sequences of topics).
pub fn assign_replicas(
    brokers: &[u32],
    partitions: u32,
    replication_factor: u16,
    load: &BrokerLoad,
) -> Vec<Vec<u32>> {
    let count = brokers.len();
    let replication_factor = usize::from(replication_factor).min(count);
    if count == 0 || replication_factor == 0 {
        return Vec::new();
    }
    let mut leaders: Vec<u64> = brokers
        .iter()
        .map(|broker| load.leaders.get(broker).copied().unwrap_or(0))
        .collect();
    let assigned: u64 = brokers
        .iter()
        .map(|broker| load.replicas.get(broker).copied().unwrap_or(0))
        .sum();
    let mut slot = (assigned % count as u64) as usize;
    let mut result = Vec::with_capacity(partitions as usize);
    for _ in 0..partitions {
        let members: Vec<usize> = (0..replication_factor)
            .map(|k| (slot + k) % count)
            .collect();
        slot = (slot + replication_factor) % count;
        let leader_position = (0..replication_factor)
            .min_by_key(|&position| (leaders[members[position]], position))
            .unwrap_or(0);
        leaders[members[leader_position]] += 1;
        let mut replicas = Vec::with_capacity(replication_factor);
        replicas.push(brokers[members[leader_position]]);
        replicas.extend(
            members
                .iter()
                .enumerate()
                .filter(|(position, _)| *position != leader_position)
                .map(|(_, member)| brokers[*member]),
        );
        result.push(replicas);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn variant(record: &MetadataRecord) -> u8 {
        match record {
            MetadataRecord::Cluster { .. } => 0,
            MetadataRecord::CreateTopic { .. } => 1,
            MetadataRecord::DeleteTopic { .. } => 2,
            MetadataRecord::AlterTopicConfig { .. } => 3,
            MetadataRecord::PartitionLeader { .. } => 4,
        }
    }
    const VARIANTS: u8 = 5;

    fn goldens() -> Vec<(MetadataRecord, &'static str)> {
        vec![
            (
                MetadataRecord::Cluster {
                    peers: vec![PeerEntry {
                        node_id: 1,
                        address: "a:1".into(),
                    }],
                    controller_voters: vec![1],
                },
                "00 01 01 03 61 3a 31 01 01",
            ),
            (
                MetadataRecord::CreateTopic {
                    name: "t".into(),
                    partitions: 2,
                    replication_factor: 1,
                    config: vec![("k".into(), "v".into())],
                    replicas: vec![vec![1], vec![2]],
                },
                "01 01 74 02 01 01 01 6b 01 76 02 01 01 01 02",
            ),
            (
                MetadataRecord::DeleteTopic {
                    name: "t".into(),
                    topic_id: 300,
                },
                "02 01 74 ac 02",
            ),
            (
                MetadataRecord::AlterTopicConfig {
                    name: "t".into(),
                    topic_id: 3,
                    config: vec![],
                },
                "03 01 74 03 00",
            ),
            (
                MetadataRecord::PartitionLeader {
                    topic: "t".into(),
                    topic_id: 3,
                    partition: 1,
                    leader: 2,
                    term: 7,
                },
                "04 01 74 03 01 02 07",
            ),
        ]
    }

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn golden_bytes_of_every_record() {
        let goldens = goldens();
        let variants: BTreeSet<u8> = goldens.iter().map(|(record, _)| variant(record)).collect();
        assert_eq!(variants, (0..VARIANTS).collect::<BTreeSet<u8>>());
        for (record, golden) in goldens {
            let bytes = encode_record(&record);
            assert_eq!(hex(&bytes), golden, "{record:?}");
            assert_eq!(decode_record(&bytes), Ok(record));
        }
    }

    #[test]
    fn undecodable_records_are_errors() {
        assert!(matches!(decode_record(&[9]), Err(MetadataError::Decode(_))));
        let mut bytes = encode_record(&MetadataRecord::DeleteTopic {
            name: "t".into(),
            topic_id: 1,
        });
        bytes.push(0);
        assert!(matches!(
            decode_record(&bytes),
            Err(MetadataError::Decode(_))
        ));
    }

    fn cluster(nodes: &[u32]) -> MetadataRecord {
        MetadataRecord::Cluster {
            peers: nodes
                .iter()
                .map(|node| PeerEntry {
                    node_id: *node,
                    address: format!("h:{node}"),
                })
                .collect(),
            controller_voters: nodes.to_vec(),
        }
    }

    fn create(name: &str, replicas: Vec<Vec<u32>>) -> MetadataRecord {
        MetadataRecord::CreateTopic {
            name: name.into(),
            partitions: replicas.len() as u32,
            replication_factor: replicas[0].len() as u16,
            config: vec![],
            replicas,
        }
    }

    #[test]
    fn apply_builds_topics_and_refuses_what_does_not_fit() {
        let mut state = MetadataState::default();
        assert_eq!(state.apply(0, cluster(&[1, 2, 3])), Ok(Change::Cluster));
        // The same cluster again is harmless; another one is refused.
        assert_eq!(state.apply(1, cluster(&[1, 2, 3])), Ok(Change::Cluster));
        assert!(matches!(
            state.apply(2, cluster(&[1, 2])),
            Err(MetadataError::ClusterMismatch(_))
        ));
        assert_eq!(
            state.apply(3, create("t", vec![vec![1, 2], vec![2, 3]])),
            Ok(Change::TopicCreated {
                name: "t".into(),
                topic_id: 3
            })
        );
        // A racing second create of the same name.
        assert_eq!(
            state.apply(4, create("t", vec![vec![1, 2]])),
            Err(MetadataError::TopicExists { name: "t".into() })
        );
        // A replica that is not a broker, a repeated replica.
        assert!(matches!(
            state.apply(5, create("u", vec![vec![1, 9]])),
            Err(MetadataError::Invalid(_))
        ));
        assert!(matches!(
            state.apply(6, create("u", vec![vec![1, 1]])),
            Err(MetadataError::Invalid(_))
        ));
        let leader = |term, leader| MetadataRecord::PartitionLeader {
            topic: "t".into(),
            topic_id: 3,
            partition: 1,
            leader,
            term,
        };
        assert!(matches!(
            state.apply(7, leader(2, 3)),
            Ok(Change::LeaderChanged { .. })
        ));
        // Only a higher term replaces; a non-replica never leads.
        assert!(matches!(
            state.apply(8, leader(2, 2)),
            Err(MetadataError::StaleLeader { .. })
        ));
        assert!(matches!(
            state.apply(9, leader(5, 1)),
            Err(MetadataError::Invalid(_))
        ));
        assert_eq!(state.topics["t"].partitions[1].leader, Some(3));
        assert_eq!(state.topics["t"].partitions[1].leader_term, 2);
        assert_eq!(
            state.apply(
                10,
                MetadataRecord::AlterTopicConfig {
                    name: "t".into(),
                    topic_id: 3,
                    config: vec![("retention.ms".into(), "5".into())]
                }
            ),
            Ok(Change::TopicConfigAltered {
                name: "t".into(),
                topic_id: 3
            })
        );
        assert_eq!(state.topics["t"].config["retention.ms"], "5");
        // A delete of another incarnation (a stale id) is refused; the right one applies.
        assert!(matches!(
            state.apply(
                11,
                MetadataRecord::DeleteTopic {
                    name: "t".into(),
                    topic_id: 2
                }
            ),
            Err(MetadataError::UnknownTopic { .. })
        ));
        assert_eq!(
            state.apply(
                12,
                MetadataRecord::DeleteTopic {
                    name: "t".into(),
                    topic_id: 3
                }
            ),
            Ok(Change::TopicDeleted {
                name: "t".into(),
                topic_id: 3,
                replicas: vec![vec![1, 2], vec![2, 3]]
            })
        );
        assert!(state.topics.is_empty());
        // A recreated topic is a new incarnation: its id is its own record's offset.
        assert!(matches!(
            state.apply(13, create("t", vec![vec![1]])),
            Ok(Change::TopicCreated { topic_id: 13, .. })
        ));
        // Offsets only grow.
        assert!(state.apply(13, cluster(&[1, 2, 3])).is_err());
    }

    #[test]
    fn assignment_spreads_one_topic_over_three_brokers() {
        let replicas = assign_replicas(&[1, 2, 3], 3, 3, &BrokerLoad::default());
        // Leaders 1, 2, 3; the followers in slot order.
        assert_eq!(replicas, vec![vec![1, 2, 3], vec![2, 1, 3], vec![3, 1, 2]]);
        let replicas = assign_replicas(&[1, 2, 3, 4], 4, 2, &BrokerLoad::default());
        assert_eq!(
            replicas,
            vec![vec![1, 2], vec![3, 4], vec![2, 1], vec![4, 3]]
        );
    }

    fn spread(counts: &BTreeMap<u32, u64>, brokers: &[u32]) -> u64 {
        let values: Vec<u64> = brokers
            .iter()
            .map(|broker| counts.get(broker).copied().unwrap_or(0))
            .collect();
        values.iter().max().unwrap_or(&0) - values.iter().min().unwrap_or(&0)
    }

    proptest! {
        /// After any sequence of topic creations, every broker holds as many replicas as any
        /// other give or take one, and each partition's replicas are distinct brokers. When the
        /// topics share one replication factor (a cluster's usual case), every broker also
        /// leads (preferred) as many partitions as any other give or take one. (With mixed
        /// factors a factor-1 topic's leaders are its replicas, pinned by the replica round
        /// robin, so leader counts may drift by two or three.)
        #[test]
        fn assignment_is_even(
            broker_count in 1usize..10,
            topics in proptest::collection::vec((1u32..40, 1u16..10), 1..6),
            one_factor in any::<bool>(),
        ) {
            let first_factor = topics[0].1;
            let brokers: Vec<u32> = (1..=broker_count as u32).map(|id| id * 3).collect();
            let mut state = MetadataState::default();
            let mut offset = 0;
            state.apply(offset, cluster(&brokers)).expect("cluster");
            for (index, (partitions, replication_factor)) in topics.into_iter().enumerate() {
                let replication_factor = if one_factor { first_factor } else { replication_factor };
                let replication_factor = replication_factor.min(broker_count as u16);
                let replicas = assign_replicas(&brokers, partitions, replication_factor, &state.load());
                prop_assert_eq!(replicas.len(), partitions as usize);
                for list in &replicas {
                    let distinct: BTreeSet<u32> = list.iter().copied().collect();
                    prop_assert_eq!(distinct.len(), usize::from(replication_factor));
                    prop_assert!(list.iter().all(|node| brokers.contains(node)));
                }
                offset += 1;
                state.apply(offset, MetadataRecord::CreateTopic {
                    name: format!("t{index}"),
                    partitions,
                    replication_factor,
                    config: vec![],
                    replicas,
                }).expect("applies");
                let load = state.load();
                prop_assert!(spread(&load.replicas, &brokers) <= 1, "replicas {:?}", load.replicas);
                if one_factor {
                    prop_assert!(spread(&load.leaders, &brokers) <= 1, "leaders {:?}", load.leaders);
                }
            }
        }
    }
}
