//! What an rx stage counts, and how several rx stages' counts add up.

use super::PortCounts;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RxStats {
    pub sip_messages: u64,
    pub sip_unparsable: u64,
    pub media_packets: u64,
    pub unknown_udp: u64,
    /// SIP messages seen on UDP ports outside `sipport` (part of `unknown_udp`).
    pub sip_other_ports: PortCounts,
    /// Media packets that waited for their SDP to reach the shared table (several rx cores).
    pub media_parked: u64,
    pub media_endpoints: u64,
    pub media_table_evicted: u64,
    /// CPU seconds and frames of each rx thread (live sources; per-core rates).
    pub cpu_s: Vec<f64>,
    pub packets_per_core: Vec<u64>,
    /// Batches dropped because an owner's ring was full (live sources only; files wait instead).
    pub ring_full_drops: Vec<u64>,
    /// CPU seconds spent waiting for a full owner ring (files only): the owners, not the rx stage, set the pace
    /// then, and a benchmark of the rx stage subtracts this.
    pub owner_wait_cpu_s: f64,
}

impl RxStats {
    /// Another rx stage's counters added in; per-core lists are concatenated (ring drops are per owner: summed).
    pub fn add(&mut self, b: RxStats) {
        let RxStats {
            sip_messages,
            sip_unparsable,
            media_packets,
            unknown_udp,
            sip_other_ports,
            media_parked,
            media_endpoints,
            media_table_evicted,
            cpu_s,
            packets_per_core,
            ring_full_drops,
            owner_wait_cpu_s,
        } = b;
        self.sip_messages += sip_messages;
        self.sip_unparsable += sip_unparsable;
        self.media_packets += media_packets;
        self.unknown_udp += unknown_udp;
        self.sip_other_ports.add(&sip_other_ports);
        self.media_parked += media_parked;
        self.media_endpoints += media_endpoints;
        // Every rx core keeps a copy of the same media table: their evictions are one count, not a sum.
        self.media_table_evicted = self.media_table_evicted.max(media_table_evicted);
        self.cpu_s.extend(cpu_s);
        self.packets_per_core.extend(packets_per_core);
        self.owner_wait_cpu_s += owner_wait_cpu_s;
        if self.ring_full_drops.len() < ring_full_drops.len() {
            self.ring_full_drops.resize(ring_full_drops.len(), 0);
        }
        for (x, y) in self.ring_full_drops.iter_mut().zip(ring_full_drops) {
            *x += y;
        }
    }
}
