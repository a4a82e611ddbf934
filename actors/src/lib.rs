//! brook's actors: the actor runtime (the one place that touches tokio/madsim), and — to come —
//! the sans-IO Raft core and the broker's actors.

pub mod controller;
pub mod partition;
pub mod runtime;
