//! Arbitrary bytes into `FrameDecoder`, in arbitrary chunkings, and every frame it yields into
//! `decode_request` and `decode_response`.
//!
//! Input: byte 0 picks the mode and the frame limit, byte 1 the chunk size; the rest is the
//! stream. In "fixed" mode (odd byte 0) the rest is wrapped as one frame with a correct length
//! and CRC, so the fuzzer reaches the envelope decoders without having to forge a CRC-32C.
//! Checks: no panic; the result does not depend on the chunking; an envelope that decodes
//! re-encodes into a frame that decodes to the same message.
#![no_main]

use brook_wire::frame::{Frame, FrameDecoder, FrameEncoder, FrameError};
use brook_wire::protocol::{decode_request, decode_response, encode_request, encode_response};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fn decode_all(
    decoder: &FrameDecoder,
    stream: &[u8],
    chunk: usize,
) -> (Vec<Frame>, Option<FrameError>) {
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        buffer.extend_from_slice(piece);
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

fuzz_target!(|data: &[u8]| {
    let [mode, chunk, rest @ ..] = data else {
        return;
    };
    let frame_bytes_max = 16 + usize::from(mode >> 1) * 64;
    let decoder = FrameDecoder::new(frame_bytes_max);
    let stream: Vec<u8> = if mode & 1 == 1 {
        // One frame around `rest`, with a right length and CRC (of the envelope length and
        // the envelope, as far as `rest` has them): `rest` is the body.
        let covered = match rest {
            [a, b, c, d, ..] => (4 + u32::from_le_bytes([*a, *b, *c, *d]) as usize).min(rest.len()),
            _ => rest.len(),
        };
        let mut stream = Vec::with_capacity(8 + rest.len());
        stream.extend_from_slice(&(rest.len() as u32).to_le_bytes());
        stream.extend_from_slice(&crc32c::crc32c(&rest[..covered]).to_le_bytes());
        stream.extend_from_slice(rest);
        stream
    } else {
        rest.to_vec()
    };
    let whole = decode_all(&decoder, &stream, stream.len());
    let chunked = decode_all(&decoder, &stream, usize::from(*chunk));
    assert_eq!(whole, chunked, "the chunking changed the outcome");

    let encoder = FrameEncoder::new(usize::MAX);
    let unlimited = FrameDecoder::new(usize::MAX);
    for frame in whole.0 {
        if let Ok((envelope, payload)) = decode_request(frame.clone()) {
            let mut again = BytesMut::new();
            encode_request(&encoder, &envelope, &payload, &mut again).expect("re-encode");
            let frame = unlimited.decode(&mut again).expect("frame").expect("whole");
            let (decoded, decoded_payload) = decode_request(frame).expect("decode again");
            assert_eq!(decoded, envelope);
            assert_eq!(decoded_payload, payload);
        }
        if let Ok((envelope, payload)) = decode_response(frame) {
            let mut again = BytesMut::new();
            encode_response(&encoder, &envelope, &payload, &mut again).expect("re-encode");
            let frame = unlimited.decode(&mut again).expect("frame").expect("whole");
            let (decoded, decoded_payload) = decode_response(frame).expect("decode again");
            assert_eq!(decoded, envelope);
            assert_eq!(decoded_payload, payload);
        }
    }
});
