//! voxtap command line: VoIPmonitor's option names where they exist (reference §1.2), plus `--json` and
//! `--workers`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tracing::warn;

use voxtap::config::{parse, Config, SaveRtp};
use voxtap::plan::{Plan, Role};
use voxtap::runtime::{run_file, RunOptions};

#[derive(Parser, Debug)]
#[command(
    name = "voxtap",
    version,
    about = "Passive VoIP monitor: SIP calls, RTP quality, CDRs, per-call pcaps",
    after_help = voxtap::report::table::LEGEND
)]
struct Cli {
    /// voipmonitor.conf-style configuration file; `conf.d/` beside it is read too.
    #[arg(long = "config-file", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Extra configuration directory (default: `conf.d` next to the config file).
    #[arg(long = "config-dir", value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Read packets from a pcap or pcapng file (plain, gzip or zstd; `-` for standard input) and exit when it is
    /// done.
    #[arg(short = 'r', long = "read", value_name = "FILE")]
    read: Option<PathBuf>,
    /// Capture interface(s).
    #[arg(short = 'i', long = "interface")]
    interface: Option<String>,
    /// Spool directory for per-call pcap files.
    #[arg(short = 'd', long = "spooldir")]
    spooldir: Option<PathBuf>,
    /// Sensor id written into every CDR (0–65535; negative = unset).
    #[arg(short = 's', long = "id-sensor", allow_negative_numbers = true)]
    id_sensor: Option<i64>,
    /// BPF capture filter (tcpdump syntax) for live capture.
    #[arg(short = 'f', long = "pcapfilter")]
    filter: Option<String>,
    /// SIP ports, e.g. 5060,5070-5080.
    #[arg(short = 'Y', long = "sipports")]
    sipports: Option<String>,
    /// Do not fork (voxtap never forks; accepted for VoIPmonitor compatibility).
    #[arg(short = 'k', long = "nodaemon")]
    nodaemon: bool,
    /// Save SIP packets of each call.
    #[arg(short = 'S', long = "save-sip")]
    save_sip: bool,
    /// Save RTP packets of each call.
    #[arg(short = 'R', long = "save-rtp")]
    save_rtp: bool,
    /// Save RTCP packets of each call.
    #[arg(long = "save-rtcp")]
    save_rtcp: bool,
    /// RTP timeout in seconds.
    #[arg(short = 'm', long = "rtp-timeout")]
    rtp_timeout: Option<u32>,
    /// Print one CDR per line as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Run one cleanspool pass over the spool (maxpool* limits, free-space floors) and exit.
    #[arg(long = "run-cleanspool")]
    run_cleanspool: bool,
    /// Number of owner workers (call-state cores).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Send one manager command (`--command`) to a sensor's manager port (HOST:PORT) and print the reply; sealed
    /// with the configuration's `manager_key` when it has one.
    #[arg(long = "manager-client", value_name = "HOST:PORT")]
    manager_client: Option<String>,
    #[arg(long = "command", value_name = "COMMAND", default_value = "getversion")]
    command: String,
    /// Read the configuration, check that its keys agree, print what voxtap would do with it, and exit.
    #[arg(long = "check-config")]
    check_config: bool,
    /// Verbosity: `-v 1` (or `-v`) info, `-v 2` debug; VoIPmonitor's `-v N[,flags]` form is accepted.
    #[arg(short = 'v', long = "verbose", num_args = 0..=1, default_missing_value = "1")]
    verbose: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `-v`, `-v 2`, VoIPmonitor's `-v 1,flags`, and the usual `-vv` (clap hands that over as the value "v").
    let verbosity = cli.verbose.as_deref().map(|v| {
        let first = v.split(',').next().unwrap_or("");
        if !first.is_empty() && first.bytes().all(|c| c == b'v') {
            first.len() as u32 + 1
        } else {
            first.parse::<u32>().unwrap_or(1)
        }
    });
    let level = match verbosity {
        None | Some(0) => "warn",
        Some(1) => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("VOXTAP_LOG").unwrap_or_else(|_| level.into()))
        .with_writer(voxtap::capture::progress::log_writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voxtap: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config> {
    if cli.config_file.is_none() && cli.config_dir.is_none() {
        return Ok(Config::default());
    }
    // The extra directory: --config-dir, else conf.d beside the file (/etc/voipmonitor/conf.d for the usual path).
    let dir = match (&cli.config_dir, &cli.config_file) {
        (Some(d), _) => {
            if !d.is_dir() {
                bail!("--config-dir {}: not a directory", d.display());
            }
            Some(d.clone())
        }
        (None, Some(f)) => f.parent().map(|p| p.join("conf.d")).filter(|d| d.is_dir()),
        (None, None) => None,
    };
    let (mut cfg, report) = Config::load(cli.config_file.as_deref(), dir.as_deref())?;
    cfg.loaded_from = Some((cli.config_file.clone(), dir.clone()));
    for (k, f, l) in &report.unknown_keys {
        warn!(file = %f.display(), line = l, key = %k, "unknown or not yet supported key ignored");
    }
    for s in &report.skipped_lines {
        warn!(file = %s.file.display(), line = s.line, text = %s.text, "line without '=' ignored");
    }
    Ok(cfg)
}

fn run(cli: Cli) -> Result<()> {
    let mut cfg = load_config(&cli)?;
    if let Some(addr) = &cli.manager_client {
        return manager_client(addr, &cli.command, cfg.manager_key.as_deref());
    }
    // The command line wins over the files.
    if let Some(i) = &cli.interface {
        cfg.interface = i.split([',', ';', ' ', '\t']).filter(|s| !s.is_empty()).map(String::from).collect();
    }
    if let Some(d) = &cli.spooldir {
        cfg.spooldir = d.clone();
    }
    if let Some(s) = cli.id_sensor {
        cfg.id_sensor = match s {
            s if s < 0 => None,
            s => Some(u16::try_from(s).map_err(|_| anyhow::anyhow!("--id-sensor {s}: must be 0..65535"))?),
        };
    }
    if let Some(f) = &cli.filter {
        cfg.filter = Some(f.clone());
        cfg.command_line_keys.push("filter");
    }
    if let Some(p) = &cli.sipports {
        cfg.sipport = parse::ports(p).map_err(|e| anyhow::anyhow!("--sipports: {e}"))?;
        cfg.command_line_keys.push("sipport");
    }
    if cli.save_sip {
        cfg.savesip = true;
    }
    if cli.save_rtp {
        cfg.savertp = SaveRtp::Yes;
    }
    if cli.save_rtcp {
        cfg.savertcp = true;
    }
    if let Some(t) = cli.rtp_timeout {
        cfg.rtptimeout = t;
    }
    let _ = cli.nodaemon;
    // Everything the store creates from here on (spool, queues, CDR log) gets these modes and group.
    voxtap::store::perms::configure(&cfg);
    if cli.run_cleanspool {
        let r = voxtap::store::cleanspool::run_once(&cfg)
            .with_context(|| format!("cleaning the spool {}", cfg.spooldir.display()))?;
        println!(
            "cleanspool: {} folders removed, {} bytes removed, {} bytes left in {}",
            r.folders_removed,
            r.bytes_removed,
            r.bytes_left,
            cfg.spooldir.display()
        );
        return Ok(());
    }
    // The same checks for the run and for --check-config, which prints what the run would do.
    let plan = Plan::check(&cfg, cli.read.clone(), cli.check_config)?;
    if cli.check_config {
        for (what, how) in &plan.lines {
            println!("{what}: {how}");
        }
        println!("OK");
        return Ok(());
    }
    match plan.role {
        Role::Central => {
            let res = voxtap::runtime::run_central(&cfg, cli.workers, live_output(&cli))?;
            output(&cli, &res)
        }
        Role::MirrorSender => {
            let st = voxtap::runtime::mirror_send(&cfg, cli.read.as_deref())?;
            eprintln!(
                "voxtap: mirrored packets={} blocks_sent={} blocks_dropped={} connects={} refused={}",
                st.packets, st.blocks_sent, st.blocks_dropped, st.connects, st.refused
            );
            Ok(())
        }
        Role::MirrorReceiver => {
            let res = voxtap::runtime::run_mirror(&cfg, cli.workers, live_output(&cli))?;
            output(&cli, &res)
        }
        Role::PacketSender => send_packets(&cli, &cfg),
        Role::Hep => output(&cli, &voxtap::runtime::run_hep(&cfg, cli.workers, live_output(&cli))?),
        Role::Ipfix => output(&cli, &voxtap::runtime::run_ipfix(&cfg, cli.workers, live_output(&cli))?),
        Role::Dpdk => run_live(&cli, &cfg),
        Role::AfPacket => output(&cli, &voxtap::runtime::run_afpacket(&cfg, cli.workers, live_output(&cli))?),
        Role::File(read) => read_file(&cli, cfg, read),
    }
}

fn send_packets(cli: &Cli, cfg: &Config) -> Result<()> {
    let (what, (fwd, link)) = match cli.read.clone() {
        Some(read) => {
            let what = if read == Path::new("-") { "standard input".into() } else { read.display().to_string() };
            (what, voxtap::runtime::send_packets_file(cfg, &read)?)
        }
        None => ("live capture".to_string(), voxtap::runtime::forward_live(cfg)?),
    };
    eprintln!(
        "voxtap: forwarded {what} to the central: frames={} bytes={} batches={} compressed_bytes={} batches_dropped={} \
         link_batches_sent={} link_batches_confirmed={} link_connects={} link_connect_failures={} link_left_bytes={} link_left_records={}",
        fwd.frames,
        fwd.bytes,
        fwd.batches,
        fwd.compressed_bytes,
        fwd.batches_dropped,
        link.batches_sent,
        link.batches_confirmed,
        link.connects,
        link.connect_failures,
        link.left_bytes,
        link.left_records
    );
    if let Some(why) = link.undelivered("packet batches") {
        bail!(why);
    }
    Ok(())
}

fn read_file(cli: &Cli, cfg: Config, read: PathBuf) -> Result<()> {
    tracing::info!(
        file = %read.display(),
        workers = cli.workers,
        sipports = ?cfg.sipport,
        savesip = cfg.savesip,
        savertp = ?cfg.savertp,
        spooldir = %cfg.spooldir.display(),
        "reading capture file"
    );
    let res = run_file(RunOptions { config: cfg, read, workers: cli.workers })?;
    output(cli, &res)
}

fn live_output(cli: &Cli) -> voxtap::runtime::LiveOutput {
    if cli.json {
        voxtap::runtime::LiveOutput::Json
    } else {
        voxtap::runtime::LiveOutput::Table
    }
}

fn output(cli: &Cli, res: &voxtap::runtime::RunResult) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = if cli.json {
        voxtap::report::write_json(&mut out, res).and_then(|_| out.flush())
    } else {
        voxtap::report::write_table(&mut out, res).and_then(|_| out.flush())
    };
    match written {
        // A reader that stops early (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        other => other?,
    }
    if cli.json {
        // One write, so the line is not interleaved with a pipe reader's output.
        let line = format!("voxtap: {}\n", voxtap::report::summary(res));
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }
    if let Some(hint) = voxtap::report::sip_port_hint(res) {
        tracing::warn!("{hint}");
    }
    if res.spool.errors > 0 {
        bail!(
            "{} writes to the spool failed (the warnings above say where and why): those calls' pcap files are incomplete",
            res.spool.errors
        );
    }
    if let Some(why) = res.link.as_ref().and_then(|l| l.undelivered("CDRs")) {
        bail!(why);
    }
    if let Some(why) = res.db.as_ref().and_then(|d| d.undelivered()) {
        bail!(why);
    }
    Ok(())
}

#[cfg(feature = "dpdk")]
fn run_live(cli: &Cli, cfg: &Config) -> Result<()> {
    let res = voxtap::runtime::run_dpdk(cfg, cli.workers, live_output(cli))?;
    output(cli, &res)
}

#[cfg(not(feature = "dpdk"))]
fn run_live(_cli: &Cli, _cfg: &Config) -> Result<()> {
    bail!("this voxtap was built without DPDK (cargo feature `dpdk`)")
}

fn manager_client(addr: &str, command: &str, key: Option<&str>) -> Result<()> {
    // A host alone means the manager's usual port; `[v6]:port`, `host:port` and a bare IPv6 address also work.
    let addr = if addr.parse::<std::net::SocketAddr>().is_ok()
        || (addr.contains(':') && !addr.contains("::") && addr.matches(':').count() == 1)
    {
        addr.to_string()
    } else if addr.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{addr}]:5029")
    } else {
        format!("{addr}:5029")
    };
    let mut s = std::net::TcpStream::connect(&addr)
        .map_err(|e| anyhow::anyhow!("connecting to the manager port {addr}: {}", voxtap::errors::plain(&e)))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    let reply = match key {
        Some(k) => {
            let key = voxtap::manager::sealed::parse_key(k).map_err(|e| anyhow::anyhow!(e))?;
            voxtap::manager::sealed::ask(&mut s, &key, command).context("sealed manager request")?
        }
        None => {
            std::io::Write::write_all(&mut s, format!("{command}\r\n\r\n").as_bytes())?;
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut s, &mut out)?;
            out
        }
    };
    std::io::Write::write_all(&mut std::io::stdout(), &reply)?;
    Ok(())
}
