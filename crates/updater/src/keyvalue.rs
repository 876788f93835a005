//! The one reader of fwpack's `key = value` files: the PID-1 updater's
//! `/etc/fwpack/updater.conf` and the boot record it leaves
//! (`/run/fwpack/boot.conf`) (syntax in docs/FORMAT.md, "Updater
//! configuration").
//!
//! One `key = value` per line, whitespace around both trimmed, blank lines
//! and `#` lines skipped, keys `[a-z0-9_]+`. **A key given twice is an
//! error.** fwpack writes these files and never repeats a key, so a
//! repeat means a hand edit gone wrong or tampering; "first wins" and
//! "last wins" readers would then disagree about the same file (the PID-1
//! updater and the library's running-slot check once did), so no reader
//! picks either: the file is reported. A caller that salvages what it can
//! (updater.conf's safe mode) gets the first of a repeated key in
//! [`Parsed::pairs`] and the repeat in [`Parsed::errors`].

/// One `key = value` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair<'a> {
    /// 1-based line number.
    pub line: usize,
    pub key: &'a str,
    pub value: &'a str,
}

/// Everything a reading found: the lines that are pairs (file order,
/// without repeats) and one message per line that is not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub pairs: Vec<Pair<'a>>,
    pub errors: Vec<String>,
}

impl<'a> Parsed<'a> {
    /// The pairs, or the first error.
    pub fn strict(self) -> Result<Vec<Pair<'a>>, String> {
        match self.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(self.pairs),
        }
    }
}

pub fn parse(text: &str) -> Parsed<'_> {
    let mut p = Parsed::default();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            p.errors
                .push(format!("line {n}: expected `key = value`, got `{line}`"));
            continue;
        };
        let (key, value) = (k.trim(), v.trim());
        if key.is_empty()
            || !key
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c == b'_' || c.is_ascii_digit())
        {
            p.errors.push(format!(
                "line {n}: `{key}` is not a key (lower case, digits, _)"
            ));
            continue;
        }
        if let Some(first) = p.pairs.iter().find(|q| q.key == key) {
            p.errors.push(format!(
                "line {n}: `{key}` already set on line {}",
                first.line
            ));
            continue;
        }
        p.pairs.push(Pair {
            line: n,
            key,
            value,
        });
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_comments_and_errors() {
        let p = parse("# c\n\n a = 1 \nb=x = y\nC = 2\nwords\na = 3\n");
        assert_eq!(
            p.pairs,
            vec![
                Pair {
                    line: 3,
                    key: "a",
                    value: "1"
                },
                Pair {
                    line: 4,
                    key: "b",
                    value: "x = y"
                },
            ]
        );
        assert_eq!(p.errors.len(), 3, "{:?}", p.errors);
        assert!(p.errors[0].starts_with("line 5: `C` is not a key"));
        assert!(p.errors[1].starts_with("line 6: expected"));
        assert_eq!(p.errors[2], "line 7: `a` already set on line 3");
        assert!(parse("a = 1\na = 1\n").strict().is_err());
        assert_eq!(parse("a = 1\n").strict().unwrap().len(), 1);
    }
}
