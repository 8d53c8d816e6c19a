//! The tables voxtap fills, with VoIPmonitor's table names, column names, types and indexes (reference §4.2)
//! for what voxtap records, so its GUI and operators' SQL read them unchanged. voxtap's own DDL; text columns are
//! utf8mb4 (VoIPmonitor uses latin1 and stores raw bytes), dictionary keys compare exactly, trailing spaces
//! included (a NO PAD binary collation).

/// Shapes that depend on the configuration, as in VoIPmonitor.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// `ipv6 = yes`: addresses are `varbinary(16)` (4 bytes for IPv4, as INET6_ATON gives) instead of
    /// `int unsigned` (where an IPv6 address cannot be stored and is left NULL).
    pub ipv6: bool,
    /// `time_precision_in_ms = yes`: `datetime(3)` and `decimal(9,3)` durations, else whole seconds.
    pub ms: bool,
    /// `cdr_partition = yes`: tables with a `calldate` are partitioned by day (`pYYMMDD`).
    pub partition: bool,
}

impl Shape {
    pub fn ip(&self) -> &'static str {
        if self.ipv6 {
            "varbinary(16)"
        } else {
            "int unsigned"
        }
    }
    pub fn datetime(&self) -> &'static str {
        if self.ms {
            "datetime(3)"
        } else {
            "datetime"
        }
    }
    pub fn duration(&self) -> &'static str {
        if self.ms {
            "decimal(9,3)"
        } else {
            "mediumint unsigned"
        }
    }
}

/// Tables partitioned by day when `cdr_partition` is on (every table whose rows carry a `calldate`).
pub const PARTITIONED: &[&str] = &["cdr", "cdr_next", "cdr_rtp", "cdr_proxy", "voxtap_cdr_stored"];

/// The `a_`/`b_` columns of `cdr`, with their types (without the prefix).
pub const SIDE_COLUMNS: &[(&str, &str)] = &[
    ("index", "tinyint"),
    ("payload", "int"),
    ("received", "mediumint unsigned"),
    ("lost", "mediumint unsigned"),
    ("avgjitter_mult10", "mediumint unsigned"),
    ("maxjitter", "smallint unsigned"),
    ("sl1", "mediumint unsigned"),
    ("sl2", "mediumint unsigned"),
    ("sl3", "mediumint unsigned"),
    ("sl4", "mediumint unsigned"),
    ("sl5", "mediumint unsigned"),
    ("sl6", "mediumint unsigned"),
    ("sl7", "mediumint unsigned"),
    ("sl8", "mediumint unsigned"),
    ("sl9", "mediumint unsigned"),
    ("sl10", "mediumint unsigned"),
    ("d50", "mediumint unsigned"),
    ("d70", "mediumint unsigned"),
    ("d90", "mediumint unsigned"),
    ("d120", "mediumint unsigned"),
    ("d150", "mediumint unsigned"),
    ("d200", "mediumint unsigned"),
    ("d300", "mediumint unsigned"),
    ("mos_f1_mult10", "tinyint unsigned"),
    ("mos_f2_mult10", "tinyint unsigned"),
    ("mos_adapt_mult10", "tinyint unsigned"),
    ("mos_xr_mult10", "tinyint unsigned"),
    ("mos_f1_min_mult10", "tinyint unsigned"),
    ("mos_f2_min_mult10", "tinyint unsigned"),
    ("mos_adapt_min_mult10", "tinyint unsigned"),
    ("mos_min_mult10", "tinyint unsigned"),
    ("rtcp_loss", "mediumint"),
    ("rtcp_maxfr", "smallint unsigned"),
    ("rtcp_avgfr_mult10", "smallint unsigned"),
    ("rtcp_maxjitter", "smallint unsigned"),
    ("rtcp_avgjitter_mult10", "smallint unsigned"),
    ("rtcp_avgrtd_mult10", "smallint unsigned"),
    ("rtcp_maxrtd_mult10", "smallint unsigned"),
    ("packet_loss_perc_mult1000", "mediumint unsigned"),
    ("delay_sum", "mediumint unsigned"),
    ("delay_cnt", "mediumint unsigned"),
    ("delay_avg_mult100", "mediumint unsigned"),
];

fn partition_clause(shape: &Shape, first_day: Option<(i32, u32, u32)>) -> String {
    match (shape.partition, first_day) {
        (true, Some((y, m, d))) => {
            let (ny, nm, nd) = crate::time::next_day(y, m, d);
            // The writer only asks for days partition_name takes; another falls back to the nearest it does.
            let name = partition_name(y, m, d).unwrap_or_else(|| if y < 2000 { "p000101" } else { "p991231" }.into());
            format!(
                " PARTITION BY RANGE COLUMNS(calldate) (PARTITION {name} VALUES LESS THAN \
                 ('{ny:04}-{nm:02}-{nd:02}'))"
            )
        }
        _ => String::new(),
    }
}

/// The dictionary tables' text keys: table, column, type. Their unique keys compare with `dict_collation` (see
/// `create_statements`).
pub const DICT_COLUMNS: [(&str, &str, &str); 3] = [
    ("cdr_sip_response", "lastSIPresponse", "varchar(255)"),
    ("cdr_ua", "ua", "varchar(512)"),
    ("cdr_reason", "reason", "varchar(255)"),
];

/// Exact NO PAD binary collations (MariaDB's, MySQL 8's), best first: with them `'abc'` and `'abc '` are two keys.
/// `utf8mb4_bin` is PAD SPACE: trailing spaces do not count, and two such texts would share a dictionary row.
pub const NOPAD_COLLATIONS: [&str; 2] = ["utf8mb4_nopad_bin", "utf8mb4_0900_bin"];

/// Whether a collation compares trailing spaces (NO PAD): MariaDB names those `_nopad_`, MySQL's `_0900_` ones all
/// are. A binary column has no collation and compares every byte.
pub fn is_nopad(collation: Option<&str>) -> bool {
    collation.is_none_or(|c| c.contains("_nopad_") || c.contains("_0900_"))
}

/// `CREATE TABLE IF NOT EXISTS` statements, dictionaries first. A partitioned table needs one partition to
/// exist: `first_day` (the first CDR's day) gives it. The dictionaries' text keys use `dict_collation` (one of
/// `NOPAD_COLLATIONS` where the server has it).
pub fn create_statements(shape: &Shape, first_day: Option<(i32, u32, u32)>, dict_collation: &str) -> Vec<String> {
    let dt = shape.datetime();
    let dur = shape.duration();
    let ip = shape.ip();
    let part = partition_clause(shape, first_day);
    // A partitioned table's unique keys must contain the partitioning column.
    let cdr_pk = "PRIMARY KEY (ID, calldate)";
    let engine = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";
    let mut side = String::new();
    let mut side_keys = String::new();
    for p in ["a", "b"] {
        for (c, t) in SIDE_COLUMNS {
            side.push_str(&format!("  {p}_{c} {t} DEFAULT NULL,\n"));
        }
        side.push_str(&format!("  {p}_saddr {ip} DEFAULT NULL,\n  {p}_ua_id int unsigned DEFAULT NULL,\n"));
        side.push_str(&format!("  {p}_last_rtp_from_end {dur} DEFAULT NULL,\n"));
        for k in ["saddr", "lost", "maxjitter", "ua_id", "avgjitter_mult10", "rtcp_loss", "rtcp_maxjitter"] {
            side_keys.push_str(&format!(",\n  KEY {p}_{k} ({p}_{k})"));
        }
    }
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS cdr_sip_response (\n  id mediumint unsigned NOT NULL AUTO_INCREMENT,\n  \
             lastSIPresponse varchar(255) COLLATE {dict_collation} DEFAULT NULL,\n  PRIMARY KEY (id),\n  \
             UNIQUE KEY lastSIPresponse (lastSIPresponse)\n) {engine}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS cdr_ua (\n  id int unsigned NOT NULL AUTO_INCREMENT,\n  \
             ua varchar(512) COLLATE {dict_collation} DEFAULT NULL,\n  PRIMARY KEY (id),\n  UNIQUE KEY ua (ua)\n) {engine}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS cdr_reason (\n  id mediumint unsigned NOT NULL AUTO_INCREMENT,\n  \
             type tinyint DEFAULT NULL,\n  reason varchar(255) COLLATE {dict_collation} DEFAULT NULL,\n  \
             PRIMARY KEY (id),\n  UNIQUE KEY type_reason (type, reason)\n) {engine}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS sensors (\n  id_sensor int unsigned NOT NULL,\n  name varchar(256) DEFAULT NULL,\n  \
             host varchar(255) DEFAULT NULL,\n  port int DEFAULT NULL,\n  timezone_name varchar(64) DEFAULT NULL,\n  \
             timezone_offset int DEFAULT NULL,\n  timezone_save_at datetime DEFAULT NULL,\n  PRIMARY KEY (id_sensor)\n) {engine}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS cdr (\n  ID bigint unsigned NOT NULL AUTO_INCREMENT,\n  calldate {dt} NOT NULL,\n  \
             callend {dt} NOT NULL,\n  duration {dur} DEFAULT NULL,\n  connect_duration {dur} DEFAULT NULL,\n  \
             progress_time {dur} DEFAULT NULL,\n  first_rtp_time {dur} DEFAULT NULL,\n  \
             caller varchar(255) DEFAULT NULL,\n  caller_domain varchar(255) DEFAULT NULL,\n  \
             caller_reverse varchar(255) DEFAULT NULL,\n  callername varchar(255) DEFAULT NULL,\n  \
             callername_reverse varchar(255) DEFAULT NULL,\n  called varchar(255) DEFAULT NULL,\n  \
             called_domain varchar(255) DEFAULT NULL,\n  called_reverse varchar(255) DEFAULT NULL,\n  \
             sipcallerip {ip} DEFAULT NULL,\n  sipcallerport smallint unsigned DEFAULT NULL,\n  \
             sipcalledip {ip} DEFAULT NULL,\n  sipcalledport smallint unsigned DEFAULT NULL,\n  \
             whohanged enum('caller','callee') DEFAULT NULL,\n  bye tinyint unsigned DEFAULT NULL,\n  \
             lastSIPresponse_id mediumint unsigned DEFAULT NULL,\n  lastSIPresponseNum smallint unsigned DEFAULT NULL,\n  \
             reason_sip_cause smallint unsigned DEFAULT NULL,\n  reason_sip_text_id mediumint unsigned DEFAULT NULL,\n  \
             reason_q850_cause smallint unsigned DEFAULT NULL,\n  reason_q850_text_id mediumint unsigned DEFAULT NULL,\n\
             {side}  payload int DEFAULT NULL,\n  jitter_mult10 mediumint unsigned DEFAULT NULL,\n  \
             mos_min_mult10 tinyint unsigned DEFAULT NULL,\n  packet_loss_perc_mult1000 mediumint unsigned DEFAULT NULL,\n  \
             lost mediumint unsigned DEFAULT NULL,\n  flags bigint unsigned DEFAULT NULL,\n  vlan smallint DEFAULT NULL,\n  \
             id_sensor smallint unsigned DEFAULT NULL,\n  {cdr_pk},\n  KEY calldate (calldate),\n  KEY callend (callend),\n  \
             KEY duration (duration),\n  KEY source (caller),\n  KEY source_reverse (caller_reverse),\n  \
             KEY destination (called),\n  KEY destination_reverse (called_reverse),\n  KEY callername (callername),\n  \
             KEY callername_reverse (callername_reverse),\n  KEY sipcallerip (sipcallerip),\n  \
             KEY sipcalledip (sipcalledip),\n  KEY lastSIPresponseNum (lastSIPresponseNum),\n  KEY bye (bye),\n  \
             KEY lastSIPresponse_id (lastSIPresponse_id),\n  KEY reason_sip_text_id (reason_sip_text_id),\n  \
             KEY reason_q850_text_id (reason_q850_text_id),\n  KEY payload (payload),\n  KEY vlan (vlan),\n  \
             KEY id_sensor (id_sensor){side_keys}\n) {engine}{part}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS cdr_next (\n  cdr_ID bigint unsigned NOT NULL,\n  calldate {dt} NOT NULL,\n  \
             fbasename varchar(255) DEFAULT NULL,\n  digest_username varchar(255) DEFAULT NULL,\n  \
             match_header varchar(128) DEFAULT NULL,\n  GeoPosition varchar(255) DEFAULT NULL,\n  \
             hold varchar(1024) DEFAULT NULL,\n  spool_index tinyint unsigned DEFAULT NULL,\n  \
             PRIMARY KEY (cdr_ID, calldate),\n  KEY fbasename (fbasename),\n  KEY digest_username (digest_username),\n  \
             KEY match_header (match_header)\n) {engine}{part}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS cdr_rtp (\n  cdr_ID bigint unsigned NOT NULL,\n  calldate {dt} NOT NULL,\n  \
             saddr {ip} DEFAULT NULL,\n  sport smallint unsigned DEFAULT NULL,\n  daddr {ip} DEFAULT NULL,\n  \
             dport smallint unsigned DEFAULT NULL,\n  ssrc int unsigned DEFAULT NULL,\n  \
             received mediumint unsigned DEFAULT NULL,\n  loss mediumint unsigned DEFAULT NULL,\n  \
             firsttime {dur} DEFAULT NULL,\n  payload smallint unsigned DEFAULT NULL,\n  \
             maxjitter_mult10 smallint unsigned DEFAULT NULL,\n  `index` tinyint unsigned DEFAULT NULL,\n  \
             sdp_ptime tinyint unsigned DEFAULT NULL,\n  rtp_ptime tinyint unsigned DEFAULT NULL,\n  \
             flags bigint unsigned DEFAULT NULL,\n  duration {dur} DEFAULT NULL,\n  KEY cdr_ID (cdr_ID),\n  \
             KEY calldate (calldate)\n) {engine}{part}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS cdr_proxy (\n  cdr_ID bigint unsigned NOT NULL,\n  calldate {dt} NOT NULL,\n  \
             dst {ip} DEFAULT NULL,\n  KEY cdr_ID (cdr_ID),\n  KEY calldate (calldate),\n  KEY dst (dst)\n) {engine}{part}"
        ),
        // voxtap's own: one row per stored CDR, so a replay of the on-disk queue never inserts a CDR twice. Keyed
        // by day first, so rows arrive in about key order and old days go with their partitions.
        format!(
            "CREATE TABLE IF NOT EXISTS voxtap_cdr_stored (\n  calldate {dt} NOT NULL,\n  k binary(16) NOT NULL,\n  \
             cdr_ID bigint unsigned NOT NULL,\n  PRIMARY KEY (calldate, k)\n) {engine}{part}"
        ),
    ]
}

/// `pYYMMDD` for a day of 2000 to 2099, the only years the name tells apart (VoIPmonitor's names, which its
/// cleanup and existing databases read as 20YY); `None` for another year, which gets no partition.
pub fn partition_name(y: i32, m: u32, d: u32) -> Option<String> {
    (2000..=2099).contains(&y).then(|| format!("p{:02}{m:02}{d:02}", y % 100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_every_table_once() {
        let s = create_statements(
            &Shape { ipv6: false, ms: true, partition: true },
            Some((2026, 11, 26)),
            NOPAD_COLLATIONS[0],
        );
        for t in ["cdr", "cdr_next", "cdr_rtp", "cdr_proxy", "cdr_ua", "cdr_sip_response", "cdr_reason", "sensors"] {
            let n = s.iter().filter(|x| x.starts_with(&format!("CREATE TABLE IF NOT EXISTS {t} ("))).count();
            assert_eq!(n, 1, "{t}");
        }
        let cdr = s.iter().find(|x| x.contains("TABLE IF NOT EXISTS cdr (")).unwrap();
        assert!(cdr.contains("PARTITION p261126 VALUES LESS THAN ('2026-11-27')"), "{cdr}");
        assert!(cdr.contains("b_mos_f1_mult10 tinyint unsigned"));
        assert!(cdr.contains("a_saddr int unsigned"));
    }

    #[test]
    fn partition_names_only_for_years_they_tell_apart() {
        assert_eq!(partition_name(2026, 11, 26).as_deref(), Some("p261126"));
        assert_eq!(partition_name(2000, 1, 1).as_deref(), Some("p000101"));
        assert_eq!(partition_name(2106, 2, 7), None);
        assert_eq!(partition_name(1999, 12, 31), None);
    }
}
