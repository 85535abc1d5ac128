//! Safe unpacking of OCI image layers into directories that become overlayfs lower dirs.
//!
//! [`decompress`] turns a (possibly gzip- or zstd-compressed) layer blob into a tar stream;
//! [`unpack_layer`] extracts that stream into an empty directory, converting OCI whiteouts
//! into overlayfs whiteouts so the directories of an image's layers can be stacked directly
//! as `lowerdir=` of an overlay mount (each layer is unpacked on its own, into its own empty
//! directory, like Docker's overlay2 driver does).
//!
//! # Threat model
//!
//! Layers come from registries and image archives: the tar stream is hostile input. The
//! invariant kept here is that **nothing outside `dest` is ever created, written, removed,
//! chowned, chmodded, timestamped or linked to**, whatever the archive contains.
//!
//! * `dest` is opened once; every later operation is relative to a directory fd. An entry's
//!   parent directory is opened with `openat2(root_fd, parent, RESOLVE_IN_ROOT |
//!   RESOLVE_NO_MAGICLINKS)`: the kernel resolves the path as if `dest` were `/` (absolute
//!   symlinks and `..` are clamped at `dest`, `/proc` magic links are refused). The final
//!   component is then created with an `*at` call on that parent fd and never followed:
//!   files with `O_CREAT | O_EXCL | O_NOFOLLOW`, and `mkdirat`, `symlinkat`, `linkat`
//!   (without `AT_SYMLINK_FOLLOW`), `mknodat`; ownership, modes, times and xattrs are set
//!   through an fd of the new object or with `AT_SYMLINK_NOFOLLOW` / `lsetxattr`.
//! * Entry names have a leading `/` and `./` stripped (tar semantics: absolute names are
//!   relative to the root); a name that still has a `..`, an empty or a NUL component is
//!   refused as [`UnpackError::Hostile`]. Docker treats such escapes as a breakout error too.
//! * **Symlink targets are stored verbatim**, including absolute ones and ones that point
//!   "outside" (`l -> ../../../../etc`). A stored link is harmless: it is only ever resolved
//!   by later entries of this unpack, which resolve IN_ROOT (so `l/pwned` lands in
//!   `dest/etc/pwned`), and by the container, which sees it inside its own root. Refusing
//!   such links would break ordinary images (`/bin/sh -> /bin/busybox`).
//! * Hard-link targets are normalised lexically (a `..` that would climb above the root is
//!   hostile), resolved IN_ROOT as well, must already exist in this layer and must not be a
//!   directory. `linkat` never follows a symlink target, so a link to a symlink links the
//!   symlink itself.
//! * Removal (an entry replacing an earlier one, a whiteout of an earlier entry) works on
//!   directory fds opened with `O_NOFOLLOW` and never follows symlinks; a directory tree is
//!   removed iteratively with a constant number of open fds.
//! * xattrs named `trusted.overlay.*` / `user.overlay.*` in the archive are dropped with a
//!   warning: they would steer overlayfs (redirects, metacopy) and the only legitimate way
//!   for a layer to make a directory opaque is the `.wh..wh..opq` marker.
//!
//! # Semantics
//!
//! * Whiteouts: `dir/.wh.name` removes `dir/name` if an earlier entry of this layer made it
//!   and creates a character device 0:0 `dir/name` (the overlayfs whiteout);
//!   `dir/.wh..wh..opq` sets `trusted.overlay.opaque=y` on `dir` (creating it if missing);
//!   other `.wh..wh.*` names are aufs metadata and are ignored.
//! * A later entry replaces an earlier one at the same path, except that a directory entry
//!   for an existing directory keeps its contents and only updates its metadata.
//! * Ownership is numeric (user/group names are ignored); modes keep setuid/setgid/sticky
//!   (applied after chown, which clears them); atime is set to mtime; directory times are
//!   applied after all entries, as GNU tar does. PAX `uid`, `gid`, `mtime` (with fractions)
//!   and `SCHILY.xattr.*` records are honoured; failures to set `security.*` xattrs with
//!   EPERM/ENOTSUP are logged and skipped, any other xattr failure is an error.
//! * Hard links get no metadata of their own: they share the target's inode, which already
//!   has the metadata of the target's entry (GNU tar does the same).
//! * Missing parent directories are created `0755 root:root`.
//! * GNU sparse files (type `S`) are supported; all-zero 4 KiB runs of any regular file are
//!   written as holes, so a sparse "zero bomb" does not fill the disk. PAX-format sparse
//!   files (`GNU.sparse.*` records) are refused with [`UnsupportedReason::PaxSparse`].
//! * After the end-of-archive marker the rest of the stream is read and discarded, so a
//!   digest-verifying reader or the gzip trailer check wrapped around `tar` sees every byte.
//! * Requires Linux ≥ 5.6 (`openat2`) and a mounted `/proc` (used only to chmod device
//!   nodes and fifos and to set xattrs on symlinks, devices and fifos without following).
//!
//! On any error the function returns it and leaves `dest` half-written: **the caller must
//! delete `dest`**. No fd stays open after return.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{
    self as rfs, AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps,
    XattrFlags,
};
use rustix::io::Errno;

/// Statistics of one unpacked layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Archive members applied (files, dirs, links, devices, whiteouts…; not PAX/GNU
    /// extension headers).
    pub entries: u64,
    /// Sum of the sizes of the regular files written.
    pub bytes: u64,
}

/// Why an entry was refused as hostile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostileReason {
    /// The name has a `..` component.
    #[error("path has a `..` component")]
    DotDot,
    /// The name has an empty component (`a//b`).
    #[error("path has an empty component")]
    EmptyComponent,
    /// The name contains a NUL byte.
    #[error("path contains a NUL byte")]
    Nul,
    /// A non-directory entry names the layer root itself.
    #[error("entry would replace the layer root")]
    RootEntry,
    /// A hard link's target climbs above the layer root.
    #[error("hard link target escapes the layer root")]
    LinkTargetEscapes,
    /// A hard link's target does not exist in this layer.
    #[error("hard link target {target:?} does not exist in this layer")]
    LinkTargetMissing {
        /// The target as written in the archive.
        target: String,
    },
    /// A hard link points at a directory.
    #[error("hard link target {target:?} is a directory")]
    LinkToDirectory {
        /// The target as written in the archive.
        target: String,
    },
    /// A hard link points at itself.
    #[error("hard link points at itself")]
    LinkToSelf,
    /// A whiteout's name is empty, `.` or `..`.
    #[error("whiteout names {name:?}")]
    WhiteoutName {
        /// The whited-out name.
        name: String,
    },
}

/// Why a well-formed entry is not supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsupportedReason {
    /// Entry type byte we do not extract (volume labels, multi-volume parts, vendor types,
    /// extension headers in a pre-POSIX header).
    #[error("entry type {0:?}")]
    EntryType(char),
    /// PAX-format sparse file (`GNU.sparse.*` records).
    #[error("PAX sparse files (GNU.sparse.* records) are not supported")]
    PaxSparse,
    /// uid or gid above `u32::MAX`.
    #[error("owner id {0} is out of range")]
    IdOutOfRange(u64),
    /// A PAX numeric record that does not parse.
    #[error("malformed PAX record {key}={value:?}")]
    BadPaxRecord {
        /// The record key.
        key: String,
        /// The record value, lossily decoded.
        value: String,
    },
    /// A symlink or hard link entry without a target.
    #[error("link entry without a target")]
    MissingLinkTarget,
}

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// zstd (possibly several frames).
    Zstd,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

/// Errors of layer decompression and unpacking.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// `dest` could not be opened as a directory.
    #[error("cannot open layer destination {path}: {source}")]
    OpenDest {
        /// The destination.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// `dest` is not empty.
    #[error("layer destination {path} is not empty")]
    DestNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// The archive stream itself is unreadable (I/O, decompression, malformed header).
    #[error("cannot read layer archive: {source}")]
    Read {
        /// The cause.
        source: io::Error,
    },
    /// An entry's data or extension records are unreadable.
    #[error("cannot read layer entry {entry:?}: {source}")]
    ReadEntry {
        /// Entry name as in the archive.
        entry: String,
        /// The cause.
        source: io::Error,
    },
    /// The entry tries to escape `dest` or is otherwise malicious.
    #[error("refusing hostile layer entry {entry:?}: {reason}")]
    Hostile {
        /// Entry name as in the archive.
        entry: String,
        /// Why it was refused.
        reason: HostileReason,
    },
    /// The entry is well-formed but of a kind not extracted.
    #[error("unsupported layer entry {entry:?}: {reason}")]
    Unsupported {
        /// Entry name as in the archive.
        entry: String,
        /// What is unsupported.
        reason: UnsupportedReason,
    },
    /// A filesystem operation for an entry failed.
    #[error("cannot {op} for layer entry {entry:?}: {source}")]
    Fs {
        /// Entry name as in the archive.
        entry: String,
        /// The operation, e.g. "create regular file".
        op: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// Setting an extended attribute failed.
    #[error("cannot set xattr {name:?} on layer entry {entry:?}: {source}")]
    Xattr {
        /// Entry name as in the archive.
        entry: String,
        /// The xattr name.
        name: String,
        /// The cause.
        source: io::Error,
    },
    /// The media type names a compression the content does not have.
    #[error("layer media type {media_type:?} says {expected} but the content is {found}")]
    CompressionMismatch {
        /// The media type.
        media_type: String,
        /// What the media type says.
        expected: Compression,
        /// What the magic bytes say.
        found: &'static str,
    },
    /// A compression (or encryption) we do not decode.
    #[error("layer of media type {media_type:?} uses unsupported {what}")]
    UnsupportedCompression {
        /// The media type.
        media_type: String,
        /// What was found, e.g. "xz compression".
        what: &'static str,
    },
    /// The decompressor could not be set up.
    #[error("cannot start {codec} decompression of layer: {source}")]
    Decompress {
        /// The codec.
        codec: Compression,
        /// The cause.
        source: io::Error,
    },
}

// ---------------------------------------------------------------------------------------
// Decompression
// ---------------------------------------------------------------------------------------

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const BZIP2_MAGIC: &[u8] = b"BZh";

/// What a media type says about compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    /// Explicitly a codec we decode.
    Codec(Compression),
    /// Explicitly a plain tar (`…layer.v1.tar`, `…diff.tar`).
    PlainTar,
    /// Says nothing usable (empty, unknown): sniff.
    Unknown,
}

fn declared_compression(media_type: &str) -> Result<Declared, UnpackError> {
    let mt = media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let unsupported = |what| UnpackError::UnsupportedCompression {
        media_type: media_type.to_owned(),
        what,
    };
    if mt.contains("+encrypted") {
        return Err(unsupported("encryption"));
    }
    if mt.ends_with("+gzip") || mt.ends_with(".gzip") || mt.ends_with(".gz") {
        Ok(Declared::Codec(Compression::Gzip))
    } else if mt.ends_with("+zstd") || mt.ends_with(".zstd") {
        Ok(Declared::Codec(Compression::Zstd))
    } else if mt.ends_with("+xz") || mt.ends_with(".xz") {
        Err(unsupported("xz compression"))
    } else if mt.ends_with("+bzip2") || mt.ends_with(".bzip2") {
        Err(unsupported("bzip2 compression"))
    } else if mt.ends_with(".tar") || mt.ends_with("+tar") {
        Ok(Declared::PlainTar)
    } else {
        Ok(Declared::Unknown)
    }
}

fn sniff(head: &[u8]) -> &'static str {
    if head.starts_with(GZIP_MAGIC) {
        "gzip"
    } else if head.starts_with(ZSTD_MAGIC) {
        "zstd"
    } else if head.starts_with(XZ_MAGIC) {
        "xz"
    } else if head.starts_with(BZIP2_MAGIC) {
        "bzip2"
    } else {
        "not compressed"
    }
}

/// Picks the codec for a stream from its media type and first bytes.
///
/// A media type naming gzip or zstd is trusted and checked against the magic bytes; a
/// plain-tar media type still gets gzip/zstd sniffed (mislabelled blobs exist, and a tar
/// cannot start with those bytes in practice); anything else is sniffed, refusing xz/bzip2.
pub fn detect_compression(media_type: &str, head: &[u8]) -> Result<Compression, UnpackError> {
    let found = sniff(head);
    match declared_compression(media_type)? {
        Declared::Codec(expected) => {
            let ok = match expected {
                Compression::Gzip => found == "gzip",
                Compression::Zstd => found == "zstd",
                Compression::None => true,
            };
            if ok {
                Ok(expected)
            } else {
                Err(UnpackError::CompressionMismatch {
                    media_type: media_type.to_owned(),
                    expected,
                    found,
                })
            }
        }
        declared => match found {
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "xz" if declared == Declared::Unknown => Err(UnpackError::UnsupportedCompression {
                media_type: media_type.to_owned(),
                what: "xz compression",
            }),
            "bzip2" if declared == Declared::Unknown => Err(UnpackError::UnsupportedCompression {
                media_type: media_type.to_owned(),
                what: "bzip2 compression",
            }),
            _ => Ok(Compression::None),
        },
    }
}

/// Wraps a possibly-compressed layer stream: gzip / zstd / plain, detected from the media
/// type when it says so (docker's `…tar.gzip`, OCI `+gzip`, `+zstd`), else by magic bytes.
/// A media type naming a codec the content does not start with is an error.
pub fn decompress<'a, R: Read + 'a>(
    media_type: &str,
    mut r: R,
) -> Result<Box<dyn Read + 'a>, UnpackError> {
    let mut head = [0u8; 6];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(UnpackError::Read { source }),
        }
    }
    let codec = detect_compression(media_type, &head[..n])?;
    let stream = io::Cursor::new(head[..n].to_vec()).chain(r);
    tracing::debug!(media_type, %codec, "layer compression");
    Ok(match codec {
        Compression::None => Box::new(stream),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(stream)
                .map_err(|source| UnpackError::Decompress { codec, source })?,
        ),
    })
}

// ---------------------------------------------------------------------------------------
// Name handling (pure)
// ---------------------------------------------------------------------------------------

/// Strips the leading `/` and `./` and trailing `/` of a tar name.
fn trim_name(mut s: &[u8]) -> &[u8] {
    loop {
        if let Some(rest) = s.strip_prefix(b"/") {
            s = rest;
        } else if let Some(rest) = s.strip_prefix(b"./") {
            s = rest;
        } else {
            break;
        }
    }
    while let Some(rest) = s.strip_suffix(b"/") {
        s = rest;
    }
    if s == b"." { b"" } else { s }
}

/// Splits an entry name into its components relative to the layer root.
///
/// Leading `/` and `./` and trailing `/` are dropped and inner `.` components skipped; an
/// empty result is the root itself. `..`, empty inner components and NUL are hostile.
pub fn normalize_entry_name(raw: &[u8]) -> Result<Vec<&[u8]>, HostileReason> {
    if raw.contains(&0) {
        return Err(HostileReason::Nul);
    }
    let s = trim_name(raw);
    let mut out = Vec::new();
    if s.is_empty() {
        return Ok(out);
    }
    for c in s.split(|b| *b == b'/') {
        match c {
            b"" => return Err(HostileReason::EmptyComponent),
            b".." => return Err(HostileReason::DotDot),
            b"." => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Normalises a hard link target like an entry name, except that `..` is applied
/// lexically (as Docker does); climbing above the root is hostile.
pub fn normalize_link_target(raw: &[u8]) -> Result<Vec<&[u8]>, HostileReason> {
    if raw.contains(&0) {
        return Err(HostileReason::Nul);
    }
    let s = trim_name(raw);
    let mut out: Vec<&[u8]> = Vec::new();
    if s.is_empty() {
        return Ok(out);
    }
    for c in s.split(|b| *b == b'/') {
        match c {
            b"" => return Err(HostileReason::EmptyComponent),
            b".." => {
                if out.pop().is_none() {
                    return Err(HostileReason::LinkTargetEscapes);
                }
            }
            b"." => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

/// What an entry's base name means for overlayfs.
#[derive(Debug, PartialEq, Eq)]
enum Whiteout<'a> {
    /// Not a whiteout.
    No,
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// `.wh.NAME`: NAME is deleted.
    Name(&'a [u8]),
    /// Other `.wh..wh.*`: aufs metadata, ignored.
    AufsMeta,
}

fn classify_whiteout(base: &[u8]) -> Whiteout<'_> {
    if base == b".wh..wh..opq" {
        Whiteout::Opaque
    } else if base.starts_with(b".wh..wh.") {
        Whiteout::AufsMeta
    } else if let Some(name) = base.strip_prefix(b".wh.") {
        Whiteout::Name(name)
    } else {
        Whiteout::No
    }
}

/// Parses a PAX time (`sec[.frac]`, possibly negative) into a timespec.
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        nanos += i64::from(d - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(if !neg {
        Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        }
    } else if nanos == 0 {
        Timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        }
    } else {
        Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        }
    })
}

fn parse_pax_id(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

// ---------------------------------------------------------------------------------------
// Unpacking
// ---------------------------------------------------------------------------------------

fn shown(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

fn fs_err(entry: &str, op: &'static str, e: impl Into<io::Error>) -> UnpackError {
    UnpackError::Fs {
        entry: entry.to_owned(),
        op,
        source: e.into(),
    }
}

fn hostile(entry: &str, reason: HostileReason) -> UnpackError {
    UnpackError::Hostile {
        entry: entry.to_owned(),
        reason,
    }
}

fn unsupported(entry: &str, reason: UnsupportedReason) -> UnpackError {
    UnpackError::Unsupported {
        entry: entry.to_owned(),
        reason,
    }
}

/// Metadata of one entry, from its header and PAX records.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta, UnpackError> {
        let read_err = |source| UnpackError::ReadEntry {
            entry: name.to_owned(),
            source,
        };
        let h = entry.header();
        let mode = h.mode().map_err(read_err)? & 0o7777;
        let mut uid = h.uid().map_err(read_err)?;
        let mut gid = h.gid().map_err(read_err)?;
        let mtime = h.mtime().map_err(read_err)?;
        let mut mtime = Timespec {
            tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
            tv_nsec: 0,
        };
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(read_err)? {
            for ext in exts {
                let ext = ext.map_err(read_err)?;
                let (key, value) = (ext.key_bytes(), ext.value_bytes());
                let bad = || {
                    unsupported(
                        name,
                        UnsupportedReason::BadPaxRecord {
                            key: shown(key),
                            value: shown(value),
                        },
                    )
                };
                if let Some(xname) = key.strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((xname.to_vec(), value.to_vec()));
                } else if key.starts_with(b"GNU.sparse.") {
                    return Err(unsupported(name, UnsupportedReason::PaxSparse));
                } else if key == b"mtime" {
                    mtime = parse_pax_time(value).ok_or_else(bad)?;
                } else if key == b"uid" {
                    uid = parse_pax_id(value).ok_or_else(bad)?;
                } else if key == b"gid" {
                    gid = parse_pax_id(value).ok_or_else(bad)?;
                }
            }
        }
        let id = |v: u64| {
            u32::try_from(v).map_err(|_| unsupported(name, UnsupportedReason::IdOutOfRange(v)))
        };
        Ok(Meta {
            uid: id(uid)?,
            gid: id(gid)?,
            mode,
            mtime,
            xattrs,
        })
    }

    fn times(&self) -> Timestamps {
        Timestamps {
            last_access: self.mtime,
            last_modification: self.mtime,
        }
    }

    fn owner(&self) -> (Option<rfs::Uid>, Option<rfs::Gid>) {
        (
            Some(rfs::Uid::from_raw(self.uid)),
            Some(rfs::Gid::from_raw(self.gid)),
        )
    }
}

/// What an entry creates.
enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
    HardLink(Vec<u8>),
    Device(FileType, rfs::Dev),
    Fifo,
}

/// A directory whose times are applied at the end.
struct PendingDir {
    path: Vec<u8>,
    dev: u64,
    ino: u64,
    times: Timestamps,
}

struct Unpacker {
    root: Rc<OwnedFd>,
    /// The last resolved directory: (path relative to root, fd).
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    dirs: Vec<PendingDir>,
    stats: UnpackStats,
}

const DIR_OPEN: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

/// Opens `path` (relative, non-empty) as a directory resolved as if `root` were `/`.
fn open_in_root(root: BorrowedFd<'_>, path: &[u8]) -> Result<OwnedFd, Errno> {
    let mut tries = 0;
    loop {
        match rfs::openat2(
            root,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            // EAGAIN: a concurrent rename/mount elsewhere on the system raced the lookup.
            Err(Errno::AGAIN | Errno::INTR) if tries < 16 => tries += 1,
            r => return r,
        }
    }
}

fn is_dir(st: &rfs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// Unlinks every non-directory in `dir` and returns the names of its subdirectories.
fn clear_files(dir: &OwnedFd) -> Result<Vec<Vec<u8>>, Errno> {
    let mut subdirs = Vec::new();
    let mut files = Vec::new();
    let mut it = Dir::read_from(dir)?;
    while let Some(e) = it.read() {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let dir_child = match e.file_type() {
            FileType::Directory => true,
            FileType::Unknown => is_dir(&rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?),
            _ => false,
        };
        if dir_child {
            subdirs.push(name.to_vec());
        } else {
            files.push(name.to_vec());
        }
    }
    drop(it);
    for f in files {
        rfs::unlinkat(dir, f.as_slice(), AtFlags::empty())?;
    }
    Ok(subdirs)
}

/// Removes the directory tree `parent/name` without following symlinks, iteratively and
/// holding a constant number of fds (deep trees cannot exhaust the fd table or stack).
fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    struct Level {
        name: Vec<u8>,
        subdirs: Vec<Vec<u8>>,
    }
    let mut cur = rfs::openat(parent, name, DIR_OPEN, Mode::empty())?;
    let mut stack = vec![Level {
        name: name.to_vec(),
        subdirs: clear_files(&cur)?,
    }];
    while let Some(top) = stack.last_mut() {
        if let Some(sub) = top.subdirs.pop() {
            let fd = rfs::openat(&cur, sub.as_slice(), DIR_OPEN, Mode::empty())?;
            let subdirs = clear_files(&fd)?;
            cur = fd;
            stack.push(Level { name: sub, subdirs });
        } else {
            let done_name = std::mem::take(&mut top.name);
            stack.pop();
            if stack.is_empty() {
                rfs::unlinkat(parent, done_name.as_slice(), AtFlags::REMOVEDIR)?;
            } else {
                // `cur` was reached from its parent with O_NOFOLLOW, so its `..` is that
                // parent (nothing else modifies the tree while we unpack).
                let up = rfs::openat(&cur, "..", DIR_OPEN, Mode::empty())?;
                rfs::unlinkat(&up, done_name.as_slice(), AtFlags::REMOVEDIR)?;
                cur = up;
            }
        }
    }
    Ok(())
}

/// `/proc/self/fd/N[/name]`: a path that reaches an fd we hold without any lookup in
/// attacker-controlled directories (the magic link is an intermediate component).
fn proc_fd_path(fd: BorrowedFd<'_>, name: Option<&[u8]>) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let mut p = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
    if let Some(name) = name {
        p.push(b'/');
        p.extend_from_slice(name);
    }
    p
}

impl Unpacker {
    fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Opens the directory `comps` (relative to the root, resolved IN_ROOT), creating
    /// missing directories (0755) when `create`. Errors are raw for the caller to map.
    fn resolve(&mut self, comps: &[&[u8]], create: bool) -> Result<Rc<OwnedFd>, ResolveError> {
        if comps.is_empty() {
            return Ok(self.root.clone());
        }
        let key = comps.join(&b'/');
        if let Some((k, fd)) = &self.cache
            && *k == key
        {
            return Ok(fd.clone());
        }
        let fd = match open_in_root(self.root(), &key) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => self.create_dirs(comps)?,
            Err(e) => return Err(ResolveError::Errno("open parent directory", e)),
        };
        let fd = Rc::new(fd);
        self.cache = Some((key, fd.clone()));
        Ok(fd)
    }

    /// Slow path of [`Self::resolve`]: walks the prefixes, creating the missing ones.
    fn create_dirs(&self, comps: &[&[u8]]) -> Result<OwnedFd, ResolveError> {
        let mut cur: Option<OwnedFd> = None;
        for i in 0..comps.len() {
            let prefix = comps[..=i].join(&b'/');
            match open_in_root(self.root(), &prefix) {
                Ok(fd) => {
                    cur = Some(fd);
                    continue;
                }
                Err(Errno::NOENT) => {}
                Err(e) => return Err(ResolveError::Errno("open parent directory", e)),
            }
            let parent = cur.as_ref().map_or(self.root(), |f| f.as_fd());
            match rfs::mkdirat(parent, comps[i], Mode::from_raw_mode(0o755)) {
                Ok(()) => {}
                // The prefix did not resolve but the name exists: a dangling symlink.
                Err(Errno::EXIST) => return Err(ResolveError::DanglingSymlink),
                Err(e) => return Err(ResolveError::Errno("create parent directory", e)),
            }
            let fd = rfs::openat(parent, comps[i], DIR_OPEN, Mode::empty())
                .map_err(|e| ResolveError::Errno("open parent directory", e))?;
            // mkdirat honours the umask; make it exactly 0755.
            rfs::fchmod(&fd, Mode::from_raw_mode(0o755))
                .map_err(|e| ResolveError::Errno("chmod parent directory", e))?;
            cur = Some(fd);
        }
        cur.ok_or(ResolveError::Errno("open parent directory", Errno::NOENT))
    }

    /// Removes whatever is at `parent/name` (a directory tree too) unless it is a
    /// directory and `keep_dir`. Returns whether a directory was kept.
    fn clear_name(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        keep_dir: bool,
        entry: &str,
    ) -> Result<bool, UnpackError> {
        let st = match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(fs_err(entry, "inspect existing path", e)),
        };
        if is_dir(&st) {
            if keep_dir {
                return Ok(true);
            }
            // Cached directory fds may point into the removed tree.
            self.cache = None;
            remove_tree(parent, name).map_err(|e| fs_err(entry, "remove existing directory", e))?;
        } else {
            self.cache = None;
            rfs::unlinkat(parent, name, AtFlags::empty())
                .map_err(|e| fs_err(entry, "remove existing file", e))?;
        }
        Ok(false)
    }

    /// Runs `op` to create `parent/name`; if something is in the way, clears it and
    /// retries once. Returns `None` when an existing directory was kept (`keep_dir`).
    fn create<T>(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        keep_dir: bool,
        entry: &str,
        what: &'static str,
        mut op: impl FnMut() -> Result<T, Errno>,
    ) -> Result<Option<T>, UnpackError> {
        match op() {
            Ok(v) => return Ok(Some(v)),
            Err(Errno::EXIST) => {}
            Err(e) => return Err(fs_err(entry, what, e)),
        }
        if self.clear_name(parent, name, keep_dir, entry)? {
            return Ok(None);
        }
        op().map(Some).map_err(|e| fs_err(entry, what, e))
    }

    fn resolve_parent(&mut self, comps: &[&[u8]], entry: &str) -> Result<Rc<OwnedFd>, UnpackError> {
        self.resolve(comps, true).map_err(|e| e.into_unpack(entry))
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_name = entry.path_bytes().into_owned();
        let name = shown(&raw_name);
        let header = entry.header();
        let typeflag = header.as_bytes()[156];
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let need_link = |link: Option<Vec<u8>>| {
            link.filter(|l| !l.is_empty())
                .ok_or_else(|| unsupported(&name, UnsupportedReason::MissingLinkTarget))
        };
        let kind = match header.entry_type() {
            tar::EntryType::XGlobalHeader => return Ok(()),
            // Pre-POSIX archives mark directories by a trailing slash on a regular entry.
            tar::EntryType::Regular if typeflag == 0 && raw_name.ends_with(b"/") => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                Kind::File
            }
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink(need_link(link)?),
            tar::EntryType::Link => Kind::HardLink(need_link(link)?),
            t @ (tar::EntryType::Char | tar::EntryType::Block) => {
                let read_err = |source| UnpackError::ReadEntry {
                    entry: name.clone(),
                    source,
                };
                let major = header.device_major().map_err(read_err)?.unwrap_or(0);
                let minor = header.device_minor().map_err(read_err)?.unwrap_or(0);
                let ft = if t == tar::EntryType::Char {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                Kind::Device(ft, rfs::makedev(major, minor))
            }
            tar::EntryType::Fifo => Kind::Fifo,
            _ => {
                return Err(unsupported(
                    &name,
                    UnsupportedReason::EntryType(char::from(typeflag)),
                ));
            }
        };
        self.stats.entries += 1;
        let meta = Meta::read(&mut entry, &name)?;
        let comps = normalize_entry_name(&raw_name).map_err(|r| hostile(&name, r))?;
        let Some((&base, parent_comps)) = comps.split_last() else {
            return match kind {
                Kind::Dir => {
                    tracing::debug!(entry = %name, "ignoring layer root entry");
                    Ok(())
                }
                _ => Err(hostile(&name, HostileReason::RootEntry)),
            };
        };

        match classify_whiteout(base) {
            Whiteout::No => {}
            Whiteout::AufsMeta => {
                tracing::debug!(entry = %name, "ignoring aufs metadata entry");
                return Ok(());
            }
            Whiteout::Opaque => {
                let dir = self.resolve_parent(parent_comps, &name)?;
                return rfs::fsetxattr(&*dir, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                    .map_err(|e| UnpackError::Xattr {
                        entry: name.clone(),
                        name: "trusted.overlay.opaque".to_owned(),
                        source: e.into(),
                    });
            }
            Whiteout::Name(target) => {
                if target.is_empty() || target == b"." || target == b".." {
                    let name_shown = shown(target);
                    return Err(hostile(
                        &name,
                        HostileReason::WhiteoutName { name: name_shown },
                    ));
                }
                let parent = self.resolve_parent(parent_comps, &name)?;
                let p = parent.as_fd();
                self.create(p, target, false, &name, "create whiteout", || {
                    rfs::mknodat(p, target, FileType::CharacterDevice, Mode::empty(), 0)
                })?;
                return Ok(());
            }
        }

        let parent = self.resolve_parent(parent_comps, &name)?;
        let p = parent.as_fd();
        match kind {
            Kind::File => self.file(p, base, &meta, &mut entry, &name),
            Kind::Dir => self.dir(p, &comps, &meta, &name),
            Kind::Symlink(target) => {
                self.create(p, base, false, &name, "create symlink", || {
                    rfs::symlinkat(target.as_slice(), p, base)
                })?;
                self.special_meta(p, base, &meta, &name, false)
            }
            Kind::HardLink(target) => self.hard_link(p, base, &comps, &target, &name),
            Kind::Device(ft, dev) => {
                self.create(p, base, false, &name, "create device node", || {
                    rfs::mknodat(p, base, ft, Mode::from_raw_mode(meta.mode), dev)
                })?;
                self.special_meta(p, base, &meta, &name, true)
            }
            Kind::Fifo => {
                self.create(p, base, false, &name, "create fifo", || {
                    rfs::mknodat(p, base, FileType::Fifo, Mode::from_raw_mode(meta.mode), 0)
                })?;
                self.special_meta(p, base, &meta, &name, true)
            }
        }
    }

    fn file<R: Read>(
        &mut self,
        p: BorrowedFd<'_>,
        base: &[u8],
        meta: &Meta,
        data: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<(), UnpackError> {
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC
            | OFlags::NOCTTY;
        let Some(fd) = self.create(p, base, false, name, "create regular file", || {
            rfs::openat(p, base, flags, Mode::from_raw_mode(0o600))
        })?
        else {
            // keep_dir was false: an existing entry is always cleared, never kept.
            return Ok(());
        };
        let mut file = File::from(fd);
        let expected = data.size();
        let written = copy_data(data, &mut file, name)?;
        if written != expected {
            return Err(UnpackError::ReadEntry {
                entry: name.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("archive ended after {written} of {expected} bytes"),
                ),
            });
        }
        self.stats.bytes += written;
        let (uid, gid) = meta.owner();
        rfs::fchown(&file, uid, gid).map_err(|e| fs_err(name, "chown regular file", e))?;
        set_xattrs(meta, name, |k, v| {
            rfs::fsetxattr(&file, k, v, XattrFlags::empty())
        })?;
        // After chown: chown clears setuid/setgid.
        rfs::fchmod(&file, Mode::from_raw_mode(meta.mode))
            .map_err(|e| fs_err(name, "chmod regular file", e))?;
        rfs::futimens(&file, &meta.times())
            .map_err(|e| fs_err(name, "set times of regular file", e))
    }

    fn dir(
        &mut self,
        p: BorrowedFd<'_>,
        comps: &[&[u8]],
        meta: &Meta,
        name: &str,
    ) -> Result<(), UnpackError> {
        let Some((&base, _)) = comps.split_last() else {
            return Ok(());
        };
        self.create(p, base, true, name, "create directory", || {
            rfs::mkdirat(p, base, Mode::from_raw_mode(0o700))
        })?;
        let fd = rfs::openat(p, base, DIR_OPEN, Mode::empty())
            .map_err(|e| fs_err(name, "open directory", e))?;
        let (uid, gid) = meta.owner();
        rfs::fchown(&fd, uid, gid).map_err(|e| fs_err(name, "chown directory", e))?;
        set_xattrs(meta, name, |k, v| {
            rfs::fsetxattr(&fd, k, v, XattrFlags::empty())
        })?;
        rfs::fchmod(&fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| fs_err(name, "chmod directory", e))?;
        let st = rfs::fstat(&fd).map_err(|e| fs_err(name, "stat directory", e))?;
        self.dirs.push(PendingDir {
            path: comps.join(&b'/'),
            dev: st.st_dev,
            ino: st.st_ino,
            times: meta.times(),
        });
        Ok(())
    }

    fn hard_link(
        &mut self,
        p: BorrowedFd<'_>,
        base: &[u8],
        comps: &[&[u8]],
        target_raw: &[u8],
        name: &str,
    ) -> Result<(), UnpackError> {
        let target_shown = shown(target_raw);
        let tcomps = normalize_link_target(target_raw).map_err(|r| hostile(name, r))?;
        let Some((&tbase, tparent_comps)) = tcomps.split_last() else {
            return Err(hostile(
                name,
                HostileReason::LinkToDirectory {
                    target: target_shown,
                },
            ));
        };
        if tcomps == comps {
            return Err(hostile(name, HostileReason::LinkToSelf));
        }
        let missing = || {
            hostile(
                name,
                HostileReason::LinkTargetMissing {
                    target: target_shown.clone(),
                },
            )
        };
        let tparent = match self.resolve(tparent_comps, false) {
            Ok(fd) => fd,
            Err(ResolveError::Errno(_, Errno::NOENT | Errno::NOTDIR)) => return Err(missing()),
            Err(e) => return Err(e.into_unpack(name)),
        };
        match rfs::statat(&*tparent, tbase, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if is_dir(&st) => {
                return Err(hostile(
                    name,
                    HostileReason::LinkToDirectory {
                        target: target_shown,
                    },
                ));
            }
            Ok(_) => {}
            Err(Errno::NOENT | Errno::NOTDIR) => return Err(missing()),
            Err(e) => return Err(fs_err(name, "inspect hard link target", e)),
        }
        let tp = tparent.as_fd();
        self.create(p, base, false, name, "create hard link", || {
            rfs::linkat(tp, tbase, p, base, AtFlags::empty())
        })?;
        Ok(())
    }

    /// Ownership, xattrs, mode and times of a symlink, device node or fifo, none of which
    /// may be opened for writing: nothing here follows a symlink.
    fn special_meta(
        &mut self,
        p: BorrowedFd<'_>,
        base: &[u8],
        meta: &Meta,
        name: &str,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        let (uid, gid) = meta.owner();
        rfs::chownat(p, base, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fs_err(name, "chown", e))?;
        if !meta.xattrs.is_empty() {
            let path = proc_fd_path(p, Some(base));
            set_xattrs(meta, name, |k, v| {
                rfs::lsetxattr(path.as_slice(), k, v, XattrFlags::empty())
            })?;
        }
        if chmod {
            // fchmodat cannot refuse to follow symlinks on older kernels and fchmod does not
            // work on O_PATH fds: chmod the O_PATH fd through its /proc magic link after
            // checking that it is not a symlink.
            let fd = rfs::openat(
                p,
                base,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| fs_err(name, "open node", e))?;
            let st = rfs::fstat(&fd).map_err(|e| fs_err(name, "stat node", e))?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                return Err(fs_err(name, "chmod node", Errno::LOOP));
            }
            rfs::chmod(
                proc_fd_path(fd.as_fd(), None).as_slice(),
                Mode::from_raw_mode(meta.mode),
            )
            .map_err(|e| fs_err(name, "chmod node", e))?;
        }
        rfs::utimensat(p, base, &meta.times(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fs_err(name, "set times", e))
    }

    /// Applies the deferred directory times (creating entries changed the mtimes).
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        let mut dirs = std::mem::take(&mut self.dirs);
        // Stable: for a directory listed twice, the later entry's times win.
        dirs.sort_by(|a, b| a.path.cmp(&b.path));
        for d in &dirs {
            let name = shown(&d.path);
            let comps: Vec<&[u8]> = d.path.split(|b| *b == b'/').collect();
            let Some((&base, parent_comps)) = comps.split_last() else {
                continue;
            };
            let parent = match self.resolve(parent_comps, false) {
                Ok(fd) => fd,
                // Removed or replaced by a later entry.
                Err(ResolveError::Errno(_, Errno::NOENT | Errno::NOTDIR)) => continue,
                Err(e) => return Err(e.into_unpack(&name)),
            };
            match rfs::statat(&*parent, base, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if is_dir(&st) && st.st_ino == d.ino && st.st_dev == d.dev => {}
                Ok(_) | Err(Errno::NOENT) => continue,
                Err(e) => return Err(fs_err(&name, "stat directory", e)),
            }
            rfs::utimensat(&*parent, base, &d.times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| fs_err(&name, "set directory times", e))?;
        }
        Ok(())
    }
}

/// Failure to resolve a directory, mapped to an [`UnpackError`] by the caller.
#[derive(Debug)]
enum ResolveError {
    Errno(&'static str, Errno),
    DanglingSymlink,
}

impl ResolveError {
    fn into_unpack(self, entry: &str) -> UnpackError {
        match self {
            ResolveError::Errno(op, e) => fs_err(entry, op, e),
            ResolveError::DanglingSymlink => fs_err(
                entry,
                "create parent directory through a dangling symlink",
                Errno::EXIST,
            ),
        }
    }
}

fn set_xattrs(
    meta: &Meta,
    entry: &str,
    mut set: impl FnMut(&[u8], &[u8]) -> Result<(), Errno>,
) -> Result<(), UnpackError> {
    for (k, v) in &meta.xattrs {
        if k.starts_with(b"trusted.overlay.") || k.starts_with(b"user.overlay.") {
            tracing::warn!(entry, xattr = %shown(k), "dropping overlayfs xattr from layer");
            continue;
        }
        match set(k, v) {
            Ok(()) => {}
            Err(e @ (Errno::PERM | Errno::NOTSUP)) if k.starts_with(b"security.") => {
                tracing::warn!(entry, xattr = %shown(k), error = %e, "cannot set security xattr, skipped");
            }
            Err(e) => {
                return Err(UnpackError::Xattr {
                    entry: entry.to_owned(),
                    name: shown(k),
                    source: e.into(),
                });
            }
        }
    }
    Ok(())
}

/// Copies an entry's data, turning 4 KiB runs of zeros into holes. Returns bytes copied.
fn copy_data(src: &mut impl Read, file: &mut File, entry: &str) -> Result<u64, UnpackError> {
    const BLOCK: usize = 4096;
    let write_err = |e| fs_err(entry, "write regular file", e);
    let mut buf = vec![0u8; 128 * 1024];
    let mut total: u64 = 0;
    let mut hole: u64 = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(UnpackError::ReadEntry {
                    entry: entry.to_owned(),
                    source,
                });
            }
        };
        for chunk in buf[..n].chunks(BLOCK) {
            if chunk.len() == BLOCK && chunk.iter().all(|b| *b == 0) {
                hole += BLOCK as u64;
            } else {
                if hole > 0 {
                    let off = i64::try_from(hole)
                        .map_err(|_| write_err(io::Error::other("hole too large")))?;
                    file.seek(SeekFrom::Current(off)).map_err(write_err)?;
                    hole = 0;
                }
                file.write_all(chunk).map_err(write_err)?;
            }
            total += chunk.len() as u64;
        }
    }
    if hole > 0 {
        file.set_len(total).map_err(write_err)?;
    }
    Ok(total)
}

fn open_dest(dest: &Path) -> Result<Rc<OwnedFd>, UnpackError> {
    let open_err = |e: Errno| UnpackError::OpenDest {
        path: dest.to_owned(),
        source: e.into(),
    };
    let fd = rfs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(open_err)?;
    let mut it = Dir::read_from(&fd).map_err(open_err)?;
    while let Some(e) = it.read() {
        let e = e.map_err(open_err)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            return Err(UnpackError::DestNotEmpty {
                path: dest.to_owned(),
            });
        }
    }
    Ok(Rc::new(fd))
}

/// Unpacks an uncompressed layer tar stream into `dest`, which must be an existing empty
/// directory. Converts OCI whiteouts into overlayfs whiteouts. Refuses hostile archives
/// (see the module docs for the guarantees).
///
/// On error `dest` is left partly written: the caller deletes it.
pub fn unpack_layer<R: Read>(tar: R, dest: &Path) -> Result<UnpackStats, UnpackError> {
    let root = open_dest(dest)?;
    let mut u = Unpacker {
        root,
        cache: None,
        dirs: Vec::new(),
        stats: UnpackStats::default(),
    };
    let mut archive = tar::Archive::new(tar);
    let entries = archive
        .entries()
        .map_err(|source| UnpackError::Read { source })?;
    for entry in entries {
        let entry = entry.map_err(|source| UnpackError::Read { source })?;
        u.entry(entry)?;
    }
    u.finish_dirs()?;
    // Read to the end so wrappers (digest check, gzip trailer CRC) see the whole stream.
    io::copy(&mut archive.into_inner(), &mut io::sink())
        .map_err(|source| UnpackError::Read { source })?;
    tracing::debug!(
        dest = %dest.display(),
        entries = u.stats.entries,
        bytes = u.stats.bytes,
        "layer unpacked"
    );
    Ok(u.stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(s: &str) -> Result<Vec<String>, HostileReason> {
        normalize_entry_name(s.as_bytes()).map(|v| {
            v.iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect()
        })
    }

    fn target(s: &str) -> Result<Vec<String>, HostileReason> {
        normalize_link_target(s.as_bytes()).map(|v| {
            v.iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect()
        })
    }

    #[test]
    fn entry_names_are_normalised() {
        assert_eq!(comps("a/b/c").unwrap(), ["a", "b", "c"]);
        assert_eq!(comps("./a/b/").unwrap(), ["a", "b"]);
        assert_eq!(comps("/etc/passwd").unwrap(), ["etc", "passwd"]);
        assert_eq!(comps("//././/x").unwrap(), ["x"]);
        assert_eq!(comps("a/./b").unwrap(), ["a", "b"]);
        assert_eq!(comps("dir///").unwrap(), ["dir"]);
        assert!(comps("./").unwrap().is_empty());
        assert!(comps(".").unwrap().is_empty());
        assert!(comps("/").unwrap().is_empty());
        assert!(comps("").unwrap().is_empty());
    }

    #[test]
    fn hostile_entry_names_are_refused() {
        assert_eq!(comps("../escape"), Err(HostileReason::DotDot));
        assert_eq!(comps("/../escape"), Err(HostileReason::DotDot));
        assert_eq!(comps("a/../../escape"), Err(HostileReason::DotDot));
        assert_eq!(comps("a/.."), Err(HostileReason::DotDot));
        assert_eq!(comps(".."), Err(HostileReason::DotDot));
        assert_eq!(comps("a//b"), Err(HostileReason::EmptyComponent));
        assert_eq!(
            normalize_entry_name(b"a\0/b").map(|v| v.len()),
            Err(HostileReason::Nul)
        );
    }

    #[test]
    fn link_targets_resolve_dotdot_lexically() {
        assert_eq!(target("a/../b").unwrap(), ["b"]);
        assert_eq!(target("/etc/passwd").unwrap(), ["etc", "passwd"]);
        assert_eq!(target("./x/./y").unwrap(), ["x", "y"]);
        assert_eq!(
            target("../../etc/passwd"),
            Err(HostileReason::LinkTargetEscapes)
        );
        assert_eq!(target("a/../../b"), Err(HostileReason::LinkTargetEscapes));
        assert_eq!(target("/../x"), Err(HostileReason::LinkTargetEscapes));
    }

    #[test]
    fn whiteouts_are_classified() {
        assert_eq!(classify_whiteout(b".wh..wh..opq"), Whiteout::Opaque);
        assert_eq!(classify_whiteout(b".wh..wh.plnk"), Whiteout::AufsMeta);
        assert_eq!(classify_whiteout(b".wh.foo"), Whiteout::Name(b"foo"));
        assert_eq!(classify_whiteout(b".wh."), Whiteout::Name(b""));
        assert_eq!(classify_whiteout(b"foo.wh.x"), Whiteout::No);
    }

    #[test]
    fn pax_times_parse() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(t("1700000000.5"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(t("1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(t("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(t("-3"), Some((-3, 0)));
        assert_eq!(t("abc"), None);
        assert_eq!(t(""), None);
        assert_eq!(t("1.2x"), None);
        assert_eq!(parse_pax_id(b"4294967296"), Some(4_294_967_296));
        assert_eq!(parse_pax_id(b"-1"), None);
    }

    #[test]
    fn compression_follows_media_type_then_magic() {
        let gz = [0x1f, 0x8b, 8, 0];
        let zs = [0x28, 0xb5, 0x2f, 0xfd];
        let plain = *b"etc/";
        let oci_gz = "application/vnd.oci.image.layer.v1.tar+gzip";
        let oci_zs = "application/vnd.oci.image.layer.v1.tar+zstd";
        let docker_gz = "application/vnd.docker.image.rootfs.diff.tar.gzip";
        let oci_tar = "application/vnd.oci.image.layer.v1.tar";
        assert_eq!(detect_compression(oci_gz, &gz).unwrap(), Compression::Gzip);
        assert_eq!(
            detect_compression(docker_gz, &gz).unwrap(),
            Compression::Gzip
        );
        assert_eq!(detect_compression(oci_zs, &zs).unwrap(), Compression::Zstd);
        assert_eq!(
            detect_compression(oci_tar, &plain).unwrap(),
            Compression::None
        );
        assert_eq!(detect_compression(oci_tar, &gz).unwrap(), Compression::Gzip);
        assert_eq!(detect_compression("", &zs).unwrap(), Compression::Zstd);
        assert_eq!(detect_compression("", &plain).unwrap(), Compression::None);
        assert!(matches!(
            detect_compression(oci_gz, &plain),
            Err(UnpackError::CompressionMismatch {
                expected: Compression::Gzip,
                ..
            })
        ));
        assert!(matches!(
            detect_compression(oci_zs, &gz),
            Err(UnpackError::CompressionMismatch { found: "gzip", .. })
        ));
        assert!(matches!(
            detect_compression("", XZ_MAGIC),
            Err(UnpackError::UnsupportedCompression { .. })
        ));
        assert!(matches!(
            detect_compression("application/vnd.oci.image.layer.v1.tar+gzip+encrypted", &gz),
            Err(UnpackError::UnsupportedCompression { .. })
        ));
    }
}
