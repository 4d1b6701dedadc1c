//! The records of total-order multicast ([`crate::total`]), carried as the payload of
//! reliable messages: a member forwards what it wants multicast to the sequencer (a
//! reliable unicast), and the sequencer multicasts it in its own stream (a reliable
//! multicast), whose one order every member delivers.
//!
//! A record is one kind byte, then the fields, big-endian; the payload runs to the end.
//! The envelope of the reliable datagram that carries it already says which protocol and
//! version this is, so a record has none of its own.

use bytes::{BufMut, Bytes, BytesMut};

use crate::membership::MemberId;
use crate::wire::DecodeError;
use crate::wire::reader::Reader;

const FORWARD: u8 = 1;
const ORDERED: u8 = 2;

/// Length of a [`TotalRecord::Forward`] before its payload.
pub const FORWARD_HEADER_LEN: usize = 1 + 8;
/// Length of a [`TotalRecord::Ordered`] before its payload.
pub const ORDERED_HEADER_LEN: usize = 1 + 16 + 8;

/// One total-order record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TotalRecord {
    /// Member → sequencer: order this message, the sender's `seq`-th total-order message.
    Forward {
        /// The sender's own numbering of its total-order messages, from 1.
        seq: u64,
        /// The application's message.
        payload: Bytes,
    },
    /// Sequencer → everyone: deliver `origin`'s `seq`-th message now.
    Ordered {
        /// The member that asked for the message to be multicast.
        origin: MemberId,
        /// `origin`'s numbering of it.
        seq: u64,
        /// The application's message.
        payload: Bytes,
    },
}

impl TotalRecord {
    /// The record as bytes.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        match self {
            Self::Forward { seq, payload } => {
                out.put_u8(FORWARD);
                out.put_u64(*seq);
                out.put_slice(payload);
            }
            Self::Ordered {
                origin,
                seq,
                payload,
            } => {
                out.put_u8(ORDERED);
                out.put_slice(&origin.0);
                out.put_u64(*seq);
                out.put_slice(payload);
            }
        }
        out.freeze()
    }

    /// Bytes [`encode`](Self::encode) produces.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Forward { payload, .. } => FORWARD_HEADER_LEN + payload.len(),
            Self::Ordered { payload, .. } => ORDERED_HEADER_LEN + payload.len(),
        }
    }

    /// Decodes one record; the payload is a slice of `bytes`, not a copy.
    pub fn decode(bytes: &Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let kind = r.array::<1>("kind")?[0];
        let record = match kind {
            FORWARD => {
                let seq = u64::from_be_bytes(r.array::<8>("seq")?);
                Self::Forward {
                    seq,
                    payload: r.bytes("payload", r.remaining())?,
                }
            }
            ORDERED => {
                let origin = MemberId(r.array::<16>("origin")?);
                let seq = u64::from_be_bytes(r.array::<8>("seq")?);
                Self::Ordered {
                    origin,
                    seq,
                    payload: r.bytes("payload", r.remaining())?,
                }
            }
            other => {
                return Err(DecodeError::InvalidField {
                    field: "kind",
                    detail: format!("unknown total-order record {other}"),
                });
            }
        };
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<TotalRecord> {
        vec![
            TotalRecord::Forward {
                seq: 1,
                payload: Bytes::from_static(b"hello"),
            },
            TotalRecord::Forward {
                seq: u64::MAX,
                payload: Bytes::new(),
            },
            TotalRecord::Ordered {
                origin: MemberId([7; 16]),
                seq: 42,
                payload: Bytes::from_static(b"world"),
            },
        ]
    }

    #[test]
    fn every_record_round_trips() {
        for record in samples() {
            let bytes = record.encode();
            assert_eq!(bytes.len(), record.encoded_len());
            assert_eq!(TotalRecord::decode(&bytes).unwrap(), record);
        }
    }

    #[test]
    fn every_truncation_of_a_header_is_an_error() {
        for record in samples() {
            let bytes = record.encode();
            let header = match record {
                TotalRecord::Forward { .. } => FORWARD_HEADER_LEN,
                TotalRecord::Ordered { .. } => ORDERED_HEADER_LEN,
            };
            for cut in 0..header {
                assert!(
                    TotalRecord::decode(&bytes.slice(..cut)).is_err(),
                    "{record:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn an_unknown_kind_is_an_error() {
        let bytes = Bytes::from_static(&[9, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert!(matches!(
            TotalRecord::decode(&bytes),
            Err(DecodeError::InvalidField { field: "kind", .. })
        ));
    }

    /// Writes the fuzz target's seed corpus:
    /// `COHORT_WRITE_SEEDS=1 cargo test -p cohort-proto wire::cohort::total::tests::write_fuzz_seeds`.
    #[test]
    fn write_fuzz_seeds() {
        if std::env::var_os("COHORT_WRITE_SEEDS").is_none() {
            return;
        }
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/cohort_total");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, record) in samples().iter().enumerate() {
            std::fs::write(dir.join(format!("record-{i}")), record.encode()).unwrap();
        }
    }
}
