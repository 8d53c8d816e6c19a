//! Toeplitz hashing as NICs do RSS (Microsoft's RSS specification), computed in software for devices that
//! give no hash (virtual devices) and for the test harness that plays a NIC. With the symmetric key (0x6d5a
//! repeated) both directions of a flow hash alike, so one rx core sees both (needed for TCP reassembly).

/// Microsoft's verification key (also DPDK's and most NICs' default).
pub const DEFAULT_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b,
    0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac,
    0x01, 0xfa,
];

/// The symmetric key: hash(a→b) == hash(b→a).
pub const SYMMETRIC_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d,
    0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
    0x6d, 0x5a,
];

/// Toeplitz hash of `input` (bytes in network order) with a key of at least `input.len() + 4` bytes.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let mut result = 0u32;
    // The 32-bit window of the key that lines up with the current input bit.
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    for (i, &byte) in input.iter().enumerate() {
        let next = key.get(i + 4).copied().unwrap_or(0);
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                result ^= window;
            }
            window = (window << 1) | ((next >> (7 - bit)) & 1) as u32;
        }
    }
    result
}

/// RSS hash of an IPv4 flow with ports (the NIC's "IPv4 + UDP/TCP" hash type).
pub fn hash_v4(key: &[u8], src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> u32 {
    let mut input = [0u8; 12];
    input[..4].copy_from_slice(&src);
    input[4..8].copy_from_slice(&dst);
    input[8..10].copy_from_slice(&sport.to_be_bytes());
    input[10..12].copy_from_slice(&dport.to_be_bytes());
    toeplitz(key, &input)
}

/// RSS hash of an IPv6 flow with ports.
pub fn hash_v6(key: &[u8], src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> u32 {
    let mut input = [0u8; 36];
    input[..16].copy_from_slice(&src);
    input[16..32].copy_from_slice(&dst);
    input[32..34].copy_from_slice(&sport.to_be_bytes());
    input[34..36].copy_from_slice(&dport.to_be_bytes());
    toeplitz(key, &input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsoft_verification_vectors() {
        // Microsoft's RSS verification suite, IPv4 with TCP ports.
        let cases = [
            ([66, 9, 149, 187], 2794, [161, 142, 100, 80], 1766, 0x51cc_c178u32),
            ([199, 92, 111, 2], 14230, [65, 69, 140, 83], 4739, 0xc626_b0ea),
            ([24, 19, 198, 95], 12898, [12, 22, 207, 184], 38024, 0x5c2b_394a),
            ([38, 27, 205, 30], 48228, [209, 142, 163, 6], 2217, 0xafc7_327f),
            ([153, 39, 163, 191], 44251, [202, 188, 127, 2], 1303, 0x10e8_28a2),
        ];
        for (src, sport, dst, dport, want) in cases {
            assert_eq!(hash_v4(&DEFAULT_KEY, src, dst, sport, dport), want);
        }
        // IPv4 addresses only.
        let mut input = [0u8; 8];
        input[..4].copy_from_slice(&[66, 9, 149, 187]);
        input[4..].copy_from_slice(&[161, 142, 100, 80]);
        assert_eq!(toeplitz(&DEFAULT_KEY, &input), 0x323e_8fc2);
    }

    #[test]
    fn ipv6_vector() {
        // Source 3ffe:2501:200:1fff::7 port 2794, destination 3ffe:2501:200:3::1 port 1766.
        let src = [0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x1f, 0xff, 0, 0, 0, 0, 0, 0, 0, 7];
        let dst = [0x3f, 0xfe, 0x25, 0x01, 0x02, 0x00, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(hash_v6(&DEFAULT_KEY, src, dst, 2794, 1766), 0x4020_7d3d);
    }

    #[test]
    fn symmetric_key_is_symmetric() {
        for i in 0..1000u32 {
            let a = (0x0a00_0000 + i * 7919).to_be_bytes();
            let b = (0xc0a8_0000 + i * 104_729).to_be_bytes();
            let (p, q) = ((i * 31) as u16, (i * 97 + 5060) as u16);
            assert_eq!(hash_v4(&SYMMETRIC_KEY, a, b, p, q), hash_v4(&SYMMETRIC_KEY, b, a, q, p));
        }
    }
}
