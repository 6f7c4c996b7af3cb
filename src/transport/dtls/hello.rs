//! Reading a DTLS 1.2 ClientHello far enough to gate it statelessly: its
//! client random and cookie, and a copy of it without the cookie as the
//! client's first ClientHello (message_seq 0) would have been. Pure byte
//! work on an untrusted datagram: every read is bounds-checked, and
//! anything but one whole, unfragmented ClientHello at epoch 0 is `None`.

/// DTLS record header: type, version, epoch, sequence number, length.
const RECORD_HEADER: usize = 13;
/// Handshake header: type, length, message_seq, fragment offset and length.
const HANDSHAKE_HEADER: usize = 12;
/// Record content type of handshake messages.
const HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// TLS_PSK_WITH_AES_128_CCM_8 (RFC 6655).
const PSK_AES_128_CCM_8: u16 = 0xC0A8;

/// What the stateless gate needs from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// The client's random (32 bytes).
    pub random: [u8; 32],
    /// The cookie it carries (empty on a first ClientHello).
    pub cookie: &'a [u8],
    /// The record's 48-bit sequence number.
    pub record_seq: u64,
    /// The handshake message_seq (0 first, 1 after a HelloVerifyRequest).
    pub message_seq: u16,
    /// Whether it offers TLS_PSK_WITH_AES_128_CCM_8 (a device with a
    /// pre-shared key, rather than a certificate).
    pub offers_psk: bool,
    /// Offset of the cookie's length byte in the datagram.
    cookie_at: usize,
}

fn u24(b: &[u8]) -> Option<usize> {
    match b {
        [a, b, c, ..] => Some((usize::from(*a) << 16) | (usize::from(*b) << 8) | usize::from(*c)),
        _ => None,
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

/// Parses the ClientHello that starts `datagram`, if it is one: a handshake
/// record at epoch 0 holding one whole (unfragmented) ClientHello.
pub fn parse(datagram: &[u8]) -> Option<ClientHello<'_>> {
    let header = datagram.get(..RECORD_HEADER)?;
    if header.first() != Some(&HANDSHAKE) || u16_at(header, 3)? != 0 {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.get_mut(2..)?.copy_from_slice(header.get(5..11)?);
    let record_len = usize::from(u16_at(header, 11)?);
    let record = datagram.get(RECORD_HEADER..RECORD_HEADER + record_len)?;
    let hs = record.get(..HANDSHAKE_HEADER)?;
    if hs.first() != Some(&CLIENT_HELLO) {
        return None;
    }
    let body_len = u24(hs.get(1..)?)?;
    let message_seq = u16_at(hs, 4)?;
    let (frag_off, frag_len) = (u24(hs.get(6..)?)?, u24(hs.get(9..)?)?);
    if frag_off != 0 || frag_len != body_len || record.len() < HANDSHAKE_HEADER + body_len {
        return None;
    }
    let body = record.get(HANDSHAKE_HEADER..HANDSHAKE_HEADER + body_len)?;
    // client_version (2), random (32), session_id (1 + n), cookie (1 + n).
    let random: [u8; 32] = body.get(2..34)?.try_into().ok()?;
    let sid_len = usize::from(*body.get(34)?);
    let cookie_len_at = 35 + sid_len;
    let cookie_len = usize::from(*body.get(cookie_len_at)?);
    let cookie = body.get(cookie_len_at + 1..cookie_len_at + 1 + cookie_len)?;
    let suites_at = cookie_len_at + 1 + cookie_len;
    let suites_len = usize::from(u16_at(body, suites_at)?);
    let suites = body.get(suites_at + 2..suites_at + 2 + suites_len)?;
    let offers_psk = suites
        .chunks_exact(2)
        .any(|s| s == PSK_AES_128_CCM_8.to_be_bytes());
    Some(ClientHello {
        offers_psk,
        random,
        cookie,
        record_seq: u64::from_be_bytes(seq),
        message_seq,
        cookie_at: RECORD_HEADER + HANDSHAKE_HEADER + cookie_len_at,
    })
}

impl ClientHello<'_> {
    /// The ClientHello of `datagram` (which `self` was parsed from) as the
    /// client's first one: no cookie, message_seq 0, record sequence 0.
    /// Only its own record is kept.
    pub fn without_cookie(&self, datagram: &[u8]) -> Option<Vec<u8>> {
        let cookie_len = self.cookie.len();
        let record_len = usize::from(u16_at(datagram, 11)?);
        let end = RECORD_HEADER + record_len;
        let mut out = Vec::with_capacity(end);
        out.extend_from_slice(datagram.get(..self.cookie_at)?);
        out.push(0);
        out.extend_from_slice(datagram.get(self.cookie_at + 1 + cookie_len..end)?);
        // Record sequence 0, record length, handshake length, message_seq 0,
        // fragment length.
        let new_record = u16::try_from(record_len - cookie_len).ok()?;
        let body = record_len - cookie_len - HANDSHAKE_HEADER;
        let body24 = [(body >> 16) as u8, (body >> 8) as u8, body as u8];
        out.get_mut(5..11)?.fill(0);
        out.get_mut(11..13)?
            .copy_from_slice(&new_record.to_be_bytes());
        out.get_mut(14..17)?.copy_from_slice(&body24);
        out.get_mut(17..19)?.fill(0);
        out.get_mut(22..25)?.copy_from_slice(&body24);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello record with `cookie`, message_seq `mseq`,
    /// record sequence `rseq`.
    fn hello(cookie: &[u8], mseq: u16, rseq: u8) -> Vec<u8> {
        let mut body = vec![0xfe, 0xfd];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.push(cookie.len() as u8);
        body.extend_from_slice(cookie);
        body.extend_from_slice(&[0, 2, 0xc0, 0xa8, 1, 0]); // suites, compression
        let mut hs = vec![CLIENT_HELLO, 0, 0, body.len() as u8];
        hs.extend_from_slice(&mseq.to_be_bytes());
        hs.extend_from_slice(&[0, 0, 0, 0, 0, body.len() as u8]);
        hs.extend_from_slice(&body);
        let mut rec = vec![HANDSHAKE, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, rseq];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn reads_random_cookie_and_sequence_numbers() {
        let d = hello(&[1, 2, 3], 1, 5);
        let ch = parse(&d).expect("a ClientHello");
        assert_eq!(ch.random, [7u8; 32]);
        assert_eq!(ch.cookie, &[1, 2, 3]);
        assert_eq!((ch.message_seq, ch.record_seq), (1, 5));
        assert!(ch.offers_psk);
    }

    #[test]
    fn without_cookie_is_the_first_client_hello() {
        let with = hello(&[9; 32], 1, 1);
        let ch = parse(&with).expect("a ClientHello");
        assert_eq!(ch.without_cookie(&with), Some(hello(&[], 0, 0)));
    }

    #[test]
    fn anything_else_is_none_never_a_panic() {
        let d = hello(&[1; 32], 1, 1);
        for n in 0..d.len() {
            assert_eq!(parse(&d[..n]), None, "truncated at {n}");
        }
        let mut other = d.clone();
        other[0] = 23; // application data
        assert_eq!(parse(&other), None);
        let mut epoch1 = d.clone();
        epoch1[4] = 1;
        assert_eq!(parse(&epoch1), None);
        let mut fragment = d;
        fragment[24] -= 1; // fragment shorter than the message
        assert_eq!(parse(&fragment), None);
    }
}
