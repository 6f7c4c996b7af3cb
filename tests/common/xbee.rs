//! XBee API frames written from Digi's specification, independently of
//! the gateway's codec, for tests that play an XBee module on a
//! pseudo-terminal: frames to send (0x90 Zigbee and 0x80/0x81 802.15.4
//! receive packets, in API mode 1 or 2) and the parsing of the transmit
//! requests the gateway writes back.

/// The frame delimiter.
pub const XBEE_START: u8 = 0x7E;
/// API mode 2's escape byte.
pub const XBEE_ESCAPE: u8 = 0x7D;

/// Whether API mode 2 escapes `b`.
pub fn xbee_needs_escape(b: u8) -> bool {
    matches!(b, 0x7E | 0x7D | 0x11 | 0x13)
}

/// 0xFF minus the low byte of the sum of the frame data.
pub fn xbee_checksum(frame_data: &[u8]) -> u8 {
    0xFF - frame_data.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

/// An API frame around `frame_data` with the given checksum byte: 0x7E, the
/// 16-bit length, the frame data, the checksum; in mode 2 everything after
/// the delimiter escaped as 0x7D, b ^ 0x20.
pub fn xbee_frame_with_checksum(escaped: bool, frame_data: &[u8], checksum: u8) -> Vec<u8> {
    let len = u16::try_from(frame_data.len()).expect("frame fits");
    let mut out = vec![XBEE_START];
    for &b in len
        .to_be_bytes()
        .iter()
        .chain(frame_data)
        .chain([checksum].iter())
    {
        if escaped && xbee_needs_escape(b) {
            out.extend([XBEE_ESCAPE, b ^ 0x20]);
        } else {
            out.push(b);
        }
    }
    out
}

pub fn xbee_frame(escaped: bool, frame_data: &[u8]) -> Vec<u8> {
    xbee_frame_with_checksum(escaped, frame_data, xbee_checksum(frame_data))
}

/// Frame data of a 0x90 Zigbee Receive Packet from `src64` carrying `rf`.
pub fn zigbee_rx(src64: u64, rf: &[u8]) -> Vec<u8> {
    let mut fd = vec![0x90];
    fd.extend(src64.to_be_bytes());
    fd.extend([0xFF, 0xFE]); // 16-bit source: unknown
    fd.push(0x01); // options: packet acknowledged
    fd.extend(rf);
    fd
}

/// Frame data of a 0x80 (802.15.4 RX, 64-bit source) or, when `src` fits in
/// 16 bits, 0x81 (16-bit source) frame carrying `rf`.
pub fn ieee_rx(src: u64, rf: &[u8]) -> Vec<u8> {
    let mut fd = match u16::try_from(src) {
        Ok(short) => [&[0x81][..], &short.to_be_bytes()].concat(),
        Err(_) => [&[0x80][..], &src.to_be_bytes()].concat(),
    };
    fd.extend([0x28, 0x00]); // RSSI −40 dBm, options
    fd.extend(rf);
    fd
}

/// The destination and RF data of a transmit request the gateway wrote:
/// 0x10 Zigbee (frame id, dest64, dest16 0xFFFE, radius, options), 0x00
/// 802.15.4 64-bit (frame id, dest64, options) or 0x01 16-bit (frame id,
/// dest16, options). A 16-bit destination is returned widened.
pub fn xbee_transmit_request(fd: &[u8]) -> (u64, &[u8]) {
    let header = match fd.first() {
        Some(0x10) => 14,
        Some(0x00) => 11,
        Some(0x01) => 5,
        _ => panic!("not a transmit request: {fd:02X?}"),
    };
    assert!(
        fd.len() > header,
        "transmit request with no RF data: {fd:02X?}"
    );
    assert_ne!(fd[1], 0, "frame id 0 suppresses the transmit status");
    let to = match fd[0] {
        0x01 => u64::from(u16::from_be_bytes([fd[2], fd[3]])),
        _ => u64::from_be_bytes(fd[2..10].try_into().expect("8 bytes")),
    };
    if fd[0] == 0x10 {
        assert_eq!(&fd[10..12], &[0xFF, 0xFE], "16-bit destination 'unknown'");
    }
    (to, &fd[header..])
}

/// One XBee API frame's frame data off the front of `buf`; panics on a bad
/// checksum, bytes outside a frame, or (mode 2) an unescaped special byte.
pub fn take_xbee(buf: &mut Vec<u8>, escaped: bool) -> Option<Vec<u8>> {
    let first = *buf.first()?;
    assert_eq!(
        first, XBEE_START,
        "gateway wrote bytes outside a frame: {buf:02X?}"
    );
    let mut plain = Vec::new();
    let mut i = 1;
    loop {
        let need = match plain.get(..2) {
            Some(&[hi, lo]) => 2 + usize::from(u16::from_be_bytes([hi, lo])) + 1,
            _ => 2,
        };
        if plain.len() == need && need > 2 {
            break;
        }
        let &b = buf.get(i)?;
        i += 1;
        if escaped {
            assert!(
                !matches!(b, 0x7E | 0x11 | 0x13),
                "mode 2: unescaped {b:#04X} inside a frame: {buf:02X?}"
            );
            if b == XBEE_ESCAPE {
                let &next = buf.get(i)?;
                i += 1;
                plain.push(next ^ 0x20);
                continue;
            }
        }
        plain.push(b);
    }
    buf.drain(..i);
    let checksum = plain.pop().expect("checksum");
    let frame_data = plain.split_off(2);
    assert_eq!(
        checksum,
        xbee_checksum(&frame_data),
        "bad checksum from the gateway: {frame_data:02X?}"
    );
    Some(frame_data)
}
