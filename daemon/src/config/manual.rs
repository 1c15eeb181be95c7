//! syncd.toml(5), generated from the commented example configuration
//! (`packaging/syncd.example.toml`), so the manual lists exactly the keys the example documents
//! and cannot drift from it. A test checks that every key the parser accepts is documented.
//!
//! The example's conventions: each key follows the comment lines that describe it; a key that
//! is unset by default is commented out, and its comment says "unset by default"; a comment
//! saying "Required" marks a key without a default; one saying "defaults to" or "example"
//! describes its default in words and the value shown is an example.

/// The example configuration shipped as `/usr/share/doc/syncd/examples/syncd.toml`.
pub const EXAMPLE_CONFIG: &str = include_str!("../../../packaging/syncd.example.toml");

/// One documented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// "" for the top level, "sync" or "sync.target".
    pub section: String,
    pub name: String,
    pub value: String,
    pub doc: String,
}

/// The keys of `text` (the example's format), first occurrence per section only.
pub fn keys(text: &str) -> Vec<Key> {
    let mut out: Vec<Key> = Vec::new();
    let mut section = String::new();
    let mut doc: Vec<String> = Vec::new();
    // Keys on consecutive lines share the comment above the first.
    let mut shared: Option<String> = None;
    for line in text.lines() {
        let t = line.trim();
        let uncommented = t.trim_start_matches('#').trim();
        if uncommented.starts_with('[') && uncommented.ends_with(']') && !uncommented.contains('=')
        {
            section = uncommented
                .trim_matches(|c| c == '[' || c == ']')
                .to_string();
            doc.clear();
            continue;
        }
        if let Some((k, v)) = uncommented.split_once(" = ") {
            let k = k.trim();
            if !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                let this = if doc.is_empty() {
                    shared.clone().unwrap_or_default()
                } else {
                    doc.join(" ")
                };
                if !out.iter().any(|e| e.section == section && e.name == k) {
                    out.push(Key {
                        section: section.clone(),
                        name: k.to_string(),
                        value: v.trim().to_string(),
                        doc: this.clone(),
                    });
                }
                shared = Some(this);
                doc.clear();
                continue;
            }
        }
        shared = None;
        if t.is_empty() {
            doc.clear();
        } else if t.starts_with('#') {
            doc.push(uncommented.to_string());
        }
    }
    out
}

/// Escape text for roff: backslashes, and a leading control character.
fn roff(s: &str) -> String {
    let s = s.replace('\\', "\\e");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// How the value shown for `k` is to be read.
fn value_line(k: &Key) -> String {
    let d = k.doc.to_ascii_lowercase();
    let v = roff(&k.value);
    if d.contains("required") {
        format!("Required. Example: \\fB{v}\\fR")
    } else if d.contains("unset by default") || d.contains("defaults to") || d.contains("example") {
        format!("Example: \\fB{v}\\fR")
    } else {
        format!("Default: \\fB{v}\\fR")
    }
}

/// syncd.toml(5) as roff.
pub fn config_man_page() -> String {
    let keys = keys(EXAMPLE_CONFIG);
    let mut m = String::new();
    m.push_str(&format!(
        ".TH SYNCD.TOML 5 \"\" \"syncd {}\" \"File Formats\"\n",
        env!("CARGO_PKG_VERSION")
    ));
    m.push_str(".SH NAME\nsyncd.toml \\- configuration of the syncd replication daemon\n");
    m.push_str(".SH SYNOPSIS\n/etc/syncd/syncd.toml\n");
    m.push_str(
        ".SH DESCRIPTION\n\
         syncd(8) reads this TOML file at start and on reload (SIGHUP, \\fBsystemctl reload syncd\\fR \
         or \\fBsyncctl reload\\fR). Each \\fB[[sync]]\\fR table is a directory tree to watch; each \
         \\fB[[sync.target]]\\fR inside it is a destination that receives every change. Without a \
         \\fB[[sync]]\\fR table syncd runs and replicates nothing.\n\
         .PP\n\
         Unknown keys are errors, and every error names the key, the value and the fix. \
         \\fBsyncd check-config --config FILE\\fR validates a file without starting anything; a \
         reload that fails validation leaves the running configuration in place.\n",
    );
    for (section, title) in [
        ("", "TOP-LEVEL KEYS"),
        ("http", "[http] KEYS"),
        ("sync", "[[sync]] KEYS"),
        ("sync.target", "[[sync.target]] KEYS"),
    ] {
        m.push_str(&format!(".SH {title}\n"));
        for k in keys.iter().filter(|k| k.section == section) {
            m.push_str(&format!(
                ".TP\n.B {}\n{}\n.br\n{}\n",
                k.name,
                roff(&k.doc),
                value_line(k)
            ));
        }
    }
    m.push_str(".SH EXAMPLE\n.nf\n");
    for line in EXAMPLE_CONFIG.lines() {
        m.push_str(&roff(line));
        m.push('\n');
    }
    m.push_str(".fi\n");
    m.push_str(
        ".SH FILES\n\
         .TP\n/etc/syncd/syncd.toml\nthe configuration (a Debian conffile)\n\
         .TP\n/usr/share/doc/syncd/examples/syncd.toml\nthis example\n\
         .SH SEE ALSO\nsyncd(8), syncctl(8), rsync(1), rsyncd.conf(5)\n",
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field names of `struct NAME` in config/raw.rs's (serde) structs.
    fn fields(src: &str, name: &str) -> Vec<String> {
        let start = src
            .find(&format!("struct {name} {{"))
            .unwrap_or_else(|| panic!("struct {name} in config/raw.rs"));
        let body = &src[start..start + src[start..].find("\n}").unwrap()];
        body.lines()
            .skip(1)
            .map(|l| l.trim().trim_start_matches("pub "))
            .filter(|l| !l.starts_with('#') && !l.starts_with("//"))
            .filter_map(|l| l.split_once(':').map(|(f, _)| f.trim().to_string()))
            .collect()
    }

    #[test]
    fn every_key_the_parser_accepts_is_in_the_manual() {
        let src = include_str!("raw.rs");
        let keys = keys(EXAMPLE_CONFIG);
        for (raw, section) in [
            ("RawConfig", ""),
            ("RawHttp", "http"),
            ("RawSync", "sync"),
            ("RawTarget", "sync.target"),
        ] {
            let fs = fields(src, raw);
            assert!(!fs.is_empty(), "{raw}: {fs:?}");
            for f in fs {
                if f == "sync" || f == "target" || f == "http" {
                    continue;
                }
                let k = keys
                    .iter()
                    .find(|k| k.section == section && k.name == f)
                    .unwrap_or_else(|| {
                        panic!("[{section}] {f} is not in packaging/syncd.example.toml")
                    });
                assert!(!k.doc.is_empty(), "[{section}] {f} has no comment");
            }
        }
        let page = config_man_page();
        assert!(page.contains(".B retry_failed_interval_s\n"));
        assert!(page.contains("Default: \\fB4\\fR"), "workers' default");
    }

    #[test]
    fn example_lines_parse_into_keys_with_their_comments() {
        let k = keys("# top\na = 1\n\n[[sync]]\n# Needed. Required.\n# more\nsource = \"/x\"\n# unset by default\n# b_c = 2\n  [[sync.target]]\n  # d\n  dest = \"/y\"\n# [[sync.target]]\n# dest = \"/z\"\n");
        let got: Vec<(&str, &str, &str, &str)> = k
            .iter()
            .map(|k| {
                (
                    k.section.as_str(),
                    k.name.as_str(),
                    k.value.as_str(),
                    k.doc.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("", "a", "1", "top"),
                ("sync", "source", "\"/x\"", "Needed. Required. more"),
                ("sync", "b_c", "2", "unset by default"),
                ("sync.target", "dest", "\"/y\"", "d"),
            ]
        );
        assert_eq!(value_line(&k[1]), "Required. Example: \\fB\"/x\"\\fR");
        assert_eq!(value_line(&k[2]), "Example: \\fB2\\fR");
        assert_eq!(value_line(&k[0]), "Default: \\fB1\\fR");
    }
}
