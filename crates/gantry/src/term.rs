//! Everything the CLI prints goes through here, for two reasons:
//!
//! - Text from the controller (reasons, comments, log lines, names, notes)
//!   is written by other people. Control characters in it are shown as
//!   escapes (`\x1b`), so a reason cannot retitle the terminal, rewrite
//!   earlier lines or hide text (ESC and the other C0 and C1 controls, DEL,
//!   and the Unicode bidirectional overrides). Newlines and tabs stay.
//! - A reader that goes away (`gantry log 4 | head`) ends the command
//!   quietly, with the status a shell gives a process killed by SIGPIPE,
//!   instead of a panic.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write as _;

use crate::exit_code::ExitCode;

fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with its control characters written as escapes.
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// Ends the process quietly when the reader of the output has gone.
pub fn exit_if_broken_pipe(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        ExitCode::BrokenPipe.exit();
    }
}

#[doc(hidden)]
pub fn stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    let text = args.to_string();
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(clean(&text).as_bytes())
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    if let Err(e) = written {
        exit_if_broken_pipe(&e);
        // Any other failure to write output (a full disk): say so and stop.
        let _ = writeln!(std::io::stderr(), "error: cannot write output: {e}");
        ExitCode::Error.exit();
    }
}

#[doc(hidden)]
pub fn stderr(args: std::fmt::Arguments<'_>) {
    let text = args.to_string();
    // Nowhere left to report a failure to write to stderr.
    let _ = writeln!(std::io::stderr().lock(), "{}", clean(&text));
}

/// `println!` for the CLI's output: control characters escaped, a closed pipe ends quietly.
macro_rules! outln {
    () => { $crate::term::stdout(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::term::stdout(format_args!($($arg)*), true) };
}

/// `print!` for the CLI's output.
macro_rules! out {
    ($($arg:tt)*) => { $crate::term::stdout(format_args!($($arg)*), false) };
}

/// `eprintln!` for the CLI's messages.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::term::stderr(format_args!($($arg)*)) };
}

pub(crate) use {errln, out, outln};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_text_kept() {
        assert_eq!(clean("plain\ttext\n"), "plain\ttext\n");
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
        assert_eq!(
            clean("\u{1b}]0;owned\u{7}ok\r\u{9b}31m"),
            "\\x1b]0;owned\\x07ok\\x0d\\x9b31m"
        );
        assert_eq!(clean("a\u{202e}b\u{7f}"), "a\\u{202e}b\\x7f");
        assert_eq!(clean("héllo ✓"), "héllo ✓");
    }
}
