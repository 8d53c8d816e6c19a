//! Counters of several rx stages and owners summed into one result.

use super::*;

pub(super) fn merge_decode(a: &mut crate::decode::DecodeStats, b: &crate::decode::DecodeStats) {
    let fields = |s: &crate::decode::DecodeStats| {
        [
            s.frames,
            s.bytes,
            s.not_ip,
            s.errors,
            s.truncated_ip,
            s.udp,
            s.tcp_segments,
            s.tcp_ignored,
            s.sctp_chunks,
            s.other_ip_proto,
            s.fragments,
            s.reassembled,
            s.fragments_dropped,
            s.tcp_sip_messages,
            s.tcp_skipped_bytes,
        ]
    };
    let sum: Vec<u64> = fields(a).iter().zip(fields(b)).map(|(x, y)| x + y).collect();
    let mut tunnel = a.tunnel;
    tunnel.add(&b.tunnel);
    *a = crate::decode::DecodeStats {
        frames: sum[0],
        bytes: sum[1],
        not_ip: sum[2],
        errors: sum[3],
        truncated_ip: sum[4],
        udp: sum[5],
        tcp_segments: sum[6],
        tcp_ignored: sum[7],
        sctp_chunks: sum[8],
        other_ip_proto: sum[9],
        fragments: sum[10],
        reassembled: sum[11],
        fragments_dropped: sum[12],
        tcp_sip_messages: sum[13],
        tcp_skipped_bytes: sum[14],
        tunnel,
    };
}

pub(super) fn merge_rx(a: &mut RxStats, b: RxStats) {
    a.sip_messages += b.sip_messages;
    a.sip_unparsable += b.sip_unparsable;
    a.media_packets += b.media_packets;
    a.unknown_udp += b.unknown_udp;
    a.sip_other_ports.add(&b.sip_other_ports);
    a.media_parked += b.media_parked;
    a.media_endpoints += b.media_endpoints;
    a.cpu_s.extend(b.cpu_s);
    a.owner_wait_cpu_s += b.owner_wait_cpu_s;
    a.packets_per_core.extend(b.packets_per_core);
    a.media_table_evicted = a.media_table_evicted.max(b.media_table_evicted);
    if a.ring_full_drops.len() < b.ring_full_drops.len() {
        a.ring_full_drops.resize(b.ring_full_drops.len(), 0);
    }
    for (x, y) in a.ring_full_drops.iter_mut().zip(b.ring_full_drops) {
        *x += y;
    }
}

pub(super) fn merge(a: &mut OwnerStats, b: OwnerStats) {
    a.sip_messages += b.sip_messages;
    for (k, v) in b.sip_requests {
        *a.sip_requests.entry(k).or_default() += v;
    }
    a.non_call_sip += b.non_call_sip;
    a.calls += b.calls;
    a.cdrs += b.cdrs;
    a.rtp_packets += b.rtp_packets;
    a.rtcp_packets += b.rtcp_packets;
    a.media_without_call += b.media_without_call;
    a.media_ignored += b.media_ignored;
    a.non_rtp_media += b.non_rtp_media;
    a.callid_collisions += b.callid_collisions;
    a.cdr_queue_drops += b.cdr_queue_drops;
    a.spool_queue_drops += b.spool_queue_drops;
    a.spool_link_mismatch += b.spool_link_mismatch;
    a.streams += b.streams;
    a.packets_over_stream_limit += b.packets_over_stream_limit;
    a.active_calls_peak += b.active_calls_peak;
    a.cpu_s.extend(b.cpu_s);
}
