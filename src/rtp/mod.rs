//! RTP and RTCP: header views, per-stream quality (loss, jitter, delay, MOS), RTCP reports.

pub mod header;
pub mod mos;
pub mod rtcp;
pub mod stream;
