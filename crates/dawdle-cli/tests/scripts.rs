//! The quick-reference scripts without DAWDLE_BIN: they build the checkout
//! with cargo and run the binary where cargo says it put it, which is not
//! `./target` when CARGO_TARGET_DIR (or a configured target-dir) points
//! elsewhere.
//!
//! `cargo` here is a stand-in on PATH that answers `cargo metadata` and
//! `cargo build --message-format=json-render-diagnostics` with the JSON lines
//! real cargo prints (same fields, same order), for a target directory of
//! its own outside the checkout. The real cargo cannot serve: a release
//! build takes minutes, and a debug build in the shared target directory
//! relinks `target/debug/dawdle` under the other tests running it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dawdle::testing::TestDatabase;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A directory of its own under the system temporary directory, removed
/// when dropped: the stand-in cargo, its log, and its target directory.
struct Sandbox(PathBuf);

impl Sandbox {
    /// `built`: whether the target directory already holds the binary (a
    /// later run) or only gets it from the build (the first run).
    fn new(name: &str, built: bool) -> Self {
        let dir =
            std::env::temp_dir().join(format!("dawdle-scripts-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let sandbox = Self(dir);
        // What the build produces: the real binary, behind a wrapper that
        // records that it ran.
        let product = sandbox.0.join("product");
        write_executable(
            &product,
            &format!(
                "#!/bin/sh\necho ran >> '{ran}'\nexec '{real}' \"$@\"\n",
                ran = sandbox.ran_log().display(),
                real = env!("CARGO_BIN_EXE_dawdle"),
            ),
        );
        if built {
            std::fs::create_dir_all(sandbox.target_dir().join("release")).unwrap();
            std::fs::copy(&product, sandbox.binary()).unwrap();
        }
        write_executable(&sandbox.0.join("bin/cargo"), &sandbox.fake_cargo());
        sandbox
    }

    fn target_dir(&self) -> PathBuf {
        self.0.join("elsewhere")
    }

    fn binary(&self) -> PathBuf {
        self.target_dir().join("release/dawdle")
    }

    fn ran_log(&self) -> PathBuf {
        self.0.join("ran.log")
    }

    fn cargo_log(&self) -> PathBuf {
        self.0.join("cargo.log")
    }

    /// The stand-in cargo. Its answers follow real cargo's: the target
    /// directory is CARGO_TARGET_DIR; `build` reports every unit as a
    /// `compiler-artifact` (the library too, whose name is also `dawdle`)
    /// and copies the product into place; FAIL_BUILD makes it fail as a
    /// compile error does, exit 101.
    fn fake_cargo(&self) -> String {
        let root = repo_root().canonicalize().unwrap();
        let root = root.display();
        format!(
            r#"#!/usr/bin/env bash
set -euo pipefail
printf '%s\n' "$*" >> '{log}'
target="$CARGO_TARGET_DIR"
case "$1" in
metadata)
    printf '{{"packages":[],"workspace_members":["path+file://{root}/crates/dawdle-cli#0.1.0"],"resolve":null,"target_directory":"%s","version":1,"workspace_root":"{root}","metadata":null}}\n' "$target"
    ;;
build)
    if [ -n "${{FAIL_BUILD:-}}" ]; then
        echo 'error: could not compile `dawdle-cli` (bin "dawdle") due to 1 previous error' >&2
        exit 101
    fi
    fresh=true
    [ -x "$target/release/dawdle" ] || fresh=false
    mkdir -p "$target/release"
    cp '{product}' "$target/release/dawdle"
    printf '{{"reason":"compiler-artifact","package_id":"path+file://{root}/crates/dawdle#0.1.0","manifest_path":"{root}/crates/dawdle/Cargo.toml","target":{{"kind":["lib"],"crate_types":["lib"],"name":"dawdle","src_path":"{root}/crates/dawdle/src/lib.rs","edition":"2021","doc":true,"doctest":true,"test":true}},"profile":{{"opt_level":"3","debuginfo":0,"debug_assertions":false,"overflow_checks":false,"test":false}},"features":[],"filenames":["%s/release/libdawdle.rlib"],"executable":null,"fresh":%s}}\n' "$target" "$fresh"
    printf '{{"reason":"compiler-artifact","package_id":"path+file://{root}/crates/dawdle-cli#0.1.0","manifest_path":"{root}/crates/dawdle-cli/Cargo.toml","target":{{"kind":["bin"],"crate_types":["bin"],"name":"dawdle","src_path":"{root}/crates/dawdle-cli/src/main.rs","edition":"2021","doc":true,"doctest":false,"test":true}},"profile":{{"opt_level":"3","debuginfo":0,"debug_assertions":false,"overflow_checks":false,"test":false}},"features":[],"filenames":["%s/release/dawdle"],"executable":"%s/release/dawdle","fresh":%s}}\n' "$target" "$target" "$fresh"
    printf '{{"reason":"build-finished","success":true}}\n'
    ;;
*)
    echo "fake cargo: unexpected command: $*" >&2
    exit 2
    ;;
esac
"#,
            log = self.cargo_log().display(),
            product = self.0.join("product").display(),
        )
    }

    /// Runs `script` from the checkout, as an operator would, with the
    /// stand-in cargo first on PATH and no DAWDLE_BIN.
    fn run(&self, script: &str, url: &str, extra_env: &[(&str, &str)]) -> Output {
        let path = format!(
            "{}:{}",
            self.0.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("bash")
            .arg(repo_root().join("scripts/jobs").join(script))
            .current_dir(repo_root())
            .env("PATH", path)
            .env("CARGO_TARGET_DIR", self.target_dir())
            .env("JOB_QUEUE_DATABASE_URL", url)
            .env_remove("DAWDLE_BIN")
            .env_remove("DAWDLE_HOME")
            .envs(extra_env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run bash")
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.ran_log())
            .map(|log| log.lines().count())
            .unwrap_or(0)
    }

    fn cargo_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.cargo_log())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    let mut permissions = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(path, permissions).unwrap();
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn a_script_runs_the_binary_cargo_built_in_another_target_directory() {
    let db = TestDatabase::with_schema().await;
    let sandbox = Sandbox::new("built", true);
    let output = sandbox.run("queue-stats.sh", &db.url(), &[]);
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("verdict:"), "{}", describe(&output));
    // The binary cargo reported ran (not one under the checkout's ./target),
    // after cargo was asked for a release build of the CLI, and nothing
    // claimed a first build was under way.
    assert_eq!(sandbox.runs(), 1, "{}", describe(&output));
    let calls = sandbox.cargo_calls();
    assert!(
        calls.iter().any(|call| call.starts_with("build ")
            && call.contains("--release")
            && call.contains("-p dawdle-cli")),
        "{calls:?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("building dawdle"), "{}", describe(&output));
}

#[tokio::test]
async fn the_first_run_says_it_builds_then_runs_what_it_built() {
    let db = TestDatabase::with_schema().await;
    let sandbox = Sandbox::new("first", false);
    let output = sandbox.run("queue-stats.sh", &db.url(), &[]);
    assert!(output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("building dawdle (first run only"),
        "{}",
        describe(&output)
    );
    assert_eq!(sandbox.runs(), 1, "{}", describe(&output));
}

#[tokio::test]
async fn a_failed_build_stops_the_script_with_cargos_error() {
    let db = TestDatabase::with_schema().await;
    let sandbox = Sandbox::new("failed", true);
    let output = sandbox.run("queue-stats.sh", &db.url(), &[("FAIL_BUILD", "1")]);
    assert_eq!(output.status.code(), Some(101), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("could not compile `dawdle-cli`"),
        "{}",
        describe(&output)
    );
    assert_eq!(sandbox.runs(), 0, "{}", describe(&output));
}
