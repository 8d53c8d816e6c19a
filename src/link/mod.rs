//! Sensors linked to a central (VoIPmonitor's "client/server" mode): `remote` queues and sends CDRs or packet
//! batches, `central` receives them, `merge` orders several remotes' packets for the central's analysis,
//! `secure` is the authenticated, encrypted connection under both, `msg` what travels inside it.

pub mod central;
pub mod forward;
pub mod merge;
pub mod mirror;
pub mod msg;
pub mod remote;
pub mod secure;
