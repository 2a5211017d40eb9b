//! Erasure records: a person's rows that every later read of a backup removes.
//!
//! `forget` writes one object, `erasures/<time>-<token>.json`, by a conditional create. Its
//! public part holds nothing of the person: the record's id and time, the GitHub actor who
//! asked, a digest of the predicate and, in a plain store, the table. The request itself (table,
//! predicate, whether related rows go too, the reason) is what restore, verify, export and drill
//! need to apply it: in a store whose backups are encrypted it is sealed under a subkey of the
//! backup key (as a manifest is, under a subkey of its own) and the digest is keyed, so without
//! the key the record says only that someone forgot something.

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Classify, Kind};
use crate::format::crypto::{self, KEY_ENV, Key};
use crate::store::{Store, StoreError, read_all};

/// Where the erasure records are kept, beside the backups and never one.
pub const ERASURES_PREFIX: &str = "erasures/";

/// The record format this d1r2 writes and reads.
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error(
        "erasure record {key} is unreadable ({reason}); no backup is read while a recorded erasure cannot be applied"
    )]
    Unreadable { key: String, reason: String },
    #[error(
        "erasure record {key} is not sealed, but {KEY_ENV} is set: anyone who can write the bucket could have written it; remove it if no one here did"
    )]
    Unsealed { key: String },
    #[error("erasure record {key} is sealed; set {KEY_ENV} to apply it")]
    NeedsKey { key: String },
    #[error(
        "erasure record {key} was sealed with the key of fingerprint {expected}, but {KEY_ENV} has fingerprint {actual}; record the erasure again with the current key"
    )]
    WrongKey {
        key: String,
        expected: String,
        actual: String,
    },
    #[error("erasure record {key} already exists; run forget again")]
    Taken { key: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A record that cannot be trusted or opened stops the read (a failure); a missing or wrong key
/// is the user's to give.
impl Classify for ErasureError {
    fn kind(&self) -> Kind {
        match self {
            ErasureError::Unreadable { .. }
            | ErasureError::Unsealed { .. }
            | ErasureError::Taken { .. } => Kind::Failed,
            ErasureError::NeedsKey { .. } | ErasureError::WrongKey { .. } => Kind::BadInput,
            ErasureError::Store(e) => e.kind(),
        }
    }
}

/// What was asked to be forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub table: String,
    #[serde(rename = "where")]
    pub predicate: String,
    pub related: bool,
    pub reason: String,
}

/// One recorded erasure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    pub id: String,
    pub created: DateTime<Utc>,
    pub actor: Option<String>,
    pub request: Request,
}

/// The record as stored: the public fields, and the request in clear or `sealed`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    erasure: u32,
    id: String,
    created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<String>,
    predicate_digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request: Option<Request>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
}

/// What a sealed record's `sealed` opens to: the id is inside, so a sealed request copied into
/// another record does not open there.
#[derive(Debug, Serialize, Deserialize)]
struct Private {
    id: String,
    request: Request,
}

/// A new record's id: its time (so records list in order) and a random token.
pub fn new_id(now: DateTime<Utc>) -> String {
    format!(
        "{}-{:016x}",
        now.format("%Y%m%dT%H%M%S%.3fZ"),
        rand::random::<u64>()
    )
}

/// The key record `id` is stored under.
pub fn erasure_key(id: &str) -> String {
    format!("{ERASURES_PREFIX}{id}.json")
}

/// Whether `key` is an erasure record as [`erasure_key`] names them. Pure.
pub fn is_erasure_key(key: &str) -> bool {
    let Some(id) = key
        .strip_prefix(ERASURES_PREFIX)
        .and_then(|name| name.strip_suffix(".json"))
    else {
        return false;
    };
    let Some((time, token)) = id.rsplit_once('-') else {
        return false;
    };
    token.len() == 16
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && DateTime::parse_from_str(&format!("{time}+0000"), "%Y%m%dT%H%M%S%.3fZ%z").is_ok()
        && time.len() == "20261124T221500.000Z".len()
}

/// The digest of a predicate in the public part: SHA-256 in a plain store, HMAC-SHA256 under
/// the erasure digest subkey in an encrypted one.
pub fn predicate_digest(predicate: &str, key: Option<&Key>) -> String {
    match key {
        None => hex::encode(Sha256::digest(predicate.as_bytes())),
        Some(key) => {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key.erasure_digest_key())
                .expect("HMAC takes any key");
            mac.update(predicate.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
    }
}

/// The record as stored: sealed under `key` when there is one.
pub fn encode(erasure: &Erasure, key: Option<&Key>) -> Vec<u8> {
    let request = &erasure.request;
    let sealed = key.map(|key| {
        let private = Private {
            id: erasure.id.clone(),
            request: request.clone(),
        };
        let json = serde_json::to_vec(&private).expect("a request always encodes");
        base64::engine::general_purpose::STANDARD.encode(crypto::seal_erasure(key, &json))
    });
    let stored = Stored {
        erasure: VERSION,
        id: erasure.id.clone(),
        created: erasure.created,
        actor: erasure.actor.clone(),
        table: key.is_none().then(|| request.table.clone()),
        predicate_digest: predicate_digest(&request.predicate, key),
        key_fingerprint: key.map(Key::fingerprint),
        request: key.is_none().then(|| request.clone()),
        sealed,
    };
    serde_json::to_vec_pretty(&stored).expect("a record always encodes")
}

/// Reads the record stored under `key_name`: a sealed one is opened with `key` and every public
/// field checked against what it holds; with a key, an unsealed one is refused.
pub fn decode(key_name: &str, bytes: &[u8], key: Option<&Key>) -> Result<Erasure, ErasureError> {
    let unreadable = |reason: String| ErasureError::Unreadable {
        key: key_name.to_string(),
        reason,
    };
    let stored: Stored = serde_json::from_slice(bytes).map_err(|e| unreadable(e.to_string()))?;
    if stored.erasure > VERSION {
        return Err(unreadable(format!(
            "format {} is newer than this d1r2 reads; upgrade d1r2",
            stored.erasure
        )));
    }
    if erasure_key(&stored.id) != key_name {
        return Err(unreadable("its id is not its name".to_string()));
    }
    let request = match (&stored.sealed, &stored.request, key) {
        (None, Some(_), Some(_)) => {
            return Err(ErasureError::Unsealed {
                key: key_name.to_string(),
            });
        }
        (None, Some(request), None) => request.clone(),
        (Some(sealed), None, key) => open(key_name, &stored, sealed, key)?,
        _ => return Err(unreadable("it holds no request".to_string())),
    };
    let digest_ok = predicate_digest(&request.predicate, key) == stored.predicate_digest;
    // A sealed record names no table in public; a plain one names the one it asks for.
    let table_ok = match (&stored.sealed, &stored.table) {
        (None, Some(table)) => *table == request.table,
        (Some(_), None) => true,
        _ => false,
    };
    if !digest_ok || !table_ok {
        return Err(unreadable(
            "its public fields do not match its request".to_string(),
        ));
    }
    Ok(Erasure {
        id: stored.id,
        created: stored.created,
        actor: stored.actor,
        request,
    })
}

/// Opens a sealed record's request with `key`, which must be the one it names.
fn open(
    key_name: &str,
    stored: &Stored,
    sealed: &str,
    key: Option<&Key>,
) -> Result<Request, ErasureError> {
    let name = || key_name.to_string();
    let key = key.ok_or_else(|| ErasureError::NeedsKey { key: name() })?;
    let expected = stored.key_fingerprint.clone().unwrap_or_default();
    if expected != key.fingerprint() {
        return Err(ErasureError::WrongKey {
            key: name(),
            expected,
            actual: key.fingerprint(),
        });
    }
    let unreadable = |reason: &str| ErasureError::Unreadable {
        key: name(),
        reason: reason.to_string(),
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|_| unreadable("its seal is not base64"))?;
    let json = crypto::open_erasure(key, &raw).map_err(|e| unreadable(&e.to_string()))?;
    let private: Private =
        serde_json::from_slice(&json).map_err(|_| unreadable("its sealed request is not JSON"))?;
    if private.id != stored.id {
        return Err(unreadable("its sealed request belongs to another record"));
    }
    Ok(private.request)
}

/// Stores `erasure` by a conditional create: a record is never written over.
pub async fn record(
    store: &dyn Store,
    erasure: &Erasure,
    key: Option<&Key>,
) -> Result<(), ErasureError> {
    let name = erasure_key(&erasure.id);
    match store
        .put_new(&name, Bytes::from(encode(erasure, key)))
        .await
    {
        Err(StoreError::AlreadyExists { .. }) => Err(ErasureError::Taken { key: name }),
        other => Ok(other?),
    }
}

/// Every erasure recorded in `store`, oldest first. One that cannot be read or opened is an
/// error: a read that skipped it could bring its rows back.
pub async fn all(store: &dyn Store, key: Option<&Key>) -> Result<Vec<Erasure>, ErasureError> {
    let mut out = Vec::new();
    for object in store.list(ERASURES_PREFIX).await? {
        if !is_erasure_key(&object.key) {
            continue;
        }
        let bytes = read_all(store, &object.key).await?;
        out.push(decode(&object.key, &bytes, key)?);
    }
    out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erasure() -> Erasure {
        Erasure {
            id: new_id("2026-11-24T22:15:00.123Z".parse().unwrap()),
            created: "2026-11-24T22:15:00.123Z".parse().unwrap(),
            actor: Some("octocat".into()),
            request: Request {
                table: "users".into(),
                predicate: "email = 'alice@example.com'".into(),
                related: true,
                reason: "ticket 7 from alice@example.com".into(),
            },
        }
    }

    #[test]
    fn keys_table() {
        let id = erasure().id;
        assert!(is_erasure_key(&erasure_key(&id)), "{id}");
        for (key, want) in [
            ("erasures/20261124T221500.123Z-0123456789abcdef.json", true),
            ("erasures/20261124T221500.123Z-0123456789ABCDEF.json", false),
            ("erasures/20261124T221500.123Z-0123456789abcde.json", false),
            ("erasures/20261124T221500Z-0123456789abcdef.json", false),
            ("erasures/20261324T221500.123Z-0123456789abcdef.json", false),
            (
                "erasures/x/20261124T221500.123Z-0123456789abcdef.json",
                false,
            ),
            (
                "erasures/20261124T221500.123Z-0123456789abcdef.json.tmp",
                false,
            ),
            ("erasures/", false),
            ("audit/20261124T221500.123Z-0123456789abcdef.json", false),
        ] {
            assert_eq!(is_erasure_key(key), want, "{key}");
        }
    }

    #[test]
    fn plain_and_sealed_round_trip() {
        let e = erasure();
        let name = erasure_key(&e.id);
        let plain = encode(&e, None);
        assert_eq!(decode(&name, &plain, None).unwrap(), e);
        let key = Key::parse(&"11".repeat(32)).unwrap();
        let sealed = encode(&e, Some(&key));
        let text = String::from_utf8(sealed.clone()).unwrap();
        for private in ["users", "alice", "ticket", "email"] {
            assert!(!text.contains(private), "{private} in {text}");
        }
        assert_eq!(decode(&name, &sealed, Some(&key)).unwrap(), e);
        assert!(matches!(
            decode(&name, &sealed, None),
            Err(ErasureError::NeedsKey { .. })
        ));
        let other = Key::parse(&"22".repeat(32)).unwrap();
        assert!(matches!(
            decode(&name, &sealed, Some(&other)),
            Err(ErasureError::WrongKey { .. })
        ));
        assert!(matches!(
            decode(&name, &plain, Some(&key)),
            Err(ErasureError::Unsealed { .. })
        ));
        let elsewhere = erasure_key(&new_id(Utc::now()));
        assert!(decode(&elsewhere, &plain, None).is_err());
    }

    #[test]
    fn a_changed_public_field_is_refused() {
        let e = erasure();
        let name = erasure_key(&e.id);
        let mut json: serde_json::Value = serde_json::from_slice(&encode(&e, None)).unwrap();
        json["table"] = "orders".into();
        let bytes = serde_json::to_vec(&json).unwrap();
        assert!(matches!(
            decode(&name, &bytes, None),
            Err(ErasureError::Unreadable { .. })
        ));
    }
}
