//! The body of a Tribes data frame (`ChannelData.getDataPackage` / `getDataFromPackage`).
//!
//! Layout: `options i32 | timestamp i64 | id length i32 | id | sender length i32 |
//! sender member record | message length i32 | message`.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{END_DATA, START_DATA};
use super::{MemberLimits, MemberRecord, SendOptions};
use crate::wire::DecodeError;
use crate::wire::reader::Reader;

/// Bounds applied while decoding a [`ChannelData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelDataLimits {
    /// Largest message id accepted (Tribes uses 16 bytes).
    pub max_unique_id: usize,
    /// Largest sender record accepted.
    pub max_sender: usize,
    /// Largest message accepted.
    pub max_message: usize,
    /// Bounds for the fields of the sender record.
    pub member: MemberLimits,
}

impl Default for ChannelDataLimits {
    fn default() -> Self {
        Self {
            max_unique_id: 1024,
            max_sender: 256 * 1024,
            max_message: 64 * 1024 * 1024,
            member: MemberLimits::default(),
        }
    }
}

/// One message as it travels in a data frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelData {
    /// How the message is to be sent and acknowledged.
    pub options: SendOptions,
    /// The sender's wall clock (ms since the Unix epoch) when it sent the message.
    pub timestamp_ms: i64,
    /// Message id: 16 random bytes in Tribes.
    pub unique_id: Bytes,
    /// The sender's member record.
    pub sender: MemberRecord,
    /// The message itself: raw bytes with [`SendOptions::BYTE_MESSAGE`], a serialized Java
    /// object otherwise.
    pub message: Bytes,
}

impl ChannelData {
    /// Decodes a frame body.
    pub fn decode(body: &Bytes, limits: &ChannelDataLimits) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let options = SendOptions(r.i32("options")? as u32);
        let timestamp_ms = r.i64("timestamp")?;
        let unique_id = r.length_prefixed("message id", limits.max_unique_id)?;
        let sender = r.length_prefixed("sender", limits.max_sender)?;
        let sender = MemberRecord::decode(&sender, &limits.member)?;
        let message = r.length_prefixed("message", limits.max_message)?;
        if r.remaining() != 0 {
            return Err(DecodeError::LengthMismatch {
                declared: body.len(),
                actual: body.len() - r.remaining(),
            });
        }
        Ok(Self {
            options,
            timestamp_ms,
            unique_id,
            sender,
            message,
        })
    }

    /// Appends the complete frame carrying this message to `out`.
    pub fn encode_frame(&self, out: &mut BytesMut) {
        encode_data_frame(
            self.options,
            self.timestamp_ms,
            &self.unique_id,
            &self.sender.to_bytes(),
            &self.message,
            out,
        );
    }
}

/// Appends a complete data frame to `out` from its parts. `sender` is an encoded
/// [`MemberRecord`]; a node encodes its own once and reuses it for every message.
pub fn encode_data_frame(
    options: SendOptions,
    timestamp_ms: i64,
    unique_id: &[u8],
    sender: &[u8],
    message: &[u8],
    out: &mut BytesMut,
) {
    let body_len = 24 + unique_id.len() + sender.len() + message.len();
    out.reserve(body_len + 18);
    out.put_slice(&START_DATA);
    out.put_i32(body_len as i32);
    out.put_i32(options.0 as i32);
    out.put_i64(timestamp_ms);
    out.put_i32(unique_id.len() as i32);
    out.put_slice(unique_id);
    out.put_i32(sender.len() as i32);
    out.put_slice(sender);
    out.put_i32(message.len() as i32);
    out.put_slice(message);
    out.put_slice(&END_DATA);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tribes::frame::FrameDecoder;

    /// The captured data frame of `tribes-vectors.md` §2: "hello tribes" with options 7.
    const CAPTURED_FRAME: &str = "464c54323030320000008100000007000001a20185fc5f000000107c5c22071c9f4b6a87f982b5f1fb96da0000004d5452494245532d420100000000350000000000000dbb00001023ffffffffffffffff047f00000100000000000000007f15a8528fd34598a973be093ec5ec59000000005452494245532d4501000000000c68656c6c6f20747269626573544c4632303033";

    #[test]
    fn decodes_and_reencodes_captured_frame() {
        let wire = hex::decode(CAPTURED_FRAME).unwrap();
        assert_eq!(wire.len(), 147);
        let mut buf = BytesMut::from(&wire[..]);
        let body = FrameDecoder::new(1 << 20)
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty());
        let data = ChannelData::decode(&body, &ChannelDataLimits::default()).unwrap();
        assert_eq!(
            data.options,
            SendOptions::BYTE_MESSAGE | SendOptions::USE_ACK | SendOptions::SYNCHRONIZED_ACK
        );
        assert!(data.options.wants_sync_ack());
        assert_eq!(data.timestamp_ms, 1_795_321_887_839);
        assert_eq!(
            hex::encode(&data.unique_id),
            "7c5c22071c9f4b6a87f982b5f1fb96da"
        );
        assert_eq!(data.sender.tcp_port, 4131);
        assert_eq!(data.sender.alive_ms, 3515);
        assert_eq!(
            hex::encode(data.sender.unique_id),
            "7f15a8528fd34598a973be093ec5ec59"
        );
        assert_eq!(&data.message[..], b"hello tribes");

        let mut out = BytesMut::new();
        data.encode_frame(&mut out);
        assert_eq!(hex::encode(&out), CAPTURED_FRAME);
    }

    #[test]
    fn every_truncated_body_is_an_error() {
        let wire = hex::decode(CAPTURED_FRAME).unwrap();
        let body = Bytes::copy_from_slice(&wire[11..wire.len() - 7]);
        for len in 0..body.len() {
            assert!(
                ChannelData::decode(&body.slice(..len), &ChannelDataLimits::default()).is_err()
            );
        }
        let mut long = body.to_vec();
        long.push(0);
        assert!(matches!(
            ChannelData::decode(&Bytes::from(long), &ChannelDataLimits::default()),
            Err(DecodeError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn message_over_limit_is_refused() {
        let wire = hex::decode(CAPTURED_FRAME).unwrap();
        let body = Bytes::copy_from_slice(&wire[11..wire.len() - 7]);
        let limits = ChannelDataLimits {
            max_message: 4,
            ..Default::default()
        };
        assert!(matches!(
            ChannelData::decode(&body, &limits),
            Err(DecodeError::TooLong {
                field: "message",
                length: 12,
                max: 4
            })
        ));
    }
}
