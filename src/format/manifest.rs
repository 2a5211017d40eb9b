//! The manifest: the one object that makes a backup exist.
//!
//! It is written last, after every part it names is stored, so its presence means the backup is
//! complete; `list`, `restore` and `prune` look for nothing else. It records what is needed to
//! trust the parts (size, SHA-256, row counts) and to read them (compression, encryption), and
//! never a secret. How it is stored (plain, or sealed behind a public header when the backup is
//! encrypted) is [`crate::format::envelope`]'s business.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::format::codec::Compression;
use crate::format::crypto::{Key, PartKey};
use crate::model::SourceInfo;

/// The newest format this d1r2 reads, and the one it writes chunked backups in. Bumped when a
/// reader of an older version could misread a newer backup: format 2 parts are several gzip
/// members (one a page), which format 1 readers stop reading after the first; format 3 seals an
/// encrypted backup's manifest and binds its parts to their places, which format 2 readers
/// cannot open; format 4 keeps a table's rows in chunks shared between backups
/// ([`crate::format::chunk`]), outside the backup's folder, which older readers cannot find.
pub const FORMAT_VERSION: u32 = 4;
/// The format encrypted backups that share nothing are written in.
pub const SEALED_FORMAT: u32 = 3;
/// The format of chunked backups, plain or encrypted.
pub const CHUNKED_FORMAT: u32 = 4;
/// The format plain backups are written in: their layout did not change with format 3, so a
/// d1r2 that reads format 2 still reads them.
pub const PLAIN_FORMAT: u32 = 2;
pub const MANIFEST_NAME: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// `d1r2 <version>` that wrote it.
    pub tool: String,
    pub id: String,
    pub created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Whether an encrypted backup shows its label without the key (`--public-label`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public_label: bool,
    pub source: SourceInfo,
    pub compression: Compression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
    pub tables: Vec<TableEntry>,
    /// What each statement of the schema and post parts creates, in order (after the leading
    /// PRAGMA), so a restore of some tables can leave the others' statements out. A reader
    /// matches each statement to its entry and refuses a part where they differ.
    pub schema: Vec<SchemaEntry>,
    /// Every stored object, in the order its SQL is applied.
    pub objects: Vec<ObjectEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionInfo {
    /// How the parts are encrypted.
    pub algorithm: String,
    /// Identifies the key without revealing it.
    pub key_fingerprint: String,
    /// How the manifest is sealed (format 3); format 2 manifests are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableEntry {
    pub name: String,
    pub rows: u64,
    /// Why the rows are not in the backup, for tables whose data cannot be read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What one statement of the schema or post part creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaEntry {
    pub kind: SchemaKind,
    pub name: String,
    /// The table it belongs to (a table's, a view's and a rebuild's own name), by which a
    /// restore of some tables keeps or leaves it.
    pub table: String,
}

impl std::fmt::Display for SchemaEntry {
    /// Names quoted as Rust strings, so a name holding a line end stays on the error's line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.kind.as_str(), self.name)?;
        if self.table != self.name {
            write!(f, " on {:?}", self.table)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaKind {
    Table,
    Index,
    View,
    Trigger,
    /// An FTS index refilled from its content table once the rows are in.
    Rebuild,
}

impl SchemaKind {
    pub const ALL: [SchemaKind; 5] = [
        SchemaKind::Table,
        SchemaKind::Index,
        SchemaKind::View,
        SchemaKind::Trigger,
        SchemaKind::Rebuild,
    ];

    /// As the manifest spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaKind::Table => "table",
            SchemaKind::Index => "index",
            SchemaKind::View => "view",
            SchemaKind::Trigger => "trigger",
            SchemaKind::Rebuild => "rebuild",
        }
    }

    /// The part whose statements create objects of this kind.
    pub fn part(self) -> ObjectKind {
        match self {
            SchemaKind::Table => ObjectKind::Schema,
            _ => ObjectKind::Post,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// `PRAGMA defer_foreign_keys` and the CREATE TABLE statements.
    Schema,
    /// Rows of one table (and its `sqlite_sequence` value).
    Data,
    /// Indexes, views, triggers and FTS rebuilds, created after the data.
    Post,
}

impl ObjectKind {
    /// As the manifest spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Schema => "schema",
            ObjectKind::Data => "data",
            ObjectKind::Post => "post",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Relative to the backup's folder.
    pub key: String,
    pub kind: ObjectKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    pub rows: u64,
    /// Stored (compressed, encrypted) size.
    pub bytes: u64,
    /// SHA-256 of the stored bytes, hex. Empty for a chunk, which its address checks instead:
    /// an encrypted chunk's bytes differ each time one is written, and the chunk may have been
    /// written by another backup.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// Size of the SQL before compression.
    pub sql_bytes: u64,
    /// The address of a chunk ([`crate::format::chunk`]), whose `key` is then relative to the
    /// store's prefix (`chunks/...`), not to the backup's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<String>,
}

impl Manifest {
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.bytes).sum()
    }

    /// This manifest without its objects: what reading one object needs of it, without a copy
    /// of a chunked backup's list of every chunk.
    pub fn header(&self) -> Manifest {
        Manifest {
            format: self.format,
            tool: self.tool.clone(),
            id: self.id.clone(),
            created: self.created,
            label: self.label.clone(),
            public_label: self.public_label,
            source: self.source.clone(),
            compression: self.compression,
            encryption: self.encryption.clone(),
            tables: self.tables.clone(),
            schema: self.schema.clone(),
            objects: Vec::new(),
        }
    }

    /// The store key of an object of this backup: in its folder, or for a chunk in `chunks/`.
    pub fn key(&self, object: &ObjectEntry) -> String {
        match object.chunk {
            Some(_) => object.key.clone(),
            None => format!("{}/{}", self.id, object.key),
        }
    }

    /// The addresses of the chunks this backup names, each once, sorted.
    pub fn chunk_addresses(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .objects
            .iter()
            .filter_map(|o| o.chunk.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether the backup's manifest is stored sealed (an encrypted backup from format 3 on).
    pub fn is_sealed(&self) -> bool {
        self.format >= 3 && self.encryption.is_some()
    }

    /// What `object` is encrypted under: bound to its place from format 3 on.
    pub fn part_key(&self, key: &Key, object: &ObjectEntry) -> PartKey {
        if let Some(address) = &object.chunk {
            PartKey::chunk(key, address)
        } else if self.format >= 3 {
            PartKey::bound(key, &self.id, &object.key)
        } else {
            PartKey::unbound(key)
        }
    }
}

/// The id of a backup started at `at`: UTC, second precision, sortable as text.
pub fn backup_id(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

/// A file-name-safe rendering of a table name for the object keys of plain backups (an encrypted
/// backup's keys name no table); the manifest keeps the real name.
pub fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    if s.is_empty() { "_".to_string() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_kinds_read_as_the_manifest_spells_them() {
        for kind in [ObjectKind::Schema, ObjectKind::Data, ObjectKind::Post] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }
    use chrono::TimeZone;

    #[test]
    fn ids_sort_by_time() {
        let a = backup_id(Utc.with_ymd_and_hms(2026, 11, 24, 22, 15, 0).unwrap());
        let b = backup_id(Utc.with_ymd_and_hms(2026, 11, 25, 1, 2, 3).unwrap());
        assert_eq!(a, "20261124T221500Z");
        assert!(a < b);
    }

    #[test]
    fn slugs_table() {
        for (name, want) in [
            ("users", "users"),
            (
                "x\"; DROP TABLE users; --",
                "x___DROP_TABLE_users;_--".replace(';', "_").as_str(),
            ),
            ("ünï", "_n_"),
            ("", "_"),
        ] {
            assert_eq!(slug(name), want, "{name}");
        }
    }
}
