//! Output of an offline run: JSON Lines CDRs, or a readable table, and the summary counters.

use std::io::Write;

use crate::call::cdr::Cdr;
use crate::runtime::{LiveOutput, RunResult};

pub mod table;

pub fn write_json(out: &mut impl Write, r: &RunResult) -> std::io::Result<()> {
    for c in &r.cdrs {
        out.write_all(c.json.as_bytes())?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

pub fn write_table(out: &mut impl Write, r: &RunResult) -> std::io::Result<()> {
    if !r.streamed {
        table::write_all(out, &r.cdrs)?;
        writeln!(out, "\n{}", table::LEGEND)?;
    }
    writeln!(out)?;
    writeln!(out, "{}", summary(r))?;
    Ok(())
}

/// A live capture's CDRs on standard output as the calls end: JSON lines or table rows. A reader that goes
/// away (`| head`) ends the output, not the capture.
pub struct LiveWriter {
    out: std::io::BufWriter<std::io::Stdout>,
    format: LiveOutput,
    table: Option<table::Live>,
    broken: bool,
}

impl LiveWriter {
    pub fn new(format: LiveOutput) -> LiveWriter {
        let mut w = LiveWriter { out: std::io::BufWriter::new(std::io::stdout()), format, table: None, broken: false };
        if format == LiveOutput::Table {
            match table::Live::header(&mut w.out) {
                Ok(t) => w.table = Some(t),
                Err(e) => w.check(Err(e)),
            }
        }
        w
    }

    /// Writes one CDR; `flush` when no more are waiting, so a line is out as soon as its call ends.
    pub fn write(&mut self, c: &Cdr, flush: bool) {
        if self.broken {
            return;
        }
        let r = match self.format {
            LiveOutput::Json => self.out.write_all(c.json.as_bytes()).and_then(|_| self.out.write_all(b"\n")),
            LiveOutput::Table => match self.table.as_mut() {
                Some(t) => t.row(&mut self.out, c),
                None => Ok(()),
            },
        };
        let r = r.and_then(|_| if flush { self.out.flush() } else { Ok(()) });
        self.check(r);
    }

    fn check(&mut self, r: std::io::Result<()>) {
        if let Err(e) = r {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                tracing::warn!(error = %e, "cannot write CDRs to standard output; they still go to the database and the CDR log");
            }
            self.broken = true;
        }
    }
}

impl Drop for LiveWriter {
    fn drop(&mut self) {
        if !self.broken {
            let _ = self.out.flush();
        }
    }
}

/// What to do about SIP seen on UDP ports outside `sipport`: those calls were not followed.
pub fn sip_port_hint(r: &RunResult) -> Option<String> {
    let p = &r.rx.sip_other_ports;
    if p.total() == 0 {
        return None;
    }
    let ranked = p.ranked();
    let list: Vec<String> = ranked.iter().map(|(port, n)| format!("{port} ({n})")).collect();
    let add: Vec<String> = ranked.iter().take(8).map(|(port, _)| port.to_string()).collect();
    Some(format!(
        "{} SIP messages on UDP ports not in sipport: {}{}; their calls were not followed. Add the ports to sipport \
         (sipport = {}{}, or --sipports) to follow them",
        p.total(),
        list.join(", "),
        if p.others > 0 { format!(" and {} on other ports", p.others) } else { String::new() },
        r.sipport.trim_end_matches(','),
        add.iter().map(|a| format!(",{a}")).collect::<String>()
    ))
}

/// One-paragraph summary: packets, calls, streams, drops, decode errors, non-call SIP.
pub fn summary(r: &RunResult) -> String {
    let d = &r.decode;
    let o = &r.owners;
    let drops =
        r.rx.ring_full_drops.iter().sum::<u64>() + o.cdr_queue_drops + o.spool_queue_drops + d.fragments_dropped;
    let pps = if r.elapsed_s > 0.0 { d.frames as f64 / r.elapsed_s } else { 0.0 };
    let methods: Vec<String> = o.sip_requests.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut text = format!(
        "packets={} bytes={} calls={} cdrs={} streams={} rtp={} rtcp={} sip={} sip_requests[{}] non_call_sip={} \
         unknown_udp={} sip_other_ports={} media_without_call={} drops={} decode_errors={} not_ip={} sip_unparsable={} \
         fragments={} reassembled={} tcp_sip_messages={} concurrent_calls_peak={} workers={} elapsed={:.3}s rate={:.0}pps",
        d.frames,
        d.bytes,
        o.calls,
        r.cdr_count,
        o.streams,
        o.rtp_packets,
        o.rtcp_packets,
        o.sip_messages,
        methods.join(","),
        o.non_call_sip,
        r.rx.unknown_udp,
        r.rx.sip_other_ports.total(),
        o.media_without_call,
        drops,
        d.errors,
        d.not_ip,
        r.rx.sip_unparsable,
        d.fragments,
        d.reassembled,
        d.tcp_sip_messages,
        r.concurrent_peak,
        r.workers,
        r.elapsed_s,
        pps
    );
    // Everything else that was set aside, so nothing disappears silently.
    for (k, v) in [
        ("fragments_dropped", d.fragments_dropped),
        ("tcp_skipped_bytes", d.tcp_skipped_bytes),
        ("tcp_not_sip_port", d.tcp_ignored),
        ("tunnels", d.tunnel.total()),
        ("non_rtp_media", o.non_rtp_media),
        ("media_ignored", o.media_ignored),
        ("packets_over_stream_limit", o.packets_over_stream_limit),
        ("spool_link_mismatch", o.spool_link_mismatch),
        ("callid_collisions", o.callid_collisions),
        ("media_table_evicted", r.rx.media_table_evicted),
        ("media_parked", r.rx.media_parked),
        ("ring_full_drops", r.rx.ring_full_drops.iter().sum()),
        ("kernel_drops", r.kernel_drops.unwrap_or(0)),
        ("cdr_queue_drops", o.cdr_queue_drops),
        ("spool_queue_drops", o.spool_queue_drops),
    ] {
        if v > 0 {
            text.push_str(&format!(" {k}={v}"));
        }
    }
    if let Some(h) = &r.hep {
        text.push_str(&format!(
            " hep_udp_packets={} hep_tcp_messages={} hep_tcp_connections={} hep_tcp_errors={} hep_oversized={} \
             hep_tcp_idle_closed={} hep_dropped_batches={}",
            h.udp_packets,
            h.tcp_messages,
            h.tcp_connections,
            h.tcp_errors,
            h.oversized,
            h.tcp_idle_closed,
            h.dropped_batches
        ));
    }
    if let Some(x) = &r.ipfix {
        text.push_str(&format!(
            " ipfix_connections={} ipfix_handshakes={} ipfix_sip_messages={} ipfix_other_sets={} ipfix_errors={} \
             ipfix_idle_closed={}",
            x.connections, x.handshakes, x.sip_messages, x.other_sets, x.errors, x.idle_closed
        ));
    }
    for (k, v) in d.tunnel.nonzero() {
        text.push_str(&format!(" {k}={v}"));
    }
    if let Some(l) = &r.link {
        text.push_str(&format!(
            " link_queued={} link_batches_sent={} link_batches_confirmed={} link_connects={} link_connect_failures={} link_left_bytes={} \
             link_left_records={}",
            l.queued,
            l.batches_sent,
            l.batches_confirmed,
            l.connects,
            l.connect_failures,
            l.left_bytes,
            l.left_records
        ));
        if l.dropped_queue_full > 0 {
            text.push_str(&format!(" link_dropped_queue_full={}", l.dropped_queue_full));
        }
    }
    if let Some(c) = &r.central {
        text.push_str(&format!(
            " central_connections={} central_registered={} central_cdrs={} central_packet_batches={} central_resent_skipped={} \
             central_refused_auth={} central_refused_clock={} central_refused_duplicate_id={} central_refused_protocol={} central_links_lost={} \
             central_refused_throttled={} central_handshake_timeouts={} central_refused_per_ip={} central_refused_full={} central_evicted={}",
            c.connections,
            c.registered,
            c.cdrs,
            c.packet_batches,
            c.resent_batches_skipped,
            c.refused_auth,
            c.refused_clock,
            c.refused_duplicate_id,
            c.refused_protocol,
            c.links_lost,
            c.refused_throttled,
            c.handshake_timeouts,
            c.gate.refused_per_ip,
            c.gate.refused_full,
            c.gate.evicted
        ));
    }
    if let Some(m) = &r.mirror {
        text.push_str(&format!(
            " mirror_connections={} mirror_blocks={} mirror_packets={} mirror_block_errors={} mirror_duplicate_blocks={} mirror_refused_time={} \
             mirror_refused_connections={} mirror_idle_closed={}",
            m.connections,
            m.blocks,
            m.packets,
            m.block_errors,
            m.duplicate_blocks,
            m.refused_time,
            m.refused_connections,
            m.idle_closed
        ));
    }
    if let Some(m) = &r.merge {
        text.push_str(&format!(" merge_frames={} merge_released_on_timeout={}", m.frames, m.released_on_timeout));
    }
    if let Some(l) = &r.cdr_log {
        text.push_str(&format!(" cdr_log_written={}", l.written));
        if l.errors > 0 {
            text.push_str(&format!(" cdr_log_errors={}", l.errors));
        }
    }
    if let Some(db) = &r.db {
        text.push_str(&format!(
            " db_stored={} db_duplicate={} db_rejected={} db_unreadable={} db_queued={} db_replayed_at_start={} \
             db_retries={} db_bulk_loaded={}",
            db.cdrs_stored,
            db.cdrs_duplicate,
            db.cdrs_rejected,
            db.cdrs_unreadable,
            db.cdrs_queued,
            db.replayed_at_start,
            db.retries,
            db.cdrs_bulk_loaded
        ));
        for (k, v) in [("db_queue_corrupt", db.queue_corrupt), ("db_queue_errors", db.queue_errors)] {
            if v > 0 {
                text.push_str(&format!(" {k}={v}"));
            }
        }
    }
    if !r.rx.cpu_s.is_empty() {
        let f = |v: &[f64]| v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(",");
        text.push_str(&format!(
            " rx_cpu_s=[{}] rx_frames={:?} owner_cpu_s=[{}]",
            f(&r.rx.cpu_s),
            r.rx.packets_per_core,
            f(&r.owners.cpu_s)
        ));
    }
    #[cfg(feature = "dpdk")]
    if let Some(p) = &r.port {
        text.push_str(&format!(
            " port_ipackets={} port_imissed={} port_rx_nombuf={} port_ierrors={} port_queues={:?}",
            p.ipackets, p.imissed, p.rx_nombuf, p.ierrors, p.q_ipackets
        ));
    }
    if r.spool.files > 0 || r.spool.errors > 0 {
        text.push_str(&format!(
            " spool_files={} spool_bytes={} spool_bytes_on_disk={} spool_errors={}",
            r.spool.files, r.spool.bytes, r.spool.bytes_on_disk, r.spool.errors
        ));
        if r.spool.kept_aside > 0 {
            text.push_str(&format!(" spool_kept_aside={}", r.spool.kept_aside));
        }
    }
    if let Some(t) = &r.truncated {
        text.push_str(&format!(" truncated=\"{t}\""));
    }
    text
}

/// The most calls in progress at one instant, from the CDRs' start and end times (independent of workers).
pub fn peak_concurrency(cdrs: &[crate::call::cdr::Cdr]) -> usize {
    let mut ev: Vec<(i64, i32)> = cdrs.iter().flat_map(|c| [(c.calldate, 1), (c.callend, -1)]).collect();
    // At equal times a call that starts counts before one that ends (both were in progress at that instant).
    ev.sort_by_key(|&(t, d)| (t, -d));
    let (mut cur, mut peak) = (0i32, 0i32);
    for (_, d) in ev {
        cur += d;
        peak = peak.max(cur);
    }
    peak.max(0) as usize
}
