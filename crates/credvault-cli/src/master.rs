//! Where a vault's master key lives: `master.uri` in the vault directory names a provider
//! (`credvault_kms::MasterUri`, never a secret). Without it, the vault's own `master.key` (or
//! `CREDVAULT_MASTER_KEY`) is the key, as before. During a move to another provider
//! (`rotate master --to`), `master.previous.uri` names the provider being left.

use std::path::Path;
use std::sync::Arc;

use credvault_envelope::{EncryptionContext, MasterKey, ProviderError};
use credvault_kms::{KmsError, MasterUri, Migrating};
use serde_json::json;

use crate::{Failure, Output};

/// The file naming the vault's master-key provider.
pub(crate) const URI_FILE: &str = "master.uri";
/// The file naming the provider a move is leaving.
pub(crate) const PREVIOUS_URI_FILE: &str = "master.previous.uri";

pub(crate) fn kms_failure(what: &str, e: KmsError) -> Failure {
    Failure::new(format!("{what}: {e}"))
}

/// Reads a URI file: owner-only, at most [`credvault_kms::MAX_URI_LEN`] bytes, one URI.
pub(crate) fn read_uri(path: &Path) -> Result<Option<MasterUri>, Failure> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Failure::new(format!("{}: {e}", path.display()))),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // It decides which code runs (a PKCS#11 module) and where keys go: only its owner
        // may write it.
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(Failure::new(format!(
                "{} is writable by group or others (mode {mode:04o}); run `chmod 600` on it",
                path.display()
            )));
        }
    }
    if meta.len() > credvault_kms::MAX_URI_LEN as u64 + 1 {
        return Err(Failure::new(format!(
            "{}: longer than a master-key URI",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
    MasterUri::parse(text.trim_end_matches(['\n', '\r']))
        .map(Some)
        .map_err(|e| Failure::new(format!("{}: {e}", path.display())))
}

/// Writes a URI file atomically and owner-only.
pub(crate) fn write_uri(path: &Path, uri: &MasterUri) -> Result<(), Failure> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let io = |e: std::io::Error| Failure::new(format!("{}: {e}", path.display()));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    use std::io::Write;
    writeln!(tmp, "{uri}").map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// The provider the vault in `dir` names, if it names one (with the one a move is leaving).
/// A `file:` key is left to the store, which reads `master.uri` itself (so that its
/// rotation can save and retire versions).
pub(crate) fn provider_for(dir: &Path) -> Result<Option<Arc<dyn MasterKey>>, Failure> {
    let Some(uri) = read_uri(&dir.join(URI_FILE))? else {
        return Ok(None);
    };
    let previous = read_uri(&dir.join(PREVIOUS_URI_FILE))?;
    if matches!(uri, MasterUri::File(_)) && previous.is_none() {
        return Ok(None);
    }
    let new = credvault_kms::open(&uri).map_err(|e| kms_failure("master key", e))?;
    match previous {
        Some(prev) => {
            let old = credvault_kms::open(&prev)
                .map_err(|e| kms_failure("master key being moved from", e))?;
            Ok(Some(Arc::new(Migrating::new(new, vec![old]))))
        }
        None => Ok(Some(new)),
    }
}

/// The URI of the vault's master key as it is configured now.
pub(crate) fn current_uri(dir: &Path) -> Result<MasterUri, Failure> {
    if let Some(u) = read_uri(&dir.join(URI_FILE))? {
        return Ok(u);
    }
    if std::env::var_os(credvault_store::MASTER_KEY_ENV).is_some() {
        return Ok(MasterUri::Env(credvault_store::MASTER_KEY_ENV.to_owned()));
    }
    let abs =
        std::path::absolute(dir.join("master.key")).unwrap_or_else(|_| dir.join("master.key"));
    Ok(MasterUri::File(abs))
}

/// Where `credvault init` puts a new vault's key file when no `--master` is given: outside
/// the vault directory, so a copy of the directory carries no key. Under
/// `$CREDVAULT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/credvault`, else `~/.config/credvault`:
/// `keys/NAME-HASH.master.key` (NAME the directory's name, HASH of its absolute path).
pub(crate) fn default_key_file(dir: &Path) -> std::path::PathBuf {
    use std::path::PathBuf;
    let base = std::env::var_os("CREDVAULT_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CONFIG_HOME").map(|x| PathBuf::from(x).join("credvault")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config").join("credvault"))
        })
        .unwrap_or_else(|| PathBuf::from(".credvault-config"));
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let digest = ring::digest::digest(&ring::digest::SHA256, abs.as_os_str().as_encoded_bytes());
    let name: String = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    base.join("keys").join(format!(
        "{name}-{}.master.key",
        hex::encode(&digest.as_ref()[..6])
    ))
}

/// True for a URI whose key is a local keyring's text (a file, a variable, a keychain entry).
pub(crate) fn holds_key_text(uri: &MasterUri) -> bool {
    matches!(
        uri,
        MasterUri::File(_) | MasterUri::Env(_) | MasterUri::Keychain { .. }
    )
}

fn load_keyring(uri: &MasterUri) -> Result<Option<credvault_envelope::LocalKeyring>, Failure> {
    use credvault_envelope::LocalKeyring;
    let f = |e: KmsError| kms_failure("master key", e);
    match uri {
        MasterUri::File(p) if !p.exists() => Ok(None),
        MasterUri::File(p) => LocalKeyring::from_file(p)
            .map(Some)
            .map_err(|e| f(e.into())),
        MasterUri::Env(v) => LocalKeyring::from_env(v).map(Some).map_err(|e| f(e.into())),
        #[cfg(feature = "keychain")]
        MasterUri::Keychain {
            service, account, ..
        } => {
            let kind = credvault_kms::keychain_store(uri).map_err(f)?;
            if !credvault_kms::keychain::exists(kind, service, account).map_err(f)? {
                return Ok(None);
            }
            credvault_kms::keychain::load(kind, service, account)
                .map(Some)
                .map_err(f)
        }
        other => Err(Failure::usage(format!("{other}: not a local keyring"))),
    }
}

/// `rotate master --to` between two homes of a local keyring (a key file into the keychain,
/// say): the key text is copied, nothing is re-wrapped. A target that holds another keyring
/// is refused; the vault must open with the target alone before `master.uri` is changed.
pub(crate) fn copy_local_keyring(
    args: &crate::vault::VaultArgs,
    from: &MasterUri,
    to: &MasterUri,
    volatile_ok: bool,
) -> Result<Output, Failure> {
    let dir = args.dir();
    let keyring = load_keyring(from)?
        .ok_or_else(|| Failure::new(format!("{from}: the vault's key is not there")))?;
    let text = keyring.export_secret_text();
    match load_keyring(to)? {
        Some(there) if *there.export_secret_text() != *text => {
            return Err(Failure::usage(format!(
                "--to: {to} holds another keyring; choose an empty place"
            )))
        }
        Some(_) => {}
        None => match to {
            MasterUri::File(p) => {
                if let Some(parent) = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty() && !d.exists())
                {
                    let mut b = std::fs::DirBuilder::new();
                    b.recursive(true);
                    #[cfg(unix)]
                    {
                        use std::os::unix::fs::DirBuilderExt;
                        b.mode(0o700);
                    }
                    b.create(parent)
                        .map_err(|e| Failure::new(format!("{}: {e}", parent.display())))?;
                }
                keyring
                    .save_to_file(p)
                    .map_err(|e| kms_failure("master key", e.into()))?;
            }
            #[cfg(feature = "keychain")]
            MasterUri::Keychain {
                service, account, ..
            } => {
                let kind =
                    credvault_kms::keychain_store(to).map_err(|e| kms_failure("master key", e))?;
                if kind.forgets_at_reboot() && !volatile_ok {
                    return Err(Failure::usage(format!(
                        "{to}: the kernel keyring forgets its keys at reboot, and losing the master key loses the vault; keep a copy elsewhere and pass --volatile-keychain, or use ?store=secret-service"
                    )));
                }
                credvault_kms::keychain::save(kind, service, account, &keyring)
                    .map_err(|e| kms_failure("master key", e))?;
            }
            other => {
                return Err(Failure::usage(format!(
                    "--to: {other}: set the variable to the key text yourself"
                )))
            }
        },
    }
    let _ = volatile_ok;
    // The vault must open with the new home alone before it is recorded.
    let alone = credvault_kms::open(to).map_err(|e| kms_failure("master key", e))?;
    let opts = crate::vault::opts(&dir)?.master_key(alone);
    let v = credvault_store::Vault::open(&dir, opts).map_err(crate::vault::fail)?;
    let check = v.store().check_master_key_all().map_err(crate::vault::fail);
    let _ = v.close();
    check?;
    write_uri(&dir.join(URI_FILE), to)?;
    let left = left_behind(from);
    Ok(Output::Text {
        text: format!(
            "master key moved: {from} -> {to}\n  the keyring's text was copied (a local keyring either way): nothing re-wrapped; every data key opens from the new place alone{left}\n"
        ),
        json: json!({"from": from.to_string(), "to": to.to_string(), "rewrapped": 0, "copied": true}),
    })
}

/// What a move leaves behind for the operator to remove (the old key file).
pub(crate) fn left_behind(from: &MasterUri) -> String {
    match from {
        MasterUri::File(p) => format!("; the old key file {} is no longer needed", p.display()),
        _ => String::new(),
    }
}

/// Parses `--master`/`--to`.
pub(crate) fn parse_uri(flag: &str, s: &str) -> Result<MasterUri, Failure> {
    MasterUri::parse(s).map_err(|e| Failure::usage(format!("{flag}: {e}")))
}

/// Makes (or finds) the key `uri` names, refusing a store that forgets at reboot as the
/// only place of a vault's key unless the operator says they keep a copy.
pub(crate) fn open_or_create(
    uri: &MasterUri,
    dir: &Path,
    volatile_ok: bool,
) -> Result<(Arc<dyn MasterKey>, bool), Failure> {
    if let MasterUri::File(p) = uri {
        if let (Ok(k), Ok(d)) = (std::path::absolute(p), std::path::absolute(dir)) {
            if k.starts_with(&d) {
                eprintln!(
                    "warning: the master key file {} is inside the vault directory: a copy of the directory then carries its own key; keep it elsewhere (e.g. $XDG_CONFIG_HOME/credvault/) or in a keychain, HSM or KMS",
                    p.display()
                );
            }
        }
    }
    #[cfg(feature = "keychain")]
    if let MasterUri::Keychain { .. } = uri {
        let store = credvault_kms::keychain_store(uri).map_err(|e| kms_failure("master key", e))?;
        if store.forgets_at_reboot() && !volatile_ok {
            return Err(Failure::usage(format!(
                "{uri}: the kernel keyring forgets its keys at reboot, and losing the master key loses the vault; keep a copy elsewhere and pass --volatile-keychain, or use ?store=secret-service"
            )));
        }
    }
    let _ = volatile_ok;
    credvault_kms::open_or_create(uri).map_err(|e| kms_failure("master key", e))
}

/// `credvault doctor`: the configured provider end to end.
pub(crate) fn doctor(dir: &Path) -> Result<Output, Failure> {
    let uri = current_uri(dir)?;
    let mut lines = vec![format!("master key  {uri}")];
    let mut checks = Vec::new();
    let mut ok = true;
    let mut step = |name: &str, r: Result<String, String>, lines: &mut Vec<String>| {
        match &r {
            Ok(what) => lines.push(format!("  ok    {name}: {what}")),
            Err(why) => {
                ok = false;
                lines.push(format!("  FAIL  {name}: {why}"));
            }
        }
        checks.push(json!({"check": name, "ok": r.is_ok(), "detail": r.unwrap_or_else(|e| e)}));
    };
    let t0 = std::time::Instant::now();
    match credvault_kms::open(&uri) {
        Err(e) => step("reachable", Err(e.to_string()), &mut lines),
        Ok(p) => {
            let p = Arc::new(credvault_kms::Metered::new(p));
            step(
                "reachable",
                Ok(format!(
                    "provider {} active version {} ({} ms)",
                    p.provider_id(),
                    p.active_version()
                        .map_or_else(|e| e.to_string(), |v| v.to_string()),
                    t0.elapsed().as_millis()
                )),
                &mut lines,
            );
            let ctx = EncryptionContext::new()
                .with("purpose", "credvault-doctor")
                .map_err(|e| Failure::new(e.to_string()))?;
            let t1 = std::time::Instant::now();
            let round = p.generate(&ctx).and_then(|(k, w)| {
                let back = p.unwrap(&w, &ctx)?;
                if back.expose_secret() == k.expose_secret() {
                    Ok(w)
                } else {
                    Err(ProviderError::Unwrap(credvault_envelope::DecryptError))
                }
            });
            match round {
                Ok(w) => step(
                    "round trip",
                    Ok(format!(
                        "generated, wrapped ({} bytes) and unwrapped a key ({} ms)",
                        w.as_bytes().len(),
                        t1.elapsed().as_millis()
                    )),
                    &mut lines,
                ),
                Err(e) => step("round trip", Err(e.to_string()), &mut lines),
            }
            let c = p.counts();
            let calls: Vec<String> = credvault_kms::OPERATIONS
                .iter()
                .enumerate()
                .filter(|(i, _)| c.ok[*i] + c.unavailable[*i] + c.denied[*i] + c.failed[*i] > 0)
                .map(|(i, op)| {
                    format!(
                        "{op} {} ok, {} unavailable, {} denied, {} failed",
                        c.ok[i], c.unavailable[i], c.denied[i], c.failed[i]
                    )
                })
                .collect();
            lines.push(format!("  calls {}", calls.join("; ")));
            #[cfg(feature = "pkcs11")]
            if let MasterUri::Pkcs11(pu) = &uri {
                match credvault_kms::pkcs11::Pkcs11MasterKey::open(pu)
                    .and_then(|k| Ok(k.key_objects()?))
                {
                    Ok(objs) => {
                        let bad: Vec<_> = objs
                            .iter()
                            .filter(|o| !o.token || !o.sensitive || o.extractable)
                            .map(|o| o.label.clone())
                            .collect();
                        let r = if bad.is_empty() {
                            Ok(format!(
                                "{} key object(s), each in the token, sensitive, not extractable",
                                objs.len()
                            ))
                        } else {
                            Err(format!(
                                "extractable or non-sensitive key object(s): {}",
                                bad.join(", ")
                            ))
                        };
                        step("key objects", r, &mut lines);
                    }
                    Err(e) => step("key objects", Err(e.to_string()), &mut lines),
                }
            }
        }
    }
    if credvault_store::Vault::exists(dir) {
        let opened = crate::vault::opts(dir)
            .and_then(|o| credvault_store::Vault::open(dir, o).map_err(crate::vault::fail));
        match opened {
            Ok(v) => {
                step(
                    "vault",
                    Ok(format!("{} opens with this master key", dir.display())),
                    &mut lines,
                );
                let _ = v.close();
            }
            Err(e) => step("vault", Err(e.message), &mut lines),
        }
        if read_uri(&dir.join(PREVIOUS_URI_FILE))?.is_some() {
            step(
                "move",
                Err("a move to this provider did not finish: run `credvault rotate master --to` with it again".to_owned()),
                &mut lines,
            );
        }
    }
    let text = lines.join("\n") + "\n";
    let json = json!({"master_key": uri.to_string(), "ok": ok, "checks": checks});
    if ok {
        Ok(Output::Text { text, json })
    } else {
        Ok(Output::Report {
            text,
            json,
            code: 1,
        })
    }
}
