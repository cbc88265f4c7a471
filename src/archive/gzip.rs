//! A gzip stream compressed in independent blocks, joined into one member.
//!
//! To use several cores for one layer, the uncompressed bytes are cut into
//! blocks of [`BLOCK`] bytes and each block is deflated on its own with
//! libdeflate (through the `libdeflater` crate), the fastest deflater we
//! measured at a given output size (see `benches/pack.rs`). libdeflate
//! only writes complete deflate streams: no preset dictionary, no sync
//! flush, and the last deflate block of each carries the BFINAL bit. So
//! each block's stream is made a continuation instead
//! ([`BlockDeflater::deflate`]): [`super::deflate_walk`] finds its last
//! block header and its last bit, the BFINAL bit is cleared, and an empty
//! stored block (3 zero header bits, padding to a byte, `00 00 ff ff`, what
//! zlib's sync flush writes) ends it on a byte boundary. The blocks,
//! concatenated in order, then form one raw deflate stream; [`trailer`]
//! closes it with an empty final block, and [`header`] and [`trailer`] wrap
//! it into a single gzip member that every gzip reader accepts, including
//! single-member readers such as flate2's `GzDecoder`.
//!
//! A block cannot refer back into the block before it (no dictionary), so
//! the first bytes of each block compress a little worse: on 125 MB of
//! system files, 256 KiB blocks cost 0.4% of the output against one
//! libdeflate stream, 1 MiB blocks 0.1 to 0.2%, 4 MiB 0.03% (and hold more
//! memory per layer in flight). With 1 MiB blocks libdeflate's level 6 still
//! writes smaller output than zlib's level 6 with its 32 KiB window carried
//! across (pigz). libdeflate chooses for each deflate block the cheapest of
//! dynamic codes, fixed codes and stored bytes, so an incompressible block
//! grows only by stored-block headers (5 bytes per 64 KiB, a few more where
//! libdeflate cuts its blocks) and the 5-byte join. The output depends
//! only on the input, the level and [`BLOCK`], never on how many threads
//! did the work.

use std::io;

use libdeflater::{CompressionLvl, Compressor};

use super::deflate_walk;

/// Size of the uncompressed blocks that are deflated independently.
pub(super) const BLOCK: usize = 1024 * 1024;

/// The 10-byte gzip header: deflate, no flags, mtime 0, no extra-flags,
/// operating system "unknown" (the same bytes on every machine).
pub(super) fn header() -> [u8; 10] {
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]
}

/// The end of the stream: an empty final deflate block (fixed Huffman
/// codes, just the end-of-block code) followed by the gzip trailer, the
/// CRC-32 and the size modulo 2^32 of the uncompressed data, little-endian.
pub(super) fn trailer(crc: u32, size: u64) -> [u8; 10] {
    let mut end = [0u8; 10];
    end[..2].copy_from_slice(&[0x03, 0x00]);
    end[2..6].copy_from_slice(&crc.to_le_bytes());
    end[6..].copy_from_slice(&(size as u32).to_le_bytes());
    end
}

/// The bytes of an empty stored block after its 3 header bits and the
/// padding: length 0 and its one's complement.
const EMPTY_STORED: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Deflates blocks into non-final pieces of one deflate stream; one per
/// compressor thread (libdeflate's compressor holds its match finder's
/// tables, about 1 MB, reused from block to block).
pub(super) struct BlockDeflater {
    compressor: Compressor,
}

impl BlockDeflater {
    /// A deflater at `level`: libdeflate's 0 (store) to 12, where 1 to 9
    /// trade speed for size as gzip's levels do.
    pub(super) fn new(level: u32) -> io::Result<Self> {
        let level = i32::try_from(level)
            .ok()
            .and_then(|level| CompressionLvl::new(level).ok())
            .ok_or_else(|| io::Error::other(format!("invalid deflate level {level}")))?;
        Ok(Self {
            compressor: Compressor::new(level),
        })
    }

    /// Deflates `block` into deflate blocks without BFINAL that end on a
    /// byte boundary, ready to be followed by the next block's.
    pub(super) fn deflate(&mut self, block: &[u8]) -> io::Result<Vec<u8>> {
        let bound = self.compressor.deflate_compress_bound(block.len());
        let mut out = vec![0; bound + 1 + EMPTY_STORED.len()];
        let len = self
            .compressor
            .deflate_compress(block, &mut out)
            .map_err(|e| io::Error::other(format!("libdeflate: {e:?}")))?;
        out.truncate(len);
        let ends = deflate_walk::walk(&out).map_err(io::Error::other)?;
        // Clear BFINAL, drop any bytes and bits after the end (libdeflate
        // writes none, but the join must not depend on that), then append
        // the empty stored block: its 3 zero header bits fit in the last
        // byte if at least 3 bits of it are unused, else they need one more.
        out[ends.final_header / 8] &= !(1 << (ends.final_header % 8));
        out.truncate(ends.end.div_ceil(8));
        let used = ends.end % 8;
        if let Some(last) = out.last_mut().filter(|_| used != 0) {
            *last &= (1 << used) - 1;
        }
        if used == 0 || used > 5 {
            out.push(0);
        }
        out.extend_from_slice(&EMPTY_STORED);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Read, path::Path, process::Command};

    use super::*;

    fn noise(len: usize) -> Vec<u8> {
        crate::archive::tests::xorshift_bytes(len, 0x2545_f491_4f6c_dd1d)
    }

    /// The whole stream for `data`, built block by block as the pipeline does.
    fn gzip_in_blocks(data: &[u8]) -> Vec<u8> {
        let mut deflater = BlockDeflater::new(6).unwrap();
        let mut out = header().to_vec();
        for block in data.chunks(BLOCK) {
            out.extend(deflater.deflate(block).unwrap());
        }
        let mut crc = flate2::Crc::new();
        crc.update(data);
        out.extend(trailer(crc.sum(), data.len() as u64));
        out
    }

    /// What `program -dc` makes of `stream`, asserting it succeeds.
    fn unpack_with(program: &str, dir: &Path, stream: &[u8]) -> Vec<u8> {
        let file = dir.join("stream.gz");
        std::fs::write(&file, stream).unwrap();
        let unpacked = Command::new(program)
            .arg("-dc")
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("{program} is installed (setup-host.sh): {e}"));
        assert!(
            unpacked.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&unpacked.stderr)
        );
        unpacked.stdout
    }

    /// Inputs at the edges of the block structure and of compressibility.
    fn edge_inputs() -> Vec<(&'static str, Vec<u8>)> {
        let text = b"some text that repeats, with a number 12345 in it\n";
        let mut mixed = noise(BLOCK + 1000);
        mixed.extend(text.repeat(BLOCK / 10));
        vec![
            ("empty", Vec::new()),
            ("one byte", b"x".to_vec()),
            (
                "exactly one block",
                text.repeat(BLOCK / text.len() + 1)[..BLOCK].to_vec(),
            ),
            ("exactly three blocks of noise", noise(3 * BLOCK)),
            ("one block and one byte", noise(BLOCK + 1)),
            ("incompressible", noise(2 * BLOCK + 12_345)),
            ("one byte repeated", vec![0u8; 4 * BLOCK + 7]),
            ("mixed, many blocks", mixed.repeat(3)),
        ]
    }

    #[test]
    fn joined_blocks_are_one_member_that_gzip_libdeflate_and_flate2_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in edge_inputs() {
            let stream = gzip_in_blocks(&data);
            for program in ["gzip", "libdeflate-gzip"] {
                let unpacked = unpack_with(program, dir.path(), &stream);
                assert!(unpacked == data, "{program} gives back {name}");
            }
            // GzDecoder reads a single member and stops after it: a
            // multi-member stream would come back short.
            let mut unpacked = Vec::new();
            flate2::read::GzDecoder::new(&stream[..])
                .read_to_end(&mut unpacked)
                .unwrap();
            assert!(unpacked == data, "GzDecoder gives back {name}");
            // And the member is all there is: one raw deflate stream whose
            // final block ends right before the 8-byte trailer.
            let ends = deflate_walk::walk(&stream[10..]).unwrap();
            assert_eq!(10 + ends.end.div_ceil(8) + 8, stream.len(), "{name}");
        }
    }

    #[test]
    fn empty_input_is_a_valid_empty_stream() {
        let stream = gzip_in_blocks(&[]);
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&stream[..])
            .read_to_end(&mut unpacked)
            .unwrap();
        assert!(unpacked.is_empty());
    }

    #[test]
    fn an_incompressible_block_costs_no_more_than_storing_it() {
        let mut deflater = BlockDeflater::new(6).unwrap();
        for len in [1, 1000, 65_535, 65_536, BLOCK - 1, BLOCK] {
            let block = noise(len);
            // Stored blocks hold at most 65535 bytes behind a 5-byte
            // header (3 bits, padding, length and its complement), 0.0076%;
            // libdeflate may also cut stored bytes at its own block
            // boundaries, and the join adds one empty stored block.
            let stored = len + len / 10_000 + 16;
            let deflated = deflater.deflate(&block).unwrap();
            assert!(
                deflated.len() <= stored,
                "{len} bytes of noise deflate to {} bytes, more than {stored}",
                deflated.len()
            );
        }
    }

    #[test]
    fn every_block_ends_with_a_non_final_empty_stored_block() {
        let mut deflater = BlockDeflater::new(6).unwrap();
        for (name, data) in edge_inputs() {
            for block in data.chunks(BLOCK) {
                let deflated = deflater.deflate(block).unwrap();
                assert!(deflated.ends_with(&EMPTY_STORED), "{name}");
                // No block of the piece is final: walking it alone finds
                // no end.
                assert_eq!(
                    deflate_walk::walk(&deflated),
                    Err(deflate_walk::WalkError::Truncated),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn a_level_libdeflate_lacks_is_an_error() {
        assert!(BlockDeflater::new(13).is_err());
    }
}
