//! A tar writer that produces exactly the bytes of GNU tar's
//! `--format=gnu --numeric-owner` for the members given: the bytes the
//! symlink layer had when Nix built it with GNU tar, so that its tar hash,
//! its layer-store key, stays the same (see the module above).
//!
//! Written by hand rather than with the `tar` crate because the crate's
//! headers differ from GNU tar's in small ways (its checksum field ends in
//! a NUL where GNU tar writes NUL and space, and its long-name headers are
//! filled differently), and a different byte is a different key. What GNU
//! tar writes, and this module writes too:
//! - a 512-byte header per member: the name (directories with a trailing
//!   `/`), mode, uid, gid, size, mtime as zero-padded octal with a NUL in
//!   the last byte of the field, the checksum as six octal digits, a NUL
//!   and a space, the type flag, the link target, the magic `ustar  \0`,
//!   empty owner names (numeric owner) and device numbers;
//! - a name or target longer than 100 bytes goes first into a
//!   `././@LongLink` member of type `L` (name) or `K` (target) holding it
//!   with a closing NUL, and the header keeps its first 100 bytes;
//! - file contents padded to 512 bytes, two zero blocks at the end, and the
//!   whole padded to GNU tar's record of 10240 bytes.
//!
//! `tests` compare the output with the host's GNU tar byte for byte.

/// A tar block.
const BLOCK: usize = 512;
/// GNU tar's default record (blocking factor 20).
const RECORD: usize = 20 * BLOCK;
/// Size of the name and link-target fields.
const NAME_FIELD: usize = 100;

/// What a member is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Directory,
    /// A regular file with these contents.
    File(Vec<u8>),
    /// A symlink to this target.
    Symlink(Vec<u8>),
}

/// One member of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its path inside the archive, relative, without a trailing `/`.
    pub name: Vec<u8>,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Owner uid, also the gid.
    pub owner: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// What it is.
    pub kind: Kind,
}

/// The archive holding `members` in the order given.
pub fn write(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    for member in members {
        append(&mut out, member);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out.resize(out.len().div_ceil(RECORD) * RECORD, 0);
    out
}

fn append(out: &mut Vec<u8>, member: &Member) {
    let mut name = member.name.clone();
    let (flag, size, target, contents): (u8, usize, &[u8], &[u8]) = match &member.kind {
        Kind::Directory => {
            name.push(b'/');
            (b'5', 0, b"", b"")
        }
        Kind::File(contents) => (b'0', contents.len(), b"", contents),
        Kind::Symlink(target) => (b'2', 0, target, b""),
    };
    if target.len() > NAME_FIELD {
        long_link(out, b'K', target);
    }
    if name.len() > NAME_FIELD {
        long_link(out, b'L', &name);
    }
    let mut header = [0u8; BLOCK];
    put_bytes(&mut header[0..100], &name);
    put_octal(&mut header[100..108], u64::from(member.mode & 0o7777));
    put_octal(&mut header[108..116], u64::from(member.owner));
    put_octal(&mut header[116..124], u64::from(member.owner));
    put_octal(&mut header[124..136], size as u64);
    put_octal(&mut header[136..148], member.mtime);
    header[156] = flag;
    put_bytes(&mut header[157..257], target);
    finish_header(&mut header);
    out.extend_from_slice(&header);
    push_padded(out, contents);
}

/// The `././@LongLink` member that carries a long `value` (name or
/// target) for the header after it.
fn long_link(out: &mut Vec<u8>, flag: u8, value: &[u8]) {
    let mut header = [0u8; BLOCK];
    put_bytes(&mut header[0..100], b"././@LongLink");
    put_octal(&mut header[100..108], 0o644);
    put_octal(&mut header[108..116], 0);
    put_octal(&mut header[116..124], 0);
    put_octal(&mut header[124..136], value.len() as u64 + 1);
    put_octal(&mut header[136..148], 0);
    header[156] = flag;
    finish_header(&mut header);
    out.extend_from_slice(&header);
    let mut contents = value.to_vec();
    contents.push(0);
    push_padded(out, &contents);
}

/// Writes the magic and the checksum.
fn finish_header(header: &mut [u8; BLOCK]) {
    header[257..265].copy_from_slice(b"ustar  \0");
    header[148..156].fill(b' ');
    let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
    let digits = format!("{sum:06o}");
    header[148..154].copy_from_slice(&digits.as_bytes()[digits.len() - 6..]);
    header[154] = 0;
    header[155] = b' ';
}

fn push_padded(out: &mut Vec<u8>, contents: &[u8]) {
    out.extend_from_slice(contents);
    out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
}

/// `value` in `field`, cut to its length.
fn put_bytes(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// `value` as zero-padded octal filling all but the last byte of `field`
/// (a NUL). Every value written here fits (sizes of the symlink layer's
/// files, uids up to 2^31, mtime 1).
fn put_octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let digits = format!("{value:0width$o}");
    field[..width].copy_from_slice(&digits.as_bytes()[digits.len() - width..]);
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    /// Lay `members` out under `dir` and archive them with GNU tar the way
    /// the Nix builder did: sorted members, one call.
    fn gnu_tar(members: &[Member], dir: &std::path::Path) -> Vec<u8> {
        let root = dir.join("root");
        std::fs::create_dir(&root).unwrap();
        for member in members {
            let name = String::from_utf8(member.name.clone()).unwrap();
            let path = root.join(&name);
            match &member.kind {
                Kind::Directory => std::fs::create_dir_all(&path).unwrap(),
                Kind::File(contents) => std::fs::write(&path, contents).unwrap(),
                Kind::Symlink(target) => {
                    std::os::unix::fs::symlink(String::from_utf8(target.clone()).unwrap(), &path)
                        .unwrap()
                }
            }
            if !matches!(member.kind, Kind::Symlink(_)) {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(member.mode))
                    .unwrap();
            }
        }
        let list = dir.join("members");
        let names: Vec<String> = members
            .iter()
            .map(|m| String::from_utf8(m.name.clone()).unwrap())
            .collect();
        std::fs::write(&list, names.join("\0")).unwrap();
        let out = dir.join("out.tar");
        let status = Command::new("tar")
            .arg("--create")
            .arg("--file")
            .arg(&out)
            .arg("--directory")
            .arg(&root)
            .args(["--null", "--no-recursion", "--files-from"])
            .arg(&list)
            .args([
                "--format=gnu",
                "--mtime=@1",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
            ])
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read(out).unwrap()
    }

    fn member(name: &str, mode: u32, kind: Kind) -> Member {
        Member {
            name: name.as_bytes().to_vec(),
            mode,
            owner: 0,
            mtime: 1,
            kind,
        }
    }

    #[test]
    fn output_is_gnu_tars_byte_for_byte_with_long_names_and_targets() {
        let long_dir = "share/".to_string() + &"d".repeat(120);
        let long_target = "/nix/store/".to_string() + &"t".repeat(150);
        let exactly_100 = "x".repeat(100);
        let mut members = vec![
            member("bin", 0o755, Kind::Directory),
            member(
                "bin/hello",
                0o777,
                Kind::Symlink(b"/nix/store/aaaa-hello/bin/hello".to_vec()),
            ),
            member("bin/long", 0o777, Kind::Symlink(long_target.into_bytes())),
            member(
                "bin/exactly",
                0o777,
                Kind::Symlink(exactly_100.clone().into_bytes()),
            ),
            member("etc", 0o755, Kind::Directory),
            member(
                "etc/passwd",
                0o644,
                Kind::File(b"root:x:0:0::/root:/bin/sh\n".to_vec()),
            ),
            member("etc/big", 0o644, Kind::File(vec![7u8; 3000])),
            member("share", 0o755, Kind::Directory),
            member(&long_dir, 0o755, Kind::Directory),
            member(
                &format!("share/{exactly_100}"),
                0o777,
                Kind::Symlink(b"a".to_vec()),
            ),
            member("tmp", 0o1777, Kind::Directory),
            member("root", 0o700, Kind::Directory),
        ];
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let dir = tempfile::tempdir().unwrap();
        assert_same(&write(&members), &gnu_tar(&members, dir.path()));
    }

    /// Equal bytes, or a panic naming the first differing offset and the
    /// 512-byte blocks around it.
    pub(crate) fn assert_same(ours: &[u8], theirs: &[u8]) {
        if let Some(at) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
            let block = at / BLOCK * BLOCK;
            let show = |b: &[u8]| {
                String::from_utf8_lossy(&b[block..(block + BLOCK).min(b.len())]).replace('\0', ".")
            };
            panic!(
                "first difference at byte {at} (offset {} in its block)\nours:   {}\ntheirs: {}",
                at - block,
                show(ours),
                show(theirs)
            );
        }
        assert_eq!(ours.len(), theirs.len(), "same bytes, different lengths");
    }

    #[test]
    fn an_empty_archive_is_one_zero_record() {
        assert_eq!(write(&[]), vec![0u8; RECORD]);
    }
}
