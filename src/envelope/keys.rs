//! Secret keys and the key ring used to sign entries.

use std::error::Error as StdError;
use std::fmt;

use ring::{aead, hkdf, hmac, rand};
use zeroize::Zeroizing;

/// The shortest key accepted by [`SecretKey::new`]: 128 bits.
pub const MIN_KEY_LEN: usize = 16;

/// Salt for HKDF-Extract; part of the envelope format, never change it within a format version.
const HKDF_SALT: &[u8] = b"hyper-client-cache/envelope/v1";
/// HKDF-Expand info for the HMAC-SHA256 signing key.
const INFO_MAC: &[u8] = b"hcc/v1/hmac-sha256";
/// HKDF-Expand info for the keyed-BLAKE3 signing key (format 4's default MAC).
const INFO_BLAKE3: &[u8] = b"hcc/v4/blake3-mac";
/// HKDF-Expand info for the public key id.
const INFO_KEY_ID: &[u8] = b"hcc/v1/key-id";
/// HKDF-Expand info for the AES-256-GCM encryption key.
const INFO_AEAD: &[u8] = b"hcc/v1/aes-256-gcm";
/// HKDF-Expand info for the key that names entries (keyed cache keys, `key/`).
const INFO_NAMES: &[u8] = b"hcc/v1/key-names";
/// HKDF-Expand info for the key that digests the request field values a response varies on.
const INFO_VARY: &[u8] = b"hcc/v1/vary-values";
/// HKDF-Expand info for the key that names tags in a store's tag index.
const INFO_TAG_NAMES: &[u8] = b"hcc/v1/tag-names";

/// Length of a key id in the envelope header.
pub(crate) const KEY_ID_LEN: usize = 8;

/// A secret used to sign cache entries.
///
/// The bytes are zeroed when the key is dropped and are never printed: `Debug` shows only the
/// key id, which is derived one-way from the secret and is what the envelope header carries.
///
/// # Example
///
/// ```
/// use hyper_client_cache::SecretKey;
///
/// let key = SecretKey::new("correct horse battery staple").unwrap();
/// assert!(!format!("{key:?}").contains("horse"));
///
/// // Too short: refused, with a message that says why.
/// let err = SecretKey::new("short").unwrap_err();
/// assert!(err.is_too_short());
/// ```
pub struct SecretKey {
    bytes: Zeroizing<Vec<u8>>,
}

impl SecretKey {
    /// A key from raw bytes (`&str`, `String`, `&[u8]` or `Vec<u8>`).
    ///
    /// Refuses an empty key and keys shorter than [`MIN_KEY_LEN`] (16) bytes; use
    /// [`SecretKey::new_allow_short`] to accept a short key knowingly.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(bytes.into());
        if bytes.is_empty() {
            return Err(KeyError::new(KeyErrorKind::Empty));
        }
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::new(KeyErrorKind::TooShort(bytes.len())));
        }
        Ok(Self { bytes })
    }

    /// Like [`SecretKey::new`], but accepts keys of 1 to 15 bytes (an empty key is still refused).
    ///
    /// A short key is easy to guess; whoever guesses it can forge cache entries.
    pub fn new_allow_short(bytes: impl Into<Vec<u8>>) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(bytes.into());
        if bytes.is_empty() {
            return Err(KeyError::new(KeyErrorKind::Empty));
        }
        Ok(Self { bytes })
    }

    /// Reads the key from the environment variable `name` (its bytes are the key).
    ///
    /// # Errors
    ///
    /// When the variable is not set ([`KeyError::is_missing`]), is not valid Unicode, or holds a
    /// key that [`SecretKey::new`] refuses.
    ///
    /// # Example
    ///
    /// ```
    /// use hyper_client_cache::SecretKey;
    ///
    /// let err = SecretKey::from_env("HCC_DOCTEST_SURELY_UNSET").unwrap_err();
    /// assert!(err.is_missing());
    /// assert_eq!(
    ///     err.to_string(),
    ///     "environment variable `HCC_DOCTEST_SURELY_UNSET` is not set: it should hold the cache's secret key"
    /// );
    /// ```
    pub fn from_env(name: &str) -> Result<Self, KeyError> {
        match std::env::var(name) {
            Ok(value) => Self::new(value),
            Err(std::env::VarError::NotPresent) => {
                Err(KeyError::new(KeyErrorKind::Missing(name.to_owned())))
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(KeyError::new(KeyErrorKind::NotUnicode(name.to_owned())))
            }
        }
    }

    /// A new random 32-byte key from the operating system's secure random generator.
    ///
    /// # Errors
    ///
    /// When the operating system's random generator fails.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new(vec![0u8; 32]);
        rand::SecureRandom::fill(&rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| KeyError::new(KeyErrorKind::Random))?;
        Ok(Self { bytes })
    }

    /// The raw key bytes, e.g. to print a generated key once. Handle with care.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The public key id that entries signed with this key carry (8 bytes, derived one-way).
    pub fn key_id(&self) -> [u8; KEY_ID_LEN] {
        DerivedKey::derive(self).id
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("id", &HexId(&self.key_id()))
            .finish_non_exhaustive()
    }
}

impl TryFrom<&str> for SecretKey {
    type Error = KeyError;
    fn try_from(value: &str) -> Result<Self, KeyError> {
        Self::new(value)
    }
}
impl TryFrom<String> for SecretKey {
    type Error = KeyError;
    fn try_from(value: String) -> Result<Self, KeyError> {
        Self::new(value)
    }
}
impl TryFrom<&[u8]> for SecretKey {
    type Error = KeyError;
    fn try_from(value: &[u8]) -> Result<Self, KeyError> {
        Self::new(value)
    }
}
impl TryFrom<Vec<u8>> for SecretKey {
    type Error = KeyError;
    fn try_from(value: Vec<u8>) -> Result<Self, KeyError> {
        Self::new(value)
    }
}

pub(crate) struct HexId<'a>(pub(crate) &'a [u8]);

impl fmt::Debug for HexId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl fmt::Display for HexId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// What is kept of a secret once it is installed: the HKDF-derived MAC key, encryption key and
/// key id. The secret itself is dropped (and zeroed) here.
#[derive(Clone)]
pub(crate) struct DerivedKey {
    pub(crate) id: [u8; KEY_ID_LEN],
    pub(crate) mac: hmac::Key,
    /// The keyed-BLAKE3 signing key (zeroed when dropped).
    pub(crate) blake3: zeroize::Zeroizing<[u8; 32]>,
    /// Shared by the entries it opens (a reference count, not a copy of the key schedule).
    pub(crate) aead: std::sync::Arc<aead::LessSafeKey>,
    /// Names entries: cache keys are HMACs under it, not plain digests.
    pub(crate) names: hmac::Key,
    /// Digests the selecting request field values of a response that varies (RFC 9111 §4.1).
    pub(crate) vary: hmac::Key,
    /// Names tags in a store's tag index (`envelope::tag_names`).
    pub(crate) tag_names: hmac::Key,
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl DerivedKey {
    /// RFC 5869 HKDF-SHA256: `PRK = Extract(salt, secret)`, then one `Expand` per purpose, so the
    /// signing key, the encryption key and the key id are independent of each other.
    fn derive(secret: &SecretKey) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&secret.bytes);
        // `expand` fails only for outputs longer than 255 * 32 bytes; these are 32 and 8.
        let mac = prk
            .expand(&[INFO_MAC], hmac::HMAC_SHA256)
            .map(hmac::Key::from)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut blake3 = zeroize::Zeroizing::new([0u8; 32]);
        prk.expand(&[INFO_BLAKE3], Len(32))
            .and_then(|okm| okm.fill(&mut blake3[..]))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut id = [0u8; KEY_ID_LEN];
        prk.expand(&[INFO_KEY_ID], Len(KEY_ID_LEN))
            .and_then(|okm| okm.fill(&mut id))
            .expect("8 bytes is a valid HKDF-SHA256 output length");
        let aead = prk
            .expand(&[INFO_AEAD], &aead::AES_256_GCM)
            .map(|okm| std::sync::Arc::new(aead::LessSafeKey::new(aead::UnboundKey::from(okm))))
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let names = prk
            .expand(&[INFO_NAMES], hmac::HMAC_SHA256)
            .map(hmac::Key::from)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let vary = prk
            .expand(&[INFO_VARY], hmac::HMAC_SHA256)
            .map(hmac::Key::from)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let tag_names = prk
            .expand(&[INFO_TAG_NAMES], hmac::HMAC_SHA256)
            .map(hmac::Key::from)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self {
            id,
            mac,
            blake3,
            aead,
            names,
            vary,
            tag_names,
        }
    }
}

/// One signing key and any number of older keys that are still accepted for verification.
///
/// Rotation without emptying the cache: make the new key current and keep the old one as
/// previous until entries signed with it have expired, then drop it. An entry signed by a key
/// that is no longer in the ring fails verification like any other forged entry.
///
/// # Example
///
/// ```
/// use hyper_client_cache::{KeyRing, SecretKey};
///
/// let old = SecretKey::new("the key we used until today").unwrap();
/// let new = SecretKey::new("the key we sign with from now").unwrap();
/// let old_id = old.key_id();
/// let ring = KeyRing::new(new).with_previous(old);
/// assert!(ring.accepts(&old_id));
/// ```
#[derive(Clone)]
pub struct KeyRing {
    current: DerivedKey,
    previous: Vec<DerivedKey>,
}

impl KeyRing {
    /// A ring whose `current` key signs new entries (and verifies them).
    pub fn new(current: SecretKey) -> Self {
        Self {
            current: DerivedKey::derive(&current),
            previous: Vec::new(),
        }
    }

    /// Adds an older key that is accepted for verification only.
    #[must_use]
    pub fn with_previous(mut self, previous: SecretKey) -> Self {
        let derived = DerivedKey::derive(&previous);
        if derived.id != self.current.id && !self.previous.iter().any(|k| k.id == derived.id) {
            self.previous.push(derived);
        }
        self
    }

    /// The key id of the signing key.
    pub fn current_key_id(&self) -> [u8; KEY_ID_LEN] {
        self.current.id
    }

    /// Whether an entry carrying `key_id` can be verified by this ring.
    pub fn accepts(&self, key_id: &[u8]) -> bool {
        self.find(key_id).is_some()
    }

    pub(crate) fn current(&self) -> &DerivedKey {
        &self.current
    }

    /// The key-name keys, current first, then the previous keys in the order they were added.
    pub(crate) fn name_keys(&self) -> Vec<hmac::Key> {
        std::iter::once(&self.current)
            .chain(self.previous.iter())
            .map(|k| k.names.clone())
            .collect()
    }

    /// The tag-name keys, current first, then the previous keys in the order they were added.
    pub(crate) fn tag_name_keys(&self) -> impl Iterator<Item = &hmac::Key> {
        std::iter::once(&self.current)
            .chain(self.previous.iter())
            .map(|k| &k.tag_names)
    }

    pub(crate) fn find(&self, key_id: &[u8]) -> Option<&DerivedKey> {
        std::iter::once(&self.current)
            .chain(self.previous.iter())
            .find(|k| k.id == key_id)
    }
}

impl From<SecretKey> for KeyRing {
    fn from(key: SecretKey) -> Self {
        Self::new(key)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &HexId(&self.current.id))
            .field(
                "previous",
                &self
                    .previous
                    .iter()
                    .map(|k| HexId(&k.id).to_string())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why a secret key could not be made.
///
/// Messages never contain key material.
pub struct KeyError {
    kind: KeyErrorKind,
}

#[derive(Debug)]
enum KeyErrorKind {
    Empty,
    TooShort(usize),
    Missing(String),
    NotUnicode(String),
    Random,
}

impl KeyError {
    fn new(kind: KeyErrorKind) -> Self {
        Self { kind }
    }

    /// The environment variable named in [`SecretKey::from_env`] is not set.
    pub fn is_missing(&self) -> bool {
        matches!(self.kind, KeyErrorKind::Missing(_))
    }

    /// The key was empty.
    pub fn is_empty(&self) -> bool {
        matches!(self.kind, KeyErrorKind::Empty)
    }

    /// The key was shorter than [`MIN_KEY_LEN`] bytes.
    pub fn is_too_short(&self) -> bool {
        matches!(self.kind, KeyErrorKind::TooShort(_))
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            KeyErrorKind::Empty => f.write_str("the secret key is empty"),
            KeyErrorKind::TooShort(n) => write!(
                f,
                "the secret key is {n} bytes long; at least {MIN_KEY_LEN} are required \
                 (use SecretKey::new_allow_short to accept it anyway)"
            ),
            KeyErrorKind::Missing(name) => write!(
                f,
                "environment variable `{name}` is not set: it should hold the cache's secret key"
            ),
            KeyErrorKind::NotUnicode(name) => {
                write!(f, "environment variable `{name}` is not valid unicode")
            }
            KeyErrorKind::Random => f.write_str("the system random generator failed"),
        }
    }
}

/// The message itself, as `Display` gives it: `main` functions that return a `Result` print an
/// error with `Debug`, and `KeyError { kind: Missing(..) }` told a user nothing of what to do.
impl fmt::Debug for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyError({:?})", self.to_string())
    }
}

impl StdError for KeyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_differ_per_key_and_are_stable() {
        let a = SecretKey::new("aaaaaaaaaaaaaaaaaaaa").unwrap();
        let a2 = SecretKey::new(b"aaaaaaaaaaaaaaaaaaaa".to_vec()).unwrap();
        let b = SecretKey::new("bbbbbbbbbbbbbbbbbbbb").unwrap();
        assert_eq!(a.key_id(), a2.key_id());
        assert_ne!(a.key_id(), b.key_id());
    }

    #[test]
    fn refuses_empty_and_short() {
        assert!(SecretKey::new("").unwrap_err().is_empty());
        assert!(SecretKey::new_allow_short("").unwrap_err().is_empty());
        assert!(SecretKey::new("fifteen bytes!!")
            .unwrap_err()
            .is_too_short());
        assert!(SecretKey::new("sixteen bytes!!!").is_ok());
        assert!(SecretKey::new_allow_short("short").is_ok());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = SecretKey::new("super secret value 123").unwrap();
        let dbg = format!("{key:?}");
        assert!(!dbg.contains("secret value"), "{dbg}");
        let ring = KeyRing::new(key);
        assert!(!format!("{ring:?}").contains("secret value"));
    }

    #[test]
    fn generated_keys_are_random() {
        let a = SecretKey::generate().unwrap();
        let b = SecretKey::generate().unwrap();
        assert_eq!(a.expose_bytes().len(), 32);
        assert_ne!(a.expose_bytes(), b.expose_bytes());
    }

    #[test]
    fn ring_accepts_previous_keys_only_while_kept() {
        let old = SecretKey::new("old old old old old").unwrap();
        let new = SecretKey::new("new new new new new").unwrap();
        let old_id = old.key_id();
        let with_old =
            KeyRing::new(SecretKey::new("new new new new new").unwrap()).with_previous(old);
        assert!(with_old.accepts(&old_id));
        assert!(!KeyRing::new(new).accepts(&old_id));
    }
}
