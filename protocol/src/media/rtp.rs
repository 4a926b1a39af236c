//! RTP (RFC 3550) and RTCP headers as the relay sees them: the RTP/RTCP demultiplexer of one port
//! (RFC 5761 §4: the second byte's payload type 64–95 is RTCP), a checked view of the RTP fixed
//! header with in-place edits, and the walk of an RTCP compound packet that rewrites the sender
//! SSRCs and finds a BYE.
//!
//! Hand-written rather than the `rtp-types` crate (0.1.2): the relay reads and writes five fields
//! of the 12-byte fixed header, which is ~40 lines here, and must walk RTCP compounds and edit
//! SSRCs in place, which `rtp-types` does not cover (its sibling `rtcp-types` parses and builds,
//! the relay must rewrite without rebuilding). The crate would add a dependency for the easy half,
//! and its parse rejects an invalid padding count (`PaddingInvalid`), which an SRTP packet's
//! encrypted tail can look like: the relay checks SRTP by the clear header only. Every access here
//! goes through a length check or a fixed-size array, so no input can make it panic.
//!
//! It must not: allocate, copy a packet, change a packet's length, or know about sessions.

/// Why a packet cannot be read as RTP or RTCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Shorter than its headers say (or than the fixed header).
    #[error("packet shorter than its headers")]
    Truncated,
    /// The version field is not 2.
    #[error("RTP/RTCP version is not 2")]
    Version,
}

/// What one datagram on a media port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// RTP media (or, on a UDPTL/opaque line, whatever the line carries).
    Rtp,
    /// RTCP (on its own port, or multiplexed by payload type).
    Rtcp,
}

/// The RTP fixed-header size.
pub const RTP_HEADER_LEN: usize = 12;

/// RTCP packet types (RFC 3550 §12.1, RFC 4585, RFC 3611).
const RTCP_SR: u8 = 200;
const RTCP_BYE: u8 = 203;
const RTCP_SDES: u8 = 202;
/// RR, APP, RTPFB, PSFB and XR carry the sender's SSRC right after the common header, as SR does.
const RTCP_SENDER_SSRC_TYPES: std::ops::RangeInclusive<u8> = RTCP_SR..=207;

/// RTP or RTCP, by RFC 5761 §4: the marker-stripped payload type 64–95 (RTCP types 192–223) is
/// RTCP. Checks only the version and the 4-byte minimum both share.
pub fn classify(packet: &[u8]) -> Result<PacketKind, Malformed> {
    let Some(&[first, second, ..]) = packet.first_chunk::<4>() else {
        return Err(Malformed::Truncated);
    };
    if first >> 6 != 2 {
        return Err(Malformed::Version);
    }
    Ok(if (64..=95).contains(&(second & 0x7f)) {
        PacketKind::Rtcp
    } else {
        PacketKind::Rtp
    })
}

/// The fixed header of an RTP packet whose CSRC list and extension fit in the datagram; the
/// setters edit the datagram in place.
#[derive(Debug)]
pub struct RtpHeader<'a> {
    fixed: &'a mut [u8; RTP_HEADER_LEN],
}

impl<'a> RtpHeader<'a> {
    /// Checks version 2 and that the CSRC list, the header extension and the padding fit.
    pub fn parse(packet: &'a mut [u8]) -> Result<RtpHeader<'a>, Malformed> {
        let len = packet.len();
        let Some((fixed, rest)) = packet.split_first_chunk_mut::<RTP_HEADER_LEN>() else {
            return Err(Malformed::Truncated);
        };
        if fixed[0] >> 6 != 2 {
            return Err(Malformed::Version);
        }
        let mut header = RTP_HEADER_LEN + usize::from(fixed[0] & 0x0f) * 4;
        if fixed[0] & 0x10 != 0 {
            // The extension: 2 bytes profile, 2 bytes length in 32-bit words, then the words.
            let words = rest
                .get(header - RTP_HEADER_LEN + 2..)
                .and_then(|r| r.first_chunk::<2>())
                .ok_or(Malformed::Truncated)?;
            header += 4 + usize::from(u16::from_be_bytes(*words)) * 4;
        }
        let padding = if fixed[0] & 0x20 != 0 {
            usize::from(*rest.last().ok_or(Malformed::Truncated)?)
        } else {
            0
        };
        if header + padding > len {
            return Err(Malformed::Truncated);
        }
        Ok(RtpHeader { fixed })
    }

    /// The marker bit (RFC 3551 §4.1: the first packet of a talkspurt).
    pub fn marker(&self) -> bool {
        self.fixed[1] & 0x80 != 0
    }
    /// The payload type (7 bits).
    pub fn payload_type(&self) -> u8 {
        self.fixed[1] & 0x7f
    }
    /// The sequence number.
    pub fn sequence_number(&self) -> u16 {
        u16::from_be_bytes([self.fixed[2], self.fixed[3]])
    }
    /// The RTP timestamp, in the payload type's clock.
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.fixed[4], self.fixed[5], self.fixed[6], self.fixed[7]])
    }
    /// The synchronisation source.
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.fixed[8], self.fixed[9], self.fixed[10], self.fixed[11]])
    }

    /// Sets or clears the marker bit.
    pub fn set_marker(&mut self, marker: bool) {
        self.fixed[1] = (self.fixed[1] & 0x7f) | if marker { 0x80 } else { 0 };
    }
    /// Sets the payload type; only the low 7 bits of `pt` are used.
    pub fn set_payload_type(&mut self, pt: u8) {
        self.fixed[1] = (self.fixed[1] & 0x80) | (pt & 0x7f);
    }
    /// Sets the sequence number.
    pub fn set_sequence_number(&mut self, seq: u16) {
        self.fixed[2..4].copy_from_slice(&seq.to_be_bytes());
    }
    /// Sets the RTP timestamp.
    pub fn set_timestamp(&mut self, ts: u32) {
        self.fixed[4..8].copy_from_slice(&ts.to_be_bytes());
    }
    /// Sets the synchronisation source.
    pub fn set_ssrc(&mut self, ssrc: u32) {
        self.fixed[8..12].copy_from_slice(&ssrc.to_be_bytes());
    }
}

/// What [`walk_rtcp`] found in a compound packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtcpSummary {
    /// The compound holds a BYE: the sender's stream ends.
    pub bye: bool,
    /// The number of RTCP packets in the compound.
    pub packets: usize,
}

/// Walks an RTCP compound packet, checking every length; with `new_ssrc`, rewrites the sender's
/// SSRC of SR/RR/APP/RTPFB/PSFB/XR packets, every SDES chunk's SSRC and every BYE source to it
/// (report blocks, which name the *other* side's sources, are left alone). A malformed compound
/// may be left partly rewritten: the caller drops it.
pub fn walk_rtcp(packet: &mut [u8], new_ssrc: Option<u32>) -> Result<RtcpSummary, Malformed> {
    let mut summary = RtcpSummary::default();
    let mut offset = 0;
    while offset < packet.len() {
        let rest = packet.get_mut(offset..).ok_or(Malformed::Truncated)?;
        let Some(&mut [first, pt, len_hi, len_lo]) = rest.first_chunk_mut::<4>() else {
            return Err(Malformed::Truncated);
        };
        if first >> 6 != 2 {
            return Err(Malformed::Version);
        }
        let len = (usize::from(u16::from_be_bytes([len_hi, len_lo])) + 1) * 4;
        let body = rest.get_mut(..len).ok_or(Malformed::Truncated)?;
        let count = usize::from(first & 0x1f);
        match pt {
            RTCP_SDES => rewrite_sdes(body, count, new_ssrc)?,
            RTCP_BYE => {
                summary.bye = true;
                for i in 0..count {
                    rewrite_ssrc_at(body, 4 + i * 4, new_ssrc)?;
                }
            }
            pt if RTCP_SENDER_SSRC_TYPES.contains(&pt) => rewrite_ssrc_at(body, 4, new_ssrc)?,
            _ => {}
        }
        summary.packets += 1;
        offset += len;
    }
    if summary.packets == 0 {
        return Err(Malformed::Truncated);
    }
    Ok(summary)
}

/// SDES: `count` chunks, each an SSRC then items (type, length, text) up to a zero type byte,
/// padded to a 32-bit boundary.
fn rewrite_sdes(body: &mut [u8], count: usize, new_ssrc: Option<u32>) -> Result<(), Malformed> {
    let mut at = 4;
    for _ in 0..count {
        rewrite_ssrc_at(body, at, new_ssrc)?;
        at += 4;
        loop {
            match *body.get(at).ok_or(Malformed::Truncated)? {
                0 => {
                    at = (at + 4) & !3;
                    break;
                }
                _ => {
                    let item_len = *body.get(at + 1).ok_or(Malformed::Truncated)?;
                    at += 2 + usize::from(item_len);
                }
            }
        }
        if at > body.len() {
            return Err(Malformed::Truncated);
        }
    }
    Ok(())
}

fn rewrite_ssrc_at(body: &mut [u8], at: usize, new_ssrc: Option<u32>) -> Result<(), Malformed> {
    let field = body.get_mut(at..at + 4).ok_or(Malformed::Truncated)?;
    if let Some(ssrc) = new_ssrc {
        field.copy_from_slice(&ssrc.to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A 172-byte RTP packet (PCMA, 160 bytes of payload).
    pub(crate) fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, pt & 0x7f];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0xd5; 160]);
        p
    }

    /// SR + SDES(CNAME) from `ssrc`, and a BYE if asked.
    pub(crate) fn rtcp(ssrc: u32, bye: bool) -> Vec<u8> {
        let s = ssrc.to_be_bytes();
        let mut p = vec![0x80, 200, 0, 6];
        p.extend_from_slice(&s);
        p.extend_from_slice(&[0; 20]);
        // SDES, one chunk: CNAME "ab" (2+2 bytes), end, pad → 4 + 4 + 4 + 4 = 12 after header.
        p.extend_from_slice(&[0x81, 202, 0, 3]);
        p.extend_from_slice(&s);
        p.extend_from_slice(&[1, 2, b'a', b'b', 0, 0, 0, 0]);
        if bye {
            p.extend_from_slice(&[0x81, 203, 0, 1]);
            p.extend_from_slice(&s);
        }
        p
    }

    #[test]
    fn classify_demuxes_rtcp_by_payload_type() {
        assert_eq!(classify(&rtp(8, 1, 2, 3)), Ok(PacketKind::Rtp));
        assert_eq!(classify(&rtp(101, 1, 2, 3)), Ok(PacketKind::Rtp));
        assert_eq!(classify(&rtcp(3, false)), Ok(PacketKind::Rtcp));
        assert_eq!(classify(&[0x80, 200]), Err(Malformed::Truncated));
        assert_eq!(classify(&[0x40, 0, 0, 0]), Err(Malformed::Version));
    }

    #[test]
    fn rtp_header_edits_in_place() {
        let mut p = rtp(8, 65535, 160, 0x1234);
        let len = p.len();
        let mut h = RtpHeader::parse(&mut p).unwrap();
        assert_eq!(
            (
                h.payload_type(),
                h.sequence_number(),
                h.timestamp(),
                h.ssrc()
            ),
            (8, 65535, 160, 0x1234)
        );
        h.set_sequence_number(7);
        h.set_timestamp(0xdead_beef);
        h.set_ssrc(0xcafe_f00d);
        h.set_marker(true);
        h.set_payload_type(0);
        let h = RtpHeader::parse(&mut p).unwrap();
        assert!(h.marker());
        assert_eq!(
            (
                h.payload_type(),
                h.sequence_number(),
                h.timestamp(),
                h.ssrc()
            ),
            (0, 7, 0xdead_beef, 0xcafe_f00d)
        );
        assert_eq!(p.len(), len);
        assert_eq!(p[12..], [0xd5; 160]);
    }

    #[test]
    fn rtp_header_rejects_what_does_not_fit() {
        assert_eq!(
            RtpHeader::parse(&mut [0x80; 11]).unwrap_err(),
            Malformed::Truncated
        );
        let mut p = rtp(0, 1, 1, 1);
        p[0] = 0x8f; // 15 CSRCs = 60 bytes: fits in 172
        assert!(RtpHeader::parse(&mut p).is_ok());
        let mut short = p[..40].to_vec();
        assert_eq!(
            RtpHeader::parse(&mut short).unwrap_err(),
            Malformed::Truncated
        );
        let mut ext = rtp(0, 1, 1, 1);
        ext[0] = 0x90;
        ext[14] = 0xff; // extension of 65280+ words
        assert_eq!(
            RtpHeader::parse(&mut ext).unwrap_err(),
            Malformed::Truncated
        );
        let mut pad = rtp(0, 1, 1, 1);
        pad[0] = 0xa0;
        *pad.last_mut().unwrap() = 200;
        assert_eq!(
            RtpHeader::parse(&mut pad).unwrap_err(),
            Malformed::Truncated
        );
        let mut v1 = rtp(0, 1, 1, 1);
        v1[0] = 0x40;
        assert_eq!(RtpHeader::parse(&mut v1).unwrap_err(), Malformed::Version);
    }

    #[test]
    fn rtcp_walk_rewrites_sender_ssrcs_and_finds_bye() {
        let mut p = rtcp(0x1111_1111, true);
        let s = walk_rtcp(&mut p, Some(0x2222_2222)).unwrap();
        assert_eq!(
            s,
            RtcpSummary {
                bye: true,
                packets: 3
            }
        );
        let old = 0x1111_1111u32.to_be_bytes();
        assert!(!p.windows(4).any(|w| w == old));
        assert_eq!(
            p.windows(4)
                .filter(|w| *w == 0x2222_2222u32.to_be_bytes())
                .count(),
            3
        );
        let mut q = rtcp(5, false);
        assert!(!walk_rtcp(&mut q, None).unwrap().bye);
        assert_eq!(q, rtcp(5, false));
    }

    #[test]
    fn rtcp_walk_rejects_malformed_compounds() {
        let full = rtcp(9, true);
        for cut in 1..full.len() {
            let mut p = full[..cut].to_vec();
            // Every cut either ends at a packet boundary (valid prefix) or is rejected; never panics.
            let r = walk_rtcp(&mut p, Some(1));
            if ![28, 44].contains(&cut) {
                assert!(r.is_err(), "cut at {cut}");
            }
        }
        let mut bad_sdes = vec![0x81, 202, 0, 1, 0, 0, 0, 1];
        assert!(walk_rtcp(&mut bad_sdes, Some(1)).is_err());
        let mut huge_count = vec![0x9f, 203, 0, 1, 0, 0, 0, 1];
        assert!(walk_rtcp(&mut huge_count, Some(1)).is_err());
        assert!(walk_rtcp(&mut [], None).is_err());
    }
}
