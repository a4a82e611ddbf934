//! What the core knows of the log without holding it: where it starts and ends, and the term of
//! every index, kept as the list of indexes where a term starts (Kafka's leader-epoch cache: one
//! element per term change, not per entry). The entries themselves stay with the host.

use serde::{Deserialize, Serialize};

use crate::message::{Index, Term};

/// The first index of a term in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermStart {
    pub term: Term,
    pub first_index: Index,
}

/// Indexes and terms of a log. The host builds one when it opens its log (from the batch
/// headers, or a checkpoint of the term starts) and hands it to [`crate::Raft::new`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTerms {
    /// The first index present; entries below were removed by retention (committed).
    start_index: Index,
    /// The term of entry `start_index - 1` (0 for an empty history).
    start_prev_term: Term,
    last_index: Index,
    /// Strictly increasing terms; the first element's `first_index` may be below `start_index`.
    term_starts: Vec<TermStart>,
}

impl Default for LogTerms {
    fn default() -> Self {
        LogTerms {
            start_index: 1,
            start_prev_term: 0,
            last_index: 0,
            term_starts: Vec::new(),
        }
    }
}

/// Why a [`LogTerms`] given by the host cannot be a Raft log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid log terms: {0}")]
pub struct InvalidLogTerms(&'static str);

impl LogTerms {
    /// A log holding `start_index ..= last_index`, whose terms start at `term_starts`.
    pub fn new(
        start_index: Index,
        start_prev_term: Term,
        last_index: Index,
        term_starts: Vec<TermStart>,
    ) -> Result<Self, InvalidLogTerms> {
        if start_index == 0 {
            return Err(InvalidLogTerms("indexes start at 1"));
        }
        if last_index + 1 < start_index {
            return Err(InvalidLogTerms("last index below the log start"));
        }
        if term_starts
            .windows(2)
            .any(|pair| pair[0].term >= pair[1].term || pair[0].first_index >= pair[1].first_index)
        {
            return Err(InvalidLogTerms("term starts must strictly increase"));
        }
        if last_index >= start_index {
            match term_starts.first() {
                Some(first) if first.first_index <= start_index => {}
                _ => return Err(InvalidLogTerms("no term known for the log start")),
            }
            if term_starts
                .last()
                .is_some_and(|last| last.first_index > last_index)
            {
                return Err(InvalidLogTerms("a term starts after the last index"));
            }
            if term_starts
                .first()
                .is_some_and(|first| first.term < start_prev_term)
            {
                return Err(InvalidLogTerms("terms decrease at the log start"));
            }
        }
        Ok(LogTerms {
            start_index,
            start_prev_term,
            last_index,
            term_starts,
        })
    }

    pub fn start_index(&self) -> Index {
        self.start_index
    }

    pub fn last_index(&self) -> Index {
        self.last_index
    }

    pub fn last_term(&self) -> Term {
        self.term_at(self.last_index)
            .unwrap_or(self.start_prev_term)
    }

    pub fn term_starts(&self) -> &[TermStart] {
        &self.term_starts
    }

    /// The term of entry `index`, if the core knows it: `start_index - 1 ..= last_index`.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index + 1 == self.start_index {
            return Some(self.start_prev_term);
        }
        if index < self.start_index || index > self.last_index {
            return None;
        }
        let position = self
            .term_starts
            .partition_point(|start| start.first_index <= index);
        position
            .checked_sub(1)
            .map(|position| self.term_starts[position].term)
    }

    /// The first index (at or above the log start) holding the term of `index`.
    pub fn first_index_of_term_at(&self, index: Index) -> Index {
        let position = self
            .term_starts
            .partition_point(|start| start.first_index <= index);
        match position.checked_sub(1) {
            Some(position) => self.term_starts[position].first_index.max(self.start_index),
            None => self.start_index,
        }
    }

    /// The last index of `term` in the log, if the log has entries of that term.
    pub fn last_index_of_term(&self, term: Term) -> Option<Index> {
        let position = self
            .term_starts
            .iter()
            .position(|start| start.term == term)?;
        let end = match self.term_starts.get(position + 1) {
            Some(next) => next.first_index - 1,
            None => self.last_index,
        };
        (end >= self.start_index && end >= self.term_starts[position].first_index).then_some(end)
    }

    /// Appends entry `last_index + 1` of `term`. Terms never decrease along a log.
    pub(crate) fn append(&mut self, term: Term) -> Index {
        let index = self.last_index + 1;
        assert!(
            term >= self.last_term(),
            "raft: appending term {term} after a later term"
        );
        if self.term_starts.last().map(|start| start.term) != Some(term) {
            self.term_starts.push(TermStart {
                term,
                first_index: index,
            });
        }
        self.last_index = index;
        index
    }

    /// Removes entries `from_index ..`.
    pub(crate) fn truncate_from(&mut self, from_index: Index) {
        assert!(
            from_index >= self.start_index,
            "raft: truncating below the log start"
        );
        self.last_index = self.last_index.min(from_index - 1);
        self.term_starts
            .retain(|start| start.first_index < from_index);
    }

    /// Drops the whole log; the next entry will be `start_index`.
    pub(crate) fn reset(&mut self, start_index: Index, start_prev_term: Term) {
        self.start_index = start_index;
        self.start_prev_term = start_prev_term;
        self.last_index = start_index - 1;
        self.term_starts.clear();
    }

    /// Forgets entries below `start_index` (retention removed them).
    pub(crate) fn advance_start(&mut self, start_index: Index) {
        assert!(start_index >= self.start_index && start_index <= self.last_index + 1);
        if let Some(term) = self.term_at(start_index - 1) {
            self.start_prev_term = term;
        }
        self.start_index = start_index;
        // Keep the term start covering the new start, drop those wholly below it.
        let covering = self
            .term_starts
            .partition_point(|start| start.first_index <= start_index);
        if covering > 1 {
            self.term_starts.drain(..covering - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_follow_appends_truncations_and_the_start() {
        let mut log = LogTerms::default();
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(1), None);
        for term in [1, 1, 2, 2, 2, 5] {
            log.append(term);
        }
        assert_eq!(log.last_index(), 6);
        assert_eq!(log.term_at(2), Some(1));
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.term_at(6), Some(5));
        assert_eq!(log.first_index_of_term_at(5), 3);
        assert_eq!(log.last_index_of_term(2), Some(5));
        assert_eq!(log.last_index_of_term(3), None);
        log.truncate_from(4);
        assert_eq!(log.last_index(), 3);
        assert_eq!(log.last_term(), 2);
        assert_eq!(log.last_index_of_term(5), None);
        log.advance_start(3);
        assert_eq!(log.term_at(2), Some(1));
        assert_eq!(log.term_at(1), None);
        assert_eq!(log.term_at(3), Some(2));
        assert_eq!(log.first_index_of_term_at(3), 3);
        log.reset(10, 4);
        assert_eq!(log.last_index(), 9);
        assert_eq!(log.last_term(), 4);
        assert_eq!(log.append(6), 10);
        assert_eq!(log.term_at(10), Some(6));
    }

    #[test]
    fn invalid_host_logs_are_refused() {
        assert!(LogTerms::new(0, 0, 0, vec![]).is_err());
        assert!(LogTerms::new(1, 0, 3, vec![]).is_err());
        let starts = vec![
            TermStart {
                term: 2,
                first_index: 1,
            },
            TermStart {
                term: 1,
                first_index: 2,
            },
        ];
        assert!(LogTerms::new(1, 0, 3, starts).is_err());
        let starts = vec![TermStart {
            term: 2,
            first_index: 1,
        }];
        assert!(LogTerms::new(1, 0, 3, starts).is_ok());
    }
}
