// SPDX-License-Identifier: GPL-2.0-only OR MIT
//
// pointsman's kernel relay: forwards the RTP of streams the media plane handed over, in the
// kernel, at the traffic-control ingress hook of the interfaces media arrives on, so an
// established stream's packet costs no system call, no wake-up and no copy to user space.
//
// One map entry per relay port (its local IPv4 address and port) says where a datagram that
// arrives there from the expected peer goes: the relay port it leaves from, the peer it goes
// to, and (for the carrier-bound direction of a normalised call) the RTP header edits that make
// the carrier hear one continuous stream: pointsman's SSRC, sequence and timestamp offsets, and
// the payload-type map. Everything else is passed to the stack untouched and reaches the relay
// in user space, which owns every decision: packets of ports without an entry, from any other
// source, RTCP (multiplexed or not), non-RTP on a normalised entry, IP options, fragments and
// datagrams GRO coalesced.
//
// The entry also counts what it forwarded and when it last saw a packet, which the user-space
// plane reads for its inactivity timer and its metrics.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// The loopback's ifindex in every network namespace.
#define LOOPBACK_IFINDEX 1

// Entry flags.
#define STREAM_NORMALISE 1 // rewrite the RTP header (SSRC, sequence, timestamp, payload type)
#define STREAM_RTCP_TO_USER 2 // RTCP multiplexed on the port goes to user space (always set
                              // with STREAM_NORMALISE)

struct stream_key {
	__u32 addr; // the relay port's local address, network order
	__u16 port; // the relay port, network order
	__u16 pad;
};

struct stream {
	__u32 peer_addr;     // the only source forwarded, network order
	__u16 peer_port;     // network order
	__u16 flags;         // STREAM_*
	__u32 out_src_addr;  // the relay port the packet leaves from, network order
	__u16 out_src_port;  // network order
	__u16 pad0;
	__u32 out_dst_addr;  // where it goes, network order
	__u16 out_dst_port;  // network order
	__u16 seq_offset;    // added to the RTP sequence number
	__u32 ssrc;          // the SSRC written, network order
	__u32 ts_offset;     // added to the RTP timestamp
	__u8 pt_map[128];    // payload type in -> out (identity where unmapped)
	__u32 out_ifindex;   // the interface that holds out_src_addr: the packet leaves by it
	__u32 pad1;
	__u64 packets;       // forwarded
	__u64 bytes;         // forwarded, UDP payload
	__u64 last_seen_ns;  // bpf_ktime_get_ns() of the last packet forwarded
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	// One entry per handed-over RTP port: the default range's on two addresses, twice over.
	__uint(max_entries, 16384);
	__type(key, struct stream_key);
	__type(value, struct stream);
} STREAMS SEC(".maps");

#define ETH_OFF 0
#define IP_OFF (ETH_OFF + sizeof(struct ethhdr))
#define UDP_OFF (IP_OFF + sizeof(struct iphdr))
#define RTP_OFF (UDP_OFF + sizeof(struct udphdr))
#define RTP_HEADER_LEN 12

#define IP_CSUM_OFF (IP_OFF + __builtin_offsetof(struct iphdr, check))
#define UDP_CSUM_OFF (UDP_OFF + __builtin_offsetof(struct udphdr, check))

// L4 checksum edits: a zero UDP checksum (none, over IPv4) stays zero.
#define L4_FLAGS BPF_F_MARK_MANGLED_0

SEC("classifier")
int pointsman_relay(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + RTP_OFF + RTP_HEADER_LEN > end) {
		// Headers not all in the linear part (or a datagram too short for RTP, which still
		// reaches user space and is counted there as malformed).
		if (bpf_skb_pull_data(skb, RTP_OFF + RTP_HEADER_LEN) < 0)
			return TC_ACT_UNSPEC;
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
	}
	struct ethhdr *eth = data;
	struct iphdr *ip = data + IP_OFF;
	struct udphdr *udp = data + UDP_OFF;
	__u8 *rtp = data + RTP_OFF;
	if ((void *)(rtp + RTP_HEADER_LEN) > end)
		return TC_ACT_UNSPEC;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->version != 4 || ip->ihl != 5 ||
	    ip->protocol != IPPROTO_UDP)
		return TC_ACT_UNSPEC;
	if (ip->frag_off & bpf_htons(0x3fff)) // a fragment (MF set or an offset)
		return TC_ACT_UNSPEC;
	if (skb->gso_segs > 1) // datagrams coalesced by GRO: only the first header is here
		return TC_ACT_UNSPEC;

	struct stream_key key = {.addr = ip->daddr, .port = udp->dest, .pad = 0};
	struct stream *s = bpf_map_lookup_elem(&STREAMS, &key);
	if (!s)
		return TC_ACT_UNSPEC;
	if (ip->saddr != s->peer_addr || udp->source != s->peer_port)
		return TC_ACT_UNSPEC; // a stranger: user space counts and drops it

	// Where the packet goes, decided before anything in it changes: out of the interface that
	// holds the relay address it leaves from (the carrier's and the clouds' may be two), to the
	// next hop the route to the peer names, with its MAC (a next hop not yet resolved: the
	// kernel's neighbour code resolves it); a peer on this host, through the loopback. No
	// route, or a packet larger than that interface's MTU: user space, which sends it as it
	// would without this program.
	__u32 udp_len = bpf_ntohs(udp->len);
	struct bpf_fib_lookup fib = {};
	fib.family = 2; // AF_INET
	fib.l4_protocol = IPPROTO_UDP;
	fib.tot_len = udp_len + sizeof(struct iphdr);
	fib.ifindex = s->out_ifindex;
	fib.ipv4_src = s->out_src_addr;
	fib.ipv4_dst = s->out_dst_addr;
	long route = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
	if (route != BPF_FIB_LKUP_RET_SUCCESS && route != BPF_FIB_LKUP_RET_NO_NEIGH &&
	    route != BPF_FIB_LKUP_RET_NOT_FWDED)
		return TC_ACT_UNSPEC;

	__u32 old_saddr = ip->saddr, old_daddr = ip->daddr;
	__u16 old_sport = udp->source, old_dport = udp->dest;
	__u16 old_ttl_proto = *(__u16 *)&ip->ttl;

	// RTCP multiplexed on the port (payload types 72-79 with the marker bit are RTCP's
	// 200-207) goes to user space, which sends it where the peer's RTCP goes.
	__u8 pt = rtp[1] & 0x7f;
	if ((s->flags & STREAM_RTCP_TO_USER) && pt >= 72 && pt <= 79)
		return TC_ACT_UNSPEC;
	if (s->flags & STREAM_NORMALISE) {
		// Only RTP version 2 is normalised; anything else goes to user space.
		if ((rtp[0] >> 6) != 2)
			return TC_ACT_UNSPEC;
		__u16 old_w0 = *(__u16 *)&rtp[0];
		__u16 old_seq = *(__u16 *)&rtp[2];
		__u32 old_ts = *(__u32 *)&rtp[4];
		__u32 old_ssrc = *(__u32 *)&rtp[8];
		__u8 new_b1 = (rtp[1] & 0x80) | (s->pt_map[pt] & 0x7f);
		__u16 new_w0;
		((__u8 *)&new_w0)[0] = rtp[0];
		((__u8 *)&new_w0)[1] = new_b1;
		__u16 new_seq = bpf_htons(bpf_ntohs(old_seq) + s->seq_offset);
		__u32 new_ts = bpf_htonl(bpf_ntohl(old_ts) + s->ts_offset);
		__u32 new_ssrc = s->ssrc;

		// The checksum first (the helpers may move the packet), then the bytes.
		bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_w0, new_w0, L4_FLAGS | 2);
		bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_seq, new_seq, L4_FLAGS | 2);
		bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_ts, new_ts, L4_FLAGS | 4);
		bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_ssrc, new_ssrc, L4_FLAGS | 4);
		bpf_skb_store_bytes(skb, RTP_OFF, &new_w0, 2, 0);
		bpf_skb_store_bytes(skb, RTP_OFF + 2, &new_seq, 2, 0);
		bpf_skb_store_bytes(skb, RTP_OFF + 4, &new_ts, 4, 0);
		bpf_skb_store_bytes(skb, RTP_OFF + 8, &new_ssrc, 4, 0);
	}

	// The relay is the packet's new sender: its addresses, its ports, a fresh TTL.
	__u32 new_saddr = s->out_src_addr, new_daddr = s->out_dst_addr;
	__u16 new_sport = s->out_src_port, new_dport = s->out_dst_port;
	__u16 new_ttl_proto;
	((__u8 *)&new_ttl_proto)[0] = 64;
	((__u8 *)&new_ttl_proto)[1] = IPPROTO_UDP;
	bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_saddr, new_saddr, L4_FLAGS | BPF_F_PSEUDO_HDR | 4);
	bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_daddr, new_daddr, L4_FLAGS | BPF_F_PSEUDO_HDR | 4);
	bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_sport, new_sport, L4_FLAGS | 2);
	bpf_l4_csum_replace(skb, UDP_CSUM_OFF, old_dport, new_dport, L4_FLAGS | 2);
	bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_saddr, new_saddr, 4);
	bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_daddr, new_daddr, 4);
	bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_ttl_proto, new_ttl_proto, 2);
	bpf_skb_store_bytes(skb, IP_OFF + __builtin_offsetof(struct iphdr, saddr), &new_saddr, 4, 0);
	bpf_skb_store_bytes(skb, IP_OFF + __builtin_offsetof(struct iphdr, daddr), &new_daddr, 4, 0);
	bpf_skb_store_bytes(skb, IP_OFF + __builtin_offsetof(struct iphdr, ttl), &new_ttl_proto, 2, 0);
	bpf_skb_store_bytes(skb, UDP_OFF + __builtin_offsetof(struct udphdr, source), &new_sport, 2, 0);
	bpf_skb_store_bytes(skb, UDP_OFF + __builtin_offsetof(struct udphdr, dest), &new_dport, 2, 0);

	__sync_fetch_and_add(&s->packets, 1);
	__sync_fetch_and_add(&s->bytes, udp_len > 8 ? udp_len - 8 : 0);
	s->last_seen_ns = bpf_ktime_get_ns();

	switch (route) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		bpf_skb_store_bytes(skb, ETH_OFF + __builtin_offsetof(struct ethhdr, h_dest), fib.dmac, ETH_ALEN, 0);
		bpf_skb_store_bytes(skb, ETH_OFF + __builtin_offsetof(struct ethhdr, h_source), fib.smac, ETH_ALEN, 0);
		return bpf_redirect(fib.ifindex, 0);
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		return bpf_redirect_neigh(fib.ifindex, 0, 0, 0);
	default:
		// A peer on this host: out of the loopback, which hands it back to the stack with
		// the packet's local route kept (a 127/8 address re-entering without one would be
		// refused as a martian).
		return bpf_redirect(LOOPBACK_IFINDEX, 0);
	}
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
