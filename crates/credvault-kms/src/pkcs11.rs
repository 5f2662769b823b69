//! A master key in a PKCS#11 token (an HSM, SoftHSM2), through `cryptoki`.
//!
//! - The key is an AES-256 secret-key object generated *in* the token: `CKA_TOKEN`,
//!   `CKA_SENSITIVE`, `CKA_PRIVATE`, not `CKA_EXTRACTABLE`; its bytes never reach this process.
//! - Versions are objects labelled `OBJECT.v1`, `OBJECT.v2`, ... (a pre-existing object
//!   labelled exactly `OBJECT` is version 1); the highest version wraps, [`Pkcs11MasterKey::rotate`]
//!   generates the next one, older ones keep unwrapping until an operator destroys them.
//! - Wrap is `C_Encrypt` with `CKM_AES_GCM`, AAD = the wrapped key's header ‖ the context's
//!   canonical bytes (the local keyring's construction). The payload keeps the IV the token
//!   used (a FIPS-mode token chooses its own): `alg (0x01) ‖ IV (12) ‖ ciphertext (32) ‖ tag (16)`.
//! - One module instance per process (`C_Initialize` once per library path); sessions are
//!   pooled behind a mutex (a session is `Send`, not `Sync`); the user PIN comes from the URI's
//!   `pin-source=` file or `CREDVAULT_PKCS11_PIN`, never from argv.
//! - The provider id is `pkcs11:TOKEN/OBJECT`, so a wrapped key names where it can be opened.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use credvault_envelope::{
    DataKey, DecryptError, EncryptionContext, FormatError, MasterKey, MasterKeyRef, ProviderError,
    WrappedKey, DATA_KEY_LEN,
};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::uri::Pkcs11Uri;
use crate::KmsError;

/// A token in a module: (module path, slot id).
type LoginKey = (PathBuf, u64);

/// The environment variable holding the token's user PIN when the URI has no `pin-source=`.
pub const PIN_ENV: &str = "CREDVAULT_PKCS11_PIN";
/// Longest PIN file accepted, in bytes.
pub const MAX_PIN_LEN: usize = 256;

const ALG_AES256GCM: u8 = 1;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
const PAYLOAD_LEN: usize = 1 + IV_LEN + DATA_KEY_LEN + TAG_LEN;
/// Sessions kept open for reuse.
const POOL: usize = 8;

/// The module instances this process loaded, by path: `C_Initialize` runs once per library.
fn module(path: &Path, provider: &str) -> Result<Pkcs11, ProviderError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(m) = map.get(path) {
        return Ok(m.clone());
    }
    let m = Pkcs11::new(path).map_err(|e| {
        unavailable(
            provider,
            &format!("cannot load the PKCS#11 module {}: {e}", path.display()),
        )
    })?;
    match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(unavailable(provider, &format!("C_Initialize failed: {e}"))),
    }
    map.insert(path.to_owned(), m.clone());
    Ok(m)
}

fn unavailable(provider: &str, reason: &str) -> ProviderError {
    ProviderError::Unavailable {
        provider: provider.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Maps a token's answer to the provider's error kinds (never a secret in it).
fn ck(provider: &str, what: &str, e: CkError) -> ProviderError {
    match e {
        CkError::Pkcs11(rv, _) => match rv {
            RvError::PinIncorrect
            | RvError::PinLocked
            | RvError::PinExpired
            | RvError::PinInvalid
            | RvError::PinLenRange => ProviderError::Denied {
                provider: provider.to_owned(),
                reason: format!("{what}: the token refused the PIN ({rv:?})"),
            },
            RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange => {
                ProviderError::Unwrap(DecryptError)
            }
            other => unavailable(provider, &format!("{what}: {other:?}")),
        },
        other => unavailable(provider, &format!("{what}: {other}")),
    }
}

/// Reads the user PIN from `pin_source` (owner-only) or [`PIN_ENV`].
fn read_pin(pin_source: Option<&Path>) -> Result<AuthPin, KmsError> {
    let pin = match pin_source {
        Some(p) => {
            let meta = std::fs::metadata(p).map_err(|e| KmsError::Pin {
                reason: format!("pin-source {}: {e}", p.display()),
            })?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KmsError::Pin {
                        reason: format!(
                            "pin-source {} is accessible by group or others (mode {mode:04o}); run `chmod 600` on it",
                            p.display()
                        ),
                    });
                }
            }
            if meta.len() > MAX_PIN_LEN as u64 {
                return Err(KmsError::Pin {
                    reason: format!(
                        "pin-source {} is longer than {MAX_PIN_LEN} bytes",
                        p.display()
                    ),
                });
            }
            let text = Zeroizing::new(std::fs::read_to_string(p).map_err(|e| KmsError::Pin {
                reason: format!("pin-source {}: {e}", p.display()),
            })?);
            text.trim_end_matches(['\r', '\n']).to_owned()
        }
        None => std::env::var(PIN_ENV).map_err(|_| KmsError::Pin {
            reason: format!("no pin-source= in the URI and {PIN_ENV} is not set"),
        })?,
    };
    if pin.is_empty() || pin.len() > MAX_PIN_LEN {
        return Err(KmsError::Pin {
            reason: format!("the PIN must be 1..={MAX_PIN_LEN} bytes"),
        });
    }
    Ok(AuthPin::from(pin))
}

/// A master key held in a PKCS#11 token. See the [module docs](self).
pub struct Pkcs11MasterKey {
    id: String,
    module_path: PathBuf,
    object: String,
    module: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    sessions: Mutex<Vec<Session>>,
    /// Version → key handle; token objects' handles are valid in every session.
    keys: Mutex<BTreeMap<u32, ObjectHandle>>,
}

impl Pkcs11MasterKey {
    /// Opens the token the URI names (by label), logs in, and finds the key's versions.
    ///
    /// # Errors
    /// [`KmsError::Pin`] (no PIN); [`KmsError::Provider`] with
    /// [`ProviderError::Unavailable`] (module, token missing), [`ProviderError::Denied`]
    /// (wrong PIN), [`ProviderError::UnknownVersion`] (no key object: create it with
    /// [`create`](Self::create)).
    pub fn open(uri: &Pkcs11Uri) -> Result<Self, KmsError> {
        let this = Self::connect(uri)?;
        if this.refresh()?.is_empty() {
            return Err(KmsError::Provider(ProviderError::UnknownVersion(
                MasterKeyRef {
                    provider: this.id.clone(),
                    version: 1,
                },
            )));
        }
        Ok(this)
    }

    /// Opens the token and generates version 1 of the key object if it has no version yet.
    /// Returns the key and whether it generated one.
    ///
    /// # Errors
    /// As [`open`](Self::open), but a missing key object is made.
    pub fn create(uri: &Pkcs11Uri) -> Result<(Self, bool), KmsError> {
        let this = Self::connect(uri)?;
        if this.refresh()?.is_empty() {
            this.generate_version(1)?;
            this.refresh()?;
            return Ok((this, true));
        }
        Ok((this, false))
    }

    fn connect(uri: &Pkcs11Uri) -> Result<Self, KmsError> {
        let id = format!("pkcs11:{}/{}", uri.token, uri.object);
        if id.len() > credvault_envelope::MAX_PROVIDER_ID_LEN
            || !id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(KmsError::Uri(crate::uri::UriError {
                part: "token",
                reason:
                    "token and object labels must be printable ASCII, 54 bytes together at most",
            }));
        }
        let pin = read_pin(uri.pin_source.as_deref())?;
        let module = module(&uri.module_path, &id)?;
        let slots = module
            .get_slots_with_initialized_token()
            .map_err(|e| ck(&id, "C_GetSlotList", e))?;
        let mut found = None;
        for s in slots {
            let info = module
                .get_token_info(s)
                .map_err(|e| ck(&id, "C_GetTokenInfo", e))?;
            if info.label().trim_end() == uri.token {
                found = Some(s);
                break;
            }
        }
        let slot = found.ok_or_else(|| {
            KmsError::Provider(unavailable(&id, "no initialised token has this label"))
        })?;
        let this = Self {
            id,
            module_path: uri.module_path.clone(),
            object: uri.object.clone(),
            module,
            slot,
            pin,
            sessions: Mutex::new(Vec::new()),
            keys: Mutex::new(BTreeMap::new()),
        };
        // Log in now, so a wrong PIN is an error at open, not at first use.
        let s = this.session()?;
        this.give_back(s);
        Ok(this)
    }

    /// A logged-in session from the pool, or a new one.
    ///
    /// PKCS#11 logs an application in per token, not per session: once one provider in this
    /// process logged in, `C_Login` answers "already logged in" whatever PIN is given. So the
    /// process remembers a digest of the PIN each token was logged in with, and a provider
    /// whose PIN differs is refused as the token would have refused it.
    fn session(&self) -> Result<Session, ProviderError> {
        static LOGINS: OnceLock<Mutex<HashMap<LoginKey, [u8; 32]>>> = OnceLock::new();
        if let Some(s) = self.lock_sessions().pop() {
            return Ok(s);
        }
        let s = self
            .module
            .open_rw_session(self.slot)
            .map_err(|e| ck(&self.id, "C_OpenSession", e))?;
        let digest = {
            use secrecy::ExposeSecret;
            let d =
                ring::digest::digest(&ring::digest::SHA256, self.pin.expose_secret().as_bytes());
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            out
        };
        let key = (self.module_path.clone(), self.slot.id());
        let mut logins = LOGINS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match s.login(UserType::User, Some(&self.pin)) {
            Ok(()) => {
                logins.insert(key, digest);
                Ok(s)
            }
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => match logins.get(&key) {
                Some(d) if !subtle_eq(d, &digest) => Err(ProviderError::Denied {
                    provider: self.id.clone(),
                    reason: "C_Login: the token refused the PIN (another PIN is logged in to it in this process)".to_owned(),
                }),
                _ => Ok(s),
            },
            Err(e) => Err(ck(&self.id, "C_Login", e)),
        }
    }

    fn give_back(&self, s: Session) {
        let mut pool = self.lock_sessions();
        if pool.len() < POOL {
            pool.push(s);
        }
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_keys(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, ObjectHandle>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on a pooled session; a session the token dropped is not returned to the pool.
    fn with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let s = self.session()?;
        let out = f(&s);
        if !matches!(out, Err(ProviderError::Unavailable { .. })) {
            self.give_back(s);
        }
        out
    }

    /// The version a label names: `OBJECT.vN`, or exactly `OBJECT` for version 1.
    fn version_of(&self, label: &[u8]) -> Option<u32> {
        let label = core::str::from_utf8(label).ok()?;
        if label == self.object {
            return Some(1);
        }
        let n = label
            .strip_prefix(self.object.as_str())?
            .strip_prefix(".v")?;
        if n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse().ok().filter(|v| *v > 0)
    }

    /// Reads the token's key objects again; returns the versions found.
    fn refresh(&self) -> Result<Vec<u32>, ProviderError> {
        let found = self.with_session(|s| {
            let handles = s
                .find_objects(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                ])
                .map_err(|e| ck(&self.id, "C_FindObjects", e))?;
            let mut found = BTreeMap::new();
            for h in handles {
                let attrs = match s.get_attributes(h, &[AttributeType::Label]) {
                    Ok(a) => a,
                    // Destroyed (by another process) between the search and this read.
                    Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => continue,
                    Err(e) => return Err(ck(&self.id, "C_GetAttributeValue", e)),
                };
                for a in attrs {
                    if let Attribute::Label(l) = a {
                        if let Some(v) = self.version_of(&l) {
                            // `OBJECT.v1` wins over a bare `OBJECT`.
                            if l.ends_with(b".v1") || !found.contains_key(&v) {
                                found.insert(v, h);
                            }
                        }
                    }
                }
            }
            Ok(found)
        })?;
        let versions = found.keys().copied().collect();
        *self.lock_keys() = found;
        Ok(versions)
    }

    fn generate_version(&self, version: u32) -> Result<(), ProviderError> {
        let label = format!("{}.v{version}", self.object);
        self.with_session(|s| {
            s.generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen((DATA_KEY_LEN as u64).into()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Label(label.into_bytes()),
                    Attribute::Id(version.to_be_bytes().to_vec()),
                ],
            )
            .map_err(|e| ck(&self.id, "C_GenerateKey", e))
        })?;
        Ok(())
    }

    /// Generates the next version in the token; it wraps from now on (in this process, and
    /// in every process that opens the token after). Returns the new version.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`], [`ProviderError::Denied`].
    pub fn rotate(&self) -> Result<u32, ProviderError> {
        let next = self.refresh()?.last().copied().unwrap_or(0) + 1;
        self.generate_version(next)?;
        self.refresh()?;
        Ok(next)
    }

    /// The versions the token holds.
    pub fn versions(&self) -> Vec<u32> {
        self.lock_keys().keys().copied().collect()
    }

    fn key(&self, version: u32) -> Result<ObjectHandle, ProviderError> {
        if let Some(h) = self.lock_keys().get(&version) {
            return Ok(*h);
        }
        // Another process may have rotated since.
        self.refresh()?;
        self.lock_keys()
            .get(&version)
            .copied()
            .ok_or_else(|| ProviderError::UnknownVersion(self.mref(version)))
    }

    fn mref(&self, version: u32) -> MasterKeyRef {
        MasterKeyRef {
            provider: self.id.clone(),
            version,
        }
    }

    /// Forgets a key handle the token no longer knows (object destroyed).
    fn on_bad_handle(&self, version: u32, e: CkError) -> ProviderError {
        if matches!(
            e,
            CkError::Pkcs11(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid, _)
        ) {
            self.lock_keys().remove(&version);
            return ProviderError::UnknownVersion(self.mref(version));
        }
        ck(&self.id, "C_Encrypt/C_Decrypt", e)
    }
}

/// Equality of two digests in constant time.
fn subtle_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(&a[..], &b[..]))
}

/// What the token says about one key object: what an operator checks before trusting it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyObject {
    /// The version.
    pub version: u32,
    /// Its label.
    pub label: String,
    /// `CKA_TOKEN`: kept in the token (not a session object).
    pub token: bool,
    /// `CKA_SENSITIVE`: its value cannot be read in the clear.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`: it can be wrapped out of the token.
    pub extractable: bool,
    /// `CKA_VALUE_LEN`: its length in bytes.
    pub value_len: u64,
}

impl Pkcs11MasterKey {
    /// The key objects' attributes, read from the token, oldest version first.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`].
    pub fn key_objects(&self) -> Result<Vec<KeyObject>, ProviderError> {
        self.refresh()?;
        let handles: Vec<(u32, ObjectHandle)> =
            self.lock_keys().iter().map(|(v, h)| (*v, *h)).collect();
        self.with_session(|s| {
            let mut out = Vec::new();
            for (version, h) in handles {
                let attrs = match s.get_attributes(
                    h,
                    &[
                        AttributeType::Label,
                        AttributeType::Token,
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::ValueLen,
                    ],
                ) {
                    Ok(a) => a,
                    Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => continue,
                    Err(e) => return Err(ck(&self.id, "C_GetAttributeValue", e)),
                };
                let mut o = KeyObject {
                    version,
                    label: String::new(),
                    token: false,
                    sensitive: false,
                    extractable: true,
                    value_len: 0,
                };
                for a in attrs {
                    match a {
                        Attribute::Label(l) => o.label = String::from_utf8_lossy(&l).into_owned(),
                        Attribute::Token(b) => o.token = b,
                        Attribute::Sensitive(b) => o.sensitive = b,
                        Attribute::Extractable(b) => o.extractable = b,
                        Attribute::ValueLen(n) => o.value_len = n.into(),
                        _ => {}
                    }
                }
                out.push(o);
            }
            Ok(out)
        })
    }
}

impl MasterKey for Pkcs11MasterKey {
    fn provider_id(&self) -> &str {
        &self.id
    }

    fn active_version(&self) -> Result<u32, ProviderError> {
        if let Some(v) = self.lock_keys().keys().next_back() {
            return Ok(*v);
        }
        self.refresh()?
            .last()
            .copied()
            .ok_or_else(|| ProviderError::UnknownVersion(self.mref(1)))
    }

    fn wrap(&self, key: &DataKey, ctx: &EncryptionContext) -> Result<WrappedKey, ProviderError> {
        let version = self.active_version()?;
        let handle = self.key(version)?;
        let master = self.mref(version);
        let mut aad = WrappedKey::header_for(&master, key.id(), PAYLOAD_LEN)?;
        aad.extend_from_slice(ctx.canonical_bytes());
        let mut iv = [0u8; IV_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut iv)
            .map_err(|_| unavailable(&self.id, "the OS random generator failed"))?;
        let out = self.with_session(|s| {
            let params = GcmParams::new(&mut iv, &aad, ((TAG_LEN * 8) as u64).into())
                .map_err(|e| ck(&self.id, "GCM parameters", e))?;
            s.encrypt(&Mechanism::AesGcm(params), handle, key.expose_secret())
                .map_err(|e| self.on_bad_handle(version, e))
        })?;
        if out.len() != DATA_KEY_LEN + TAG_LEN {
            return Err(unavailable(
                &self.id,
                "the token returned a ciphertext of an unexpected length",
            ));
        }
        let mut payload = Vec::with_capacity(PAYLOAD_LEN);
        payload.push(ALG_AES256GCM);
        payload.extend_from_slice(&iv);
        payload.extend_from_slice(&out);
        Ok(WrappedKey::from_parts(master, key.id(), &payload)?)
    }

    fn unwrap(
        &self,
        wrapped: &WrappedKey,
        ctx: &EncryptionContext,
    ) -> Result<DataKey, ProviderError> {
        let m = wrapped.master_key();
        if m.provider != self.id {
            return Err(ProviderError::WrongProvider {
                expected: self.id.clone(),
                found: m.provider.clone(),
            });
        }
        let p = wrapped.payload();
        if p.len() != PAYLOAD_LEN {
            return Err(FormatError::Malformed {
                what: "wrapped key",
                reason: "PKCS#11 payload must be 61 bytes",
            }
            .into());
        }
        if p[0] != ALG_AES256GCM {
            return Err(FormatError::UnknownSuite {
                what: "wrapped key",
                suite: p[0],
            }
            .into());
        }
        let handle = self.key(m.version)?;
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&p[1..1 + IV_LEN]);
        let mut aad = wrapped.header().to_vec();
        aad.extend_from_slice(ctx.canonical_bytes());
        let plain = Zeroizing::new(self.with_session(|s| {
            let params = GcmParams::new(&mut iv, &aad, ((TAG_LEN * 8) as u64).into())
                .map_err(|e| ck(&self.id, "GCM parameters", e))?;
            s.decrypt(&Mechanism::AesGcm(params), handle, &p[1 + IV_LEN..])
                .map_err(|e| match e {
                    // A tag that does not verify: the standard's answers, and SoftHSM2's
                    // (it reports a GCM tag mismatch as CKR_GENERAL_ERROR / FUNCTION_FAILED).
                    CkError::Pkcs11(
                        RvError::EncryptedDataInvalid
                        | RvError::EncryptedDataLenRange
                        | RvError::GeneralError
                        | RvError::FunctionFailed,
                        _,
                    ) => ProviderError::Unwrap(DecryptError),
                    e => self.on_bad_handle(m.version, e),
                })
        })?);
        DataKey::from_slice(wrapped.data_key_id(), &plain)
            .map_err(|_| ProviderError::Unwrap(DecryptError))
    }
}

impl std::fmt::Debug for Pkcs11MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11MasterKey")
            .field("id", &self.id)
            .field("versions", &self.versions())
            .finish_non_exhaustive()
    }
}

/// Shared handle, as the store takes providers.
pub fn shared(key: Pkcs11MasterKey) -> Arc<dyn MasterKey> {
    Arc::new(key)
}
