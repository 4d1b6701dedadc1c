//! Bundling: records for the same destination share one datagram until it is full, due
//! or flushed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{Destination, Transmit};
use crate::membership::MemberId;
use crate::wire::cohort::reliable::{DatagramHeader, HEADER_LEN};

#[derive(Debug)]
struct Open {
    buf: BytesMut,
    opened: Instant,
}

/// The open datagrams, one per destination, and the header they start with.
#[derive(Debug)]
pub(crate) struct Bundler {
    local: MemberId,
    max: usize,
    view_seq: u64,
    view_start: u64,
    group: Option<Open>,
    members: Vec<(MemberId, Open)>,
    /// Buffers of sent datagrams given back by the runtime, reused for new group
    /// datagrams: a fresh 60 000-byte allocation per datagram costs page faults.
    spare: Vec<BytesMut>,
}

/// Spare datagram buffers kept at most.
const MAX_SPARE: usize = 8;

impl Bundler {
    pub(crate) fn new(local: MemberId, max_datagram: usize) -> Self {
        Self {
            local,
            max: max_datagram,
            view_seq: 0,
            view_start: 1,
            group: None,
            members: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Sets the view fields of the header of datagrams opened from now on.
    pub(crate) fn set_view(&mut self, view_seq: u64, view_start: u64) {
        self.view_seq = view_seq;
        self.view_start = view_start;
    }

    /// The buffer to append a record of `len` bytes for `to` to: the open datagram if the
    /// record fits, else a new one (the full one goes to `out`).
    pub(crate) fn buffer(
        &mut self,
        to: Destination,
        len: usize,
        now: Instant,
        out: &mut VecDeque<Transmit>,
    ) -> &mut BytesMut {
        let (slot, dest) = match to {
            Destination::Group => (&mut self.group, None),
            Destination::Member(id) => {
                let i = match self.members.iter().position(|(m, _)| *m == id) {
                    Some(i) => i,
                    None => {
                        self.members.push((
                            id,
                            Open {
                                buf: BytesMut::new(),
                                opened: now,
                            },
                        ));
                        self.members.len() - 1
                    }
                };
                let open = &mut self.members[i].1;
                if !open.buf.is_empty() && open.buf.len() + len > self.max {
                    out.push_back(Transmit {
                        to,
                        datagram: open.buf.split().freeze(),
                    });
                }
                if open.buf.is_empty() {
                    open.buf.reserve(self.max.max(HEADER_LEN + len));
                    open.opened = now;
                    DatagramHeader {
                        sender: self.local,
                        dest: Some(id),
                        view_seq: self.view_seq,
                        view_start: self.view_start,
                    }
                    .encode(&mut open.buf);
                }
                return &mut self.members[i].1.buf;
            }
        };
        if let Some(open) = slot
            && open.buf.len() + len > self.max
        {
            out.push_back(Transmit {
                to,
                datagram: open.buf.split().freeze(),
            });
            *slot = None;
        }
        let spare = &mut self.spare;
        let open = slot.get_or_insert_with(|| {
            let cap = self.max.max(HEADER_LEN + len);
            let mut buf = match spare.pop() {
                Some(b) if b.capacity() >= cap => b,
                _ => BytesMut::with_capacity(cap),
            };
            DatagramHeader {
                sender: self.local,
                dest,
                view_seq: self.view_seq,
                view_start: self.view_start,
            }
            .encode(&mut buf);
            Open { buf, opened: now }
        });
        &mut open.buf
    }

    /// Closes every open datagram opened at or before `before` (all if `None`).
    pub(crate) fn close(&mut self, before: Option<Instant>, out: &mut VecDeque<Transmit>) {
        let due = |o: &Open| before.is_none_or(|t| o.opened <= t);
        if let Some(open) = self.group.take_if(|o| due(o)) {
            out.push_back(Transmit {
                to: Destination::Group,
                datagram: open.buf.freeze(),
            });
        }
        for (id, open) in &mut self.members {
            if !open.buf.is_empty() && due(open) {
                out.push_back(Transmit {
                    to: Destination::Member(*id),
                    datagram: open.buf.split().freeze(),
                });
            }
        }
    }

    /// Keeps the buffer of a sent datagram for reuse if nothing else refers to it and it
    /// can hold a full datagram.
    pub(crate) fn recycle(&mut self, datagram: Bytes) {
        if self.spare.len() >= MAX_SPARE {
            return;
        }
        if let Ok(mut buf) = datagram.try_into_mut() {
            buf.clear();
            if buf.capacity() >= self.max {
                self.spare.push(buf);
            }
        }
    }

    /// True if some datagram is open (has records that a `close` would hand out).
    pub(crate) fn has_open(&self) -> bool {
        self.group.is_some() || self.members.iter().any(|(_, o)| !o.buf.is_empty())
    }

    /// Forgets the open datagram for a member that left.
    pub(crate) fn forget(&mut self, id: &MemberId) {
        self.members.retain(|(m, _)| m != id);
    }

    /// When the oldest open datagram is due, given how long one may linger.
    pub(crate) fn next_due(&self, linger: Duration) -> Option<Instant> {
        let group = self.group.as_ref().map(|o| o.opened);
        let members = self
            .members
            .iter()
            .filter(|(_, o)| !o.buf.is_empty())
            .map(|(_, o)| o.opened);
        group.into_iter().chain(members).min().map(|t| t + linger)
    }
}
