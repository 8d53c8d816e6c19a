//! SIP seen on UDP ports outside `sipport`, counted by port pair within a bound, and the fewest ports that
//! would cover it (the hint at the end of a run).

/// SIP messages counted by their (source, destination) port pair, for the few pairs worth naming; pairs past the
/// first `MAX` are counted together, so a scan over every port cannot grow it.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PortCounts {
    pub pairs: Vec<((u16, u16), u64)>,
    pub others: u64,
}

impl PortCounts {
    const MAX: usize = 64;

    pub fn count(&mut self, sport: u16, dport: u16) {
        self.add_pair((sport.min(dport), sport.max(dport)), 1);
    }

    fn add_pair(&mut self, pair: (u16, u16), n: u64) {
        if let Some(p) = self.pairs.iter_mut().find(|p| p.0 == pair) {
            p.1 += n;
        } else if self.pairs.len() < Self::MAX {
            self.pairs.push((pair, n));
        } else {
            self.others += n;
        }
    }

    pub fn add(&mut self, b: &PortCounts) {
        for &(pair, n) in &b.pairs {
            self.add_pair(pair, n);
        }
        self.others += b.others;
    }

    pub fn total(&self) -> u64 {
        self.pairs.iter().map(|p| p.1).sum::<u64>() + self.others
    }

    /// The fewest ports that cover the messages, each with the messages it adds, busiest first: a SIP server's
    /// port covers its clients' ephemeral ports, so those are not named (a greedy cover).
    pub fn ranked(&self) -> Vec<(u16, u64)> {
        let mut left = self.pairs.clone();
        let mut out = Vec::new();
        while !left.is_empty() {
            let mut by_port: Vec<(u16, u64)> = Vec::new();
            for &((a, b), n) in &left {
                for port in if a == b { vec![a] } else { vec![a, b] } {
                    match by_port.iter_mut().find(|p| p.0 == port) {
                        Some(p) => p.1 += n,
                        None => by_port.push((port, n)),
                    }
                }
            }
            let Some(&(port, n)) = by_port.iter().max_by(|x, y| x.1.cmp(&y.1).then(y.0.cmp(&x.0))) else {
                break;
            };
            out.push((port, n));
            left.retain(|&((a, b), _)| a != port && b != port);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::PortCounts;

    #[test]
    fn a_servers_port_covers_its_clients_ephemeral_ports() {
        let mut p = PortCounts::default();
        for (s, d, n) in [(40000, 5260, 10), (5260, 40000, 10), (5260, 20917, 13), (5062, 25060, 4)] {
            for _ in 0..n {
                p.count(s, d);
            }
        }
        assert_eq!(p.total(), 37);
        assert_eq!(p.ranked(), [(5260, 33), (5062, 4)]);
    }

    #[test]
    fn a_port_scan_stays_bounded() {
        let mut p = PortCounts::default();
        for port in 0..10_000u16 {
            p.count(port, 5060);
            p.count(port, 6000 + port);
        }
        assert!(p.pairs.len() <= 64);
        assert_eq!(p.total(), 20_000);
    }
}
