//! Helpers for the end-to-end tests: run the `attest` binary in a scratch directory that
//! holds a copy of the examples, so relative paths in the pipelines resolve there.

pub mod crash;
pub mod fake_llm;

use assert_cmd::Command;
use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create scratch dir");
    for entry in std::fs::read_dir(from).expect("read examples") {
        let entry = entry.expect("dir entry");
        let dest = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy example file");
        }
    }
}

/// Builds the `attest` binary once per test process, so `cargo test -p attest-tests` on
/// its own never runs a stale binary (a test package cannot depend on another package's
/// binary on stable Cargo).
fn build_binary() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "-p", "attest-cli", "--bin", "attest"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.current_dir(repo()).status().expect("run cargo build");
        assert!(status.success(), "cargo build -p attest-cli failed");
    });
}

/// The path of a freshly built `attest` binary.
pub fn binary() -> PathBuf {
    build_binary();
    assert_cmd::cargo::cargo_bin("attest")
}

/// A scratch working directory containing `examples/`.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(&repo().join("examples"), &dir.path().join("examples"));
        Scratch { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `attest ARGS...` run in the scratch directory.
    pub fn attest(&self) -> Command {
        build_binary();
        let mut c = Command::cargo_bin("attest").expect("the attest binary was just built");
        c.current_dir(self.path());
        c
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}
