//! No panic is reachable from the network: cores in every role are fed arbitrary messages
//! (any variant, any field values, extremes included). Raft does not survive a lying peer, so
//! only the absence of panics is checked here, not safety.

mod cluster;

use brook_raft::{
    AppendEntries, AppendOutcome, AppendResponse, Entry, Heartbeat, Input, LogStart, Message,
    Payload, VoteRequest, VoteResponse,
};
use cluster::{config, Cluster};
use proptest::prelude::*;

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0u64..12,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => any::<u64>(),
    ]
}

fn vote_request() -> impl Strategy<Value = VoteRequest> {
    (number(), number(), number(), any::<bool>()).prop_map(
        |(term, last_index, last_term, leadership_transfer)| VoteRequest {
            term,
            last_index,
            last_term,
            leadership_transfer,
        },
    )
}

fn vote_response() -> impl Strategy<Value = VoteResponse> {
    (number(), any::<bool>()).prop_map(|(term, granted)| VoteResponse { term, granted })
}

fn entry() -> impl Strategy<Value = Entry<u64>> {
    (number(), number(), any::<bool>()).prop_map(|(index, term, leader_start)| Entry {
        index,
        term,
        payload: if leader_start {
            Payload::LeaderStart
        } else {
            Payload::Data(index)
        },
    })
}

fn message() -> impl Strategy<Value = Message<u64>> {
    prop_oneof![
        vote_request().prop_map(Message::PreVote),
        vote_response().prop_map(Message::PreVoteResponse),
        vote_request().prop_map(Message::Vote),
        vote_response().prop_map(Message::VoteResponse),
        (
            number(),
            number(),
            number(),
            number(),
            proptest::collection::vec(entry(), 0..4)
        )
            .prop_map(|(term, prev_index, prev_term, commit_index, entries)| {
                Message::Append(AppendEntries {
                    term,
                    prev_index,
                    prev_term,
                    commit_index,
                    entries,
                })
            }),
        (number(), number()).prop_map(|(term, match_index)| {
            Message::AppendResponse(AppendResponse {
                term,
                outcome: AppendOutcome::Accepted { match_index },
            })
        }),
        (number(), number(), number(), proptest::option::of(number())).prop_map(
            |(term, rejected_prev_index, conflict_index, conflict_term)| {
                Message::AppendResponse(AppendResponse {
                    term,
                    outcome: AppendOutcome::Rejected {
                        rejected_prev_index,
                        conflict_index,
                        conflict_term,
                    },
                })
            }
        ),
        (number(), number())
            .prop_map(|(term, commit_index)| Message::Heartbeat(Heartbeat { term, commit_index })),
        number().prop_map(|term| Message::HeartbeatResponse { term }),
        number().prop_map(|term| Message::TimeoutNow { term }),
        (number(), number(), number(), number()).prop_map(
            |(term, log_start_index, prev_term, commit_index)| {
                Message::LogStart(LogStart {
                    term,
                    log_start_index,
                    prev_term,
                    commit_index,
                })
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_messages_never_panic_a_core(
        messages in proptest::collection::vec((1u64..=4, 1u64..=3, message()), 1..60),
    ) {
        // A settled cluster: node 1 leads with a few entries, 2 and 3 follow.
        let mut cluster = Cluster::new(3, config(None), 11);
        cluster.elect(1).expect("no violation");
        for _ in 0..3 {
            cluster.propose(1).expect("no violation");
        }
        cluster.run_until(10, |_| false).expect("no violation");
        let now_ms = cluster.now_ms;
        for (from, to, message) in messages {
            let host = cluster.hosts.get_mut(&to).expect("known node");
            // Errors are fine (refused input); a panic fails the test.
            let _ = host.raft.step(now_ms, Input::Message { from, message });
            let _ = host.raft.step::<u64>(now_ms + 5_000, Input::Tick);
        }
    }
}
