//! MurmurHash3 (x86, 32-bit), streaming, so `"{rule}:{key}"` can be hashed without building
//! the string. Same output as the reference `MurmurHash3_x86_32` and Unleash's
//! `murmurhash3` normalisation.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// An incremental murmur3_32 hasher.
#[derive(Debug, Clone)]
pub struct Murmur3 {
    h: u32,
    len: u32,
    tail: [u8; 4],
    tail_len: usize,
}

impl Murmur3 {
    /// Start a hash with `seed`.
    pub fn new(seed: u32) -> Self {
        Murmur3 {
            h: seed,
            len: 0,
            tail: [0; 4],
            tail_len: 0,
        }
    }

    #[inline]
    fn block(&mut self, k: u32) {
        let mut k = k.wrapping_mul(C1);
        k = k.rotate_left(15);
        k = k.wrapping_mul(C2);
        self.h ^= k;
        self.h = self.h.rotate_left(13);
        self.h = self.h.wrapping_mul(5).wrapping_add(0xe654_6b64);
    }

    /// Feed more bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u32);
        if self.tail_len > 0 {
            while self.tail_len < 4 && !data.is_empty() {
                self.tail[self.tail_len] = data[0];
                self.tail_len += 1;
                data = &data[1..];
            }
            if self.tail_len < 4 {
                return;
            }
            self.block(u32::from_le_bytes(self.tail));
            self.tail_len = 0;
        }
        let mut chunks = data.chunks_exact(4);
        for c in &mut chunks {
            self.block(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        }
        let rest = chunks.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    /// The final hash value.
    pub fn finish(&self) -> u32 {
        let mut h = self.h;
        if self.tail_len > 0 {
            let mut k = 0u32;
            for i in (0..self.tail_len).rev() {
                k = (k << 8) | self.tail[i] as u32;
            }
            k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
            h ^= k;
        }
        h ^= self.len;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
        h
    }
}

/// murmur3_32 of `data` with `seed`.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    let mut m = Murmur3::new(seed);
    m.update(data);
    m.finish()
}

/// The sticky bucket (1..=100) of `key` under rule `rule`: `murmur3_32("{rule}:{key}", 0) % 100 + 1`.
pub fn sticky_bucket(rule: &str, key: &[u8]) -> u32 {
    let mut m = Murmur3::new(0);
    m.update(rule.as_bytes());
    m.update(b":");
    m.update(key);
    m.finish() % 100 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vectors() {
        // Vectors of the reference MurmurHash3_x86_32.
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"hello, world", 0), 0x149b_bb7f);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog", 0),
            0x2e4f_f723
        );
    }

    #[test]
    fn streaming_equals_one_shot() {
        let s = b"gray-rule:tenant-123456789";
        for split in 0..s.len() {
            let mut m = Murmur3::new(0);
            m.update(&s[..split]);
            m.update(&s[split..]);
            assert_eq!(m.finish(), murmur3_32(s, 0), "split at {split}");
        }
        assert_eq!(
            sticky_bucket("gray-rule", b"tenant-123456789"),
            murmur3_32(s, 0) % 100 + 1
        );
    }
}
