//! Typed configuration from `voipmonitor.conf` (+ a `conf.d` directory) and the command line.
//!
//! Scalar keys: within one file the first occurrence wins (VoIPmonitor's behaviour); a later file overrides.
//! List keys (`sipport`, `interface`): every occurrence accumulates, and the first one replaces the default.
//! The command line wins over every file.

mod keys;
pub mod net;
pub mod parse;
mod values;

pub use keys::KNOWN_KEYS;
use keys::LIST_KEYS;
pub use values::cpu_list;
use values::{bad, fraction, mode, number, prefix_of, seconds, tar_zip_value, yes, zip_value};

use std::path::{Path, PathBuf};

use thiserror::Error;
use tracing::warn;

use parse::{Entry, Skipped};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: bad value for '{key}': {why}")]
    BadValue { file: PathBuf, line: usize, key: String, why: String },
}

/// Compression of a spool file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compress {
    #[default]
    None,
    Gzip,
    Zstd,
}

/// `savertp`: no, yes, or headers only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveRtp {
    No,
    Yes,
    Header,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub interface: Vec<String>,
    /// Inclusive port ranges on which UDP/TCP traffic is SIP.
    pub sipport: Vec<(u16, u16)>,
    pub id_sensor: Option<u16>,
    pub spooldir: PathBuf,
    pub savesip: bool,
    pub savertp: SaveRtp,
    pub savertcp: bool,
    pub utc: bool,
    pub absolute_timeout: u32,
    pub rtptimeout: u32,
    pub sipwithoutrtptimeout: u32,
    pub onewaytimeout: u32,
    pub bye_timeout: u32,
    pub bye_confirmed_timeout: u32,
    pub promisc: bool,
    /// DPDK capture (`dpdk = yes`) and its settings.
    pub dpdk: bool,
    pub dpdk_vdev: Vec<String>,
    pub dpdk_pci_device: Vec<String>,
    pub dpdk_eal_args: String,
    pub dpdk_nb_rxq: u16,
    pub dpdk_nb_rx: u16,
    pub dpdk_pkt_burst: u16,
    /// Mbufs in the pool, in thousands (×1024), as VoIPmonitor counts them.
    pub dpdk_nb_mbufs: u32,
    pub dpdk_lcores_affinity: Option<String>,
    /// voxtap's own: stop a live capture after this many seconds without packets (0 = never); for replays.
    pub exit_after_idle: u32,
    /// voxtap's own: AF_PACKET rx threads (rings joined in a PACKET_FANOUT group per interface).
    pub rx_threads: u16,
    /// BPF capture filter in tcpdump syntax (AF_PACKET).
    pub filter: Option<String>,
    /// CPUs for the rx threads (`dpdk_read_thread_cpu_affinity`) and the owner threads
    /// (`dpdk_worker_thread_cpu_affinity`); thread i takes entry i modulo the list; empty: not pinned.
    pub rx_cpus: Vec<usize>,
    pub owner_cpus: Vec<usize>,
    /// The CDR database: used when `mysqlhost` is set (in a file or on the command line), else none.
    pub mysqlhost: Option<String>,
    pub mysqlport: u16,
    pub mysqlsocket: Option<String>,
    pub mysqldb: String,
    /// Connections storing CDR batches side by side.
    pub mysqlstore_max_threads_cdr: u32,
    pub mysqlusername: String,
    pub mysqlpassword: String,
    /// IP columns as `varbinary(16)` (IPv6 addresses stored) instead of `int unsigned`.
    pub ipv6: bool,
    /// `datetime(3)` and `decimal(9,3)` columns instead of whole seconds.
    pub time_precision_in_ms: bool,
    /// Daily partitions of the CDR tables.
    pub cdr_partition: bool,
    /// voxtap's own: the on-disk CDR queue in front of the database (default `spooldir/cdrqueue`).
    pub cdr_queue_dir: Option<PathBuf>,
    /// voxtap's own: the JSON Lines CDR log in `spooldir/cdrlog`; `None` (auto): on for a live capture without a
    /// database.
    pub cdr_log: Option<bool>,
    /// voxtap's own: the group (id) given to the files and folders voxtap creates (spool, CDR and link queues,
    /// CDR log), `None`: the process's.
    pub spool_group: Option<u32>,
    /// voxtap's own: modes of the files and folders voxtap creates (0640 and 0750: no other user reads calls).
    pub spool_file_mode: u32,
    pub spool_dir_mode: u32,
    /// cleanspool limits: MB (0 = none) and days (0 = none); free-space floors.
    pub cleanspool: bool,
    pub maxpoolsize: u64,
    pub maxpoolsipsize: u64,
    pub maxpoolrtpsize: u64,
    pub maxpooldays: u32,
    pub maxpoolsipdays: u32,
    pub maxpoolrtpdays: u32,
    pub autocleanspoolminpercent: f64,
    pub autocleanmingb: f64,
    /// Per-file compression of the spool's SIP and RTP pcap files.
    pub pcap_dump_zip_sip: Compress,
    pub pcap_dump_zip_rtp: Compress,
    /// Encapsulations recognised by UDP port (0 disables): GTP-U, HEP inside captures (voxtap's own key),
    /// VXLAN, TZSP, L2TPv2 (either port).
    pub udp_port_gtp: u16,
    pub udp_port_hep: u16,
    pub udp_port_vxlan: u16,
    pub udp_port_tzsp: u16,
    pub udp_port_l2tp: u16,
    /// The manager port (0 = off) and whether peers other than the loopback may use it in plaintext.
    pub managerip: String,
    pub managerport: u16,
    pub manager_enable_unencrypted: bool,
    /// A Unix socket for the manager (mode 0600; local clients only by construction).
    pub managersocket: Option<PathBuf>,
    /// 256-bit key (hex) for the manager's sealed mode from remote clients.
    #[serde(skip)]
    pub manager_key: Option<String>,
    /// AudioCodes debug recordings (UDP; the TCP port is read but TCP recordings are not decoded).
    pub audiocodes: bool,
    pub udp_port_audiocodes: u16,
    pub tcp_port_audiocodes: u16,
    /// The live HEP listener (UDP and TCP on one address): on with `hep = yes` and a port.
    pub hep: bool,
    pub hep_bind_ip: String,
    pub hep_bind_port: u16,
    /// The live IPFIX listener (TCP) for Oracle/Acme SBCs.
    pub ipfix: bool,
    pub ipfix_bind_ip: String,
    pub ipfix_bind_port: u16,
    /// voxtap's own: how far (seconds) a time a sender wrote (HEP header, IPFIX record) may be from when voxtap
    /// received it; a time further off is held at that distance. 0 = taken as it is.
    pub sender_time_window_s: u32,
    /// `tar`: a minute's call files go into per-minute tar archives (VoIPmonitor's default).
    pub tar: bool,
    /// Compression of the whole `sip_*.tar` / `rtp_*.tar` archive.
    pub tar_compress_sip: Compress,
    pub tar_compress_rtp: Compress,
    /// The central's link listener: on when `server_bind` is set and the port is not 0.
    pub server_bind: String,
    pub server_bind_port: u16,
    /// Shared by the central and its remotes; never sent (SPAKE2).
    pub server_password: String,
    /// A remote's centrals, tried in order (failover).
    pub server_destination: Vec<String>,
    pub server_destination_port: u16,
    /// A remote sends raw packets for the central to analyse, instead of its CDRs.
    pub packetbuffer_sender: bool,
    pub client_server_connect_maximum_time_diff_s: u32,
    /// A remote's on-disk link queue (default SPOOLDIR/linkqueue) and its bound in MB.
    pub link_queue_dir: Option<PathBuf>,
    pub link_queue_maxsize: u64,
    /// voxtap's own: how long (seconds) a remote sending a capture file (`-r`) keeps trying while nothing reaches
    /// the central (none answers, or it confirms nothing); then it stops, the rest queued. 0 = no limit. A live
    /// remote retries for as long as it runs.
    pub link_send_timeout: u32,
    /// VoIPmonitor's old mirror mode: a sender's receiver (`host:port`), a receiver's listening address.
    pub mirror_destination: Option<String>,
    pub mirror_bind: Option<String>,
    pub mirror_connect_maximum_time_diff_s: u32,
    /// Limits of the listening sockets (`net_*` keys) and per-sensor link secrets.
    pub net: net::NetLimits,
    /// Where this configuration was read from (`--config-file`, `--config-dir`), for the manager's `reload`.
    #[serde(skip)]
    pub loaded_from: Option<(Option<PathBuf>, Option<PathBuf>)>,
    /// Keys the command line set: a reload of the files leaves them as they are.
    #[serde(skip)]
    pub command_line_keys: Vec<&'static str>,
}

impl Default for Config {
    fn default() -> Self {
        // VoIPmonitor's code defaults (not its shipped example file): save nothing unless asked.
        Config {
            interface: Vec::new(),
            sipport: vec![(5060, 5060)],
            id_sensor: None,
            spooldir: PathBuf::from("/var/spool/voipmonitor"),
            savesip: false,
            savertp: SaveRtp::No,
            savertcp: false,
            utc: false,
            absolute_timeout: 14_400,
            rtptimeout: 300,
            sipwithoutrtptimeout: 3_600,
            onewaytimeout: 15,
            bye_timeout: 1_200,
            bye_confirmed_timeout: 600,
            promisc: true,
            dpdk: false,
            dpdk_vdev: Vec::new(),
            dpdk_pci_device: Vec::new(),
            dpdk_eal_args: String::new(),
            dpdk_nb_rxq: 2,
            dpdk_nb_rx: 4096,
            dpdk_pkt_burst: 128,
            dpdk_nb_mbufs: 1024,
            dpdk_lcores_affinity: None,
            exit_after_idle: 0,
            rx_threads: 1,
            filter: None,
            rx_cpus: Vec::new(),
            owner_cpus: Vec::new(),
            mysqlhost: None,
            mysqlport: 3306,
            mysqlsocket: None,
            mysqldb: "voipmonitor".into(),
            mysqlstore_max_threads_cdr: 2,
            mysqlusername: "root".into(),
            mysqlpassword: String::new(),
            ipv6: false,
            time_precision_in_ms: false,
            cdr_partition: true,
            cdr_queue_dir: None,
            cdr_log: None,
            spool_group: None,
            spool_file_mode: crate::store::perms::DEFAULT_FILE_MODE,
            spool_dir_mode: crate::store::perms::DEFAULT_DIR_MODE,
            cleanspool: true,
            maxpoolsize: 0,
            maxpoolsipsize: 0,
            maxpoolrtpsize: 0,
            maxpooldays: 0,
            maxpoolsipdays: 0,
            maxpoolrtpdays: 0,
            autocleanspoolminpercent: 1.0,
            autocleanmingb: 5.0,
            pcap_dump_zip_sip: Compress::None,
            pcap_dump_zip_rtp: Compress::None,
            udp_port_gtp: 2152,
            udp_port_hep: 9060,
            udp_port_vxlan: 4789,
            udp_port_tzsp: 37008,
            udp_port_l2tp: 1701,
            managerip: "127.0.0.1".into(),
            managerport: 5029,
            manager_enable_unencrypted: false,
            managersocket: None,
            manager_key: None,
            audiocodes: false,
            udp_port_audiocodes: 925,
            tcp_port_audiocodes: 925,
            hep: false,
            hep_bind_ip: "0.0.0.0".into(),
            hep_bind_port: 0,
            ipfix: false,
            ipfix_bind_ip: "0.0.0.0".into(),
            ipfix_bind_port: 0,
            sender_time_window_s: 86_400,
            tar: true,
            tar_compress_sip: Compress::Zstd,
            tar_compress_rtp: Compress::None,
            server_bind: String::new(),
            server_bind_port: 60024,
            server_password: String::new(),
            server_destination: Vec::new(),
            server_destination_port: 60024,
            packetbuffer_sender: false,
            client_server_connect_maximum_time_diff_s: 2,
            link_queue_dir: None,
            link_queue_maxsize: 2048,
            link_send_timeout: 60,
            mirror_destination: None,
            mirror_bind: None,
            mirror_connect_maximum_time_diff_s: 2,
            net: net::NetLimits::default(),
            loaded_from: None,
            command_line_keys: Vec::new(),
        }
    }
}

/// What loading produced besides the config: warnings for the operator.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub unknown_keys: Vec<(String, PathBuf, usize)>,
    pub skipped_lines: Vec<Skipped>,
    pub files: Vec<PathBuf>,
}

impl Config {
    /// Loads `main` and then every file of `extra_dir` in name order (as VoIPmonitor reads its conf.d), except
    /// hidden files and editor or package-manager leftovers (`~`, `.bak`, `.swp`, `.dpkg-*`, `.rpmnew`, `.rpmsave`).
    pub fn load(main: Option<&Path>, extra_dir: Option<&Path>) -> Result<(Config, LoadReport), ConfigError> {
        let mut files: Vec<PathBuf> = main.map(Path::to_path_buf).into_iter().collect();
        if let Some(dir) = extra_dir {
            if let Ok(rd) = std::fs::read_dir(dir) {
                let mut more: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file() && p.file_name().is_some_and(|n| wanted_conf_file(&n.to_string_lossy())))
                    .collect();
                more.sort();
                files.extend(more);
            }
        }
        let mut cfg = Config::default();
        let mut report = LoadReport::default();
        let mut lists_set: Vec<&'static str> = Vec::new();
        for f in &files {
            let text = std::fs::read(f).map_err(|source| ConfigError::Read { path: f.clone(), source })?;
            let text = String::from_utf8_lossy(&text);
            let (entries, skipped) = parse::parse_text(f, &text);
            report.skipped_lines.extend(skipped);
            cfg.apply_file(&entries, &mut lists_set, &mut report)?;
            report.files.push(f.clone());
        }
        Ok((cfg, report))
    }

    /// Applies one file's entries: scalars first-wins within the file, lists accumulate.
    pub fn apply_file(
        &mut self,
        entries: &[Entry],
        lists_set: &mut Vec<&'static str>,
        report: &mut LoadReport,
    ) -> Result<(), ConfigError> {
        let mut seen_scalar: Vec<&str> = Vec::new();
        for e in entries {
            let Some(&known) = KNOWN_KEYS.iter().chain(net::KEYS).find(|k| **k == e.key) else {
                if !report.unknown_keys.iter().any(|(k, _, _)| *k == e.key) {
                    report.unknown_keys.push((e.key.clone(), e.file.clone(), e.line));
                }
                continue;
            };
            if LIST_KEYS.contains(&known) || net::LIST_KEYS.contains(&known) {
                let first = !lists_set.contains(&known);
                if first {
                    lists_set.push(known);
                }
                self.set_list(e, first)?;
            } else {
                if seen_scalar.contains(&known) {
                    warn!(file = %e.file.display(), line = e.line, key = %e.key, "repeated key: the first value in this file is used");
                    continue;
                }
                seen_scalar.push(known);
                self.set_scalar(e)?;
            }
        }
        Ok(())
    }

    fn set_list(&mut self, e: &Entry, first: bool) -> Result<(), ConfigError> {
        match e.key.as_str() {
            "sipport" => {
                let p = parse::ports(&e.value).map_err(|why| bad(e, why))?;
                if first {
                    self.sipport.clear();
                }
                self.sipport.extend(p);
            }
            "dpdk_vdev" | "dpdk_pci_device" => {
                let list = if e.key == "dpdk_vdev" { &mut self.dpdk_vdev } else { &mut self.dpdk_pci_device };
                if first {
                    list.clear();
                }
                list.extend(e.value.split(';').map(str::trim).filter(|s| !s.is_empty()).map(String::from));
            }
            "interface" => {
                if first {
                    self.interface.clear();
                }
                self.interface.extend(
                    e.value.split([',', ';', ' ', '\t']).map(str::trim).filter(|s| !s.is_empty()).map(String::from),
                );
            }
            k if net::LIST_KEYS.contains(&k) => self.net.set(e, first)?,
            _ => {}
        }
        Ok(())
    }

    fn set_scalar(&mut self, e: &Entry) -> Result<(), ConfigError> {
        let v = e.value.as_str();
        match e.key.as_str() {
            "id_sensor" => {
                let n: i64 = v.parse().map_err(|_| bad(e, "expected an integer".into()))?;
                self.id_sensor = match n {
                    n if n < 0 => None,
                    n if n <= u16::MAX as i64 => Some(n as u16),
                    _ => return Err(bad(e, "id_sensor must be 0..65535".into())),
                };
            }
            "spooldir" => self.spooldir = PathBuf::from(v),
            "savesip" => self.savesip = yes(e)?,
            "savertp" => {
                self.savertp = if prefix_of(v, "header") {
                    SaveRtp::Header
                } else {
                    match parse::flag(v) {
                        Some(true) => SaveRtp::Yes,
                        Some(false) => SaveRtp::No,
                        None => return Err(bad(e, format!("expected header or {}", parse::FLAG_WORDS))),
                    }
                }
            }
            "savertcp" => self.savertcp = yes(e)?,
            "utc" => self.utc = yes(e)?,
            "absolute_timeout" => self.absolute_timeout = seconds(e)?,
            "rtptimeout" => self.rtptimeout = seconds(e)?,
            "sipwithoutrtptimeout" => self.sipwithoutrtptimeout = seconds(e)?,
            "onewaytimeout" => self.onewaytimeout = seconds(e)?,
            "bye_timeout" => self.bye_timeout = seconds(e)?,
            "bye_confirmed_timeout" => self.bye_confirmed_timeout = seconds(e)?,
            "promisc" => self.promisc = yes(e)?,
            "dpdk" => self.dpdk = yes(e)?,
            "dpdk_eal_args" => self.dpdk_eal_args = v.to_string(),
            "dpdk_lcores_affinity" => self.dpdk_lcores_affinity = Some(v.to_string()),
            "dpdk_nb_rxq" => self.dpdk_nb_rxq = number(e, 1, 16)? as u16,
            "dpdk_nb_rx" => self.dpdk_nb_rx = number(e, 64, 32768)? as u16,
            "dpdk_pkt_burst" => self.dpdk_pkt_burst = number(e, 1, 512)? as u16,
            "dpdk_nb_mbufs" => self.dpdk_nb_mbufs = number(e, 1, 1 << 20)?,
            "exit_after_idle" => self.exit_after_idle = seconds(e)?,
            "rx_threads" => self.rx_threads = number(e, 1, 64)? as u16,
            "filter" => self.filter = Some(v.to_string()),
            "dpdk_read_thread_cpu_affinity" => self.rx_cpus = cpu_list(v).map_err(|why| bad(e, why))?,
            "dpdk_worker_thread_cpu_affinity" => self.owner_cpus = cpu_list(v).map_err(|why| bad(e, why))?,
            "mysqlhost" => self.mysqlhost = Some(v.to_string()),
            // 0 is the client library's default port.
            "mysqlport" => self.mysqlport = Some(number(e, 0, 65535)? as u16).filter(|p| *p != 0).unwrap_or(3306),
            "mysqlsocket" => self.mysqlsocket = Some(v.to_string()),
            "mysqldb" => self.mysqldb = v.to_string(),
            "mysqlstore_max_threads_cdr" => self.mysqlstore_max_threads_cdr = number(e, 1, 16)?,
            "mysqlusername" => self.mysqlusername = v.to_string(),
            "mysqlpassword" => self.mysqlpassword = v.to_string(),
            "ipv6" => self.ipv6 = yes(e)?,
            "time_precision_in_ms" => self.time_precision_in_ms = yes(e)?,
            "cdr_partition" => self.cdr_partition = yes(e)?,
            "cdr_queue_dir" => self.cdr_queue_dir = Some(PathBuf::from(v)),
            "spool_group" => {
                self.spool_group =
                    if v.is_empty() { None } else { Some(crate::store::perms::group_id(v).map_err(|why| bad(e, why))?) }
            }
            // The owner keeps read and write (voxtap appends to and reads back what it made); others get what is asked.
            "spool_file_mode" => self.spool_file_mode = mode(e, 0o600)?,
            "spool_dir_mode" => self.spool_dir_mode = mode(e, 0o700)?,
            "cleanspool" => self.cleanspool = yes(e)?,
            "maxpoolsize" => self.maxpoolsize = number(e, 0, u32::MAX)? as u64,
            "maxpoolsipsize" => self.maxpoolsipsize = number(e, 0, u32::MAX)? as u64,
            "maxpoolrtpsize" => self.maxpoolrtpsize = number(e, 0, u32::MAX)? as u64,
            "maxpooldays" => self.maxpooldays = number(e, 0, 100_000)?,
            "maxpoolsipdays" => self.maxpoolsipdays = number(e, 0, 100_000)?,
            "maxpoolrtpdays" => self.maxpoolrtpdays = number(e, 0, 100_000)?,
            "autocleanspoolminpercent" => self.autocleanspoolminpercent = fraction(e, 0.0, 100.0)?,
            "autocleanmingb" => self.autocleanmingb = fraction(e, 0.0, 1e9)?,
            "pcap_dump_zip" => {
                self.pcap_dump_zip_sip = zip_value(e)?;
                self.pcap_dump_zip_rtp = self.pcap_dump_zip_sip;
            }
            "pcap_dump_zip_sip" => self.pcap_dump_zip_sip = zip_value(e)?,
            "pcap_dump_zip_rtp" => self.pcap_dump_zip_rtp = zip_value(e)?,
            "udp_port_gtp" => self.udp_port_gtp = number(e, 0, 65535)? as u16,
            "udp_port_hep" => self.udp_port_hep = number(e, 0, 65535)? as u16,
            "udp_port_vxlan" => self.udp_port_vxlan = number(e, 0, 65535)? as u16,
            "udp_port_tzsp" => self.udp_port_tzsp = number(e, 0, 65535)? as u16,
            "udp_port_l2tp" => self.udp_port_l2tp = number(e, 0, 65535)? as u16,
            "managerip" => {
                v.parse::<std::net::IpAddr>().map_err(|_| bad(e, "expected an IP address".into()))?;
                self.managerip = v.to_string();
            }
            "managerport" => self.managerport = number(e, 0, 65535)? as u16,
            "manager_enable_unencrypted" => self.manager_enable_unencrypted = yes(e)?,
            "manager_key" => {
                crate::manager::sealed::parse_key(v).map_err(|why| bad(e, why))?;
                self.manager_key = Some(v.to_string());
            }
            "managersocket" => self.managersocket = (!v.is_empty()).then(|| PathBuf::from(v)),
            "audiocodes" => self.audiocodes = yes(e)?,
            "udp_port_audiocodes" => self.udp_port_audiocodes = number(e, 0, 65535)? as u16,
            "tcp_port_audiocodes" => self.tcp_port_audiocodes = number(e, 0, 65535)? as u16,
            "hep" => self.hep = yes(e)?,
            "hep_bind_ip" => {
                v.parse::<std::net::IpAddr>().map_err(|_| bad(e, "expected an IP address".into()))?;
                self.hep_bind_ip = v.to_string();
            }
            "hep_bind_port" => self.hep_bind_port = number(e, 0, 65535)? as u16,
            "ipfix" => self.ipfix = yes(e)?,
            "ipfix_bind_ip" => {
                v.parse::<std::net::IpAddr>().map_err(|_| bad(e, "expected an IP address".into()))?;
                self.ipfix_bind_ip = v.to_string();
            }
            "ipfix_bind_port" => self.ipfix_bind_port = number(e, 0, 65535)? as u16,
            "sender_time_window_s" => self.sender_time_window_s = seconds(e)?,
            "tar" => self.tar = yes(e)?,
            "tar_compress_sip" => self.tar_compress_sip = tar_zip_value(e)?,
            "tar_compress_rtp" => self.tar_compress_rtp = tar_zip_value(e)?,
            "server_bind" => self.server_bind = v.to_string(),
            "server_bind_port" => self.server_bind_port = number(e, 0, 65535)? as u16,
            "server_password" => self.server_password = v.to_string(),
            // A list in one value: `a,b;c`; VoIPmonitor drops a `/suffix` after a host.
            "server_destination" => {
                self.server_destination = v
                    .split([',', ';'])
                    .map(|h| h.split('/').next().unwrap_or("").trim().to_string())
                    .filter(|h| !h.is_empty())
                    .collect()
            }
            "server_destination_port" => self.server_destination_port = number(e, 1, 65535)? as u16,
            "packetbuffer_sender" => self.packetbuffer_sender = yes(e)?,
            "client_server_connect_maximum_time_diff_s" => {
                self.client_server_connect_maximum_time_diff_s = number(e, 0, 86_400)?
            }
            "link_queue_dir" => self.link_queue_dir = Some(PathBuf::from(v)),
            "link_queue_maxsize" => self.link_queue_maxsize = number(e, 1, u32::MAX)? as u64,
            "link_send_timeout" => self.link_send_timeout = seconds(e)?,
            "mirror_destination" | "mirror_bind" => {
                let (ip, port) = v.rsplit_once(':').ok_or_else(|| bad(e, "expected IP:PORT".into()))?;
                port.parse::<u16>().map_err(|_| bad(e, "expected IP:PORT".into()))?;
                let slot = if e.key == "mirror_bind" { &mut self.mirror_bind } else { &mut self.mirror_destination };
                *slot = Some(format!("{ip}:{port}"));
            }
            "mirror_destination_ip" | "mirror_bind_ip" => {
                let slot = if e.key == "mirror_bind_ip" { &mut self.mirror_bind } else { &mut self.mirror_destination };
                let port =
                    slot.as_deref().and_then(|s| s.rsplit_once(':')).map(|p| p.1.to_string()).unwrap_or_default();
                *slot = Some(format!("{v}:{port}"));
            }
            "mirror_destination_port" | "mirror_bind_port" => {
                let p = number(e, 1, 65535)?;
                let slot =
                    if e.key == "mirror_bind_port" { &mut self.mirror_bind } else { &mut self.mirror_destination };
                let ip = slot.as_deref().and_then(|s| s.rsplit_once(':')).map(|p| p.0.to_string()).unwrap_or_default();
                *slot = Some(format!("{ip}:{p}"));
            }
            "mirror_connect_maximum_time_diff_s" => self.mirror_connect_maximum_time_diff_s = number(e, 0, 86_400)?,
            "cdr_log" => self.cdr_log = if v.eq_ignore_ascii_case("auto") { None } else { Some(yes(e)?) },
            k if net::KEYS.contains(&k) => self.net.set(e, true)?,
            _ => {}
        }
        Ok(())
    }

    /// The 65536-entry SIP port matrix.
    /// `sipport` as VoIPmonitor's manager prints it: `5060,5070-5080,`.
    pub fn sipports_text(&self) -> String {
        self.sipport.iter().map(|&(a, b)| if a == b { format!("{a},") } else { format!("{a}-{b},") }).collect()
    }

    pub fn sip_port_matrix(&self) -> Box<[bool; 65536]> {
        let mut m = Box::new([false; 65536]);
        for &(a, b) in &self.sipport {
            for p in a..=b {
                m[p as usize] = true;
            }
        }
        m
    }
}

fn wanted_conf_file(name: &str) -> bool {
    !(name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".bak")
        || name.ends_with(".swp")
        || name.contains(".dpkg-")
        || name.ends_with(".rpmnew")
        || name.ends_with(".rpmsave"))
}

#[cfg(test)]
mod tests;
