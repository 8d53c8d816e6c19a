#include <string.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_mbuf_dyn.h>
#include <rte_thash.h>
#include "shim.h"

uint16_t vx_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t vx_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

void vx_free_bulk(struct rte_mbuf **pkts, unsigned int n)
{
	rte_pktmbuf_free_bulk(pkts, n);
}

struct rte_mbuf *vx_alloc(struct rte_mempool *pool)
{
	return rte_pktmbuf_alloc(pool);
}

int vx_fill(struct rte_mbuf *m, const void *data, uint16_t len)
{
	char *dst = rte_pktmbuf_append(m, len);
	if (dst == NULL)
		return -1;
	memcpy(dst, data, len);
	return 0;
}

const uint8_t *vx_data(const struct rte_mbuf *m)
{
	return rte_pktmbuf_mtod(m, const uint8_t *);
}

uint16_t vx_data_len(const struct rte_mbuf *m)
{
	return m->data_len;
}

uint32_t vx_pkt_len(const struct rte_mbuf *m)
{
	return m->pkt_len;
}

int vx_read(const struct rte_mbuf *m, uint32_t len, void *buf)
{
	const void *p = rte_pktmbuf_read(m, 0, len, buf);
	if (p == NULL)
		return -1;
	if (p != buf)
		memcpy(buf, p, len);
	return 0;
}

uint32_t vx_rss(const struct rte_mbuf *m, int *valid)
{
	*valid = (m->ol_flags & RTE_MBUF_F_RX_RSS_HASH) != 0;
	return *valid ? m->hash.rss : 0;
}

void vx_set_rss(struct rte_mbuf *m, uint32_t hash)
{
	m->hash.rss = hash;
	m->ol_flags |= RTE_MBUF_F_RX_RSS_HASH;
}

static int ts_offset = -1;
static uint64_t ts_flag;

int vx_timestamp_init(void)
{
	int field = rte_mbuf_dynfield_lookup(RTE_MBUF_DYNFIELD_TIMESTAMP_NAME, NULL);
	int flag = rte_mbuf_dynflag_lookup(RTE_MBUF_DYNFLAG_RX_TIMESTAMP_NAME, NULL);
	if (field < 0 || flag < 0)
		return -1;
	ts_offset = field;
	ts_flag = RTE_BIT64(flag);
	return 0;
}

uint64_t vx_timestamp(const struct rte_mbuf *m)
{
	if (ts_offset < 0 || (m->ol_flags & ts_flag) == 0)
		return 0;
	return *RTE_MBUF_DYNFIELD(m, ts_offset, const rte_mbuf_timestamp_t *);
}

void vx_pkt_info(const struct rte_mbuf *m, struct vx_pkt *out)
{
	out->data = rte_pktmbuf_mtod(m, const uint8_t *);
	out->data_len = m->data_len;
	out->pkt_len = m->pkt_len;
	out->rss_valid = (m->ol_flags & RTE_MBUF_F_RX_RSS_HASH) != 0;
	out->rss = out->rss_valid ? m->hash.rss : 0;
	out->timestamp = vx_timestamp(m);
}

int vx_thread_register(void)
{
	return rte_thread_register();
}

void vx_thread_unregister(void)
{
	rte_thread_unregister();
}

int vx_errno(void)
{
	return rte_errno;
}

unsigned int vx_lcore_id(void)
{
	return rte_lcore_id();
}

uint32_t vx_softrss_v4(uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, const uint8_t *key)
{
	/* Same layout as struct rte_ipv4_tuple: host byte order words. */
	uint32_t tuple[3] = { src, dst, ((uint32_t)sport << 16) | dport };
	return rte_softrss(tuple, 3, key);
}
