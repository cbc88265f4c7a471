//! Layer packing throughput and size against `pigz -p$(nproc) -6` and
//! `libdeflate-gzip -6` on the same tar, in one run.
//!
//! Run with `cargo bench --bench pack`. By default it packs about 120 MB
//! of this machine's own files, the kind a Nix closure holds: Python
//! sources and bytecode (`/usr/lib/python3*`), documentation
//! (`/usr/share/doc`), shared libraries (`/usr/lib/x86_64-linux-gnu`) and
//! programs (`/usr/bin`), the regular files of these in that order, sorted,
//! up to the size. `NIXERY_BENCH_INPUT=generated` packs a generated closure
//! of about 120 MB under a temporary directory instead (random words,
//! recurring byte snippets, random bytes, many files of varied sizes,
//! symlinks; the same bytes on every machine, but text far more repetitive
//! than real text: libdeflate's output is larger than pigz's on it),
//! `NIXERY_BENCH_INPUT=bigpkg` the closure of the offline package set's
//! `bigpkg` (over 100 MB of incompressible filler, built with `nix-build`
//! if needed), and `NIXERY_BENCH_PATHS` the whitespace-separated store
//! paths it names. `NIXERY_BENCH_ROUNDS` (default 3) sets how many times each
//! contender runs; rounds are interleaved (ours, pigz, libdeflate, ours,
//! ...). Figures use each contender's fastest round (noise from other work
//! on the machine only ever adds time); the median is printed beside it.
//!
//! What each side does:
//! - ours: everything a layer upload does except the storage write: read
//!   the store paths and write the tar, the `diff_id` SHA-256 of the tar,
//!   the CRC-32, deflate, and the SHA-256 of the compressed stream (which
//!   `Storage::persist` computes);
//! - `pigz -p N -6` (N = available cores) and `libdeflate-gzip -6` (one
//!   core): compress the tar, written once to a temporary file beforehand
//!   (so they neither walk the store nor hash), into a temporary file.
//!
//! Throughput is the uncompressed tar size divided by the wall time. The
//! process exits with status 1 if our packer is less than
//! [`MIN_SPEEDUP_OVER_PIGZ`] times as fast as pigz or its output more than
//! [`MAX_SIZE_OVER_PIGZ`] times pigz's.

use std::{
    env, fs,
    io::{Read, Write},
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use futures::StreamExt;
use nixery::archive::{GZIP_LEVEL, pack_store_paths};
use sha2::{Digest, Sha256};

/// Total size of the generated closure.
const GENERATED_BYTES: u64 = 120_000_000;
/// The least speed-up over pigz on all cores that passes.
const MIN_SPEEDUP_OVER_PIGZ: f64 = 1.8;
/// The largest output, relative to pigz's, that passes.
const MAX_SIZE_OVER_PIGZ: f64 = 1.01;

fn main() -> ExitCode {
    let generated;
    let paths = match env::var("NIXERY_BENCH_PATHS") {
        Ok(list) if !list.trim().is_empty() => list.split_whitespace().map(PathBuf::from).collect(),
        _ if env::var("NIXERY_BENCH_INPUT").as_deref() == Ok("bigpkg") => match bigpkg_closure() {
            Ok(paths) => {
                println!("packing the closure of bigpkg: {} store paths", paths.len());
                paths
            }
            Err(e) => return fail(&format!("cannot build bigpkg: {e}")),
        },
        _ if env::var("NIXERY_BENCH_INPUT").as_deref() != Ok("generated") => {
            let paths = system_files(GENERATED_BYTES);
            println!("packing {} files of this system", paths.len());
            paths
        }
        _ => {
            generated = match tempfile::tempdir() {
                Ok(dir) => dir,
                Err(e) => return fail(&format!("cannot create a temporary directory: {e}")),
            };
            let started = Instant::now();
            let paths = match generate_closure(generated.path()) {
                Ok(paths) => paths,
                Err(e) => return fail(&format!("cannot generate the test closure: {e}")),
            };
            println!(
                "generated {} store paths in {:.1}s under {}",
                paths.len(),
                started.elapsed().as_secs_f64(),
                generated.path().display()
            );
            paths
        }
    };
    let rounds: usize = env::var("NIXERY_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(3);
    match run(&paths, rounds) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn run(paths: &[PathBuf], rounds: usize) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("cannot start a Tokio runtime: {e}"))?;
    let work =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let tar = work.path().join("layer.tar");
    let tar_size = write_tar(&runtime, paths, &tar)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    print_sha256_rate(&tar)?;

    let pigz = Reference {
        name: format!("pigz -p{cores} -{GZIP_LEVEL}"),
        program: "pigz",
        args: vec![format!("-p{cores}"), format!("-{GZIP_LEVEL}"), "-c".into()],
    };
    let libdeflate = Reference {
        name: format!("libdeflate-gzip -{GZIP_LEVEL}"),
        program: "libdeflate-gzip",
        args: vec![format!("-{GZIP_LEVEL}"), "-c".into()],
    };
    let out = work.path().join("out.gz");
    let (mut ours, mut theirs_pigz, mut theirs_libdeflate) = (Vec::new(), Vec::new(), Vec::new());
    let mut sizes = (0, 0, 0);
    for round in 1..=rounds {
        let packed = runtime
            .block_on(pack(paths.to_vec()))
            .map_err(|e| format!("our packer failed: {e}"))?;
        if packed.tar_size != tar_size {
            return Err(format!(
                "our tar has {} bytes this round, {tar_size} before",
                packed.tar_size
            ));
        }
        let (pigz_time, pigz_size) = pigz.run(&tar, &out)?;
        let (libdeflate_time, libdeflate_size) = libdeflate.run(&tar, &out)?;
        println!(
            "round {round}: ours {:.2}s, {} {:.2}s, {} {:.2}s",
            packed.elapsed.as_secs_f64(),
            pigz.name,
            pigz_time.as_secs_f64(),
            libdeflate.name,
            libdeflate_time.as_secs_f64()
        );
        ours.push(packed.elapsed);
        theirs_pigz.push(pigz_time);
        theirs_libdeflate.push(libdeflate_time);
        sizes = (packed.compressed_size, pigz_size, libdeflate_size);
    }

    let mb = tar_size as f64 / 1e6;
    let rate = |times: &mut Vec<Duration>| {
        times.sort();
        (
            mb / times[0].as_secs_f64(),
            mb / times[times.len() / 2].as_secs_f64(),
        )
    };
    let (ours_rate, ours_median) = rate(&mut ours);
    let (pigz_rate, pigz_median) = rate(&mut theirs_pigz);
    let (libdeflate_rate, libdeflate_median) = rate(&mut theirs_libdeflate);
    let percent = |size: u64| 100.0 * size as f64 / tar_size as f64;
    println!(
        "input: {} paths, tar {mb:.1} MB, {cores} cores, level {GZIP_LEVEL}",
        paths.len()
    );
    println!(
        "ours (nixery::archive, libdeflate, tar and both hashes): {ours_rate:.1} MB/s (median {ours_median:.1}), {} bytes ({:.2}% of the tar)",
        sizes.0,
        percent(sizes.0)
    );
    println!(
        "{}: {pigz_rate:.1} MB/s (median {pigz_median:.1}), {} bytes ({:.2}%)",
        pigz.name,
        sizes.1,
        percent(sizes.1)
    );
    println!(
        "{}: {libdeflate_rate:.1} MB/s (median {libdeflate_median:.1}), {} bytes ({:.2}%)",
        libdeflate.name,
        sizes.2,
        percent(sizes.2)
    );
    let speedup = ours_rate / pigz_rate;
    let size_ratio = sizes.0 as f64 / sizes.1 as f64;
    println!(
        "ours vs {}: {speedup:.2}x the throughput (medians {:.2}x), {size_ratio:.4}x the size",
        pigz.name,
        ours_median / pigz_median
    );
    println!(
        "ours vs {}: {:.2}x the throughput (medians {:.2}x), {:.4}x the size",
        libdeflate.name,
        ours_rate / libdeflate_rate,
        ours_median / libdeflate_median,
        sizes.0 as f64 / sizes.2 as f64
    );
    let mut failed = Vec::new();
    if speedup < MIN_SPEEDUP_OVER_PIGZ {
        failed.push(format!(
            "ours is {speedup:.2}x as fast as {}, less than {MIN_SPEEDUP_OVER_PIGZ}x",
            pigz.name
        ));
    }
    if size_ratio > MAX_SIZE_OVER_PIGZ {
        failed.push(format!(
            "ours is {size_ratio:.4}x the size of {}'s output, more than {MAX_SIZE_OVER_PIGZ}x",
            pigz.name
        ));
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(failed.join("; "))
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("pack bench: {message}");
    ExitCode::FAILURE
}

/// Packs `paths` once and writes the uncompressed tar to `file`; returns
/// its size.
fn write_tar(
    runtime: &tokio::runtime::Runtime,
    paths: &[PathBuf],
    file: &Path,
) -> Result<u64, String> {
    let blob = runtime.block_on(async {
        let (mut stream, summary) = pack_store_paths(paths.to_vec());
        let mut blob = Vec::new();
        while let Some(chunk) = stream.next().await {
            blob.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        }
        summary
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(blob)
    })?;
    // A single-member reader: it would stop short of a multi-member stream.
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&blob[..])
        .read_to_end(&mut tar)
        .map_err(|e| format!("our stream does not decompress: {e}"))?;
    fs::write(file, &tar).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(tar.len() as u64)
}

/// Prints how fast `sha2` hashes (it uses the CPU's SHA extensions when
/// it has them: a few hundred MB/s without, over 1 GB/s with).
fn print_sha256_rate(tar: &Path) -> Result<(), String> {
    let data = fs::read(tar).map_err(|e| format!("cannot read {}: {e}", tar.display()))?;
    let started = Instant::now();
    std::hint::black_box(Sha256::digest(&data));
    let elapsed = started.elapsed();
    println!(
        "sha2 SHA-256: {:.0} MB/s (CPU SHA extensions: {})",
        data.len() as f64 / 1e6 / elapsed.as_secs_f64(),
        if std::arch::is_x86_feature_detected!("sha") {
            "yes"
        } else {
            "no"
        }
    );
    Ok(())
}

struct Packed {
    elapsed: Duration,
    tar_size: u64,
    compressed_size: u64,
}

/// Packs `paths` and hashes the compressed stream, as an upload would.
async fn pack(paths: Vec<PathBuf>) -> Result<Packed, String> {
    let started = Instant::now();
    let (mut stream, summary) = pack_store_paths(paths);
    let mut hasher = Sha256::new();
    let mut compressed_size = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        hasher.update(&chunk);
        compressed_size += chunk.len() as u64;
    }
    let summary = summary
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    std::hint::black_box(hasher.finalize());
    Ok(Packed {
        elapsed: started.elapsed(),
        tar_size: summary.tar_size,
        compressed_size,
    })
}

/// A reference compressor: `program args... TAR > OUT`.
struct Reference {
    name: String,
    program: &'static str,
    args: Vec<String>,
}

impl Reference {
    /// Runs the compressor once; returns its wall time and output size.
    fn run(&self, tar: &Path, out: &Path) -> Result<(Duration, u64), String> {
        let output =
            fs::File::create(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        let started = Instant::now();
        let status = Command::new(self.program)
            .args(&self.args)
            .arg(tar)
            .stdin(Stdio::null())
            .stdout(output)
            .status()
            .map_err(|e| {
                format!(
                    "cannot run {} (scripts/setup-host.sh installs it): {e}",
                    self.program
                )
            })?;
        let elapsed = started.elapsed();
        if !status.success() {
            return Err(format!("{} failed: {status}", self.name));
        }
        let size = fs::metadata(out)
            .map_err(|e| format!("cannot read {}: {e}", out.display()))?
            .len();
        Ok((elapsed, size))
    }
}

/// Regular files of this system's Python, documentation, libraries and
/// programs, about `limit` bytes in all (see the module doc).
fn system_files(limit: u64) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("python3"))
        })
        .collect();
    roots.sort();
    roots.extend(["/usr/share/doc", "/usr/lib/x86_64-linux-gnu", "/usr/bin"].map(PathBuf::from));
    let mut files = Vec::new();
    let mut total = 0;
    for root in roots {
        let mut found = Vec::new();
        regular_files(&root, &mut found);
        found.sort();
        for (path, size) in found {
            if total >= limit {
                return files;
            }
            total += size;
            files.push(path);
        }
    }
    files
}

/// Collects the readable regular files under `dir` with their sizes.
fn regular_files(dir: &Path, found: &mut Vec<(PathBuf, u64)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            regular_files(&path, found);
        } else if meta.is_file() && fs::File::open(&path).is_ok() {
            found.push((path, meta.len()));
        }
    }
}

/// A small, fast, deterministic pseudo-random generator (xorshift64*), so
/// the generated closure is the same on every run without a `rand`
/// dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The kinds of content found in real closures.
#[derive(Clone, Copy)]
enum Content {
    /// Source, scripts, docs, locale data: compresses about 4:1.
    Text,
    /// Machine code and tables: about 2:1.
    Binary,
    /// Compressed archives, images: does not compress.
    Random,
}

/// How many distinct snippets binary-like content draws from.
const SNIPPETS: usize = 700;

/// Fixed pseudo-random bytes that binary-like snippets are cut from.
static SNIPPET_TABLE: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    (0..SNIPPETS * 13 + 16).map(|_| rng.next() as u8).collect()
});

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "return",
    "if",
    "else",
    "struct",
    "int",
    "char",
    "const",
    "static",
    "void",
    "include",
    "define",
    "while",
    "buffer",
    "length",
    "error",
    "value",
    "result",
    "pointer",
    "size_t",
    "unsigned",
    "config",
    "option",
    "path",
    "store",
    "nix",
    "package",
    "version",
    "license",
    "file",
    "directory",
    "function",
    "data",
    "table",
    "index",
    "string",
    "number",
    "count",
    "begin",
    "end",
    "write",
    "read",
    "open",
    "close",
    "memory",
    "allocate",
    "free",
    "thread",
    "signal",
    "socket",
    "stream",
    "format",
];

fn fill(content: Content, len: usize, rng: &mut Rng, out: &mut Vec<u8>) {
    out.clear();
    match content {
        Content::Text => {
            while out.len() < len {
                let indent = rng.below(4) as usize * 4;
                out.extend(std::iter::repeat_n(b' ', indent));
                for _ in 0..3 + rng.below(9) {
                    out.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
                    out.push(if rng.below(7) == 0 { b'_' } else { b' ' });
                }
                if rng.below(5) == 0 {
                    let _ = write!(out, "{}", rng.below(100_000));
                }
                out.push(b'\n');
            }
        }
        Content::Binary => {
            // Recurring instruction-like snippets with random operands in
            // between, so that both matching and entropy coding have work.
            while out.len() < len {
                let r = rng.next();
                if r % 10 < 7 {
                    let snippet = (r >> 8) as usize % SNIPPETS;
                    let start = snippet * 13 % (SNIPPET_TABLE.len() - 16);
                    out.extend_from_slice(
                        &SNIPPET_TABLE[start..start + 4 + (r >> 20) as usize % 12],
                    );
                } else {
                    out.extend_from_slice(&rng.next().to_le_bytes()[..1 + (r >> 8) as usize % 4]);
                }
            }
        }
        Content::Random => {
            while out.len() < len {
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
        }
    }
    out.truncate(len);
}

/// Generates about [`GENERATED_BYTES`] of store paths under `root` and
/// returns them.
/// The closure of the offline package set's >100 MB package.
fn bigpkg_closure() -> Result<Vec<PathBuf>, String> {
    let pkgs = Path::new(env!("CARGO_MANIFEST_DIR")).join("prepare-image/offline-pkgs");
    let built = command_stdout(Command::new("nix-build").arg(&pkgs).args([
        "-A",
        "bigpkg",
        "--no-out-link",
    ]))?;
    let out = built.lines().last().unwrap_or_default().trim().to_owned();
    let closure = command_stdout(Command::new("nix-store").args(["-qR", &out]))?;
    Ok(closure.lines().map(PathBuf::from).collect())
}

fn command_stdout(cmd: &mut Command) -> Result<String, String> {
    let output = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!("{cmd:?} failed with {}", output.status));
    }
    String::from_utf8(output.stdout).map_err(|e| format!("{cmd:?}: {e}"))
}

fn generate_closure(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut buffer = Vec::new();
    let mut paths = Vec::new();
    let mut written = 0u64;
    let mut index = 0;
    while written < GENERATED_BYTES {
        let store_path = root.join(format!("{index:032}-package-{index}"));
        index += 1;
        let dirs = ["bin", "lib", "share/doc", "share/locale/de", "include/sub"];
        for dir in dirs {
            fs::create_dir_all(store_path.join(dir))?;
        }
        fs::create_dir_all(store_path.join("share/empty"))?;
        // Each store path holds up to ~12 MB.
        let budget = written + 4_000_000 + rng.below(8_000_000);
        let mut file = 0;
        while written < budget.min(GENERATED_BYTES) {
            let content = match rng.below(10) {
                0..=4 => Content::Text,
                5..=8 => Content::Binary,
                _ => Content::Random,
            };
            // Log-uniform sizes from 64 bytes to about 4 MB.
            let len = (64f64 * 2f64.powf(rng.below(1600) as f64 / 100.0)) as usize;
            fill(content, len, &mut rng, &mut buffer);
            let dir = dirs[rng.below(dirs.len() as u64) as usize];
            let name = store_path.join(dir).join(format!("file-{file}.dat"));
            fs::write(&name, &buffer)?;
            if rng.below(8) == 0 {
                symlink(
                    format!("file-{file}.dat"),
                    store_path.join(dir).join(format!("link-{file}")),
                )?;
            }
            file += 1;
            written += len as u64;
        }
        paths.push(store_path);
    }
    Ok(paths)
}
