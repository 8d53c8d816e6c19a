//! What a configuration makes of voxtap, checked before anything starts: one role and its source, where the
//! CDRs go, what is saved, which ports open. The run and `--check-config` call the same [`Plan::check`], so a
//! configuration that `--check-config` calls OK is one the run accepts, and the description it prints is what
//! the run does.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::{Config, SaveRtp};
use crate::errors::plain;

/// What this configuration makes of voxtap: one role, one source.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    Central,
    MirrorSender,
    MirrorReceiver,
    PacketSender,
    Hep,
    Ipfix,
    Dpdk,
    AfPacket,
    File(PathBuf),
}

impl Role {
    /// The role, or why the keys contradict each other. `read` is `-r`.
    pub fn of(cfg: &Config, read: Option<PathBuf>) -> Result<Role> {
        let reading = read.is_some();
        let central = !cfg.server_bind.is_empty() && cfg.server_bind_port != 0;
        if central && !cfg.server_destination.is_empty() {
            bail!("server_bind (a central) and server_destination (a remote) are both set: a sensor has one role");
        }
        if cfg.packetbuffer_sender && cfg.server_destination.is_empty() {
            bail!("packetbuffer_sender = yes needs server_destination (the central that analyses the packets)");
        }
        if central {
            if reading || !cfg.interface.is_empty() || cfg.dpdk || cfg.hep || cfg.ipfix {
                bail!("a central (server_bind) takes its packets and CDRs from its remotes: leave -r, interface, dpdk, hep and ipfix unset");
            }
            return Ok(Role::Central);
        }
        if cfg.mirror_destination.is_some() {
            if !cfg.server_destination.is_empty() || cfg.mirror_bind.is_some() {
                bail!("mirror_destination sends packets to a mirror receiver: leave server_bind, server_destination and mirror_bind unset");
            }
            return Ok(Role::MirrorSender);
        }
        if cfg.mirror_bind.is_some() {
            if reading || !cfg.interface.is_empty() || cfg.dpdk || cfg.hep || cfg.ipfix {
                bail!("a mirror receiver (mirror_bind) takes its packets from its senders: leave -r, interface, dpdk, hep, ipfix and server_bind unset");
            }
            return Ok(Role::MirrorReceiver);
        }
        if cfg.packetbuffer_sender {
            return Ok(Role::PacketSender);
        }
        if let Some(r) = read {
            return Ok(Role::File(r));
        }
        if cfg.hep || cfg.ipfix {
            if !cfg.interface.is_empty() || cfg.dpdk || (cfg.hep && cfg.ipfix) {
                bail!("hep = yes and ipfix = yes are sources of their own: set one, and leave interface and dpdk unset (one source per voxtap)");
            }
            return Ok(if cfg.hep { Role::Hep } else { Role::Ipfix });
        }
        if cfg.interface.is_empty() && !cfg.dpdk {
            bail!(
                "nothing to do: give -r FILE, an interface (with dpdk = yes for a DPDK port), hep = yes or ipfix = yes"
            );
        }
        if cfg.dpdk || cfg.interface.iter().any(|i| i.starts_with("dpdk:")) {
            return Ok(Role::Dpdk);
        }
        Ok(Role::AfPacket)
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Role::Central => "central server: CDRs and packets from remote sensors (server_bind)",
            Role::MirrorSender => "mirror sender: packets to a mirror receiver (mirror_destination)",
            Role::MirrorReceiver => "mirror receiver: packets from mirror senders (mirror_bind)",
            Role::PacketSender => "remote sensor sending packets to its central (packetbuffer_sender)",
            Role::Hep => "sensor fed by HEP",
            Role::Ipfix => "sensor fed by IPFIX",
            Role::Dpdk => "sensor on a DPDK port",
            Role::AfPacket => "sensor on AF_PACKET interfaces",
            Role::File(_) => "reading a capture file",
        }
    }

    /// Packets go on to another voxtap, which analyses and saves them.
    fn forwards(&self) -> bool {
        matches!(self, Role::PacketSender | Role::MirrorSender)
    }
}

/// A checked configuration and the role it gives, with what the run will do as `(what, how)` lines.
pub struct Plan {
    pub role: Role,
    pub lines: Vec<(&'static str, String)>,
}

impl Plan {
    /// Every check the run makes before it starts. `dry` (for `--check-config`) creates nothing: folders that do
    /// not exist yet are judged by the nearest one that does.
    pub fn check(cfg: &Config, read: Option<PathBuf>, dry: bool) -> Result<Plan> {
        let role = Role::of(cfg, read.clone())?;
        if role == Role::Dpdk && !cfg!(feature = "dpdk") {
            bail!("this voxtap was built without DPDK, and the configuration captures from a DPDK port");
        }
        if let Some(k) = &cfg.manager_key {
            crate::manager::sealed::parse_key(k).map_err(|e| anyhow::anyhow!("manager_key: {e}"))?;
        }
        if role == Role::Hep && cfg.hep_bind_port == 0 {
            bail!("hep = yes needs hep_bind_port (the port the HEP senders send to, e.g. 9060)");
        }
        if role == Role::Ipfix && cfg.ipfix_bind_port == 0 {
            bail!("ipfix = yes needs ipfix_bind_port (the port the SBCs send IPFIX to, e.g. 4739)");
        }
        if let Some(r) = &read {
            check_capture_file(r)?;
        }
        if role == Role::AfPacket {
            for i in cfg.interface.iter().filter(|i| *i != "any") {
                if !Path::new("/sys/class/net").join(i).exists() {
                    bail!("interface {i}: no such network interface (ip link lists them)");
                }
            }
        }
        let mut lines = vec![("config", config_files(cfg)), ("role", role.describe().to_string())];
        lines.push(("source", source(cfg, &role, read.as_deref())));
        let file = read.is_some();
        lines.push(("cdrs", cdrs(cfg, &role, file)));
        let saving = saving(cfg);
        let keeps_cdr_log = cdr_log_kept(cfg, &role, file);
        // Every folder the run writes into must take a file, before the first packet rather than at the first call.
        let mut folders: Vec<(&str, PathBuf)> = Vec::new();
        if saving.is_some() && !role.forwards() {
            folders.push(("spooldir", cfg.spooldir.clone()));
        }
        if keeps_cdr_log {
            folders.push(("the CDR log (spooldir)", cfg.spooldir.join("cdrlog")));
        }
        if let Some(db) = crate::store::mysql::DbConfig::from_config(cfg).filter(|_| cfg.server_destination.is_empty())
        {
            folders.push(("cdr_queue_dir", db.queue_dir));
        }
        if let Some(r) = crate::link::remote::RemoteConfig::from_config(cfg) {
            folders.push(("link_queue_dir", r.queue_dir));
        }
        for (key, dir) in &folders {
            writable(dir, dry).with_context(|| format!("{key} {} cannot be written", dir.display()))?;
        }
        lines.push((
            "saving",
            match saving {
                Some(what) if !role.forwards() => {
                    format!("{what} of each call in {}{}", cfg.spooldir.display(), if cfg.tar { " (tar)" } else { "" })
                }
                Some(_) => "by the receiving side (this sensor forwards packets)".into(),
                None => "no packets saved (savesip, savertp, savertcp are off)".into(),
            },
        ));
        lines.push(("manager", manager(cfg, file)));
        lines.push((
            "ends",
            if file && !cfg.server_destination.is_empty() {
                let limit = match cfg.link_send_timeout {
                    0 => "without a time limit".to_string(),
                    s => format!("or after {s} s without progress (link_send_timeout), what is left staying queued"),
                };
                format!("when the capture is read and the central confirmed it, {limit}")
            } else if file {
                "when the capture is read and its CDRs are delivered".into()
            } else {
                "on SIGTERM or SIGINT".into()
            },
        ));
        Ok(Plan { role, lines })
    }
}

fn config_files(cfg: &Config) -> String {
    match &cfg.loaded_from {
        Some((f, d)) => format!(
            "{}{}",
            f.as_ref().map(|f| f.display().to_string()).unwrap_or_default(),
            d.as_ref().map(|d| format!(" + {}/", d.display())).unwrap_or_default()
        ),
        None => "(none: defaults)".into(),
    }
}

fn source(cfg: &Config, role: &Role, read: Option<&Path>) -> String {
    let file = read.map(|r| if r == Path::new("-") { "standard input".into() } else { r.display().to_string() });
    match role {
        Role::File(_) => file.unwrap_or_default(),
        Role::PacketSender | Role::MirrorSender => match file {
            Some(f) => f,
            None => format!("live capture on {}", cfg.interface.join(",")),
        },
        Role::Hep => format!("HEP on {}:{} (UDP and TCP)", cfg.hep_bind_ip, cfg.hep_bind_port),
        Role::Ipfix => format!("IPFIX on {}:{} (TCP)", cfg.ipfix_bind_ip, cfg.ipfix_bind_port),
        Role::Dpdk if !cfg.dpdk_pci_device.is_empty() => format!("DPDK ports {}", cfg.dpdk_pci_device.join(",")),
        Role::Dpdk | Role::AfPacket => format!("interfaces {}", cfg.interface.join(",")),
        Role::Central => format!("remote sensors on {}:{}", cfg.server_bind, cfg.server_bind_port),
        Role::MirrorReceiver => format!("mirror senders on {}", cfg.mirror_bind.as_deref().unwrap_or_default()),
    }
}

fn cdrs(cfg: &Config, role: &Role, file: bool) -> String {
    if *role == Role::MirrorSender {
        return "made by the mirror receiver from the packets sent to it".into();
    }
    let out = if file { "standard output" } else { "standard output as calls end" };
    if !cfg.server_destination.is_empty() {
        let central = format!("central {}:{}", cfg.server_destination.join(","), cfg.server_destination_port);
        return if cfg.packetbuffer_sender {
            format!("made by the {central} from the packets sent to it")
        } else {
            format!("sent to the {central}, and to {out}")
        };
    }
    let mut to = Vec::new();
    if let Some(db) = crate::store::mysql::DbConfig::from_config(cfg) {
        let at = db.socket.clone().unwrap_or_else(|| format!("{}:{}", db.host, db.port));
        to.push(format!("MySQL {}@{at}, database {}", db.user, db.db));
    }
    if cdr_log_kept(cfg, role, file) {
        to.push(format!("the CDR log in {}", cfg.spooldir.join("cdrlog").display()));
    }
    to.push(out.to_string());
    to.join("; ")
}

/// The run's rule (runtime's pipeline): the CDR log is kept when asked for, or by default for a live sensor
/// without a database; never by default for a capture file. Forwarded packets make their CDRs elsewhere.
fn cdr_log_kept(cfg: &Config, role: &Role, file: bool) -> bool {
    if role.forwards() {
        return false;
    }
    match cfg.cdr_log {
        Some(on) => on,
        None => !file && cfg.mysqlhost.is_none(),
    }
}

fn saving(cfg: &Config) -> Option<String> {
    let mut what = Vec::new();
    if cfg.savesip {
        what.push("SIP");
    }
    match cfg.savertp {
        SaveRtp::Yes => what.push("RTP"),
        SaveRtp::Header => what.push("RTP headers"),
        SaveRtp::No => {}
    }
    if cfg.savertcp {
        what.push("RTCP");
    }
    (!what.is_empty()).then(|| what.join(", "))
}

fn manager(cfg: &Config, file: bool) -> String {
    if file {
        return "not opened for a capture file".into();
    }
    match (cfg.managerport, &cfg.managersocket) {
        (0, None) => "off".to_string(),
        (p, s) => format!(
            "{}{}{}",
            if p == 0 { String::new() } else { format!("{}:{p}", cfg.managerip) },
            s.as_ref().map(|s| format!(" + {}", s.display())).unwrap_or_default(),
            if cfg.manager_key.is_some() { " (manager_key set)" } else { "" }
        ),
    }
}

/// A capture `-r` can read: the file exists, is not a directory, and is a pcap or pcapng file (gzip- or
/// zstd-compressed or not), judged by its first bytes; `-` is standard input, only checked not to be a terminal.
pub fn check_capture_file(p: &Path) -> Result<()> {
    Ok(crate::capture::input::probe(p)?)
}

/// A folder the run will write into takes a file. Not `dry`: created (with its parents) and probed with a file
/// created and removed. `dry`: the same probe in the folder or, when it does not exist yet, in its nearest
/// existing ancestor, so that nothing is left behind (`access(2)` alone says yes to root on a read-only or
/// virtual filesystem).
fn writable(dir: &Path, dry: bool) -> Result<()> {
    let mut at = dir.to_path_buf();
    if dry {
        loop {
            match std::fs::metadata(&at) {
                Ok(m) if m.is_dir() => break,
                Ok(_) => bail!("{} is not a directory", at.display()),
                Err(_) => match at.parent() {
                    Some(p) if !p.as_os_str().is_empty() => at = p.to_path_buf(),
                    _ => {
                        at = PathBuf::from(".");
                        break;
                    }
                },
            }
        }
    } else {
        // With the modes and group the store gives its folders (spool_dir_mode, spool_group).
        crate::store::perms::create_dir_all(&at).map_err(|e| anyhow::anyhow!("{}", plain(&e)))?;
    }
    let probe = at.join(format!(".voxtap-probe-{}", std::process::id()));
    std::fs::File::create(&probe).map_err(|e| anyhow::anyhow!("{}: {}", at.display(), plain(&e)))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_under_a_file_is_refused_dry_and_wet() {
        let d = std::env::temp_dir().join(format!("voxtap-plan-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("f"), b"x").unwrap();
        assert!(writable(&d.join("f/sub"), true).is_err());
        assert!(writable(&d.join("f/sub"), false).is_err());
        assert!(writable(&d.join("new/sub"), true).is_ok());
        assert!(!d.join("new").exists(), "a dry check creates nothing");
        assert!(writable(&d.join("new/sub"), false).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }
}
