//! Where a raw deflate stream's last block starts and where the stream ends.
//!
//! libdeflate compresses a buffer into a complete deflate stream whose last
//! block carries the BFINAL bit, and reports neither where that block
//! starts nor at which bit of the last byte the stream ends. Joining such
//! streams into one (see [`super::gzip`]) needs both, so this module walks
//! the block structure: block headers, the Huffman code tables of dynamic
//! blocks, and every symbol (skipping the extra bits of lengths and
//! distances) up to each end-of-block code. It decodes nothing into output
//! and checks only what it needs to stay in bounds; it never panics on bad
//! input, it returns a [`WalkError`].
//!
//! Why not a crate: zlib's `inflate` with `Z_BLOCK` reports block
//! boundaries in `data_type`, but zlib-rs keeps that field out of its safe
//! API (only its C-compatible, `unsafe` API has it), and flate2 has no
//! `Z_BLOCK` at all; no deflate crate found reports bit positions of block
//! boundaries.
//!
//! Cost: the walk follows the same serial chain of Huffman lookups as an
//! inflate, so it runs about as fast as libdeflate's own decompressor
//! (0.29 to 0.36 s against 0.20 to 0.26 s for 125 MB of system files
//! deflated in 1 MiB blocks, on a loaded 2-core machine), which is about
//! 20% of the time libdeflate takes to deflate them at level 6. Two tables
//! keep it there: codes of up to 10 bits are found in one lookup (longer
//! ones in a second), and one lookup skips a whole run of literals whose
//! codes fit in those 10 bits.

/// Bit positions in a deflate stream, counted from bit 0 (the least
/// significant bit) of its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StreamEnds {
    /// The first bit of the last block's header: its BFINAL bit.
    pub(super) final_header: usize,
    /// The bit just after the last block's end-of-block code (or its
    /// stored bytes): the length of the stream in bits.
    pub(super) end: usize,
}

/// Why a buffer is not a deflate stream the walker can follow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum WalkError {
    /// The buffer ends before the final block does.
    #[error("the deflate stream ends inside a block")]
    Truncated,
    /// The stream holds something deflate does not allow.
    #[error("the deflate stream holds an invalid {0}")]
    Invalid(&'static str),
}

/// Finds the last block and the end of the deflate stream at the start of
/// `stream` (bytes after its end are ignored).
pub(super) fn walk(stream: &[u8]) -> Result<StreamEnds, WalkError> {
    let mut bits = Bits {
        data: stream,
        next: 0,
        hold: 0,
        count: 0,
    };
    let mut tables = Tables::default();
    loop {
        bits.refill();
        let header = bits.position();
        let last = bits.take(1)? == 1;
        match bits.take(2)? {
            0b00 => skip_stored(&mut bits)?,
            0b01 => {
                tables.fixed()?;
                skip_symbols(&mut bits, &tables.literal, &tables.distance)?;
            }
            0b10 => {
                tables.dynamic(&mut bits)?;
                skip_symbols(&mut bits, &tables.literal, &tables.distance)?;
            }
            _ => return Err(WalkError::Invalid("block type")),
        }
        if last {
            return Ok(StreamEnds {
                final_header: header,
                end: bits.position(),
            });
        }
    }
}

/// A reader of the stream's bits, least significant first, through a
/// 64-bit buffer refilled a word at a time.
#[derive(Clone, Copy)]
struct Bits<'a> {
    data: &'a [u8],
    /// The next byte of `data` to load into `hold`.
    next: usize,
    /// The loaded bits not consumed yet, the next one lowest.
    hold: u64,
    /// How many bits of `hold` are loaded.
    count: u32,
}

/// The fewest bits [`Bits::refill`] leaves loaded, unless the data ends:
/// enough for a length code with its extra bits and a distance code with
/// its extra bits (15 + 5 + 15 + 13).
const REFILLED: u32 = 56;

impl Bits<'_> {
    /// The position of the next bit to read.
    fn position(&self) -> usize {
        self.next * 8 - self.count as usize
    }

    /// Loads whole bytes until at least [`REFILLED`] bits are loaded or the
    /// data ends. A word load also puts the bytes after the counted ones
    /// into `hold`, above `count`: they are the bits the next load puts
    /// there again, so or-ing them in twice changes nothing.
    #[inline(always)]
    fn refill(&mut self) {
        if self.count >= REFILLED {
            return;
        }
        if let Some(word) = self.data.get(self.next..self.next + 8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            self.hold |= u64::from_le_bytes(bytes) << self.count;
            let loaded = (63 - self.count) / 8;
            self.next += loaded as usize;
            self.count += loaded * 8;
        } else {
            while self.count <= REFILLED {
                let Some(&byte) = self.data.get(self.next) else {
                    return;
                };
                self.hold |= u64::from(byte) << self.count;
                self.next += 1;
                self.count += 8;
            }
        }
    }

    /// Drops `n` loaded bits, failing if fewer are loaded (the data ended).
    #[inline(always)]
    fn consume(&mut self, n: u32) -> Result<(), WalkError> {
        if n > self.count {
            return Err(WalkError::Truncated);
        }
        self.hold >>= n;
        self.count -= n;
        Ok(())
    }

    /// Drops the bits of the code (and extra bits) `entry` stands for,
    /// failing if it stands for no valid code or the data ended.
    #[inline(always)]
    fn consume_code(&mut self, entry: u32) -> Result<(), WalkError> {
        let n = entry & BITS;
        // One comparison for both: 0 wraps around to the largest value.
        if n.wrapping_sub(1) >= self.count {
            return Err(if n == 0 {
                WalkError::Invalid("Huffman code")
            } else {
                WalkError::Truncated
            });
        }
        self.hold >>= n;
        self.count -= n;
        Ok(())
    }

    /// The next `n` (at most 16) bits as a number.
    fn take(&mut self, n: u32) -> Result<u32, WalkError> {
        self.refill();
        let value = (self.hold & ((1 << n) - 1)) as u32;
        self.consume(n)?;
        Ok(value)
    }
}

/// Skips a stored block after its 3 header bits.
fn skip_stored(bits: &mut Bits<'_>) -> Result<(), WalkError> {
    bits.consume(bits.count % 8)?;
    let len = bits.take(16)?;
    let complement = bits.take(16)?;
    if len != !complement & 0xffff {
        return Err(WalkError::Invalid("stored block length"));
    }
    // Skip the stored bytes: first those loaded, then the rest directly.
    let len = len as usize * 8;
    let loaded = len.min(bits.count as usize);
    bits.consume(loaded as u32)?;
    if len > loaded {
        // `hold` may hold bytes loaded ahead (see `refill`); they are
        // inside the skipped bytes.
        bits.hold = 0;
        bits.next += (len - loaded) / 8;
    }
    if bits.next > bits.data.len() {
        return Err(WalkError::Truncated);
    }
    Ok(())
}

/// Extra bits after each length symbol 257..=285.
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// Extra bits after each distance symbol 0..=29.
const DISTANCE_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
const END_OF_BLOCK: u32 = 256;

/// Skips literal, length and distance symbols up to the end-of-block code.
fn skip_symbols(bits: &mut Bits<'_>, literal: &Code, distance: &Code) -> Result<(), WalkError> {
    // A copy in registers: the caller's is written back once, at the end.
    let mut local = Bits { ..*bits };
    let result = loop {
        local.refill();
        // A code and the extra bits after it (or a run of literals) in
        // one step.
        let entry = literal.lookup(local.hold);
        if let Err(e) = local.consume_code(entry) {
            break Err(e);
        }
        if entry & LITERAL != 0 {
            continue;
        }
        if entry & END != 0 {
            break Ok(());
        }
        let entry = distance.lookup(local.hold);
        if let Err(e) = local.consume_code(entry) {
            break Err(e);
        }
    };
    *bits = local;
    result
}

/// The longest code deflate allows.
const MAX_CODE_BITS: u32 = 15;
/// Bits that index a code's first table; longer codes continue in
/// second-level tables (small enough to rebuild cheaply for every block).
const FIRST_BITS: u32 = 10;

// A table entry is a `u32`: the symbol above bit 16, then flags, then in
// the low byte how many bits the code and the extra bits after it take.
// An entry whose low byte is 0 stands for bits no valid code starts with
// (decoding it fails, see `Bits::consume_code`).
/// The low byte: bits to consume.
const BITS: u32 = 0xff;
/// The symbol is a literal byte.
const LITERAL: u32 = 1 << 8;
/// The symbol is the end-of-block code.
const END: u32 = 1 << 9;
/// A first-level entry that points to a second-level table starting at
/// the entry's symbol field.
const LINK: u32 = 1 << 10;
const SYMBOL_SHIFT: u32 = 16;

/// A canonical Huffman code as a two-level lookup table of entries as
/// described above: the first [`FIRST_BITS`] bits of the stream (or fewer,
/// if no code is that long) index the first level, and for codes longer
/// than that a [`LINK`] entry names a second-level table indexed by the
/// next `second_bits` bits.
#[derive(Default)]
struct Code {
    table: Vec<u32>,
    first_mask: u64,
    first_bits: u32,
    second_mask: u64,
}

impl Code {
    /// Rebuilds the table for the code lengths of symbols 0, 1, ...;
    /// `extra` gives the extra bits after symbol `extra_from + i`, and
    /// symbols past its end are invalid if used. Symbols below 256 of a
    /// code with `extra_from` 257 are literals, 256 the end of the block.
    fn build(
        &mut self,
        lengths: &[u8],
        extra_from: usize,
        extra: &[u8],
        what: &'static str,
    ) -> Result<(), WalkError> {
        let mut count = [0u32; MAX_CODE_BITS as usize + 1];
        for &length in lengths {
            let slot = count
                .get_mut(usize::from(length))
                .ok_or(WalkError::Invalid(what))?;
            *slot += 1;
        }
        count[0] = 0;
        let longest = (1..=MAX_CODE_BITS)
            .rev()
            .find(|&l| count[l as usize] > 0)
            .unwrap_or(1);
        let first_bits = longest.min(FIRST_BITS);
        let second_bits = longest - first_bits;
        self.first_bits = first_bits;
        self.first_mask = (1 << first_bits) - 1;
        self.second_mask = (1 << second_bits) - 1;
        self.table.clear();
        self.table.resize(1 << first_bits, 0);
        // The first code of each length, as in RFC 1951 section 3.2.2.
        let mut next = [0u32; MAX_CODE_BITS as usize + 1];
        let mut code = 0;
        for length in 1..=longest as usize {
            code = (code + count[length - 1]) << 1;
            next[length] = code;
        }
        let literals = if extra_from == 257 { 256 } else { 0 };
        for (symbol, &length) in lengths.iter().enumerate() {
            if length == 0 {
                continue;
            }
            let length = u32::from(length);
            let code = next[length as usize];
            next[length as usize] += 1;
            if code >= 1 << length {
                return Err(WalkError::Invalid(what));
            }
            let kind = if symbol < literals {
                LITERAL
            } else if literals > 0 && symbol == literals {
                END
            } else {
                0
            };
            let extra = match symbol.checked_sub(extra_from) {
                None => 0,
                Some(i) => match extra.get(i) {
                    Some(&extra) => u32::from(extra),
                    // A symbol deflate reserves: decoding it is an error.
                    None => continue,
                },
            };
            let entry = (symbol as u32) << SYMBOL_SHIFT | kind | (length + extra);
            // The stream stores codes most significant bit first.
            let reversed = (code.reverse_bits() >> (32 - length)) as usize;
            let (start, size, index, step) = if length <= first_bits {
                (0, 1 << first_bits, reversed, 1 << length)
            } else {
                let first = reversed & ((1 << first_bits) - 1);
                let link = self.table[first];
                let start = if link & LINK == 0 {
                    let start = self.table.len();
                    self.table[first] = (start as u32) << SYMBOL_SHIFT | LINK;
                    self.table.resize(start + (1 << second_bits), 0);
                    start
                } else {
                    (link >> SYMBOL_SHIFT) as usize
                };
                let index = reversed >> first_bits;
                (start, 1 << second_bits, index, 1 << (length - first_bits))
            };
            for slot in (index..size).step_by(step) {
                self.table[start + slot] = entry;
            }
        }
        if literals > 0 {
            self.merge_literals();
        }
        Ok(())
    }

    /// Lets each first-level literal entry consume the whole run of
    /// literals whose codes lie within its index bits: the walk never
    /// needs a literal's value, so one lookup skips them all. Entries are
    /// visited from the top, so `i >> used`, below `i`, is still a single
    /// symbol's entry when it is read.
    fn merge_literals(&mut self) {
        for i in (0..1usize << self.first_bits).rev() {
            let entry = self.table[i];
            if entry & LITERAL == 0 {
                continue;
            }
            let mut used = entry & BITS;
            while used < self.first_bits {
                let next = self.table[i >> used];
                if next & LITERAL == 0 || used + (next & BITS) > self.first_bits {
                    break;
                }
                used += next & BITS;
            }
            self.table[i] = (entry & !BITS) | used;
        }
    }

    /// The entry for the code at the start of `hold`.
    #[inline(always)]
    fn lookup(&self, hold: u64) -> u32 {
        let entry = self
            .table
            .get((hold & self.first_mask) as usize)
            .copied()
            .unwrap_or(0);
        if entry & LINK == 0 {
            return entry;
        }
        let start = (entry >> SYMBOL_SHIFT) as usize;
        let index = (hold >> self.first_bits & self.second_mask) as usize;
        self.table.get(start + index).copied().unwrap_or(0)
    }

    /// Reads one symbol.
    fn decode(&self, bits: &mut Bits<'_>) -> Result<u32, WalkError> {
        bits.refill();
        let entry = self.lookup(bits.hold);
        bits.consume_code(entry)?;
        Ok(entry >> SYMBOL_SHIFT)
    }
}

/// The codes of the current block, their tables reused from block to block.
#[derive(Default)]
struct Tables {
    literal: Code,
    distance: Code,
    lengths: Code,
    scratch: Vec<u8>,
}

/// The order in which a dynamic block lists the code length code's lengths.
const LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

impl Tables {
    /// Sets the literal/length and distance codes from their code lengths.
    fn set(&mut self, literal: &[u8], distance: &[u8]) -> Result<(), WalkError> {
        self.literal
            .build(literal, 257, &LENGTH_EXTRA, "literal/length code")?;
        self.distance
            .build(distance, 0, &DISTANCE_EXTRA, "distance code")
    }

    /// The fixed codes of RFC 1951 section 3.2.6.
    fn fixed(&mut self) -> Result<(), WalkError> {
        let mut lengths = [0u8; 288 + 32];
        lengths[..144].fill(8);
        lengths[144..256].fill(9);
        lengths[256..280].fill(7);
        lengths[280..288].fill(8);
        lengths[288..].fill(5);
        self.set(&lengths[..288], &lengths[288..])
    }

    /// Reads a dynamic block's code descriptions (RFC 1951 section 3.2.7).
    fn dynamic(&mut self, bits: &mut Bits<'_>) -> Result<(), WalkError> {
        let literals = bits.take(5)? as usize + 257;
        let distances = bits.take(5)? as usize + 1;
        let length_codes = bits.take(4)? as usize + 4;
        if literals > 286 || distances > 30 {
            return Err(WalkError::Invalid("code count"));
        }
        let mut length_lengths = [0u8; 19];
        for &symbol in &LENGTH_ORDER[..length_codes] {
            length_lengths[symbol] = bits.take(3)? as u8;
        }
        // Symbols 0..=18 have no extra bits in the table: 16, 17 and 18
        // take theirs below.
        self.lengths
            .build(&length_lengths, 19, &[], "code length code")?;
        let mut lengths = std::mem::take(&mut self.scratch);
        lengths.clear();
        while lengths.len() < literals + distances {
            let symbol = self.lengths.decode(bits)?;
            let (value, repeat) = match symbol {
                0..=15 => (symbol as u8, 1),
                16 => {
                    let previous = *lengths
                        .last()
                        .ok_or(WalkError::Invalid("repeat of no code length"))?;
                    (previous, 3 + bits.take(2)?)
                }
                17 => (0, 3 + bits.take(3)?),
                _ => (0, 11 + bits.take(7)?),
            };
            lengths.extend(std::iter::repeat_n(value, repeat as usize));
        }
        if lengths.len() > literals + distances {
            return Err(WalkError::Invalid("code length repeat"));
        }
        if lengths[END_OF_BLOCK as usize] == 0 {
            return Err(WalkError::Invalid("block without an end code"));
        }
        let set = self.set(&lengths[..literals], &lengths[literals..]);
        self.scratch = lengths;
        set
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn deflate(data: &[u8], level: u32) -> Vec<u8> {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn finds_the_end_of_streams_zlib_wrote_in_every_block_type() {
        let text = b"a line of text that repeats, more or less. ".repeat(5000);
        let noise = crate::archive::tests::xorshift_bytes(200_000, 7);
        let mut mixed = text.clone();
        mixed.extend(&noise);
        mixed.extend(&text);
        // Level 0 writes stored blocks, a short input fixed codes, the
        // rest dynamic codes (several blocks).
        for (data, level) in [
            (&b""[..], 6),
            (&b"x"[..], 6),
            (&b"hello hello"[..], 6),
            (&mixed[..], 0),
            (&mixed[..], 1),
            (&mixed[..], 6),
        ] {
            let stream = deflate(data, level);
            let ends = walk(&stream).unwrap();
            assert_eq!(ends.end.div_ceil(8), stream.len(), "level {level}");
            // The last block header is where BFINAL is set.
            assert_eq!(
                stream[ends.final_header / 8] >> (ends.final_header % 8) & 1,
                1
            );
        }
    }

    #[test]
    fn finds_the_end_of_streams_libdeflate_wrote_at_every_level() {
        let mut data = b"a line of text that repeats, more or less. ".repeat(30_000);
        data.extend(crate::archive::tests::xorshift_bytes(300_000, 9));
        data.extend(vec![0u8; 200_000]);
        for level in 0..=12 {
            let mut compressor =
                libdeflater::Compressor::new(libdeflater::CompressionLvl::new(level).unwrap());
            let mut stream = vec![0; compressor.deflate_compress_bound(data.len())];
            let len = compressor.deflate_compress(&data, &mut stream).unwrap();
            stream.truncate(len);
            let ends = walk(&stream).unwrap();
            assert_eq!(ends.end.div_ceil(8), len, "level {level}");
            assert_eq!(
                stream[ends.final_header / 8] >> (ends.final_header % 8) & 1,
                1
            );
        }
    }

    #[test]
    fn a_stream_with_a_flipped_bit_is_walked_or_refused_without_a_panic() {
        let mut data = b"some text, some more text, and then some. ".repeat(3000);
        data.extend(crate::archive::tests::xorshift_bytes(5000, 3));
        let stream = {
            let mut compressor = libdeflater::Compressor::new(Default::default());
            let mut out = vec![0; compressor.deflate_compress_bound(data.len())];
            let len = compressor.deflate_compress(&data, &mut out).unwrap();
            out.truncate(len);
            out
        };
        for bit in (0..stream.len() * 8).step_by(7) {
            let mut damaged = stream.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let _ = walk(&damaged);
        }
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_a_panic() {
        let stream = deflate(&b"abcdefgh".repeat(10_000), 6);
        for cut in [0, 1, 2, stream.len() / 2, stream.len() - 1] {
            assert!(walk(&stream[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for seed in 1..200 {
            let garbage = crate::archive::tests::xorshift_bytes(512, seed);
            let _ = walk(&garbage);
        }
    }
}
