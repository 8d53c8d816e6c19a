/* Non-inline entry points for DPDK's static inline fast-path functions and macros, so Rust can call them. */
#ifndef VOXTAP_DPDK_SHIM_H
#define VOXTAP_DPDK_SHIM_H

#include <stdint.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

uint16_t vx_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t vx_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
void vx_free_bulk(struct rte_mbuf **pkts, unsigned int n);
struct rte_mbuf *vx_alloc(struct rte_mempool *pool);
/* Appends len bytes of data to an empty mbuf; returns 0 or -1 when it does not fit. */
int vx_fill(struct rte_mbuf *m, const void *data, uint16_t len);
const uint8_t *vx_data(const struct rte_mbuf *m);
uint16_t vx_data_len(const struct rte_mbuf *m);
uint32_t vx_pkt_len(const struct rte_mbuf *m);
/* Copies len bytes of a (possibly chained) packet into buf; returns 0 or -1. */
int vx_read(const struct rte_mbuf *m, uint32_t len, void *buf);
/* RSS hash of the packet when the device set one (flag), else returns 0 and *valid = 0. */
uint32_t vx_rss(const struct rte_mbuf *m, int *valid);
void vx_set_rss(struct rte_mbuf *m, uint32_t hash);
/* Looks up the rx timestamp dynamic field/flag (after a port with the timestamp offload started). */
int vx_timestamp_init(void);
/* The rx timestamp a device stored in the mbuf, or 0 when none. */
uint64_t vx_timestamp(const struct rte_mbuf *m);
/* What the rx loop reads of each received mbuf, in one call instead of five. */
struct vx_pkt {
	const uint8_t *data;
	uint64_t timestamp; /* 0: none */
	uint32_t pkt_len;
	uint32_t rss;
	uint16_t data_len;
	uint8_t rss_valid;
};
void vx_pkt_info(const struct rte_mbuf *m, struct vx_pkt *out);
int vx_errno(void);
/* Registers the calling (non-EAL) thread with DPDK so it gets an lcore id and mempool caches. */
int vx_thread_register(void);
void vx_thread_unregister(void);
unsigned int vx_lcore_id(void);
uint32_t vx_softrss_v4(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, const uint8_t *key);

#endif
