//! Exception detection for the `logs.exception` column: finds the exception class of a Java
//! or Python stack trace and templates its message with the shared [`TemplateMiner`].
//!
//! Which line names the exception:
//! - Python (`Traceback (most recent call last):` present): the last unindented
//!   `Name: message` (or bare `Name`) line, which is where Python prints it.
//! - Java and the like: the first line that is an exception header, i.e. optionally
//!   prefixed by `Caused by: ` or `Exception in thread "…" `, then a class name
//!   (`pkg.ClassName`, or a bare name ending in `Exception`/`Error`/`Throwable`/`Fault`),
//!   then `: message` or the end of the line. The outermost exception wins over its causes
//!   because that is what the code that logged it caught.
//!
//! Only the header line's message is templated (continuation lines of a multi-line message
//! and the frames are left out), so the same failure at different call depths groups.

use super::{Match, TemplateMiner};

/// Detects the exception in a stack trace and templates its message.
///
/// Returns the exception class (as written, e.g. `java.lang.NullPointerException`) and the
/// template match for its message (an empty message when the header has none). `None`
/// when no line looks like an exception header.
pub fn exception_template(text: &str, miner: &mut TemplateMiner) -> Option<(String, Match)> {
    let (class, message) = find_exception(text)?;
    let m = miner.add(message);
    Some((class.to_owned(), m))
}

/// The exception class and message of `text`, if any.
fn find_exception(text: &str) -> Option<(&str, &str)> {
    if text
        .lines()
        .any(|l| l.trim_end() == "Traceback (most recent call last):")
    {
        return text
            .lines()
            .rev()
            .filter(|l| !l.is_empty() && !l.starts_with(char::is_whitespace))
            .find_map(|l| header(l, true));
    }
    text.lines().find_map(|l| header(l, false))
}

/// Parses `[Caused by: |Exception in thread "x" ]Class[: message]`.
fn header(line: &str, python: bool) -> Option<(&str, &str)> {
    let mut l = line.trim();
    for prefix in ["Caused by: ", "Suppressed: "] {
        if let Some(rest) = l.strip_prefix(prefix) {
            l = rest;
        }
    }
    if let Some(rest) = l.strip_prefix("Exception in thread \"") {
        l = rest.split_once("\" ").map(|(_, r)| r)?;
    }
    let (class, message) = match l.split_once(':') {
        Some((c, m)) => (c, m.trim()),
        None => (l, ""),
    };
    if !is_class_name(class, python) {
        return None;
    }
    Some((class, message))
}

fn is_class_name(s: &str, python: bool) -> bool {
    if s.is_empty()
        || s.len() > 256
        || s.starts_with('.')
        || s.ends_with('.')
        || s.contains("..")
        || !s
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == '.')
    {
        return false;
    }
    let last = s.rsplit('.').next().unwrap_or(s);
    if !last.starts_with(|c: char| c.is_uppercase()) {
        return false;
    }
    if python {
        // Python prints the class on the last line whatever it is called.
        return true;
    }
    // A dotted name is a class even without the usual suffix; a bare word must carry the
    // suffix or every "Note: ..." would count.
    s.contains('.')
        || ["Exception", "Error", "Throwable", "Fault"]
            .iter()
            .any(|suf| last.ends_with(suf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::MinerConfig;

    fn run(text: &str) -> Option<(String, String)> {
        let mut m = TemplateMiner::new(MinerConfig::default());
        exception_template(text, &mut m).map(|(c, m)| (c, m.template.to_string()))
    }

    #[test]
    fn java_trace() {
        let t = "java.lang.IllegalStateException: pool 42 exhausted\n\
                 \tat com.x.Pool.get(Pool.java:10)\n\
                 Caused by: java.io.IOException: timeout after 30s\n\
                 \t... 3 more";
        let (class, tpl) = run(t).unwrap();
        assert_eq!(class, "java.lang.IllegalStateException");
        assert_eq!(tpl, "pool <*> exhausted");
    }

    #[test]
    fn preceded_by_log_message_and_thread_prefix() {
        let t = "request failed\nException in thread \"main\" java.lang.NullPointerException\n\tat A.b(A.java:1)";
        let (class, tpl) = run(t).unwrap();
        assert_eq!(class, "java.lang.NullPointerException");
        assert_eq!(tpl, "");
        let c = run("Caused by: org.x.BadThing: no 7").unwrap();
        assert_eq!(c.0, "org.x.BadThing");
    }

    #[test]
    fn python_trace() {
        let t = "Traceback (most recent call last):\n  File \"a.py\", line 3, in <module>\n    f()\nValueError: invalid literal for int() with base 10: 'x'";
        let (class, tpl) = run(t).unwrap();
        assert_eq!(class, "ValueError");
        assert_eq!(tpl, "invalid literal for int() with base <*>: 'x'");
    }

    #[test]
    fn not_an_exception() {
        assert!(run("Note: all good").is_none());
        assert!(run("user logged in: bob").is_none());
        assert!(run("").is_none());
        assert!(run("Exception in thread \"x").is_none());
    }
}
