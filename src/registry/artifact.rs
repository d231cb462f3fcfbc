//! Content-addressed artifacts: `artifacts/sha256/<hex>` under the storage
//! root, shared by the registry and experiment tracking.
//!
//! A file is stored once under its sha256. A folder is stored as its files
//! plus a JSON manifest (`{"files": [{"path", "sha256", "size"}]}`, sorted by
//! path), itself stored under its sha256, which becomes the artifact's hash.
//! Uploads use create-if-absent, so identical content is written once and
//! concurrent uploads of it are harmless. Downloads verify every sha256 and
//! refuse manifest paths that could leave the destination (absolute paths,
//! `..`). Files are read whole into memory; artifacts of several GB would
//! want multipart uploads, which this does not do yet.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::RegistryError;
use super::model::ArtifactRef;
use crate::error::{Error, Result};
use crate::storage::Storage;

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    files: Vec<ManifestEntry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ManifestEntry {
    path: String,
    sha256: String,
    size: u64,
}

fn blob_path(sha: &str) -> String {
    format!("artifacts/sha256/{sha}")
}

/// Hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn artifact_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    RegistryError::Artifact {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
    .into()
}

/// A relative path of plain components (no root, `..`, or `.`), as `/`-joined text.
pub fn safe_relative(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Stores bytes under their sha256 (once: identical content is not rewritten).
pub async fn put_blob(storage: &Storage, bytes: Bytes) -> Result<String> {
    let sha = sha256_hex(&bytes);
    storage.put_if_absent(&blob_path(&sha), bytes).await?;
    Ok(sha)
}

fn read(path: &Path) -> Result<Bytes> {
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Every regular file under `dir`, relative, sorted; symlinks are refused.
fn walk(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        if kind.is_symlink() {
            return Err(artifact_err(&path, "symbolic links are not stored"));
        } else if kind.is_dir() {
            walk(&path, root, out)?;
        } else {
            out.push(path.strip_prefix(root).expect("under root").to_path_buf());
        }
    }
    Ok(())
}

/// Uploads a file or folder and describes it.
pub async fn upload(storage: &Storage, local: &Path) -> Result<ArtifactRef> {
    let meta = std::fs::symlink_metadata(local).map_err(|source| Error::Io {
        path: local.to_path_buf(),
        source,
    })?;
    let name = local
        .file_name()
        .and_then(|n| safe_relative(Path::new(n)))
        .ok_or_else(|| artifact_err(local, "has no usable file name"))?;
    if meta.is_file() {
        let bytes = read(local)?;
        let size = bytes.len() as u64;
        let sha256 = put_blob(storage, bytes).await?;
        return Ok(ArtifactRef {
            kind: "file".into(),
            name,
            sha256,
            size,
        });
    }
    if !meta.is_dir() {
        return Err(artifact_err(local, "is neither a file nor a folder"));
    }
    let mut files = Vec::new();
    walk(local, local, &mut files)?;
    files.sort();
    let mut manifest = Manifest { files: Vec::new() };
    for rel in files {
        let path = safe_relative(&rel).ok_or_else(|| artifact_err(&rel, "is not a plain path"))?;
        let bytes = read(&local.join(&rel))?;
        let size = bytes.len() as u64;
        let sha256 = put_blob(storage, bytes).await?;
        manifest.files.push(ManifestEntry { path, sha256, size });
    }
    let size = manifest.files.iter().map(|f| f.size).sum();
    let json = serde_json::to_vec(&manifest).expect("manifest serialises");
    let sha256 = put_blob(storage, Bytes::from(json)).await?;
    Ok(ArtifactRef {
        kind: "dir".into(),
        name,
        sha256,
        size,
    })
}

pub async fn get_verified(storage: &Storage, sha: &str) -> Result<Bytes> {
    let rel = blob_path(sha);
    let bytes = storage.get_opt(&rel).await?.ok_or_else(|| {
        Error::from(RegistryError::Corrupt {
            path: rel.clone(),
            reason: "artifact blob is missing".into(),
        })
    })?;
    let got = sha256_hex(&bytes);
    if got != sha {
        return Err(RegistryError::Corrupt {
            path: rel,
            reason: format!("sha256 is {got}, expected {sha}"),
        }
        .into());
    }
    Ok(bytes)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Downloads an artifact into `dest_dir` (as `dest_dir/<name>`), verifying
/// every hash; returns the written path.
pub async fn download(storage: &Storage, a: &ArtifactRef, dest_dir: &Path) -> Result<PathBuf> {
    let name = safe_relative(Path::new(&a.name))
        .filter(|n| !n.contains('/'))
        .ok_or_else(|| artifact_err(Path::new(&a.name), "is not a plain file name"))?;
    let target = dest_dir.join(name);
    let bytes = get_verified(storage, &a.sha256).await?;
    if a.kind == "file" {
        write(&target, &bytes)?;
        return Ok(target);
    }
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::Corrupt {
            path: blob_path(&a.sha256),
            reason: format!("manifest: {e}"),
        })?;
    for f in &manifest.files {
        let rel = safe_relative(Path::new(&f.path))
            .ok_or_else(|| artifact_err(Path::new(&f.path), "would leave the destination"))?;
        let content = get_verified(storage, &f.sha256).await?;
        write(&target.join(rel), &content)?;
    }
    Ok(target)
}
