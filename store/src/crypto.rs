//! Encryption at rest: keys, sealing, and the key file.
//!
//! Two keys, as in Swarm: the data encryption key ([`DataKey`], DEK) encrypts every value the
//! store writes to disk (and the node's TLS key); the key encryption key
//! ([`KeyEncryptionKey`], KEK) wraps the DEK in `<dir>/keys.json`. Without autolock the KEK
//! sits beside it in clear (so a restart needs nothing), with autolock it is dropped from the
//! file and only the operator holds it, as the unlock key `SWMKEY-1-…`.
//!
//! Sealing is ChaCha20-Poly1305 (ring): `sealed = 0x01 ‖ nonce (12 random bytes) ‖
//! ciphertext ‖ tag`. The leading byte is the format version. The associated data binds a
//! value to where it belongs (callers pass e.g. table and key), so sealed values cannot be
//! swapped between places.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// Prefix of unlock keys (Docker's format).
pub const UNLOCK_KEY_PREFIX: &str = "SWMKEY-1-";
/// Name of the key file in its directory.
pub const KEY_FILE: &str = "keys.json";

const SEAL_VERSION: u8 = 1;
const KEY_FILE_VERSION: u32 = 1;
const DEK_AAD: &[u8] = b"shoal/keys.json/dek";

/// Errors of key handling and sealing.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key file holds no clear KEK (autolock) and none was given.
    #[error("this node is locked: its keys are sealed with the unlock key, which was not given")]
    Locked,
    /// The given KEK does not open the DEK.
    #[error("the unlock key does not open this node's keys")]
    WrongKey,
    /// A sealed value failed authentication: corrupt, tampered with, or sealed with another
    /// key (AEAD cannot tell these apart) or for another place.
    #[error(
        "{what} cannot be opened: it is corrupt, was tampered with, or was sealed with another key"
    )]
    Corrupt { what: String },
    /// Text that is not an unlock key.
    #[error("invalid unlock key: {reason}")]
    InvalidUnlockKey { reason: &'static str },
    #[error("no key file at {path}")]
    Missing { path: PathBuf },
    #[error("{path} already exists: refusing to overwrite the keys it holds")]
    Exists { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid key file: {source}")]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} has key file format {version}, newer than this shoal understands")]
    Version { path: PathBuf, version: u32 },
    #[error("the system random number generator failed")]
    Random,
}

/// The data encryption key: encrypts every value in `state.redb` and the node's TLS key.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; 32]);

/// The key encryption key: wraps the DEK; the unlock key when autolocked.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyEncryptionKey([u8; 32]);

fn random_key() -> Result<[u8; 32], CryptoError> {
    let mut k = [0u8; 32];
    SystemRandom::new()
        .fill(&mut k)
        .map_err(|_| CryptoError::Random)?;
    Ok(k)
}

impl DataKey {
    /// A new random key.
    pub fn generate() -> Result<DataKey, CryptoError> {
        random_key().map(DataKey)
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(bytes)
    }

    /// The raw key bytes, for [`seal`] and [`open`].
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl KeyEncryptionKey {
    /// A new random key.
    pub fn generate() -> Result<KeyEncryptionKey, CryptoError> {
        random_key().map(KeyEncryptionKey)
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> KeyEncryptionKey {
        KeyEncryptionKey(bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The human-readable unlock key: `SWMKEY-1-<base64 std, no padding>`.
    pub fn to_unlock_key(&self) -> String {
        format!("{UNLOCK_KEY_PREFIX}{}", STANDARD_NO_PAD.encode(self.0))
    }

    /// Parses an unlock key as [`KeyEncryptionKey::to_unlock_key`] writes it (surrounding
    /// whitespace ignored).
    pub fn parse_unlock_key(s: &str) -> Result<KeyEncryptionKey, CryptoError> {
        let body =
            s.trim()
                .strip_prefix(UNLOCK_KEY_PREFIX)
                .ok_or(CryptoError::InvalidUnlockKey {
                    reason: "it does not start with SWMKEY-1-",
                })?;
        let bytes = STANDARD_NO_PAD
            .decode(body)
            .or_else(|_| STANDARD.decode(body))
            .map_err(|_| CryptoError::InvalidUnlockKey {
                reason: "it is not base64",
            })?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::InvalidUnlockKey {
                reason: "it does not hold 32 bytes",
            })?;
        Ok(KeyEncryptionKey(key))
    }
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyEncryptionKey(<redacted>)")
    }
}

fn aead_key(key: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is exactly what ChaCha20-Poly1305 takes: `new` only fails on a wrong
    // length, which the array type rules out.
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, key).expect("32-byte ChaCha20 key");
    LessSafeKey::new(unbound)
}

/// Encrypts and authenticates `plaintext` bound to `aad`:
/// `0x01 ‖ nonce ‖ ciphertext ‖ tag`.
pub fn seal(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    // getrandom(2) does not fail on the kernels shoal runs on (>= 3.17; it blocks until the
    // pool is seeded instead). Without randomness no nonce is safe: stopping is the only
    // correct answer, so this is one of the few places that may panic.
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("the kernel random number generator failed");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + CHACHA20_POLY1305.tag_len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(&nonce);
    let mut body = plaintext.to_vec();
    // Sealing fails only for inputs beyond 256 GiB (ChaCha20's counter): a store value is
    // far below that (redb caps values at 3 GiB).
    aead_key(key)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .expect("value too large to seal");
    out.extend_from_slice(&body);
    out
}

/// Opens what [`seal`] wrote with the same key and `aad`.
pub fn open(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let corrupt = || CryptoError::Corrupt {
        what: "sealed value".to_owned(),
    };
    if sealed.len() < 1 + NONCE_LEN + CHACHA20_POLY1305.tag_len() || sealed[0] != SEAL_VERSION {
        return Err(corrupt());
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[1..1 + NONCE_LEN]);
    let mut body = sealed[1 + NONCE_LEN..].to_vec();
    let plain_len = aead_key(key)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| corrupt())?
        .len();
    body.truncate(plain_len);
    Ok(body)
}

/// `keys.json`: the wrapped DEK, and the KEK in clear unless autolocked.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    #[serde(default)]
    v: u32,
    /// base64 of `seal(kek, dek, DEK_AAD)`.
    dek: String,
    /// base64 of the KEK; absent when autolocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kek: Option<String>,
}

/// The key file of a manager (`<dir>/keys.json`, mode 0600, replaced atomically).
#[derive(Debug)]
pub struct KeyStore;

impl KeyStore {
    fn path(dir: &Path) -> PathBuf {
        dir.join(KEY_FILE)
    }

    /// Whether `dir` holds a key file.
    pub fn exists(dir: &Path) -> bool {
        Self::path(dir).exists()
    }

    /// Creates new keys (a DEK wrapped by a new KEK, the KEK stored in clear: autolock
    /// off). Refuses to overwrite an existing key file.
    pub fn create(dir: &Path) -> Result<(DataKey, KeyEncryptionKey), CryptoError> {
        let path = Self::path(dir);
        if path.exists() {
            return Err(CryptoError::Exists { path });
        }
        fs::create_dir_all(dir).map_err(|source| CryptoError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let dek = DataKey::generate()?;
        let kek = KeyEncryptionKey::generate()?;
        Self::write(dir, &dek, &kek, true)?;
        Ok((dek, kek))
    }

    /// The DEK, unwrapped with `kek` or, if none is given, with the clear KEK of the file.
    pub fn load(dir: &Path, kek: Option<&KeyEncryptionKey>) -> Result<DataKey, CryptoError> {
        let file = Self::read(dir)?;
        let kek = match kek {
            Some(k) => k.clone(),
            None => Self::clear_kek_of(dir, &file)?.ok_or(CryptoError::Locked)?,
        };
        Self::unwrap_dek(dir, &file, &kek)
    }

    /// The KEK the file holds in clear; `None` when autolocked.
    pub fn clear_kek(dir: &Path) -> Result<Option<KeyEncryptionKey>, CryptoError> {
        let file = Self::read(dir)?;
        Self::clear_kek_of(dir, &file)
    }

    /// True when the key file exists and holds no clear KEK (autolock on). A missing or
    /// unreadable file reads as not locked: [`KeyStore::load`] then reports the problem.
    pub fn is_locked(dir: &Path) -> bool {
        matches!(Self::read(dir), Ok(f) if f.kek.is_none())
    }

    /// Autolock on: drops the clear KEK from the file (after checking `kek` opens the DEK).
    pub fn lock(dir: &Path, kek: &KeyEncryptionKey) -> Result<(), CryptoError> {
        let file = Self::read(dir)?;
        let dek = Self::unwrap_dek(dir, &file, kek)?;
        Self::write(dir, &dek, kek, false)
    }

    /// Autolock off: stores `kek` in clear again (after checking it opens the DEK).
    pub fn unlock_permanently(dir: &Path, kek: &KeyEncryptionKey) -> Result<(), CryptoError> {
        let file = Self::read(dir)?;
        let dek = Self::unwrap_dek(dir, &file, kek)?;
        Self::write(dir, &dek, kek, true)
    }

    /// Re-wraps the DEK with `new` (unlock key rotation); the lock state stays as it was.
    pub fn rotate_kek(
        dir: &Path,
        old: &KeyEncryptionKey,
        new: &KeyEncryptionKey,
    ) -> Result<(), CryptoError> {
        let file = Self::read(dir)?;
        let dek = Self::unwrap_dek(dir, &file, old)?;
        Self::write(dir, &dek, new, file.kek.is_some())
    }

    fn read(dir: &Path) -> Result<KeyFile, CryptoError> {
        let path = Self::path(dir);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CryptoError::Missing { path });
            }
            Err(source) => return Err(CryptoError::Read { path, source }),
        };
        let file: KeyFile =
            serde_json::from_slice(&bytes).map_err(|source| CryptoError::Format {
                path: path.clone(),
                source,
            })?;
        if file.v > KEY_FILE_VERSION {
            return Err(CryptoError::Version {
                path,
                version: file.v,
            });
        }
        Ok(file)
    }

    fn clear_kek_of(dir: &Path, file: &KeyFile) -> Result<Option<KeyEncryptionKey>, CryptoError> {
        let Some(k) = &file.kek else {
            return Ok(None);
        };
        let bytes = STANDARD
            .decode(k)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        match bytes {
            Some(b) => Ok(Some(KeyEncryptionKey(b))),
            None => Err(CryptoError::Corrupt {
                what: format!("the key encryption key in {}", Self::path(dir).display()),
            }),
        }
    }

    fn unwrap_dek(
        dir: &Path,
        file: &KeyFile,
        kek: &KeyEncryptionKey,
    ) -> Result<DataKey, CryptoError> {
        let sealed = STANDARD
            .decode(&file.dek)
            .map_err(|_| CryptoError::Corrupt {
                what: format!("the data key in {}", Self::path(dir).display()),
            })?;
        // An authentication failure here means the KEK is not the one that wrapped the DEK
        // (or the file was tampered with; the two cannot be told apart).
        let plain = open(&kek.0, &sealed, DEK_AAD).map_err(|_| CryptoError::WrongKey)?;
        let key: [u8; 32] = plain.try_into().map_err(|_| CryptoError::Corrupt {
            what: format!("the data key in {}", Self::path(dir).display()),
        })?;
        Ok(DataKey(key))
    }

    fn write(
        dir: &Path,
        dek: &DataKey,
        kek: &KeyEncryptionKey,
        keep_kek: bool,
    ) -> Result<(), CryptoError> {
        let file = KeyFile {
            v: KEY_FILE_VERSION,
            dek: STANDARD.encode(seal(&kek.0, &dek.0, DEK_AAD)),
            kek: keep_kek.then(|| STANDARD.encode(kek.0)),
        };
        let path = Self::path(dir);
        // Serializing a struct of strings cannot fail.
        let bytes = serde_json::to_vec_pretty(&file).map_err(|source| CryptoError::Format {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes).map_err(|source| CryptoError::Write { path, source })
    }
}

/// Writes `bytes` to `path` through a 0600 temporary file, fsync, rename, fsync of the
/// directory: readers see the old or the new file, never a torn one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn seal_open_round_trip() {
        let k = DataKey::generate().unwrap();
        let sealed = seal(k.as_bytes(), b"hello", b"table/key");
        assert_eq!(sealed[0], 1);
        assert_eq!(sealed.len(), 1 + 12 + 5 + 16);
        assert_eq!(open(k.as_bytes(), &sealed, b"table/key").unwrap(), b"hello");
        // Random nonces: the same plaintext seals differently.
        assert_ne!(seal(k.as_bytes(), b"hello", b"table/key"), sealed);
        // Empty plaintext.
        let e = seal(k.as_bytes(), b"", b"");
        assert_eq!(open(k.as_bytes(), &e, b"").unwrap(), b"");
    }

    #[test]
    fn tampering_is_detected() {
        let k = DataKey::generate().unwrap();
        let sealed = seal(k.as_bytes(), b"some secret value", b"objects_node/n1");
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(
                matches!(
                    open(k.as_bytes(), &t, b"objects_node/n1"),
                    Err(CryptoError::Corrupt { .. })
                ),
                "flipping byte {i} went unnoticed"
            );
        }
        // Truncated.
        assert!(
            open(
                k.as_bytes(),
                &sealed[..sealed.len() - 1],
                b"objects_node/n1"
            )
            .is_err()
        );
        assert!(open(k.as_bytes(), &sealed[..5], b"objects_node/n1").is_err());
    }

    #[test]
    fn values_cannot_be_moved_to_another_place() {
        let k = DataKey::generate().unwrap();
        let sealed = seal(k.as_bytes(), b"v", b"objects_node/n1");
        assert!(open(k.as_bytes(), &sealed, b"objects_node/n2").is_err());
        assert!(open(k.as_bytes(), &sealed, b"objects_task/n1").is_err());
    }

    #[test]
    fn wrong_key_is_refused() {
        let k1 = DataKey::generate().unwrap();
        let k2 = DataKey::generate().unwrap();
        let sealed = seal(k1.as_bytes(), b"v", b"a");
        assert!(matches!(
            open(k2.as_bytes(), &sealed, b"a"),
            Err(CryptoError::Corrupt { .. })
        ));
    }

    #[test]
    fn unlock_key_format() {
        let k = KeyEncryptionKey::from_bytes([7u8; 32]);
        let s = k.to_unlock_key();
        assert!(s.starts_with("SWMKEY-1-"));
        assert_eq!(s.len(), 9 + 43);
        assert!(!s.ends_with('='));
        assert_eq!(KeyEncryptionKey::parse_unlock_key(&s).unwrap(), k);
        assert_eq!(
            KeyEncryptionKey::parse_unlock_key(&format!("  {s}\n")).unwrap(),
            k
        );
        assert!(matches!(
            KeyEncryptionKey::parse_unlock_key("SWMKEY-2-AAAA"),
            Err(CryptoError::InvalidUnlockKey { .. })
        ));
        assert!(matches!(
            KeyEncryptionKey::parse_unlock_key("SWMKEY-1-!!!"),
            Err(CryptoError::InvalidUnlockKey { .. })
        ));
        assert!(matches!(
            KeyEncryptionKey::parse_unlock_key("SWMKEY-1-AAAA"),
            Err(CryptoError::InvalidUnlockKey { .. })
        ));
        // Keys never show in Debug output.
        assert!(!format!("{k:?}").contains('7'));
    }

    #[test]
    fn key_store_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(!KeyStore::exists(d));
        assert!(!KeyStore::is_locked(d));
        assert!(matches!(
            KeyStore::load(d, None),
            Err(CryptoError::Missing { .. })
        ));

        let (dek, kek) = KeyStore::create(d).unwrap();
        let mode = fs::metadata(d.join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            KeyStore::create(d),
            Err(CryptoError::Exists { .. })
        ));
        assert!(!KeyStore::is_locked(d));
        assert_eq!(KeyStore::load(d, None).unwrap(), dek);
        assert_eq!(KeyStore::clear_kek(d).unwrap(), Some(kek.clone()));

        // The DEK is never in the file in clear.
        let text = fs::read_to_string(d.join(KEY_FILE)).unwrap();
        assert!(!text.contains(&STANDARD.encode(dek.as_bytes())));

        // Autolock.
        KeyStore::lock(d, &kek).unwrap();
        assert!(KeyStore::is_locked(d));
        assert_eq!(KeyStore::clear_kek(d).unwrap(), None);
        assert!(matches!(KeyStore::load(d, None), Err(CryptoError::Locked)));
        let wrong = KeyEncryptionKey::generate().unwrap();
        assert!(matches!(
            KeyStore::load(d, Some(&wrong)),
            Err(CryptoError::WrongKey)
        ));
        assert_eq!(KeyStore::load(d, Some(&kek)).unwrap(), dek);
        let text = fs::read_to_string(d.join(KEY_FILE)).unwrap();
        assert!(!text.contains(&STANDARD.encode(kek.as_bytes())));

        // Rotation keeps the lock state and the DEK.
        let new = KeyEncryptionKey::generate().unwrap();
        assert!(matches!(
            KeyStore::rotate_kek(d, &wrong, &new),
            Err(CryptoError::WrongKey)
        ));
        KeyStore::rotate_kek(d, &kek, &new).unwrap();
        assert!(KeyStore::is_locked(d));
        assert!(matches!(
            KeyStore::load(d, Some(&kek)),
            Err(CryptoError::WrongKey)
        ));
        assert_eq!(KeyStore::load(d, Some(&new)).unwrap(), dek);

        // Autolock off.
        assert!(matches!(
            KeyStore::unlock_permanently(d, &kek),
            Err(CryptoError::WrongKey)
        ));
        KeyStore::unlock_permanently(d, &new).unwrap();
        assert!(!KeyStore::is_locked(d));
        assert_eq!(KeyStore::load(d, None).unwrap(), dek);
        assert_eq!(KeyStore::clear_kek(d).unwrap(), Some(new.clone()));
        // Unlocked rotation keeps the new KEK in clear.
        let newer = KeyEncryptionKey::generate().unwrap();
        KeyStore::rotate_kek(d, &new, &newer).unwrap();
        assert_eq!(KeyStore::clear_kek(d).unwrap(), Some(newer));
        assert_eq!(KeyStore::load(d, None).unwrap(), dek);
        // No temporary file left behind.
        let names: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE)]);
    }

    #[test]
    fn corrupt_key_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join(KEY_FILE), b"{not json").unwrap();
        assert!(matches!(
            KeyStore::load(d, None),
            Err(CryptoError::Format { .. })
        ));
        assert!(!KeyStore::is_locked(d));
        fs::write(d.join(KEY_FILE), br#"{"v":9,"dek":""}"#).unwrap();
        assert!(matches!(
            KeyStore::load(d, None),
            Err(CryptoError::Version { version: 9, .. })
        ));
        // A tampered wrapped DEK is refused, never silently accepted.
        let dir2 = tempfile::tempdir().unwrap();
        let (_, kek) = KeyStore::create(dir2.path()).unwrap();
        let p = dir2.path().join(KEY_FILE);
        let mut f: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        let mut sealed = STANDARD.decode(f["dek"].as_str().unwrap()).unwrap();
        sealed[20] ^= 0xff;
        f["dek"] = STANDARD.encode(&sealed).into();
        fs::write(&p, serde_json::to_vec(&f).unwrap()).unwrap();
        assert!(matches!(
            KeyStore::load(dir2.path(), Some(&kek)),
            Err(CryptoError::WrongKey)
        ));
    }
}
