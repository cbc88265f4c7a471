//! Layer packing throughput, against `tar -cf - PATHS | gzip -6 | sha256sum`
//! on the same paths in the same run.
//!
//! Run with `cargo bench --bench pack`. By default it packs the closure of
//! the offline package set's `bigpkg` (over 100 MB, built with `nix-build`
//! if needed). `NIXERY_BENCH_INPUT=generated` packs a generated closure of
//! about 120 MB under a temporary directory instead (source-like text,
//! binary-like data, already compressed data, many files of varied sizes,
//! symlinks), and `NIXERY_BENCH_PATHS` packs the whitespace-separated store
//! paths it names. `NIXERY_BENCH_ROUNDS` (default 3) sets how many times
//! each contender runs, interleaved. Figures use each contender's fastest
//! round (noise from other work on the machine only ever adds time); the
//! median is printed beside it.
//!
//! Our side does everything a layer upload needs except the storage write:
//! tar, gzip, the `diff_id` hash of the tar and the SHA-256 of the
//! compressed stream (which `Storage::persist` computes). Throughput is the
//! uncompressed tar size divided by the wall time, for both contenders.
//! The process exits with status 1 if our packer is not faster.

use std::{
    env, fs,
    io::Write,
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

fn main() -> ExitCode {
    let generated;
    let paths = match env::var("NIXERY_BENCH_PATHS") {
        Ok(list) if !list.trim().is_empty() => list.split_whitespace().map(PathBuf::from).collect(),
        _ if env::var("NIXERY_BENCH_INPUT").as_deref() != Ok("generated") => {
            match bigpkg_closure() {
                Ok(paths) => {
                    println!("packing the closure of bigpkg: {} store paths", paths.len());
                    paths
                }
                Err(e) => return fail(&format!("cannot build bigpkg: {e}")),
            }
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

    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start a Tokio runtime: {e}")),
    };
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut last = None;
    for round in 1..=rounds {
        let packed = match runtime.block_on(pack(paths.clone())) {
            Ok(packed) => packed,
            Err(e) => return fail(&format!("our packer failed: {e}")),
        };
        let piped = match pipeline(&paths) {
            Ok(piped) => piped,
            Err(e) => return fail(&format!("the tar | gzip pipeline failed: {e}")),
        };
        println!(
            "round {round}: ours {:.2}s, tar|gzip -6|sha256sum {:.2}s",
            packed.elapsed.as_secs_f64(),
            piped.as_secs_f64()
        );
        ours.push(packed.elapsed);
        theirs.push(piped);
        last = Some(packed);
    }
    let Some(packed) = last else {
        return fail("no round ran");
    };

    let mb = packed.tar_size as f64 / 1e6;
    let rate = |times: &mut Vec<Duration>| {
        times.sort();
        (
            mb / times[0].as_secs_f64(),
            mb / times[times.len() / 2].as_secs_f64(),
        )
    };
    let (ours_rate, ours_median) = rate(&mut ours);
    let (theirs_rate, theirs_median) = rate(&mut theirs);
    println!(
        "input: {} paths, tar {:.1} MB, gzip level {GZIP_LEVEL} -> {:.1} MB ({:.1}% of the tar)",
        paths.len(),
        mb,
        packed.compressed_size as f64 / 1e6,
        100.0 * packed.compressed_size as f64 / packed.tar_size as f64
    );
    println!("ours (nixery::archive, zlib-rs): {ours_rate:.1} MB/s (median {ours_median:.1})");
    println!("tar -cf - | gzip -6 | sha256sum: {theirs_rate:.1} MB/s (median {theirs_median:.1})");
    println!(
        "ratio ours/pipeline: {:.2}x (medians {:.2}x)",
        ours_rate / theirs_rate,
        ours_median / theirs_median
    );
    if ours_rate > theirs_rate {
        ExitCode::SUCCESS
    } else {
        fail("our packer is not faster than the tar | gzip -6 pipeline")
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("pack bench: {message}");
    ExitCode::FAILURE
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

/// Runs `tar -cf - PATHS | gzip -6 | sha256sum` and times it.
fn pipeline(paths: &[PathBuf]) -> Result<Duration, String> {
    let started = Instant::now();
    let output = Command::new("bash")
        .arg("-c")
        .arg(r#"set -o pipefail; tar -cf - "$@" 2>/dev/null | gzip -6 | sha256sum"#)
        .arg("bash")
        .args(paths)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run bash: {e}"))?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        return Err(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(elapsed)
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
