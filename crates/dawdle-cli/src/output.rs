//! Human output: aligned tables and timestamps. JSON output goes straight
//! through serde_json.

use chrono::{DateTime, SecondsFormat, Utc};

/// `println!` for command output. When the reader has gone away
/// (`dawdle jobs | head`), the command ends quietly with status 0 instead
/// of panicking: whatever it changed is committed before it prints.
macro_rules! outln {
    () => {
        $crate::output::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}

/// Writes one line to standard output; see [`outln!`].
pub fn write_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(error) = writeln!(out, "{line}") {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("dawdle: cannot write to standard output: {error}");
        std::process::exit(74);
    }
}

use dawdle::text::{printable, truncate};

/// Most characters a table cell shows; `dawdle job ID` shows up to 4,096
/// of a field and `dawdle job ID --json` the values whole.
pub const MAX_CELL_CHARS: usize = 100;

/// Prints rows under a header, each column as wide as its widest cell.
/// Cells come from rows anyone may have written: each is cut to
/// [`MAX_CELL_CHARS`] and its control characters escaped, so one value can
/// neither break the layout nor repaint the terminal.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| cell_text(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        outln!("{}", padded.join("  ").trim_end());
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
}

/// One printable line of at most [`MAX_CELL_CHARS`] characters.
pub fn cell_text(text: &str) -> String {
    printable(&truncate(text, MAX_CELL_CHARS)).into_owned()
}

/// A value shown on a line of its own: printable, at most `max_chars`
/// characters.
pub fn field_text(text: &str, max_chars: usize) -> String {
    printable(&truncate(text, max_chars)).into_owned()
}

/// RFC 3339 in UTC; `-` for none, and `infinity` / `-infinity` for times
/// beyond what can be shown (PostgreSQL's infinities, far years).
pub fn timestamp(at: Option<DateTime<Utc>>) -> String {
    match at {
        None => "-".to_string(),
        Some(at) if dawdle::rows::is_clamped(at) && at < Utc::now() => "-infinity".to_string(),
        Some(at) if dawdle::rows::is_clamped(at) => "infinity".to_string(),
        Some(at) => at.to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

pub fn print_json<T: serde::Serialize>(value: &T) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("values we print always serialise")
    );
}
