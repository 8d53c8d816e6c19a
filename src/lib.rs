//! voxtap: a passive VoIP monitor. See DESIGN.md for the fast side (rx cores → owner cores) and the slow side.

pub mod call;
pub mod capture;
pub mod config;
pub mod decode;
pub mod dispatch;
pub mod edge;
pub mod errors;
pub mod link;
pub mod manager;
pub mod notify;
pub mod os;
pub mod plan;
pub mod report;
pub mod rtp;
pub mod runtime;
pub mod sip;
pub mod stats;
pub mod store;
pub mod time;
