//! Which partition a record goes to: by key hash exactly as Kafka's default partitioner does
//! (so a key lands on the same partition number in brook as in Kafka, given the same count),
//! and "uniform sticky" for records without a key.

use std::collections::BTreeMap;

use brook_runtime::ChaCha8Rng;
use rand::Rng;

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`): the 32-bit MurmurHash2
/// with seed `0x9747b28c`, reading the key as little-endian 4-byte words. Returns the same
/// bits as Kafka's (signed) `int`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    // Kafka computes `seed ^ length` on Java ints: the length is truncated to 32 bits.
    let mut h: u32 = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a key:
/// `toPositive(murmur2(key)) % partitions` (where `toPositive` clears the sign bit).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    let positive = (murmur2(key) as u32) & 0x7fff_ffff;
    positive % partitions
}

/// Sticky choice for records without a key: every such record of a topic goes to one
/// partition until about a batch worth of bytes went there, then to another partition chosen
/// at random (Kafka's "uniform sticky" partitioner, KIP-794): batches fill up instead of every
/// partition getting a tiny one, and load evens out over time.
pub(crate) struct StickyPartitioner {
    rng: ChaCha8Rng,
    /// Per topic: the current partition and the bytes sent to it so far.
    current: BTreeMap<String, (u32, usize)>,
    switch_after_bytes: usize,
}

impl StickyPartitioner {
    pub(crate) fn new(rng: ChaCha8Rng, switch_after_bytes: usize) -> Self {
        StickyPartitioner {
            rng,
            current: BTreeMap::new(),
            switch_after_bytes: switch_after_bytes.max(1),
        }
    }

    /// The partition for a keyless record of `bytes` bytes.
    pub(crate) fn partition(&mut self, topic: &str, partitions: u32, bytes: usize) -> u32 {
        assert!(partitions > 0, "a topic has at least one partition");
        let switch_after = self.switch_after_bytes;
        let entry = match self.current.get_mut(topic) {
            Some(entry) if entry.0 < partitions && entry.1 < switch_after => entry,
            Some(entry) => {
                // Switch to another partition (a different one when there is a choice).
                let previous = entry.0;
                let mut next = self.rng.gen_range(0..partitions);
                if partitions > 1 && next == previous {
                    next = (next + 1 + self.rng.gen_range(0..partitions - 1)) % partitions;
                }
                *entry = (next, 0);
                entry
            }
            None => {
                let first = self.rng.gen_range(0..partitions);
                self.current.entry(topic.to_owned()).or_insert((first, 0))
            }
        };
        entry.1 += bytes;
        entry.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Values from Kafka's own test (`UtilsTest.testMurmur2` in apache/kafka) and from Akka's
    /// `Murmur2Spec`, which pins values computed with Kafka's implementation.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
            (b"1", -1_993_445_489),
            (b"12", 126_087_238),
            (b"123", -267_702_483),
            (b"1234", -1_614_185_708),
            (b"12345", -1_188_365_604),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                *expected,
                "murmur2({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn key_partitions_follow_kafkas_rule() {
        // toPositive(-973932308) = 1173551340; % 10 = 0, % 7 = 1173551340 mod 7.
        assert_eq!(partition_for_key(b"21", 10), 1_173_551_340 % 10);
        assert_eq!(partition_for_key(b"21", 7), 1_173_551_340 % 7);
        assert_eq!(partition_for_key(b"abc", 3), 479_470_107 % 3);
        assert_eq!(partition_for_key(b"anything", 1), 0);
    }

    #[test]
    fn keys_spread_over_partitions() {
        let partitions = 8;
        let mut counts = [0u32; 8];
        for key in 0..8_000 {
            counts[partition_for_key(format!("key-{key}").as_bytes(), partitions) as usize] += 1;
        }
        for count in counts {
            assert!((800..1_200).contains(&count), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn sticky_switches_after_a_batch_worth() {
        let mut sticky = StickyPartitioner::new(ChaCha8Rng::seed_from_u64(1), 100);
        let first = sticky.partition("t", 4, 60);
        assert_eq!(sticky.partition("t", 4, 60), first);
        let next = sticky.partition("t", 4, 10);
        assert_ne!(next, first, "switches once 100 bytes went to {first}");
        // Deterministic for a given seed.
        let mut again = StickyPartitioner::new(ChaCha8Rng::seed_from_u64(1), 100);
        assert_eq!(again.partition("t", 4, 60), first);
        // One partition: always 0.
        let mut single = StickyPartitioner::new(ChaCha8Rng::seed_from_u64(2), 1);
        for _ in 0..5 {
            assert_eq!(single.partition("s", 1, 10), 0);
        }
    }
}
