//! The fenced code blocks of docs/runbook.md, for the tests that run them.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::PathBuf;

pub struct Block {
    pub language: String,
    /// Not tagged `notest` (a block that needs Docker, replaces the test's
    /// own environment or starts a server).
    pub tested: bool,
    /// Tagged `adoption`: the adoption and its reverse, which need a
    /// database Procrastinate created (tests/adopt.rs runs them).
    pub adoption: bool,
    pub body: String,
    /// Line of the opening fence, counted from 1.
    pub line: usize,
}

/// The blocks of `markdown`, in order.
pub fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (number, line) in markdown.lines().enumerate() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None => {
                    let mut words = info.split_whitespace();
                    current = Some(Block {
                        language: words.next().unwrap_or("").to_string(),
                        tested: !info.split_whitespace().any(|w| w == "notest"),
                        adoption: info.split_whitespace().any(|w| w == "adoption"),
                        body: String::new(),
                        line: number + 1,
                    });
                }
            }
        } else if let Some(block) = current.as_mut() {
            block.body.push_str(line);
            block.body.push('\n');
        }
    }
    blocks
}

/// docs/runbook.md, as it is in this checkout.
pub fn runbook() -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/runbook.md"))
        .expect("read docs/runbook.md")
}
