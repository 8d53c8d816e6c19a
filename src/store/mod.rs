//! The slow side's storage: CDRs in MySQL/MariaDB, per-call pcap files in the spool.

pub mod cdrlog;
pub mod cleanspool;
pub mod mysql;
pub mod spool;
pub mod tar;
