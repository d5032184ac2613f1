//! CRC-32 (IEEE 802.3, reflected, the zlib/PNG polynomial, CRC-32/ISO-HDLC) of journal
//! records, from `crc32fast` (SIMD where the CPU has it). Journals written with the earlier
//! byte-at-a-time table read unchanged: it is the same function (see the tests).

/// CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[cfg(test)]
mod tests {
    use super::crc32;

    #[test]
    fn check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        // A journal record's payload and the CRC the earlier implementation framed it with.
        assert_eq!(crc32(&[0x02, 0x00, 0x01, 0x00, 0x02]), 0x532E_AF66);
    }

    /// The earlier implementation, bit by bit from the polynomial: the reference.
    fn reference(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    #[test]
    fn same_function_as_the_bitwise_reference_at_every_length() {
        // Lengths past 64 reach crc32fast's wide (folding) paths; odd offsets its unaligned
        // heads and tails.
        let data: Vec<u8> = (0u32..1200)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..4 {
            for len in 0..600 {
                let s = &data[start..start + len];
                assert_eq!(crc32(s), reference(s), "start {start} len {len}");
            }
        }
    }
}
