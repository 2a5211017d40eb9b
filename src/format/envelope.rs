//! A manifest as a store holds it, and the checks that make it trustworthy.
//!
//! A plain backup's manifest is the [`Manifest`] itself as JSON (format 2). An encrypted backup's
//! (format 3) is a public [`Header`], holding only what `list` and `prune` need without the key,
//! around a sealed section: the whole manifest as JSON, encrypted and authenticated by
//! [`crypto::seal`] under a subkey of the backup's key. Opening it checks the seal, and that
//! every public field equals the one the sealed manifest implies, so no byte of the stored
//! manifest can change unnoticed. Format 2 manifests of encrypted backups (older d1r2) are read
//! as they are: nothing authenticates them.

use crate::error::{Classify, Kind};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::format::codec::Compression;
use crate::format::crypto::{self, Key};
use crate::format::manifest::{EncryptionInfo, FORMAT_VERSION, Manifest};
use crate::model::SourceInfo;

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the manifest of backup {id} is unreadable: {reason}")]
    Unreadable { id: String, reason: String },
    #[error(
        "backup {id} has format {format}, newer than this d1r2 reads (up to {FORMAT_VERSION}): upgrade d1r2 to read it"
    )]
    NewerFormat { id: String, format: u32 },
    #[error(
        "the manifest of backup {id} names backup {named}: it was copied from another backup; restore {named} by its own id"
    )]
    Moved { id: String, named: String },
    #[error(
        "the manifest of backup {id} fails authentication with the key of fingerprint {fingerprint}: it was altered or replaced; do not trust this backup"
    )]
    Unauthentic { id: String, fingerprint: String },
    #[error(
        "the manifest of backup {id} was altered: its public {field} differs from the authenticated one; do not trust this backup"
    )]
    Altered { id: String, field: &'static str },
    #[error("backup {id} is encrypted; set {}", crypto::KEY_ENV)]
    NeedsKey { id: String },
}

/// A manifest that does not open is a failure of the backup, not of what the user typed (a
/// missing or wrong key is refused before, by the key check).
impl Classify for EnvelopeError {
    fn kind(&self) -> Kind {
        match self {
            EnvelopeError::Unreadable { .. }
            | EnvelopeError::NewerFormat { .. }
            | EnvelopeError::Moved { .. }
            | EnvelopeError::Unauthentic { .. }
            | EnvelopeError::Altered { .. }
            | EnvelopeError::NeedsKey { .. } => Kind::Failed,
        }
    }
}

/// The public part of an encrypted backup's manifest. Nothing here names a table or a value:
/// the row and table counts stay sealed (they tell how a database grows), while the stored size
/// is what a listing of the backup's folder shows anyway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: u32,
    pub tool: String,
    pub id: String,
    pub created: DateTime<Utc>,
    /// Only when the backup was made with `--public-label`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub source: PublicSource,
    /// Stored bytes of all the backup's objects.
    pub bytes: u64,
    pub encryption: EncryptionInfo,
    /// The addresses of the chunks a chunked backup names (format 4), sorted, each once: what
    /// prune keeps without the key. They are keyed hashes, and a listing of `chunks/` shows them
    /// anyway; which of them a backup names is what this tells.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<String>,
    /// Base64 of `nonce | ciphertext | tag` of the whole manifest's JSON.
    pub sealed: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicSource {
    /// `sqlite` or `d1`.
    pub kind: String,
}

/// A stored manifest: readable as it is, or sealed.
#[derive(Debug, Clone)]
pub enum Stored {
    /// A plain backup's, or an encrypted format 2 backup's.
    Open(Manifest),
    Sealed(Header),
}

/// What `list` shows of a backup: everything without the key for a plain one, the public header
/// for an encrypted one (or the sealed details, when the key opened them).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub id: String,
    pub created: DateTime<Utc>,
    pub label: Option<String>,
    pub source: SourceInfo,
    pub bytes: u64,
    pub encrypted: bool,
    /// `None` when sealed: not known without the key.
    pub tables: Option<usize>,
    pub rows: Option<u64>,
    pub compression: Option<Compression>,
}

impl From<&Manifest> for Summary {
    fn from(m: &Manifest) -> Self {
        Summary {
            id: m.id.clone(),
            created: m.created,
            label: m.label.clone(),
            source: m.source.clone(),
            bytes: m.total_bytes(),
            encrypted: m.encryption.is_some(),
            tables: Some(m.tables.len()),
            rows: Some(m.total_rows()),
            compression: Some(m.compression),
        }
    }
}

impl Stored {
    pub fn id(&self) -> &str {
        match self {
            Stored::Open(m) => &m.id,
            Stored::Sealed(h) => &h.id,
        }
    }

    pub fn created(&self) -> DateTime<Utc> {
        match self {
            Stored::Open(m) => m.created,
            Stored::Sealed(h) => h.created,
        }
    }

    /// The addresses of the chunks the backup names, known without the key.
    pub fn chunk_addresses(&self) -> Vec<String> {
        match self {
            Stored::Open(m) => m.chunk_addresses(),
            Stored::Sealed(h) => h.chunks.clone(),
        }
    }

    pub fn encryption(&self) -> Option<&EncryptionInfo> {
        match self {
            Stored::Open(m) => m.encryption.as_ref(),
            Stored::Sealed(h) => Some(&h.encryption),
        }
    }

    /// What is known without the key.
    pub fn summary(&self) -> Summary {
        match self {
            Stored::Open(m) => Summary::from(m),
            Stored::Sealed(h) => Summary {
                id: h.id.clone(),
                created: h.created,
                label: h.label.clone(),
                source: SourceInfo {
                    kind: h.source.kind.clone(),
                    ..SourceInfo::default()
                },
                bytes: h.bytes,
                encrypted: true,
                tables: None,
                rows: None,
                compression: None,
            },
        }
    }

    /// The manifest, authenticated with `key` when it is sealed. Callers check the key's
    /// fingerprint first ([`crate::format::load::check_key_of`]), so a wrong key is told apart from an
    /// altered manifest.
    pub fn open(self, key: Option<&Key>) -> Result<Manifest, EnvelopeError> {
        let header = match self {
            Stored::Open(m) => return Ok(m),
            Stored::Sealed(h) => h,
        };
        let id = header.id.clone();
        let key = key.ok_or_else(|| EnvelopeError::NeedsKey { id: id.clone() })?;
        let unauthentic = || EnvelopeError::Unauthentic {
            id: id.clone(),
            fingerprint: header.encryption.key_fingerprint.clone(),
        };
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&header.sealed)
            .map_err(|_| unauthentic())?;
        let json = crypto::open(key, &sealed).map_err(|_| unauthentic())?;
        let manifest: Manifest =
            serde_json::from_slice(&json).map_err(|e| EnvelopeError::Unreadable {
                id: id.clone(),
                reason: format!("its sealed section: {e}"),
            })?;
        if let Some(field) = differing_field(&header, &public_header(&manifest, &header.sealed)) {
            return Err(EnvelopeError::Altered { id, field });
        }
        Ok(manifest)
    }
}

/// The public header `manifest` is stored behind, its sealed section being `sealed`.
fn public_header(manifest: &Manifest, sealed: &str) -> Option<Header> {
    Some(Header {
        format: manifest.format,
        tool: manifest.tool.clone(),
        id: manifest.id.clone(),
        created: manifest.created,
        label: manifest
            .public_label
            .then(|| manifest.label.clone())
            .flatten(),
        source: PublicSource {
            kind: manifest.source.kind.clone(),
        },
        bytes: manifest.total_bytes(),
        encryption: manifest.encryption.clone()?,
        chunks: manifest.chunk_addresses(),
        sealed: sealed.to_string(),
    })
}

/// The first public field of `stored` that differs from what the sealed manifest implies.
fn differing_field(stored: &Header, implied: &Option<Header>) -> Option<&'static str> {
    let Some(implied) = implied else {
        return Some("encryption");
    };
    let fields: [(&'static str, bool); 9] = [
        ("format", stored.format == implied.format),
        ("id", stored.id == implied.id),
        ("tool", stored.tool == implied.tool),
        ("created", stored.created == implied.created),
        ("label", stored.label == implied.label),
        ("source", stored.source == implied.source),
        ("bytes", stored.bytes == implied.bytes),
        ("encryption", stored.encryption == implied.encryption),
        ("chunks", stored.chunks == implied.chunks),
    ];
    fields.into_iter().find(|(_, same)| !same).map(|(f, _)| f)
}

/// The JSON a backup's manifest is stored as: sealed with `key` when the backup is encrypted.
pub fn to_json(manifest: &Manifest, key: Option<&Key>) -> serde_json::Result<Vec<u8>> {
    match (&manifest.encryption, key) {
        (Some(_), Some(key)) => {
            let whole = serde_json::to_vec(manifest)?;
            let sealed =
                base64::engine::general_purpose::STANDARD.encode(crypto::seal(key, &whole));
            let header = public_header(manifest, &sealed).expect("an encrypted manifest");
            serde_json::to_vec_pretty(&header)
        }
        _ => serde_json::to_vec_pretty(manifest),
    }
}

/// What a stored manifest is read as first: its format number (`None` when it is not a
/// number) and whether it has a `sealed` field.
#[derive(Deserialize)]
struct Probe {
    #[serde(default, deserialize_with = "number")]
    format: Option<u64>,
    #[serde(default)]
    sealed: Present,
}

fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(serde_json::Value::deserialize(d)?.as_u64())
}

/// Whether a field is there, whatever its value (`null` included), read without keeping it.
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Present(true))
    }
}

/// Parses the manifest stored in backup folder `folder`. A manifest that names another backup is
/// refused: it was copied over this one's. A format 3 manifest must be sealed and a format 2 one
/// must not be, so an encrypted backup's manifest cannot pass for an older, unauthenticated one
/// without failing here or at its first part.
pub fn parse(folder: &str, bytes: &[u8]) -> Result<Stored, EnvelopeError> {
    let unreadable = |reason: String| EnvelopeError::Unreadable {
        id: folder.to_string(),
        reason,
    };
    // Only the format and whether the manifest is sealed are read first, into no tree of the
    // whole: a chunked backup's manifest lists every chunk.
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| unreadable(e.to_string()))?;
    let format = probe
        .format
        .ok_or_else(|| unreadable("it has no format number".into()))?;
    let format = u32::try_from(format).unwrap_or(u32::MAX);
    if format > FORMAT_VERSION {
        return Err(EnvelopeError::NewerFormat {
            id: folder.to_string(),
            format,
        });
    }
    // Format 3 manifests are all sealed; from format 4 on a plain backup's is not, and one with
    // the `sealed` field is read as sealed (an open one that says it is encrypted is refused
    // below, so an encrypted backup's manifest cannot pass for a plain one).
    let sealed = format == 3 || (format >= 4 && probe.sealed.0);
    let stored = if sealed {
        let header: Header = serde_json::from_slice(bytes)
            .map_err(|e| unreadable(format!("a format {format} manifest is sealed: {e}")))?;
        if header.encryption.algorithm != crypto::ALGORITHM
            || header.encryption.manifest.as_deref() != Some(crypto::SEALING)
        {
            return Err(unreadable(format!(
                "unknown encryption {:?} (d1r2 seals with {} and {})",
                header.encryption.algorithm,
                crypto::SEALING,
                crypto::ALGORITHM
            )));
        }
        Stored::Sealed(header)
    } else {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| unreadable(e.to_string()))?;
        if format >= 4 && manifest.encryption.is_some() {
            return Err(unreadable(format!(
                "a format {format} encrypted backup's manifest must be sealed"
            )));
        }
        if let Some(info) = &manifest.encryption
            && (info.algorithm != crypto::ALGORITHM_V1 || info.manifest.is_some())
        {
            return Err(unreadable(format!(
                "a format {format} backup's parts are encrypted with {}, not {:?}",
                crypto::ALGORITHM_V1,
                info.algorithm
            )));
        }
        Stored::Open(manifest)
    };
    if stored.id() != folder {
        return Err(EnvelopeError::Moved {
            id: folder.to_string(),
            named: stored.id().to_string(),
        });
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::{ObjectEntry, ObjectKind, TableEntry};

    const ID: &str = "20261124T221500Z";

    fn key(byte: u8) -> Key {
        Key::parse(&hex::encode([byte; 32])).unwrap()
    }

    fn manifest(encrypted: bool) -> Manifest {
        Manifest {
            format: if encrypted { 3 } else { 2 },
            tool: "d1r2 0.1.0".into(),
            id: ID.into(),
            created: "2026-11-24T22:15:00.5Z".parse().unwrap(),
            label: Some("before migration 12".into()),
            public_label: false,
            source: SourceInfo {
                kind: "d1".into(),
                database_id: Some("c3b1-patients-db".into()),
                name: Some("patients".into()),
                bookmark: Some("0000-bookmark".into()),
                end_bookmark: Some("0001-bookmark".into()),
            },
            compression: Compression::Gzip,
            encryption: encrypted.then(|| EncryptionInfo {
                algorithm: crypto::ALGORITHM.into(),
                key_fingerprint: key(1).fingerprint(),
                manifest: Some(crypto::SEALING.into()),
            }),
            tables: vec![TableEntry {
                name: "patients".into(),
                rows: 12,
                note: None,
            }],
            schema: vec![],
            objects: vec![ObjectEntry {
                key: "data/0000.sql.gz".into(),
                kind: ObjectKind::Data,
                table: Some("patients".into()),
                rows: 12,
                bytes: 345,
                sha256: "ab".repeat(32),
                sql_bytes: 999,
                chunk: None,
            }],
        }
    }

    fn stored(m: &Manifest) -> serde_json::Value {
        serde_json::from_slice(&to_json(m, Some(&key(1))).unwrap()).unwrap()
    }

    fn reopen(folder: &str, value: &serde_json::Value) -> Result<Manifest, EnvelopeError> {
        parse(folder, &serde_json::to_vec(value).unwrap())?.open(Some(&key(1)))
    }

    #[test]
    fn a_sealed_manifest_shows_only_its_header_and_opens_whole() {
        let m = manifest(true);
        let value = stored(&m);
        let text = value.to_string();
        for secret in ["patients", "c3b1", "bookmark", "migration", "\"rows\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let fields: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields,
            [
                "bytes",
                "created",
                "encryption",
                "format",
                "id",
                "sealed",
                "source",
                "tool"
            ]
        );
        assert_eq!(value["bytes"], 345);
        assert_eq!(reopen(ID, &value).unwrap(), m);

        let mut public = manifest(true);
        public.public_label = true;
        let value = stored(&public);
        assert_eq!(value["label"], "before migration 12");
        assert_eq!(reopen(ID, &value).unwrap(), public);
    }

    #[test]
    fn every_change_to_a_sealed_manifest_is_refused() {
        let good = stored(&manifest(true));
        let other = {
            let mut m = manifest(true);
            m.id = "20261124T221501Z".into();
            stored(&m)
        };
        let set = |field: &str, v: serde_json::Value| {
            let mut m = good.clone();
            m[field] = v;
            m
        };
        let without = |field: &str| {
            let mut m = good.clone();
            m.as_object_mut().unwrap().remove(field);
            m
        };
        let sealed = good["sealed"].as_str().unwrap();
        let flipped = {
            let mut raw = base64::engine::general_purpose::STANDARD
                .decode(sealed)
                .unwrap();
            raw[20] ^= 1;
            base64::engine::general_purpose::STANDARD.encode(raw)
        };
        let mut spliced = good.clone();
        spliced["sealed"] = other["sealed"].clone();
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("bytes", set("bytes", 1.into()), "public bytes differs"),
            (
                "created",
                set("created", "2027-01-01T00:00:00Z".into()),
                "created",
            ),
            ("tool", set("tool", "d1r2 9".into()), "public tool"),
            ("label added", set("label", "x".into()), "public label"),
            (
                "source",
                set("source", serde_json::json!({"kind": "sqlite"})),
                "public source",
            ),
            (
                "rows added",
                set("tables", serde_json::json!([{"name": "t", "rows": 5}])),
                "unknown field `tables`",
            ),
            (
                "encryption removed",
                without("encryption"),
                "missing field `encryption`",
            ),
            (
                "encryption null",
                set("encryption", serde_json::Value::Null),
                "unreadable",
            ),
            (
                "algorithm changed",
                set(
                    "encryption",
                    serde_json::json!({"algorithm": "none", "key_fingerprint": key(1).fingerprint(), "manifest": crypto::SEALING}),
                ),
                "unknown encryption",
            ),
            (
                "sealed flipped",
                set("sealed", flipped.into()),
                "fails authentication",
            ),
            (
                "sealed section of another backup",
                spliced,
                "public id differs",
            ),
            (
                "sealed removed",
                without("sealed"),
                "missing field `sealed`",
            ),
            ("format 2", set("format", 2.into()), "unreadable"),
            ("format 4", set("format", 4.into()), "public format differs"),
            ("format 5", set("format", 5.into()), "newer than this d1r2"),
            (
                "a chunk listed",
                set("chunks", serde_json::json!(["0".repeat(64)])),
                "public chunks differs",
            ),
        ];
        for (name, value, expected) in cases {
            let err = reopen(ID, &value).expect_err(name).to_string();
            assert!(err.contains(expected), "{name}: {err}");
            assert!(err.contains(ID), "{name}: {err}");
        }
        let err = reopen(ID, &other).unwrap_err().to_string();
        assert!(err.contains("names backup 20261124T221501Z"), "{err}");
        let err = parse(ID, &serde_json::to_vec(&good).unwrap())
            .unwrap()
            .open(Some(&key(2)))
            .unwrap_err();
        assert!(matches!(err, EnvelopeError::Unauthentic { .. }), "{err}");
    }

    #[test]
    fn plain_manifests_are_stored_and_read_as_before() {
        let m = manifest(false);
        let json = to_json(&m, None).unwrap();
        assert_eq!(json, serde_json::to_vec_pretty(&m).unwrap());
        let back = parse(ID, &json).unwrap();
        assert_eq!(back.summary(), Summary::from(&m));
        assert_eq!(back.open(None).unwrap(), m);
        let err = parse("20261124T221501Z", &json).unwrap_err().to_string();
        assert!(err.contains("names backup 20261124T221500Z"), "{err}");
        // A format 2 manifest may not claim the format 3 encryption of its parts.
        let mut v2 = manifest(true);
        v2.format = 2;
        let err = parse(ID, &serde_json::to_vec(&v2).unwrap()).unwrap_err();
        assert!(err.to_string().contains(crypto::ALGORITHM_V1), "{err}");
    }

    #[test]
    fn every_error_has_its_kind() {
        use crate::error::{Classify, Kind::*};
        let id = || String::from("1");
        let cases = [
            (
                EnvelopeError::Unreadable {
                    id: id(),
                    reason: "x".into(),
                },
                Failed,
            ),
            (
                EnvelopeError::NewerFormat {
                    id: id(),
                    format: 9,
                },
                Failed,
            ),
            (
                EnvelopeError::Moved {
                    id: id(),
                    named: "2".into(),
                },
                Failed,
            ),
            (
                EnvelopeError::Unauthentic {
                    id: id(),
                    fingerprint: "f".into(),
                },
                Failed,
            ),
            (
                EnvelopeError::Altered {
                    id: id(),
                    field: "label",
                },
                Failed,
            ),
            (EnvelopeError::NeedsKey { id: id() }, Failed),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
        }
    }
}
