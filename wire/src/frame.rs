//! The frame codec: how one message travels on a TCP stream.
//!
//! A frame is an 8-byte header and a body. All integers are little-endian.
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0 | 4 | body length: bytes after the header |
//! | 4 | 4 | CRC-32C of the envelope length and the envelope (not of the payload) |
//! | 8 | 4 | envelope length |
//! | 12 | envelope length | envelope: a postcard message (see [`crate::protocol`]) |
//! | .. | rest of the body | payload: raw bytes (record batches), possibly empty |
//!
//! Record batches travel as the payload, next to the envelope and never inside it, so produce
//! and fetch move a batch from socket to log and from log to socket without a pass through
//! serde or a copy: the encoder hands back the head (header + envelope) separately from the
//! payload for a vectored write, and the decoder splits the read buffer without copying.
//!
//! The frame CRC leaves the payload out on purpose: the payload is record batches, each with
//! its own CRC-32C that the receiver checks anyway (the broker before it appends a produced
//! batch, the consumer before it decodes a fetched one). Hashing the payload again in the
//! frame cost a pass over every byte at each end and protected nothing more.
//!
//! A receiver bounds what it buffers: the body length is checked against the configured maximum
//! as soon as the 8 header bytes are in, before any of the body is buffered. A decode error
//! leaves the stream unsynchronised (there is no resync marker), so the receiver answers with
//! an error where it can and closes the connection.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of the fixed frame header: body length + CRC.
pub const FRAME_HEADER_LEN: usize = 8;
/// Bytes of the envelope-length field at the start of the body.
pub const ENVELOPE_LENGTH_LEN: usize = 4;
/// Default largest payload the frame limit is sized for: 8 MiB of record batches.
pub const PAYLOAD_BYTES_MAX_DEFAULT: usize = 8 * 1024 * 1024;
/// Room above the payload for the header and the envelope.
pub const FRAME_OVERHEAD_BYTES_MAX: usize = 64 * 1024;
/// Default maximum size of a whole frame (header included).
pub const FRAME_BYTES_MAX_DEFAULT: usize = PAYLOAD_BYTES_MAX_DEFAULT + FRAME_OVERHEAD_BYTES_MAX;
/// A frame can never exceed this: the body length is a u32.
pub const FRAME_BYTES_MAX_LIMIT: usize = FRAME_HEADER_LEN + u32::MAX as usize;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {frame_bytes} bytes exceeds the maximum of {frame_bytes_max} bytes")]
    TooLarge {
        frame_bytes: u64,
        frame_bytes_max: u64,
    },
    #[error("frame CRC mismatch: header says {stored:#010x}, envelope hashes to {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("frame body of {body_bytes} bytes is too short for the envelope length field")]
    MissingEnvelopeLength { body_bytes: u32 },
    #[error("envelope length {envelope_bytes} runs past the frame body ({body_bytes} bytes)")]
    EnvelopeBeyondFrame {
        envelope_bytes: u32,
        body_bytes: u32,
    },
}

/// One decoded frame: the envelope bytes (postcard) and the payload bytes, both slices of the
/// read buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub envelope: Bytes,
    pub payload: Bytes,
}

/// Clamp a configured maximum into what the format can express.
fn clamp_frame_bytes_max(frame_bytes_max: usize) -> usize {
    frame_bytes_max.clamp(
        FRAME_HEADER_LEN + ENVELOPE_LENGTH_LEN,
        FRAME_BYTES_MAX_LIMIT,
    )
}

/// Writes frames, refusing any larger than the configured maximum (normally the peer's limit,
/// learned in the handshake, so a frame the peer would reject is never sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEncoder {
    frame_bytes_max: usize,
}

impl Default for FrameEncoder {
    fn default() -> Self {
        FrameEncoder::new(FRAME_BYTES_MAX_DEFAULT)
    }
}

impl FrameEncoder {
    /// An encoder for frames of at most `frame_bytes_max` bytes, header included (clamped to
    /// what a u32 body length can express).
    pub fn new(frame_bytes_max: usize) -> Self {
        FrameEncoder {
            frame_bytes_max: clamp_frame_bytes_max(frame_bytes_max),
        }
    }

    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    /// Append one whole frame to `out`. Copies the payload: for large payloads prefer
    /// [`FrameEncoder::encode_head`] and a vectored write.
    pub fn encode(
        &self,
        envelope: &[u8],
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), FrameError> {
        let head = self.head(envelope, &[payload])?;
        out.reserve(head.len() + payload.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(payload);
        Ok(())
    }

    /// The head of a frame (header, envelope length, envelope) for a payload made of
    /// `payload_parts` in order. Write the head, then each part, to send the frame without
    /// copying the payload.
    pub fn encode_head<P: AsRef<[u8]>>(
        &self,
        envelope: &[u8],
        payload_parts: &[P],
    ) -> Result<Bytes, FrameError> {
        self.head(envelope, payload_parts).map(Bytes::from)
    }

    fn head<P: AsRef<[u8]>>(
        &self,
        envelope: &[u8],
        payload_parts: &[P],
    ) -> Result<Vec<u8>, FrameError> {
        let payload_bytes: u64 = payload_parts
            .iter()
            .map(|part| part.as_ref().len() as u64)
            .sum();
        let frame_bytes =
            (FRAME_HEADER_LEN + ENVELOPE_LENGTH_LEN) as u64 + envelope.len() as u64 + payload_bytes;
        if frame_bytes > self.frame_bytes_max as u64 {
            return Err(FrameError::TooLarge {
                frame_bytes,
                frame_bytes_max: self.frame_bytes_max as u64,
            });
        }
        // Both fit in a u32: frame_bytes_max is clamped to FRAME_BYTES_MAX_LIMIT.
        let body_bytes = (frame_bytes - FRAME_HEADER_LEN as u64) as u32;
        let envelope_bytes = envelope.len() as u32;
        let mut head = Vec::with_capacity(FRAME_HEADER_LEN + ENVELOPE_LENGTH_LEN + envelope.len());
        head.extend_from_slice(&body_bytes.to_le_bytes());
        head.extend_from_slice(&[0; 4]); // CRC, filled below
        head.extend_from_slice(&envelope_bytes.to_le_bytes());
        head.extend_from_slice(envelope);
        let crc = crc32c::crc32c(&head[FRAME_HEADER_LEN..]);
        head[4..8].copy_from_slice(&crc.to_le_bytes());
        Ok(head)
    }
}

/// Reads frames out of a connection's read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    frame_bytes_max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(FRAME_BYTES_MAX_DEFAULT)
    }
}

impl FrameDecoder {
    /// A decoder that refuses frames over `frame_bytes_max` bytes, header included (clamped to
    /// what a u32 body length can express).
    pub fn new(frame_bytes_max: usize) -> Self {
        FrameDecoder {
            frame_bytes_max: clamp_frame_bytes_max(frame_bytes_max),
        }
    }

    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    /// Take the next whole frame off the front of `buffer`.
    ///
    /// `Ok(None)`: more bytes are needed (`buffer` is untouched, but capacity for the rest of
    /// the frame may have been reserved: at most the configured maximum). `Ok(Some(frame))`: the
    /// frame's bytes were split off `buffer`. `Err`: the stream is bad; `buffer` is untouched and
    /// the connection should be closed.
    pub fn decode(&self, buffer: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buffer.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let body_bytes = u32::from_le_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
        let stored = u32::from_le_bytes([buffer[4], buffer[5], buffer[6], buffer[7]]);
        let frame_bytes = FRAME_HEADER_LEN as u64 + u64::from(body_bytes);
        if frame_bytes > self.frame_bytes_max as u64 {
            return Err(FrameError::TooLarge {
                frame_bytes,
                frame_bytes_max: self.frame_bytes_max as u64,
            });
        }
        // Below frame_bytes_max, itself a usize.
        let frame_bytes = frame_bytes as usize;
        if buffer.len() < frame_bytes {
            buffer.reserve(frame_bytes - buffer.len());
            return Ok(None);
        }
        let body = &buffer[FRAME_HEADER_LEN..frame_bytes];
        if body.len() < ENVELOPE_LENGTH_LEN {
            return Err(FrameError::MissingEnvelopeLength { body_bytes });
        }
        let envelope_bytes = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
        if u64::from(envelope_bytes) > u64::from(body_bytes) - ENVELOPE_LENGTH_LEN as u64 {
            // Checked before the CRC (which needs the envelope's extent); a damaged length
            // is refused either way.
            return Err(FrameError::EnvelopeBeyondFrame {
                envelope_bytes,
                body_bytes,
            });
        }
        let computed = crc32c::crc32c(&body[..ENVELOPE_LENGTH_LEN + envelope_bytes as usize]);
        if computed != stored {
            return Err(FrameError::CrcMismatch { stored, computed });
        }
        let mut frame = buffer.split_to(frame_bytes);
        frame.advance(FRAME_HEADER_LEN + ENVELOPE_LENGTH_LEN);
        let envelope = frame.split_to(envelope_bytes as usize).freeze();
        Ok(Some(Frame {
            envelope,
            payload: frame.freeze(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame_bytes(envelope: &[u8], payload: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        FrameEncoder::default()
            .encode(envelope, payload, &mut out)
            .expect("encode");
        out
    }

    /// Golden bytes: the frame layout is a contract with every client.
    #[test]
    fn golden_bytes() {
        let frame = frame_bytes(b"env", b"PAY!");
        let body: &[u8] = &[3, 0, 0, 0, b'e', b'n', b'v', b'P', b'A', b'Y', b'!'];
        let mut expected = vec![11, 0, 0, 0];
        expected.extend_from_slice(&crc32c::crc32c(&body[..7]).to_le_bytes());
        expected.extend_from_slice(body);
        assert_eq!(&frame[..], &expected[..]);
        // The CRC-32C of the envelope length and envelope, pinned so a change of algorithm or
        // coverage fails too.
        assert_eq!(
            &frame[4..8],
            &[0xf5, 0x56, 0xfb, 0x3d],
            "crc: {:02x?}",
            &frame[4..8]
        );
    }

    #[test]
    fn head_and_parts_equal_the_whole_frame() {
        let encoder = FrameEncoder::default();
        let parts = [
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from_static(b"defgh"),
        ];
        let head = encoder.encode_head(b"envelope", &parts).expect("head");
        let mut joined = head.to_vec();
        for part in &parts {
            joined.extend_from_slice(part);
        }
        assert_eq!(joined, &frame_bytes(b"envelope", b"abcdefgh")[..]);
    }

    #[test]
    fn round_trip_and_zero_copy() {
        let mut buffer = frame_bytes(b"hello", b"batches");
        let start = buffer.as_ptr() as usize;
        let frame = FrameDecoder::default()
            .decode(&mut buffer)
            .expect("ok")
            .expect("frame");
        assert_eq!(&frame.envelope[..], b"hello");
        assert_eq!(&frame.payload[..], b"batches");
        assert!(buffer.is_empty());
        // Both are views of the original read buffer.
        assert_eq!(frame.envelope.as_ptr() as usize, start + 12);
        assert_eq!(frame.payload.as_ptr() as usize, start + 17);
    }

    #[test]
    fn empty_envelope_and_payload() {
        let mut buffer = frame_bytes(b"", b"");
        assert_eq!(buffer.len(), 12);
        let frame = FrameDecoder::default()
            .decode(&mut buffer)
            .expect("ok")
            .expect("frame");
        assert!(frame.envelope.is_empty() && frame.payload.is_empty());
    }

    #[test]
    fn partial_reads_byte_by_byte() {
        let whole = frame_bytes(b"envelope", b"payload");
        let decoder = FrameDecoder::default();
        let mut buffer = BytesMut::new();
        for (index, byte) in whole.iter().enumerate() {
            buffer.extend_from_slice(&[*byte]);
            let decoded = decoder.decode(&mut buffer).expect("ok");
            if index + 1 < whole.len() {
                assert!(
                    decoded.is_none(),
                    "frame complete after {} bytes",
                    index + 1
                );
                assert_eq!(
                    buffer.len(),
                    index + 1,
                    "the buffer is untouched while incomplete"
                );
            } else {
                let frame = decoded.expect("frame at the last byte");
                assert_eq!(&frame.envelope[..], b"envelope");
                assert_eq!(&frame.payload[..], b"payload");
            }
        }
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let mut buffer = BytesMut::new();
        for index in 0..5u8 {
            buffer.extend_from_slice(&frame_bytes(&[index], &vec![index; usize::from(index) * 3]));
        }
        // And the first half of a sixth.
        let sixth = frame_bytes(b"six", b"666");
        buffer.extend_from_slice(&sixth[..7]);
        let decoder = FrameDecoder::default();
        for index in 0..5u8 {
            let frame = decoder.decode(&mut buffer).expect("ok").expect("frame");
            assert_eq!(&frame.envelope[..], &[index]);
            assert_eq!(frame.payload.len(), usize::from(index) * 3);
        }
        assert_eq!(decoder.decode(&mut buffer), Ok(None));
        buffer.extend_from_slice(&sixth[7..]);
        let frame = decoder.decode(&mut buffer).expect("ok").expect("frame");
        assert_eq!(&frame.payload[..], b"666");
        assert!(buffer.is_empty());
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let decoder = FrameDecoder::new(1024);
        // Only the 8 header bytes are in: the claimed length alone is enough to refuse.
        // A body of 1016 bytes: a frame of exactly 1024.
        let mut buffer = BytesMut::from(&[0xf8, 0x03, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(
            decoder.decode(&mut buffer),
            Ok(None),
            "exactly the maximum is allowed"
        );
        let mut buffer = BytesMut::from(&[0xf9, 0x03, 0, 0, 0, 0, 0, 0][..]);
        assert_eq!(
            decoder.decode(&mut buffer),
            Err(FrameError::TooLarge {
                frame_bytes: 1025,
                frame_bytes_max: 1024
            })
        );
        let mut buffer = BytesMut::from(&[0xff; 8][..]);
        assert!(matches!(
            FrameDecoder::default().decode(&mut buffer),
            Err(FrameError::TooLarge { .. })
        ));
        // No buffering was promised for a refused frame.
        assert!(buffer.capacity() < 1024);
    }

    #[test]
    fn encoder_refuses_frames_over_its_maximum() {
        let encoder = FrameEncoder::new(20);
        assert!(encoder.encode_head(b"env", &[&[0u8; 5][..]]).is_ok()); // 12 + 3 + 5 = 20
        assert_eq!(
            encoder.encode_head(b"env", &[&[0u8; 6][..]]),
            Err(FrameError::TooLarge {
                frame_bytes: 21,
                frame_bytes_max: 20
            })
        );
    }

    #[test]
    fn crc_mismatch_anywhere_in_the_envelope_and_the_payload_left_to_batch_crcs() {
        let clean = frame_bytes(b"envelope", b"payload");
        let payload_start = FRAME_HEADER_LEN + ENVELOPE_LENGTH_LEN + b"envelope".len();
        for position in FRAME_HEADER_LEN..payload_start {
            let mut damaged = clean.clone();
            damaged[position] ^= 0x01;
            assert!(
                matches!(
                    FrameDecoder::default().decode(&mut damaged),
                    Err(FrameError::CrcMismatch { .. } | FrameError::EnvelopeBeyondFrame { .. })
                ),
                "flip at {position} not detected"
            );
        }
        let mut damaged = clean.clone();
        damaged[5] ^= 0x80; // the CRC itself
        assert!(matches!(
            FrameDecoder::default().decode(&mut damaged),
            Err(FrameError::CrcMismatch { .. })
        ));
        // The payload is record batches with CRCs of their own, checked by the receiver.
        let mut damaged = clean.clone();
        damaged[payload_start] ^= 0x01;
        let frame = FrameDecoder::default()
            .decode(&mut damaged)
            .expect("decode")
            .expect("a whole frame");
        assert_eq!(&frame.envelope[..], b"envelope");
        assert_eq!(&frame.payload[..], b"qayload");
    }

    /// A frame with a valid CRC but a body the caller chose (as a buggy or hostile peer would).
    fn raw_frame(body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let covered = match body.get(..ENVELOPE_LENGTH_LEN) {
            Some(length) => {
                let envelope = u32::from_le_bytes([length[0], length[1], length[2], length[3]]);
                (ENVELOPE_LENGTH_LEN + envelope as usize).min(body.len())
            }
            None => body.len(),
        };
        out.extend_from_slice(&crc32c::crc32c(&body[..covered]).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn envelope_length_beyond_the_frame() {
        let decoder = FrameDecoder::default();
        assert_eq!(
            decoder.decode(&mut raw_frame(&[9, 0, 0, 0, 1, 2, 3])),
            Err(FrameError::EnvelopeBeyondFrame {
                envelope_bytes: 9,
                body_bytes: 7
            })
        );
        assert_eq!(
            decoder.decode(&mut raw_frame(&[0xff, 0xff, 0xff, 0xff])),
            Err(FrameError::EnvelopeBeyondFrame {
                envelope_bytes: u32::MAX,
                body_bytes: 4
            })
        );
        assert_eq!(
            decoder.decode(&mut raw_frame(&[1, 0])),
            Err(FrameError::MissingEnvelopeLength { body_bytes: 2 })
        );
        // The envelope may fill the whole body (no payload).
        let frame = decoder
            .decode(&mut raw_frame(&[3, 0, 0, 0, 1, 2, 3]))
            .expect("ok")
            .expect("frame");
        assert_eq!(&frame.envelope[..], &[1, 2, 3]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let decoder = FrameDecoder::default();
        let mut buffer = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..]);
        // "GET " as a length is ~542 MB: refused before buffering.
        assert!(matches!(
            decoder.decode(&mut buffer),
            Err(FrameError::TooLarge { .. })
        ));
        let mut buffer = BytesMut::from(&[5, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9][..]);
        assert!(matches!(
            decoder.decode(&mut buffer),
            Err(FrameError::EnvelopeBeyondFrame { .. })
        ));
        let mut buffer = BytesMut::from(&[5, 0, 0, 0, 1, 2, 3, 4, 1, 0, 0, 0, 9][..]);
        assert!(matches!(
            decoder.decode(&mut buffer),
            Err(FrameError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn configured_maximum_is_clamped() {
        assert_eq!(FrameDecoder::new(0).frame_bytes_max(), 12);
        assert_eq!(
            FrameDecoder::new(usize::MAX).frame_bytes_max(),
            FRAME_BYTES_MAX_LIMIT
        );
        assert_eq!(
            FrameDecoder::default().frame_bytes_max(),
            8 * 1024 * 1024 + 64 * 1024
        );
    }

    proptest! {
        /// Arbitrary bytes in arbitrary chunkings: never a panic, and the outcome does not
        /// depend on how the bytes were split across reads.
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            chunk_sizes in proptest::collection::vec(1usize..64, 1..40),
            frame_bytes_max in 0usize..2048,
        ) {
            let decoder = FrameDecoder::new(frame_bytes_max);
            let whole = decode_all(&decoder, &bytes, &[bytes.len().max(1)]);
            let chunked = decode_all(&decoder, &bytes, &chunk_sizes);
            prop_assert_eq!(whole, chunked);
        }

        /// Valid frames survive any chunking, also when followed by garbage.
        #[test]
        fn frames_survive_any_chunking(
            messages in proptest::collection::vec(
                (
                    proptest::collection::vec(any::<u8>(), 0..50),
                    proptest::collection::vec(any::<u8>(), 0..300),
                ),
                1..6),
            chunk_sizes in proptest::collection::vec(1usize..97, 1..20),
            trailing in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut stream = Vec::new();
            for (envelope, payload) in &messages {
                stream.extend_from_slice(&frame_bytes(envelope, payload));
            }
            stream.extend_from_slice(&trailing);
            let (frames, _) = decode_all(&FrameDecoder::default(), &stream, &chunk_sizes);
            prop_assert!(frames.len() >= messages.len());
            for (frame, (envelope, payload)) in frames.iter().zip(&messages) {
                prop_assert_eq!(&frame.envelope[..], &envelope[..]);
                prop_assert_eq!(&frame.payload[..], &payload[..]);
            }
        }
    }

    /// Feed `bytes` to a decoder in chunks (cycling through `chunk_sizes`) and collect every
    /// frame up to the first error.
    fn decode_all(
        decoder: &FrameDecoder,
        bytes: &[u8],
        chunk_sizes: &[usize],
    ) -> (Vec<Frame>, Option<FrameError>) {
        let mut buffer = BytesMut::new();
        let mut frames = Vec::new();
        let mut position = 0;
        for chunk_size in chunk_sizes.iter().cycle() {
            if position >= bytes.len() {
                break;
            }
            let end = (position + chunk_size).min(bytes.len());
            buffer.extend_from_slice(&bytes[position..end]);
            position = end;
            loop {
                match decoder.decode(&mut buffer) {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(error) => return (frames, Some(error)),
                }
            }
        }
        (frames, None)
    }
}
