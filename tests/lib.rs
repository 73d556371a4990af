//! Helpers for the end-to-end tests: run the `attest` binary in a scratch directory that
//! holds a copy of the examples, so relative paths in the pipelines resolve there.

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

/// Runs `cmd` and returns its exit code and standard output read as JSON (`Null` when the
/// output is not JSON, as for a usage error that only prints to stderr).
pub fn json_output(cmd: &mut Command) -> (Option<i32>, serde_json::Value) {
    let out = cmd.output().expect("run attest");
    let value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), value)
}

/// Runs `cmd`, which must succeed, and returns its standard output read as JSON; on
/// failure the panic shows what the command printed.
pub fn json_success(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().expect("run attest");
    assert!(
        out.status.success(),
        "attest exited {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The ledger the examples write to (`ledger: {path: out/ledger}`).
pub const LEDGER: &str = "out/ledger";

impl Scratch {
    /// `attest run PIPELINE --json`, which must succeed: the run's summary.
    pub fn run_json(&self, pipeline: &str) -> serde_json::Value {
        json_success(self.attest().args(["run", pipeline, "--json"]))
    }

    /// `attest replay --ledger out/ledger --json ARGS...`: the exit code and the report.
    pub fn replay_json(&self, args: &[&str]) -> (Option<i32>, serde_json::Value) {
        json_output(
            self.attest()
                .args(["replay", "--ledger", LEDGER, "--json"])
                .args(args),
        )
    }

    /// `attest lineage --ledger out/ledger --format json ARGS...`, which must succeed.
    pub fn lineage_json(&self, args: &[&str]) -> serde_json::Value {
        json_success(
            self.attest()
                .args(["lineage", "--ledger", LEDGER, "--format", "json"])
                .args(args),
        )
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}
