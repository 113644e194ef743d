//! Batch compression: the codecs a batch's records may be compressed with (bits 0-2 of `attributes`).
//!
//! Only the records section (everything after the 61-byte batch header) is compressed; the header stays in
//! clear so the broker can route, index and stamp a batch without decompressing it. The CRC-32C covers the
//! compressed bytes. Every format is a standard one a client in another language finds in a library:
//! gzip (RFC 1952), snappy (raw block format), lz4 (LZ4 frame format), zstd (Zstandard frame format).

use std::io::{Read, Write};

/// A batch's records never decompress to more than this: a larger result is refused (a "compression bomb"
/// costs the broker at most this much memory and work). Producers send bigger record sections uncompressed.
pub const DECOMPRESSED_BYTES_MAX: usize = 16 << 20;

/// The bits of `attributes` that name the codec.
pub const CODEC_MASK: u16 = 0x07;

/// zstd level 3 and gzip level 6: each library's default (and Kafka's).
const ZSTD_LEVEL: i32 = 3;

/// A batch compression codec, with its id in `attributes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// Why compressed records could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressionError {
    #[error("{codec} records do not decompress: {reason}")]
    Corrupt { codec: &'static str, reason: String },
    #[error("{codec} records decompress to more than {DECOMPRESSED_BYTES_MAX} bytes")]
    TooLarge { codec: &'static str },
}

impl Compression {
    pub const ALL: [Compression; 5] =
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

    /// The codec's id in `attributes` (bits 0-2).
    pub fn id(self) -> u16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    pub fn from_id(id: u16) -> Option<Compression> {
        Compression::ALL.into_iter().find(|codec| codec.id() == id)
    }

    /// The name used by `compression.type`, the CLI and the client settings.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Compresses `raw` onto the end of `out`.
    pub fn compress(self, raw: &[u8], out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail; the codecs' own errors cannot happen on valid input.
        let wrote = |result: std::io::Result<()>| result.expect("compressing into memory cannot fail");
        match self {
            Compression::None => out.extend_from_slice(raw),
            Compression::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
                wrote(encoder.write_all(raw));
                wrote(encoder.finish().map(drop));
            }
            Compression::Snappy => {
                let start = out.len();
                out.resize(start + snap::raw::max_compress_len(raw.len()), 0);
                let written = snap::raw::Encoder::new()
                    .compress(raw, &mut out[start..])
                    .expect("the output has snappy's bound and the input is under its limit");
                out.truncate(start + written);
            }
            Compression::Lz4 => {
                let mut encoder = lz4_flex::frame::FrameEncoder::new(out);
                wrote(encoder.write_all(raw));
                encoder.finish().expect("compressing into memory cannot fail");
            }
            Compression::Zstd => wrote(zstd::stream::copy_encode(raw, out, ZSTD_LEVEL)),
        }
    }

    /// Decompresses `compressed` onto the end of `out`, refusing more than [`DECOMPRESSED_BYTES_MAX`]
    /// bytes. Never panics, whatever the input; memory grows with the output actually produced.
    pub fn decompress(self, compressed: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
        let codec = self.name();
        let corrupt = |reason: String| CompressionError::Corrupt { codec, reason };
        let start = out.len();
        let limit = DECOMPRESSED_BYTES_MAX as u64 + 1;
        let read = match self {
            Compression::None => {
                out.extend_from_slice(compressed);
                Ok(compressed.len())
            }
            Compression::Gzip => flate2::read::GzDecoder::new(compressed).take(limit).read_to_end(out),
            Compression::Snappy => {
                let length = snap::raw::decompress_len(compressed).map_err(|error| corrupt(error.to_string()))?;
                if length > DECOMPRESSED_BYTES_MAX {
                    return Err(CompressionError::TooLarge { codec });
                }
                out.resize(start + length, 0);
                snap::raw::Decoder::new()
                    .decompress(compressed, &mut out[start..])
                    .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))
            }
            Compression::Lz4 => lz4_flex::frame::FrameDecoder::new(compressed).take(limit).read_to_end(out),
            Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(compressed) {
                Ok(decoder) => decoder.take(limit).read_to_end(out),
                Err(error) => Err(error),
            },
        };
        let read = match read {
            Ok(read) => read,
            Err(error) => {
                out.truncate(start);
                return Err(corrupt(error.to_string()));
            }
        };
        if read > DECOMPRESSED_BYTES_MAX || out.len() - start > DECOMPRESSED_BYTES_MAX {
            out.truncate(start);
            return Err(CompressionError::TooLarge { codec });
        }
        Ok(())
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(value: &str) -> Result<Compression, String> {
        Compression::ALL
            .into_iter()
            .find(|codec| codec.name() == value)
            .ok_or_else(|| format!("compression must be one of none, gzip, snappy, lz4, zstd, not '{value}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|idx| b"learner-42 viewed page /course/7 "[idx % 33]).collect()
    }

    #[test]
    fn every_codec_round_trips_and_shrinks_repetitive_data() {
        for codec in Compression::ALL {
            for len in [0, 1, 100, 70_000] {
                let raw = sample(len);
                let mut compressed = vec![9];
                codec.compress(&raw, &mut compressed);
                if codec != Compression::None && len == 70_000 {
                    assert!(compressed.len() < raw.len() / 4, "{codec} gave {} bytes", compressed.len());
                }
                let mut back = vec![7];
                codec.decompress(&compressed[1..], &mut back).unwrap();
                assert_eq!(&back[1..], &raw[..], "{codec} at {len} bytes");
                assert_eq!(Compression::from_id(codec.id()), Some(codec));
                assert_eq!(codec.name().parse::<Compression>(), Ok(codec));
            }
        }
        assert_eq!(Compression::from_id(5), None);
        assert!("brotli".parse::<Compression>().unwrap_err().contains("'brotli'"));
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit() {
        let raw = vec![0u8; DECOMPRESSED_BYTES_MAX + 1];
        for codec in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let mut compressed = Vec::new();
            codec.compress(&raw, &mut compressed);
            let mut out = Vec::new();
            assert_eq!(
                codec.decompress(&compressed, &mut out),
                Err(CompressionError::TooLarge { codec: codec.name() }),
                "{codec}"
            );
            assert!(out.is_empty());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn garbage_never_panics(input in proptest::collection::vec(any::<u8>(), 0..512), codec_id in 1u16..5) {
            let codec = Compression::from_id(codec_id).unwrap();
            let mut out = Vec::new();
            let _ = codec.decompress(&input, &mut out);
            prop_assert!(out.len() <= DECOMPRESSED_BYTES_MAX);
        }

        #[test]
        fn a_flipped_byte_is_an_error_or_other_bytes_never_a_panic(
            len in 1usize..4000, flip in any::<prop::sample::Index>(), codec_id in 1u16..5,
        ) {
            let codec = Compression::from_id(codec_id).unwrap();
            let mut compressed = Vec::new();
            codec.compress(&sample(len), &mut compressed);
            let at = flip.index(compressed.len());
            compressed[at] ^= 0x5a;
            let mut out = Vec::new();
            let _ = codec.decompress(&compressed, &mut out);
        }
    }
}
