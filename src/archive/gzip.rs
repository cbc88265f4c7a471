//! A gzip stream compressed in independent blocks, the way pigz does it.
//!
//! flate2 compresses a stream on one thread. To use several cores for one
//! layer, the uncompressed bytes are cut into blocks of [`BLOCK`] bytes and
//! each block is deflated on its own, primed with the last 32 KiB of the
//! block before it as a preset dictionary (so matches may reach back across
//! the cut exactly as in one continuous stream) and ended with a sync flush
//! (so it ends on a byte boundary). The blocks, concatenated in order, form
//! one raw deflate stream; [`header`] and [`trailer`] wrap it into a single
//! gzip member that any gzip reader accepts. flate2 has no helper for this,
//! hence the few lines here. The output depends only on the input, the
//! level and [`BLOCK`], never on how many threads did the work.

use std::io;

use flate2::{Compress, Compression, FlushCompress};

/// Size of the uncompressed blocks that are deflated independently.
pub(super) const BLOCK: usize = 256 * 1024;

/// How much of the previous block primes the next one (deflate's window).
const WINDOW: usize = 32 * 1024;

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

/// The part of `block` that primes the block after it.
pub(super) fn window_of(block: &[u8]) -> &[u8] {
    &block[block.len().saturating_sub(WINDOW)..]
}

/// Deflates `block` at `level` as a continuation of `dictionary` (the tail
/// of the previous block, empty for the first), ending with a sync flush.
pub(super) fn deflate_block(level: u32, dictionary: &[u8], block: &[u8]) -> io::Result<Vec<u8>> {
    let mut deflate = Compress::new(Compression::new(level), false);
    if !dictionary.is_empty() {
        deflate
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(block.len() + block.len() / 8 + 64);
    loop {
        let consumed = usize::try_from(deflate.total_in()).map_err(io::Error::other)?;
        deflate
            .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        // The flush is complete once all input is in and deflate stopped
        // with output space to spare.
        let all_in = deflate.total_in() == block.len() as u64;
        if all_in && out.len() < out.capacity() {
            return Ok(out);
        }
        out.reserve(64 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use std::{io::Write, process::Command};

    use super::*;

    fn noise(len: usize) -> Vec<u8> {
        crate::archive::tests::xorshift_bytes(len, 0x2545_f491_4f6c_dd1d)
    }

    /// The whole stream for `data`, built block by block as the pipeline does.
    fn gzip_in_blocks(data: &[u8]) -> Vec<u8> {
        let mut out = header().to_vec();
        let mut dictionary: &[u8] = &[];
        for block in data.chunks(BLOCK) {
            out.extend(deflate_block(6, dictionary, block).unwrap());
            dictionary = window_of(block);
        }
        let mut crc = flate2::Crc::new();
        crc.update(data);
        out.extend(trailer(crc.sum(), data.len() as u64));
        out
    }

    #[test]
    fn blocks_form_one_stream_that_gnu_gzip_accepts() {
        let mut data = noise(BLOCK + 1000);
        data.extend(b"some text that repeats ".repeat(BLOCK / 10));
        let stream = gzip_in_blocks(&data);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("blocks.gz");
        std::fs::File::create(&file)
            .unwrap()
            .write_all(&stream)
            .unwrap();
        let unpacked = Command::new("gzip")
            .arg("-dc")
            .arg(&file)
            .output()
            .expect("gzip is installed");
        assert!(
            unpacked.status.success(),
            "{}",
            String::from_utf8_lossy(&unpacked.stderr)
        );
        assert!(unpacked.stdout == data, "gzip -dc gives back the input");
    }

    #[test]
    fn empty_input_is_a_valid_empty_stream() {
        let stream = gzip_in_blocks(&[]);
        let mut unpacked = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&stream[..]),
            &mut unpacked,
        )
        .unwrap();
        assert!(unpacked.is_empty());
    }

    #[test]
    fn a_block_primed_with_its_predecessor_matches_across_the_cut() {
        let first = noise(BLOCK);
        // The second block repeats the last 16 KiB of the first: only the
        // preset dictionary lets deflate see that.
        let second = first[BLOCK - 16 * 1024..].to_vec();
        let primed = deflate_block(6, window_of(&first), &second).unwrap();
        let unprimed = deflate_block(6, &[], &second).unwrap();
        assert!(
            primed.len() * 20 < unprimed.len(),
            "{} vs {}",
            primed.len(),
            unprimed.len()
        );
    }
}
