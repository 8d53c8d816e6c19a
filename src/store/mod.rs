//! The slow side's storage: per-call pcap files in the spool (MySQL and cleanspool arrive with the storage
//! issue).

pub mod spool;
