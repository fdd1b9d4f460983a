//! How keys, values and tables are printed: exactly (`--raw`) or escaped, so that one entry is
//! always one line.

use std::borrow::Cow;
use std::io::{self, Write};

/// `bytes` as printed without `--raw`: unchanged if it is UTF-8 text without control characters
/// or backslashes, else every byte through [`std::ascii::escape_default`] (`\n`, `\t`, `\\`,
/// `\'`, `\"`, `\xNN` for bytes outside printable ASCII). A printed entry that contains a
/// backslash is therefore always escaped, and unescapes to the stored bytes.
pub fn escaped(bytes: &[u8]) -> Cow<'_, [u8]> {
    let plain =
        std::str::from_utf8(bytes).is_ok_and(|s| !s.chars().any(|c| c.is_control() || c == '\\'));
    if plain {
        Cow::Borrowed(bytes)
    } else {
        Cow::Owned(
            bytes
                .iter()
                .flat_map(|&b| std::ascii::escape_default(b))
                .collect(),
        )
    }
}

/// Writes `bytes`, escaped unless `raw`.
pub fn write_bytes(out: &mut impl Write, bytes: &[u8], raw: bool) -> io::Result<()> {
    if raw {
        out.write_all(bytes)
    } else {
        out.write_all(&escaped(bytes))
    }
}

/// Writes `rows` as columns separated by two spaces, each as wide as its widest cell (the
/// last column unpadded).
pub fn write_table(out: &mut impl Write, rows: &[Vec<String>]) -> io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// A byte count for people: `512 B`, `1.5 KiB`, `64.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unescape(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            if s[i] != b'\\' {
                out.push(s[i]);
                i += 1;
                continue;
            }
            match s[i + 1] {
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'r' => out.push(b'\r'),
                b'x' => {
                    let hex = std::str::from_utf8(&s[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                c => out.push(c),
            }
            i += 2;
        }
        out
    }

    #[test]
    fn text_is_plain_and_everything_else_escapes_reversibly() {
        assert_eq!(&*escaped(b"Dickie Attenborough"), b"Dickie Attenborough");
        assert_eq!(&*escaped("café \"x\"".as_bytes()), "café \"x\"".as_bytes());
        assert_eq!(&*escaped(b""), b"");
        assert_eq!(&*escaped(b"a\xffb"), br"a\xffb");
        assert_eq!(&*escaped(b"two\nlines"), br"two\nlines");
        assert_eq!(&*escaped(b"tab\there"), br"tab\there");
        // A backslash forces escaping, so a plain `\xff` is not mistaken for the byte.
        assert_eq!(&*escaped(br"\xff"), br"\\xff");
        for v in [
            &b"a\xffb"[..],
            b"two\nlines",
            br"\xff",
            b"\x00\x01\x7f\x80 \"'",
            "é\u{7}".as_bytes(),
        ] {
            assert_eq!(unescape(&escaped(v)), v, "{v:?}");
            assert!(!escaped(v).contains(&b'\n'));
        }
        let mut out = Vec::new();
        write_bytes(&mut out, b"a\xff\n", true).unwrap();
        assert_eq!(out, b"a\xff\n");
    }

    #[test]
    fn tables_align_and_sizes_read() {
        let mut out = Vec::new();
        let rows = vec![
            vec!["NAME".into(), "PID".into(), "KEYS".into()],
            vec!["TVHosts".into(), "7".into(), "3".into()],
        ];
        write_table(&mut out, &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME     PID  KEYS\nTVHosts  7    3\n"
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
    }
}
