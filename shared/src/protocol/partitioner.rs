//! Which partition a keyed record goes to. Part of the protocol, not of one client: every client (and the
//! broker, for the groups' offsets partitions) must agree, so a key's records stay in one partition whoever
//! wrote them. Documented in docs/protocol.md.

/// The partition of a keyed record: FNV-1a (32-bit) of the key modulo the partition count.
pub fn key_partition(key: &[u8], n_partitions: u32) -> u32 {
    fnv1a_32(key) % n_partitions
}

fn fnv1a_32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_fnv1a() {
        // Published FNV-1a 32 test vectors.
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_32(b"foobar"), 0xbf9c_f968);
        assert_eq!(key_partition(b"foobar", 7), 0xbf9c_f968 % 7);
    }
}
