//! The slow side's storage: CDRs in MySQL/MariaDB, per-call pcap files in the spool, and the on-disk queue that
//! keeps CDRs (and a remote sensor's batches) until their consumer has them.

pub mod cdrlog;
pub mod cleanspool;
pub mod mysql;
pub mod perms;
pub mod queue;
pub mod spool;
pub mod tar;
