//! SIP and SDP parsing (zero-copy views over the message bytes).

pub mod framing;
pub mod msg;
pub mod sdp;
